//! Push devices (SPEC §7): `/v1/users/{id}/devices/…` with an API key, `/v1/me/devices/…`
//! with the app's own client token (an app registers itself, never another user), and
//! `GET /v1/webpush/key` (no auth) for browsers to subscribe with.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_common::api::{
    DeviceList, DeviceRegistration, DeviceView, ErrorBody, ErrorCode, validate_device_id,
};
use herald_common::ids::validate_user_id;
use herald_common::time::now_ms;

use super::{ApiState, JsonBody, St};
use crate::error::ApiError;

/// `GET /v1/webpush/key`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebPushKey {
    /// base64url of the VAPID public key: `applicationServerKey` for
    /// `pushManager.subscribe`.
    pub public_key: String,
}

fn device_path(
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((user, device)) = p.map_err(|e| ApiError::invalid(format!("bad path: {e}")))?;
    validate_user_id(&user).map_err(|e| ApiError::invalid(format!("user id: {e}")))?;
    validate_device_id(&device).map_err(ApiError::invalid)?;
    Ok((user, device))
}

async fn register(
    state: &ApiState,
    user: &str,
    device: &str,
    registration: DeviceRegistration,
) -> Result<Response, ApiError> {
    let address = registration.validate().map_err(ApiError::invalid)?;
    let record = state
        .devices
        .put_device(user, device, address, now_ms(), state.max_devices)
        .await?;
    Ok(axum::Json(record.view()).into_response())
}

async fn list(state: &ApiState, user: &str) -> Result<Response, ApiError> {
    let devices = state.devices.devices(user).await?;
    Ok(axum::Json(DeviceList {
        devices: devices.iter().map(|d| d.view()).collect(),
    })
    .into_response())
}

async fn remove(state: &ApiState, user: &str, device: &str) -> Result<Response, ApiError> {
    state.devices.delete_device(user, device).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The user a client token speaks for.
pub(super) fn client_user(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(verifier) = &state.verifier else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this server has no HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY to check client tokens",
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing client token: send Authorization: Bearer <jwt>",
            )
        })?;
    let claims = verifier
        .verify(token.trim())
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, format!("client token: {e}")))?;
    Ok(claims.sub)
}

#[utoipa::path(put, path = "/v1/users/{id}/devices/{device_id}", tag = "devices",
    request_body = DeviceRegistration,
    params(("id" = String, Path, description = "User id"), ("device_id" = String, Path, description = "Device id: 1-128 of [A-Za-z0-9._:-]")),
    responses(
        (status = 200, description = "Registered (the same token twice is one device)", body = DeviceView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn put_device(
    State(state): St,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(registration): JsonBody<DeviceRegistration>,
) -> Result<Response, ApiError> {
    let (user, device) = device_path(path)?;
    register(&state, &user, &device, registration).await
}

#[utoipa::path(get, path = "/v1/users/{id}/devices", tag = "devices",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user's devices, active or not", body = DeviceList),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn list_devices(
    State(state): St,
    user: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user = super::user_param(user)?;
    list(&state, &user).await
}

#[utoipa::path(delete, path = "/v1/users/{id}/devices/{device_id}", tag = "devices",
    params(("id" = String, Path, description = "User id"), ("device_id" = String, Path, description = "Device id")),
    responses(
        (status = 204, description = "Deleted (or there was nothing)"),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn delete_device(
    State(state): St,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (user, device) = device_path(path)?;
    remove(&state, &user, &device).await
}

#[utoipa::path(put, path = "/v1/me/devices/{device_id}", tag = "devices",
    request_body = DeviceRegistration,
    params(("device_id" = String, Path, description = "Device id: 1-128 of [A-Za-z0-9._:-]")),
    security(("client_token" = [])),
    responses(
        (status = 200, description = "Registered for the token's user", body = DeviceView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing, expired or invalid client token", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn put_my_device(
    State(state): St,
    headers: HeaderMap,
    device: Result<Path<String>, PathRejection>,
    JsonBody(registration): JsonBody<DeviceRegistration>,
) -> Result<Response, ApiError> {
    let user = client_user(&state, &headers)?;
    let device = super::path_param(device)?;
    validate_device_id(&device).map_err(ApiError::invalid)?;
    register(&state, &user, &device, registration).await
}

#[utoipa::path(get, path = "/v1/me/devices", tag = "devices",
    security(("client_token" = [])),
    responses(
        (status = 200, description = "The token's user's devices", body = DeviceList),
        (status = 401, description = "Missing, expired or invalid client token", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn list_my_devices(
    State(state): St,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = client_user(&state, &headers)?;
    list(&state, &user).await
}

#[utoipa::path(delete, path = "/v1/me/devices/{device_id}", tag = "devices",
    params(("device_id" = String, Path, description = "Device id")),
    security(("client_token" = [])),
    responses(
        (status = 204, description = "Deleted (or there was nothing)"),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing, expired or invalid client token", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn delete_my_device(
    State(state): St,
    headers: HeaderMap,
    device: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user = client_user(&state, &headers)?;
    let device = super::path_param(device)?;
    validate_device_id(&device).map_err(ApiError::invalid)?;
    remove(&state, &user, &device).await
}

#[utoipa::path(get, path = "/v1/webpush/key", tag = "devices",
    security(()),
    responses(
        (status = 200, description = "The VAPID public key", body = WebPushKey),
        (status = 404, description = "Web Push is not configured", body = ErrorBody),
    ))]
pub(super) async fn webpush_key(State(state): St) -> Result<Response, ApiError> {
    match &state.webpush_key {
        Some(key) => Ok(axum::Json(WebPushKey {
            public_key: key.clone(),
        })
        .into_response()),
        None => Err(ApiError::not_found(
            "Web Push is not configured (HERALD_VAPID_PRIVATE_KEY_FILE)",
        )),
    }
}
