//! Topic names and the subscribe patterns a client token may carry.
//!
//! A topic is 1–128 chars of dot-separated tokens of `[A-Za-z0-9_-]` (`team.42.alerts`).
//! A pattern uses the same tokens plus `*` (exactly one token) and a final `>` (one or more
//! remaining tokens), as in NATS.

/// The longest topic name, in characters.
pub const MAX_TOPIC_LEN: usize = 128;

/// Why a topic name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must be 1-128 characters")]
    Length,
    #[error("topic has an empty token (leading, trailing or double dot)")]
    EmptyToken,
    #[error("topic tokens may contain only letters, digits, '_' and '-'")]
    BadCharacter,
    #[error("'>' may only be the last token of a pattern")]
    MisplacedTail,
}

fn plain_token(token: &str) -> bool {
    token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a concrete topic name.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::Length);
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return Err(TopicError::EmptyToken);
        }
        if !plain_token(token) {
            return Err(TopicError::BadCharacter);
        }
    }
    Ok(())
}

/// Checks a subscribe pattern as found in a token's `topics` claim.
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    if pattern.is_empty() || pattern.len() > MAX_TOPIC_LEN {
        return Err(TopicError::Length);
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(TopicError::EmptyToken),
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => return Err(TopicError::MisplacedTail),
            t if plain_token(t) => {}
            _ => return Err(TopicError::BadCharacter),
        }
    }
    Ok(())
}

/// Whether `topic` (a valid name) is covered by `pattern`. Invalid patterns match nothing.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    if validate_pattern(pattern).is_err() {
        return false;
    }
    let mut topic_tokens = topic.split('.');
    for p in pattern.split('.') {
        match (p, topic_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic("news").is_ok());
        assert!(validate_topic("team.42.alerts").is_ok());
        assert!(validate_topic("a-b_c").is_ok());
        assert_eq!(validate_topic(""), Err(TopicError::Length));
        assert_eq!(validate_topic(&"a".repeat(129)), Err(TopicError::Length));
        assert_eq!(validate_topic("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic(".a"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a."), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a.*"), Err(TopicError::BadCharacter));
        assert_eq!(validate_topic("a b"), Err(TopicError::BadCharacter));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(pattern_matches("team.*", "team.42"));
        assert!(!pattern_matches("team.*", "team"));
        assert!(!pattern_matches("team.*", "team.42.alerts"));
        assert!(pattern_matches("*.alerts", "ops.alerts"));
    }

    #[test]
    fn tail_matches_one_or_more_tokens() {
        assert!(pattern_matches("team.>", "team.42"));
        assert!(pattern_matches("team.>", "team.42.alerts"));
        assert!(!pattern_matches("team.>", "team"));
        assert!(pattern_matches(">", "anything.at.all"));
        assert_eq!(validate_pattern("a.>.b"), Err(TopicError::MisplacedTail));
        assert!(!pattern_matches("a.>.b", "a.x.b"));
    }

    #[test]
    fn a_prefix_is_not_a_match() {
        assert!(!pattern_matches("news", "newsletter"));
        assert!(!pattern_matches("news", "news.sports"));
        assert!(!pattern_matches("team.4", "team.42"));
        assert!(pattern_matches("news", "news"));
    }

    #[test]
    fn empty_tokens_never_match() {
        assert!(!pattern_matches("team..x", "team..x"));
        assert!(!pattern_matches("", ""));
        assert!(!pattern_matches("team.", "team."));
    }
}
