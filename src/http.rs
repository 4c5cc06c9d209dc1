//! The HTTP server loop every role uses. Compared with `axum::serve` it adds what a public
//! endpoint needs: a deadline for request headers (slowloris), the peer address for the
//! per-address connect limit, survival of accept errors (out of file descriptors), and
//! graceful shutdown that stops accepting and lets in-flight requests finish.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
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
    let graceful = GracefulShutdown::new();
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let http = http.http1_only();
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
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
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
