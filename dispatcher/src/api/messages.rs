//! `/v1/messages` (send, status, search), `/v1/topics/{topic}/messages`, `/v1/dead-letters`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use herald_common::api::{
    Accepted, CancelRequest, Canceled, DeadLetterPage, ErrorBody, MessageView, SendRequest,
    TopicAccepted, TopicPublish,
};
use herald_common::ids::validate_user_id;
use herald_common::protocol::{MessageContent, MessageFrame};
use herald_common::time::{now_ms, rfc3339};
use herald_common::topic::validate_topic;
use serde_json::value::RawValue;

use super::{JsonBody, St, path_param};
use crate::error::ApiError;

/// Up to this many API keys, the messages metric has a series per key.
const SENDER_LABELS: usize = 32;

#[utoipa::path(post, path = "/v1/messages", tag = "messages",
    request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key")),
    responses(
        (status = 202, description = "Accepted (durably)", body = Accepted),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 409, description = "Same key being accepted right now", body = ErrorBody),
        (status = 422, description = "Key reused with a different body", body = ErrorBody),
    ))]
pub(super) async fn send_message(
    State(state): St,
    headers: HeaderMap,
    sender: Option<axum::Extension<super::Sender>>,
    JsonBody(req): JsonBody<SendRequest>,
) -> Result<Response, ApiError> {
    let header_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))
        })
        .transpose()?;
    let sender = sender.map(|s| s.0.0);
    let (accepted, fresh) = state
        .pipeline
        .accept(req, header_key, sender.clone())
        .await?;
    if fresh {
        // One series per key while the keys are few; past that, one for all.
        let label = match sender {
            Some(name) if state.api_keys.len() <= SENDER_LABELS => name,
            _ => "other".to_string(),
        };
        metrics::counter!("herald_api_messages_total", "sender" => label).increment(1);
    }
    let mut response = (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    if !fresh {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses(
        (status = 200, description = "Where it went", body = MessageView),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn get_message(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    match state.store.message(&id).await? {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::not_found(format!("no message with id '{id}'"))),
    }
}

#[utoipa::path(delete, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses(
        (status = 200, description = "Its recipients not yet attempted are canceled", body = Canceled),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn cancel_message(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    match state.pipeline.cancel_message(&id).await? {
        Some(canceled) => Ok(axum::Json(Canceled { canceled }).into_response()),
        None => Err(ApiError::not_found(format!("no message with id '{id}'"))),
    }
}

#[utoipa::path(post, path = "/v1/messages/cancel", tag = "messages",
    request_body = CancelRequest,
    responses(
        (status = 200, description = "Every recipient not yet attempted of the messages sent with this key is canceled", body = Canceled),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub(super) async fn cancel_by_key(
    State(state): St,
    JsonBody(req): JsonBody<CancelRequest>,
) -> Result<Response, ApiError> {
    let key = req.cancel_key;
    herald_common::api::validate_cancel_key(&key).map_err(ApiError::invalid)?;
    let canceled = state.pipeline.cancel_group(&key).await?;
    Ok(axum::Json(Canceled { canceled }).into_response())
}

#[utoipa::path(post, path = "/v1/topics/{topic}/messages", tag = "topics",
    request_body = TopicPublish,
    params(("topic" = String, Path, description = "Topic name, e.g. team.42.alerts")),
    responses(
        (status = 202, description = "Published", body = TopicAccepted),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub(super) async fn publish_topic(
    State(state): St,
    topic: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<TopicPublish>,
) -> Result<Response, ApiError> {
    let topic = path_param(topic)?;
    validate_topic(&topic).map_err(|e| ApiError::invalid(format!("topic '{topic}': {e}")))?;
    req.validate().map_err(ApiError::invalid)?;
    let content = MessageContent {
        id: ulid::Ulid::generate().to_string(),
        title: req.title,
        body: req.body,
        data: req
            .data
            .and_then(|d| RawValue::from_string(d.to_string()).ok()),
        created_at: rfc3339(now_ms()),
    };
    let seq = {
        // Append and publish under the topic's lock so frames leave in seq order.
        let _order = state.topic_order.lock(&topic).await;
        let seq = state.history.append_topic(&topic, &content).await?;
        let frame = MessageFrame::new(&content, Some(&topic), seq).encode();
        if let Err(e) = state
            .bus
            .publish(&state.subjects.topic(&topic), Bytes::from(frame))
            .await
        {
            // Kept in history: subscribers recover it with `since`.
            tracing::warn!(topic = %topic, error = %e, "topic publish failed after append");
        }
        seq
    };
    metrics::counter!("herald_topic_messages_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(TopicAccepted {
            id: content.id,
            seq,
        }),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct DeadLetterQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// `GET /v1/dead-letters?limit=50&before=<next>`: recipients that ended failed or expired.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "messages",
    params(
        ("limit" = Option<usize>, Query, description = "1-500, default 50", minimum = 1, maximum = 500),
        ("before" = Option<String>, Query, description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "Recipients that ended failed or expired, newest first", body = DeadLetterPage),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn dead_letters(
    State(state): St,
    query: Result<axum::extract::Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {e}")))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("'limit' must be between 1 and 500"));
    }
    let page = state.store.dead_letters(limit, q.before.as_deref()).await?;
    Ok(axum::Json(page).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
    sender: Option<String>,
}

/// `GET /v1/messages?user=alice&limit=20`: the latest messages sent to a user.
#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    params(
        ("user" = String, Query, description = "User id"),
        ("sender" = Option<String>, Query, description = "Only messages sent with this API key (its name); looks through the user's latest 500"),
        ("limit" = Option<usize>, Query, description = "1-100, default 20", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "Newest first", body = herald_common::api::MessageList),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn list_messages(
    State(state): St,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {e}")))?;
    let user = q
        .user
        .ok_or_else(|| ApiError::invalid("'user' is required"))?;
    validate_user_id(&user).map_err(|e| ApiError::invalid(format!("user: {e}")))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("'limit' must be between 1 and 100"));
    }
    let items = match &q.sender {
        None => state.store.messages_for_user(&user, limit).await?,
        Some(sender) => {
            herald_common::auth::validate_key_name(sender)
                .map_err(|e| ApiError::invalid(format!("sender: {e}")))?;
            let mut items = state.store.messages_for_user(&user, 500).await?;
            items.retain(|m| m.sender.as_deref() == Some(sender.as_str()));
            items.truncate(limit);
            items
        }
    };
    Ok(axum::Json(herald_common::api::MessageList { items }).into_response())
}
