//! The same broadcast server on two Rust WebSocket libraries, to choose Herald's by
//! measurement: tokio-tungstenite (what Herald uses, through axum) and tokio-websockets.
//! Each is built like a Herald session, minus Herald: a task per connection with a queue of
//! shared frames (`Bytes`, encoded once per broadcast), which drains everything queued,
//! feeds it and flushes once. The control port takes one line per broadcast.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Which library serves the WebSocket connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lib {
    Tungstenite,
    TokioWebsockets,
}

/// Frames waiting per connection before it counts as too slow (then frames are dropped).
const QUEUE: usize = 1024;

type Clients = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

pub async fn run(lib: Lib, ws_port: u16, control_port: u16) -> anyhow::Result<()> {
    let clients: Clients = Arc::default();
    let listener = crate::raw::listen(ws_port)?;
    let accept = Arc::clone(&clients);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let clients = Arc::clone(&accept);
            tokio::spawn(async move {
                let _ = match lib {
                    Lib::Tungstenite => tungstenite_session(stream, clients).await,
                    Lib::TokioWebsockets => tokio_websockets_session(stream, clients).await,
                };
            });
        }
    });
    let control = TcpListener::bind(("127.0.0.1", control_port)).await?;
    println!("{lib:?} ws on {ws_port}, control on {control_port}");
    loop {
        let (conn, _) = control.accept().await?;
        let clients = Arc::clone(&clients);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(conn).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let frame = Bytes::from(line);
                let all = match clients.lock() {
                    Ok(all) => all.clone(),
                    Err(_) => return,
                };
                for tx in &all {
                    let _ = tx.try_send(frame.clone());
                }
            }
        });
    }
}

fn join(clients: &Clients) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(QUEUE);
    if let Ok(mut all) = clients.lock() {
        all.push(tx);
    }
    rx
}

/// Takes whatever else is queued right now (up to a batch) after `first`.
fn drain(first: Bytes, rx: &mut mpsc::Receiver<Bytes>, batch: &mut Vec<Bytes>) {
    batch.push(first);
    while batch.len() < 256 {
        match rx.try_recv() {
            Ok(f) => batch.push(f),
            Err(_) => break,
        }
    }
}

async fn tungstenite_session(stream: TcpStream, clients: Clients) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    // Herald's settings.
    let config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024);
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    pump(ws, join(&clients), Message::Binary).await
}

async fn tokio_websockets_session(stream: TcpStream, clients: Clients) -> anyhow::Result<()> {
    use tokio_websockets::{Config, Message, ServerBuilder};
    let (_, ws) = ServerBuilder::new()
        .config(Config::default().flush_threshold(16 * 1024))
        .accept(stream)
        .await?;
    pump(ws, join(&clients), Message::binary).await
}

/// A session: writes every queued frame (fed, then one flush per batch) and reads the
/// client until it leaves.
async fn pump<W, M, E>(
    mut ws: W,
    mut rx: mpsc::Receiver<Bytes>,
    message: fn(Bytes) -> M,
) -> anyhow::Result<()>
where
    W: futures::Sink<M, Error = E> + futures::Stream<Item = Result<M, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { return Ok(()) };
                drain(first, &mut rx, &mut batch);
                for f in batch.drain(..) {
                    ws.feed(message(f)).await?;
                }
                ws.flush().await?;
            }
            inbound = ws.next() => match inbound {
                Some(Ok(_)) => {}
                _ => return Ok(()),
            },
        }
    }
}
