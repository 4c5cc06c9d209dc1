//! Authentication: client JWTs (verify and mint) and API keys (constant-time check).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::validate_user_id;
use crate::topic::validate_pattern;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 5;

/// What a client token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    /// Whether this token may subscribe to `topic` (no `topics` claim: none allowed).
    pub fn may_subscribe(&self, topic: &str) -> bool {
        may_subscribe(self.topics.as_deref().unwrap_or_default(), topic)
    }
}

/// Whether a token's `topics` claim (its patterns) allows subscribing to `topic`.
pub fn may_subscribe(patterns: &[String], topic: &str) -> bool {
    patterns
        .iter()
        .any(|p| crate::topic::pattern_matches(p, topic))
}

/// Why a token was refused. The text is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// How client tokens are verified: a shared HS256 secret or a public key (RS256/ES256).
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn hs256(secret: &str) -> Self {
        Self::with(
            DecodingKey::from_secret(secret.as_bytes()),
            &[Algorithm::HS256],
        )
    }

    /// Loads a PEM public key; RSA keys accept RS256, EC keys ES256. Nothing else is accepted,
    /// so an HS256 token signed with the public key's bytes is refused.
    pub fn from_public_key_file(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            return Ok(Self::with(key, &[Algorithm::RS256]));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            return Ok(Self::with(key, &[Algorithm::ES256]));
        }
        Err(format!(
            "{} is not an RSA or EC public key in PEM form",
            path.display()
        ))
    }

    fn with(key: DecodingKey, algorithms: &[Algorithm]) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_S;
        TokenVerifier { key, validation }
    }

    /// Requires `iss` to be one of `issuers`.
    /// The verifier the configuration asks for: its public key, else its HS256 secret
    /// (`None` when it has neither), with the required issuers and audiences.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, String> {
        let verifier = match (&config.jwt_public_key, &config.jwt_secret) {
            (Some(path), _) => Self::from_public_key_file(path)?,
            (None, Some(secret)) => Self::hs256(secret.expose()),
            (None, None) => return Ok(None),
        };
        let verifier = match config.jwt_issuer.is_empty() {
            true => verifier,
            false => verifier.require_issuer(&config.jwt_issuer),
        };
        Ok(Some(match config.jwt_audience.is_empty() {
            true => verifier,
            false => verifier.require_audience(&config.jwt_audience),
        }))
    }

    pub fn require_issuer(mut self, issuers: &[String]) -> Self {
        self.validation.set_issuer(issuers);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Requires `aud` to include one of `audiences`.
    pub fn require_audience(mut self, audiences: &[String]) -> Self {
        self.validation.set_audience(audiences);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// Verifies signature, algorithm, `exp`, `nbf`, `sub` and the `topics` patterns.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing '{c}' claim"))
                }
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("issuer not accepted".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("audience not accepted".into()),
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        let mut claims = data.claims;
        // Claims live as long as the session: keep no spare capacity from decoding.
        if let Some(topics) = &mut claims.topics {
            topics.shrink_to_fit();
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("missing 'sub' claim".into()));
        }
        validate_user_id(&claims.sub).map_err(|e| AuthError::Invalid(format!("sub: {e}")))?;
        for p in claims.topics.as_deref().unwrap_or_default() {
            validate_pattern(p).map_err(|e| AuthError::Invalid(format!("topics '{p}': {e}")))?;
        }
        Ok(claims)
    }
}

/// Mints HS256 client tokens (`herald token`, `--dev`).
pub struct TokenMinter {
    key: EncodingKey,
}

impl TokenMinter {
    pub fn hs256(secret: &str) -> Self {
        TokenMinter {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    pub fn mint(
        &self,
        user: &str,
        topics: Option<Vec<String>>,
        ttl: Duration,
    ) -> Result<String, String> {
        validate_user_id(user).map_err(|e| format!("user: {e}"))?;
        for p in topics.as_deref().unwrap_or_default() {
            validate_pattern(p).map_err(|e| format!("topic pattern '{p}': {e}"))?;
        }
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl.as_secs(),
            topics,
            nbf: None,
            iat: Some(now),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// What an API key may do (SPEC §11): `send` messages (and cancel them), `read` what
/// Herald holds, `admin`ister users, devices, templates and client tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Send,
    Read,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Send, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// From scope names (`["send","read"]`); at least one.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Scopes, String> {
        if names.is_empty() {
            return Err("name at least one scope (send, read, admin)".into());
        }
        let joined: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
        Scopes::parse(&joined.join("+"))
    }

    pub const ALL: Scopes = Scopes(0b111);

    pub fn has(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// `send+read` (every name known, at least one).
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut bits = 0;
        for name in text.split('+') {
            let scope = Scope::parse(name.trim()).ok_or_else(|| {
                format!("unknown scope '{name}' (scopes are send, read and admin, joined by '+')")
            })?;
            bits |= scope.bit();
        }
        Ok(Scopes(bits))
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.has(*s))
            .map(Scope::as_str)
            .collect()
    }
}

/// One `HERALD_API_KEYS` entry: `key` (named `key-<n>`, every scope), `name:key` (every
/// scope) or `name:key:scope+scope`.
#[derive(Clone)]
pub struct KeyEntry {
    pub name: String,
    pub key: String,
    pub scopes: Scopes,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEntry({}, {:?})", self.name, self.scopes.names())
    }
}

/// A key's name: 1–64 of `[A-Za-z0-9_-]` (it is the `sender` on messages and a metric label).
pub fn validate_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("key name '{name}' must be 1-64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "key name '{name}' has '{c}'; use letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

impl KeyEntry {
    /// Parses entry number `n` (1-based, for unnamed keys and errors; a message never
    /// shows the key).
    pub fn parse(entry: &str, n: usize) -> Result<KeyEntry, String> {
        let parts: Vec<&str> = entry.trim().split(':').collect();
        let (name, key, scopes) = match parts.as_slice() {
            [key] => (format!("key-{n}"), *key, Scopes::ALL),
            [name, key] => (name.to_string(), *key, Scopes::ALL),
            [name, key, scopes] => (
                name.to_string(),
                *key,
                Scopes::parse(scopes).map_err(|e| format!("API key {n} ('{name}'): {e}"))?,
            ),
            _ => {
                return Err(format!(
                    "API key {n}: use key, name:key or name:key:scope+scope"
                ));
            }
        };
        validate_key_name(&name).map_err(|e| format!("API key {n}: {e}"))?;
        if key.is_empty() {
            return Err(format!("API key {n} ('{name}') is empty"));
        }
        Ok(KeyEntry {
            name,
            key: key.to_string(),
            scopes,
        })
    }
}

/// The configured API keys, compared in constant time (as SHA-256 digests, so neither
/// content nor length leaks through timing).
#[derive(Clone)]
pub struct ApiKeys {
    entries: Vec<([u8; 32], String, Scopes)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.entries.len())
    }
}

/// The key a request presented: its position, name and scopes.
#[derive(Debug, Clone)]
pub struct KeyMatch {
    pub position: usize,
    pub name: String,
    pub scopes: Scopes,
}

impl ApiKeys {
    /// From `HERALD_API_KEYS` entries (see [`KeyEntry::parse`]); names must be distinct.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out: Vec<([u8; 32], String, Scopes)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let k = KeyEntry::parse(e, i + 1)?;
            if out.iter().any(|(_, n, _)| *n == k.name) {
                return Err(format!(
                    "API key {}: the name '{}' is used twice",
                    i + 1,
                    k.name
                ));
            }
            out.push((Sha256::digest(k.key.as_bytes()).into(), k.name, k.scopes));
        }
        Ok(ApiKeys { entries: out })
    }

    /// Every key with every scope (tests, and keys known to be plain).
    pub fn new(keys: &[String]) -> Self {
        ApiKeys {
            entries: keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        Sha256::digest(k.as_bytes()).into(),
                        format!("key-{}", i + 1),
                        Scopes::ALL,
                    )
                })
                .collect(),
        }
    }

    pub fn accepts(&self, presented: &str) -> bool {
        self.find(presented).is_some()
    }

    /// Which configured key `presented` is, looking at every key whatever the answer.
    /// Each key's name and scopes, in order.
    pub fn scoped_names(&self) -> impl Iterator<Item = (&str, Scopes)> {
        self.entries.iter().map(|(_, n, s)| (n.as_str(), *s))
    }

    pub fn find(&self, presented: &str) -> Option<KeyMatch> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, (d, _, _)) in self.entries.iter().enumerate() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        let i = found?;
        let (_, name, scopes) = &self.entries[i];
        Some(KeyMatch {
            position: i,
            name: name.clone(),
            scopes: *scopes,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_entries_name_scope_and_refuse_what_is_odd() {
        let keys = ApiKeys::parse(&[
            "plain-old-key".into(),
            "billing:b-secret:send".into(),
            "ops:o-secret:read+admin".into(),
        ])
        .unwrap();
        let m = keys.find("plain-old-key").unwrap();
        assert_eq!((m.name.as_str(), m.scopes), ("key-1", Scopes::ALL));
        let m = keys.find("b-secret").unwrap();
        assert_eq!(m.name, "billing");
        assert!(m.scopes.has(Scope::Send) && !m.scopes.has(Scope::Read));
        let m = keys.find("o-secret").unwrap();
        assert_eq!(m.scopes.names(), vec!["read", "admin"]);
        assert!(keys.find("b-secre").is_none());
        for (entry, says) in [
            ("bill ing:SECRETK", "has ' '"),
            ("b:SECRETK:write", "unknown scope 'write'"),
            ("b:SECRETK:send+", "unknown scope ''"),
            ("b::send", "is empty"),
            ("a:SECRETK:c:d", "use key, name:key"),
        ] {
            let e = ApiKeys::parse(&[entry.into()]).unwrap_err();
            assert!(e.contains(says), "{entry}: {e}");
            assert!(!e.contains("SECRETK"), "no key in the error: {e}");
        }
        let e = ApiKeys::parse(&["a:k1".into(), "a:k2".into()]).unwrap_err();
        assert!(e.contains("used twice"), "{e}");
    }

    const SECRET: &str = "test-secret-0123456789";

    fn claims_token(claims: serde_json::Value, alg: Algorithm, secret: &str) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn minted_tokens_verify() {
        let token = TokenMinter::hs256(SECRET)
            .mint(
                "alice",
                Some(vec!["news".into(), "team.*".into()]),
                Duration::from_secs(60),
            )
            .unwrap();
        let claims = TokenVerifier::hs256(SECRET).verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(claims.may_subscribe("team.42"));
        assert!(!claims.may_subscribe("team.42.x"));
        assert!(!claims.may_subscribe("other"));
    }

    #[test]
    fn refuses_bad_tokens() {
        let v = TokenVerifier::hs256(SECRET);
        let expired = claims_token(
            serde_json::json!({"sub":"a","exp": now() - 60}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let no_sub = claims_token(
            serde_json::json!({"exp": now() + 60}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(matches!(v.verify(&no_sub), Err(AuthError::Invalid(_))));
        let no_exp = claims_token(serde_json::json!({"sub":"a"}), Algorithm::HS256, SECRET);
        assert!(matches!(v.verify(&no_exp), Err(AuthError::Invalid(_))));
        let future = claims_token(
            serde_json::json!({"sub":"a","exp": now() + 600, "nbf": now() + 300}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(v.verify(&future), Err(AuthError::NotYetValid));
        let wrong_key = claims_token(
            serde_json::json!({"sub":"a","exp": now() + 60}),
            Algorithm::HS256,
            "other",
        );
        assert!(matches!(v.verify(&wrong_key), Err(AuthError::Invalid(_))));
        let hs512 = claims_token(
            serde_json::json!({"sub":"a","exp": now() + 60}),
            Algorithm::HS512,
            SECRET,
        );
        assert!(matches!(v.verify(&hs512), Err(AuthError::Invalid(_))));
        let bad_pattern = claims_token(
            serde_json::json!({"sub":"a","exp": now() + 60, "topics": ["a.>.b"]}),
            Algorithm::HS256,
            SECRET,
        );
        assert!(matches!(v.verify(&bad_pattern), Err(AuthError::Invalid(_))));
        assert!(v.verify("garbage").is_err());
    }

    #[test]
    fn refuses_alg_none() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, now() + 60));
        let token = format!("{header}.{body}.");
        assert!(TokenVerifier::hs256(SECRET).verify(&token).is_err());
    }

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(&["k1".into(), "key-two".into()]);
        assert!(keys.accepts("k1"));
        assert!(keys.accepts("key-two"));
        assert!(!keys.accepts("k"));
        assert!(!keys.accepts("k1 "));
        assert!(!keys.accepts(""));
    }
}
