//! `/v1/stats` and `/v1/tokens`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use herald_common::api::ErrorBody;
use herald_common::time::{now_ms, rfc3339};

use super::{JsonBody, St};
use crate::error::ApiError;

/// `GET /v1/stats`: this dispatcher's counters and the live sessions on every gateway.
#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    responses(
        (status = 200, description = "Counters", body = herald_common::api::Stats),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn stats(State(state): St) -> Result<Response, ApiError> {
    let sessions = state
        .presence
        .total_sessions()
        .await
        .map_err(|e| ApiError::unavailable(format!("session count unavailable: {e}")))?;
    let mut stats = state.pipeline.stats().snapshot(sessions);
    stats.providers = state.providers.stats();
    Ok(axum::Json(stats).into_response())
}

/// `POST /v1/tokens`: a client token for a user, minted with the configured secret.
#[utoipa::path(post, path = "/v1/tokens", tag = "operations",
    request_body = herald_common::api::TokenRequest,
    responses(
        (status = 200, description = "A token", body = herald_common::api::TokenResponse),
        (status = 404, description = "No HS256 secret configured here", body = ErrorBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub(super) async fn mint_token(
    State(state): St,
    JsonBody(req): JsonBody<herald_common::api::TokenRequest>,
) -> Result<Response, ApiError> {
    let Some(minter) = &state.minter else {
        return Err(ApiError::not_found(
            "this dispatcher has no HERALD_JWT_SECRET to mint tokens with",
        ));
    };
    let ttl = req.ttl_s.unwrap_or(3600);
    if !(1..=7 * 86_400).contains(&ttl) {
        return Err(ApiError::invalid("'ttl_s' must be between 1 and 604800"));
    }
    let token = minter
        .mint(&req.user, req.topics, std::time::Duration::from_secs(ttl))
        .map_err(ApiError::invalid)?;
    Ok(axum::Json(herald_common::api::TokenResponse {
        token,
        expires_at: rfc3339(now_ms() + ttl as i64 * 1000),
        ws_url: state.public_ws_url.clone(),
    })
    .into_response())
}
