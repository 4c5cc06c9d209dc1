//! Status webhooks (SPEC §11) on both engines, against the provider mock's Standard
//! Webhooks receiver (tests/mocks/providers.py `/hook/<name>`), which checks every
//! signature with the `standardwebhooks` package: retries keep one `webhook-id`, the
//! delivery log shows every POST, an endpoint that keeps failing is disabled with an alert,
//! a slow endpoint holds back no other, and bad registrations are refused naming the field.
//! On the cluster engine, a dispatcher killed with callbacks pending loses none.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use serde_json::{Value, json};
use support::nats::Nats;
use support::providers::Mock;
use support::{Api, Engine, Herald, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn create(api: &Api, url: &str, events: Value) -> (String, String) {
    let a = api
        .post("/v1/webhooks", json!({"url": url, "events": events}))
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.body["id"].as_str().expect("id").to_string();
    let secret = a.body["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (id, secret)
}

/// The mock's requests to one endpoint.
async fn hits(mock: &Mock, endpoint: &str) -> Vec<Value> {
    mock.requests("webhook")
        .await
        .into_iter()
        .filter(|r| r["path"] == format!("/hook/{endpoint}"))
        .collect()
}

async fn wait_hits(mock: &Mock, endpoint: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, &format!("{n} POSTs to {endpoint}"), || async {
        let h = hits(mock, endpoint).await;
        (h.len() >= n).then_some(h)
    })
    .await
}

fn assert_verified(requests: &[Value]) {
    for r in requests {
        assert_eq!(r["verified"], true, "signature refused: {r}");
    }
}

async fn status_changes_reach_webhooks_signed_and_retried(engine: Engine) {
    let mock = Mock::start();
    let h = Herald::on(engine)
        .env("HERALD_WEBHOOK_RETRY_SCHEDULE", "200ms,200ms,200ms")
        .start();
    let api = h.api();

    // Bad registrations name the field.
    for (body, field) in [
        (
            json!({"url": "ftp://example.com/h", "events": ["sent"]}),
            "url",
        ),
        (json!({"url": "https:///h", "events": ["sent"]}), "url"),
        (
            json!({"url": "https://example.com/h", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/h", "events": ["opened"]}),
            "events",
        ),
        (json!({"url": "https://example.com/h"}), "events"),
        (
            json!({"url": "https://example.com/h", "events": ["sent"], "secret": "x"}),
            "secret",
        ),
    ] {
        let a = api.post("/v1/webhooks", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        let m = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(field), "{body}: {m}");
    }
    assert_eq!(api.get("/v1/webhooks/nope").await.status, 400);
    assert_eq!(api.get("/v1/webhooks/wh_0000").await.status, 404);

    let (flaky, flaky_secret) = create(
        &api,
        &mock.url("/hook/flaky"),
        json!(["delivered", "read", "failed"]),
    )
    .await;
    let (all, all_secret) = create(&api, &mock.url("/hook/all"), json!(["*"])).await;
    mock.config(json!({"webhook": {"endpoints": {
        "flaky": {"secret": flaky_secret}, "all": {"secret": all_secret}}}}))
        .await;
    // The first two POSTs to the flaky endpoint fail.
    mock.script(
        "webhook",
        Some("flaky"),
        json!([{"status": 500, "body": "oops"}, {"status": 500}]),
    )
    .await;
    // Secrets are shown once.
    let list = api.get("/v1/webhooks").await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["webhooks"].as_array().map(Vec::len), Some(2));
    assert!(!list.body.to_string().contains("whsec_"), "{list:?}");

    // Bob reads a message in the app: delivered, then read.
    let mut bob = h.connect("bob").await;
    let id = api
        .send(json!({"to": ["bob"], "title": "Your order shipped", "channels": ["in_app"]}))
        .await;
    let m = bob.expect("message").await;
    assert_eq!(m["id"], id);
    bob.ack(&id).await;
    api.wait_final(&id, WAIT).await;

    // The flaky endpoint: `delivered` three times (500, 500, 200) under one webhook-id,
    // then (once bob reads it) `read` once.
    wait_hits(&mock, "flaky", 3).await;
    bob.send(json!({"type": "read", "id": id})).await;
    let got = wait_hits(&mock, "flaky", 4).await;
    assert_verified(&got);
    let by_event = |requests: &[Value], event: &str| -> Vec<Value> {
        requests
            .iter()
            .filter(|r| r["json"]["status"] == event)
            .cloned()
            .collect()
    };
    let delivered = by_event(&got, "delivered");
    assert_eq!(delivered.len(), 3, "{got:?}");
    let ids: BTreeSet<_> = delivered
        .iter()
        .map(|r| {
            r["headers"]["webhook-id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one webhook-id across retries: {ids:?}");
    let answered: Vec<_> = delivered.iter().map(|r| r["answered"].clone()).collect();
    assert_eq!(answered, [json!(500), json!(500), json!(200)]);
    let event = &delivered[0]["json"];
    assert_eq!(event["id"], id);
    assert_eq!(event["user_id"], "bob");
    assert_eq!(event["channel"], "in_app");
    assert!(
        event["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{event}"
    );
    assert_eq!(by_event(&got, "read").len(), 1, "{got:?}");
    assert_eq!(
        delivered[0]["headers"]["content-type"], "application/json",
        "{:?}",
        delivered[0]
    );

    // The `*` endpoint got both at once, each once.
    let got = wait_hits(&mock, "all", 2).await;
    assert_verified(&got);
    let events: Vec<_> = got.iter().map(|r| r["json"]["status"].clone()).collect();
    assert_eq!(events, [json!("delivered"), json!("read")]);

    // The delivery log: newest first, every POST.
    let log = eventually(WAIT, "the flaky endpoint's log", || async {
        let a = api.get(&format!("/v1/webhooks/{flaky}/deliveries")).await;
        (a.body["deliveries"].as_array().map_or(0, Vec::len) >= 4).then_some(a.body)
    })
    .await;
    let entries = log["deliveries"].as_array().expect("deliveries");
    let outcomes: Vec<_> = entries
        .iter()
        .rev()
        .filter(|e| e["event"] == "delivered")
        .map(|e| {
            (
                e["outcome"].clone(),
                e["status_code"].clone(),
                e["attempt"].clone(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("retrying"), json!(500), json!(1)),
            (json!("retrying"), json!(500), json!(2)),
            (json!("delivered"), json!(200), json!(3)),
        ],
        "{log}"
    );
    assert!(
        entries.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|t| t.contains("HTTP 500: oops"))),
        "{log}"
    );
    assert_eq!(entries[0]["message_id"], id);

    // Deleted: gone, and nothing more goes to it.
    let a = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{all}"),
            None,
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(api.get(&format!("/v1/webhooks/{all}")).await.status, 404);
    let a = api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{all}"),
            None,
        )
        .await;
    assert_eq!(a.status, 404, "{a:?}");
}

async fn a_failing_endpoint_is_disabled_and_a_slow_one_holds_back_no_other(engine: Engine) {
    let mock = Mock::start();
    let h = Herald::on(engine)
        .env("HERALD_WEBHOOK_RETRY_SCHEDULE", "100ms,100ms")
        .env("HERALD_WEBHOOK_CONCURRENCY", "2")
        .start();
    let api = h.api();
    let (_, slow_secret) = create(&api, &mock.url("/hook/slow"), json!(["failed"])).await;
    let (_, quick_secret) = create(&api, &mock.url("/hook/quick"), json!(["failed"])).await;
    let mut endpoints = json!({
        "slow": {"secret": slow_secret},
        "quick": {"secret": quick_secret}});
    mock.config(json!({"webhook": {"endpoints": endpoints}}))
        .await;
    // Each POST to the slow endpoint takes 4 s, two at a time.
    let slow_answers: Vec<Value> = (0..6).map(|_| json!({"delay_ms": 4000})).collect();
    mock.script("webhook", Some("slow"), json!(slow_answers))
        .await;

    // A user without an email address fails at once: a `failed` event each.
    let fail =
        |n: usize| json!({"to": [format!("nobody-{n}")], "title": "x", "channels": ["email"]});
    for n in 0..6 {
        api.send(fail(n)).await;
    }
    // The quick endpoint gets all six while the slow one is still on its first two.
    let quick_hits = wait_hits(&mock, "quick", 6).await;
    assert_verified(&quick_hits);
    assert_eq!(
        quick_hits[0]["json"]["status"], "failed",
        "{:?}",
        quick_hits[0]
    );
    let slow_done = hits(&mock, "slow").await;
    assert!(
        slow_done.len() <= 2,
        "the slow endpoint finished {} POSTs already",
        slow_done.len()
    );

    // An endpoint that answers 503 to its event's every attempt (1 + 2 retries) is
    // disabled, with the reason, and an alert.
    let (down, down_secret) = create(&api, &mock.url("/hook/down"), json!(["failed"])).await;
    endpoints["down"] = json!({"secret": down_secret});
    mock.config(json!({"webhook": {"endpoints": endpoints}}))
        .await;
    let down_answers: Vec<Value> = (0..3).map(|_| json!({"status": 503})).collect();
    mock.script("webhook", Some("down"), json!(down_answers))
        .await;
    let first = api.send(fail(100)).await;
    let hook = eventually(WAIT, "the failing endpoint disabled", || async {
        let a = api.get(&format!("/v1/webhooks/{down}")).await;
        a.body.get("disabled").is_some().then_some(a.body)
    })
    .await;
    let reason = hook["disabled"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("HTTP 503"), "{hook}");
    assert!(h.log_text().contains("webhook_disabled"), "no alert logged");
    let log = api
        .get(&format!("/v1/webhooks/{down}/deliveries"))
        .await
        .body;
    let outcomes: Vec<_> = log["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["message_id"].clone(), e["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!(first), json!("failed")),
            (json!(first), json!("retrying")),
            (json!(first), json!("retrying")),
        ],
        "{log}"
    );
    let down_hits = hits(&mock, "down").await;
    assert_eq!(down_hits.len(), 3, "{down_hits:?}");
    // Enabled again, it gets the next event.
    let a = api
        .post(&format!("/v1/webhooks/{down}/enable"), json!({}))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.get("disabled").is_none(), "{a:?}");
    let next = api.send(fail(101)).await;
    let got = wait_hits(&mock, "down", 4).await;
    assert_eq!(got[3]["json"]["id"], next);
    assert_eq!(got[3]["answered"], 200);
    assert_verified(&got);
}

on_both_engines!(
    status_changes_reach_webhooks_signed_and_retried,
    a_failing_endpoint_is_disabled_and_a_slow_one_holds_back_no_other
);

/// Cluster: two dispatchers share a webhook's deliveries; `kill -9` of one while callbacks
/// wait for a failing endpoint loses none of them: the other takes them over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_loses_no_callback() {
    let mock = Mock::start();
    let nats = Nats::single();
    let env = [
        (
            "HERALD_WEBHOOK_RETRY_SCHEDULE",
            "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        ),
        ("HERALD_NATS_ACK_WAIT_S", "2"),
    ];
    let start = |nats: &Nats| {
        let mut b = Herald::builder().role("dispatcher", &nats.url());
        for (k, v) in env {
            b = b.env(k, v);
        }
        b.start()
    };
    let mut a = start(&nats);
    let b = start(&nats);
    let api = a.api();
    let api_b = b.api();
    let (_, secret) = create(&api, &mock.url("/hook/ops"), json!(["failed"])).await;
    mock.config(json!({"webhook": {"endpoints": {"ops": {"secret": secret}}}}))
        .await;
    // The endpoint is down for the first 40 POSTs, each answered after 1.5 s: every event is
    // retried, and the killed dispatcher dies with POSTs in flight.
    let down: Vec<Value> = (0..40)
        .map(|_| json!({"status": 500, "delay_ms": 1500}))
        .collect();
    mock.script("webhook", Some("ops"), json!(down)).await;
    let sent = 40;
    let mut ids = BTreeSet::new();
    for n in 0..sent {
        let target = if n % 2 == 0 { &api } else { &api_b };
        let id = target
            .send(json!({"to": [format!("nobody-{n}")], "title": "x", "channels": ["email"]}))
            .await;
        ids.insert(id);
    }
    // Some POSTs failed already; the rest of the work is spread over both dispatchers.
    wait_hits(&mock, "ops", 10).await;
    a.kill9();
    let got = eventually(Duration::from_secs(60), "every event delivered", || async {
        let mut ok: BTreeMap<String, String> = BTreeMap::new();
        for r in hits(&mock, "ops").await {
            if r["answered"] == 200
                && let (Some(id), Some(hook_id)) = (
                    r["json"]["id"].as_str(),
                    r["headers"]["webhook-id"].as_str(),
                )
            {
                ok.insert(id.to_string(), hook_id.to_string());
            }
        }
        (ok.len() >= sent).then_some(ok)
    })
    .await;
    let delivered: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(delivered, ids, "every message's failed event arrived");
    assert_verified(&hits(&mock, "ops").await);
    drop(b);
}
