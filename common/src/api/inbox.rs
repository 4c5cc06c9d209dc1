//! The inbox of a notification centre (SPEC §11): a user's personal messages with their
//! read and archived state, and the unread count.

use serde::{Deserialize, Serialize};

/// The most ids one mark request takes.
pub const MAX_MARK_IDS: usize = 100;

/// One message in an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxMessage {
    pub id: String,
    /// The user's inbox sequence number (`before` pages by it).
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    pub created_at: String,
    /// When it was read; `null` while unread.
    pub read_at: Option<String>,
    pub archived: bool,
}

/// `GET /v1/users/{id}/inbox`, `GET /v1/me/inbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxPage {
    /// Newest first.
    pub messages: Vec<InboxMessage>,
    /// Unread, not archived messages in the whole inbox.
    pub unread: u64,
}

/// `POST …/inbox/read`: `{"ids":[…]}` or `{"all":true}`; `POST …/inbox/archive`: `{"ids"}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxMark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 100)]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

impl InboxMark {
    /// The ids to mark, or `None` for all; `all_allowed` is false for archive.
    pub fn target(&self, all_allowed: bool) -> Result<Option<&[String]>, String> {
        match (&self.ids, self.all) {
            (Some(_), Some(true)) => Err("give ids or all, not both".into()),
            (Some(ids), _) if ids.is_empty() => Err("ids: name at least one message".into()),
            (Some(ids), _) if ids.len() > MAX_MARK_IDS => {
                Err(format!("ids: at most {MAX_MARK_IDS} at once"))
            }
            (Some(ids), _) => {
                for id in ids {
                    if id.is_empty()
                        || id.len() > 64
                        || !id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                    {
                        return Err(format!("ids: '{id}' is not a message id"));
                    }
                }
                Ok(Some(ids))
            }
            (None, Some(true)) if all_allowed => Ok(None),
            (None, Some(true)) => Err("all: archive takes ids".into()),
            _ if all_allowed => Err("ids: give the ids to mark, or \"all\": true".into()),
            _ => Err("ids: give the ids to archive".into()),
        }
    }
}

/// What a mark came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxMarked {
    /// The ids marked now (already marked ones are left out).
    pub ids: Vec<String>,
    pub unread: u64,
}
