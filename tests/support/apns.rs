//! A mock APNs: an HTTP/2-only server (cleartext, prior knowledge — what Herald speaks to an
//! `http://` APNs base) that checks what Apple checks: the path `/3/device/<token>`, the
//! provider token (ES256 JWT verified with the key's public half, `kid` = key id, `iss` =
//! team id, `iat` within the hour), `apns-topic`, `apns-push-type`, `apns-priority`, and an
//! `aps` payload; and answers with Apple's status codes and `{"reason"}` bodies.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub token: String,
    pub topic: Option<String>,
    pub push_type: Option<String>,
    pub priority: Option<String>,
    pub collapse_id: Option<String>,
    pub jwt: String,
    pub body: Value,
    /// Why Apple would refuse it, if it would.
    pub error: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// Per device token: answers to give instead of 200 (status, reason).
    scripts: HashMap<String, VecDeque<(u16, String)>>,
    connections: usize,
}

pub struct Apns {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

struct Check {
    key: jsonwebtoken::DecodingKey,
    key_id: String,
    team_id: String,
}

fn verify(check: &Check, req: &Request<Incoming>) -> Result<String, (u16, &'static str, String)> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let auth =
        h("authorization").ok_or((403, "MissingProviderToken", "no authorization".into()))?;
    let jwt = auth
        .strip_prefix("bearer ")
        .ok_or((
            403,
            "InvalidProviderToken",
            format!("not a bearer token: {auth}"),
        ))?
        .to_string();
    let header = jsonwebtoken::decode_header(&jwt)
        .map_err(|e| (403, "InvalidProviderToken", format!("header: {e}")))?;
    if header.alg != jsonwebtoken::Algorithm::ES256 || header.kid.as_deref() != Some(&check.key_id)
    {
        return Err((403, "InvalidProviderToken", format!("alg/kid: {header:?}")));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims = ["iss".to_string()].into_iter().collect();
    validation.validate_exp = false;
    validation.set_issuer(&[check.team_id.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(&jwt, &check.key, &validation)
        .map_err(|e| {
            (
                403,
                "InvalidProviderToken",
                format!("signature/claims: {e}"),
            )
        })?
        .claims;
    let iat = claims["iat"].as_i64().unwrap_or(0);
    let now = herald_common::time::now_ms() / 1000;
    if now - iat > 3600 || iat - now > 60 {
        return Err((
            403,
            "ExpiredProviderToken",
            format!("iat {iat} vs now {now}"),
        ));
    }
    if h("apns-topic").is_none() {
        return Err((400, "MissingTopic", "no apns-topic".into()));
    }
    if !matches!(h("apns-push-type"), Some("alert" | "background")) {
        return Err((400, "InvalidPushType", format!("{:?}", h("apns-push-type"))));
    }
    if !matches!(h("apns-priority"), Some("5" | "10") | None) {
        return Err((400, "BadPriority", format!("{:?}", h("apns-priority"))));
    }
    Ok(jwt)
}

async fn handle(
    check: Arc<Check>,
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let token = req
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .map(str::to_string);
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (topic, push_type, priority, collapse_id) = (
        h("apns-topic"),
        h("apns-push-type"),
        h("apns-priority"),
        h("apns-collapse-id"),
    );
    let verdict = match (&token, req.method() == hyper::Method::POST) {
        (Some(_), true) => verify(&check, &req),
        _ => Err((404, "BadPath", req.uri().path().to_string())),
    };
    let bytes = req.into_body().collect().await?.to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let verdict = verdict.and_then(|jwt| {
        if body.get("aps").is_some_and(Value::is_object) {
            Ok(jwt)
        } else {
            Err((400, "PayloadEmpty", "no aps object".into()))
        }
    });
    let token = token.unwrap_or_default();
    let (status, reason, error, jwt) = match verdict {
        Ok(jwt) => {
            let scripted = state
                .lock()
                .unwrap()
                .scripts
                .get_mut(&token)
                .and_then(VecDeque::pop_front);
            match scripted {
                Some((status, reason)) => (status, Some(reason), None, jwt),
                None => (200, None, None, jwt),
            }
        }
        Err((status, reason, why)) => (status, Some(reason.to_string()), Some(why), String::new()),
    };
    state.lock().unwrap().seen.push(Seen {
        token,
        topic,
        push_type,
        priority,
        collapse_id,
        jwt,
        body,
        error,
        status,
    });
    let mut response = Response::builder()
        .status(status)
        .header("apns-id", "00000000-0000-0000-0000-000000000001");
    let body = match reason {
        Some(r) if status != 200 => {
            response = response.header("content-type", "application/json");
            let mut b = json!({"reason": r});
            if status == 410 {
                b["timestamp"] = json!(herald_common::time::now_ms());
            }
            b.to_string()
        }
        _ => String::new(),
    };
    Ok(response.body(Full::new(Bytes::from(body))).unwrap())
}

impl Apns {
    /// Starts the mock; `public_key_pem` is the public half of the provider's `.p8` key.
    pub async fn start(public_key_pem: &str, key_id: &str, team_id: &str) -> Apns {
        let check = Arc::new(Check {
            key: jsonwebtoken::DecodingKey::from_ec_pem(public_key_pem.as_bytes())
                .expect("public key"),
            key_id: key_id.into(),
            team_id: team_id.into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.lock().unwrap().connections += 1;
                let (check, state) = (Arc::clone(&check), Arc::clone(&shared));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(Arc::clone(&check), Arc::clone(&state), req)
                    });
                    // HTTP/2 only: a client that does not speak it cannot get through.
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Apns { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues answers for a device token (e.g. `(410, "Unregistered")`).
    pub fn script(&self, token: &str, answers: &[(u16, &str)]) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .entry(token.to_string())
            .or_default()
            .extend(answers.iter().map(|(s, r)| (*s, r.to_string())));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// TCP connections Herald opened to it.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }
}

impl Drop for Apns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
