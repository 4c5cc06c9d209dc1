//! One-click unsubscribe (SPEC §9, RFC 8058): email of a non-critical category carries a
//! link whose token names the user and the category, signed with HMAC-SHA256 — whoever
//! holds the link may opt that user out of that category's email, and nothing else. No
//! API key is needed to follow it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use herald_common::config::Config;
use subtle::ConstantTimeEq;

use crate::channels::signing::hmac_sha256;

/// Makes and checks unsubscribe links.
#[derive(Clone)]
pub struct Unsubscribe {
    /// `HERALD_PUBLIC_URL`, without a trailing slash.
    base: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Unsubscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsubscribe")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The path links point at (`/v1/unsubscribe/<token>`).
pub const PATH: &str = "/v1/unsubscribe";

impl Unsubscribe {
    /// Links need a public URL and a key: `HERALD_UNSUBSCRIBE_SECRET`, else one derived
    /// from the JWT secret (so every dispatcher signs alike and links outlive restarts).
    pub fn from_config(config: &Config) -> Option<Unsubscribe> {
        let base = config.public_url.clone()?;
        let key = match (&config.unsubscribe_secret, &config.jwt_secret) {
            (Some(s), _) => s.expose().as_bytes().to_vec(),
            (None, Some(jwt)) => {
                hmac_sha256(jwt.expose().as_bytes(), b"herald unsubscribe links").to_vec()
            }
            (None, None) => return None,
        };
        Some(Unsubscribe { base, key })
    }

    pub fn new(base: &str, key: &[u8]) -> Unsubscribe {
        Unsubscribe {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.key, payload)
    }

    /// The token for `user_id` and `category`.
    pub fn token(&self, user_id: &str, category: &str) -> String {
        let payload = format!("{user_id}\n{category}");
        let mac = self.mac(payload.as_bytes());
        format!("{}.{}", B64.encode(payload), B64.encode(&mac[..16]))
    }

    /// The link a mail carries.
    pub fn link(&self, user_id: &str, category: &str) -> String {
        format!("{}{PATH}/{}", self.base, self.token(user_id, category))
    }

    /// The user and category a token was made for, if it is genuine.
    pub fn verify(&self, token: &str) -> Option<(String, String)> {
        let (payload, mac) = token.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let mac = B64.decode(mac).ok()?;
        let expected = self.mac(&payload);
        if mac.len() != 16 || !bool::from(expected[..16].ct_eq(&mac)) {
            return None;
        }
        let text = String::from_utf8(payload).ok()?;
        let (user, category) = text.split_once('\n')?;
        Some((user.to_string(), category.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let u = Unsubscribe::new("https://herald.example/", b"secret");
        let link = u.link("ann", "marketing");
        assert!(
            link.starts_with("https://herald.example/v1/unsubscribe/"),
            "{link}"
        );
        let token = link.rsplit('/').next().unwrap();
        assert_eq!(u.verify(token), Some(("ann".into(), "marketing".into())));
        let other = Unsubscribe::new("https://herald.example", b"other");
        assert_eq!(other.verify(token), None, "another key");
        let (_, mac) = token.split_once('.').unwrap();
        let forged = format!("{}.{mac}", B64.encode("bob\nmarketing"));
        assert_eq!(u.verify(&forged), None, "another user with the same mac");
        assert_eq!(u.verify("garbage"), None);
        assert_eq!(u.verify("a.b.c"), None);
    }
}
