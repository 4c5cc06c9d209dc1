//! `/v1/webhooks` (SPEC §11): status webhooks, their delivery logs, and enabling one the
//! platform disabled. Admin scope: a webhook's URL may carry a token of its own.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_common::api::{ErrorBody, WebhookCreate, WebhookDeliveries, WebhookList, WebhookView};
use serde::Deserialize;

use super::{JsonBody, St, path_param};
use crate::error::ApiError;
use crate::webhooks::{attempt_view, view};

fn id_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let id = path_param(p)?;
    let ok = id.len() <= 64
        && id.starts_with("wh_")
        && id[3..].bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        return Err(ApiError::invalid(format!(
            "webhook id: '{id}' is not a webhook id (wh_ and letters or digits)"
        )));
    }
    Ok(id)
}

fn no_such(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook '{id}'"))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body = WebhookCreate,
    responses(
        (status = 201, description = "Registered; the secret is shown this once", body = WebhookView),
        (status = 400, description = "Invalid request (names the field)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn create_webhook(
    State(state): St,
    JsonBody(req): JsonBody<WebhookCreate>,
) -> Result<Response, ApiError> {
    req.validate().map_err(ApiError::invalid)?;
    let hook = state.hooks.create(req).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&hook, true, Some(0)))).into_response())
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "Every webhook (without secrets)", body = WebhookList),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn list_webhooks(State(state): St) -> Result<Response, ApiError> {
    let mut webhooks = Vec::new();
    for hook in state.hooks.store().webhooks().await? {
        let backlog = state.hooks.store().hook_backlog(&hook.id).await.ok();
        webhooks.push(view(&hook, false, backlog));
    }
    Ok(axum::Json(WebhookList { webhooks }).into_response())
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (wh_…)")),
    responses(
        (status = 200, description = "The webhook (without its secret)", body = WebhookView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn get_webhook(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_param(id)?;
    let store = state.hooks.store();
    let Some(hook) = store.webhooks().await?.into_iter().find(|h| h.id == id) else {
        return Err(no_such(&id));
    };
    let backlog = store.hook_backlog(&id).await.ok();
    Ok(axum::Json(view(&hook, false, backlog)).into_response())
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (wh_…)")),
    responses(
        (status = 204, description = "Deleted, with its waiting deliveries and its log"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn delete_webhook(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_param(id)?;
    if state.hooks.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_such(&id))
    }
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (wh_…)")),
    responses(
        (status = 200, description = "Enabled; its waiting deliveries go out", body = WebhookView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn enable_webhook(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_param(id)?;
    match state.hooks.enable(&id).await? {
        Some(hook) => Ok(axum::Json(view(&hook, false, None)).into_response()),
        None => Err(no_such(&id)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// At most this many attempts, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (wh_…)"), LogQuery),
    responses(
        (status = 200, description = "The delivery log: every POST, newest first", body = WebhookDeliveries),
        (status = 400, description = "Invalid id or limit", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn webhook_deliveries(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_param(id)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("query: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=herald_engine::hooks::LOG_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("limit: must be 1 to 1000"));
    }
    let store = state.hooks.store();
    if !store.webhooks().await?.iter().any(|h| h.id == id) {
        return Err(no_such(&id));
    }
    let deliveries = store
        .hook_log(&id, limit)
        .await?
        .into_iter()
        .map(attempt_view)
        .collect();
    Ok(axum::Json(WebhookDeliveries { deliveries }).into_response())
}
