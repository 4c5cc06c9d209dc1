//! Configuration: every setting is an environment variable (`ENV_*` below) and may also come
//! from a TOML file; precedence is flag, then environment, then file, then default.
//!
//! Loading parses and checks values and reads only the secret files it is pointed at
//! (`HERALD_*_FILE`, `*_file`); it never binds sockets. Role-specific requirements (secrets)
//! are checked by [`Config::validate`]. `main` turns any [`ConfigError`] into one line on
//! stderr and exit code 64. Provider lists (several per channel) are in [`providers`].

mod providers;

pub use providers::{
    APNS_URL, ApnsConfig, CapConfig, EmailProviderConfig, FCM_URL, FcmConfig, ProviderName,
    PushConfig, SmsKind, SmsProviderConfig, WebPushConfig, check_http_url, check_smtp_url,
    check_vapid_subject, validate_name,
};
use providers::{Entry, FileProviders};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::{ChannelKind, validate_channels};

pub const ENV_LISTEN: &str = "HERALD_LISTEN";
pub const ENV_API_LISTEN: &str = "HERALD_API_LISTEN";
pub const ENV_WS_LISTEN: &str = "HERALD_WS_LISTEN";
pub const ENV_API_KEYS: &str = "HERALD_API_KEYS";
pub const ENV_JWT_SECRET: &str = "HERALD_JWT_SECRET";
pub const ENV_JWT_PUBLIC_KEY: &str = "HERALD_JWT_PUBLIC_KEY";
pub const ENV_JWT_ISSUER: &str = "HERALD_JWT_ISSUER";
pub const ENV_JWT_AUDIENCE: &str = "HERALD_JWT_AUDIENCE";
pub const ENV_DATA_DIR: &str = "HERALD_DATA_DIR";
pub const ENV_NATS_URL: &str = "HERALD_NATS_URL";
pub const ENV_NATS_PREFIX: &str = "HERALD_NATS_PREFIX";
pub const ENV_SMTP_URL: &str = "HERALD_SMTP_URL";
pub const ENV_SMTP_FROM: &str = "HERALD_SMTP_FROM";
pub const ENV_SMS_PROVIDER: &str = "HERALD_SMS_PROVIDER";
pub const ENV_SMS_URL: &str = "HERALD_SMS_URL";
pub const ENV_SMS_TOKEN: &str = "HERALD_SMS_TOKEN";
pub const ENV_SMS_ACCOUNT: &str = "HERALD_SMS_ACCOUNT";
pub const ENV_SMS_FROM: &str = "HERALD_SMS_FROM";
pub const ENV_DEFAULT_CHANNELS: &str = "HERALD_DEFAULT_CHANNELS";
pub const ENV_ACK_TIMEOUT_MS: &str = "HERALD_ACK_TIMEOUT_MS";
// Extensions beyond SPEC §2, documented in docs/configuration.md.
pub const ENV_HEARTBEAT_S: &str = "HERALD_HEARTBEAT_S";
pub const ENV_MAX_FRAME_BYTES: &str = "HERALD_MAX_FRAME_BYTES";
pub const ENV_SESSION_QUEUE_BYTES: &str = "HERALD_SESSION_QUEUE_BYTES";
pub const ENV_MAX_SESSIONS_PER_USER: &str = "HERALD_MAX_SESSIONS_PER_USER";
pub const ENV_RETRY_ATTEMPTS: &str = "HERALD_RETRY_ATTEMPTS";
pub const ENV_RETRY_BASE_MS: &str = "HERALD_RETRY_BASE_MS";
pub const ENV_RETRY_CAP_MS: &str = "HERALD_RETRY_CAP_MS";
pub const ENV_INBOX_LIMIT: &str = "HERALD_INBOX_LIMIT";
pub const ENV_TOPIC_HISTORY_LIMIT: &str = "HERALD_TOPIC_HISTORY_LIMIT";
pub const ENV_LANE_CONCURRENCY: &str = "HERALD_LANE_CONCURRENCY";
pub const ENV_SMTP_TIMEOUT_MS: &str = "HERALD_SMTP_TIMEOUT_MS";
pub const ENV_SMS_TIMEOUT_MS: &str = "HERALD_SMS_TIMEOUT_MS";
pub const ENV_DRAIN_S: &str = "HERALD_DRAIN_S";
pub const ENV_LOG_FORMAT: &str = "HERALD_LOG_FORMAT";
pub const ENV_API_RATE_LIMIT: &str = "HERALD_API_RATE_LIMIT";
pub const ENV_SQLITE_BUSY_MS: &str = "HERALD_SQLITE_BUSY_MS";
pub const ENV_NATS_REPLICAS: &str = "HERALD_NATS_REPLICAS";
pub const ENV_NATS_ACK_WAIT_S: &str = "HERALD_NATS_ACK_WAIT_S";
pub const ENV_INBOX_MAX_AGE_S: &str = "HERALD_INBOX_MAX_AGE_S";
pub const ENV_PRESENCE_LINGER_MS: &str = "HERALD_PRESENCE_LINGER_MS";
pub const ENV_ALERT_WEBHOOK: &str = "HERALD_ALERT_WEBHOOK";
pub const ENV_HEADER_TIMEOUT_S: &str = "HERALD_HEADER_TIMEOUT_S";
pub const ENV_CLIENT_FRAMES_PER_S: &str = "HERALD_CLIENT_FRAMES_PER_S";
pub const ENV_CONNECTS_PER_S: &str = "HERALD_CONNECTS_PER_S";
pub const ENV_MAX_TOPICS_PER_SESSION: &str = "HERALD_MAX_TOPICS_PER_SESSION";
pub const ENV_ALLOWED_ORIGINS: &str = "HERALD_ALLOWED_ORIGINS";
pub const ENV_PUBLIC_WS_URL: &str = "HERALD_PUBLIC_WS_URL";
pub const ENV_ALERT_ERROR_RATE: &str = "HERALD_ALERT_ERROR_RATE";
pub const ENV_ALERT_MIN_ATTEMPTS: &str = "HERALD_ALERT_MIN_ATTEMPTS";
pub const ENV_ALERT_WINDOW_S: &str = "HERALD_ALERT_WINDOW_S";
// SPEC §7: push providers, devices, outbound TLS.
pub const ENV_FCM_CREDENTIALS_FILE: &str = "HERALD_FCM_CREDENTIALS_FILE";
pub const ENV_FCM_URL: &str = "HERALD_FCM_URL";
pub const ENV_APNS_KEY_FILE: &str = "HERALD_APNS_KEY_FILE";
pub const ENV_APNS_KEY_ID: &str = "HERALD_APNS_KEY_ID";
pub const ENV_APNS_TEAM_ID: &str = "HERALD_APNS_TEAM_ID";
pub const ENV_APNS_TOPIC: &str = "HERALD_APNS_TOPIC";
pub const ENV_APNS_URL: &str = "HERALD_APNS_URL";
pub const ENV_VAPID_PRIVATE_KEY_FILE: &str = "HERALD_VAPID_PRIVATE_KEY_FILE";
pub const ENV_VAPID_SUBJECT: &str = "HERALD_VAPID_SUBJECT";
pub const ENV_TLS_CA_FILE: &str = "HERALD_TLS_CA_FILE";
pub const ENV_MAX_DEVICES_PER_USER: &str = "HERALD_MAX_DEVICES_PER_USER";
pub const ENV_PUSH_TIMEOUT_MS: &str = "HERALD_PUSH_TIMEOUT_MS";
pub const ENV_CHAT_TIMEOUT_MS: &str = "HERALD_CHAT_TIMEOUT_MS";
pub const ENV_CIRCUIT_FAILURES: &str = "HERALD_CIRCUIT_FAILURES";
pub const ENV_CIRCUIT_COOLDOWN_S: &str = "HERALD_CIRCUIT_COOLDOWN_S";
pub const ENV_CORS_ORIGINS: &str = "HERALD_CORS_ORIGINS";
// SPEC §9: preferences, quiet hours, unsubscribe links.
pub const ENV_CRITICAL_CATEGORIES: &str = "HERALD_CRITICAL_CATEGORIES";
pub const ENV_QUIET_HOURS: &str = "HERALD_QUIET_HOURS";
pub const ENV_DEFAULT_TIMEZONE: &str = "HERALD_DEFAULT_TIMEZONE";
pub const ENV_PUBLIC_URL: &str = "HERALD_PUBLIC_URL";
pub const ENV_UNSUBSCRIBE_SECRET: &str = "HERALD_UNSUBSCRIBE_SECRET";
// DKIM signing of outgoing mail (RFC 6376).
pub const ENV_DKIM_KEY_FILE: &str = "HERALD_DKIM_KEY_FILE";
pub const ENV_DKIM_SELECTOR: &str = "HERALD_DKIM_SELECTOR";
pub const ENV_DKIM_DOMAIN: &str = "HERALD_DKIM_DOMAIN";
pub const ENV_WEBHOOK_RETRY_SCHEDULE: &str = "HERALD_WEBHOOK_RETRY_SCHEDULE";
pub const ENV_WEBHOOK_TIMEOUT_MS: &str = "HERALD_WEBHOOK_TIMEOUT_MS";
pub const ENV_WEBHOOK_CONCURRENCY: &str = "HERALD_WEBHOOK_CONCURRENCY";
// Secrets from files: each names a file holding the setting without `_FILE`.
pub const ENV_API_KEYS_FILE: &str = "HERALD_API_KEYS_FILE";
pub const ENV_JWT_SECRET_FILE: &str = "HERALD_JWT_SECRET_FILE";
pub const ENV_SMTP_URL_FILE: &str = "HERALD_SMTP_URL_FILE";
pub const ENV_SMS_TOKEN_FILE: &str = "HERALD_SMS_TOKEN_FILE";

/// Settings that may instead be read from the file another setting names.
const FROM_FILES: &[(&str, &str)] = &[
    (ENV_API_KEYS, ENV_API_KEYS_FILE),
    (ENV_JWT_SECRET, ENV_JWT_SECRET_FILE),
    (ENV_SMTP_URL, ENV_SMTP_URL_FILE),
    (ENV_SMS_TOKEN, ENV_SMS_TOKEN_FILE),
];

/// Every setting: env name, default (None = unset).
const SETTINGS: &[(&str, Option<&str>)] = &[
    (ENV_LISTEN, Some("127.0.0.1:8080")),
    (ENV_API_LISTEN, Some("127.0.0.1:8080")),
    (ENV_WS_LISTEN, Some("127.0.0.1:8081")),
    (ENV_API_KEYS, None),
    (ENV_JWT_SECRET, None),
    (ENV_JWT_PUBLIC_KEY, None),
    (ENV_JWT_ISSUER, None),
    (ENV_JWT_AUDIENCE, None),
    (ENV_DATA_DIR, Some("./herald-data")),
    (ENV_NATS_URL, None),
    (ENV_NATS_PREFIX, Some("herald")),
    (ENV_SMTP_URL, None),
    (ENV_SMTP_FROM, Some("herald@localhost")),
    (ENV_SMS_PROVIDER, Some("generic")),
    (ENV_SMS_URL, None),
    (ENV_SMS_TOKEN, None),
    (ENV_SMS_ACCOUNT, None),
    (ENV_SMS_FROM, None),
    (ENV_DEFAULT_CHANNELS, Some("in_app,push,email,sms")),
    (ENV_ACK_TIMEOUT_MS, Some("3000")),
    (ENV_HEARTBEAT_S, Some("25")),
    (ENV_MAX_FRAME_BYTES, Some("65536")),
    (ENV_SESSION_QUEUE_BYTES, Some("262144")),
    (ENV_MAX_SESSIONS_PER_USER, Some("32")),
    (ENV_RETRY_ATTEMPTS, Some("5")),
    (ENV_RETRY_BASE_MS, Some("1000")),
    (ENV_RETRY_CAP_MS, Some("60000")),
    (ENV_INBOX_LIMIT, Some("1000")),
    (ENV_TOPIC_HISTORY_LIMIT, Some("1000")),
    (ENV_LANE_CONCURRENCY, Some("512")),
    (ENV_SMTP_TIMEOUT_MS, Some("30000")),
    (ENV_SMS_TIMEOUT_MS, Some("10000")),
    (ENV_DRAIN_S, Some("10")),
    (ENV_LOG_FORMAT, Some("text")),
    (ENV_API_RATE_LIMIT, Some("0")),
    (ENV_SQLITE_BUSY_MS, Some("5000")),
    (ENV_NATS_REPLICAS, Some("1")),
    (ENV_NATS_ACK_WAIT_S, Some("30")),
    (ENV_INBOX_MAX_AGE_S, Some("2592000")),
    (ENV_PRESENCE_LINGER_MS, Some("2000")),
    (ENV_ALERT_WEBHOOK, None),
    (ENV_HEADER_TIMEOUT_S, Some("10")),
    (ENV_CLIENT_FRAMES_PER_S, Some("50")),
    (ENV_CONNECTS_PER_S, Some("100")),
    (ENV_MAX_TOPICS_PER_SESSION, Some("256")),
    (ENV_ALLOWED_ORIGINS, None),
    (ENV_PUBLIC_WS_URL, None),
    (ENV_ALERT_ERROR_RATE, Some("0.5")),
    (ENV_ALERT_MIN_ATTEMPTS, Some("20")),
    (ENV_ALERT_WINDOW_S, Some("60")),
    (ENV_FCM_CREDENTIALS_FILE, None),
    (ENV_FCM_URL, Some(FCM_URL)),
    (ENV_APNS_KEY_FILE, None),
    (ENV_APNS_KEY_ID, None),
    (ENV_APNS_TEAM_ID, None),
    (ENV_APNS_TOPIC, None),
    (ENV_APNS_URL, Some(APNS_URL)),
    (ENV_VAPID_PRIVATE_KEY_FILE, None),
    (ENV_VAPID_SUBJECT, None),
    (ENV_TLS_CA_FILE, None),
    (ENV_MAX_DEVICES_PER_USER, Some("20")),
    (ENV_PUSH_TIMEOUT_MS, Some("10000")),
    (ENV_CHAT_TIMEOUT_MS, Some("10000")),
    (ENV_CIRCUIT_FAILURES, Some("5")),
    (ENV_CIRCUIT_COOLDOWN_S, Some("30")),
    (ENV_CORS_ORIGINS, None),
    (ENV_CRITICAL_CATEGORIES, None),
    (ENV_QUIET_HOURS, None),
    (ENV_DEFAULT_TIMEZONE, Some("UTC")),
    (ENV_PUBLIC_URL, None),
    (ENV_UNSUBSCRIBE_SECRET, None),
    (ENV_DKIM_KEY_FILE, None),
    (ENV_DKIM_SELECTOR, None),
    (ENV_DKIM_DOMAIN, None),
    (ENV_WEBHOOK_RETRY_SCHEDULE, Some("5s,5m,30m,2h,5h,10h,10h")),
    (ENV_WEBHOOK_TIMEOUT_MS, Some("10000")),
    (ENV_WEBHOOK_CONCURRENCY, Some("64")),
    (ENV_API_KEYS_FILE, None),
    (ENV_JWT_SECRET_FILE, None),
    (ENV_SMTP_URL_FILE, None),
    (ENV_SMS_TOKEN_FILE, None),
];

/// How status webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The wait before each retry; a delivery is given up (and its webhook disabled)
    /// after the last. The default adds up to 27 h 35 min.
    pub retry_schedule: Vec<Duration>,
    /// How long one POST may take.
    pub timeout: Duration,
    /// POSTs in flight per webhook per dispatcher.
    pub concurrency: usize,
}

/// A duration like `250ms`, `5s`, `30m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 250ms, 5s, 30m, 2h or 1d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "'{text}' is not a duration like 250ms, 5s, 30m, 2h or 1d"
            ));
        }
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// DKIM signing (RFC 6376): the private key (PEM, RSA), the selector its public key is
/// published under, and the signing domain (default: each relay's sender domain).
#[derive(Debug, Clone)]
pub struct DkimSettings {
    pub key_file: PathBuf,
    pub selector: String,
    pub domain: Option<String>,
}

/// A bad configuration, said in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// A string that never shows itself in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which process is starting; decides which settings are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Dispatcher,
    Gateway,
    Token,
}

/// When a provider's circuit opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct CircuitConfig {
    /// Transient failures in a row that open it.
    pub failures: u32,
    /// How long it stays open before one trial request (half-open).
    pub cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per channel for transient errors, including the first.
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 = the first retry): exponential from `base`,
    /// capped, with "equal jitter" (between half and all of it) so retries do not stampede.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let full = exp.min(self.cap);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub session_queue_bytes: usize,
    pub max_sessions_per_user: usize,
    pub max_topics_per_session: usize,
    /// Frames a client may send per second (burst: twice that); 0 = unlimited.
    pub client_frames_per_s: u32,
    /// WebSocket connects per second per source address (burst: twice); 0 = unlimited.
    pub connects_per_s: u32,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// Browser `Origin`s allowed to open a WebSocket; empty = any.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub ws_listen: SocketAddr,
    pub api_keys: Vec<Secret>,
    pub jwt_secret: Option<Secret>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Vec<String>,
    pub jwt_audience: Vec<String>,
    pub data_dir: PathBuf,
    pub nats_url: Option<String>,
    pub nats_prefix: String,
    /// The default sender of every email provider.
    pub smtp_from: String,
    pub smtp_timeout: Duration,
    /// Email providers in order (one at least: the outbox when none is set).
    pub email: Vec<EmailProviderConfig>,
    /// SMS providers in order (one at least: the outbox when none is set).
    pub sms: Vec<SmsProviderConfig>,
    pub sms_timeout: Duration,
    pub push: PushConfig,
    pub push_timeout: Duration,
    pub chat_timeout: Duration,
    pub circuit: CircuitConfig,
    /// Extra trusted roots for every outbound TLS connection (SMTP, providers).
    pub tls_ca_file: Option<PathBuf>,
    /// DKIM signing of every mail, when a key is configured.
    pub dkim: Option<DkimSettings>,
    pub webhooks: WebhookSettings,
    pub max_devices_per_user: usize,
    pub caps: Vec<CapConfig>,
    /// Browser origins allowed to call `/v1/me/…` with a client token (`*`: any).
    pub cors_origins: Vec<String>,
    /// Categories that ignore opt-outs and quiet hours.
    pub critical_categories: Vec<String>,
    /// Quiet hours for users whose profile sets none.
    pub quiet_hours: Option<crate::api::QuietHours>,
    /// The time zone of users whose profile names none (IANA).
    pub default_timezone: String,
    /// Where people reach this server from outside (unsubscribe links).
    pub public_url: Option<String>,
    /// Signs unsubscribe links (default: derived from the JWT secret).
    pub unsubscribe_secret: Option<Secret>,
    pub default_channels: Vec<ChannelKind>,
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub inbox_limit: u64,
    pub topic_history_limit: u64,
    pub lane_concurrency: usize,
    pub drain: Duration,
    pub log_format: LogFormat,
    /// API requests per second per key (burst: twice that); 0 = unlimited.
    pub api_rate_limit: u32,
    /// How long a SQLite write waits for a lock held by another process.
    pub sqlite_busy: Duration,
    /// Cluster engine: replicas of every stream and bucket (3 on a 3-node NATS cluster).
    pub nats_replicas: usize,
    /// Cluster engine: how long a dispatcher may hold a job silently before another takes it.
    pub nats_ack_wait: Duration,
    /// Cluster engine: how long inbox entries are kept at most.
    pub inbox_max_age: Duration,
    /// Cluster engine: how long a gateway keeps a user's bus interest after the last session.
    pub presence_linger: Duration,
    pub alerts: AlertConfig,
    /// Where clients reach the gateways (told to the console and `POST /v1/tokens`).
    pub public_ws_url: Option<String>,
}

/// The platform's own alerts: where they go and when a channel counts as failing.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Where alerts are POSTed as JSON (unset: only the metric and the log).
    pub webhook: Option<String>,
    /// Share of a channel's attempts that may fail, in the window, before an alert.
    pub error_rate: f64,
    /// Attempts the window needs before its rate counts.
    pub min_attempts: u32,
    pub window: Duration,
}

/// Raw settings gathered from the layers, keyed by env name.
struct Raw(BTreeMap<&'static str, String>);

impl Raw {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn req(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError(format!("{key} must be set")))
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.req(key)?;
        v.trim()
            .parse()
            .map_err(|e| ConfigError(format!("{key}='{v}' is not {what}: {e}")))
    }

    fn positive(&self, key: &str) -> Result<u64, ConfigError> {
        let n: u64 = self.parse(key, "a positive integer")?;
        if n == 0 {
            return Err(ConfigError(format!("{key} must be at least 1")));
        }
        Ok(n)
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// File keys are env names without `HERALD_`, lower-case: `listen`, `api_keys`, `smtp_url`.
fn file_key(env: &str) -> String {
    env.trim_start_matches("HERALD_").to_ascii_lowercase()
}

/// A config file: its flat settings (keyed by env name) and its provider tables.
fn file_settings(
    text: &str,
) -> Result<(BTreeMap<&'static str, String>, FileProviders), ConfigError> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))?;
    let providers = FileProviders::take(&mut table)?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let Some((env, _)) = SETTINGS.iter().find(|(env, _)| file_key(env) == key) else {
            return Err(ConfigError(format!("config file: unknown setting '{key}'")));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<Vec<_>, ConfigError>>()?
                .join(","),
            other => {
                return Err(ConfigError(format!(
                    "config file: '{key}' has an unsupported value {other}"
                )));
            }
        };
        out.insert(*env, text);
    }
    Ok((out, providers))
}

/// Reads a secret file for [`Config::load`].
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

type ReadFile<'a> = &'a dyn Fn(&std::path::Path) -> Result<String, String>;

impl Config {
    /// Builds the configuration from defaults, a TOML file's text, the environment (looked up
    /// through `env`) and command-line `flags` (env name → value), in rising precedence.
    /// Secret files are read from disk.
    pub fn load(
        file_text: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&'static str, String)],
    ) -> Result<Config, ConfigError> {
        Self::load_with(file_text, env, flags, &read_secret_file)
    }

    /// [`Config::load`], reading secret files through `read_file`.
    pub fn load_with(
        file_text: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&'static str, String)],
        read_file: ReadFile<'_>,
    ) -> Result<Config, ConfigError> {
        let mut raw = BTreeMap::new();
        for (key, default) in SETTINGS {
            if let Some(d) = default {
                raw.insert(*key, d.to_string());
            }
        }
        let mut file_providers = FileProviders::default();
        let mut from_env = BTreeSet::new();
        if let Some(text) = file_text {
            let (flat, providers) = file_settings(text)?;
            raw.extend(flat);
            file_providers = providers;
        }
        for (key, _) in SETTINGS {
            if let Some(v) = env(key) {
                raw.insert(*key, v);
                from_env.insert(*key);
            }
        }
        for (key, value) in flags {
            raw.insert(key, value.clone());
            from_env.insert(*key);
        }
        for (setting, file_setting) in FROM_FILES {
            let Some(path) = raw.get(file_setting).filter(|p| !p.trim().is_empty()) else {
                continue;
            };
            if raw.get(setting).is_some_and(|v| !v.trim().is_empty()) {
                return Err(ConfigError(format!(
                    "set {setting} or {file_setting}, not both"
                )));
            }
            let text = read_file(std::path::Path::new(path.trim()))
                .map_err(|e| ConfigError(format!("{file_setting}: {e}")))?;
            raw.insert(setting, text.trim_end_matches(['\r', '\n']).to_string());
        }
        let raw = Raw(raw);
        let mut config = Self::from_raw(&raw)?;
        config.providers_from(&raw, file_providers, &from_env, read_file)?;
        Ok(config)
    }

    /// The provider lists: the file's arrays, or the env shorthand for one provider (the
    /// environment wins where both are given).
    fn providers_from(
        &mut self,
        raw: &Raw,
        file: FileProviders,
        from_env: &BTreeSet<&'static str>,
        read_file: ReadFile<'_>,
    ) -> Result<(), ConfigError> {
        let entries = |list: Option<Vec<toml::Table>>, what: &'static str| {
            list.unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(move |(i, t)| Entry::new(format!("[[{what}]] #{}", i + 1), t, read_file))
        };
        let env_says = |keys: &[&str]| keys.iter().any(|k| from_env.contains(k));
        let one = |name: &str| ProviderName {
            name: name.into(),
            weight: 1,
        };

        // SMS.
        if file.sms.is_some() && !env_says(&[ENV_SMS_URL]) {
            if raw.get(ENV_SMS_URL).is_some() {
                return Err(ConfigError(
                    "config file: use [[sms.providers]] or sms_url, not both".into(),
                ));
            }
            self.sms = entries(file.sms, "sms.providers")
                .map(providers::sms_entry)
                .collect::<Result<_, _>>()?;
        } else {
            let kind = SmsKind::parse(raw.req(ENV_SMS_PROVIDER)?).map_err(|e| {
                ConfigError(format!(
                    "{ENV_SMS_PROVIDER}='{}' {e}",
                    raw.get(ENV_SMS_PROVIDER).unwrap_or("")
                ))
            })?;
            let shorthand = SmsProviderConfig {
                id: one("sms"),
                kind,
                url: raw
                    .get(ENV_SMS_URL)
                    .map(|u| u.trim_end_matches('/').to_string()),
                token: raw.get(ENV_SMS_TOKEN).map(Secret::new),
                account: raw.get(ENV_SMS_ACCOUNT).map(str::to_string),
                from: raw.get(ENV_SMS_FROM).map(str::to_string),
                sign_name: None,
                template: None,
                param: "content".into(),
                app_id: None,
                region: "ap-guangzhou".into(),
            };
            if let Some(url) = &shorthand.url {
                check_http_url(url).map_err(|e| ConfigError(format!("{ENV_SMS_URL} {e}")))?;
            }
            if matches!(kind, SmsKind::Aliyun | SmsKind::Tencent) {
                return Err(ConfigError(format!(
                    "{ENV_SMS_PROVIDER}={}: template providers need [[sms.providers]] in herald.toml (sign_name, template)",
                    kind.as_str()
                )));
            }
            shorthand.check().map_err(|e| {
                ConfigError(format!(
                    "{e} ({ENV_SMS_ACCOUNT}, {ENV_SMS_TOKEN}, {ENV_SMS_FROM})"
                ))
            })?;
            self.sms = vec![shorthand];
        }
        providers::unique("[[sms.providers]]", self.sms.iter().map(|p| &p.id))?;

        // Email.
        if file.email.is_some() && !env_says(&[ENV_SMTP_URL]) {
            if raw.get(ENV_SMTP_URL).is_some() {
                return Err(ConfigError(
                    "config file: use [[email.providers]] or smtp_url, not both".into(),
                ));
            }
            let from = self.smtp_from.clone();
            self.email = entries(file.email, "email.providers")
                .map(|e| providers::email_entry(e, &from))
                .collect::<Result<_, _>>()?;
        } else {
            let url = raw.get(ENV_SMTP_URL).map(Secret::new);
            if let Some(u) = &url {
                check_smtp_url(u.expose())
                    .map_err(|e| ConfigError(format!("{ENV_SMTP_URL} {e}")))?;
            }
            self.email = vec![EmailProviderConfig {
                id: one("smtp"),
                url,
                from: self.smtp_from.clone(),
            }];
        }
        providers::unique("[[email.providers]]", self.email.iter().map(|p| &p.id))?;

        // Push.
        let api_base = |key: &str| -> Result<String, ConfigError> {
            let url = raw.req(key)?.trim_end_matches('/').to_string();
            check_http_url(&url).map_err(|e| ConfigError(format!("{key} {e}")))?;
            Ok(url)
        };
        self.push.fcm = match raw.get(ENV_FCM_CREDENTIALS_FILE) {
            Some(path) if file.fcm.is_none() || env_says(&[ENV_FCM_CREDENTIALS_FILE]) => {
                vec![FcmConfig {
                    id: one("fcm"),
                    credentials_file: PathBuf::from(path),
                    url: api_base(ENV_FCM_URL)?,
                }]
            }
            _ => entries(file.fcm, "push.fcm")
                .map(providers::fcm_entry)
                .collect::<Result<_, _>>()?,
        };
        self.push.apns = match raw.get(ENV_APNS_KEY_FILE) {
            Some(path) if file.apns.is_none() || env_says(&[ENV_APNS_KEY_FILE]) => {
                let need = |k: &str| {
                    raw.get(k).map(str::to_string).ok_or_else(|| {
                        ConfigError(format!(
                            "{ENV_APNS_KEY_FILE} needs {ENV_APNS_KEY_ID} and {ENV_APNS_TEAM_ID} too ({k} is not set)"
                        ))
                    })
                };
                vec![ApnsConfig {
                    id: one("apns"),
                    key_file: PathBuf::from(path),
                    key_id: need(ENV_APNS_KEY_ID)?,
                    team_id: need(ENV_APNS_TEAM_ID)?,
                    topic: raw.get(ENV_APNS_TOPIC).map(str::to_string),
                    url: api_base(ENV_APNS_URL)?,
                }]
            }
            _ => entries(file.apns, "push.apns")
                .map(providers::apns_entry)
                .collect::<Result<_, _>>()?,
        };
        self.push.webpush = match raw.get(ENV_VAPID_PRIVATE_KEY_FILE) {
            Some(path) if file.webpush.is_none() || env_says(&[ENV_VAPID_PRIVATE_KEY_FILE]) => {
                let subject = raw.get(ENV_VAPID_SUBJECT).ok_or_else(|| {
                    ConfigError(format!(
                        "{ENV_VAPID_PRIVATE_KEY_FILE} needs {ENV_VAPID_SUBJECT} (mailto:you@example.com)"
                    ))
                })?;
                check_vapid_subject(subject)
                    .map_err(|e| ConfigError(format!("{ENV_VAPID_SUBJECT}: {e}")))?;
                vec![WebPushConfig {
                    id: one("webpush"),
                    private_key_file: PathBuf::from(path),
                    subject: subject.to_string(),
                }]
            }
            _ => entries(file.webpush, "push.webpush")
                .map(providers::webpush_entry)
                .collect::<Result<_, _>>()?,
        };
        providers::unique("[[push.fcm]]", self.push.fcm.iter().map(|p| &p.id))?;
        providers::unique("[[push.apns]]", self.push.apns.iter().map(|p| &p.id))?;
        providers::unique("[[push.webpush]]", self.push.webpush.iter().map(|p| &p.id))?;

        self.caps = entries(file.caps, "caps")
            .map(providers::cap_entry)
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn from_raw(raw: &Raw) -> Result<Config, ConfigError> {
        let addr = |key| raw.parse::<SocketAddr>(key, "a socket address like 127.0.0.1:8080");
        let default_channels: Vec<ChannelKind> = raw
            .list(ENV_DEFAULT_CHANNELS)
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| ConfigError(format!("{ENV_DEFAULT_CHANNELS}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        validate_channels(&default_channels)
            .map_err(|e| ConfigError(format!("{ENV_DEFAULT_CHANNELS}: {e}")))?;
        let log_format = match raw.req(ENV_LOG_FORMAT)? {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError(format!(
                    "{ENV_LOG_FORMAT}='{other}' is not one of: text, json"
                )));
            }
        };
        let prefix = raw.req(ENV_NATS_PREFIX)?.to_string();
        crate::topic::validate_topic(&prefix)
            .map_err(|e| ConfigError(format!("{ENV_NATS_PREFIX}='{prefix}': {e}")))?;
        let ms = |key| raw.positive(key).map(Duration::from_millis);
        let retry = RetryPolicy {
            attempts: raw.positive(ENV_RETRY_ATTEMPTS)?.min(100) as u32,
            base: ms(ENV_RETRY_BASE_MS)?,
            cap: ms(ENV_RETRY_CAP_MS)?,
        };
        let ack_ms = raw.positive(ENV_ACK_TIMEOUT_MS)?;
        if ack_ms > crate::api::MAX_ACK_TIMEOUT_MS {
            return Err(ConfigError(format!(
                "{ENV_ACK_TIMEOUT_MS} must be at most {}",
                crate::api::MAX_ACK_TIMEOUT_MS
            )));
        }
        let max_frame_bytes = raw.positive(ENV_MAX_FRAME_BYTES)? as usize;
        if max_frame_bytes < 256 {
            return Err(ConfigError(format!(
                "{ENV_MAX_FRAME_BYTES} must be at least 256"
            )));
        }
        Ok(Config {
            listen: addr(ENV_LISTEN)?,
            api_listen: addr(ENV_API_LISTEN)?,
            ws_listen: addr(ENV_WS_LISTEN)?,
            api_keys: raw.list(ENV_API_KEYS).into_iter().map(Secret).collect(),
            jwt_secret: raw.get(ENV_JWT_SECRET).map(Secret::new),
            jwt_public_key: raw.get(ENV_JWT_PUBLIC_KEY).map(PathBuf::from),
            jwt_issuer: raw.list(ENV_JWT_ISSUER),
            jwt_audience: raw.list(ENV_JWT_AUDIENCE),
            data_dir: PathBuf::from(raw.req(ENV_DATA_DIR)?),
            nats_url: raw.get(ENV_NATS_URL).map(str::to_string),
            nats_prefix: prefix,
            smtp_from: raw.req(ENV_SMTP_FROM)?.to_string(),
            smtp_timeout: ms(ENV_SMTP_TIMEOUT_MS)?,
            // Filled in by `providers_from`.
            email: Vec::new(),
            sms: Vec::new(),
            sms_timeout: ms(ENV_SMS_TIMEOUT_MS)?,
            push: PushConfig::default(),
            push_timeout: ms(ENV_PUSH_TIMEOUT_MS)?,
            chat_timeout: ms(ENV_CHAT_TIMEOUT_MS)?,
            circuit: CircuitConfig {
                failures: raw.positive(ENV_CIRCUIT_FAILURES)?.min(1000) as u32,
                cooldown: Duration::from_secs(raw.positive(ENV_CIRCUIT_COOLDOWN_S)?),
            },
            tls_ca_file: raw.get(ENV_TLS_CA_FILE).map(PathBuf::from),
            max_devices_per_user: raw.positive(ENV_MAX_DEVICES_PER_USER)?.min(1000) as usize,
            caps: Vec::new(),
            critical_categories: {
                let list = raw.list(ENV_CRITICAL_CATEGORIES);
                for c in &list {
                    crate::api::validate_category(c)
                        .map_err(|e| ConfigError(format!("{ENV_CRITICAL_CATEGORIES}: {e}")))?;
                }
                list
            },
            quiet_hours: raw
                .get(ENV_QUIET_HOURS)
                .map(crate::api::QuietHours::parse_range)
                .transpose()
                .map_err(|e| ConfigError(format!("{ENV_QUIET_HOURS}: {e}")))?,
            default_timezone: {
                let tz = raw.req(ENV_DEFAULT_TIMEZONE)?.to_string();
                crate::api::validate_timezone(&tz)
                    .map_err(|e| ConfigError(format!("{ENV_DEFAULT_TIMEZONE}: {e}")))?;
                tz
            },
            public_url: match raw.get(ENV_PUBLIC_URL) {
                Some(u) => {
                    check_http_url(u).map_err(|e| ConfigError(format!("{ENV_PUBLIC_URL} {e}")))?;
                    Some(u.trim_end_matches('/').to_string())
                }
                None => None,
            },
            unsubscribe_secret: raw.get(ENV_UNSUBSCRIBE_SECRET).map(Secret::new),
            webhooks: WebhookSettings {
                retry_schedule: raw
                    .list(ENV_WEBHOOK_RETRY_SCHEDULE)
                    .iter()
                    .map(|d| parse_duration(d))
                    .collect::<Result<_, _>>()
                    .map_err(|e| ConfigError(format!("{ENV_WEBHOOK_RETRY_SCHEDULE}: {e}")))?,
                timeout: ms(ENV_WEBHOOK_TIMEOUT_MS)?,
                concurrency: raw.positive(ENV_WEBHOOK_CONCURRENCY)?.min(1024) as usize,
            },
            dkim: match (raw.get(ENV_DKIM_KEY_FILE), raw.get(ENV_DKIM_SELECTOR)) {
                (None, None) => None,
                (Some(key), Some(selector)) => {
                    let selector = selector.trim().to_string();
                    if selector.is_empty()
                        || !selector.split('.').all(|l| {
                            !l.is_empty()
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                    {
                        return Err(ConfigError(format!(
                            "{ENV_DKIM_SELECTOR}: '{selector}' is not a DNS label (letters, digits, '-', dots between)"
                        )));
                    }
                    Some(DkimSettings {
                        key_file: PathBuf::from(key),
                        selector,
                        domain: raw
                            .get(ENV_DKIM_DOMAIN)
                            .map(|d| d.trim().to_ascii_lowercase()),
                    })
                }
                (Some(_), None) => {
                    return Err(ConfigError(format!(
                        "{ENV_DKIM_KEY_FILE} needs {ENV_DKIM_SELECTOR} (the name the public key has in DNS: <selector>._domainkey.<domain>)"
                    )));
                }
                (None, Some(_)) => {
                    return Err(ConfigError(format!(
                        "{ENV_DKIM_SELECTOR} needs {ENV_DKIM_KEY_FILE}"
                    )));
                }
            },
            cors_origins: raw
                .list(ENV_CORS_ORIGINS)
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            default_channels,
            ack_timeout: Duration::from_millis(ack_ms),
            heartbeat: Duration::from_secs(raw.positive(ENV_HEARTBEAT_S)?),
            limits: Limits {
                max_frame_bytes,
                session_queue_bytes: raw.positive(ENV_SESSION_QUEUE_BYTES)? as usize,
                max_sessions_per_user: raw.positive(ENV_MAX_SESSIONS_PER_USER)? as usize,
                max_topics_per_session: raw.positive(ENV_MAX_TOPICS_PER_SESSION)? as usize,
                client_frames_per_s: raw.parse(ENV_CLIENT_FRAMES_PER_S, "frames per second")?,
                connects_per_s: raw.parse(ENV_CONNECTS_PER_S, "connects per second")?,
                header_timeout: Duration::from_secs(raw.positive(ENV_HEADER_TIMEOUT_S)?),
                allowed_origins: raw
                    .list(ENV_ALLOWED_ORIGINS)
                    .into_iter()
                    .map(|o| o.trim_end_matches('/').to_string())
                    .collect(),
            },
            retry,
            inbox_limit: raw.positive(ENV_INBOX_LIMIT)?,
            topic_history_limit: raw.positive(ENV_TOPIC_HISTORY_LIMIT)?,
            lane_concurrency: raw.positive(ENV_LANE_CONCURRENCY)? as usize,
            drain: Duration::from_secs(raw.parse(ENV_DRAIN_S, "a number of seconds")?),
            log_format,
            api_rate_limit: raw.parse(ENV_API_RATE_LIMIT, "a number of requests per second")?,
            sqlite_busy: ms(ENV_SQLITE_BUSY_MS)?,
            nats_replicas: raw.positive(ENV_NATS_REPLICAS)?.min(5) as usize,
            nats_ack_wait: Duration::from_secs(raw.positive(ENV_NATS_ACK_WAIT_S)?),
            inbox_max_age: Duration::from_secs(raw.positive(ENV_INBOX_MAX_AGE_S)?),
            presence_linger: Duration::from_millis(
                raw.parse(ENV_PRESENCE_LINGER_MS, "milliseconds")?,
            ),
            public_ws_url: raw.get(ENV_PUBLIC_WS_URL).map(str::to_string),
            alerts: AlertConfig {
                webhook: match raw.get(ENV_ALERT_WEBHOOK) {
                    Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                        Some(u.to_string())
                    }
                    Some(_) => {
                        return Err(ConfigError(format!(
                            "{ENV_ALERT_WEBHOOK} must start with http:// or https://"
                        )));
                    }
                    None => None,
                },
                error_rate: {
                    let r: f64 = raw.parse(ENV_ALERT_ERROR_RATE, "a fraction like 0.5")?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err(ConfigError(format!(
                            "{ENV_ALERT_ERROR_RATE} must be between 0 and 1"
                        )));
                    }
                    r
                },
                min_attempts: raw.positive(ENV_ALERT_MIN_ATTEMPTS)? as u32,
                window: Duration::from_secs(raw.positive(ENV_ALERT_WINDOW_S)?),
            },
        })
    }

    /// Checks what `role` needs: API keys for the API, a JWT key for the WebSocket side, and
    /// the provider settings that belong together.
    pub fn validate(&self, role: Role) -> Result<(), ConfigError> {
        let api = matches!(role, Role::Serve | Role::Dispatcher);
        let ws = matches!(role, Role::Serve | Role::Gateway);
        if api && self.api_keys.is_empty() {
            return Err(ConfigError(format!(
                "{ENV_API_KEYS} is required (comma-separated keys for Authorization: Bearer); use --dev to generate one"
            )));
        }
        if api {
            let entries: Vec<String> = self
                .api_keys
                .iter()
                .map(|k| k.expose().to_string())
                .collect();
            crate::auth::ApiKeys::parse(&entries)
                .map_err(|e| ConfigError(format!("{ENV_API_KEYS}: {e}")))?;
        }
        if (ws || role == Role::Token) && self.jwt_secret.is_none() && self.jwt_public_key.is_none()
        {
            return Err(ConfigError(format!(
                "{ENV_JWT_SECRET} (or {ENV_JWT_PUBLIC_KEY}) is required to check client tokens; use --dev to generate one"
            )));
        }
        if role == Role::Token && self.jwt_secret.is_none() {
            return Err(ConfigError(format!(
                "{ENV_JWT_SECRET} is required to mint tokens (a public key can only verify)"
            )));
        }
        if matches!(role, Role::Dispatcher | Role::Gateway) && self.nats_url.is_none() {
            return Err(ConfigError(format!(
                "{ENV_NATS_URL} is required for '{}' (the cluster engine); use 'herald serve' for one process",
                if role == Role::Gateway {
                    "gateway"
                } else {
                    "dispatcher"
                }
            )));
        }
        Ok(())
    }

    /// The directory where unsent mail and SMS are filed when no provider is set.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }
}

/// The names of all settings, for docs and `--help`.
pub fn setting_names() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::load(None, env_of(&[]), &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.ws_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(c.nats_prefix, "herald");
        assert_eq!(c.smtp_from, "herald@localhost");
        assert_eq!(
            c.default_channels,
            vec![
                ChannelKind::InApp,
                ChannelKind::Push,
                ChannelKind::Email,
                ChannelKind::Sms
            ]
        );
        assert_eq!(c.email.len(), 1, "the outbox when no SMTP is set");
        assert!(c.email[0].url.is_none());
        assert_eq!(c.sms[0].id.name, "sms");
        assert!(c.push.is_empty());
        assert_eq!(c.ack_timeout, Duration::from_millis(3000));
        assert_eq!(c.retry.attempts, 5);
        assert!(c.validate(Role::Serve).is_err());
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = "listen = \"127.0.0.1:1\"\nsmtp_from = \"file@x\"\nack_timeout_ms = 10\napi_keys = [\"a\", \"b\"]\n";
        let env = env_of(&[(ENV_LISTEN, "127.0.0.1:2"), (ENV_SMTP_FROM, "env@x")]);
        let c = Config::load(Some(file), env, &[(ENV_LISTEN, "127.0.0.1:3".into())]).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.smtp_from, "env@x");
        assert_eq!(c.ack_timeout, Duration::from_millis(10));
        assert_eq!(c.api_keys.len(), 2);
    }

    #[test]
    fn bad_values_are_one_clear_error() {
        let cases = [
            (ENV_LISTEN, "nope"),
            (ENV_DEFAULT_CHANNELS, "in_app,fax"),
            (ENV_DEFAULT_CHANNELS, "sms,sms"),
            (ENV_ACK_TIMEOUT_MS, "0"),
            (ENV_SMTP_URL, "http://x"),
            (ENV_SMS_PROVIDER, "carrier-pigeon"),
            (ENV_SMS_URL, "ftp://x"),
            (ENV_APNS_KEY_FILE, "/k.p8"),
            (ENV_QUIET_HOURS, "22:00"),
            (ENV_QUIET_HOURS, "25:00-08:00"),
            (ENV_DEFAULT_TIMEZONE, "Mars/Olympus"),
            (ENV_CRITICAL_CATEGORIES, "Security!"),
        ];
        for (k, v) in cases {
            let err = Config::load(None, env_of(&[(k, v)]), &[]).unwrap_err();
            assert!(err.0.contains(k), "{err}");
        }
        assert!(Config::load(Some("bogus = 1"), env_of(&[]), &[]).is_err());
    }

    #[test]
    fn roles_require_their_secrets() {
        let c = Config::load(None, env_of(&[(ENV_API_KEYS, "k")]), &[]).unwrap();
        assert!(
            c.validate(Role::Serve)
                .unwrap_err()
                .0
                .contains(ENV_JWT_SECRET)
        );
        let c = Config::load(
            None,
            env_of(&[(ENV_API_KEYS, "k"), (ENV_JWT_SECRET, "s")]),
            &[],
        )
        .unwrap();
        assert!(c.validate(Role::Serve).is_ok());
        assert!(
            c.validate(Role::Gateway)
                .unwrap_err()
                .0
                .contains(ENV_NATS_URL)
        );
        assert!(format!("{c:?}").contains("<redacted>"));
        assert!(!format!("{c:?}").contains("\"s\""));
    }

    fn files(list: &[(&str, &str)]) -> impl Fn(&Path) -> Result<String, String> {
        let map: BTreeMap<String, String> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |p: &Path| {
            map.get(p.to_str().unwrap_or(""))
                .cloned()
                .ok_or_else(|| format!("cannot read {}: not found", p.display()))
        }
    }

    #[test]
    fn provider_lists_come_from_the_file_and_secrets_from_files() {
        let file = r#"
smtp_from = "ops@example.com"
[[sms.providers]]
name = "primary"
kind = "twilio"
url = "https://api.twilio.com"
account = "AC1"
token_file = "/run/twilio"
from = "+15550001111"
weight = 3
[[sms.providers]]
name = "backup"
url = "https://sms.example.com/send"
token = "inline"
[[sms.providers]]
name = "aliyun"
kind = "aliyun"
account = "LTAI"
token = "s3cret"
sign_name = "Herald"
template = "SMS_1"
[[email.providers]]
name = "relay-a"
url_file = "/run/smtp-a"
[[email.providers]]
name = "relay-b"
url = "smtps://relay-b.example.com:465"
from = "b@example.com"
[[push.apns]]
name = "apns-key-1"
key_file = "/keys/AuthKey.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
topic = "com.example.app"
url = "http://127.0.0.1:9"
[[caps]]
category = "marketing"
per_user = 3
window_s = 86400
"#;
        let read = files(&[
            (
                "/run/twilio",
                "tw-token
",
            ),
            (
                "/run/smtp-a",
                "smtp://u:p@relay-a.example.com:587?tls=starttls
",
            ),
        ]);
        let c = Config::load_with(Some(file), env_of(&[]), &[], &read).unwrap();
        let names: Vec<&str> = c.sms.iter().map(|p| p.id.name.as_str()).collect();
        assert_eq!(names, ["primary", "backup", "aliyun"]);
        assert_eq!(c.sms[0].kind, SmsKind::Twilio);
        assert_eq!(c.sms[0].id.weight, 3);
        assert_eq!(c.sms[0].token.as_ref().unwrap().expose(), "tw-token");
        assert_eq!(
            c.sms[2].url.as_deref(),
            Some("https://dysmsapi.aliyuncs.com")
        );
        assert_eq!(
            c.email[0].url.as_ref().unwrap().expose(),
            "smtp://u:p@relay-a.example.com:587?tls=starttls"
        );
        assert_eq!(c.email[0].from, "ops@example.com");
        assert_eq!(c.email[1].from, "b@example.com");
        assert_eq!(c.push.apns[0].topic.as_deref(), Some("com.example.app"));
        assert_eq!(c.caps[0].per_user, 3);
        assert!(
            !format!("{c:?}").contains("tw-token"),
            "secrets stay redacted"
        );

        // The env shorthand replaces the file's list.
        let env = env_of(&[
            (ENV_SMS_URL, "https://one.example.com"),
            (ENV_SMS_TOKEN_FILE, "/run/one"),
        ]);
        let read = files(&[
            ("/run/twilio", "x"),
            ("/run/smtp-a", "smtp://a"),
            ("/run/one", "one-token"),
        ]);
        let c = Config::load_with(Some(file), env, &[], &read).unwrap();
        assert_eq!(c.sms.len(), 1);
        assert_eq!(c.sms[0].token.as_ref().unwrap().expose(), "one-token");
    }

    #[test]
    fn bad_provider_entries_are_named() {
        let cases = [
            (
                "[[sms.providers]]
name = \"A B\"
",
                "name",
            ),
            (
                "[[sms.providers]]
name = \"a\"
kind = \"pigeon\"
",
                "kind",
            ),
            (
                "[[sms.providers]]
name = \"a\"
kind = \"twilio\"
url = \"https://x\"
",
                "account",
            ),
            (
                "[[sms.providers]]
name = \"a\"
[[sms.providers]]
name = \"a\"
",
                "two providers",
            ),
            (
                "[[sms.providers]]
name = \"a\"
colour = 1
",
                "colour",
            ),
            (
                "[[sms.providers]]
name = \"a\"
token_file = \"/nope\"
",
                "/nope",
            ),
            (
                "[[email.providers]]
name = \"a\"
url = \"http://x\"
",
                "smtp://",
            ),
            (
                "[[push.webpush]]
name = \"w\"
private_key_file = \"k\"
subject = \"me\"
",
                "mailto",
            ),
            (
                "[[push.fax]]
name = \"f\"
",
                "push.fax",
            ),
            (
                "[[caps]]
category = \"Promo!\"
per_user = 1
window_s = 1
",
                "category",
            ),
            (
                "[[caps]]
category = \"promo\"
per_user = 0
window_s = 1
",
                "per_user",
            ),
        ];
        for (file, says) in cases {
            let err = Config::load_with(Some(file), env_of(&[]), &[], &files(&[])).unwrap_err();
            assert!(err.0.contains(says), "{file}: {err}");
        }
        let err = Config::load_with(
            None,
            env_of(&[(ENV_JWT_SECRET, "a"), (ENV_JWT_SECRET_FILE, "/x")]),
            &[],
            &files(&[]),
        )
        .unwrap_err();
        assert!(err.0.contains("not both"), "{err}");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let r = RetryPolicy {
            attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        assert_eq!(r.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(r.backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(r.backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(r.backoff(30, 1.0), Duration::from_secs(60));
    }
}
