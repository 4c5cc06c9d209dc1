//! Operations endpoints on every role's listener: `/healthz`, `/readyz`, `/metrics`, and
//! the JSON 404/405 answers for everything else.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use herald_common::api::{ErrorBody, ErrorCode};
use metrics_exporter_prometheus::PrometheusHandle;

/// Says whether the role's engine is usable right now.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    ready: ReadyCheck,
    metrics: Option<PrometheusHandle>,
}

pub fn router(ready: ReadyCheck, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { ready, metrics })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    if (state.ready)().await {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        error(ErrorCode::Unavailable, "engine not ready")
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub fn error(code: ErrorCode, message: &str) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

/// Adds JSON answers for unknown paths (404) and unsupported methods (405).
pub fn with_fallbacks(app: Router) -> Router {
    app.fallback(|| async { error(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
}
