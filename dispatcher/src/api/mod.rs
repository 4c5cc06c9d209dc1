//! The HTTP API (SPEC §3, §7): one file per resource — `messages` (sends, topics, dead
//! letters), `users` (profiles, presence), `devices` (push devices, `/v1/me/devices`, the
//! Web Push key), `operations` (stats, tokens). Every `/v1` route needs `Authorization:
//! Bearer <api key>` except `/v1/me/…` (the client's own JWT) and `/v1/webpush/key`; every
//! error is JSON.

mod cors;
mod devices;
mod inbox;
mod keys;
mod messages;
mod operations;
mod templates;
mod unsubscribe;
mod users;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use herald_common::api::{ErrorCode, MAX_BODY_BYTES};
use herald_common::auth::{ApiKeys, Scope, TokenVerifier};
use herald_common::ids::validate_user_id;
use herald_common::subjects::Subjects;
use herald_engine::{Bus, Devices, History, Store};
use serde::de::DeserializeOwned;

use crate::channels::providers::Registry;
use crate::error::ApiError;
use crate::ordering::OrderLocks;
use crate::pipeline::Pipeline;

use devices::*;
use inbox::*;
use keys::*;
use messages::*;
use operations::*;
use templates::*;
use users::*;
use webhooks::*;

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
    /// Per API key name: `HERALD_API_RATE_LIMIT`, or the key's own rate.
    pub limiter: herald_common::ratelimit::KeyedLimiter<String>,
    pub presence: Arc<dyn PresenceSource>,
    pub topic_order: OrderLocks,
    /// Mints client tokens for `POST /v1/tokens` (when an HS256 secret is configured).
    pub minter: Option<herald_common::auth::TokenMinter>,
    pub public_ws_url: Option<String>,
    pub devices: Arc<dyn Devices>,
    pub max_devices: usize,
    /// Every provider's health, for `/v1/stats`.
    pub providers: Registry,
    /// The VAPID public key browsers subscribe with, when Web Push is configured.
    pub webpush_key: Option<String>,
    /// Checks client JWTs on `/v1/me/…` (when a secret or public key is configured).
    pub verifier: Option<TokenVerifier>,
    /// Browser origins allowed to call `/v1/me/…` (`*`: any).
    pub cors_origins: Vec<String>,
    /// Checks unsubscribe links (when a public URL is configured).
    pub unsubscribe: Option<crate::stages::unsubscribe::Unsubscribe>,
    pub hooks: Arc<crate::webhooks::Hooks>,
    pub inbox: Arc<crate::inbox::InboxService>,
    /// Keys created through `/v1/keys`.
    pub keys: Arc<crate::keys::DynamicKeys>,
}

pub(crate) type St = State<Arc<ApiState>>;

/// The API description served at `/openapi.json`, generated from the handlers above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Herald", description = "One API to reach users in the app, by email and by SMS."),
    paths(send_message, list_messages, get_message, publish_topic, put_user, get_user, delete_user, presence, dead_letters, stats, mint_token,
        put_device, list_devices, delete_device, put_my_device, list_my_devices, delete_my_device, webpush_key,
        cancel_message, cancel_by_key, put_template, get_template, delete_template, list_templates, preview_template,
        create_webhook, list_webhooks, get_webhook, delete_webhook, enable_webhook, webhook_deliveries,
        user_inbox, user_inbox_read, user_inbox_archive, my_inbox, my_inbox_read, my_inbox_archive,
        create_key, list_keys, delete_key),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Every API-key route may answer 403: the key lacks the route's scope.
            let api_key = !(path.starts_with("/v1/me/") || path == "/v1/webpush/key");
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if api_key {
                    op.responses.responses.entry("403".into()).or_insert_with(|| {
                        utoipa::openapi::ResponseBuilder::new()
                            .description("The API key lacks the scope this route needs (send, read or admin)")
                            .content(
                                "application/json",
                                utoipa::openapi::ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
                }
                // Path parameters say what the handlers accept, so generated clients check
                // it too.
                for p in op.parameters.iter_mut().flatten() {
                    let utoipa::openapi::RefOr::T(p) = p else {
                        continue;
                    };
                    if p.parameter_in != utoipa::openapi::path::ParameterIn::Path {
                        continue;
                    }
                    if let Some(schema) = path_param_schema(path, &p.name) {
                        p.schema = Some(schema.into());
                    }
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "client_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A client token (the user's own JWT), as for /ws"))
                    .build(),
            ),
        );
    }
}

/// The pattern of a path parameter, by route and name.
fn path_param_schema(path: &str, name: &str) -> Option<utoipa::openapi::schema::Object> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let (pattern, max) = match name {
        "name" if path.starts_with("/v1/templates/") => ("^[A-Za-z0-9._-]+$", 128),
        "name" if path.starts_with("/v1/keys/") => ("^[A-Za-z0-9_-]+$", 64),
        "device_id" => ("^[A-Za-z0-9.:_-]+$", 128),
        "topic" => ("^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$", 128),
        "id" if path.starts_with("/v1/webhooks/") => ("^wh_[A-Za-z0-9]+$", 64),
        // A user id: no whitespace or control characters.
        "id" if path.starts_with("/v1/users/") => ("^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$", 128),
        _ => return None,
    };
    Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .min_length(Some(1))
            .max_length(Some(max))
            .build(),
    )
}

pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    let Ok(mut doc) = serde_json::to_value(ApiDoc::openapi()) else {
        return String::new();
    };
    tighten(&mut doc);
    serde_json::to_string(&doc).unwrap_or_default()
}

/// Rules the derive cannot state, added to the generated document: "one of these fields,
/// not blank" as `anyOf`, and the shape of a user id wherever one is sent.
fn tighten(doc: &mut serde_json::Value) {
    use serde_json::json;
    let present = |field: &str| json!({"required": [field], "properties": {field: {"type": "string", "pattern": "\\S"}}});
    let schemas = &mut doc["components"]["schemas"];
    schemas["SendRequest"]["anyOf"] =
        json!([present("title"), present("body"), {"required": ["template"]}]);
    schemas["TopicPublish"]["anyOf"] = json!([
        present("title"),
        present("body"),
        {"required": ["data"], "properties": {"data": {"type": "object"}}}
    ]);
    let user_id = json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$"});
    if let Some(first) = schemas["RecipientSpec"]["oneOf"].get_mut(0) {
        *first = user_id.clone();
    }
    schemas["InlineRecipient"]["properties"]["user_id"] = user_id.clone();
    schemas["TokenRequest"]["properties"]["user"] = user_id.clone();
    schemas["TemplateSpec"]["properties"]["locales"]["minProperties"] = json!(1);
    // Time zones: the IANA names this build knows.
    let zones: Vec<String> = jiff::tz::db()
        .available()
        .map(|z| z.as_str().to_string())
        .collect();
    if !zones.is_empty() {
        schemas["TimeZone"] = json!({"type": "string", "enum": zones,
            "description": "An IANA time zone name, like Europe/Berlin"});
        if let Some(all) = schemas.as_object_mut() {
            for (_, schema) in all.iter_mut() {
                // `get_mut`, not indexing: indexing would add a null `properties`.
                if let Some(tz) = schema
                    .get_mut("properties")
                    .and_then(|p| p.get_mut("timezone"))
                {
                    *tz = json!({"anyOf": [{"$ref": "#/components/schemas/TimeZone"}, {"type": "null"}]});
                }
            }
        }
    }
    // Topic patterns a token may grant: names, `*` for one token, `>` for the rest.
    schemas["TokenRequest"]["properties"]["topics"]["items"] = json!({"type": "string",
        "minLength": 1, "maxLength": 128,
        "pattern": "^(([A-Za-z0-9_-]+|\\*)\\.)*([A-Za-z0-9_-]+|\\*|>)$"});
    // RFC 3339 as the server reads it (the calendar day and the horizon are checked there).
    schemas["SendRequest"]["properties"]["send_at"]["pattern"] = json!(concat!(
        "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]",
        "([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)([.][0-9]+)?",
        "([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
    ));
    schemas["TemplateSpec"]["properties"]["locales"]["propertyNames"] =
        schemas["TemplateSpec"]["properties"]["default_locale"].clone();
    schemas["DeviceRegistration"] = device_registration();
    // WeCom and Slack robots are not signed: their URL is the credential.
    let mut unsigned = schemas["RobotAddress"].clone();
    unsigned["properties"]["secret"] = json!({"type": "null"});
    unsigned["description"] =
        json!("A WeCom or Slack robot's webhook URL (it holds the token; nothing else signs).");
    schemas["UnsignedRobotAddress"] = unsigned;
    for robot in ["wecom", "slack"] {
        schemas["ChatAddresses"]["properties"][robot] = json!({"oneOf": [
            {"$ref": "#/components/schemas/UnsignedRobotAddress"}, {"type": "null"}]});
    }
    // The webhook channel signs with a Standard Webhooks secret: whsec_ + base64 of 24 to
    // 64 bytes (canonical base64: padding, and zero bits where the padding begins).
    let mut signed = schemas["RobotAddress"].clone();
    signed["properties"]["secret"] = json!({"anyOf": [{"type": "null"}, {"type": "string",
        "pattern": concat!("^whsec_(([A-Za-z0-9+/]{4}){8,20}([A-Za-z0-9+/][AQgw]==|",
            "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?|([A-Za-z0-9+/]{4}){21}([A-Za-z0-9+/][AQgw]==)?)$"),
        "writeOnly": true}]});
    signed["description"] =
        json!("A webhook endpoint and its Standard Webhooks signing secret (`whsec_…`).");
    schemas["SignedWebhookAddress"] = signed;
    schemas["ChatAddresses"]["properties"]["webhook"] = json!({"oneOf": [
        {"$ref": "#/components/schemas/SignedWebhookAddress"}, {"type": "null"}]});
    // Opt-outs: channel names, and per category (`"*"`: every channel).
    let channel = json!({"$ref": "#/components/schemas/ChannelKind"});
    let profile = &mut schemas["UserProfile"]["properties"];
    profile["preferences"]["propertyNames"] = channel.clone();
    profile["categories"] = json!({"type": "object",
        "description": profile["categories"]["description"].clone(),
        "propertyNames": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
        "additionalProperties": {"type": "object",
            "propertyNames": {"anyOf": [channel, {"const": "*"}]},
            "additionalProperties": {"type": "boolean"}}});
    // Inbox marks: ids, or (to mark read) all; archive takes ids only.
    let ids = json!({"type": "array", "minItems": 1, "maxItems": 100,
        "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}});
    schemas["InboxArchive"] = json!({"type": "object", "additionalProperties": false,
        "description": "`POST …/inbox/archive`: the ids to archive.",
        "required": ["ids"], "properties": {"ids": ids, "all": {"enum": [false, null]}}});
    schemas["InboxMark"] = json!({
    "description": "`POST …/inbox/read`: `{\"ids\":[…]}` or `{\"all\":true}`.",
    "oneOf": [
        {"$ref": "#/components/schemas/InboxArchive"},
        {"type": "object", "additionalProperties": false, "required": ["all"],
         "properties": {"all": {"const": true}, "ids": {"type": "null"}}}
    ]});
    for path in ["/v1/users/{id}/inbox/archive", "/v1/me/inbox/archive"] {
        doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"] =
            json!({"$ref": "#/components/schemas/InboxArchive"});
    }
    if let Some(params) = doc["paths"]["/v1/messages"]["get"]["parameters"].as_array_mut() {
        for p in params.iter_mut() {
            if p["name"] == "user" {
                p["schema"] = user_id.clone();
            } else if p["name"] == "sender" {
                p["schema"] = json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 1, "maxLength": 64});
            }
        }
    }
}

/// A device registration, one shape per platform: what each one takes and refuses.
fn device_registration() -> serde_json::Value {
    use serde_json::json;
    let shape = |platform: &str, required: &str, properties: serde_json::Value| {
        let mut all = json!({"platform": {"const": platform},
            "token": {"type": "null"}, "topic": {"type": "null"}, "subscription": {"type": "null"}});
        if let (Some(all), Some(given)) = (all.as_object_mut(), properties.as_object()) {
            all.extend(given.clone());
        }
        json!({"type": "object", "additionalProperties": false,
            "required": ["platform", required], "properties": all})
    };
    json!({
        "description": "`PUT /v1/users/{id}/devices/{device_id}` and `PUT /v1/me/devices/{device_id}`: an FCM registration token, an APNs device token in hex (with the app's bundle id as `topic`, default `HERALD_APNS_TOPIC`), or a browser's Web Push subscription.",
        "oneOf": [
            shape("fcm", "token", json!({"token": {"type": "string", "minLength": 1,
                "maxLength": 4096, "pattern": "^[A-Za-z0-9:_.-]+$"}})),
            shape("apns", "token", json!({
                "token": {"type": "string", "pattern": "^([0-9A-Fa-f]{2}){16,100}$"},
                "topic": {"anyOf": [{"type": "string", "pattern": "^[A-Za-z0-9.-]{1,255}$"}, {"type": "null"}]}})),
            shape("webpush", "subscription", json!({
                "subscription": {"$ref": "#/components/schemas/WebPushSubscription"}})),
        ]
    })
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
        .merge(me_router(Arc::clone(&state)))
        .merge(
            Router::new()
                .route(
                    "/v1/unsubscribe/{token}",
                    get(unsubscribe::unsubscribe_page).post(unsubscribe::unsubscribe),
                )
                .with_state(Arc::clone(&state)),
        )
        .merge(v1_router(state))
}

/// The routes an app calls with its own client token (and from a browser: CORS).
fn me_router(state: Arc<ApiState>) -> Router {
    // Every route takes OPTIONS itself: a preflight must reach the CORS layer, and the
    // server-wide 405 fallback (`ops::with_fallbacks`) would answer it otherwise.
    let preflight = || async { axum::http::StatusCode::NO_CONTENT };
    Router::new()
        .route("/v1/me/devices", get(list_my_devices).options(preflight))
        .route("/v1/me/inbox", get(my_inbox).options(preflight))
        .route("/v1/me/inbox/read", post(my_inbox_read).options(preflight))
        .route(
            "/v1/me/inbox/archive",
            post(my_inbox_archive).options(preflight),
        )
        .route(
            "/v1/me/devices/{device_id}",
            put(put_my_device)
                .delete(delete_my_device)
                .options(preflight),
        )
        .route("/v1/webpush/key", get(webpush_key).options(preflight))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            cors::cors,
        ))
        .with_state(state)
}

fn v1_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/messages", post(send_message).get(list_messages))
        .route("/v1/stats", get(stats))
        .route("/v1/tokens", post(mint_token))
        .route("/v1/messages/cancel", post(cancel_by_key))
        .route("/v1/messages/{id}", get(get_message).delete(cancel_message))
        .route("/v1/templates", get(list_templates))
        .route(
            "/v1/templates/{name}",
            put(put_template).get(get_template).delete(delete_template),
        )
        .route("/v1/templates/{name}/preview", post(preview_template))
        .route("/v1/topics/{topic}/messages", post(publish_topic))
        .route(
            "/v1/users/{id}",
            put(put_user).get(get_user).delete(delete_user),
        )
        .route("/v1/users/{id}/presence", get(presence))
        .route("/v1/users/{id}/inbox", get(user_inbox))
        .route("/v1/users/{id}/inbox/read", post(user_inbox_read))
        .route("/v1/users/{id}/inbox/archive", post(user_inbox_archive))
        .route("/v1/users/{id}/devices", get(list_devices))
        .route(
            "/v1/users/{id}/devices/{device_id}",
            put(put_device).delete(delete_device),
        )
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{name}", axum::routing::delete(delete_key))
        .route("/v1/webhooks", post(create_webhook).get(list_webhooks))
        .route("/v1/webhooks/{id}", get(get_webhook).delete(delete_webhook))
        .route("/v1/webhooks/{id}/enable", post(enable_webhook))
        .route("/v1/webhooks/{id}/deliveries", get(webhook_deliveries))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_key,
        ))
        .with_state(state)
}

/// The name of the API key a request came with: the message's `sender`.
#[derive(Debug, Clone)]
pub struct Sender(pub String);

/// The scope a route needs (SPEC §11): sending and cancelling is `send`; reading (and
/// previews) `read`; changing users, devices and templates, minting client tokens, and
/// anything about webhooks (their URLs may hold tokens), `admin`.
pub fn scope_of(method: &axum::http::Method, path: &str) -> Scope {
    use axum::http::Method;
    let sends = path == "/v1/messages"
        || path.starts_with("/v1/messages/")
        || (path.starts_with("/v1/topics/") && path.ends_with("/messages"));
    match (method, path) {
        (_, p) if p == "/v1/webhooks" || p.starts_with("/v1/webhooks/") => Scope::Admin,
        (_, p) if p == "/v1/keys" || p.starts_with("/v1/keys/") => Scope::Admin,
        (&Method::GET | &Method::HEAD, _) => Scope::Read,
        (_, p) if p.ends_with("/preview") => Scope::Read,
        // Marking a user's inbox read is what a backend serving its app's bell does.
        (&Method::POST, p) if p.starts_with("/v1/users/") && p.contains("/inbox/") => Scope::Read,
        (&Method::POST | &Method::DELETE, _) if sends => Scope::Send,
        _ => Scope::Admin,
    }
}

async fn require_api_key(State(state): St, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let found = presented.and_then(|k| {
        let k = k.trim();
        match state.api_keys.find(k) {
            Some(m) => Some((m.name, m.scopes, None, None)),
            None => state
                .keys
                .find(k)
                .map(|f| (f.name, f.scopes, f.daily_quota, f.rate_limit)),
        }
    });
    match (presented, found) {
        (Some(_), Some((name, scopes, quota, rate))) => {
            let need = scope_of(request.method(), request.uri().path());
            if !scopes.has(need) {
                return ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the API key '{name}' has the scopes {}; this route needs '{}'",
                        scopes.names().join("+"),
                        need.as_str()
                    ),
                )
                .into_response();
            }
            if let Err(wait) = state.limiter.check_at(&name, rate) {
                metrics::counter!("herald_api_rate_limited_total").increment(1);
                let mut e = ApiError::new(
                    ErrorCode::RateLimited,
                    format!("the API key '{name}' is over its rate limit; slow down"),
                );
                e.retry_after_s = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                return e.into_response();
            }
            if let Some(quota) = quota
                && need == Scope::Send
                && request.method() == axum::http::Method::POST
                && let Err(wait) = state.keys.take(&name, quota).await
            {
                metrics::counter!("herald_api_quota_exceeded_total").increment(1);
                let mut e = ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "the API key '{name}' used its daily quota of {quota} sends; it renews at 00:00 UTC"
                    ),
                );
                e.retry_after_s = Some(wait);
                return e.into_response();
            }
            request.extensions_mut().insert(Sender(name));
            next.run(request).await
        }
        (Some(_), None) => {
            ApiError::new(ErrorCode::Unauthorized, "API key not accepted").into_response()
        }
        (None, _) => ApiError::new(
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
        // The error names the field it is about ("platform: unknown variant…"), and an
        // array is no struct (strict_json).
        let value = crate::strict_json::parse(&bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
        Ok(JsonBody(value))
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

pub(crate) fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::invalid(format!("bad path: {e}")))
}

pub(crate) fn user_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let id = path_param(p)?;
    validate_user_id(&id).map_err(|e| ApiError::invalid(format!("user id: {e}")))?;
    Ok(id)
}
