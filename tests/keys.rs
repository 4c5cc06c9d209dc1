//! Named, scoped API keys (SPEC §11) on both engines: a key can do what its scopes say and
//! nothing else (403 naming the scope it lacks), messages record the key that sent them,
//! and `GET /v1/messages?sender=` filters by it.

mod support;

use std::process::Command;

use serde_json::json;
use support::{API_KEY, Api, Engine, Herald};

async fn keys_do_what_their_scopes_say(engine: Engine) {
    let h = Herald::on(engine)
        .env(
            "HERALD_API_KEYS",
            format!("{API_KEY},billing:b-key-123:send,ops:o-key-456:read+admin"),
        )
        .start();
    let admin = h.api();
    let billing = Api::new(&h.base(), "b-key-123");
    let ops = Api::new(&h.base(), "o-key-456");

    // billing sends, and nothing else.
    let a = billing
        .post(
            "/v1/messages",
            json!({"to": ["bob"], "title": "Invoice ready"}),
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");
    let id = a.body["id"].as_str().expect("id").to_string();
    let a = billing.get("/v1/users/bob").await;
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.body["error"]["code"], "forbidden");
    let m = a.body["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("'billing'") && m.contains("'read'"), "{m}");
    let a = billing
        .request(
            reqwest::Method::PUT,
            "/v1/users/bob",
            Some(json!({"email": "bob@example.com"})),
        )
        .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'admin'")),
        "{a:?}"
    );
    let a = billing.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(a.status, 403, "reading a message needs read: {a:?}");

    // ops reads and administers, and cannot send.
    let a = ops.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.body["sender"], "billing",
        "the message records its sender"
    );
    let a = ops
        .post("/v1/messages", json!({"to": ["bob"], "title": "From ops"}))
        .await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'send'")),
        "{a:?}"
    );
    let a = ops
        .request(
            reqwest::Method::PUT,
            "/v1/users/bob",
            Some(json!({"email": "bob@example.com"})),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");

    // The old unnamed key has every scope, and its messages say which key it was.
    let other = admin.send(json!({"to": ["bob"], "title": "Hello"})).await;
    assert_eq!(admin.message(&other).await["sender"], "key-1");

    // Filter by sender.
    let a = ops.get("/v1/messages?user=bob&sender=billing").await;
    assert_eq!(a.status, 200, "{a:?}");
    let ids: Vec<&str> = a.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let a = ops.get("/v1/messages?user=bob&sender=key-1").await;
    assert_eq!(a.body["items"].as_array().map(Vec::len), Some(1), "{a:?}");
    let a = ops.get("/v1/messages?user=bob&sender=bad%20name").await;
    assert_eq!(a.status, 400, "{a:?}");

    // A key that is not one.
    let a = Api::new(&h.base(), "b-key-12").get("/v1/stats").await;
    assert_eq!(a.status, 401, "{a:?}");
}

async fn keys_made_through_the_api_work_at_once_and_stop_at_once(engine: Engine) {
    let h = Herald::on(engine)
        .env("HERALD_API_KEYS", format!("root:{API_KEY}"))
        .start();
    let admin = h.api();
    let a = admin
        .post(
            "/v1/keys",
            json!({"name": "shipping", "scopes": ["send"], "daily_quota": 3}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let key = a.body["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("hk_") && key.len() > 40, "{key}");
    assert_eq!(a.body["scopes"], json!(["send"]));
    let shipping = Api::new(&h.base(), &key);

    // Its scopes hold, its sends say who sent them, and its quota stops the fourth.
    let id = shipping
        .post("/v1/messages", json!({"to": ["bob"], "title": "Shipped"}))
        .await;
    assert_eq!(id.status, 202, "{id:?}");
    let id = id.body["id"].as_str().expect("id").to_string();
    assert_eq!(admin.message(&id).await["sender"], "shipping");
    assert_eq!(shipping.get("/v1/users/bob").await.status, 403);
    for _ in 0..2 {
        let a = shipping
            .post("/v1/messages", json!({"to": ["bob"], "title": "Shipped"}))
            .await;
        assert_eq!(a.status, 202, "{a:?}");
    }
    let over = reqwest::Client::new()
        .post(format!("{}/v1/messages", h.base()))
        .bearer_auth(&key)
        .json(&json!({"to": ["bob"], "title": "One too many"}))
        .send()
        .await
        .expect("send");
    assert_eq!(over.status(), 429);
    let wait: u64 = over
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=86_400).contains(&wait), "{wait}");
    let body: serde_json::Value = over.json().await.expect("json");
    let m = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("'shipping'") && m.contains("daily quota of 3"),
        "{m}"
    );

    // Listed with the configured one, never with the key.
    let list = admin.get("/v1/keys").await;
    assert_eq!(list.status, 200, "{list:?}");
    let text = list.body.to_string();
    assert!(!text.contains(&key) && !text.contains(API_KEY), "{text}");
    let sources: Vec<_> = list.body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| (k["name"].clone(), k["source"].clone()))
        .collect();
    assert_eq!(
        sources,
        [
            (json!("root"), json!("config")),
            (json!("shipping"), json!("api"))
        ]
    );

    // Bad requests name the field.
    for (body, says) in [
        (json!({"name": "bad name"}), "name"),
        (json!({"name": "x", "scopes": ["write"]}), "scopes"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "daily_quota": 0}), "daily_quota"),
        (json!({"name": "x", "key": "chosen"}), "key"),
    ] {
        let a = admin.post("/v1/keys", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        let m = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(says), "{body}: {m}");
    }
    for (body, says) in [
        (json!({"name": "shipping"}), "taken"),
        (json!({"name": "root"}), "HERALD_API_KEYS"),
    ] {
        let a = admin.post("/v1/keys", body.clone()).await;
        assert_eq!(a.status, 409, "{body}: {a:?}");
        let m = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(says), "{body}: {m}");
    }
    let del = |name: &str| {
        let admin = admin.clone();
        let path = format!("/v1/keys/{name}");
        async move { admin.request(reqwest::Method::DELETE, &path, None).await }
    };
    assert_eq!(del("root").await.status, 409);
    assert_eq!(del("nobody").await.status, 404);
    // A key with a rate of its own (the server's HERALD_API_RATE_LIMIT is off): a
    // burst of twice the rate, then 429 with Retry-After, naming the key; the others
    // are not held back by it.
    let a = admin
        .post(
            "/v1/keys",
            json!({"name": "poller", "scopes": ["read"], "rate_limit": 1}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.body["rate_limit"], 1, "{a:?}");
    let poller = Api::new(&h.base(), a.body["key"].as_str().expect("key"));
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(poller.get("/v1/stats").await);
    }
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(
        answers[..2].iter().all(|a| a.status == 200),
        "the burst of 2 passes: {answers:?}"
    );
    let Some(first) = limited.first() else {
        panic!("10 requests at 1/s were never limited: {answers:?}");
    };
    let m = first.body["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("'poller'"), "{m}");
    for _ in 0..20 {
        assert_eq!(admin.get("/v1/stats").await.status, 200);
    }
    let listed = admin.get("/v1/keys").await;
    let poller_view = listed.body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["name"] == "poller")
        .cloned();
    assert_eq!(
        poller_view.map(|k| k["rate_limit"].clone()),
        Some(json!(1)),
        "{listed:?}"
    );
    for bad in [json!(0), json!(100_001), json!(1.5)] {
        let a = admin
            .post("/v1/keys", json!({"name": "x", "rate_limit": bad}))
            .await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        let m = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains("rate_limit"), "{bad}: {m}");
    }

    // A send-only key cannot make keys.
    let a = shipping.post("/v1/keys", json!({"name": "mine"})).await;
    assert_eq!(a.status, 403, "{a:?}");

    // Deleted: refused at once.
    assert_eq!(del("shipping").await.status, 204);
    let a = shipping
        .post("/v1/messages", json!({"to": ["bob"], "title": "x"}))
        .await;
    assert_eq!(a.status, 401, "{a:?}");
}

on_both_engines!(
    keys_do_what_their_scopes_say,
    keys_made_through_the_api_work_at_once_and_stop_at_once
);

/// Cluster: a key made through one dispatcher works on another the moment the POST
/// returns, and stops there the moment the DELETE returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reaches_every_dispatcher_at_once() {
    let nats = support::nats::Nats::single();
    let d0 = Herald::builder().role("dispatcher", &nats.url()).start();
    let d1 = Herald::builder().role("dispatcher", &nats.url()).start();
    d0.api()
        .wait_ready(std::time::Duration::from_secs(60))
        .await;
    d1.api()
        .wait_ready(std::time::Duration::from_secs(60))
        .await;
    for round in 0..3 {
        let name = format!("billing-{round}");
        let a = d0.api().post("/v1/keys", json!({"name": name})).await;
        assert_eq!(a.status, 201, "{a:?}");
        let key = a.body["key"].as_str().expect("key").to_string();
        let on_d1 = Api::new(&d1.base(), &key);
        let sent = on_d1
            .post("/v1/messages", json!({"to": ["bob"], "title": "x"}))
            .await;
        assert_eq!(sent.status, 202, "round {round}: {sent:?}");
        let gone = d0
            .api()
            .request(reqwest::Method::DELETE, &format!("/v1/keys/{name}"), None)
            .await;
        assert_eq!(gone.status, 204, "{gone:?}");
        let refused = on_d1
            .post("/v1/messages", json!({"to": ["bob"], "title": "x"}))
            .await;
        assert_eq!(refused.status, 401, "round {round}: {refused:?}");
    }
}

/// Entries that are not keys stop the start, naming the entry and never showing a key.
#[test]
fn odd_key_entries_are_refused_naming_what_is_wrong() {
    for (keys, says) in [
        ("bill ing:secret-1", "has ' '"),
        ("billing:secret-1:write", "unknown scope 'write'"),
        ("billing:secret-1,billing:secret-2", "used twice"),
        ("a:b:c:d", "use key, name:key or name:key:scope+scope"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["check-config"])
            .env("HERALD_API_KEYS", keys)
            .env("HERALD_JWT_SECRET", "s")
            .output()
            .expect("run herald");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{keys}: accepted");
        assert!(
            text.contains("HERALD_API_KEYS") && text.contains(says),
            "{keys}: {text}"
        );
        assert!(
            !text.contains("secret-"),
            "{keys}: a key in the error: {text}"
        );
    }
}
