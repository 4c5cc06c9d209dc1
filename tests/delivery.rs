//! Delivery end to end on `herald serve`: in-app with acks, fallback to a real SMTP server
//! and to an SMS provider (wiremock, both provider shapes), retries, strategies, priorities.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Engine, Frame, Herald, Smtp, attempts, pairs};
use wiremock::matchers::{body_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(20);

async fn online_user_who_acks_gets_it_in_app(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let mut client = h.connect("alice").await;
    assert_eq!(client.welcome["type"], "welcome");
    assert_eq!(client.welcome["user_id"], "alice");
    assert!(
        client.welcome["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );

    let id = api
        .send(json!({"to": ["alice"], "title": "Order shipped", "body": "Your order #42 is on its way", "data": {"order_id": 42}}))
        .await;
    let frame = client.expect("message").await;
    assert_eq!(frame["id"], id.as_str());
    assert_eq!(frame["title"], "Order shipped");
    assert_eq!(frame["body"], "Your order #42 is on its way");
    assert_eq!(frame["data"], json!({"order_id": 42}));
    assert_eq!(frame["seq"], 1);
    assert!(frame.get("topic").is_none());
    client.ack(&id).await;

    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["recipients"][0]["status"], "delivered");
    assert_eq!(m["recipients"][0]["channel"], "in_app");
    assert_eq!(attempts(&m, 0), pairs(&[("in_app", "acked")]));
}

async fn offline_user_gets_email_after_offline_in_app(engine: Engine) {
    let smtp = Smtp::start();
    let h = Herald::on(engine)
        .env("HERALD_SMTP_URL", smtp.url())
        .env("HERALD_SMTP_FROM", "Herald <noreply@herald.test>")
        .start();
    let api = h.api();
    api.put_user("bob", json!({"email": "bob@example.com", "locale": "en"}))
        .await;

    let started = std::time::Instant::now();
    let id = api
        .send(
            json!({"to": ["bob"], "title": "Order shipped", "body": "Your order #42 is on its way",
                     "email": {"subject": "Your order shipped"}}),
        )
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "delivered");
    let r = &m["recipients"][0];
    assert_eq!(
        (r["status"].as_str(), r["channel"].as_str()),
        (Some("sent"), Some("email"))
    );
    assert_eq!(
        attempts(&m, 0),
        pairs(&[
            ("in_app", "offline"),
            ("push", "skipped"),
            ("email", "sent")
        ]),
        "the default order is in_app, push, email, sms; bob has no device"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "offline must not wait for the ack timeout"
    );

    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.header("To"), Some("bob@example.com"));
    assert_eq!(mail.header("Subject"), Some("Your order shipped"));
    assert!(
        mail.header("From")
            .is_some_and(|f| f.contains("noreply@herald.test"))
    );
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{id}.0@herald>").as_str())
    );
    assert!(
        mail.body.contains("Your order #42 is on its way"),
        "{}",
        mail.body
    );
}

async fn inline_contact_overrides_the_profile(engine: Engine) {
    let smtp = Smtp::start();
    let h = Herald::on(engine)
        .env("HERALD_SMTP_URL", smtp.url())
        .start();
    let api = h.api();
    api.put_user("bob", json!({"email": "old@example.com"}))
        .await;
    let id = api
        .send(json!({"to": [{"user_id": "bob", "email": "new@example.com"}], "title": "Hi", "channels": ["email"]}))
        .await;
    assert_eq!(api.wait_final(&id, WAIT).await["status"], "delivered");
    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mails[0].header("To"), Some("new@example.com"));
    assert_eq!(mails[0].header("Subject"), Some("Hi"));
}

async fn generic_sms(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

async fn silent_session_times_out_then_sms(engine: Engine) {
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/"))
        .and(header("authorization", "Bearer sms-token"))
        .and(body_json(
            json!({"to": "+15550001111", "from": "+15559990000", "text": "Order #42 shipped"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "sms-1"})))
        .expect(1)
        .mount(&sms)
        .await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_URL", sms.uri())
        .env("HERALD_SMS_TOKEN", "sms-token")
        .env("HERALD_SMS_FROM", "+15559990000")
        .start();
    let api = h.api();
    let mut carol = h.connect("carol").await;
    let id = api
        .send(json!({"to": [{"user_id": "carol", "phone": "+15550001111"}], "title": "Order shipped",
                     "channels": ["in_app", "sms"], "ack_timeout_ms": 300, "sms": {"text": "Order #42 shipped"}}))
        .await;
    let frame = carol.expect("message").await;
    assert_eq!(frame["id"], id.as_str());
    // carol never acks.
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent");
    assert_eq!(m["recipients"][0]["channel"], "sms");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("in_app", "ack_timeout"), ("sms", "sent")])
    );
    let detail = m["recipients"][0]["attempts"][1]["detail"]
        .as_str()
        .unwrap_or("");
    assert!(detail.contains("sms-1"), "provider id recorded: {detail}");
    sms.verify().await;
}

async fn transient_sms_errors_retry_until_sent_once(engine: Engine) {
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&sms)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "ok"})))
        .with_priority(2)
        .mount(&sms)
        .await;
    let h = Herald::on(engine).env("HERALD_SMS_URL", sms.uri()).start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "dan", "phone": "+15550002222"}], "body": "code 1234", "channels": ["sms"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[
            ("sms", "transient_error"),
            ("sms", "transient_error"),
            ("sms", "sent")
        ])
    );
    let requests = generic_sms(&sms).await;
    assert_eq!(requests.len(), 3, "two 503s and one success");
    assert!(
        requests
            .iter()
            .all(|r| r["to"] == "+15550002222" && r["text"] == "code 1234")
    );
}

async fn permanent_sms_error_moves_to_the_next_channel(engine: Engine) {
    let smtp = Smtp::start();
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid number"})))
        .expect(1)
        .mount(&sms)
        .await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_URL", sms.uri())
        .env("HERALD_SMTP_URL", smtp.url())
        .start();
    let api = h.api();
    api.put_user(
        "erin",
        json!({"email": "erin@example.com", "phone": "+15550003333"}),
    )
    .await;
    let id = api
        .send(json!({"to": ["erin"], "title": "Alert", "channels": ["sms", "email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("sms", "permanent_error"), ("email", "sent")])
    );
    assert_eq!(m["recipients"][0]["channel"], "email");
    let detail = m["recipients"][0]["attempts"][0]["detail"]
        .as_str()
        .unwrap_or("");
    assert!(detail.contains("400"), "{detail}");
    assert_eq!(
        smtp.wait_mails(1, WAIT).await[0].header("To"),
        Some("erin@example.com")
    );
    sms.verify().await;
}

async fn twilio_provider_shape(engine: Engine) {
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC123/Messages.json"))
        // HTTP basic auth "AC123:secret".
        .and(header("authorization", "Basic QUMxMjM6c2VjcmV0"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("To=%2B15550004444"))
        .and(body_string_contains("From=%2B15559990000"))
        .and(body_string_contains("Body=Hello+there"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": "SM0001", "status": "queued"})),
        )
        .expect(1)
        .mount(&sms)
        .await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_PROVIDER", "twilio")
        .env("HERALD_SMS_URL", sms.uri())
        .env("HERALD_SMS_ACCOUNT", "AC123")
        .env("HERALD_SMS_TOKEN", "secret")
        .env("HERALD_SMS_FROM", "+15559990000")
        .start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "fay", "phone": "+15550004444"}], "body": "Hello there", "channels": ["sms"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(attempts(&m, 0), pairs(&[("sms", "sent")]));
    assert!(
        m["recipients"][0]["attempts"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("SM0001")
    );
    sms.verify().await;
}

async fn no_address_or_opted_out_is_skipped_and_failed(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    api.put_user(
        "gus",
        json!({"email": "gus@example.com", "preferences": {"email": false}}),
    )
    .await;
    let id = api.send(json!({"to": ["gus"], "title": "Hi"})).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "failed");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[
            ("in_app", "offline"),
            ("push", "skipped"),
            ("email", "skipped"),
            ("sms", "skipped")
        ])
    );
    let details: Vec<&str> = m["recipients"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["detail"].as_str().unwrap_or(""))
        .collect();
    assert!(details[1].contains("no active device"), "{details:?}");
    assert!(details[2].contains("opted out"), "{details:?}");
    assert!(details[3].contains("no phone"), "{details:?}");
}

async fn without_providers_mail_and_sms_go_to_the_outbox(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "hal", "email": "hal@example.com", "phone": "+15550005555"}],
                     "title": "Outbox", "body": "filed", "channels": ["email", "sms"], "strategy": "all"}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("email", "sent"), ("sms", "sent")])
    );
    let eml =
        std::fs::read_to_string(h.data_dir.join(format!("outbox/{id}.0.eml"))).expect("eml file");
    assert!(
        eml.contains("To: hal@example.com") && eml.contains("Subject: Outbox"),
        "{eml}"
    );
    let sms = std::fs::read_to_string(h.data_dir.join("outbox/sms.jsonl")).expect("sms.jsonl");
    let line: Value = serde_json::from_str(sms.lines().next().unwrap()).unwrap();
    assert_eq!(line["to"], "+15550005555");
    assert_eq!(line["text"], "Outbox: filed");
}

async fn strategy_all_uses_every_channel_and_every_session_gets_it(engine: Engine) {
    let smtp = Smtp::start();
    let h = Herald::on(engine)
        .env("HERALD_SMTP_URL", smtp.url())
        .start();
    let api = h.api();
    let mut phone = h.connect("ivy").await;
    let mut laptop = h.connect("ivy").await;
    let id = api
        .send(
            json!({"to": [{"user_id": "ivy", "email": "ivy@example.com"}], "title": "Both",
                     "channels": ["in_app", "email"], "strategy": "all"}),
        )
        .await;
    let a = phone.expect("message").await;
    let b = laptop.expect("message").await;
    assert_eq!(
        (a["id"].as_str(), b["id"].as_str()),
        (Some(id.as_str()), Some(id.as_str()))
    );
    laptop.ack(&id).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("in_app", "acked"), ("email", "sent")])
    );
    assert_eq!(m["recipients"][0]["status"], "delivered");
    assert_eq!(m["recipients"][0]["channel"], "in_app");
    assert_eq!(smtp.wait_mails(1, WAIT).await.len(), 1);
}

async fn many_recipients_each_get_their_own_fate(engine: Engine) {
    let smtp = Smtp::start();
    let h = Herald::on(engine)
        .env("HERALD_SMTP_URL", smtp.url())
        .start();
    let api = h.api();
    let client = h.connect("online").await;
    let mut frames = client.auto_ack();
    let a = api
        .post("/v1/messages", json!({"to": ["online", {"user_id": "offline", "email": "off@example.com"}, "nobody", "online"], "title": "Fan"}))
        .await;
    assert_eq!(a.status, 202);
    assert_eq!(a.body["recipients"], 3, "a repeated recipient counts once");
    let id = a.body["id"].as_str().unwrap().to_string();
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "partial");
    let statuses: Vec<(&str, &str)> = m["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["user_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("online", "delivered"),
            ("offline", "sent"),
            ("nobody", "failed")
        ]
    );
    match frames.recv().await {
        Some(Frame::Json(v)) => assert_eq!(v["id"], id.as_str()),
        other => panic!("{other:?}"),
    }
}

async fn a_message_past_its_ttl_expires(engine: Engine) {
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sms)
        .await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_URL", sms.uri())
        .env("HERALD_RETRY_ATTEMPTS", "100")
        .env("HERALD_RETRY_BASE_MS", "300")
        .start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "jo", "phone": "+15550006666"}], "body": "soon stale", "channels": ["sms"], "ttl_s": 1}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "expired");
    assert!(
        attempts(&m, 0)
            .iter()
            .all(|a| a == &("sms".to_string(), "transient_error".to_string()))
    );
    assert!(!attempts(&m, 0).is_empty());
}

async fn high_priority_is_not_queued_behind_a_low_flood(engine: Engine) {
    // A slow SMS provider: every request takes 150 ms. 2 slots per lane: 60 low messages
    // need at least 4.5 s to drain, while the high lane is free.
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(150)))
        .mount(&sms)
        .await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_URL", sms.uri())
        .env("HERALD_LANE_CONCURRENCY", "2")
        .start();
    let api = h.api();
    let mut low = Vec::new();
    for i in 0..60 {
        low.push(
            api.send(json!({"to": [{"user_id": format!("low{i}"), "phone": "+15550007777"}], "body": "bulk",
                            "channels": ["sms"], "priority": "low"}))
                .await,
        );
    }
    let high = api
        .send(
            json!({"to": [{"user_id": "vip", "phone": "+15550008888"}], "body": "urgent",
                     "channels": ["sms"], "priority": "high"}),
        )
        .await;
    let high_done = api.wait_final(&high, WAIT).await;
    let done_at = high_done["recipients"][0]["attempts"][0]["at"]
        .as_str()
        .unwrap()
        .to_string();
    // Count low messages still unfinished when high was sent.
    let mut later = 0;
    for id in &low {
        let m = api.wait_final(id, Duration::from_secs(60)).await;
        let at = m["recipients"][0]["attempts"][0]["at"]
            .as_str()
            .unwrap()
            .to_string();
        if at > done_at {
            later += 1;
        }
    }
    assert!(
        later >= 40,
        "high went out after all but {later} of 60 low messages"
    );
    assert_eq!(high_done["priority"], "high");
}

on_both_engines!(
    online_user_who_acks_gets_it_in_app,
    offline_user_gets_email_after_offline_in_app,
    inline_contact_overrides_the_profile,
    silent_session_times_out_then_sms,
    transient_sms_errors_retry_until_sent_once,
    permanent_sms_error_moves_to_the_next_channel,
    twilio_provider_shape,
    no_address_or_opted_out_is_skipped_and_failed,
    without_providers_mail_and_sms_go_to_the_outbox,
    strategy_all_uses_every_channel_and_every_session_gets_it,
    many_recipients_each_get_their_own_fate,
    a_message_past_its_ttl_expires,
    high_priority_is_not_queued_behind_a_low_flood,
);
