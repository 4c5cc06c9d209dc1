//! The inbox of a notification centre (SPEC §11) on both engines, with real WebSocket
//! sessions: messages listed newest first with read state and the unread count; a read on
//! one session, or through the API, reaches every session of the user with the new count;
//! mark-all-read, archive, paging; `/v1/me/inbox` answers only the token's own user and 401s
//! without a valid token; bad marks are 400s naming the field. On the cluster engine the two
//! sessions are on two gateways.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::nats::Nats;
use support::{Api, Client, Engine, Herald};

/// The next `read` notice a session gets.
async fn notice(c: &mut Client) -> Value {
    c.expect("read").await
}

fn me(base: &str, token: &str) -> Api {
    Api::new(base, token)
}

async fn send_and_ack(api: &Api, s1: &mut Client, s2: &mut Client, title: &str) -> String {
    let id = api
        .send(json!({"to": ["bob"], "title": title, "channels": ["in_app"]}))
        .await;
    let m = s1.expect("message").await;
    assert_eq!(m["id"], id);
    assert_eq!(s2.expect("message").await["id"], id);
    s1.ack(&id).await;
    api.wait_final(&id, Duration::from_secs(30)).await;
    id
}

async fn a_read_anywhere_reaches_every_badge(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let mut s1 = h.connect("bob").await;
    let mut s2 = h.connect("bob").await;
    let m1 = send_and_ack(&api, &mut s1, &mut s2, "First").await;
    let m2 = send_and_ack(&api, &mut s1, &mut s2, "Second").await;
    let m3 = send_and_ack(&api, &mut s1, &mut s2, "Third").await;

    let inbox = api.get("/v1/users/bob/inbox").await;
    assert_eq!(inbox.status, 200, "{inbox:?}");
    let ids: Vec<_> = inbox.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!(m3), json!(m2), json!(m1)], "newest first");
    assert_eq!(inbox.body["unread"], 3);
    assert_eq!(inbox.body["messages"][0]["title"], "Third");
    assert_eq!(inbox.body["messages"][0]["read_at"], Value::Null);
    assert_eq!(inbox.body["messages"][0]["archived"], false);

    // The phone reads the first: the laptop's badge learns the new count.
    s1.send(json!({"type": "read", "id": m1})).await;
    let n = notice(&mut s2).await;
    assert_eq!(n["ids"], json!([m1]), "{n}");
    assert_eq!(n["unread"], 2, "{n}");
    assert_eq!(notice(&mut s1).await["unread"], 2);

    // The app asks with its own token.
    let token = h.token("bob", &[], Duration::from_secs(600));
    let bob = me(&h.base(), &token);
    let mine = bob.get("/v1/me/inbox").await;
    assert_eq!(mine.status, 200, "{mine:?}");
    assert_eq!(mine.body["unread"], 2);
    let first = &mine.body["messages"][2];
    assert_eq!(first["id"], m1);
    assert!(
        first["read_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );

    // Paging by seq.
    let one = bob.get("/v1/me/inbox?limit=1").await.body;
    assert_eq!(one["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["messages"][0]["id"], m3);
    let seq = one["messages"][0]["seq"].as_u64().expect("seq");
    let next = bob
        .get(&format!("/v1/me/inbox?limit=1&before={seq}"))
        .await
        .body;
    assert_eq!(next["messages"][0]["id"], m2);

    // Mark all read through the app: both sessions see 0.
    let a = bob.post("/v1/me/inbox/read", json!({"all": true})).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["unread"], 0);
    let mut marked: Vec<String> = a.body["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    marked.sort();
    let mut want = vec![m2.clone(), m3.clone()];
    want.sort();
    assert_eq!(marked, want, "only what was unread");
    for s in [&mut s1, &mut s2] {
        let n = notice(s).await;
        assert_eq!(n["unread"], 0, "{n}");
    }
    // A read through the API is a receipt: the message records it.
    let message = api.message(&m3).await;
    assert!(
        message.to_string().contains("read_at"),
        "the read is on the message: {message}"
    );

    // A new message is unread again; archiving reads it.
    let m4 = send_and_ack(&api, &mut s1, &mut s2, "Fourth").await;
    assert_eq!(bob.get("/v1/me/inbox").await.body["unread"], 1);
    let a = api
        .post("/v1/users/bob/inbox/archive", json!({"ids": [m4]}))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["unread"], 0);
    let top = &bob.get("/v1/me/inbox").await.body["messages"][0];
    assert_eq!(top["id"], m4);
    assert_eq!(top["archived"], true);

    // Another user's token reaches only that user's inbox; no token or a bad one is 401.
    let alice = me(&h.base(), &h.token("alice", &[], Duration::from_secs(600)));
    let theirs = alice.get("/v1/me/inbox").await;
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.body["messages"], json!([]));
    assert_eq!(theirs.body["unread"], 0);
    let a = Api::answer(reqwest::Client::new().get(format!("{}/v1/me/inbox", h.base()))).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        me(&h.base(), "not-a-jwt").get("/v1/me/inbox").await.status,
        401
    );
    let now = herald_common::time::now_ms() / 1000;
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "bob", "iat": now - 120, "exp": now - 60}),
        &jsonwebtoken::EncodingKey::from_secret(support::JWT_SECRET.as_bytes()),
    )
    .expect("token");
    assert_eq!(
        me(&h.base(), &expired).get("/v1/me/inbox").await.status,
        401
    );
    // The API key is not a client token.
    assert_eq!(
        me(&h.base(), support::API_KEY)
            .get("/v1/me/inbox")
            .await
            .status,
        401
    );

    // Bad marks name the field.
    for (body, field) in [
        (json!({"ids": []}), "ids"),
        (json!({}), "ids"),
        (json!({"ids": [m1], "all": true}), "not both"),
        (json!({"ids": ["no such id!"]}), "ids"),
        (json!({"ids": [m1], "seen": true}), "seen"),
    ] {
        let a = bob.post("/v1/me/inbox/read", body.clone()).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        let m = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(m.contains(field), "{body}: {m}");
    }
    let a = bob.post("/v1/me/inbox/archive", json!({"all": true})).await;
    assert_eq!(a.status, 400, "{a:?}");
    let a = api
        .request(Method::GET, "/v1/users/bob/inbox?limit=0", None)
        .await;
    assert_eq!(a.status, 400, "{a:?}");
}

on_both_engines!(a_read_anywhere_reaches_every_badge);

/// Cluster: bob's two sessions on two gateways; a read on one reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_across_two_gateways() {
    let nats = Nats::single();
    let d = Herald::builder().role("dispatcher", &nats.url()).start();
    let g0 = Herald::builder().role("gateway", &nats.url()).start();
    let g1 = Herald::builder().role("gateway", &nats.url()).start();
    let api = d.api();
    api.wait_ready(Duration::from_secs(60)).await;
    let mut phone = g0.connect("bob").await;
    let mut laptop = g1.connect("bob").await;
    let a = send_and_ack(&api, &mut phone, &mut laptop, "One").await;
    let b = send_and_ack(&api, &mut phone, &mut laptop, "Two").await;
    assert_eq!(api.get("/v1/users/bob/inbox").await.body["unread"], 2);
    phone.send(json!({"type": "read", "id": a})).await;
    let n = notice(&mut laptop).await;
    assert_eq!(
        (n["ids"].clone(), n["unread"].clone()),
        (json!([a]), json!(1))
    );
    assert_eq!(notice(&mut phone).await["unread"], 1);
    let token = d.token("bob", &[], Duration::from_secs(600));
    let r = me(&d.base(), &token)
        .post("/v1/me/inbox/read", json!({"ids": [b]}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    for s in [&mut phone, &mut laptop] {
        let n = notice(s).await;
        assert_eq!(n["unread"], 0, "{n}");
    }
}
