//! NATS subject names under the configured prefix (default `herald`). The embedded bus uses
//! the same names, so both engines route identically.
//!
//! Public (SPEC §5): `<p>.send`, `<p>.events.<status>`. Everything else is internal.

use crate::ids;

/// Builds subjects for one prefix.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Backends publish `POST /v1/messages` bodies here (JetStream).
    pub fn send(&self) -> String {
        format!("{}.send", self.prefix)
    }

    /// Recipient status changes: `<p>.events.<status>`.
    pub fn event(&self, status: &str) -> String {
        format!("{}.events.{status}", self.prefix)
    }

    /// A user's personal-message subject; only gateways holding a session subscribe.
    pub fn user(&self, user_id: &str) -> String {
        format!("{}.user.{}", self.prefix, ids::encode_token(user_id))
    }

    /// The user id a [`Subjects::user`] subject addresses.
    pub fn user_of(&self, subject: &str) -> Option<String> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".user.")?;
        ids::decode_token(rest)
    }

    /// A topic's live broadcast subject (topic names are valid subject tokens already).
    pub fn topic(&self, topic: &str) -> String {
        format!("{}.topic.{topic}", self.prefix)
    }

    /// The topic a [`Subjects::topic`] subject carries.
    pub fn topic_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(&self.prefix)?.strip_prefix(".topic.")
    }

    /// Read receipts from gateways to dispatchers.
    pub fn reads(&self) -> String {
        format!("{}.reads", self.prefix)
    }

    /// Accepted messages on their way from the API to the dispatchers (JetStream).
    pub fn ingest(&self) -> String {
        format!("{}.ingest", self.prefix)
    }

    /// A priority lane's delivery jobs (JetStream).
    pub fn jobs(&self, lane: usize) -> String {
        format!("{}.jobs.{lane}", self.prefix)
    }

    /// Queries every gateway answers (with its total session count).
    pub fn gateways(&self) -> String {
        format!("{}.gateways", self.prefix)
    }

    /// Recipients that ended failed or expired (JetStream).
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// A user's inbox (JetStream, one subject per user).
    pub fn inbox(&self, user_id: &str) -> String {
        format!("{}.inbox.{}", self.prefix, ids::encode_token(user_id))
    }

    /// A topic's history (JetStream, one subject per topic).
    pub fn history(&self, topic: &str) -> String {
        format!("{}.history.{topic}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_round_trip_and_stay_one_token() {
        let s = Subjects::new("herald");
        for id in ["alice", "a.b", "x>", "*", "a%b"] {
            let subject = s.user(id);
            assert_eq!(subject.split('.').count(), 3, "{subject}");
            assert_eq!(s.user_of(&subject).as_deref(), Some(id));
        }
        assert_eq!(s.topic_of("herald.topic.team.42"), Some("team.42"));
        assert_eq!(s.topic_of("other.topic.x"), None);
    }
}
