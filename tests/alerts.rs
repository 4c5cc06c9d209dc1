//! The platform's own alerts and dead letters: once per failure, not once per retry.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Engine, Herald, eventually};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn alerts_of(server: &MockServer, kind: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/alerts")
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|v| v["alert"] == kind)
        .collect()
}

async fn failing_sms_and_webhook() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

async fn a_final_failure_alerts_once_and_is_a_dead_letter(engine: Engine) {
    let server = failing_sms_and_webhook().await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_URL", format!("{}/sms", server.uri()))
        .env("HERALD_ALERT_WEBHOOK", format!("{}/alerts", server.uri()))
        .env("HERALD_RETRY_ATTEMPTS", "3")
        .env("HERALD_RETRY_BASE_MS", "50")
        .start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "dora", "phone": "+15550009999"}], "title": "Your code", "channels": ["sms"]}))
        .await;
    let m = api.wait_final(&id, Duration::from_secs(20)).await;
    assert_eq!(m["recipients"][0]["status"], "failed");
    assert_eq!(
        m["recipients"][0]["attempts"].as_array().unwrap().len(),
        3,
        "three attempts, one alert"
    );

    let alerts = eventually(Duration::from_secs(10), "the failure alert", || async {
        let a = alerts_of(&server, "message_failed").await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(alerts[0]["details"]["id"], id.as_str());
    assert_eq!(alerts[0]["details"]["user_id"], "dora");
    assert!(
        alerts[0]["details"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("503")
    );

    // A later message that succeeds in-app settles the question: still exactly one alert.
    let mut dora = h.connect("dora").await;
    let ok = api
        .send(json!({"to": ["dora"], "title": "fine", "channels": ["in_app"]}))
        .await;
    let frame = dora.expect("message").await;
    dora.ack(frame["id"].as_str().unwrap()).await;
    api.wait_final(&ok, Duration::from_secs(20)).await;
    assert_eq!(alerts_of(&server, "message_failed").await.len(), 1);

    let page = api.get("/v1/dead-letters?limit=10").await;
    assert_eq!(page.status, 200, "{page:?}");
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page:?}");
    assert_eq!(
        (
            items[0]["id"].as_str(),
            items[0]["user_id"].as_str(),
            items[0]["status"].as_str()
        ),
        (Some(id.as_str()), Some("dora"), Some("failed"))
    );
    assert_eq!(items[0]["title"], "Your code");
    assert_eq!(items[0]["attempts"].as_array().unwrap().len(), 3);
    let metrics = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_alerts_total{kind=\"message_failed\"} 1"),
        "{metrics}"
    );
}

async fn a_failing_channel_alerts_once(engine: Engine) {
    let server = failing_sms_and_webhook().await;
    let h = Herald::on(engine)
        .env("HERALD_SMS_URL", format!("{}/sms", server.uri()))
        .env("HERALD_ALERT_WEBHOOK", format!("{}/alerts", server.uri()))
        .env("HERALD_RETRY_ATTEMPTS", "1")
        .env("HERALD_ALERT_MIN_ATTEMPTS", "5")
        .start();
    let api = h.api();
    let mut ids = Vec::new();
    for i in 0..15 {
        ids.push(api.send(json!({"to": [{"user_id": format!("u{i}"), "phone": "+15550001234"}], "body": "x", "channels": ["sms"]})).await);
    }
    for id in &ids {
        api.wait_final(id, Duration::from_secs(20)).await;
    }
    let rate = eventually(Duration::from_secs(10), "the error-rate alert", || async {
        let a = alerts_of(&server, "channel_error_rate").await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    eventually(Duration::from_secs(10), "15 failure alerts", || async {
        (alerts_of(&server, "message_failed").await.len() == 15).then_some(())
    })
    .await;
    assert_eq!(
        rate.len(),
        1,
        "one alert for the channel, not one per failure: {rate:?}"
    );
    assert_eq!(rate[0]["details"]["channel"], "sms");
    assert!(rate[0]["details"]["rate"].as_f64().unwrap() > 0.5);
    // Paging through dead letters.
    let first = api.get("/v1/dead-letters?limit=10").await.body;
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    let next = first["next"].as_str().expect("a next page").to_string();
    let second = api
        .get(&format!("/v1/dead-letters?limit=10&before={next}"))
        .await
        .body;
    assert_eq!(second["items"].as_array().unwrap().len(), 5);
    assert!(second["next"].is_null());
    let mut all: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    all.sort();
    let mut sent = ids.clone();
    sent.sort();
    assert_eq!(all, sent);
}

on_both_engines!(
    a_final_failure_alerts_once_and_is_a_dead_letter,
    a_failing_channel_alerts_once
);
