//! The WebSocket protocol (SPEC §4) against `herald serve`, with real clients.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Client, Engine, Frame, Herald, JWT_SECRET};

const WAIT: Duration = Duration::from_secs(20);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn bad_tokens_are_refused_with_401_before_upgrade(engine: Engine) {
    let h = Herald::on(engine).start();
    let url = h.ws_url();
    let cases = [
        (url.clone(), "missing"),
        (format!("{url}?token=garbage"), "invalid"),
        (
            format!(
                "{url}?token={}",
                hs256(json!({"sub": "a", "exp": now() - 60}))
            ),
            "expired",
        ),
        (
            format!("{url}?token={}", hs256(json!({"exp": now() + 60}))),
            "sub",
        ),
        (format!("{url}?token={}", hs256(json!({"sub": "a"}))), "exp"),
        (
            format!(
                "{url}?token={}",
                hs256(json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}))
            ),
            "not yet",
        ),
    ];
    for (u, why) in cases {
        let refused = Client::open(&u, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{why}: upgraded"));
        assert_eq!(refused.status, 401, "{why}");
        assert_eq!(refused.body["error"]["code"], "unauthorized", "{why}");
        let msg = refused.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{why}: {msg}");
    }
    // A good token works in the Authorization header too.
    let token = h.token("ann", &[], Duration::from_secs(60));
    let mut ws = Client::open(&url, Some(&token))
        .await
        .expect("bearer header accepted");
    match support::ws::next_frame(&mut ws, WAIT).await {
        Frame::Json(v) => assert_eq!(
            (v["type"].as_str(), v["user_id"].as_str()),
            (Some("welcome"), Some("ann"))
        ),
        other => panic!("{other:?}"),
    }
}

async fn send_in_app(h: &Herald, user: &str, n: usize) -> Vec<String> {
    let api = h.api();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            api.send(json!({"to": [user], "title": format!("m{i}"), "channels": ["in_app"]}))
                .await,
        );
    }
    for id in &ids {
        let m = api.wait_final(id, WAIT).await;
        assert_eq!(
            m["recipients"][0]["status"], "failed",
            "offline with in_app only"
        );
    }
    ids
}

async fn resume_replays_missed_messages_in_order(engine: Engine) {
    let h = Herald::on(engine).start();
    let ids = send_in_app(&h, "kim", 5).await;

    let mut c = h.connect("kim").await;
    c.send(json!({"type": "resume", "since": 0})).await;
    let mut replayed = Vec::new();
    for seq in 1..=ids.len() as u64 {
        let m = c.json().await;
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("message"), Some(seq))
        );
        let id = m["id"].as_str().unwrap_or_default().to_string();
        let i = ids
            .iter()
            .position(|x| *x == id)
            .expect("a message sent to kim");
        assert_eq!(
            m["title"],
            format!("m{i}"),
            "each frame carries its own message"
        );
        replayed.push(id);
    }
    match engine {
        // Sent one after another, numbered in that order (jobs take turns per user).
        Engine::Embedded => assert_eq!(replayed, ids),
        // Several ingest workers: accepted a moment apart, numbered in either order
        // (docs/cluster.md, known limits); each once.
        Engine::Nats => {
            let mut sorted = replayed.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), ids.len());
        }
    }
    assert_eq!(
        c.json().await,
        json!({"type": "resumed", "seq": 5, "replayed": 5, "complete": true})
    );

    // The same session never sees an id twice, even when asked again.
    c.send(json!({"type": "resume", "since": 0})).await;
    assert_eq!(
        c.json().await,
        json!({"type": "resumed", "seq": 5, "replayed": 0, "complete": true})
    );

    // Another session resumes from where it left off.
    let mut d = h.connect("kim").await;
    d.send(json!({"type": "resume", "since": 3})).await;
    assert_eq!(d.json().await["seq"], 4);
    assert_eq!(d.json().await["seq"], 5);
    assert_eq!(
        d.json().await,
        json!({"type": "resumed", "seq": 5, "replayed": 2, "complete": true})
    );
}

async fn resume_says_incomplete_when_history_was_trimmed(engine: Engine) {
    let h = Herald::on(engine).env("HERALD_INBOX_LIMIT", "3").start();
    send_in_app(&h, "lee", 5).await;
    let mut c = h.connect("lee").await;
    c.send(json!({"type": "resume", "since": 1})).await;
    let seqs: Vec<u64> = vec![
        c.json().await["seq"].as_u64().unwrap(),
        c.json().await["seq"].as_u64().unwrap(),
        c.json().await["seq"].as_u64().unwrap(),
    ];
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(
        c.json().await,
        json!({"type": "resumed", "seq": 5, "replayed": 3, "complete": false})
    );
}

async fn live_messages_arrive_in_seq_order_and_resume_skips_them(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let mut c = h.connect("max").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(api.send(json!({"to": ["max"], "title": format!("n{i}"), "channels": ["in_app"], "ack_timeout_ms": 60000})).await);
    }
    let mut seqs = Vec::new();
    for _ in 0..20 {
        let m = c.expect("message").await;
        seqs.push(m["seq"].as_u64().unwrap());
        c.ack(m["id"].as_str().unwrap()).await;
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    c.send(json!({"type": "resume", "since": 0})).await;
    assert_eq!(
        c.json().await,
        json!({"type": "resumed", "seq": 20, "replayed": 0, "complete": true})
    );
    for id in &ids {
        assert_eq!(api.wait_final(id, WAIT).await["status"], "delivered");
    }
}

async fn topics_respect_token_claims_and_replay_history(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    let token = h.token("nia", &["news", "team.*"], Duration::from_secs(600));
    let mut c = Client::connect(&h.ws_url(), &token).await.unwrap();

    c.send(json!({"type": "subscribe", "topic": "news"})).await;
    assert_eq!(
        c.json().await,
        json!({"type": "subscribed", "topic": "news", "seq": 0})
    );
    let a = api
        .post(
            "/v1/topics/news/messages",
            json!({"title": "Breaking", "body": "b", "data": {"k": 1}}),
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(a.body["seq"], 1);
    let m = c.json().await;
    assert_eq!(
        (m["type"].as_str(), m["topic"].as_str(), m["seq"].as_u64()),
        (Some("message"), Some("news"), Some(1))
    );
    assert_eq!(m["id"], a.body["id"]);
    assert_eq!(m["data"], json!({"k": 1}));

    // Publish while this session is not subscribed, then recover with `since`.
    for i in 0..3 {
        api.post(
            "/v1/topics/team.42/messages",
            json!({"title": format!("t{i}")}),
        )
        .await;
    }
    c.send(json!({"type": "subscribe", "topic": "team.42", "since": 1}))
        .await;
    assert_eq!(c.json().await["seq"], 2);
    assert_eq!(c.json().await["seq"], 3);
    assert_eq!(
        c.json().await,
        json!({"type": "subscribed", "topic": "team.42", "seq": 3, "replayed": 2, "complete": true})
    );

    c.send(json!({"type": "unsubscribe", "topic": "news"}))
        .await;
    assert_eq!(
        c.json().await,
        json!({"type": "unsubscribed", "topic": "news"})
    );
    api.post("/v1/topics/news/messages", json!({"title": "unseen"}))
        .await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(
        c.json().await,
        json!({"type": "pong"}),
        "no news after unsubscribing"
    );

    // A topic the token does not allow closes the session with 4003.
    c.send(json!({"type": "subscribe", "topic": "team.42.secret"}))
        .await;
    assert_eq!(c.close_code(WAIT).await, Frame::Close(4003));
}

async fn malformed_frames_get_error_frames_and_the_session_lives(engine: Engine) {
    let h = Herald::on(engine).start();
    let mut c = h.connect("oli").await;
    for (text, code) in [
        ("not json", "invalid_json"),
        ("{\"type\":\"dance\"}", "unknown_type"),
        ("{\"type\":\"resume\"}", "invalid_frame"),
        (
            "{\"type\":\"subscribe\",\"topic\":\"bad..topic\"}",
            "invalid_topic",
        ),
    ] {
        c.send_text(text).await;
        let e = c.json().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{text}"
        );
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1, 2, 3].into(),
    ))
    .await
    .unwrap();
    assert_eq!(c.json().await["code"], "unsupported_frame");
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.json().await, json!({"type": "pong"}));
}

use futures::SinkExt;

async fn an_oversized_frame_closes_with_1009(engine: Engine) {
    let h = Herald::on(engine)
        .env("HERALD_MAX_FRAME_BYTES", "4096")
        .start();
    let mut c = h.connect("pam").await;
    c.send_text(&format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(10_000)
    ))
    .await;
    assert_eq!(c.close_code(WAIT).await, Frame::Close(1009));
    // The server is fine: a new session works.
    let mut d = h.connect("pam").await;
    d.send(json!({"type": "ping"})).await;
    assert_eq!(d.json().await["type"], "pong");
}

async fn too_many_sessions_for_one_user_closes_with_4009(engine: Engine) {
    let h = Herald::on(engine)
        .env("HERALD_MAX_SESSIONS_PER_USER", "2")
        .start();
    let _a = h.connect("quin").await;
    let _b = h.connect("quin").await;
    let token = h.token("quin", &[], Duration::from_secs(60));
    let mut ws = Client::open(&format!("{}?token={token}", h.ws_url()), None)
        .await
        .unwrap();
    assert_eq!(
        support::ws::next_frame(&mut ws, WAIT).await,
        Frame::Close(4009)
    );
    let p = h.api().get("/v1/users/quin/presence").await;
    assert_eq!(p.body, json!({"online": true, "sessions": 2}));
}

async fn a_client_that_cannot_keep_up_is_closed_with_4008(engine: Engine) {
    let h = Herald::on(engine)
        .env("HERALD_SESSION_QUEUE_BYTES", "65536")
        .start();
    let api = h.api();
    // A client with a tiny receive buffer that stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(h.addr).await.unwrap();
    let token = h.token("rex", &["firehose"], Duration::from_secs(600));
    let request = format!("{}?token={token}", h.ws_url());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert!(matches!(
        support::ws::next_frame(&mut ws, WAIT).await,
        Frame::Json(_)
    ));
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"type": "subscribe", "topic": "firehose"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert!(matches!(
        support::ws::next_frame(&mut ws, WAIT).await,
        Frame::Json(_)
    ));
    let big = "x".repeat(200_000);
    for _ in 0..60 {
        let a = api
            .post("/v1/topics/firehose/messages", json!({"title": big}))
            .await;
        assert_eq!(a.status, 202);
    }
    // Now read: whatever made it into the buffers, then the close.
    let end = loop {
        match support::ws::next_frame(&mut ws, WAIT).await {
            Frame::Json(_) => continue,
            other => break other,
        }
    };
    assert_eq!(end, Frame::Close(4008));
    // Everyone else is fine.
    let mut other = h.connect("sam").await;
    other.send(json!({"type": "ping"})).await;
    assert_eq!(other.json().await["type"], "pong");
}

async fn a_silent_client_is_closed_after_two_heartbeats(engine: Engine) {
    let h = Herald::on(engine).env("HERALD_HEARTBEAT_S", "1").start();
    let mut c = h.connect("tia").await;
    assert_eq!(c.welcome["heartbeat_s"], 1);
    // Do not read (so no pongs go back) for a while.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(c.close_code(WAIT).await, Frame::Close(1001));

    // A client that reads (and so answers pings) stays.
    let mut d = h.connect("tia").await;
    let alive = d.next(Duration::from_millis(3500)).await;
    assert!(
        alive.is_none(),
        "a responsive client must not be closed: {alive:?}"
    );
}

async fn an_expiring_token_closes_the_session_with_4001(engine: Engine) {
    let h = Herald::on(engine).start();
    let token = h.token("uma", &[], Duration::from_secs(2));
    let mut c = Client::connect(&h.ws_url(), &token).await.unwrap();
    assert_eq!(
        c.close_code(Duration::from_secs(10)).await,
        Frame::Close(4001)
    );
}

async fn shutdown_closes_sessions_with_1012_and_exits_cleanly(engine: Engine) {
    let mut h = Herald::on(engine).env("HERALD_DRAIN_S", "1").start();
    let mut frames = h.connect("vic").await.auto_ack();
    let code = h.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "clean exit; log:\n{}", h.log_text());
    assert_eq!(frames.recv().await, Some(Frame::Close(1012)));
}

async fn read_receipts_and_presence(engine: Engine) {
    let h = Herald::on(engine).start();
    let api = h.api();
    assert_eq!(
        api.get("/v1/users/wes/presence").await.body,
        json!({"online": false, "sessions": 0})
    );
    let mut a = h.connect("wes").await;
    let _b = h.connect("wes").await;
    assert_eq!(
        api.get("/v1/users/wes/presence").await.body,
        json!({"online": true, "sessions": 2})
    );
    let id = api.send(json!({"to": ["wes"], "title": "read me"})).await;
    let m = a.expect("message").await;
    a.ack(m["id"].as_str().unwrap()).await;
    a.send(json!({"type": "read", "id": id})).await;
    let read = support::eventually(WAIT, "read_at", || async {
        let m = api.message(&id).await;
        m["recipients"][0]["read_at"].as_str().map(str::to_string)
    })
    .await;
    assert!(read.starts_with("20"), "{read}");
    drop(a);
    support::eventually(WAIT, "presence to drop to 1", || async {
        (api.get("/v1/users/wes/presence").await.body["sessions"] == 1).then_some(())
    })
    .await;
}

async fn websocket_pings_and_closes_are_answered(engine: Engine) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let h = Herald::on(engine).start();
    let mut c = h.connect("pia").await;
    c.ws.send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, c.ws.next()).await.unwrap();
    assert_eq!(
        pong.unwrap().unwrap(),
        Message::Pong("are you there".into()),
        "a WebSocket ping gets its pong with the same payload"
    );
    c.ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let reply = tokio::time::timeout(WAIT, c.ws.next()).await.unwrap();
    assert!(
        matches!(reply, Some(Ok(Message::Close(_)))),
        "the server answers a close with a close: {reply:?}"
    );
}

async fn a_message_bigger_than_the_session_queue_reaches_a_reading_client(engine: Engine) {
    let h = Herald::on(engine)
        .env("HERALD_SESSION_QUEUE_BYTES", "65536")
        .start();
    let mut c = h.connect("quin").await;
    c.send(json!({"type": "subscribe", "topic": "big"})).await;
    assert_eq!(c.json().await["type"], "subscribed");
    let title = "y".repeat(100_000);
    for _ in 0..3 {
        let a = h
            .api()
            .post("/v1/topics/big/messages", json!({"title": title}))
            .await;
        assert_eq!(a.status, 202);
    }
    // The queue bounds a backlog; a frame the client keeps up with goes out whatever its size.
    for seq in 1..=3 {
        let m = c.json().await;
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("message"), Some(seq))
        );
        assert_eq!(m["title"].as_str().map(str::len), Some(100_000));
    }
}

/// A WebSocket opened over a raw socket, for frames no client library would send.
struct RawWs {
    stream: std::net::TcpStream,
}

impl RawWs {
    fn open(h: &Herald, token: &str) -> RawWs {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(h.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /ws?token={token} HTTP/1.1\r\nhost: herald\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: herald.v1\r\n\r\n"
        )
        .unwrap();
        // Byte by byte: nothing past the handshake may be consumed here.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "upgraded: {head}");
        let mut ws = RawWs { stream };
        let (op, welcome) = ws.read_frame().expect("welcome");
        assert_eq!(op, 1);
        assert!(String::from_utf8_lossy(&welcome).contains("welcome"));
        ws
    }

    /// Writes a frame with the given first byte, masked or not.
    fn write_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        use std::io::Write;
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        let key = [0x11, 0x22, 0x33, 0x44];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).unwrap();
    }

    /// One server frame: (opcode, payload); `None` once the server has closed the socket.
    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.stream.read_exact(&mut l).ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                self.stream.read_exact(&mut l).ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).ok()?;
        Some((head[0] & 0x0f, payload))
    }

    /// The code of the close frame the server sends (skipping other frames).
    fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, payload) = self.read_frame()?;
            if op == 8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
    }
}

/// RFC 6455 §7.1.7: a protocol violation gets a Close frame (1002; 1007 for invalid UTF-8)
/// before the connection drops, so clients and logs can tell why.
async fn protocol_violations_are_closed_with_1002_or_1007(engine: Engine) {
    let h = Herald::on(engine).start();
    let token = h.token("raw", &[], Duration::from_secs(600));
    let cases: [(&str, u8, Vec<u8>, bool, u16); 7] = [
        (
            "unmasked client frame",
            0x81,
            b"{\"type\":\"ping\"}".to_vec(),
            false,
            1002,
        ),
        ("reserved bits", 0x81 | 0x40, b"{}".to_vec(), true, 1002),
        ("unknown data opcode", 0x83, b"{}".to_vec(), true, 1002),
        ("unknown control opcode", 0x8b, Vec::new(), true, 1002),
        ("fragmented control frame", 0x09, b"x".to_vec(), true, 1002),
        ("oversized control frame", 0x89, vec![b'p'; 126], true, 1002),
        (
            "invalid UTF-8 in a text frame",
            0x81,
            vec![b'"', 0xff, 0xfe, b'"'],
            true,
            1007,
        ),
    ];
    tokio::task::spawn_blocking(move || {
        for (what, first, payload, masked, code) in cases {
            let mut ws = RawWs::open(&h, &token);
            ws.write_frame(first, &payload, masked);
            assert_eq!(ws.close_code(), Some(code), "{what}");
        }
        // The gateway goes on serving.
        let mut ws = RawWs::open(&h, &token);
        ws.write_frame(0x81, b"{\"type\":\"ping\"}", true);
        let (op, pong) = ws.read_frame().expect("pong");
        assert_eq!(
            (op, String::from_utf8_lossy(&pong).contains("pong")),
            (1, true)
        );
    })
    .await
    .unwrap();
}

on_both_engines!(
    protocol_violations_are_closed_with_1002_or_1007,
    bad_tokens_are_refused_with_401_before_upgrade,
    resume_replays_missed_messages_in_order,
    resume_says_incomplete_when_history_was_trimmed,
    live_messages_arrive_in_seq_order_and_resume_skips_them,
    topics_respect_token_claims_and_replay_history,
    malformed_frames_get_error_frames_and_the_session_lives,
    an_oversized_frame_closes_with_1009,
    too_many_sessions_for_one_user_closes_with_4009,
    a_client_that_cannot_keep_up_is_closed_with_4008,
    a_silent_client_is_closed_after_two_heartbeats,
    an_expiring_token_closes_the_session_with_4001,
    shutdown_closes_sessions_with_1012_and_exits_cleanly,
    read_receipts_and_presence,
    websocket_pings_and_closes_are_answered,
    a_message_bigger_than_the_session_queue_reaches_a_reading_client,
);
