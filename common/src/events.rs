//! Payloads that travel on the bus between roles, and to backends (SPEC §5).

use serde::{Deserialize, Serialize};

use crate::api::{ChannelKind, RecipientStatus};

/// A recipient status change, published on `<prefix>.events.<status>`; also `read`, when
/// a session of the recipient first reports the message read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub id: String,
    pub user_id: String,
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    pub at: String,
}

/// What a status event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventStatus {
    /// A recipient's status (`delivered`, `sent`, `failed`, `canceled`…).
    Status(RecipientStatus),
    /// `read`.
    Receipt(ReadEvent),
}

/// The one receipt announced as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadEvent {
    Read,
}

impl EventStatus {
    pub const READ: EventStatus = EventStatus::Receipt(ReadEvent::Read);

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Status(s) => s.as_str(),
            EventStatus::Receipt(ReadEvent::Read) => "read",
        }
    }
}

impl From<RecipientStatus> for EventStatus {
    fn from(s: RecipientStatus) -> Self {
        EventStatus::Status(s)
    }
}

/// A receipt, from the gateway that saw it to the dispatchers (internal): a `read` frame,
/// or an `ack` that came after the dispatcher stopped waiting for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub id: String,
    pub user_id: String,
    /// Unix milliseconds.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Receipt::is_read")]
    pub kind: Receipt,
}

/// Which receipt a session sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receipt {
    #[default]
    Read,
    Ack,
}

impl Receipt {
    pub fn is_read(&self) -> bool {
        *self == Receipt::Read
    }
}

/// Payload of a presence query on a user's subject; each gateway holding the user answers
/// with its session count as decimal text.
pub const PRESENCE_QUERY: &[u8] = b"presence?";

/// How an inbox read notice to a user's sessions begins: `{"type":"read","ids":[…],
/// "unread":N}`, published on the user's subject; gateways pass it to every session as is.
pub const READ_NOTICE: &[u8] = br#"{"type":"read","#;

/// An inbox read notice (SPEC §11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadNotice {
    #[serde(rename = "type")]
    pub kind: String,
    pub ids: Vec<String>,
    pub unread: u64,
}

impl ReadNotice {
    pub fn new(ids: Vec<String>, unread: u64) -> ReadNotice {
        ReadNotice {
            kind: "read".into(),
            ids,
            unread,
        }
    }
}

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
