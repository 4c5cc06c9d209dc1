//! Standard Webhooks signing (standardwebhooks.com): the `webhook` channel and status
//! webhooks (SPEC §11) sign what they POST so that receivers can check where it came from.
//!
//! `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), the
//! key being the secret's bytes (base64 after the `whsec_` prefix). The exact bytes sent are
//! what is signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The HMAC key of a `whsec_…` secret (24 to 64 random bytes).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("a signing secret starts with '{SECRET_PREFIX}'"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "the part after 'whsec_' is not base64".to_string())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the secret's key is {} bytes; Standard Webhooks uses 24 to 64",
            key.len()
        ));
    }
    Ok(key)
}

/// A new random secret (32 bytes).
pub fn new_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` value for one delivery.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The three headers of a signed delivery: `webhook-id`, `webhook-timestamp` (Unix
/// seconds), `webhook-signature`.
pub fn headers(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", sign(key, id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_published_test_vector() {
        let key = decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn secrets_are_checked_and_made_fresh() {
        assert!(decode_secret("nope").is_err());
        assert!(decode_secret("whsec_!!").is_err());
        assert!(
            decode_secret("whsec_AAAA")
                .unwrap_err()
                .contains("24 to 64")
        );
        let fresh = new_secret();
        assert_eq!(decode_secret(&fresh).unwrap().len(), 32);
        assert_ne!(fresh, new_secret());
    }
}
