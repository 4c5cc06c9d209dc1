//! User profiles (SPEC §3, §7): contact addresses, preferences, chat robots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ChannelKind, validate_email, validate_phone};

/// `PUT/GET /v1/users/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$",
        max_length = 254
    )]
    pub email: Option<String>,
    /// E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^\+[0-9]{6,15}$")]
    pub phone: Option<String>,
    /// BCP 47: language, optional script and region (`de`, `zh-Hant-TW`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Channel name → allowed. A channel set to `false` is skipped as "opted out".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preferences: BTreeMap<String, bool>,
    /// Where the chat and webhook channels post for this user (or team).
    #[serde(default, skip_serializing_if = "ChatAddresses::is_empty")]
    pub chat: ChatAddresses,
    /// Per message category, per channel (or `"*"`: every channel): `false` opts out
    /// (SPEC §9). Critical categories ignore it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub categories: BTreeMap<String, BTreeMap<String, bool>>,
    /// When offline channels wait (in `timezone`; default `HERALD_QUIET_HOURS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// `{"start":"22:00","end":"08:00"}`: a daily window in the user's time zone; it may cross
/// midnight. `start` equal to `end` means none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: String,
}

impl QuietHours {
    /// Minutes after midnight of `HH:MM`.
    pub fn minutes(text: &str) -> Result<u32, String> {
        let bad = || format!("'{text}' is not a time like 22:00 (HH:MM, 24-hour)");
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(h * 60 + m)
    }

    /// `(start, end)` in minutes after midnight.
    pub fn window(&self) -> Result<(u32, u32), String> {
        Ok((Self::minutes(&self.start)?, Self::minutes(&self.end)?))
    }

    /// `22:00-08:00` (the form of `HERALD_QUIET_HOURS`).
    pub fn parse_range(text: &str) -> Result<QuietHours, String> {
        let (start, end) = text
            .split_once('-')
            .ok_or_else(|| format!("'{text}' is not a range like 22:00-08:00"))?;
        let q = QuietHours {
            start: start.trim().to_string(),
            end: end.trim().to_string(),
        };
        q.window()?;
        Ok(q)
    }
}

/// Checks an IANA time zone name (the bundled database knows it).
pub fn validate_timezone(tz: &str) -> Result<(), String> {
    jiff::tz::TimeZone::get(tz)
        .map(|_| ())
        .map_err(|_| format!("'{tz}' is not an IANA time zone like Europe/Berlin"))
}

/// The profile's `chat` object: one robot (or endpoint) per chat channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatAddresses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dingtalk: Option<RobotAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feishu: Option<RobotAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wecom: Option<RobotAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<RobotAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RobotAddress>,
}

/// A robot's webhook URL and signing secret. The URL holds the robot's token and the secret
/// signs: both are credentials. The secret is write-only (never returned; `has_secret` says
/// one is stored), and a `PUT` that leaves it out for the same URL keeps the stored one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RobotAddress {
    #[schema(
        pattern = r"^https?://[^/\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*$",
        max_length = 2048
    )]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(write_only, min_length = 1, max_length = 256)]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(read_only)]
    pub has_secret: bool,
}

impl ChatAddresses {
    pub fn is_empty(&self) -> bool {
        self.all().all(|(_, a)| a.is_none())
    }

    /// Each chat channel with its address, if any.
    fn all(&self) -> impl Iterator<Item = (ChannelKind, &Option<RobotAddress>)> {
        [
            (ChannelKind::Dingtalk, &self.dingtalk),
            (ChannelKind::Feishu, &self.feishu),
            (ChannelKind::Wecom, &self.wecom),
            (ChannelKind::Slack, &self.slack),
            (ChannelKind::Webhook, &self.webhook),
        ]
        .into_iter()
    }

    fn all_mut(&mut self) -> [(ChannelKind, &mut Option<RobotAddress>); 5] {
        [
            (ChannelKind::Dingtalk, &mut self.dingtalk),
            (ChannelKind::Feishu, &mut self.feishu),
            (ChannelKind::Wecom, &mut self.wecom),
            (ChannelKind::Slack, &mut self.slack),
            (ChannelKind::Webhook, &mut self.webhook),
        ]
    }

    /// The address for a chat channel.
    pub fn get(&self, channel: ChannelKind) -> Option<&RobotAddress> {
        self.all()
            .find(|(c, _)| *c == channel)
            .and_then(|(_, a)| a.as_ref())
    }

    fn validate(&self) -> Result<(), String> {
        for (channel, address) in self.all() {
            let Some(a) = address else { continue };
            if let Err(e) = crate::config::check_http_url(&a.url) {
                return Err(format!("chat.{channel}.url {e}"));
            }
            match (&a.secret, channel) {
                (Some(_), ChannelKind::Wecom | ChannelKind::Slack) => {
                    return Err(format!(
                        "chat.{channel}.secret: {channel} robots are not signed (the URL is the credential)"
                    ));
                }
                (Some(s), _) if s.is_empty() || s.chars().count() > 256 => {
                    return Err(format!("chat.{channel}.secret must be 1-256 characters"));
                }
                (Some(s), ChannelKind::Webhook) => {
                    crate::webhooks::decode_secret(s)
                        .map_err(|e| format!("chat.webhook.secret: {e}"))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl UserProfile {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(email) = &self.email {
            validate_email(email).map_err(|e| format!("email: {e}"))?;
        }
        if let Some(phone) = &self.phone {
            validate_phone(phone).map_err(|e| format!("phone: {e}"))?;
        }
        for key in self.preferences.keys() {
            key.parse::<ChannelKind>()
                .map_err(|e| format!("preferences: {e}"))?;
        }
        if let Some(tz) = &self.timezone {
            validate_timezone(tz).map_err(|e| format!("timezone: {e}"))?;
        }
        if let Some(locale) = &self.locale {
            super::validate_locale(locale).map_err(|e| format!("locale: {e}"))?;
        }
        if let Some(q) = &self.quiet_hours {
            q.window().map_err(|e| format!("quiet_hours: {e}"))?;
        }
        for (category, channels) in &self.categories {
            super::validate_category(category).map_err(|e| format!("categories: {e}"))?;
            for channel in channels.keys() {
                if channel != "*" {
                    channel
                        .parse::<ChannelKind>()
                        .map_err(|e| format!("categories.{category}: {e}"))?;
                }
            }
        }
        self.chat.validate()
    }

    /// The profile as the API shows it: secrets replaced by `has_secret`.
    pub fn redacted(&self) -> UserProfile {
        let mut out = self.clone();
        for (_, address) in out.chat.all_mut() {
            if let Some(a) = address {
                a.has_secret = a.secret.take().is_some();
            }
        }
        out
    }

    /// Keeps the stored secret of every robot whose URL did not change and that the new
    /// profile gives no secret for (secrets are write-only, so a client that read the
    /// profile and writes it back has none to send).
    pub fn keep_secrets_from(&mut self, stored: &UserProfile) {
        let mut stored = stored.chat.clone();
        for ((_, new), (_, old)) in self.chat.all_mut().into_iter().zip(stored.all_mut()) {
            if let (Some(new), Some(old)) = (new, old.as_mut())
                && new.secret.is_none()
                && new.url == old.url
            {
                new.secret = old.secret.take();
            }
        }
        for (_, a) in self.chat.all_mut() {
            if let Some(a) = a {
                a.has_secret = false;
            }
        }
    }

    /// Whether the user allows `channel` (absent means allowed).
    pub fn allows(&self, channel: ChannelKind) -> bool {
        self.preferences
            .get(channel.as_str())
            .copied()
            .unwrap_or(true)
    }

    /// Whether the user allows messages of `category` on `channel`: the channel's own
    /// setting for the category, else its `"*"`, else allowed.
    pub fn allows_category(&self, category: &str, channel: ChannelKind) -> bool {
        let Some(c) = self.categories.get(category) else {
            return true;
        };
        c.get(channel.as_str())
            .or_else(|| c.get("*"))
            .copied()
            .unwrap_or(true)
    }
}

/// `GET /v1/users/{id}` answer: the profile (secrets redacted) plus its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    #[serde(flatten)]
    pub profile: UserProfile,
}
