//! Payloads that travel on the bus between roles, and to backends (SPEC §5).

use serde::{Deserialize, Serialize};

use crate::api::{ChannelKind, RecipientStatus};

/// A recipient status change, published on `<prefix>.events.<status>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub id: String,
    pub user_id: String,
    pub status: RecipientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    pub at: String,
}

/// A read receipt, from the gateway that saw it to the dispatchers (internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub id: String,
    pub user_id: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// Payload of a presence query on a user's subject; each gateway holding the user answers
/// with its session count as decimal text.
pub const PRESENCE_QUERY: &[u8] = b"presence?";

/// A message on `<prefix>.send` that could not be accepted (published on
/// `<prefix>.events.rejected`): backends that publish there have no HTTP answer to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The stream sequence of the rejected publish.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    pub code: String,
    pub message: String,
}
