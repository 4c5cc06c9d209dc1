//! Templates (SPEC §8), rendered with minijinja: one environment per stored version, each
//! part of each locale a template named `<locale>/<part>` — so only `email.html` (the one
//! name ending in `.html`) is HTML-escaped. A template is user input: rendering is bounded
//! by fuel and a recursion limit, and a variable it prints but `vars` lacks is an error.
//!
//! Filters for the recipient's locale and time zone: `datetime`, `date`, `time` (an RFC 3339
//! string or Unix seconds), `number`, `currency`, and `plural` (CLDR plural rules, via
//! `intl_pluralrules`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use herald_common::api::{ChannelKind, TemplateParts, TemplateSpec, locale_chain};
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};

/// Instructions one render may take (a loop that never ends stops here).
pub const FUEL: u64 = 200_000;
/// Nesting one render may reach.
pub const RECURSION: usize = 64;

/// Names Herald puts in every render's context.
const GLOBALS: &[&str] = &[
    "user",
    "_locale",
    "_tz",
    "range",
    "dict",
    "debug",
    "namespace",
];

/// Why a template cannot be stored or rendered, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// `locales.<locale>.<part>`.
    pub place: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.place)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A stored template version, compiled.
pub struct Compiled {
    pub name: String,
    pub version: u32,
    spec: TemplateSpec,
    env: Environment<'static>,
    /// Variables the parts use, all locales together (Herald's own names left out).
    needs: BTreeSet<String>,
    /// Whether a part reads `user` (then a render is one recipient's own; else every
    /// recipient with the same locale and time zone gets the same text).
    personal: bool,
}

/// The rendered parts of one locale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub locale: String,
    pub parts: BTreeMap<&'static str, String>,
}

impl Rendered {
    pub fn get(&self, part: &str) -> Option<&str> {
        self.parts.get(part).map(String::as_str)
    }
}

/// Who a render is for.
#[derive(Debug, Clone, Default)]
pub struct Recipient<'a> {
    pub user_id: &'a str,
    pub timezone: &'a str,
}

fn template_name(locale: &str, part: &str) -> String {
    format!("{locale}/{part}")
}

fn error_of(e: &minijinja::Error, locale: &str, part: &str, source: &str) -> TemplateError {
    let column = e.range().map(|r| {
        let before = &source[..r.start.min(source.len())];
        before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1
    });
    let message = match e.kind() {
        ErrorKind::OutOfFuel => {
            "the template takes more work to render than a template may (a loop without end?)"
                .to_string()
        }
        _ => match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    };
    TemplateError {
        place: format!("locales.{locale}.{part}"),
        line: e.line(),
        column,
        message,
    }
}

fn environment(undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_filter("datetime", datetime);
    env.add_filter("date", date);
    env.add_filter("time", time);
    env.add_filter("number", number);
    env.add_filter("currency", currency);
    env.add_filter("plural", plural);
    env
}

fn add_all(env: &mut Environment<'static>, spec: &TemplateSpec) -> Result<(), TemplateError> {
    for (locale, parts) in &spec.locales {
        for (part, source) in parts.named() {
            env.add_template_owned(template_name(locale, part), source.to_string())
                .map_err(|e| error_of(&e, locale, part, source))?;
        }
    }
    Ok(())
}

impl Compiled {
    /// Compiles every part (syntax errors say where) and, for `PUT`, renders each once with
    /// every variable empty, so a template that cannot finish within the fuel is refused
    /// when it is stored rather than when a message needs it.
    pub fn compile(
        name: &str,
        version: u32,
        spec: &TemplateSpec,
        trial: bool,
    ) -> Result<Compiled, TemplateError> {
        let mut env = environment(UndefinedBehavior::SemiStrict);
        add_all(&mut env, spec)?;
        if trial {
            let mut lenient = environment(UndefinedBehavior::Chainable);
            add_all(&mut lenient, spec)?;
            for (locale, parts) in &spec.locales {
                for (part, source) in parts.named() {
                    let t = lenient
                        .get_template(&template_name(locale, part))
                        .map_err(|e| error_of(&e, locale, part, source))?;
                    match t.render(minijinja::context! { _locale => locale, _tz => "UTC" }) {
                        Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                            return Err(error_of(&e, locale, part, source));
                        }
                        // Other errors come from the empty variables, not the template.
                        _ => {}
                    }
                }
            }
        }
        let mut needs = BTreeSet::new();
        for (locale, parts) in &spec.locales {
            for (part, source) in parts.named() {
                let t = env
                    .get_template(&template_name(locale, part))
                    .map_err(|e| error_of(&e, locale, part, source))?;
                needs.extend(t.undeclared_variables(false));
            }
        }
        let personal = needs.contains("user");
        needs.retain(|v| !GLOBALS.contains(&v.as_str()));
        Ok(Compiled {
            name: name.to_string(),
            version,
            spec: spec.clone(),
            env,
            needs,
            personal,
        })
    }

    /// Whether a part reads `user` (see [`Compiled::render`]).
    pub fn personal(&self) -> bool {
        self.personal
    }

    /// The variables the template uses that `vars` does not give.
    pub fn missing(&self, vars: &serde_json::Map<String, serde_json::Value>) -> Vec<&str> {
        self.needs
            .iter()
            .filter(|v| !vars.contains_key(v.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// `Err` naming every variable the template uses that `vars` does not give (the 400 of
    /// an accept and of a preview).
    pub fn check_vars(
        &self,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let missing = self.missing(vars);
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "template '{}' uses {} that 'vars' does not give",
            self.name,
            missing
                .iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The locale to render for: the first of `wanted` (profile, then message) that the
    /// template has — each with its BCP 47 fallback — else its default.
    pub fn pick_locale(&self, wanted: &[Option<&str>]) -> &str {
        for w in wanted.iter().flatten() {
            for candidate in locale_chain(w) {
                if let Some((l, _)) = self
                    .spec
                    .locales
                    .iter()
                    .find(|(l, _)| l.eq_ignore_ascii_case(&candidate))
                {
                    return l;
                }
            }
        }
        &self.spec.default_locale
    }

    fn parts(&self, locale: &str) -> Option<&TemplateParts> {
        self.spec.locales.get(locale)
    }

    /// Renders every part of `locale` for one recipient (a preview).
    pub fn render(
        &self,
        locale: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
        to: &Recipient<'_>,
    ) -> Result<Rendered, TemplateError> {
        self.render_parts(locale, vars, to, |_| true)
    }

    /// Renders the parts a delivery on `channels` reads (see [`read_by`]).
    pub fn render_for(
        &self,
        locale: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
        to: &Recipient<'_>,
        channels: &[ChannelKind],
    ) -> Result<Rendered, TemplateError> {
        self.render_parts(locale, vars, to, |part| read_by(part, channels))
    }

    fn render_parts(
        &self,
        locale: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
        to: &Recipient<'_>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Rendered, TemplateError> {
        let parts = self.parts(locale).ok_or_else(|| TemplateError {
            place: format!("locales.{locale}"),
            line: None,
            column: None,
            message: "no such locale".into(),
        })?;
        // Merged lazily: the message's variables are converted once, never copied.
        let ctx = minijinja::context! {
            user => minijinja::context! { id => to.user_id, locale => locale, timezone => to.timezone },
            _locale => locale,
            _tz => to.timezone,
            ..Value::from(minijinja::value::Serde(vars))
        };
        let mut out = Rendered {
            locale: locale.to_string(),
            parts: BTreeMap::new(),
        };
        for (part, source) in parts.named() {
            if !wanted(part) {
                continue;
            }
            let t = self
                .env
                .get_template(&template_name(locale, part))
                .map_err(|e| error_of(&e, locale, part, source))?;
            let text = t
                .render(&ctx)
                .map_err(|e| error_of(&e, locale, part, source))?;
            out.parts.insert(part, text);
        }
        Ok(out)
    }
}

/// Whether a delivery on `channels` reads `part`: `title` and `body` always (every channel
/// falls back to them, and inboxes keep them), the others only for their channel.
pub fn read_by(part: &str, channels: &[ChannelKind]) -> bool {
    match part.split_once('.').map_or(part, |(prefix, _)| prefix) {
        "email" => channels.contains(&ChannelKind::Email),
        "sms" => channels.contains(&ChannelKind::Sms),
        "push" => channels.contains(&ChannelKind::Push),
        "chat" => channels.iter().any(|c| c.is_chat()),
        _ => true,
    }
}

/// Compiled versions, by name and version (versions never change, so a cached one is
/// good forever; the map is emptied when it grows past its bound).
#[derive(Default)]
pub struct Cache {
    compiled: Mutex<HashMap<(String, u32), Arc<Compiled>>>,
}

const CACHE_LIMIT: usize = 1024;

impl Cache {
    pub fn get(&self, name: &str, version: u32) -> Option<Arc<Compiled>> {
        self.compiled
            .lock()
            .ok()?
            .get(&(name.to_string(), version))
            .cloned()
    }

    pub fn put(&self, compiled: Compiled) -> Arc<Compiled> {
        let compiled = Arc::new(compiled);
        if let Ok(mut map) = self.compiled.lock() {
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
            map.insert(
                (compiled.name.clone(), compiled.version),
                Arc::clone(&compiled),
            );
        }
        compiled
    }
}

/// HTML turned into the text part of an email (when a template has HTML and no text):
/// block ends and `<br>` become line breaks, links keep their address, tags go, entities
/// are decoded.
pub fn text_of_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            rest = &rest[open..];
            break;
        };
        let tag = &rest[open + 1..open + close];
        let lower = tag.to_ascii_lowercase();
        let name = lower
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        rest = &rest[open + close + 1..];
        match name {
            "style" | "script" | "head" if !lower.starts_with('/') => {
                let end = format!("</{name}");
                match rest.to_ascii_lowercase().find(&end) {
                    Some(i) => rest = &rest[i..],
                    None => rest = "",
                }
            }
            "br" => out.push('\n'),
            "p" | "div" | "h1" | "h2" | "h3" | "h4" | "tr" | "li" | "table"
                if lower.starts_with('/') =>
            {
                out.push('\n')
            }
            "li" => out.push_str("- "),
            "a" if !lower.starts_with('/') => {
                if let Some(href) = attr(tag, "href") {
                    // Shown after the link's text.
                    rest_push_link(&mut out, &mut rest, href);
                }
            }
            _ => {}
        }
    }
    out.push_str(rest);
    let decoded = decode_entities(&out);
    // Collapse the layout's whitespace: lines trimmed, at most one empty line in a row.
    let mut text = String::new();
    let mut blank = 0;
    for line in decoded.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            if blank > 1 || text.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        text.push_str(&line);
        text.push('\n');
    }
    text.trim_end().to_string()
}

/// Copies a link's text, then its address in brackets (unless the text is the address).
fn rest_push_link(out: &mut String, rest: &mut &str, href: &str) {
    let (inner, after) = match rest.to_ascii_lowercase().find("</a") {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (*rest, ""),
    };
    let inner_text = text_of_html(inner);
    out.push_str(&inner_text);
    if inner_text.trim() != href {
        out.push_str(&format!(" ({href})"));
    }
    *rest = after;
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let quote = value.chars().next()?;
    if quote == '"' || quote == '\'' {
        let end = value[1..].find(quote)? + 1;
        Some(&value[1..end])
    } else {
        value.split_whitespace().next()
    }
}

fn decode_entities(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

// ---- locale data ----------------------------------------------------------------------

/// How a language writes dates, times and numbers (the few Herald knows; others are
/// written as English).
struct Lang {
    months: [&'static str; 12],
    long_date: fn(i16, &str, i8, i8) -> String,
    short_date: fn(i16, i8, i8) -> String,
    twelve_hour: bool,
    /// Between date and time in `datetime`.
    joiner: &'static str,
    group: &'static str,
    decimal: &'static str,
    /// Currency symbol before the number (else after, with a space).
    symbol_first: bool,
}

const EN: Lang = Lang {
    months: [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    long_date: |y, m, _, d| format!("{m} {d}, {y}"),
    short_date: |y, mo, d| format!("{mo}/{d}/{:02}", y % 100),
    twelve_hour: true,
    joiner: " at ",
    group: ",",
    decimal: ".",
    symbol_first: true,
};
const DE: Lang = Lang {
    months: [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ],
    long_date: |y, m, _, d| format!("{d}. {m} {y}"),
    short_date: |y, mo, d| format!("{d:02}.{mo:02}.{:02}", y % 100),
    twelve_hour: false,
    joiner: " um ",
    group: ".",
    decimal: ",",
    symbol_first: false,
};
const FR: Lang = Lang {
    months: [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    long_date: |y, m, _, d| format!("{d} {m} {y}"),
    short_date: |y, mo, d| format!("{d:02}/{mo:02}/{y}"),
    twelve_hour: false,
    joiner: " à ",
    group: "\u{202f}",
    decimal: ",",
    symbol_first: false,
};
const ES: Lang = Lang {
    months: [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ],
    long_date: |y, m, _, d| format!("{d} de {m} de {y}"),
    short_date: |y, mo, d| format!("{d}/{mo}/{:02}", y % 100),
    twelve_hour: false,
    joiner: ", ",
    group: ".",
    decimal: ",",
    symbol_first: false,
};
const PT: Lang = Lang {
    months: [
        "janeiro",
        "fevereiro",
        "março",
        "abril",
        "maio",
        "junho",
        "julho",
        "agosto",
        "setembro",
        "outubro",
        "novembro",
        "dezembro",
    ],
    long_date: |y, m, _, d| format!("{d} de {m} de {y}"),
    short_date: |y, mo, d| format!("{d:02}/{mo:02}/{y}"),
    twelve_hour: false,
    joiner: " às ",
    group: ".",
    decimal: ",",
    symbol_first: false,
};
const RU: Lang = Lang {
    // Genitive: "1 декабря".
    months: [
        "января",
        "февраля",
        "марта",
        "апреля",
        "мая",
        "июня",
        "июля",
        "августа",
        "сентября",
        "октября",
        "ноября",
        "декабря",
    ],
    long_date: |y, m, _, d| format!("{d} {m} {y} г."),
    short_date: |y, mo, d| format!("{d:02}.{mo:02}.{y}"),
    twelve_hour: false,
    joiner: ", ",
    group: "\u{a0}",
    decimal: ",",
    symbol_first: false,
};
const ZH: Lang = Lang {
    months: [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ],
    long_date: |y, _, mo, d| format!("{y}年{mo}月{d}日"),
    short_date: |y, mo, d| format!("{y}/{mo}/{d}"),
    twelve_hour: false,
    joiner: " ",
    group: ",",
    decimal: ".",
    symbol_first: true,
};
const JA: Lang = Lang {
    long_date: |y, _, mo, d| format!("{y}年{mo}月{d}日"),
    short_date: |y, mo, d| format!("{y}/{mo:02}/{d:02}"),
    ..ZH
};
const AR: Lang = Lang {
    months: [
        "يناير",
        "فبراير",
        "مارس",
        "أبريل",
        "مايو",
        "يونيو",
        "يوليو",
        "أغسطس",
        "سبتمبر",
        "أكتوبر",
        "نوفمبر",
        "ديسمبر",
    ],
    long_date: |y, m, _, d| format!("{d} {m} {y}"),
    short_date: |y, mo, d| format!("{d}/{mo}/{y}"),
    twelve_hour: false,
    joiner: "، ",
    group: ",",
    decimal: ".",
    symbol_first: false,
};

fn lang(locale: &str) -> &'static Lang {
    const LANGS: [(&str, &Lang); 8] = [
        ("de", &DE),
        ("fr", &FR),
        ("es", &ES),
        ("pt", &PT),
        ("ru", &RU),
        ("zh", &ZH),
        ("ja", &JA),
        ("ar", &AR),
    ];
    let language = locale.split(['-', '_']).next().unwrap_or("");
    LANGS
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(language))
        .map_or(&EN, |(_, l)| *l)
}

fn locale_of(state: &State<'_, '_>) -> String {
    state
        .lookup("_locale")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "en".into())
}

fn zone_of(state: &State<'_, '_>) -> jiff::tz::TimeZone {
    state
        .lookup("_tz")
        .and_then(|v| v.as_str().and_then(|n| jiff::tz::TimeZone::get(n).ok()))
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

fn bad(text: impl Into<String>) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, text.into())
}

/// An instant from a filter's value: RFC 3339 text or Unix seconds.
fn instant(value: &Value) -> Result<jiff::Timestamp, minijinja::Error> {
    if let Some(text) = value.as_str() {
        return text
            .parse::<jiff::Timestamp>()
            .map_err(|_| bad(format!("'{text}' is not an RFC 3339 time")));
    }
    let secs =
        i64::try_from(value.clone()).map_err(|_| bad("a time is RFC 3339 text or Unix seconds"))?;
    jiff::Timestamp::from_second(secs).map_err(|_| bad(format!("{secs} is not a time")))
}

fn local(state: &State<'_, '_>, value: &Value) -> Result<jiff::ZonedDateTime, minijinja::Error> {
    Ok(instant(value)?.to_zoned_datetime(zone_of(state)))
}

fn format_time(l: &Lang, z: &jiff::ZonedDateTime) -> String {
    let (h, m) = (z.hour(), z.minute());
    if l.twelve_hour {
        let h12 = if h % 12 == 0 { 12 } else { h % 12 };
        format!("{h12}:{m:02} {}", if h < 12 { "AM" } else { "PM" })
    } else {
        format!("{h:02}:{m:02}")
    }
}

fn format_date(l: &Lang, z: &jiff::ZonedDateTime, style: &str) -> String {
    let d = z.date();
    match style {
        "short" => (l.short_date)(d.year(), d.month(), d.day()),
        _ => (l.long_date)(
            d.year(),
            l.months[d.month() as usize - 1],
            d.month(),
            d.day(),
        ),
    }
}

/// `{{ at | datetime }}`, `{{ at | datetime("short") }}` or a strftime pattern
/// (`datetime("%Y-%m-%d %H:%M")`), in the recipient's time zone and language.
fn datetime(
    state: &State<'_, '_>,
    value: Value,
    style: Option<String>,
) -> Result<String, minijinja::Error> {
    let z = local(state, &value)?;
    let locale = locale_of(state);
    let l = lang(&locale);
    Ok(match style.as_deref() {
        Some(p) if p.contains('%') => z.strftime(p).to_string(),
        Some("short") => format!("{} {}", format_date(l, &z, "short"), format_time(l, &z)),
        _ => format!(
            "{}{}{}",
            format_date(l, &z, "long"),
            l.joiner,
            format_time(l, &z)
        ),
    })
}

fn date(
    state: &State<'_, '_>,
    value: Value,
    style: Option<String>,
) -> Result<String, minijinja::Error> {
    let z = local(state, &value)?;
    Ok(format_date(
        lang(&locale_of(state)),
        &z,
        style.as_deref().unwrap_or("long"),
    ))
}

fn time(state: &State<'_, '_>, value: Value) -> Result<String, minijinja::Error> {
    let z = local(state, &value)?;
    Ok(format_time(lang(&locale_of(state)), &z))
}

fn as_f64(value: &Value) -> Result<f64, minijinja::Error> {
    if let Some(text) = value.as_str() {
        return text
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{text}' is not a number")));
    }
    f64::try_from(value.clone()).map_err(|_| bad("not a number"))
}

fn grouped(l: &Lang, n: f64, decimals: usize) -> String {
    // Whole units and the fraction as integers: exact float formatting is slow, and every
    // amount a notification shows fits in 2^53 at its precision.
    let scale = 10u64.pow(decimals.min(10) as u32);
    let scaled = (n.abs() * scale as f64).round();
    let (int, frac) = if scaled < 9.0e15 {
        let scaled = scaled as u64;
        (scaled / scale, scaled % scale)
    } else {
        (n.abs().trunc().min(u64::MAX as f64) as u64, 0)
    };
    let digits = int.to_string();
    let mut out = String::with_capacity(digits.len() + decimals + 8);
    if n < 0.0 && (int > 0 || frac > 0) {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push_str(l.group);
        }
        out.push(c);
    }
    if decimals > 0 {
        use std::fmt::Write as _;
        out.push_str(l.decimal);
        let _ = write!(out, "{frac:0decimals$}");
    }
    out
}

/// `{{ n | number }}` (up to 3 decimals, as needed) or `number(2)`, grouped as the
/// recipient's language writes it.
fn number(
    state: &State<'_, '_>,
    value: Value,
    decimals: Option<usize>,
) -> Result<String, minijinja::Error> {
    let n = as_f64(&value)?;
    let l = lang(&locale_of(state));
    let decimals = decimals.map(|d| d.min(10)).unwrap_or_else(|| {
        match (n.fract().abs() * 1000.0).round() as u64 {
            0 | 1000 => 0,
            t if t % 100 == 0 => 1,
            t if t % 10 == 0 => 2,
            _ => 3,
        }
    });
    Ok(grouped(l, n, decimals))
}

/// `{{ total | currency("EUR") }}`: the amount with the currency's symbol and decimals, in
/// the recipient's language's order.
fn currency(state: &State<'_, '_>, value: Value, code: String) -> Result<String, minijinja::Error> {
    let n = as_f64(&value)?;
    let locale = locale_of(state);
    let l = lang(&locale);
    let code = code.to_ascii_uppercase();
    let zh = locale.to_ascii_lowercase().starts_with("zh");
    let ja = locale.to_ascii_lowercase().starts_with("ja");
    let symbol = match code.as_str() {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" if ja => "￥",
        "JPY" => "¥",
        "CNY" if zh => "¥",
        "CNY" => "CN¥",
        "RUB" => "₽",
        "INR" => "₹",
        "KRW" => "₩",
        "BRL" => "R$",
        other if other.len() == 3 && other.bytes().all(|b| b.is_ascii_alphabetic()) => other,
        other => return Err(bad(format!("'{other}' is not a currency code"))),
    };
    let decimals = if matches!(code.as_str(), "JPY" | "KRW") {
        0
    } else {
        2
    };
    let amount = grouped(l, n, decimals);
    Ok(if l.symbol_first {
        format!("{symbol}{amount}")
    } else {
        format!("{amount}\u{a0}{symbol}")
    })
}

thread_local! {
    static RULES: std::cell::RefCell<HashMap<String, intl_pluralrules::PluralRules>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The CLDR plural category of `n` in `locale`'s language: `zero`, `one`, `two`, `few`,
/// `many` or `other`.
pub fn plural_category(locale: &str, n: f64) -> &'static str {
    use intl_pluralrules::{PluralCategory, PluralRuleType, PluralRules};
    let language = locale.split(['-', '_']).next().unwrap_or("en");
    RULES.with(|rules| {
        let mut rules = rules.borrow_mut();
        if !rules.contains_key(language) {
            let english = || {
                "en".parse::<unic_langid::LanguageIdentifier>()
                    .unwrap_or_default()
            };
            let id = language.parse().unwrap_or_else(|_| english());
            let made = PluralRules::create(id, PluralRuleType::CARDINAL)
                .or_else(|_| PluralRules::create(english(), PluralRuleType::CARDINAL));
            match made {
                Ok(r) => {
                    rules.insert(language.to_string(), r);
                }
                Err(_) => return "other",
            }
        }
        let Some(r) = rules.get(language) else {
            return "other";
        };
        match r.select(n) {
            Ok(PluralCategory::ZERO) => "zero",
            Ok(PluralCategory::ONE) => "one",
            Ok(PluralCategory::TWO) => "two",
            Ok(PluralCategory::FEW) => "few",
            Ok(PluralCategory::MANY) => "many",
            _ => "other",
        }
    })
}

/// `{{ count | plural(one="# item", other="# items") }}`: the form the recipient's language
/// uses for that count (CLDR rules: Russian has `few` and `many`, Arabic all six, Chinese
/// only `other`), `#` replaced by the count. A form not given falls back to `other`.
fn plural(state: &State<'_, '_>, value: Value, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    const FORMS: [&str; 6] = ["zero", "one", "two", "few", "many", "other"];
    let n = as_f64(&value)?;
    let category = plural_category(&locale_of(state), n);
    // Each form given is read once (the unused ones are fine); a name that is no CLDR
    // category is an error.
    let (mut chosen, mut other) = (None, None);
    for name in kwargs.args() {
        if !FORMS.contains(&name) {
            return Err(bad(format!(
                "plural forms are zero, one, two, few, many and other, not '{name}'"
            )));
        }
        let form: String = kwargs.get(name)?;
        if name == category {
            chosen = Some(form);
        } else if name == "other" {
            other = Some(form);
        }
    }
    let form = chosen
        .or(other)
        .ok_or_else(|| bad("plural needs at least other=\"…\""))?;
    let shown = if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    };
    Ok(form.replace('#', &shown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> TemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    fn order() -> Compiled {
        Compiled::compile(
            "order_shipped",
            1,
            &spec(json!({"default_locale": "en", "locales": {
                "en": {"title": "Order {{ order_id }} shipped", "email": {"subject": "Shipped", "html": "<p>Hi {{ name }}</p>"}},
                "zh": {"title": "订单 {{ order_id }} 已发货"},
                "zh-Hant": {"title": "訂單 {{ order_id }} 已出貨"},
            }})),
            true,
        )
        .unwrap()
    }

    fn to() -> Recipient<'static> {
        Recipient {
            user_id: "u1",
            timezone: "Asia/Shanghai",
        }
    }

    #[test]
    fn locales_fall_back_by_bcp47() {
        let t = order();
        assert_eq!(t.pick_locale(&[Some("zh-CN")]), "zh");
        assert_eq!(t.pick_locale(&[Some("zh-Hant-TW")]), "zh-Hant");
        assert_eq!(
            t.pick_locale(&[Some("fr-FR"), Some("zh-TW")]),
            "zh",
            "then the message's"
        );
        assert_eq!(t.pick_locale(&[None, None]), "en");
        assert_eq!(t.pick_locale(&[Some("de")]), "en", "else the default");
    }

    #[test]
    fn renders_escaping_only_email_html_and_names_missing_variables() {
        let t = order();
        assert_eq!(t.missing(&vars(json!({"order_id": 42}))), ["name"]);
        let v = vars(json!({"order_id": 42, "name": "<script>x</script>"}));
        let r = t.render("en", &v, &to()).unwrap();
        assert_eq!(r.get("title"), Some("Order 42 shipped"));
        assert_eq!(
            r.get("email.html"),
            Some("<p>Hi &lt;script&gt;x&lt;&#x2f;script&gt;</p>")
        );
        let raw = Compiled::compile(
            "t",
            1,
            &spec(json!({"default_locale": "en", "locales": {"en": {"title": "{{ name }}"}}})),
            false,
        )
        .unwrap();
        assert_eq!(
            raw.render("en", &v, &to()).unwrap().get("title"),
            Some("<script>x</script>"),
            "not escaped outside HTML"
        );
        let err = t
            .render("en", &vars(json!({"order_id": 1})), &to())
            .unwrap_err();
        assert!(err.place.ends_with("email.html"), "{err}");
        assert_eq!(
            t.render("zh", &v, &to()).unwrap().get("title"),
            Some("订单 42 已发货")
        );
    }

    #[test]
    fn syntax_errors_say_line_and_column_and_endless_loops_are_refused() {
        let err = Compiled::compile("t", 1, &spec(json!({"default_locale": "en", "locales": {"en": {"body": "line one\nhello {{ name "}}})), true)
            .err()
            .unwrap();
        assert_eq!(err.place, "locales.en.body");
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.column.is_some(), "{err}");
        let err = Compiled::compile("t", 1, &spec(json!({"default_locale": "en", "locales": {"en": {"body":
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"}}})), true)
            .err()
            .unwrap();
        assert!(err.message.contains("loop without end"), "{err}");
    }

    #[test]
    fn dates_in_the_recipients_zone_and_language() {
        let t = Compiled::compile("t", 1, &spec(json!({"default_locale": "en", "locales": {
            "en": {"title": "{{ at | datetime }}", "body": "{{ at | date('short') }} {{ at | time }}"},
            "zh": {"title": "{{ at | datetime }}"},
            "de": {"title": "{{ at | datetime }}"},
            "ru": {"title": "{{ at | date }}"},
        }})), false).unwrap();
        let v = vars(json!({"at": "2026-12-01T07:30:00Z"}));
        let en = t.render("en", &v, &to()).unwrap();
        assert_eq!(
            en.get("title"),
            Some("December 1, 2026 at 3:30 PM"),
            "15:30 in Shanghai"
        );
        assert_eq!(en.get("body"), Some("12/1/26 3:30 PM"));
        assert_eq!(
            t.render("zh", &v, &to()).unwrap().get("title"),
            Some("2026年12月1日 15:30")
        );
        let ny = Recipient {
            user_id: "u",
            timezone: "America/New_York",
        };
        assert_eq!(
            t.render("de", &v, &ny).unwrap().get("title"),
            Some("1. Dezember 2026 um 02:30")
        );
        assert_eq!(
            t.render("ru", &vars(json!({"at": 1_796_000_000})), &to())
                .unwrap()
                .get("title"),
            Some("30 ноября 2026 г.")
        );
    }

    #[test]
    fn numbers_currency_and_plurals_by_language() {
        let t = Compiled::compile("t", 1, &spec(json!({"default_locale": "en", "locales": {
            "en": {"title": "{{ n | number }} / {{ total | currency('USD') }}", "body": "{{ c | plural(one='# item', other='# items') }}"},
            "de": {"title": "{{ n | number }} / {{ total | currency('EUR') }}"},
            "ru": {"body": "{{ c | plural(one='# файл', few='# файла', many='# файлов', other='# файла') }}"},
            "ar": {"body": "{{ c | plural(zero='لا شيء', one='واحد', two='اثنان', few='# قليل', many='# كثير', other='#') }}"},
            "zh": {"body": "{{ c | plural(other='# 件') }}", "title": "{{ total | currency('CNY') }}"},
            "ja": {"title": "{{ total | currency('JPY') }}"},
        }})), false).unwrap();
        let r = |locale: &str, v: serde_json::Value, part: &str| {
            t.render(locale, &vars(v), &to())
                .unwrap()
                .get(part)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            r(
                "en",
                json!({"n": 1234567.5, "total": 1234.5, "c": 1}),
                "title"
            ),
            "1,234,567.5 / $1,234.50"
        );
        assert_eq!(
            r("de", json!({"n": 1234567.5, "total": 1234.5}), "title"),
            "1.234.567,5 / 1.234,50\u{a0}€"
        );
        assert_eq!(
            r("en", json!({"n": 0, "total": 0, "c": 1}), "body"),
            "1 item"
        );
        assert_eq!(
            r("en", json!({"n": 0, "total": 0, "c": 5}), "body"),
            "5 items"
        );
        for (c, want) in [
            (1, "1 файл"),
            (3, "3 файла"),
            (5, "5 файлов"),
            (21, "21 файл"),
            (22, "22 файла"),
            (11, "11 файлов"),
        ] {
            assert_eq!(r("ru", json!({"c": c}), "body"), want, "ru {c}");
        }
        for (c, want) in [
            (0, "لا شيء"),
            (1, "واحد"),
            (2, "اثنان"),
            (3, "3 قليل"),
            (11, "11 كثير"),
            (100, "100"),
        ] {
            assert_eq!(r("ar", json!({"c": c}), "body"), want, "ar {c}");
        }
        assert_eq!(r("zh", json!({"c": 1, "total": 12.5}), "body"), "1 件");
        assert_eq!(r("zh", json!({"c": 1, "total": 12.5}), "title"), "¥12.50");
        assert_eq!(r("ja", json!({"total": 1234}), "title"), "￥1,234");
    }

    #[test]
    fn a_delivery_renders_only_the_parts_its_channels_read() {
        let t = order();
        let v = vars(json!({"order_id": 7, "name": "Ada"}));
        let only = |channels: &[ChannelKind]| {
            let r = t.render_for("en", &v, &to(), channels).unwrap();
            r.parts.keys().copied().collect::<Vec<_>>()
        };
        assert_eq!(only(&[ChannelKind::InApp]), vec!["title"]);
        assert_eq!(
            only(&[ChannelKind::InApp, ChannelKind::Email]),
            vec!["email.html", "email.subject", "title"]
        );
        assert!(read_by("chat.markdown", &[ChannelKind::Slack]));
        assert!(!read_by("sms.text", &[ChannelKind::Push]));
    }

    #[test]
    fn a_plural_form_that_is_no_cldr_category_is_an_error() {
        let t = Compiled::compile(
            "t",
            1,
            &spec(json!({"default_locale": "en", "locales": {
            "en": {"title": "{{ c | plural(one='# item', lots='# items') }}"}}})),
            false,
        )
        .unwrap();
        let e = t.render("en", &vars(json!({"c": 2})), &to()).unwrap_err();
        assert!(e.message.contains("not 'lots'"), "{e}");
    }

    #[test]
    fn html_becomes_text() {
        let html = "<html><head><style>p{color:red}</style></head><body><h1>Order shipped</h1><p>Hi Ann,<br>your order is on its way.</p><ul><li>Book</li><li>Pen</li></ul><p><a href=\"https://example.com/track\">Track it</a> &amp; relax</p></body></html>";
        assert_eq!(
            text_of_html(html),
            "Order shipped\nHi Ann,\nyour order is on its way.\n- Book\n- Pen\nTrack it (https://example.com/track) & relax"
        );
    }
}
