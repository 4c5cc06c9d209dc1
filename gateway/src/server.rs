//! The `/ws` endpoint: authenticates before upgrading, sets the socket's buffer and frame
//! limits, and hands each connection to its own session task.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use herald_common::api::{ErrorBody, ErrorCode};
use herald_common::auth::TokenVerifier;
use herald_common::config::Limits;
use herald_common::events::{ReadReceipt, Receipt};
use herald_common::protocol::SUBPROTOCOL;
use herald_common::ratelimit::KeyedLimiter;
use herald_common::subjects::Subjects;
use herald_engine::{Bus, History};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::hub::Hub;
use crate::session;

/// What a gateway needs to know beyond its engine.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub heartbeat: Duration,
    pub limits: Limits,
    /// Window over which sessions are closed with `1012` on shutdown.
    pub drain: Duration,
    /// Most personal messages replayed by one `resume`.
    pub inbox_limit: usize,
    /// Most topic messages replayed by one `subscribe` with `since`.
    pub topic_history_limit: usize,
    /// How long a user's or topic's bus interest outlives its last session.
    pub linger: Duration,
}

pub(crate) struct GatewayState {
    pub hub: Arc<Hub>,
    pub verifier: TokenVerifier,
    pub history: Arc<dyn History>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub config: GatewayConfig,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub instance: String,
    next_id: AtomicU64,
    connects: Option<KeyedLimiter<IpAddr>>,
}

impl GatewayState {
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forwards a receipt to the dispatchers (`read`, or an `ack` nobody waits for now).
    pub async fn publish_receipt(&self, user: &str, id: &str, kind: Receipt) {
        let receipt = ReadReceipt {
            id: id.to_string(),
            user_id: user.to_string(),
            at: herald_common::time::now_ms(),
            kind,
        };
        let Ok(payload) = serde_json::to_vec(&receipt) else {
            return;
        };
        if let Err(e) = self
            .bus
            .publish(&self.subjects.reads(), Bytes::from(payload))
            .await
        {
            tracing::warn!(message_id = %id, error = %e, "could not forward read receipt");
        }
    }
}

/// A running gateway: its hub and the `/ws` router.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<GatewayState>,
}

impl Gateway {
    /// Builds the gateway and starts its bus relay. Sessions stop when `shutdown` fires.
    pub fn start(
        bus: Arc<dyn Bus>,
        history: Arc<dyn History>,
        verifier: TokenVerifier,
        subjects: Subjects,
        config: GatewayConfig,
        shutdown: CancellationToken,
    ) -> Gateway {
        let (hub, rx) = Hub::new(
            Arc::clone(&bus),
            subjects.clone(),
            config.limits.max_sessions_per_user,
            config.linger,
        );
        let tracker = TaskTracker::new();
        tracker.spawn(Arc::clone(&hub).relay(rx));
        crate::metrics::describe();
        tracker.spawn(crate::metrics::sample(Arc::clone(&bus), shutdown.clone()));
        tracker.spawn(Arc::clone(&hub).drain_on(shutdown.clone(), config.drain));
        let state = Arc::new(GatewayState {
            hub,
            verifier,
            history,
            bus,
            subjects,
            shutdown,
            tracker,
            instance: format!("{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(1),
            connects: KeyedLimiter::new(config.limits.connects_per_s),
            config,
        });
        Gateway { state }
    }

    pub fn hub(&self) -> Arc<Hub> {
        Arc::clone(&self.state.hub)
    }

    /// `GET /ws`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(upgrade))
            .with_state(Arc::clone(&self.state))
    }

    /// Waits until every session has closed, at most `timeout`.
    pub async fn drained(&self, timeout: Duration) -> bool {
        self.state.tracker.close();
        tokio::time::timeout(timeout, async {
            // The relay runs until the bus closes; wait only for sessions.
            while self.state.hub.session_count() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok()
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

fn unauthorized(message: String) -> Response {
    metrics::counter!("herald_gateway_auth_failures_total").increment(1);
    let body = ErrorBody::new(ErrorCode::Unauthorized, message);
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}

fn refuse(status: StatusCode, code: ErrorCode, message: String) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

/// What a valid WebSocket upgrade request brings (RFC 6455 §4.2.1).
struct Handshake {
    accept: String,
    /// The client offered `herald.v1`.
    herald: bool,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Handshake {
    fn check(req: &mut Request) -> Result<Handshake, &'static str> {
        let headers = req.headers();
        if req.method() != axum::http::Method::GET {
            return Err("the method must be GET");
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err("the Connection header must include 'upgrade'");
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err("the Upgrade header must be 'websocket'");
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err("Sec-WebSocket-Version must be 13");
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err("the Sec-WebSocket-Key header is missing");
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let herald = has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
        let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
            return Err("this connection cannot be upgraded");
        };
        Ok(Handshake {
            accept,
            herald,
            on_upgrade,
        })
    }

    /// `101 Switching Protocols`, choosing `herald.v1` when the client offered it.
    fn response(&self) -> Response {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if self.herald {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        response
    }
}

/// The protocol settings of every session's socket.
fn ws_config(limits: &Limits) -> WebSocketConfig {
    // tungstenite preallocates its read buffer per connection: client frames are small (an
    // ack is ~60 bytes), so 256 bytes; it grows for a bigger frame. Measured in
    // BENCHMARKS.md. The write buffer is the session's bounded queue: frames the socket has
    // not taken wait there, and a backlog that would pass `session_queue_bytes` closes the
    // session as too slow (4008; counted by the wire, with room here for one more frame).
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(limits.session_queue_bytes + crate::wire::FRAME_ROOM)
        .max_frame_size(Some(limits.max_frame_bytes))
        .max_message_size(Some(limits.max_frame_bytes))
}

async fn upgrade(
    State(gw): State<Arc<GatewayState>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    if let (Some(limiter), Some(axum::Extension(ConnectInfo(addr)))) = (&gw.connects, peer)
        && let Err(wait) = limiter.check(&addr.ip())
    {
        metrics::counter!("herald_gateway_connects_refused_total", "reason" => "rate").increment(1);
        let mut r = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("too many connects from {}; retry later", addr.ip()),
        );
        if let Ok(v) =
            header::HeaderValue::from_str(&wait.as_secs_f64().ceil().max(1.0).to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let allowed = &gw.config.limits.allowed_origins;
    if !allowed.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        if !allowed.iter().any(|a| a == origin || a == "*") {
            metrics::counter!("herald_gateway_connects_refused_total", "reason" => "origin")
                .increment(1);
            return refuse(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!("origin '{origin}' is not allowed"),
            );
        }
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = query.ok().and_then(|q| q.0.token).or(bearer) else {
        return unauthorized(
            "missing token: pass ?token=<jwt> or Authorization: Bearer <jwt>".into(),
        );
    };
    let claims = match gw.verifier.verify(&token) {
        Ok(claims) => claims,
        Err(e) => return unauthorized(e.to_string()),
    };
    let handshake = match Handshake::check(&mut req) {
        Ok(h) => h,
        Err(why) => {
            let body = ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("expected a WebSocket upgrade: {why}"),
            );
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    if gw.shutdown.is_cancelled() {
        let body = ErrorBody::new(
            ErrorCode::Unavailable,
            "gateway is shutting down; reconnect elsewhere",
        );
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let response = handshake.response();
    let config = ws_config(&gw.config.limits);
    let state = Arc::clone(&gw);
    tokio::spawn(async move {
        let upgraded = match handshake.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        // The bare socket (src/http.rs serves hyper's HTTP/1 connection over it), so the
        // hub can write to it directly.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::error!("upgraded connection is not a TCP stream; closing it");
            return;
        };
        let ws = WebSocketContext::from_partially_read(
            parts.read_buf.to_vec(),
            Role::Server,
            Some(config),
        );
        // The session gets a task of its own, sized to its future alone (this task would
        // also hold the upgrade's state for the session's whole life).
        let tracker = state.tracker.clone();
        tracker.spawn(session::run(state, parts.io.into_inner(), ws, claims));
    });
    response
}
