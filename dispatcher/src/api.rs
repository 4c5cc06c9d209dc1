//! The HTTP API (SPEC §3): `/v1/messages`, `/v1/topics/{topic}/messages`, `/v1/users/…`.
//! Every `/v1` route needs `Authorization: Bearer <api key>`; every error is JSON.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use herald_common::api::{
    ErrorCode, MAX_BODY_BYTES, Presence, SendRequest, TopicAccepted, TopicPublish, UserProfile,
    UserView,
};
use herald_common::auth::ApiKeys;
use herald_common::ids::validate_user_id;
use herald_common::protocol::{MessageContent, MessageFrame};
use herald_common::subjects::Subjects;
use herald_common::time::{now_ms, rfc3339};
use herald_common::topic::validate_topic;
use herald_engine::{Bus, History, Store};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::ordering::OrderLocks;
use crate::pipeline::Pipeline;

/// Answers "how many live sessions does this user have", across the deployment.
#[async_trait]
pub trait PresenceSource: Send + Sync + 'static {
    async fn sessions(&self, user_id: &str) -> Result<u64, String>;
}

pub struct ApiState {
    pub pipeline: Arc<Pipeline>,
    pub store: Arc<dyn Store>,
    pub history: Arc<dyn History>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    pub api_keys: ApiKeys,
    pub limiter: Option<herald_common::ratelimit::KeyedLimiter<usize>>,
    pub presence: Arc<dyn PresenceSource>,
    pub topic_order: OrderLocks,
}

type St = State<Arc<ApiState>>;

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/messages", post(send_message))
        .route("/v1/messages/{id}", get(get_message))
        .route("/v1/topics/{topic}/messages", post(publish_topic))
        .route(
            "/v1/users/{id}",
            put(put_user).get(get_user).delete(delete_user),
        )
        .route("/v1/users/{id}/presence", get(presence))
        .route("/v1/dead-letters", get(dead_letters))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_key,
        ))
        .with_state(state)
}

async fn require_api_key(State(state): St, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented.map(|k| state.api_keys.position(k.trim())) {
        Some(Some(key)) => {
            if let Some(Err(wait)) = state.limiter.as_ref().map(|l| l.check(&key)) {
                metrics::counter!("herald_api_rate_limited_total").increment(1);
                let mut e = ApiError::new(
                    ErrorCode::RateLimited,
                    "too many requests for this API key; slow down",
                );
                e.retry_after_s = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                return e.into_response();
            }
            next.run(request).await
        }
        Some(None) => {
            ApiError::new(ErrorCode::Unauthorized, "API key not accepted").into_response()
        }
        None => ApiError::new(
            ErrorCode::Unauthorized,
            "missing API key: send Authorization: Bearer <key>",
        )
        .into_response(),
    }
}

/// A JSON request body: `application/json`, at most 256 KiB, decoded into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_json_body(req).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

async fn read_json_body(req: Request) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body is over {} KiB", MAX_BODY_BYTES / 1024),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if limit {
                too_large()
            } else {
                ApiError::invalid(format!("could not read the body: {e}"))
            }
        })
}

fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::invalid(format!("bad path: {e}")))
}

fn user_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let id = path_param(p)?;
    validate_user_id(&id).map_err(|e| ApiError::invalid(format!("user id: {e}")))?;
    Ok(id)
}

async fn send_message(
    State(state): St,
    headers: HeaderMap,
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
    let (accepted, fresh) = state.pipeline.accept(req, header_key).await?;
    let mut response = (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    if !fresh {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_message(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    match state.store.message(&id).await? {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::not_found(format!("no message with id '{id}'"))),
    }
}

async fn publish_topic(
    State(state): St,
    topic: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<TopicPublish>,
) -> Result<Response, ApiError> {
    let topic = path_param(topic)?;
    validate_topic(&topic).map_err(|e| ApiError::invalid(format!("topic '{topic}': {e}")))?;
    let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
    if blank(&req.title) && blank(&req.body) && req.data.as_ref().is_none_or(|d| d.is_null()) {
        return Err(ApiError::invalid(
            "one of 'title', 'body' or 'data' is required",
        ));
    }
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

async fn put_user(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
    JsonBody(profile): JsonBody<UserProfile>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    profile.validate().map_err(ApiError::invalid)?;
    state.store.put_user(&id, &profile).await?;
    Ok(axum::Json(UserView { id, profile }).into_response())
}

async fn get_user(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    match state.store.user(&id).await? {
        Some(profile) => Ok(axum::Json(UserView { id, profile }).into_response()),
        None => Err(ApiError::not_found(format!("no user '{id}'"))),
    }
}

async fn delete_user(
    State(state): St,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_param(id)?;
    state.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn presence(
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

#[derive(serde::Deserialize)]
struct DeadLetterQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// `GET /v1/dead-letters?limit=50&before=<next>`: recipients that ended failed or expired.
async fn dead_letters(
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
