//! A real WebSocket client (tokio-tungstenite) speaking `herald.v1`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    Close(u16),
    /// The connection ended without a close frame.
    Ended,
}

pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
}

/// A refused connection: HTTP status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Client {
    /// Connects with `?token=`, expecting `welcome` first.
    pub async fn connect(url: &str, token: &str) -> Result<Client, Refused> {
        let mut ws = Self::open(&format!("{url}?token={token}"), None).await?;
        let welcome = match next_frame(&mut ws, Duration::from_secs(10)).await {
            Frame::Json(v) => v,
            other => panic!("expected welcome, got {other:?}"),
        };
        Ok(Client { ws, welcome })
    }

    /// Opens the socket; `bearer` goes in the Authorization header instead of the query.
    pub async fn open(url: &str, bearer: Option<&str>) -> Result<Ws, Refused> {
        let mut request = url.into_client_request().expect("ws request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "herald.v1".parse().unwrap());
        if let Some(t) = bearer {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {t}").parse().unwrap());
        }
        // Small buffers, as a real client would keep: the default read buffer (128 KiB,
        // zeroed on every read) makes thousands of test clients burn CPU on memset.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(4096);
        match tokio_tungstenite::connect_async_with_config(request, Some(config), false).await {
            Ok((ws, response)) => {
                let proto = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok());
                assert_eq!(
                    proto,
                    Some("herald.v1"),
                    "server must select the herald.v1 subprotocol"
                );
                Ok(ws)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refused { status, body })
            }
            // No HTTP answer at all (refused, reset): status 0.
            Err(e) => Err(Refused {
                status: 0,
                body: Value::String(e.to_string()),
            }),
        }
    }

    /// The next frame, or `None` if nothing came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        try_next_frame(&mut self.ws, timeout).await
    }

    /// The next JSON frame within 10 s (panics otherwise).
    pub async fn json(&mut self) -> Value {
        match next_frame(&mut self.ws, Duration::from_secs(10)).await {
            Frame::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next frame of type `ty`, skipping others, within 10 s.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match next_frame(&mut self.ws, left).await {
                Frame::Json(v) if v["type"] == ty => return v,
                Frame::Json(_) => continue,
                other => panic!("expected a '{ty}' frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn close_code(&mut self, timeout: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!("no close within {timeout:?}");
            }
            match next_frame(&mut self.ws, left).await {
                Frame::Json(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send frame");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_string().into()))
            .await
            .expect("send frame");
    }

    pub async fn ack(&mut self, id: &str) {
        self.send(json!({"type": "ack", "id": id})).await;
    }

    /// Spawns a reader that acks every message and forwards every frame.
    pub fn auto_ack(self) -> tokio::sync::mpsc::UnboundedReceiver<Frame> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut ws = self.ws;
        tokio::spawn(async move {
            loop {
                let f = next_frame(&mut ws, Duration::from_secs(3600)).await;
                if let Frame::Json(v) = &f
                    && v["type"] == "message"
                    && let Some(id) = v["id"].as_str()
                {
                    let ack = json!({"type": "ack", "id": id}).to_string();
                    if ws.send(Message::Text(ack.into())).await.is_err() {
                        let _ = tx.send(Frame::Ended);
                        return;
                    }
                }
                let end = !matches!(f, Frame::Json(_));
                let _ = tx.send(f);
                if end {
                    return;
                }
            }
        });
        rx
    }
}

/// Reads the next data or close frame (answering nothing itself: tungstenite queues pongs
/// for pings and sends them on the next write or read).
pub async fn next_frame<S>(ws: &mut WebSocketStream<S>, timeout: Duration) -> Frame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match try_next_frame(ws, timeout).await {
        Some(f) => f,
        None => panic!("no frame within {timeout:?}"),
    }
}

/// Like [`next_frame`], but `None` when nothing arrives in time.
pub async fn try_next_frame<S>(ws: &mut WebSocketStream<S>, timeout: Duration) -> Option<Frame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(msg) = tokio::time::timeout(left, ws.next()).await else {
            return None;
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                return Some(Frame::Json(
                    serde_json::from_str(&t).expect("server frames are JSON"),
                ));
            }
            Some(Ok(Message::Close(c))) => {
                return Some(Frame::Close(c.map(|c| u16::from(c.code)).unwrap_or(1005)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Some(Frame::Ended),
        }
    }
}
