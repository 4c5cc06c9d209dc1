//! The HTTP server loop every role uses. Compared with `axum::serve` it adds what a public
//! endpoint needs: a deadline for request headers (slowloris), the peer address for the
//! per-address connect limit, survival of accept errors (out of file descriptors), and
//! graceful shutdown that stops accepting and lets in-flight requests finish.
//!
//! HTTP/1 only, served by hyper's own connection type: an upgraded WebSocket then hands its
//! session the bare `TcpStream` (hyper-util's auto builder would wrap it in a private type),
//! so the fan-out path can write frames to it without waking the session's task.
//!
//! An answer given before the request's body was read (413, 401, 415…) must not leave a
//! keep-alive client writing its next request into a connection the server is closing: the
//! unread rest of a body is drained in the background (up to [`DRAIN_LIMIT`]) so the
//! connection stays usable, and beyond that the answer says `Connection: close`
//! (docs/reliability.md, "Early answers").

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
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
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (mut req, body) = guard_body(req);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let answered = app.clone().oneshot(req);
            async move {
                let mut response = answered.await?;
                if body.must_close() {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
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

/// The most of an unread request body drained after an early answer to keep the connection.
pub const DRAIN_LIMIT: u64 = 1024 * 1024;
/// How long such a drain may take before the connection is given up.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// What became of a request's body, shared by the body and the answer on its way out.
#[derive(Clone)]
struct BodyState(Arc<AtomicU8>);

impl BodyState {
    /// Still being read by the handler (or not looked at yet).
    const OPEN: u8 = 0;
    /// Read to its end, or there was none.
    const DONE: u8 = 1;
    /// Dropped unread; the rest is being drained, the connection stays.
    const DRAINING: u8 = 2;
    /// Dropped unread with more left than is worth draining: the connection must close.
    const ABANDONED: u8 = 3;

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }

    /// Whether the answer must say `Connection: close`: the body was abandoned, or the
    /// handler answered while still holding a body it had not finished.
    fn must_close(&self) -> bool {
        matches!(self.0.load(Ordering::Acquire), Self::OPEN | Self::ABANDONED)
    }
}

/// Wraps a request's body so that an answer given before it was read leaves the connection
/// in a known state (see the module docs).
fn guard_body(req: hyper::Request<Incoming>) -> (hyper::Request<GuardedBody>, BodyState) {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let state = BodyState(Arc::new(AtomicU8::new(BodyState::OPEN)));
    let (parts, incoming) = req.into_parts();
    if incoming.is_end_stream() {
        state.set(BodyState::DONE);
    }
    let body = GuardedBody {
        inner: Some(incoming),
        read: 0,
        declared,
        state: state.clone(),
    };
    (hyper::Request::from_parts(parts, body), state)
}

/// A request body that, dropped before its end, drains what is left in the background.
struct GuardedBody {
    inner: Option<Incoming>,
    read: u64,
    declared: Option<u64>,
    state: BodyState,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.state.set(BodyState::DONE),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        let Some(mut rest) = self.inner.take() else {
            return;
        };
        if rest.is_end_stream() {
            self.state.set(BodyState::DONE);
            return;
        }
        // Only a body of known length is drained: a chunked one could go on without end.
        let left = self.declared.map(|d| d.saturating_sub(self.read));
        let Some(left) = left.filter(|l| *l <= DRAIN_LIMIT) else {
            self.state.set(BodyState::ABANDONED);
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.state.set(BodyState::ABANDONED);
            return;
        };
        self.state.set(BodyState::DRAINING);
        runtime.spawn(async move {
            use http_body_util::BodyExt;
            let drained = tokio::time::timeout(DRAIN_TIME, async {
                let mut seen = 0u64;
                while let Some(frame) = rest.frame().await {
                    let Ok(frame) = frame else { return };
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > left {
                        // More than it declared: hyper refuses it; nothing to keep.
                        return;
                    }
                }
            })
            .await;
            if drained.is_err() {
                tracing::debug!("gave up draining an unread request body");
            }
        });
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
