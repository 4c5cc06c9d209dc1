//! Notification logic end to end (SPEC §8–10), on both engines, with a real SMTP server and
//! real WebSocket clients: templates in the recipient's language, preferences and one-click
//! unsubscribe, quiet hours (across a restart), escalation, scheduling and cancelling,
//! frequency caps — and the bad input each of them refuses.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Engine, Frame, Herald, HeraldBuilder, Smtp, attempts, pairs};

const WAIT: Duration = Duration::from_secs(30);

fn with_smtp(b: HeraldBuilder, smtp: &Smtp) -> HeraldBuilder {
    b.env("HERALD_SMTP_URL", smtp.url())
        .env("HERALD_SMTP_FROM", "Herald <noreply@herald.test>")
}

async fn put(api: &support::Api, path: &str, body: Value) -> support::Answer {
    api.request(reqwest::Method::PUT, path, Some(body)).await
}

fn order_shipped() -> Value {
    json!({
        "default_locale": "en",
        "locales": {
            "en": {
                "title": "Order {{ order_id }} shipped",
                "body": "Hi {{ name }}, it is on its way.",
                "email": {"subject": "Order {{ order_id }} shipped",
                          "html": "<p>Hi {{ name }},</p><p>order <b>{{ order_id }}</b> is on its way.</p>"},
                "sms": {"text": "Order {{ order_id }} shipped"}
            },
            "zh": {
                "title": "订单 {{ order_id }} 已发货",
                "body": "{{ name }}，您的订单已发货。",
                "sms": {"text": "订单 {{ order_id }} 已发货"}
            }
        }
    })
}

/// Reads frames until a `message` arrives (acking it when `ack`).
async fn next_message(client: &mut support::Client, ack: bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next(left).await {
            Some(Frame::Json(v)) if v["type"] == "message" => {
                if ack {
                    client.ack(v["id"].as_str().unwrap_or("")).await;
                }
                return v;
            }
            Some(Frame::Json(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn templates_render_in_each_recipients_language(engine: Engine) {
    let smtp = Smtp::start();
    let h = with_smtp(Herald::on(engine), &smtp).start();
    let api = h.api();
    let saved = put(&api, "/v1/templates/order_shipped", order_shipped()).await;
    assert_eq!(saved.status, 200, "{saved:?}");
    assert_eq!(saved.body, json!({"name": "order_shipped", "version": 1}));
    api.put_user("li", json!({"locale": "zh-CN"})).await;
    api.put_user("wang", json!({"locale": "zh-TW"})).await;
    api.put_user(
        "ann",
        json!({"locale": "en-GB", "email": "ann@example.com"}),
    )
    .await;
    let mut li = h.connect("li").await;
    let mut wang = h.connect("wang").await;

    let id = api
        .send(
            json!({"to": ["li", "wang", "ann"], "template": "order_shipped",
                     "vars": {"order_id": "A-42", "name": "<script>x</script>"}}),
        )
        .await;
    let to_li = next_message(&mut li, true).await;
    assert_eq!(to_li["id"], id.as_str());
    assert_eq!(to_li["title"], "订单 A-42 已发货", "zh-CN falls back to zh");
    assert_eq!(
        to_li["body"], "<script>x</script>，您的订单已发货。",
        "not HTML: not escaped"
    );
    let to_wang = next_message(&mut wang, true).await;
    assert_eq!(
        to_wang["title"], "订单 A-42 已发货",
        "zh-TW falls back to zh"
    );

    let mails = smtp.wait_mails(1, WAIT).await;
    let mail = &mails[0];
    assert_eq!(mail.header("To"), Some("ann@example.com"));
    assert_eq!(
        mail.header("Subject"),
        Some("Order A-42 shipped"),
        "en-GB → en"
    );
    let html = mail.part("text/html").expect("an HTML part");
    assert!(
        html.contains("<p>Hi &lt;script&gt;x&lt;"),
        "escaped in HTML: {html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    let text = mail
        .part("text/plain")
        .expect("a text part made from the HTML");
    assert!(text.contains("Hi <script>x</script>,"), "{text}");
    assert!(text.contains("order A-42 is on its way."), "{text}");
    assert!(!text.contains("<p>") && !text.contains("<b>"), "{text}");

    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "delivered", "{m}");

    // The preview: fallback, the parts, and the SMS length in segments.
    let p = api
        .post(
            "/v1/templates/order_shipped/preview",
            json!({"locale": "zh-Hant-TW", "vars": {"order_id": "A-42", "name": "王"}}),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.body["locale"], "zh");
    assert_eq!(p.body["parts"]["title"], "订单 A-42 已发货");
    assert_eq!(
        p.body["sms"],
        json!({"encoding": "ucs2", "characters": 11, "segments": 1})
    );
    let p = api
        .post(
            "/v1/templates/order_shipped/preview",
            json!({"vars": {"order_id": "A-42", "name": "Ann"}}),
        )
        .await;
    assert_eq!(p.body["sms"]["encoding"], "gsm7", "{p:?}");
    assert!(
        p.body["parts"]["email.text"]
            .as_str()
            .is_some_and(|t| t.contains("order A-42 is on its way")),
        "{p:?}"
    );
}

async fn a_message_keeps_the_template_version_it_was_accepted_with(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let v1 = json!({"default_locale": "en", "locales": {"en": {"title": "v1 {{ n }}"}}});
    let v2 = json!({"default_locale": "en", "locales": {"en": {"title": "v2 {{ n }}"}}});
    assert_eq!(
        put(&api, "/v1/templates/reminder", v1).await.body["version"],
        1
    );
    let mut client = h.connect("kim").await;
    let send_at = herald_common::time::rfc3339(herald_common::time::now_ms() + 2000);
    let id = api
        .send(json!({"to": ["kim"], "template": "reminder", "vars": {"n": 7}, "send_at": send_at}))
        .await;
    assert_eq!(
        put(&api, "/v1/templates/reminder", v2).await.body["version"],
        2
    );
    let got = next_message(&mut client, true).await;
    assert_eq!(
        (got["id"].as_str(), got["title"].as_str()),
        (Some(id.as_str()), Some("v1 7"))
    );
    let listed = api.get("/v1/templates").await;
    assert!(
        listed.body["templates"]
            .as_array()
            .is_some_and(|l| l.contains(&json!({"name": "reminder", "version": 2}))),
        "{listed:?}"
    );
    // Deleted: new sends are refused, the stored versions stay for messages in flight.
    let d = api
        .request(reqwest::Method::DELETE, "/v1/templates/reminder", None)
        .await;
    assert_eq!(d.status, 204);
    assert_eq!(api.get("/v1/templates/reminder").await.status, 404);
    let refused = api
        .post(
            "/v1/messages",
            json!({"to": ["kim"], "template": "reminder", "vars": {"n": 1}}),
        )
        .await;
    assert_eq!(refused.status, 400);
}

async fn templates_refuse_bad_input_and_store_nothing(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    // A syntax error: 400 naming the part, line and column.
    let bad = put(
        &api,
        "/v1/templates/broken",
        json!({"default_locale": "en", "locales": {"en": {"title": "ok", "body": "line one\nhello {{ name "}}}),
    )
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let msg = bad.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("locales.en.body") && msg.contains("line 2") && msg.contains("column"),
        "{msg}"
    );
    assert_eq!(
        api.get("/v1/templates/broken").await.status,
        404,
        "nothing stored"
    );
    // A template that would loop (near enough) forever: stopped by the fuel, refused.
    let endless = put(
        &api,
        "/v1/templates/endless",
        json!({"default_locale": "en", "locales": {"en": {"body":
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"}}}),
    )
    .await;
    assert_eq!(endless.status, 400, "{endless:?}");
    assert!(
        endless.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("loop")),
        "{endless:?}"
    );
    assert_eq!(api.get("/v1/templates/endless").await.status, 404);
    // A default locale that is not there; a bad locale tag.
    let a = put(
        &api,
        "/v1/templates/x",
        json!({"default_locale": "fr", "locales": {"en": {"title": "t"}}}),
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    let a = put(&api, "/v1/templates/x", json!({"default_locale": "en", "locales": {"en": {"title": "t"}, "not a tag!": {"title": "t"}}})).await;
    assert_eq!(a.status, 400, "{a:?}");

    // Sends: an unknown template, missing variables — 400, nothing accepted.
    assert_eq!(
        put(&api, "/v1/templates/order_shipped", order_shipped())
            .await
            .status,
        200
    );
    let mut client = h.connect("zoe").await;
    let unknown = api
        .post("/v1/messages", json!({"to": ["zoe"], "template": "nope"}))
        .await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("'nope'"),
        "{unknown:?}"
    );
    let missing = api
        .post(
            "/v1/messages",
            json!({"to": ["zoe"], "template": "order_shipped", "vars": {"order_id": 1}}),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("'name'"),
        "the message names the variable: {missing:?}"
    );
    assert!(
        client.next(Duration::from_millis(800)).await.is_none(),
        "nothing sent"
    );
}

async fn opt_outs_critical_bypass_and_one_click_unsubscribe(engine: Engine) {
    let smtp = Smtp::start();
    let h = with_smtp(Herald::on(engine), &smtp)
        .env("HERALD_CRITICAL_CATEGORIES", "security")
        .env("HERALD_PUBLIC_URL", "https://herald.example")
        .start();
    let api = h.api();
    api.put_user(
        "ann",
        json!({"email": "ann@example.com",
               "categories": {"marketing": {"email": false}, "security": {"*": false}}}),
    )
    .await;
    api.put_user("bob", json!({"email": "bob@example.com"}))
        .await;

    // ann opted out of marketing email: skipped, nothing sent.
    let promo =
        json!({"to": ["ann"], "title": "Sale", "category": "marketing", "channels": ["email"]});
    let m = api.wait_final(&api.send(promo).await, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "skipped", "{m}");
    assert_eq!(attempts(&m, 0), pairs(&[("email", "skipped")]));
    assert_eq!(
        m["recipients"][0]["attempts"][0]["detail"],
        "opted out of marketing on email"
    );
    // security is critical: her opt-out does not hold; critical mail has no unsubscribe link.
    let alert = json!({"to": ["ann"], "title": "New sign-in", "category": "security", "channels": ["email"]});
    let m = api.wait_final(&api.send(alert).await, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mails[0].header("Subject"), Some("New sign-in"));
    assert_eq!(mails[0].header("List-Unsubscribe"), None);

    // bob gets marketing mail, with the RFC 8058 headers.
    let promo =
        json!({"to": ["bob"], "title": "Sale", "category": "marketing", "channels": ["email"]});
    api.wait_final(&api.send(promo.clone()).await, WAIT).await;
    let mails = smtp.wait_mails(2, WAIT).await;
    let mail = mails
        .iter()
        .find(|m| m.header("To") == Some("bob@example.com"))
        .expect("bob's mail");
    assert_eq!(
        mail.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let link = mail
        .header("List-Unsubscribe")
        .and_then(|v| v.strip_prefix('<'))
        .and_then(|v| v.strip_suffix('>'))
        .expect("a List-Unsubscribe link")
        .to_string();
    let path = link
        .strip_prefix("https://herald.example")
        .expect("under HERALD_PUBLIC_URL");
    let http = reqwest::Client::new();
    // Opening it shows a confirmation page and changes nothing.
    let page = http.get(api.url(path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\"") && html.contains("marketing"),
        "{html}"
    );
    let profile = api.get("/v1/users/bob").await.body;
    assert!(profile.get("categories").is_none(), "{profile}");
    // A forged token does nothing.
    let forged = format!("{}x", &path[..path.len() - 1]);
    let r = http
        .post(api.url(&forged))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The mail client's one-click POST (no API key) opts bob out.
    let r = http
        .post(api.url(path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let profile = api.get("/v1/users/bob").await.body;
    assert_eq!(
        profile["categories"]["marketing"]["email"], false,
        "{profile}"
    );
    assert_eq!(
        profile["email"], "bob@example.com",
        "the rest of the profile stays"
    );
    let m = api.wait_final(&api.send(promo).await, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "skipped", "{m}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 2, "no more mail to bob");
}

/// `HH:MM` of a UTC instant.
fn hhmm(ms: i64) -> String {
    let minutes = (ms / 60_000).rem_euclid(1440);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

async fn quiet_hours_defer_offline_channels_durably(engine: Engine) {
    let smtp = Smtp::start();
    let mut h = with_smtp(Herald::on(engine), &smtp).start();
    let api = h.api();
    // A window that began an hour ago and ends at the next minute boundary at least 20 s
    // away (a window is whole minutes).
    let now = herald_common::time::now_ms();
    let end = (now + 20_000 + 59_999) / 60_000 * 60_000;
    api.put_user(
        "nia",
        json!({"email": "nia@example.com", "timezone": "UTC",
               "quiet_hours": {"start": hhmm(now - 3_600_000), "end": hhmm(end)}}),
    )
    .await;
    let mut client = h.connect("nia").await;
    let id = api
        .send(json!({"to": ["nia"], "title": "Weekly digest", "channels": ["in_app", "email"], "ack_timeout_ms": 300}))
        .await;
    // In-app is never deferred: it reaches the open session (which does not ack).
    let live = next_message(&mut client, false).await;
    assert_eq!(live["id"], id.as_str());
    let m = support::eventually(WAIT, "the deferral", || async {
        let m = api.message(&id).await;
        attempts(&m, 0)
            .contains(&("email".into(), "deferred".into()))
            .then_some(m)
    })
    .await;
    assert_eq!(m["recipients"][0]["status"], "pending");
    let detail = m["recipients"][0]["attempts"][1]["detail"]
        .as_str()
        .unwrap_or("");
    assert!(detail.contains("quiet hours"), "{detail}");
    drop(client);
    // high priority goes at once, quiet hours or not.
    let urgent = api
        .send(json!({"to": ["nia"], "title": "Card blocked", "priority": "high", "channels": ["email"]}))
        .await;
    let m = api.wait_final(&urgent, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent");
    assert_eq!(
        smtp.wait_mails(1, WAIT).await[0].header("Subject"),
        Some("Card blocked")
    );
    // A restart during the wait loses nothing.
    h.restart();
    let api = h.api();
    api.wait_ready(WAIT).await;
    let wait = Duration::from_millis((end - herald_common::time::now_ms()).max(0) as u64) + WAIT;
    let m = api.wait_final(&id, wait).await;
    let arrived = herald_common::time::now_ms();
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[
            ("in_app", "ack_timeout"),
            ("email", "deferred"),
            ("email", "sent")
        ])
    );
    assert!(arrived >= end, "not before the window's end");
    let mails = smtp.wait_mails(2, WAIT).await;
    assert!(
        mails
            .iter()
            .any(|m| m.header("Subject") == Some("Weekly digest"))
    );
}

async fn escalation_mails_what_was_not_read_in_time(engine: Engine) {
    let smtp = Smtp::start();
    let h = with_smtp(Herald::on(engine), &smtp).start();
    let api = h.api();
    api.put_user("carl", json!({"email": "carl@example.com"}))
        .await;
    api.put_user("dana", json!({"email": "dana@example.com"}))
        .await;
    let mut carl = h.connect("carl").await;
    let mut dana = h.connect("dana").await;
    let escalate = json!({"after_s": 2, "unless": "read", "channels": ["email"]});
    let to_carl = api
        .send(json!({"to": ["carl"], "title": "Invoice due", "channels": ["in_app"], "escalate": escalate}))
        .await;
    let to_dana = api
        .send(json!({"to": ["dana"], "title": "Invoice due", "channels": ["in_app"], "escalate": escalate}))
        .await;
    // Both acked (the app has it); only dana reads it.
    next_message(&mut carl, true).await;
    let got = next_message(&mut dana, true).await;
    dana.send(json!({"type": "read", "id": got["id"]})).await;

    let m = api.wait_final(&to_carl, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("in_app", "acked"), ("in_app", "unread"), ("email", "sent")])
    );
    assert_eq!(
        (
            m["recipients"][0]["status"].as_str(),
            m["recipients"][0]["channel"].as_str()
        ),
        (Some("sent"), Some("email"))
    );
    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mails[0].header("To"), Some("carl@example.com"));

    let m = api.wait_final(&to_dana, WAIT).await;
    assert_eq!(
        (
            m["recipients"][0]["status"].as_str(),
            m["recipients"][0]["channel"].as_str()
        ),
        (Some("delivered"), Some("in_app"))
    );
    assert_eq!(attempts(&m, 0), pairs(&[("in_app", "acked")]));
    assert!(m["recipients"][0]["read_at"].is_string(), "{m}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.mails().len(), 1, "no mail to dana, who read it");
}

async fn scheduled_messages_arrive_on_time_and_cancel_keys_stop_them(engine: Engine) {
    let smtp = Smtp::start();
    let h = with_smtp(Herald::on(engine), &smtp).start();
    let api = h.api();
    api.put_user("eve", json!({"email": "eve@example.com"}))
        .await;
    let at = herald_common::time::now_ms() + 3000;
    let send_at = herald_common::time::rfc3339(at);
    let on_time = api
        .send(json!({"to": ["eve"], "title": "Your reminder", "channels": ["email"], "send_at": send_at}))
        .await;
    let reminders: Vec<String> = futures::future::join_all((0..2).map(|n| {
        api.send(
            json!({"to": ["eve"], "title": format!("Pay invoice {n}"), "channels": ["email"],
                        "send_at": send_at, "cancel_key": "invoice-7"}),
        )
    }))
    .await;
    let m = api.message(&on_time).await;
    assert_eq!(m["recipients"][0]["status"], "scheduled", "{m}");
    assert_eq!(m["status"], "pending");
    let c = api
        .post("/v1/messages/cancel", json!({"cancel_key": "invoice-7"}))
        .await;
    assert_eq!((c.status, c.body.clone()), (200, json!({"canceled": 2})));
    let again = api
        .post("/v1/messages/cancel", json!({"cancel_key": "invoice-7"}))
        .await;
    assert_eq!(again.body, json!({"canceled": 0}), "once");

    let m = api.wait_final(&on_time, WAIT).await;
    assert!(herald_common::time::now_ms() >= at, "not before send_at");
    assert_eq!(m["recipients"][0]["status"], "sent");
    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mails[0].header("Subject"), Some("Your reminder"));
    for id in &reminders {
        let m = api.message(id).await;
        assert_eq!(
            (m["status"].as_str(), m["recipients"][0]["status"].as_str()),
            (Some("canceled"), Some("canceled"))
        );
        assert_eq!(attempts(&m, 0), pairs(&[]), "never attempted");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.mails().len(), 1, "nothing sent for the canceled ones");

    // Bad input: nothing accepted.
    let year_and_a_day =
        herald_common::time::rfc3339(herald_common::time::now_ms() + 367 * 86_400_000);
    let far = api
        .post(
            "/v1/messages",
            json!({"to": ["eve"], "title": "t", "send_at": year_and_a_day}),
        )
        .await;
    assert_eq!(far.status, 400, "{far:?}");
    assert!(
        far.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("send_at")
    );
    let garbled = api
        .post(
            "/v1/messages",
            json!({"to": ["eve"], "title": "t", "send_at": "tomorrow"}),
        )
        .await;
    assert_eq!(garbled.status, 400);
    let unknown = api
        .request(
            reqwest::Method::DELETE,
            "/v1/messages/no-such-message",
            None,
        )
        .await;
    assert_eq!(unknown.status, 404);
}

/// Cancels race jobs falling due: whatever the cancel answers holds — a recipient it
/// counts is never sent to, one it does not count was already being sent.
async fn a_cancel_that_returns_lets_no_send_through(engine: Engine) {
    let smtp = Smtp::start();
    let h = with_smtp(Herald::on(engine), &smtp).start();
    let api = h.api();
    api.put_user("finn", json!({"email": "finn@example.com"}))
        .await;
    let due = herald_common::time::now_ms() + 1500;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            api.send(
                json!({"to": ["finn"], "title": format!("race {n}"), "channels": ["email"],
                            "send_at": herald_common::time::rfc3339(due + n * 10)}),
            )
            .await,
        );
    }
    let wait = Duration::from_millis((due - herald_common::time::now_ms()).max(0) as u64);
    tokio::time::sleep(wait).await;
    let answers = futures::future::join_all(ids.iter().map(|id| {
        let (api, path) = (api.clone(), format!("/v1/messages/{id}"));
        async move { api.request(reqwest::Method::DELETE, &path, None).await }
    }))
    .await;
    let mut canceled = Vec::new();
    for (n, (id, a)) in ids.iter().zip(&answers).enumerate() {
        assert_eq!(a.status, 200, "{a:?}");
        let m = api.wait_final(id, WAIT).await;
        let status = m["recipients"][0]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match a.body["canceled"].as_u64() {
            Some(1) => {
                assert_eq!(status, "canceled", "{m}");
                canceled.push(format!("race {n}"));
            }
            Some(0) => assert_eq!(status, "sent", "not canceled: it was being sent: {m}"),
            other => panic!("{other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), ids.len() - canceled.len());
    for mail in &mails {
        let subject = mail.header("Subject").unwrap_or("");
        assert!(
            !canceled.iter().any(|c| c == subject),
            "{subject} was canceled, yet sent"
        );
    }
}

fn caps_config(dir: &tempfile::TempDir) -> String {
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "[[caps]]\ncategory = \"promo\"\nper_user = 3\nwindow_s = 86400\n",
    )
    .unwrap();
    file.display().to_string()
}

async fn frequency_caps_skip_what_is_over_the_cap(engine: Engine) {
    let smtp = Smtp::start();
    let dir = tempfile::tempdir().unwrap();
    let h = with_smtp(Herald::on(engine), &smtp)
        .arg("--config")
        .arg(&caps_config(&dir))
        .start();
    let api = h.api();
    api.put_user("gus", json!({"email": "gus@example.com"}))
        .await;
    let ids: Vec<String> = futures::future::join_all((0..5).map(|n| {
        api.send(json!({"to": ["gus"], "title": format!("Deal {n}"), "category": "promo", "channels": ["email"]}))
    }))
    .await;
    let mut statuses = Vec::new();
    for id in &ids {
        let m = api.wait_final(id, WAIT).await;
        let r = &m["recipients"][0];
        if r["status"] == "skipped" {
            assert!(
                r["attempts"][0]["detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("frequency cap"),
                "{m}"
            );
        }
        statuses.push(r["status"].as_str().unwrap_or("").to_string());
    }
    statuses.sort();
    assert_eq!(statuses, ["sent", "sent", "sent", "skipped", "skipped"]);
    assert_eq!(smtp.wait_mails(3, WAIT).await.len(), 3);
    // Other categories are not capped.
    let other = api
        .send(json!({"to": ["gus"], "title": "Receipt", "category": "billing", "channels": ["email"]}))
        .await;
    assert_eq!(
        api.wait_final(&other, WAIT).await["recipients"][0]["status"],
        "sent"
    );
}

async fn profiles_refuse_bad_time_zones_and_times(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    for (profile, names) in [
        (json!({"timezone": "Mars/Olympus"}), "Mars/Olympus"),
        (
            json!({"quiet_hours": {"start": "25:00", "end": "08:00"}}),
            "25:00",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "8am"}}),
            "8am",
        ),
        (
            json!({"categories": {"Bad Category!": {"email": false}}}),
            "Bad Category!",
        ),
    ] {
        let a = put(&api, "/v1/users/hal", profile.clone()).await;
        assert_eq!(a.status, 400, "{profile} answered {a:?}");
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(names), "{message}");
    }
    assert_eq!(api.get("/v1/users/hal").await.status, 404, "nothing stored");
    let a = api
        .post(
            "/v1/messages",
            json!({"to": ["hal"], "title": "t", "category": "No!"}),
        )
        .await;
    assert_eq!(a.status, 400);
}

on_both_engines!(
    templates_render_in_each_recipients_language,
    a_message_keeps_the_template_version_it_was_accepted_with,
    templates_refuse_bad_input_and_store_nothing,
    opt_outs_critical_bypass_and_one_click_unsubscribe,
    quiet_hours_defer_offline_channels_durably,
    escalation_mails_what_was_not_read_in_time,
    scheduled_messages_arrive_on_time_and_cancel_keys_stop_them,
    a_cancel_that_returns_lets_no_send_through,
    frequency_caps_skip_what_is_over_the_cap,
    profiles_refuse_bad_time_zones_and_times,
);
