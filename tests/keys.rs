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

on_both_engines!(keys_do_what_their_scopes_say);

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
