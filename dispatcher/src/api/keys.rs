//! `/v1/keys` (SPEC §11): API keys created and deleted through the API (admin scope). The
//! key is shown once, in the answer to its creation; the store keeps its SHA-256.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use herald_common::api::{ErrorBody, ErrorCode, KeyCreate, KeyList, KeyView};
use herald_common::auth::{Scopes, validate_key_name};
use herald_common::time::{now_ms, rfc3339};
use herald_engine::ApiKeyRecord;

use super::{JsonBody, St, path_param};
use crate::channels::signing::hex;
use crate::error::ApiError;
use crate::keys::digest;

fn stored_view(r: &ApiKeyRecord, key: Option<String>) -> KeyView {
    KeyView {
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        source: "api".into(),
        daily_quota: r.daily_quota,
        rate_limit: r.rate_limit,
        created_at: Some(rfc3339(r.created_at)),
        key,
    }
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = KeyCreate,
    responses(
        (status = 201, description = "Created; the key is shown this once and works on every dispatcher", body = KeyView),
        (status = 400, description = "Invalid request (names the field)", body = ErrorBody),
        (status = 409, description = "The name is taken (by a created key or one of HERALD_API_KEYS)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn create_key(
    State(state): St,
    JsonBody(req): JsonBody<KeyCreate>,
) -> Result<Response, ApiError> {
    validate_key_name(&req.name).map_err(|e| ApiError::invalid(format!("name: {e}")))?;
    let names: Vec<String> = match &req.scopes {
        Some(s) => s.iter().map(|s| s.0.clone()).collect(),
        None => vec!["send".into(), "read".into(), "admin".into()],
    };
    if names.len() > 3 {
        return Err(ApiError::invalid("scopes: at most 3 (send, read, admin)"));
    }
    let scopes =
        Scopes::from_names(&names).map_err(|e| ApiError::invalid(format!("scopes: {e}")))?;
    if req
        .daily_quota
        .is_some_and(|q| !(1..=1_000_000_000).contains(&q))
    {
        return Err(ApiError::invalid(
            "daily_quota: 1 to 1000000000 (leave it out for none)",
        ));
    }
    if req.rate_limit.is_some_and(|r| !(1..=100_000).contains(&r)) {
        return Err(ApiError::invalid(
            "rate_limit: 1 to 100000 requests per second (leave it out for HERALD_API_RATE_LIMIT)",
        ));
    }
    if state.api_keys.scoped_names().any(|(n, _)| n == req.name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("name: '{}' is a key of HERALD_API_KEYS", req.name),
        ));
    }
    let raw: [u8; 32] = rand::random();
    let key = format!(
        "hk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let record = ApiKeyRecord {
        name: req.name.clone(),
        hash: hex(&digest(&key)),
        scopes: scopes.names().into_iter().map(str::to_string).collect(),
        daily_quota: req.daily_quota,
        rate_limit: req.rate_limit,
        created_at: now_ms(),
    };
    if !state.keys.create(&record).await? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("name: '{}' is taken", req.name),
        ));
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(stored_view(&record, Some(key))),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Every key: configured and created (never the key itself)", body = KeyList),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn list_keys(State(state): St) -> Result<Response, ApiError> {
    let mut keys: Vec<KeyView> = state
        .api_keys
        .scoped_names()
        .map(|(name, scopes)| KeyView {
            name: name.to_string(),
            scopes: scopes.names().into_iter().map(str::to_string).collect(),
            source: "config".into(),
            daily_quota: None,
            rate_limit: None,
            created_at: None,
            key: None,
        })
        .collect();
    keys.extend(
        state
            .keys
            .list()
            .await?
            .iter()
            .map(|r| stored_view(r, None)),
    );
    Ok(axum::Json(KeyList { keys }).into_response())
}

#[utoipa::path(delete, path = "/v1/keys/{name}", tag = "keys",
    params(("name" = String, Path, description = "Key name")),
    responses(
        (status = 204, description = "Deleted: refused from now on, on every dispatcher"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 409, description = "A key of HERALD_API_KEYS: remove it there", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn delete_key(
    State(state): St,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    validate_key_name(&name).map_err(|e| ApiError::invalid(format!("name: {e}")))?;
    if state.api_keys.scoped_names().any(|(n, _)| n == name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("'{name}' is configured in HERALD_API_KEYS; remove it there"),
        ));
    }
    if state.keys.delete(&name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no API key named '{name}'")))
    }
}
