//! Hostile input and security: every limit holds with a clear error while everyone else is
//! served; tokens are checked strictly; ids cannot reach each other; secrets stay out of logs.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, Frame, Herald, JWT_SECRET};

const WAIT: Duration = Duration::from_secs(20);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn too_many_recipients_is_a_clear_400() {
    let h = Herald::start();
    let to: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let a = h
        .api()
        .post("/v1/messages", json!({"to": to, "title": "x"}))
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000"),
        "{a:?}"
    );
}

#[tokio::test]
async fn a_session_may_hold_only_so_many_topics() {
    let h = Herald::builder()
        .env("HERALD_MAX_TOPICS_PER_SESSION", "2")
        .start();
    let mut c = h.connect("tom").await;
    for t in ["a", "b"] {
        c.send(json!({"type": "subscribe", "topic": t})).await;
        assert_eq!(c.json().await["type"], "subscribed");
    }
    c.send(json!({"type": "subscribe", "topic": "c"})).await;
    let e = c.json().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("too_many_topics"))
    );
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.json().await["type"], "pong", "the session lives on");
}

#[tokio::test]
async fn a_flooding_client_is_closed_and_acks_do_not_count() {
    let h = Herald::builder()
        .env("HERALD_CLIENT_FRAMES_PER_S", "10")
        .start();
    // Acks are free: a client acking a long resume is not a flood.
    let mut acker = h.connect("amy").await;
    for i in 0..200 {
        acker
            .send(json!({"type": "ack", "id": format!("01JX{i}")}))
            .await;
    }
    acker.send(json!({"type": "ping"})).await;
    assert_eq!(acker.json().await["type"], "pong");

    let mut flood = h.connect("bob").await;
    for _ in 0..100 {
        if flood
            .ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                json!({"type": "ping"}).to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(flood.close_code(WAIT).await, Frame::Close(4008));
    let mut other = h.connect("cat").await;
    other.send(json!({"type": "ping"})).await;
    assert_eq!(other.json().await["type"], "pong");
}

use futures::SinkExt;

#[tokio::test]
async fn connects_per_source_address_are_limited() {
    let h = Herald::builder().env("HERALD_CONNECTS_PER_S", "2").start();
    let token = h.token("dan", &[], Duration::from_secs(60));
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let stream = socket.connect(h.addr).await.unwrap();
        let url = format!("{}?token={token}", h.ws_url());
        outcomes.push(match tokio_tungstenite::client_async(url, stream).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert!(resp.headers().get("retry-after").is_some());
                let body: serde_json::Value = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                assert_eq!(body["error"]["code"], "rate_limited");
                resp.status().as_u16()
            }
            Err(e) => panic!("{e}"),
        });
    }
    assert!(
        outcomes.iter().filter(|s| **s == 101).count() >= 4,
        "the burst passes: {outcomes:?}"
    );
    assert!(outcomes.contains(&429), "{outcomes:?}");
    // Another source address is not affected.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let stream = socket.connect(h.addr).await.unwrap();
    assert!(
        tokio_tungstenite::client_async(format!("{}?token={token}", h.ws_url()), stream)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_others_are_served() {
    let h = Herald::builder()
        .env("HERALD_HEADER_TIMEOUT_S", "1")
        .start();
    let addr = h.addr;
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 1024];
        // The server gives up on us: the read ends (EOF or an error response).
        let n = s.read(&mut buf).unwrap_or(0);
        (n, String::from_utf8_lossy(&buf[..n]).to_string())
    });
    // Meanwhile a normal client is served.
    assert_eq!(h.api().get("/healthz").await.status, 200);
    let (_, text) = slow.join().unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the slow client was cut off after {took:?}"
    );
    assert!(!text.contains("200 OK"), "{text}");
}

#[tokio::test]
async fn only_allowed_origins_may_open_sockets() {
    let h = Herald::builder()
        .env("HERALD_ALLOWED_ORIGINS", "https://app.example.com")
        .start();
    let token = h.token("eve", &[], Duration::from_secs(60));
    let open = |origin: Option<&'static str>| {
        let url = format!("{}?token={token}", h.ws_url());
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.into_client_request().unwrap();
            if let Some(o) = origin {
                req.headers_mut().insert("Origin", o.parse().unwrap());
            }
            match tokio_tungstenite::connect_async(req).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(open(Some("https://evil.example")).await, 403);
    assert_eq!(open(Some("https://app.example.com")).await, 101);
    assert_eq!(open(None).await, 101, "non-browser clients send no Origin");
}

fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn status_of(h: &Herald, token: &str) -> u16 {
    match Client::open(&format!("{}?token={token}", h.ws_url()), None).await {
        Ok(_) => 101,
        Err(r) => r.status,
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let h = Herald::builder()
        .env("HERALD_JWT_ISSUER", "auth.example")
        .env("HERALD_JWT_AUDIENCE", "herald")
        .start();
    let exp = now() + 600;
    let s = JWT_SECRET.as_bytes();
    assert_eq!(
        status_of(&h, &hs256(json!({"sub": "a", "exp": exp}), s)).await,
        401
    );
    assert_eq!(
        status_of(
            &h,
            &hs256(
                json!({"sub": "a", "exp": exp, "iss": "evil", "aud": "herald"}),
                s
            )
        )
        .await,
        401
    );
    assert_eq!(
        status_of(
            &h,
            &hs256(
                json!({"sub": "a", "exp": exp, "iss": "auth.example", "aud": "other"}),
                s
            )
        )
        .await,
        401
    );
    assert_eq!(
        status_of(
            &h,
            &hs256(
                json!({"sub": "a", "exp": exp, "iss": "auth.example", "aud": "herald"}),
                s
            )
        )
        .await,
        101
    );
}

#[tokio::test]
async fn a_public_key_cannot_be_used_as_an_hmac_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let public = dir.path().join("public.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(ok.success());
    let h = Herald::builder()
        .env("HERALD_JWT_SECRET", "")
        .env("HERALD_JWT_PUBLIC_KEY", public.to_str().unwrap())
        .start();
    let exp = now() + 600;
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "a", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        status_of(&h, &rs256).await,
        101,
        "a real RS256 token is accepted"
    );
    let confused = hs256(
        json!({"sub": "a", "exp": exp}),
        &std::fs::read(&public).unwrap(),
    );
    assert_eq!(
        status_of(&h, &confused).await,
        401,
        "HS256 signed with the public key is refused"
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"sub":"a","exp":{exp}}}"#))
    );
    assert_eq!(status_of(&h, &none).await, 401, "alg none is refused");
}

#[tokio::test]
async fn no_id_reaches_another_users_messages() {
    let h = Herald::start();
    let api = h.api();
    let mut alice = h.connect("alice").await;
    let mut dotted = h.connect("alice.x").await;
    // Ids that look like subject wildcards or prefixes address only themselves.
    for user in ["*", ">", "alice.*", "alice.>", "alice%2Ex", "alice x"] {
        let a = api
            .post(
                "/v1/messages",
                json!({"to": [user], "title": user, "channels": ["in_app"]}),
            )
            .await;
        if user.contains(' ') {
            assert_eq!(a.status, 400);
            continue;
        }
        assert_eq!(a.status, 202, "{a:?}");
        let m = api.wait_final(a.body["id"].as_str().unwrap(), WAIT).await;
        assert_eq!(
            m["recipients"][0]["attempts"][0]["outcome"], "offline",
            "{user} reached someone: {m}"
        );
    }
    let id = api
        .send(json!({"to": ["alice.x"], "title": "for alice.x", "channels": ["in_app"]}))
        .await;
    assert_eq!(dotted.expect("message").await["id"], id.as_str());
    alice.send(json!({"type": "resume", "since": 0})).await;
    assert_eq!(
        alice.json().await,
        json!({"type": "resumed", "seq": 0, "replayed": 0, "complete": true})
    );
    // An ack for someone else's message does nothing.
    let id = api.send(json!({"to": ["alice.x"], "title": "not yours", "channels": ["in_app"], "ack_timeout_ms": 500})).await;
    assert_eq!(dotted.expect("message").await["id"], id.as_str());
    alice.ack(&id).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["attempts"][0]["outcome"], "ack_timeout");
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let secrets = [
        "api-key-SECRET-1",
        "jwt-SECRET-2",
        "smtp-SECRET-3",
        "sms-SECRET-4",
    ];
    let h = Herald::builder()
        .env("HERALD_LOG", "debug")
        .env("HERALD_API_KEYS", secrets[0])
        .env("HERALD_JWT_SECRET", secrets[1])
        .env(
            "HERALD_SMTP_URL",
            format!("smtp://user:{}@127.0.0.1:9", secrets[2]),
        )
        .env("HERALD_SMS_URL", "http://127.0.0.1:9/sms")
        .env("HERALD_SMS_TOKEN", secrets[3])
        .env("HERALD_RETRY_ATTEMPTS", "1")
        .start();
    let api = support::Api::new(&h.base(), secrets[0]);
    let id = api
        .send(json!({"to": [{"user_id": "u", "email": "u@example.com", "phone": "+15550001111"}], "title": "x", "channels": ["email", "sms"]}))
        .await;
    api.wait_final(&id, WAIT).await;
    let _ = support::Api::new(&h.base(), "wrong-key")
        .get("/v1/users/u")
        .await;
    let token = herald_common::auth::TokenMinter::hs256(secrets[1])
        .mint("u", None, Duration::from_secs(60))
        .unwrap();
    let _c = Client::connect(&h.ws_url(), &token).await.unwrap();
    let _ = Client::open(&format!("{}?token=bad.{}", h.ws_url(), secrets[1]), None).await;
    let log = h.log_text();
    assert!(log.contains("smtp"), "the log shows the failed attempts");
    for s in secrets {
        assert!(!log.contains(s), "secret {s} appears in the log");
    }
    assert!(!log.contains(&token), "client tokens are not logged");
}
