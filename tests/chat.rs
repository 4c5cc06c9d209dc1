//! The chat and webhook channels (SPEC §7) on both engines, against mocks in each service's
//! real shape that verify its signature: DingTalk, Feishu, WeCom, Slack, and the generic
//! webhook signed as Standard Webhooks. These services answer HTTP 200 with an error code
//! in the body; such an answer is not `sent`.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::providers::Mock;
use support::{Engine, Herald, attempts, pairs};

const WAIT: Duration = Duration::from_secs(30);
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

async fn robots(mock: &Mock) {
    mock.config(json!({
        "dingtalk": {"robots": {"ding-tok": {"secret": "SECding-secret"}, "ding-tok-2": {"secret": "SECother"}}},
        "feishu": {"hooks": {"feishu-tok": {"secret": "feishu-secret"}}},
        "wecom": {"keys": ["wecom-key"]},
        "slack": {"hooks": ["T000/B000/XXXX"]},
        "webhook": {"endpoints": {"ops": {"secret": WEBHOOK_SECRET}}},
    }))
    .await;
}

fn chat_profile(mock: &Mock) -> Value {
    json!({"chat": {
        "dingtalk": {"url": mock.url("/dingtalk/robot/send?access_token=ding-tok"), "secret": "SECding-secret"},
        "feishu": {"url": mock.url("/feishu/open-apis/bot/v2/hook/feishu-tok"), "secret": "feishu-secret"},
        "wecom": {"url": mock.url("/wecom/cgi-bin/webhook/send?key=wecom-key")},
        "slack": {"url": mock.url("/slack/services/T000/B000/XXXX")},
        "webhook": {"url": mock.url("/hook/ops"), "secret": WEBHOOK_SECRET},
    }})
}

async fn every_robot_gets_its_own_format_signed(engine: Engine) {
    let mock = Mock::start();
    robots(&mock).await;
    let h = Herald::on(engine).start();
    let api = h.api();
    api.put_user("ops-team", chat_profile(&mock)).await;
    // Secrets are write-only: the profile shows that one is set, never what it is.
    let profile = api.get("/v1/users/ops-team").await.body;
    assert_eq!(profile["chat"]["dingtalk"]["has_secret"], true, "{profile}");
    assert!(
        profile["chat"]["dingtalk"].get("secret").is_none(),
        "{profile}"
    );
    assert!(!profile.to_string().contains("SECding-secret"));
    // Writing the shown profile back keeps the secrets.
    api.put_user("ops-team", profile.clone()).await;
    let id = api
        .send(
            json!({"to": ["ops-team"], "title": "Deploy done", "body": "v1.2.3 is live",
            "data": {"version": "1.2.3"},
            "strategy": "all", "channels": ["dingtalk", "feishu", "wecom", "slack", "webhook"]}),
        )
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[
            ("dingtalk", "sent"),
            ("feishu", "sent"),
            ("wecom", "sent"),
            ("slack", "sent"),
            ("webhook", "sent")
        ]),
        "{m}"
    );
    for route in ["dingtalk", "feishu", "wecom", "slack", "webhook"] {
        let seen = mock.requests(route).await;
        assert_eq!(seen.len(), 1, "{route}: {seen:?}");
        assert_eq!(seen[0]["verified"], true, "{route}: {}", seen[0]);
    }
    let ding = &mock.requests("dingtalk").await[0];
    assert_eq!(ding["json"]["msgtype"], "text");
    assert_eq!(
        ding["json"]["text"]["content"],
        "Deploy done\nv1.2.3 is live"
    );
    let hook = &mock.requests("webhook").await[0];
    assert_eq!(hook["headers"]["webhook-id"], format!("{id}.0"));
    assert_eq!(hook["json"]["title"], "Deploy done");
    assert_eq!(hook["json"]["data"]["version"], "1.2.3");
    // Markdown where the robot has it.
    let id = api
        .send(json!({"to": ["ops-team"], "title": "Incident", "chat": {"markdown": "**db** is *down*"},
            "channels": ["dingtalk"]}))
        .await;
    api.wait_final(&id, WAIT).await;
    let ding = mock.requests("dingtalk").await;
    assert_eq!(ding[1]["json"]["msgtype"], "markdown");
    assert_eq!(ding[1]["json"]["markdown"]["text"], "**db** is *down*");
    assert!(
        !h.log_text().contains("ding-tok") && !h.log_text().contains("wecom-key"),
        "robot URLs hold tokens: never in the log"
    );
}

async fn a_200_with_an_error_code_is_not_sent(engine: Engine) {
    let mock = Mock::start();
    robots(&mock).await;
    let h = Herald::on(engine).start();
    let api = h.api();
    let mut profile = chat_profile(&mock);
    // Signed with the wrong secret: DingTalk and Feishu answer 200 with their error code.
    profile["chat"]["dingtalk"]["secret"] = json!("SECwrong");
    profile["chat"]["feishu"]["secret"] = json!("wrong");
    profile["chat"]["wecom"]["url"] = json!(mock.url("/wecom/cgi-bin/webhook/send?key=unknown"));
    api.put_user("team-b", profile).await;
    let id = api
        .send(json!({"to": ["team-b"], "title": "x", "strategy": "all", "channels": ["dingtalk", "feishu", "wecom"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "failed", "{m}");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[
            ("dingtalk", "permanent_error"),
            ("feishu", "permanent_error"),
            ("wecom", "permanent_error")
        ])
    );
    let details: Vec<&str> = m["recipients"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["detail"].as_str().unwrap_or(""))
        .collect();
    assert!(details[0].contains("310000"), "{details:?}");
    assert!(details[1].contains("19021"), "{details:?}");
    assert!(details[2].contains("93000"), "{details:?}");
    for route in ["dingtalk", "feishu"] {
        assert_eq!(
            mock.requests(route).await[0]["verified"],
            false,
            "{route} saw a bad signature"
        );
    }
    // A rate-limit code is transient: retried, then sent.
    api.put_user("team-c", chat_profile(&mock)).await;
    mock.script(
        "feishu",
        Some("feishu-tok"),
        json!([{"body": {"code": 11232, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]", "data": {}}}]),
    )
    .await;
    let id = api
        .send(json!({"to": ["team-c"], "title": "y", "channels": ["feishu"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("feishu", "transient_error"), ("feishu", "sent")]),
        "{m}"
    );
}

async fn a_robot_is_paced_not_failed(engine: Engine) {
    let mock = Mock::start();
    robots(&mock).await;
    let h = Herald::on(engine).start();
    let api = h.api();
    api.put_user(
        "busy",
        json!({"chat": {"dingtalk": {"url": mock.url("/dingtalk/robot/send?access_token=ding-tok-2"), "secret": "SECother"}}}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..22 {
        ids.push(
            api.send(json!({"to": ["busy"], "title": format!("m{n}"), "channels": ["dingtalk"]}))
                .await,
        );
    }
    // 20 a minute: twenty go now, the other two wait for a slot instead of failing.
    mock.wait_requests("dingtalk", 20, WAIT).await;
    support::eventually(WAIT, "twenty sent, two waiting", || async {
        let (mut sent, mut waiting) = (0, 0);
        for id in &ids {
            let m = api.message(id).await;
            match m["recipients"][0]["status"].as_str() {
                Some("sent") => sent += 1,
                Some("pending") => {
                    assert!(
                        m["recipients"][0]["attempts"]
                            .as_array()
                            .unwrap()
                            .is_empty(),
                        "a paced message records no failed attempt: {m}"
                    );
                    waiting += 1;
                }
                other => panic!("unexpected status {other:?}: {m}"),
            }
        }
        (sent == 20 && waiting == 2).then_some(())
    })
    .await;
    let seen = mock.requests("dingtalk").await;
    assert_eq!(seen.len(), 20, "the robot was never pushed past its rate");
    assert!(
        seen.iter()
            .all(|s| !s["reply"].to_string().contains("130101")),
        "no rate-limit answers"
    );
}

async fn chat_addresses_are_checked(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    for (profile, names) in [
        (
            json!({"chat": {"webhook": {"url": "ftp://example.com/hook"}}}),
            "chat.webhook.url",
        ),
        (
            json!({"chat": {"dingtalk": {"url": "not a url"}}}),
            "chat.dingtalk.url",
        ),
        (
            json!({"chat": {"webhook": {"url": "https://example.com/h", "secret": "plain"}}}),
            "chat.webhook.secret",
        ),
        (
            json!({"chat": {"slack": {"url": "https://hooks.slack.com/services/x", "secret": "s"}}}),
            "chat.slack.secret",
        ),
        (
            json!({"chat": {"telegram": {"url": "https://example.com"}}}),
            "telegram",
        ),
    ] {
        let a = api
            .request(Method::PUT, "/v1/users/someone", Some(profile.clone()))
            .await;
        assert_eq!(a.status, 400, "{profile}: {a:?}");
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(names),
            "{profile}: '{message}' names {names}"
        );
    }
    assert_eq!(
        api.get("/v1/users/someone").await.status,
        404,
        "nothing stored"
    );
    // Without an address the channel is skipped and the next one goes.
    let id = api
        .send(json!({"to": [{"user_id": "plain", "email": "p@example.com"}], "title": "x", "channels": ["slack", "email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("slack", "skipped"), ("email", "sent")])
    );
}

on_both_engines!(
    every_robot_gets_its_own_format_signed,
    a_200_with_an_error_code_is_not_sent,
    a_robot_is_paced_not_failed,
    chat_addresses_are_checked,
);
