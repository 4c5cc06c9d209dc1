//! User ids: what is accepted, and how an id becomes one safe subject token.
//!
//! Any id that passes [`validate_user_id`] maps to exactly one subject token made only of
//! `[A-Za-z0-9_-]` and `%XX` escapes, so no id (with `.`, `*`, `>` or anything else) can
//! address another user's subject.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The longest user id, in characters (Unicode code points, what JSON Schema's
/// `maxLength` counts). SPEC §4 says 128 bytes; every such id is still accepted, and ids
/// in scripts of 2–4 bytes a character get the same 128 characters as ASCII ones.
pub const MAX_USER_ID_CHARS: usize = 128;

/// Why a user id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id must not be empty")]
    Empty,
    #[error("user id is {0} characters; the limit is 128")]
    TooLong(usize),
    #[error("user id must not contain whitespace or control characters")]
    BadCharacter,
}

/// Checks a user id: 1–128 characters without control characters or whitespace.
pub fn validate_user_id(id: &str) -> Result<(), UserIdError> {
    if id.is_empty() {
        return Err(UserIdError::Empty);
    }
    // At most 4 bytes a character: only a long id needs counting.
    if id.len() > MAX_USER_ID_CHARS {
        let chars = id.chars().count();
        if chars > MAX_USER_ID_CHARS {
            return Err(UserIdError::TooLong(chars));
        }
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UserIdError::BadCharacter);
    }
    Ok(())
}

/// Everything but ASCII letters, digits, `-` and `_` is escaped.
const SUBJECT_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// Encodes a user id as a single subject token (`a.b` → `a%2Eb`).
pub fn encode_token(id: &str) -> String {
    utf8_percent_encode(id, SUBJECT_ESCAPES).to_string()
}

/// Encodes a user id as a NATS key-value key (`%` is not allowed there; `=` is, and
/// [`encode_token`] never emits it, so the mapping stays one-to-one).
pub fn encode_kv_key(id: &str) -> String {
    encode_token(id).replace('%', "=")
}

/// Reverses [`encode_token`]; `None` when the token is not an encoded id.
pub fn decode_token(token: &str) -> Option<String> {
    percent_decode_str(token)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses_ids() {
        assert!(validate_user_id("alice").is_ok());
        assert!(validate_user_id("用户.42>*").is_ok());
        assert_eq!(validate_user_id(""), Err(UserIdError::Empty));
        assert_eq!(validate_user_id("a b"), Err(UserIdError::BadCharacter));
        assert_eq!(validate_user_id("a\u{7}"), Err(UserIdError::BadCharacter));
        assert_eq!(
            validate_user_id(&"x".repeat(129)),
            Err(UserIdError::TooLong(129))
        );
        // Characters, not bytes: 128 of them in any script.
        assert!(validate_user_id(&"用".repeat(128)).is_ok());
        assert_eq!(
            validate_user_id(&"用".repeat(129)),
            Err(UserIdError::TooLong(129))
        );
    }

    #[test]
    fn subject_tokens_are_safe_and_distinct() {
        let ids = ["alice", "a.b", "a*", "a>", "a%2Eb", "a_b", "a-b", "ü"];
        let tokens: Vec<String> = ids.iter().map(|id| encode_token(id)).collect();
        for (id, token) in ids.iter().zip(&tokens) {
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_%".contains(&b)),
                "{token}"
            );
            assert_eq!(decode_token(token).as_deref(), Some(*id));
        }
        let mut unique = tokens.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tokens.len());
    }
}
