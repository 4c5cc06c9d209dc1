//! The inbox of a notification centre (SPEC §11): `/v1/users/{id}/inbox` with an API key,
//! `/v1/me/inbox` with the user's own client token (and CORS, for browsers).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use herald_common::api::{ErrorBody, InboxMark, InboxMarked, InboxPage};
use serde::Deserialize;

use super::devices::client_user;
use super::{ApiState, JsonBody, St, user_param};
use crate::error::ApiError;

/// The largest seq a client can hold exactly (2^53 - 1, JavaScript's safe integers).
const MAX_SEQ: u64 = 9_007_199_254_740_991;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InboxQuery {
    /// At most this many messages, newest first (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// Only messages with a seq below this one (the next page: the last seq seen).
    #[param(minimum = 1, maximum = 9007199254740991_u64)]
    before: Option<u64>,
}

async fn page(
    state: &ApiState,
    user: &str,
    query: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    if q.before.is_some_and(|b| b == 0 || b > MAX_SEQ) {
        return Err(ApiError::invalid(format!("before: 1 to {MAX_SEQ}")));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit: must be 1 to 200"));
    }
    let page = state.inbox.page(user, limit, q.before).await?;
    Ok(axum::Json(page).into_response())
}

async fn mark(
    state: &ApiState,
    user: &str,
    req: InboxMark,
    archive: bool,
) -> Result<Response, ApiError> {
    let ids = req.target(!archive).map_err(ApiError::invalid)?;
    let (ids, unread) = state.inbox.mark(user, ids, archive).await?;
    // Reads through the API are receipts too: `read` events, escalations satisfied.
    for id in &ids {
        let receipt = herald_common::events::ReadReceipt {
            id: id.clone(),
            user_id: user.to_string(),
            at: herald_common::time::now_ms(),
            kind: herald_common::events::Receipt::Read,
        };
        if let Err(e) = state.pipeline.receipt(&receipt).await {
            tracing::warn!(message_id = %id, error = %e, "could not record a read");
        }
    }
    Ok(axum::Json(InboxMarked { ids, unread }).into_response())
}

#[utoipa::path(get, path = "/v1/users/{id}/inbox", tag = "inbox",
    params(("id" = String, Path, description = "User id"), InboxQuery),
    responses(
        (status = 200, description = "Newest first, with read state and the unread count", body = InboxPage),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn user_inbox(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let user = user_param(id)?;
    page(&state, &user, query).await
}

#[utoipa::path(post, path = "/v1/users/{id}/inbox/read", tag = "inbox",
    request_body = InboxMark,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "Marked read; every session of the user is told", body = InboxMarked),
        (status = 400, description = "Invalid request (names the field)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn user_inbox_read(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<InboxMark>,
) -> Result<Response, ApiError> {
    let user = user_param(id)?;
    mark(&state, &user, req, false).await
}

#[utoipa::path(post, path = "/v1/users/{id}/inbox/archive", tag = "inbox",
    request_body = InboxMark,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "Archived (and so read)", body = InboxMarked),
        (status = 400, description = "Invalid request (names the field)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn user_inbox_archive(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<InboxMark>,
) -> Result<Response, ApiError> {
    let user = user_param(id)?;
    mark(&state, &user, req, true).await
}

#[utoipa::path(get, path = "/v1/me/inbox", tag = "inbox",
    params(InboxQuery),
    security(("client_token" = [])),
    responses(
        (status = 200, description = "The token's user's inbox", body = InboxPage),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing, expired or invalid client token", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn my_inbox(
    State(state): St,
    headers: HeaderMap,
    query: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let user = client_user(&state, &headers)?;
    page(&state, &user, query).await
}

#[utoipa::path(post, path = "/v1/me/inbox/read", tag = "inbox",
    request_body = InboxMark,
    security(("client_token" = [])),
    responses(
        (status = 200, description = "Marked read; every session of the user is told", body = InboxMarked),
        (status = 400, description = "Invalid request (names the field)", body = ErrorBody),
        (status = 401, description = "Missing, expired or invalid client token", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn my_inbox_read(
    State(state): St,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InboxMark>,
) -> Result<Response, ApiError> {
    let user = client_user(&state, &headers)?;
    mark(&state, &user, req, false).await
}

#[utoipa::path(post, path = "/v1/me/inbox/archive", tag = "inbox",
    request_body = InboxMark,
    security(("client_token" = [])),
    responses(
        (status = 200, description = "Archived (and so read)", body = InboxMarked),
        (status = 400, description = "Invalid request (names the field)", body = ErrorBody),
        (status = 401, description = "Missing, expired or invalid client token", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn my_inbox_archive(
    State(state): St,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InboxMark>,
) -> Result<Response, ApiError> {
    let user = client_user(&state, &headers)?;
    mark(&state, &user, req, true).await
}
