//! The HTTP API (SPEC §3) against `herald serve`: every error code, idempotency, users,
//! topics and the operations endpoints.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, Engine, Herald, Smtp};

const WAIT: Duration = Duration::from_secs(20);

fn assert_error(a: &support::Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.body["error"]["code"], code, "{a:?}");
    let message = a.body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "an error says what went wrong: {a:?}");
    assert_eq!(
        a.body.as_object().map(|o| o.len()),
        Some(1),
        "only 'error' at the top: {a:?}"
    );
}

async fn raw(
    api: &Api,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> support::Answer {
    let mut rb = api
        .http
        .request(method, api.url(path))
        .bearer_auth(support::API_KEY)
        .body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    Api::answer(rb).await
}

async fn every_error_is_json_with_its_status(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let json_ct = Some("application/json");

    // 400: missing fields and bad values...
    for body in [
        json!({"title": "no recipients"}),
        json!({"to": ["a"]}),
        json!({"to": ["a"], "title": "x", "channels": ["fax"]}),
        json!({"to": ["a"], "title": "x", "priority": "urgent"}),
        json!({"to": ["has space"], "title": "x"}),
    ] {
        assert_error(
            &api.post("/v1/messages", body).await,
            400,
            "invalid_request",
        );
    }
    // ...and bodies that are not JSON at all: truncated, nested too deep, invalid UTF-8.
    let deep = format!(
        "{{\"to\":[\"a\"],\"title\":\"x\",\"data\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let mut bad_utf8 = b"{\"to\":[\"a\"],\"title\":\"".to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"\"}");
    for body in [b"{\"to\":".to_vec(), deep.into_bytes(), bad_utf8] {
        let a = raw(&api, Method::POST, "/v1/messages", json_ct, body).await;
        assert_error(&a, 400, "invalid_request");
    }

    // 401: no key, wrong key.
    let no_key = Api::answer(
        api.http
            .post(api.url("/v1/messages"))
            .json(&json!({"to": ["a"], "title": "x"})),
    )
    .await;
    assert_error(&no_key, 401, "unauthorized");
    let wrong = Api::new(&h.base(), "not-the-key");
    assert_error(
        &wrong
            .post("/v1/messages", json!({"to": ["a"], "title": "x"}))
            .await,
        401,
        "unauthorized",
    );
    assert_error(&wrong.get("/v1/users/a").await, 401, "unauthorized");

    // 404: unknown message, unknown user, unknown route.
    assert_error(
        &api.get("/v1/messages/01JUNKNOWN0000000000000000").await,
        404,
        "not_found",
    );
    assert_error(&api.get("/v1/users/nobody").await, 404, "not_found");
    assert_error(&api.get("/v1/nothing-here").await, 404, "not_found");

    // 405, 413, 415.
    assert_error(
        &api.request(Method::DELETE, "/v1/messages", None).await,
        405,
        "method_not_allowed",
    );
    let big = json!({"to": ["a"], "title": "x".repeat(300 * 1024)});
    assert_error(&api.post("/v1/messages", big).await, 413, "too_large");
    assert_error(
        &raw(
            &api,
            Method::POST,
            "/v1/messages",
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &raw(&api, Method::POST, "/v1/messages", None, b"{}".to_vec()).await,
        415,
        "unsupported_media_type",
    );

    // Bad path parameters and bodies on the other routes.
    let put = |path: &'static str, body: Value| api.request(Method::PUT, path, Some(body));
    for a in [
        put("/v1/users/a%20b", json!({})).await,
        put("/v1/users/zed", json!({"email": "not-an-address"})).await,
        put("/v1/users/zed", json!({"preferences": {"fax": true}})).await,
        api.post("/v1/topics/bad..topic/messages", json!({"title": "x"}))
            .await,
        api.post("/v1/topics/news/messages", json!({})).await,
    ] {
        assert_error(&a, 400, "invalid_request");
    }

    // The server is still serving everyone.
    assert_eq!(
        api.post("/v1/messages", json!({"to": ["a"], "title": "still here"}))
            .await
            .status,
        202
    );
}

/// An early answer (given before the body was read) leaves the keep-alive connection
/// usable: the rest of a body up to 1 MiB is drained and the next request is served on the
/// same connection; past that (or of unknown length) the answer says `Connection: close`
/// and the server closes cleanly after it.
async fn early_answers_leave_the_connection_usable(engine: Engine) {
    use support::rawhttp::{Conn, request};
    let h = Herald::on(engine).start();
    let addr = h.addr;
    let key = format!("Bearer {}", support::API_KEY);
    tokio::task::spawn_blocking(move || {
        let auth = ("authorization", key.as_str());
        let json = ("content-type", "application/json");
        let big = format!("{{\"to\":[\"a\"],\"title\":\"{}\"}}", "x".repeat(300 * 1024));
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (request("POST", "/v1/messages", &[auth, json], big.as_bytes()), 413, "too_large"),
            (request("POST", "/v1/messages", &[json], &[b'{'; 10_000]), 401, "unauthorized"),
            (request("POST", "/v1/messages", &[auth, ("content-type", "text/plain")], &[b'x'; 20_000]), 415, "unsupported_media_type"),
            (request("POST", "/v1/nothing-here", &[auth, json], &[b'{'; 5_000]), 404, "not_found"),
            (request("DELETE", "/v1/messages", &[auth, json], &[b'{'; 5_000]), 405, "method_not_allowed"),
            (request("POST", "/v1/messages", &[auth, json], b"{\"to\":"), 400, "invalid_request"),
        ];
        let mut conn = Conn::open(addr);
        for (req, status, code) in cases {
            conn.write(&req).expect("the connection takes the request");
            let answer = conn.read_answer().expect("an answer on the same connection");
            assert_eq!(answer.status, status, "{answer:?}");
            assert_eq!(answer.json()["error"]["code"], code, "{answer:?}");
            assert!(!answer.closes(), "a drained body keeps the connection: {answer:?}");
            conn.write(&request("GET", "/healthz", &[], b"")).expect("next request");
            let next = conn.read_answer().expect("the next request is served");
            assert_eq!(next.status, 200, "{next:?}");
        }

        // Of unknown length (chunked) and over the limit: answered, then closed cleanly.
        let mut conn = Conn::open(addr);
        let mut chunked = b"POST /v1/messages HTTP/1.1\r\nhost: herald\r\ncontent-type: application/json\r\n".to_vec();
        chunked.extend_from_slice(format!("authorization: {key}\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes());
        for _ in 0..40 {
            chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 8192, "y".repeat(8192)).as_bytes());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        conn.write(&chunked).expect("send chunked");
        let answer = conn.read_answer().expect("the 413 arrives whole");
        assert_eq!(answer.status, 413, "{answer:?}");
        assert_eq!(answer.json()["error"]["code"], "too_large");
        assert!(answer.closes(), "an undrained body means Connection: close: {answer:?}");
        assert!(conn.is_closed_by_server(), "and the server closes after it");

        // Declared far over the drain limit: answered at once, and the answer says close.
        let mut conn = Conn::open(addr);
        let head = format!("POST /v1/messages HTTP/1.1\r\nhost: herald\r\ncontent-type: application/json\r\nauthorization: {key}\r\ncontent-length: {}\r\n\r\n", 8 * 1024 * 1024);
        conn.write(head.as_bytes()).expect("send head");
        conn.write(&[b' '; 4096]).expect("a little of the body");
        let answer = conn.read_answer().expect("the 413 arrives before the body");
        assert_eq!(answer.status, 413, "{answer:?}");
        assert!(answer.closes(), "{answer:?}");
        assert!(conn.is_closed_by_server());
    })
    .await
    .expect("raw HTTP checks");
    // The server is still serving everyone.
    assert_eq!(h.api().get("/healthz").await.status, 200);
}

async fn idempotency_keys_send_once_and_refuse_a_changed_body(engine: Engine) {
    let smtp = Smtp::start();
    let h = Herald::on(engine)
        .env("HERALD_SMTP_URL", smtp.url())
        .start();
    let api = h.api();
    let body = json!({"to": [{"user_id": "ann", "email": "ann@example.com"}], "title": "Receipt", "channels": ["email"]});
    let send = |b: Value, key: &'static str| {
        let api = api.clone();
        async move {
            Api::answer(
                api.http
                    .post(api.url("/v1/messages"))
                    .bearer_auth(support::API_KEY)
                    .header("Idempotency-Key", key)
                    .json(&b),
            )
            .await
        }
    };
    let first = send(body.clone(), "order-42-shipped").await;
    assert_eq!(first.status, 202, "{first:?}");
    let again = send(body.clone(), "order-42-shipped").await;
    assert_eq!(again.status, 202);
    assert_eq!(
        again.body, first.body,
        "a repeat returns the original response"
    );
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    // The key in the body is the same key.
    let mut with_field = body.clone();
    with_field["idempotency_key"] = json!("order-42-shipped");
    let field = api.post("/v1/messages", with_field).await;
    assert_eq!(field.body["id"], first.body["id"]);

    let mut changed = body.clone();
    changed["title"] = json!("Another receipt");
    assert_error(
        &send(changed, "order-42-shipped").await,
        422,
        "idempotency_conflict",
    );
    let mut mismatch = body.clone();
    mismatch["idempotency_key"] = json!("other");
    assert_error(
        &send(mismatch, "order-42-shipped").await,
        400,
        "invalid_request",
    );

    let id = first.body["id"].as_str().unwrap();
    assert_eq!(api.wait_final(id, WAIT).await["status"], "delivered");
    smtp.wait_mails(1, WAIT).await;
    // Nothing else is coming: a second send would show up well within this window.
    let other = api.send(json!({"to": [{"user_id": "ann", "email": "ann@example.com"}], "title": "Marker", "channels": ["email"]})).await;
    api.wait_final(&other, WAIT).await;
    let mails = smtp.wait_mails(2, WAIT).await;
    let subjects: Vec<&str> = mails.iter().filter_map(|m| m.header("Subject")).collect();
    assert_eq!(
        subjects.iter().filter(|s| **s == "Receipt").count(),
        1,
        "{subjects:?}"
    );
    assert_eq!(mails.len(), 2, "{subjects:?}");
}

async fn users_can_be_stored_read_and_deleted(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let profile = json!({"email": "ann@example.com", "phone": "+15550001111", "locale": "fr-FR",
                         "timezone": "Europe/Paris", "preferences": {"email": true, "sms": false}});
    let put = api
        .request(
            Method::PUT,
            "/v1/users/ann.smith@corp",
            Some(profile.clone()),
        )
        .await;
    assert_eq!(put.status, 200);
    let mut expected = profile.clone();
    expected["id"] = json!("ann.smith@corp");
    assert_eq!(put.body, expected);
    assert_eq!(api.get("/v1/users/ann.smith@corp").await.body, expected);
    let del = api
        .request(Method::DELETE, "/v1/users/ann.smith@corp", None)
        .await;
    assert_eq!(del.status, 204);
    assert_eq!(api.get("/v1/users/ann.smith@corp").await.status, 404);
}

async fn rate_limited_keys_get_429_with_retry_after(engine: Engine) {
    let h = Herald::on(engine).env("HERALD_API_RATE_LIMIT", "5").start();
    let api = h.api();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let a = api.get("/v1/users/ann/presence").await;
        if a.status == 429 {
            assert_error(&a, 429, "rate_limited");
            let retry: u64 = a
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!(retry >= 1);
        }
        statuses.push(a.status);
    }
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 10,
        "the burst passes: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        h.api().get("/healthz").await.status,
        200,
        "operations endpoints are not limited"
    );
}

#[tokio::test]
async fn a_locked_store_answers_503_and_loses_nothing() {
    // Embedded engine only: the store is a SQLite file another process can lock.
    let h = Herald::builder()
        .env("HERALD_SQLITE_BUSY_MS", "300")
        .start();
    let api = h.api();
    // Another process (a backup tool, say) holds the database's write lock.
    let db = h.data_dir.join("herald.db");
    let mut locker = Command::new(support::python())
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");

    let a = api
        .post(
            "/v1/messages",
            json!({"to": ["ann"], "title": "during the lock"}),
        )
        .await;
    assert_error(&a, 503, "unavailable");
    assert!(a.headers.get("retry-after").is_some());

    let _ = locker.stdin.take().map(|mut s| s.write_all(b""));
    let _ = locker.kill();
    let _ = locker.wait();
    // Sent by hand, so that a transport error shows herald's log (it failed once with a
    // connection reset here, cause not yet found).
    let sent = api
        .http
        .post(api.url("/v1/messages"))
        .bearer_auth(support::API_KEY)
        .json(&json!({"to": ["ann"], "title": "after the lock"}))
        .send()
        .await;
    let sent = match sent {
        Ok(r) => r,
        Err(e) => panic!("POST after the lock: {e:?}\nherald log:\n{}", h.log_text()),
    };
    assert_eq!(sent.status(), 202);
    let id = sent.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(api.wait_final(&id, WAIT).await["status"], "pending");
}

async fn operations_endpoints(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let plain = |path: &str| Api::answer(api.http.get(api.url(path)));
    assert_eq!(plain("/healthz").await.status, 200);
    assert_eq!(plain("/readyz").await.status, 200);
    let _c = h.connect("mo").await;
    let id = api
        .send(json!({"to": ["nobody"], "title": "x", "channels": ["in_app"]}))
        .await;
    api.wait_final(&id, WAIT).await;
    let text = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "herald_messages_accepted_total{priority=\"normal\"} 1",
        "herald_attempts_total{channel=\"in_app\",outcome=\"offline\"} 1",
        "herald_gateway_sessions 1",
        "herald_gateway_connects_total 1",
        "herald_delivery_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
}

on_both_engines!(
    early_answers_leave_the_connection_usable,
    every_error_is_json_with_its_status,
    idempotency_keys_send_once_and_refuse_a_changed_body,
    users_can_be_stored_read_and_deleted,
    rate_limited_keys_get_429_with_retry_after,
    operations_endpoints,
);

/// The OpenAPI document generated from the code, and schemathesis (PyPI) fuzzing every
/// operation against the running server with every check: no 5xx, every response (errors
/// included) matches the document, schema-valid data is accepted and schema-violating data
/// refused (tests/schemathesis.toml lists the few rules JSON Schema cannot state).
#[tokio::test]
async fn schemathesis_finds_no_server_errors_and_no_undocumented_answers() {
    let h = Herald::builder()
        .env("HERALD_LOG", "warn,herald=info")
        .start();
    let doc = h.api().get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["paths"]["/v1/messages"]["post"].is_object());
    // The /v1/me routes take a client token; every check is on (tests/schemathesis.toml
    // says which operations skip only the acceptance of schema-valid data, and why).
    let token = h
        .api()
        .post(
            "/v1/tokens",
            serde_json::json!({"user": "schemathesis", "ttl_s": 3600}),
        )
        .await;
    assert_eq!(token.status, 200, "{:?}", token.body);
    let client_token = token.body["token"].as_str().expect("token").to_string();
    let st = support::venv_bin("schemathesis");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let out = tokio::process::Command::new(&st)
        .args(["--config-file", config])
        .args(["run", &format!("{}/openapi.json", h.base())])
        // One worker: hypothesis parses lambda sources with `ast` from each worker thread,
        // and on this Python that can fail with "AST constructor recursion depth mismatch"
        // (a runtime error in the tool, not a finding).
        .args(["--max-examples", "25", "--workers", "1", "--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("HERALD_ST_API_KEY", support::API_KEY)
        .env("HERALD_ST_CLIENT_TOKEN", &client_token)
        .output()
        .await
        .expect("run schemathesis (in the test venv)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server survived it all.
    assert_eq!(h.api().get("/healthz").await.status, 200);
}
