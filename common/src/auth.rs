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

/// The configured API keys, compared in constant time (as SHA-256 digests, so neither
/// content nor length leaks through timing).
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        ApiKeys {
            digests: keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        }
    }

    pub fn accepts(&self, presented: &str) -> bool {
        self.position(presented).is_some()
    }

    /// Which configured key `presented` is, looking at every key whatever the answer.
    pub fn position(&self, presented: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (i, d) in self.digests.iter().enumerate() {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
