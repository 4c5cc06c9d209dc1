//! Templates (SPEC §8): what is stored, per locale and per channel part, and how a preview
//! is asked for and answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The parts of one locale. Each is Jinja source (`{{ order_id }}`, filters); only
/// `email.html` is HTML-escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<TemplateEmail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<TemplateText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<TemplatePush>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<TemplateChat>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateEmail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePush {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateChat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
}

/// `PUT /v1/templates/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The locale used when none of the recipient's fits (must be one of `locales`).
    #[schema(
        max_length = 35,
        pattern = r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$"
    )]
    pub default_locale: String,
    /// BCP 47 locale → its parts.
    pub locales: BTreeMap<String, TemplateParts>,
}

/// Every named part of a locale, with the name it has in errors and previews.
impl TemplateParts {
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        let (e, s, p, c) = (
            self.email.as_ref(),
            self.sms.as_ref(),
            self.push.as_ref(),
            self.chat.as_ref(),
        );
        [
            ("title", self.title.as_ref()),
            ("body", self.body.as_ref()),
            ("email.subject", e.and_then(|e| e.subject.as_ref())),
            ("email.text", e.and_then(|e| e.text.as_ref())),
            ("email.html", e.and_then(|e| e.html.as_ref())),
            ("sms.text", s.and_then(|s| s.text.as_ref())),
            ("push.title", p.and_then(|p| p.title.as_ref())),
            ("push.body", p.and_then(|p| p.body.as_ref())),
            ("chat.text", c.and_then(|c| c.text.as_ref())),
            ("chat.markdown", c.and_then(|c| c.markdown.as_ref())),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v.as_str())))
        .collect()
    }
}

/// The most locales one template holds, and the longest part.
pub const MAX_TEMPLATE_LOCALES: usize = 100;
pub const MAX_TEMPLATE_PART: usize = 64 * 1024;

impl TemplateSpec {
    /// Checks names and sizes (the syntax is checked by compiling it).
    pub fn validate(&self) -> Result<(), String> {
        validate_locale(&self.default_locale).map_err(|e| format!("default_locale: {e}"))?;
        if self.locales.is_empty() {
            return Err("'locales' needs at least one locale".into());
        }
        if self.locales.len() > MAX_TEMPLATE_LOCALES {
            return Err(format!(
                "'locales' has {} locales; the limit is {MAX_TEMPLATE_LOCALES}",
                self.locales.len()
            ));
        }
        if !self.locales.contains_key(&self.default_locale) {
            return Err(format!(
                "default_locale '{}' is not one of the locales",
                self.default_locale
            ));
        }
        for (locale, parts) in &self.locales {
            validate_locale(locale).map_err(|e| format!("locales.{locale}: {e}"))?;
            let named = parts.named();
            if named.is_empty() {
                return Err(format!("locales.{locale} has no parts"));
            }
            for (name, source) in named {
                if source.len() > MAX_TEMPLATE_PART {
                    return Err(format!(
                        "locales.{locale}.{name} is over {} KiB",
                        MAX_TEMPLATE_PART / 1024
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A template name: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn validate_template_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "template name '{name}' must be 1-128 characters of [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}

/// A BCP 47 language tag of language, script and region (`en`, `zh-CN`, `zh-Hant-TW`),
/// any case: what the schema's pattern says, and what `unic-langid` reads.
pub fn validate_locale(locale: &str) -> Result<(), String> {
    let mut parts = locale.split('-');
    let alpha = |p: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic())
    };
    let language = parts.next().is_some_and(|p| alpha(p, 2..=3));
    let mut rest: Vec<&str> = parts.collect();
    if rest.first().is_some_and(|p| alpha(p, 4..=4)) {
        rest.remove(0);
    }
    let region =
        |p: &str| alpha(p, 2..=2) || (p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if !language || rest.len() > 1 || rest.first().is_some_and(|p| !region(p)) {
        return Err(format!(
            "'{locale}' is not a BCP 47 language tag like en, zh-CN or zh-Hant-TW"
        ));
    }
    locale
        .parse::<unic_langid::LanguageIdentifier>()
        .map(|_| ())
        .map_err(|_| format!("'{locale}' is not a BCP 47 language tag like en or zh-CN"))
}

/// The fallback chain of a locale: `zh-Hant-TW` → `zh-Hant` → `zh` (SPEC §8).
pub fn locale_chain(locale: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts: Vec<&str> = locale.split(['-', '_']).collect();
    while !parts.is_empty() {
        out.push(parts.join("-"));
        parts.pop();
    }
    out
}

/// `PUT /v1/templates/{name}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateSaved {
    pub name: String,
    pub version: u32,
}

/// `GET /v1/templates/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub version: u32,
    pub created_at: String,
    #[serde(flatten)]
    pub spec: TemplateSpec,
}

/// `GET /v1/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateSaved>,
}

/// `POST /v1/templates/{name}/preview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The recipient's locale (fallback as for a delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 35,
        pattern = r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$"
    )]
    pub locale: Option<String>,
    /// The recipient's IANA time zone, for the date filters (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub vars: Option<serde_json::Map<String, serde_json::Value>>,
    /// A version other than the latest.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    #[schema(minimum = 1)]
    pub version: Option<u32>,
    /// (Extension) Renders this unsaved template instead of a stored version: the
    /// console's live preview while editing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<TemplateSpec>,
}

/// An SMS text's length as a phone counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SmsLength {
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    /// Characters (GSM-7 septets: the extension characters count two).
    pub characters: usize,
    pub segments: usize,
}

/// The rendered parts (the ones the locale has), and the SMS length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreviewResponse {
    pub name: String,
    pub version: u32,
    /// The locale that was used after fallback.
    pub locale: String,
    /// Part name (`title`, `email.html`, …) → rendered text.
    pub parts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsLength>,
}

/// GSM 03.38 basic characters (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table (an escape plus one septet: two each).
const GSM7_EXTENSION: &str = "^{}\\\\[~]|€\u{000C}";

/// How many SMS segments a text takes: GSM-7 (160 per SMS, 153 each when split) if every
/// character is in the GSM alphabet, else UCS-2 (70, or 67 when split; characters outside
/// the BMP take two).
pub fn sms_length(text: &str) -> SmsLength {
    let gsm: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (encoding, characters, single, multi) = match gsm {
        Some(n) => ("gsm7", n, 160, 153),
        None => ("ucs2", text.encode_utf16().count(), 70, 67),
    };
    let segments = match characters {
        0 => 0,
        n if n <= single => 1,
        n => n.div_ceil(multi),
    };
    SmsLength {
        encoding: encoding.into(),
        characters,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_fall_back_and_are_checked() {
        assert_eq!(locale_chain("zh-Hant-TW"), ["zh-Hant-TW", "zh-Hant", "zh"]);
        assert_eq!(locale_chain("en"), ["en"]);
        assert!(validate_locale("zh-CN").is_ok());
        assert!(validate_locale("not a locale").is_err());
        assert!(validate_template_name("order_shipped.v2").is_ok());
        assert!(validate_template_name("bad name").is_err());
    }

    #[test]
    fn sms_length_counts_segments_as_phones_do() {
        assert_eq!(sms_length("Hello").segments, 1);
        let gsm160 = "a".repeat(160);
        assert_eq!(
            (
                sms_length(&gsm160).encoding.as_str(),
                sms_length(&gsm160).segments
            ),
            ("gsm7", 1)
        );
        assert_eq!(sms_length(&"a".repeat(161)).segments, 2);
        assert_eq!(sms_length(&"a".repeat(306)).segments, 2);
        assert_eq!(sms_length(&"a".repeat(307)).segments, 3);
        assert_eq!(
            sms_length("€").characters,
            2,
            "the extension table counts two"
        );
        let zh = "您的订单已发货";
        let l = sms_length(zh);
        assert_eq!(
            (l.encoding.as_str(), l.characters, l.segments),
            ("ucs2", 7, 1)
        );
        assert_eq!(sms_length(&"订".repeat(71)).segments, 2);
        assert_eq!(sms_length(&"订".repeat(134)).segments, 2);
        assert_eq!(sms_length(&"订".repeat(135)).segments, 3);
    }
}
