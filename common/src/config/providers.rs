//! Several providers per channel (SPEC §7): `[[sms.providers]]`, `[[email.providers]]`,
//! `[[push.fcm]]`, `[[push.apns]]`, `[[push.webpush]]` in herald.toml, each with a `name` and
//! an optional `weight`; the single-provider env settings of SPEC §2 are the shorthand for a
//! list of one. Also `[[caps]]` (SPEC §9).
//!
//! Secrets may come from files: any `token`, `url` (SMTP URLs hold passwords) and key setting
//! has a `*_file` twin here, and `HERALD_*_FILE` in the environment.

use std::path::PathBuf;

use super::{ConfigError, Secret};

/// What every provider entry has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderName {
    /// Shown on attempts, metrics and `/v1/stats`: `[a-z0-9_-]`, 1–32 characters.
    pub name: String,
    /// Share of first tries among the providers of a channel (0: only when others fail).
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsKind {
    Generic,
    Twilio,
    Aliyun,
    Tencent,
}

impl SmsKind {
    pub fn parse(text: &str) -> Result<SmsKind, String> {
        match text {
            "generic" => Ok(SmsKind::Generic),
            "twilio" => Ok(SmsKind::Twilio),
            "aliyun" => Ok(SmsKind::Aliyun),
            "tencent" => Ok(SmsKind::Tencent),
            other => Err(format!(
                "'{other}' is not one of: generic, twilio, aliyun, tencent"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SmsKind::Generic => "generic",
            SmsKind::Twilio => "twilio",
            SmsKind::Aliyun => "aliyun",
            SmsKind::Tencent => "tencent",
        }
    }

    fn default_url(self) -> Option<&'static str> {
        match self {
            SmsKind::Aliyun => Some("https://dysmsapi.aliyuncs.com"),
            SmsKind::Tencent => Some("https://sms.tencentcloudapi.com"),
            SmsKind::Generic | SmsKind::Twilio => None,
        }
    }
}

/// One SMS provider. `account` and `token` are the provider's credential pair: Twilio's
/// account SID and auth token, Aliyun's AccessKey id and secret, Tencent's SecretId and
/// SecretKey; the generic provider's bearer token.
#[derive(Debug, Clone)]
pub struct SmsProviderConfig {
    pub id: ProviderName,
    pub kind: SmsKind,
    /// `None`: append to the outbox file instead of sending.
    pub url: Option<String>,
    pub token: Option<Secret>,
    pub account: Option<String>,
    pub from: Option<String>,
    /// Aliyun and Tencent send only approved templates: the sign (签名) and template ids,
    /// and the template parameter the text goes into (Aliyun: `content` by default).
    pub sign_name: Option<String>,
    pub template: Option<String>,
    pub param: String,
    /// Tencent: the SmsSdkAppId and the region.
    pub app_id: Option<String>,
    pub region: String,
}

/// One SMTP relay (or, with no URL, the outbox directory).
#[derive(Debug, Clone)]
pub struct EmailProviderConfig {
    pub id: ProviderName,
    pub url: Option<Secret>,
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub id: ProviderName,
    /// The service-account JSON (client_email, private_key, token_uri, project_id).
    pub credentials_file: PathBuf,
    /// API base; Herald appends `/v1/projects/{project_id}/messages:send`.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    pub id: ProviderName,
    /// Apple's `.p8` signing key (PKCS#8 P-256).
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    /// The bundle id, for devices registered without a topic.
    pub topic: Option<String>,
    /// API base; `http://` is HTTP/2 cleartext with prior knowledge.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct WebPushConfig {
    pub id: ProviderName,
    /// The VAPID key pair's private half (P-256 PEM).
    pub private_key_file: PathBuf,
    /// Who runs this server, for push services to reach (`mailto:` or `https:`).
    pub subject: String,
}

/// All push providers, by platform.
#[derive(Debug, Clone, Default)]
pub struct PushConfig {
    pub fcm: Vec<FcmConfig>,
    pub apns: Vec<ApnsConfig>,
    pub webpush: Vec<WebPushConfig>,
}

impl PushConfig {
    pub fn is_empty(&self) -> bool {
        self.fcm.is_empty() && self.apns.is_empty() && self.webpush.is_empty()
    }
}

/// A frequency cap: at most `per_user` messages of `category` per user per `window_s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapConfig {
    pub category: String,
    pub per_user: u32,
    pub window_s: u64,
}

/// The provider tables of a config file, before validation.
#[derive(Debug, Default)]
pub(super) struct FileProviders {
    pub sms: Option<Vec<toml::Table>>,
    pub email: Option<Vec<toml::Table>>,
    pub fcm: Option<Vec<toml::Table>>,
    pub apns: Option<Vec<toml::Table>>,
    pub webpush: Option<Vec<toml::Table>>,
    pub caps: Option<Vec<toml::Table>>,
}

fn tables(value: toml::Value, what: &str) -> Result<Vec<toml::Table>, ConfigError> {
    match value {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                toml::Value::Table(t) => Ok(t),
                _ => Err(ConfigError(format!(
                    "config file: every [[{what}]] entry must be a table"
                ))),
            })
            .collect(),
        _ => Err(ConfigError(format!(
            "config file: '{what}' must be an array of tables ([[{what}]])"
        ))),
    }
}

impl FileProviders {
    /// Takes the provider tables (`sms`, `email`, `push`, `caps`) out of a parsed file,
    /// leaving its flat settings.
    pub(super) fn take(table: &mut toml::Table) -> Result<FileProviders, ConfigError> {
        let mut out = FileProviders::default();
        let mut section = |name: &str| -> Result<Option<toml::Table>, ConfigError> {
            match table.remove(name) {
                None => Ok(None),
                Some(toml::Value::Table(t)) => Ok(Some(t)),
                Some(_) => Err(ConfigError(format!(
                    "config file: '{name}' must be a table ([{name}] or [[{name}.…]])"
                ))),
            }
        };
        let one = |mut t: toml::Table, outer: &str, key: &str| -> Result<_, ConfigError> {
            let found = t.remove(key).map(|v| tables(v, &format!("{outer}.{key}")));
            if let Some(k) = t.keys().next() {
                return Err(ConfigError(format!(
                    "config file: unknown setting '{outer}.{k}'"
                )));
            }
            found.transpose()
        };
        if let Some(t) = section("sms")? {
            out.sms = one(t, "sms", "providers")?;
        }
        if let Some(t) = section("email")? {
            out.email = one(t, "email", "providers")?;
        }
        if let Some(mut t) = section("push")? {
            out.fcm = t.remove("fcm").map(|v| tables(v, "push.fcm")).transpose()?;
            out.apns = t
                .remove("apns")
                .map(|v| tables(v, "push.apns"))
                .transpose()?;
            out.webpush = t
                .remove("webpush")
                .map(|v| tables(v, "push.webpush"))
                .transpose()?;
            if let Some(k) = t.keys().next() {
                return Err(ConfigError(format!(
                    "config file: unknown setting 'push.{k}'"
                )));
            }
        }
        if let Some(v) = table.remove("caps") {
            out.caps = Some(tables(v, "caps")?);
        }
        Ok(out)
    }
}

/// Reads one `[[…]]` entry's fields, each once; unknown fields are an error.
pub(super) struct Entry<'a> {
    what: String,
    table: toml::Table,
    read_file: &'a dyn Fn(&std::path::Path) -> Result<String, String>,
}

impl<'a> Entry<'a> {
    pub(super) fn new(
        what: String,
        table: toml::Table,
        read_file: &'a dyn Fn(&std::path::Path) -> Result<String, String>,
    ) -> Entry<'a> {
        Entry {
            what,
            table,
            read_file,
        }
    }

    fn err(&self, text: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("config file: {}: {text}", self.what))
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(self.err(format!("'{key}' must be a string"))),
        }
    }

    pub(super) fn required(&mut self, key: &str) -> Result<String, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.err(format!("'{key}' is required")))
    }

    /// A secret given inline (`key`) or in a file (`key_file`), not both.
    pub(super) fn secret(&mut self, key: &str) -> Result<Option<Secret>, ConfigError> {
        let inline = self.string(key)?;
        let file = self.string(&format!("{key}_file"))?;
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.err(format!("set '{key}' or '{key}_file', not both"))),
            (Some(v), None) => Ok(Some(Secret::new(v))),
            (None, Some(path)) => (self.read_file)(std::path::Path::new(&path))
                .map(|v| Some(Secret::new(v.trim_end_matches(['\r', '\n']))))
                .map_err(|e| self.err(format!("'{key}_file': {e}"))),
            (None, None) => Ok(None),
        }
    }

    pub(super) fn number(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.table.remove(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if i >= 0 => Ok(Some(i as u64)),
            Some(_) => Err(self.err(format!("'{key}' must be a whole number ≥ 0"))),
        }
    }

    /// `name` and `weight`.
    pub(super) fn id(&mut self) -> Result<ProviderName, ConfigError> {
        let name = self.required("name")?;
        validate_name(&name).map_err(|e| self.err(e))?;
        let weight = self.number("weight")?.unwrap_or(1).min(1000) as u32;
        self.what = format!("{} '{name}'", self.what);
        Ok(ProviderName { name, weight })
    }

    /// Fails on any field not read.
    pub(super) fn done(self) -> Result<(), ConfigError> {
        match self.table.keys().next() {
            Some(k) => Err(self.err(format!("unknown setting '{k}'"))),
            None => Ok(()),
        }
    }

    pub(super) fn url(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        let url = self.string(key)?;
        if let Some(u) = &url {
            check_http_url(u).map_err(|e| self.err(format!("'{key}': {e}")))?;
        }
        Ok(url.map(|u| u.trim_end_matches('/').to_string()))
    }
}

/// A provider name: `[a-z0-9_-]`, 1–32 characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "provider name '{name}' must be 1-32 characters of [a-z0-9_-]"
        ));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host.
/// Checks an http(s) URL as the API's schema states it (`^https?://` then a host, no
/// whitespace or control characters, at most 2048 characters).
pub fn check_http_url(url: &str) -> Result<(), String> {
    if url.chars().count() > 2048 {
        return Err("is over 2048 characters".into());
    }
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("holds whitespace or control characters".into());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with http:// or https://".to_string())?;
    // Not echoed: a robot's URL holds its token.
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host after the scheme".into());
    }
    Ok(())
}

/// Checks that names are unique within one channel.
pub(super) fn unique<'a>(
    what: &str,
    names: impl Iterator<Item = &'a ProviderName>,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n.name.as_str()) {
            return Err(ConfigError(format!(
                "{what}: two providers are named '{}'",
                n.name
            )));
        }
    }
    Ok(())
}

pub(super) fn sms_entry(mut e: Entry<'_>) -> Result<SmsProviderConfig, ConfigError> {
    let id = e.id()?;
    let kind = match e.string("kind")? {
        Some(k) => SmsKind::parse(&k).map_err(|m| e.err(format!("kind: {m}")))?,
        None => SmsKind::Generic,
    };
    let url = e.url("url")?.or(kind.default_url().map(str::to_string));
    let provider = SmsProviderConfig {
        id,
        kind,
        url,
        token: e.secret("token")?,
        account: e.string("account")?,
        from: e.string("from")?,
        sign_name: e.string("sign_name")?,
        template: e.string("template")?,
        param: e.string("param")?.unwrap_or_else(|| "content".into()),
        app_id: e.string("app_id")?,
        region: e.string("region")?.unwrap_or_else(|| "ap-guangzhou".into()),
    };
    provider.check().map_err(|m| e.err(m))?;
    e.done()?;
    Ok(provider)
}

impl SmsProviderConfig {
    /// The settings a kind cannot do without.
    pub fn check(&self) -> Result<(), String> {
        let need = |present: bool, what: &str| {
            if present {
                Ok(())
            } else {
                Err(format!("the {} provider needs {what}", self.kind.as_str()))
            }
        };
        if self.url.is_none() {
            return Ok(());
        }
        match self.kind {
            SmsKind::Generic => Ok(()),
            SmsKind::Twilio => need(
                self.account.is_some() && self.token.is_some() && self.from.is_some(),
                "account, token and from",
            ),
            SmsKind::Aliyun => need(
                self.account.is_some()
                    && self.token.is_some()
                    && self.sign_name.is_some()
                    && self.template.is_some(),
                "account (AccessKey id), token (AccessKey secret), sign_name and template",
            ),
            SmsKind::Tencent => need(
                self.account.is_some()
                    && self.token.is_some()
                    && self.app_id.is_some()
                    && self.sign_name.is_some()
                    && self.template.is_some(),
                "account (SecretId), token (SecretKey), app_id, sign_name and template",
            ),
        }
    }
}

pub(super) fn email_entry(
    mut e: Entry<'_>,
    default_from: &str,
) -> Result<EmailProviderConfig, ConfigError> {
    let id = e.id()?;
    let url = e.secret("url")?;
    if let Some(u) = &url {
        check_smtp_url(u.expose()).map_err(|m| e.err(format!("url: {m}")))?;
    }
    let from = e
        .string("from")?
        .unwrap_or_else(|| default_from.to_string());
    e.done()?;
    Ok(EmailProviderConfig { id, url, from })
}

/// `smtp://` or `smtps://`.
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    if url.starts_with("smtp://") || url.starts_with("smtps://") {
        Ok(())
    } else {
        Err("must start with smtp:// or smtps://".into())
    }
}

pub const FCM_URL: &str = "https://fcm.googleapis.com";
pub const APNS_URL: &str = "https://api.push.apple.com";

pub(super) fn fcm_entry(mut e: Entry<'_>) -> Result<FcmConfig, ConfigError> {
    let id = e.id()?;
    let credentials_file = PathBuf::from(e.required("credentials_file")?);
    let url = e.url("url")?.unwrap_or_else(|| FCM_URL.into());
    e.done()?;
    Ok(FcmConfig {
        id,
        credentials_file,
        url,
    })
}

pub(super) fn apns_entry(mut e: Entry<'_>) -> Result<ApnsConfig, ConfigError> {
    let id = e.id()?;
    let config = ApnsConfig {
        id,
        key_file: PathBuf::from(e.required("key_file")?),
        key_id: e.required("key_id")?,
        team_id: e.required("team_id")?,
        topic: e.string("topic")?,
        url: e.url("url")?.unwrap_or_else(|| APNS_URL.into()),
    };
    e.done()?;
    Ok(config)
}

pub(super) fn webpush_entry(mut e: Entry<'_>) -> Result<WebPushConfig, ConfigError> {
    let id = e.id()?;
    let config = WebPushConfig {
        id,
        private_key_file: PathBuf::from(e.required("private_key_file")?),
        subject: e.required("subject")?,
    };
    check_vapid_subject(&config.subject).map_err(|m| e.err(m))?;
    e.done()?;
    Ok(config)
}

/// A VAPID `sub`: a `mailto:` or `https:` contact (RFC 8292 §2.1).
pub fn check_vapid_subject(subject: &str) -> Result<(), String> {
    if subject.starts_with("mailto:") || subject.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "the VAPID subject '{subject}' must be a mailto: or https: contact"
        ))
    }
}

pub(super) fn cap_entry(mut e: Entry<'_>) -> Result<CapConfig, ConfigError> {
    let category = e.required("category")?;
    crate::api::validate_category(&category).map_err(|m| e.err(m))?;
    let per_user = e
        .number("per_user")?
        .filter(|n| *n > 0)
        .ok_or_else(|| e.err("'per_user' must be at least 1"))?;
    let window_s = e
        .number("window_s")?
        .filter(|n| *n > 0)
        .ok_or_else(|| e.err("'window_s' must be at least 1"))?;
    e.done()?;
    Ok(CapConfig {
        category,
        per_user: per_user.min(u32::MAX as u64) as u32,
        window_s,
    })
}
