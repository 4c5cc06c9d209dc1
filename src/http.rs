//! The HTTP server loop every role uses. Compared with `axum::serve` it adds what a public
//! endpoint needs: a deadline for request headers (slowloris), the peer address for the
//! per-address connect limit, survival of accept errors (out of file descriptors), and
//! graceful shutdown that stops accepting and lets in-flight requests finish.
//!
//! HTTP/1 only, served by hyper's own connection type: an upgraded WebSocket then hands its
//! session the bare `TcpStream` (hyper-util's auto builder would wrap it in a private type),
//! so the fan-out path can write frames to it without waking the session's task.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Pending connections the kernel may hold for `accept` (capped by `net.core.somaxconn`).
/// The standard library's 128 overflows in a reconnect storm — every client of a restarted
/// gateway at once — and each dropped handshake costs its client a 1 s SYN retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown`, then waits (at most `grace`) for open
/// requests to finish. Upgraded WebSockets are owned by their sessions, not waited for here.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have.
                metrics::counter!("herald_accept_errors_total").increment(1);
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let conn = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close (keep-alive ends here).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests were still open at shutdown");
    }
}

/// Serves a role's router with the configured header deadline and a 5 s grace for open
/// requests at shutdown.
pub async fn serve_role(
    listener: TcpListener,
    app: Router,
    config: &herald_common::config::Config,
    shutdown: &CancellationToken,
) {
    serve(
        listener,
        app,
        config.limits.header_timeout,
        shutdown.clone(),
        Duration::from_secs(5),
    )
    .await
}
