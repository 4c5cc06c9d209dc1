//! A load-generator worker process: holds `count` WebSocket clients of one system (bound to
//! one source address, so many workers can exceed one address's ephemeral ports), records
//! publish-to-receive latency in an HDR histogram, and answers the controller on stdin:
//! `reset`, `report` (one JSON line), `quit`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::proto::{self, System};

pub struct Args {
    pub system: System,
    /// e.g. ws://127.0.0.1:8080/ws; several comma-separated URLs spread the clients over
    /// them round-robin (one per gateway in the scale-out scenario).
    pub url: String,
    pub count: usize,
    pub source: Option<IpAddr>,
    /// First user/client number (so workers use distinct users).
    pub offset: usize,
    /// Herald: HS256 secret to mint tokens with.
    pub secret: String,
    pub topic: String,
    /// Herald: also ack personal messages (targeted delivery).
    pub ack: bool,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Report {
    pub connected: u64,
    pub received: u64,
    /// The latency histogram (µs), V2-serialized, hex.
    pub histogram: String,
}

struct Shared {
    hist: Mutex<Histogram<u64>>,
    received: AtomicU64,
    connected: AtomicU64,
    gave_up: AtomicU64,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

async fn client(args: Arc<Args>, n: usize, shared: Arc<Shared>) -> anyhow::Result<()> {
    let user = format!("bench{n}");
    let urls: Vec<&str> = args.url.split(',').collect();
    let base = urls[n % urls.len()];
    let url = match args.system {
        System::Herald => {
            let token = herald_common::auth::TokenMinter::hs256(&args.secret)
                .mint(&user, Some(vec![">".into()]), Duration::from_secs(86_400))
                .map_err(anyhow::Error::msg)?;
            format!("{base}?token={token}")
        }
        _ => base.to_string(),
    };
    let mut request = url.as_str().into_client_request()?;
    let protocol = match args.system {
        System::Herald => Some("herald.v1"),
        System::Mosquitto => Some("mqtt"),
        _ => None,
    };
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse()?);
    }
    let host = request.uri().host().unwrap_or("127.0.0.1").to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(src) = args.source {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    match args.system {
        System::Herald => {
            ws.next().await; // welcome
            let sub = serde_json::json!({"type": "subscribe", "topic": args.topic}).to_string();
            ws.send(Message::Text(sub.into())).await?;
        }
        System::Nats => {
            let hello = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {} 1\r\n",
                args.topic
            );
            ws.send(Message::Text(hello.into())).await?;
        }
        System::Mosquitto => {
            ws.send(Message::Binary(
                proto::mqtt_connect_and_subscribe(&user, &args.topic).into(),
            ))
            .await?;
        }
        System::Node | System::Raw | System::Tungstenite | System::TokioWebsockets => {}
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    while let Some(msg) = ws.next().await {
        let mut found = Vec::new();
        let msg = msg?;
        let now = proto::now_ns();
        let data: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => continue,
        };
        if args.system == System::Nats && data.starts_with(b"PING") {
            ws.send(Message::Text("PONG\r\n".into())).await?;
            continue;
        }
        proto::payloads(args.system, data, &mut found);
        let mut ack = None;
        for p in &found {
            if let Some(sent) = proto::sent_at(p) {
                let us = (now.saturating_sub(sent) / 1000) as u64;
                if let Ok(mut h) = shared.hist.lock() {
                    let _ = h.record(us.clamp(1, 3_600_000_000));
                }
                shared.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        if args.ack
            && args.system == System::Herald
            && memchr::memmem::find(data, b"\"topic\":").is_none()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
            && v["type"] == "message"
        {
            ack = v["id"]
                .as_str()
                .map(|id| serde_json::json!({"type": "ack", "id": id}).to_string());
        }
        if let Some(a) = ack {
            ws.send(Message::Text(a.into())).await?;
        }
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let args = Arc::new(args);
    let shared = Arc::new(Shared {
        hist: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        received: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        gave_up: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let (a, s) = (Arc::clone(&args), Arc::clone(&shared));
        tasks.push(tokio::spawn(async move {
            for attempt in 0..5 {
                match client(Arc::clone(&a), a.offset + i, Arc::clone(&s)).await {
                    Ok(()) => return,
                    Err(e) if attempt == 4 => {
                        eprintln!("client {} gave up: {e}", a.offset + i);
                        s.gave_up.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
                }
            }
        }));
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    // Tell the controller how many are connected as they come (`connected N`), and when
    // every client is connected or has given up (`ready N`).
    let ready = Arc::clone(&shared);
    let count = args.count as u64;
    tokio::spawn(async move {
        let mut told = 0;
        loop {
            let c = ready.connected.load(Ordering::Relaxed);
            if c + ready.gave_up.load(Ordering::Relaxed) >= count {
                println!("ready {c}");
                return;
            }
            if c != told {
                println!("connected {c}");
                told = c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "reset" => {
                if let Ok(mut h) = shared.hist.lock() {
                    h.reset();
                }
                shared.received.store(0, Ordering::Relaxed);
                println!("ok");
            }
            "report" => {
                let mut bytes = Vec::new();
                if let Ok(h) = shared.hist.lock() {
                    V2Serializer::new().serialize(&h, &mut bytes)?;
                }
                let report = Report {
                    connected: shared.connected.load(Ordering::Relaxed),
                    received: shared.received.load(Ordering::Relaxed),
                    histogram: bytes.iter().map(|b| format!("{b:02x}")).collect(),
                };
                println!("{}", serde_json::to_string(&report)?);
            }
            "quit" => break,
            _ => {}
        }
    }
    std::process::exit(0);
}
