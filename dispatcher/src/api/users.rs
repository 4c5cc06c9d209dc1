//! `/v1/users/{id}`: profiles (chat secrets write-only) and presence.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_common::api::{ErrorBody, Presence, UserProfile, UserView};

use super::{JsonBody, St, user_param};
use crate::error::ApiError;

#[utoipa::path(put, path = "/v1/users/{id}", tag = "users",
    request_body = UserProfile,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "Stored", body = UserView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub(super) async fn put_user(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
    JsonBody(profile): JsonBody<UserProfile>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    let mut profile = profile;
    profile.validate().map_err(ApiError::invalid)?;
    // Chat secrets are write-only: a profile written back without them keeps them.
    if !profile.chat.is_empty()
        && let Some(stored) = state.store.user(&id).await?
    {
        profile.keep_secrets_from(&stored);
    }
    state.store.put_user(&id, &profile).await?;
    let profile = profile.redacted();
    Ok(axum::Json(UserView { id, profile }).into_response())
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The profile", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn get_user(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    match state.store.user(&id).await? {
        Some(profile) => {
            let profile = profile.redacted();
            Ok(axum::Json(UserView { id, profile }).into_response())
        }
        None => Err(ApiError::not_found(format!("no user '{id}'"))),
    }
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted (or there was nothing)"),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn delete_user(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    state.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/v1/users/{id}/presence", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "Live sessions, cluster-wide", body = Presence),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn presence(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    let sessions = state
        .presence
        .sessions(&id)
        .await
        .map_err(|e| ApiError::unavailable(format!("presence is unavailable: {e}")))?;
    Ok(axum::Json(Presence {
        online: sessions > 0,
        sessions,
    })
    .into_response())
}
