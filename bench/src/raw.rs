//! The raw-socket ceiling: accept WebSocket clients, then for each message on the control
//! port write the same pre-encoded frame to every socket in the simplest possible loop —
//! one `write_all` per frame per socket. Any framework's result reads as a share of this.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A server-to-client text frame (no mask), header + payload.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A loopback listener with the backlog Herald listens with, so a connect storm meets the
/// same kernel queue (used by every herald-bench server).
pub fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    socket.listen(4096)
}

pub async fn run(ws_port: u16, control_port: u16) -> anyhow::Result<()> {
    let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let listener = listen(ws_port)?;
    let accept = Arc::clone(&sockets);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sockets = Arc::clone(&accept);
            tokio::spawn(async move {
                // Do the handshake with tungstenite, then keep the bare socket.
                let mut std_like = stream;
                let ok = handshake(&mut std_like).await;
                if ok {
                    let _ = std_like.set_nodelay(true);
                    sockets.lock().await.push(std_like);
                }
            });
        }
    });
    let control = TcpListener::bind(("127.0.0.1", control_port)).await?;
    println!("raw ws on {ws_port}, control on {control_port}");
    loop {
        let (conn, _) = control.accept().await?;
        let sockets = Arc::clone(&sockets);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(conn).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let frame = text_frame(line.as_bytes());
                let mut all = sockets.lock().await;
                for s in all.iter_mut() {
                    let _ = s.write_all(&frame).await;
                }
            }
        });
    }
}

/// The RFC 6455 handshake by hand: read the request, answer 101 with the accept key.
async fn handshake(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return false;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let Some(key) = text.lines().find_map(|l| {
        l.strip_prefix("Sec-WebSocket-Key:")
            .or_else(|| l.strip_prefix("sec-websocket-key:"))
    }) else {
        return false;
    };
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.is_ok()
}
