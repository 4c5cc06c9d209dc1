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
    Accepted, DeadLetterPage, ErrorBody, ErrorCode, MAX_BODY_BYTES, MessageView, Presence,
    SendRequest, TopicAccepted, TopicPublish, UserProfile, UserView,
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
    /// Live sessions of everyone, on every gateway.
    async fn total_sessions(&self) -> Result<u64, String>;
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
    /// Mints client tokens for `POST /v1/tokens` (when an HS256 secret is configured).
    pub minter: Option<herald_common::auth::TokenMinter>,
    pub public_ws_url: Option<String>,
}

type St = State<Arc<ApiState>>;

/// The API description served at `/openapi.json`, generated from the handlers above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Herald", description = "One API to reach users in the app, by email and by SMS."),
    paths(send_message, list_messages, get_message, publish_topic, put_user, get_user, delete_user, presence, dead_letters, stats, mint_token),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    ApiDoc::openapi().to_json().unwrap_or_default()
}

pub fn router(state: Arc<ApiState>) -> Router {
    let doc = openapi_json();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .merge(crate::console::router())
        .merge(v1_router(state))
}

fn v1_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/messages", post(send_message).get(list_messages))
        .route("/v1/stats", get(stats))
        .route("/v1/tokens", post(mint_token))
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
        // Every body is an object (serde would also read a struct from an array).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("the body must be a JSON object"));
        }
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

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted (or there was nothing)"),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
async fn delete_user(
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

#[derive(serde::Deserialize)]
struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/messages?user=alice&limit=20`: the latest messages sent to a user.
#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    params(
        ("user" = String, Query, description = "User id"),
        ("limit" = Option<usize>, Query, description = "1-100, default 20", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "Newest first", body = herald_common::api::MessageList),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
async fn list_messages(
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
    let items = state.store.messages_for_user(&user, limit).await?;
    Ok(axum::Json(herald_common::api::MessageList { items }).into_response())
}

/// `GET /v1/stats`: this dispatcher's counters and the live sessions on every gateway.
#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    responses(
        (status = 200, description = "Counters", body = herald_common::api::Stats),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
async fn stats(State(state): St) -> Result<Response, ApiError> {
    let sessions = state
        .presence
        .total_sessions()
        .await
        .map_err(|e| ApiError::unavailable(format!("session count unavailable: {e}")))?;
    Ok(axum::Json(state.pipeline.stats().snapshot(sessions)).into_response())
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
async fn mint_token(
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
