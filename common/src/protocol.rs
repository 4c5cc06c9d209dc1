//! The WebSocket protocol (SPEC §4): subprotocol `herald.v1`, JSON text frames, close codes.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The subprotocol a client should ask for.
pub const SUBPROTOCOL: &str = "herald.v1";

/// Close codes the gateway uses, as documented in SPEC §4.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// The client broke the WebSocket protocol (RFC 6455 §7.4.1).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client sent a frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server is restarting or draining: reconnect elsewhere.
    pub const RESTARTING: u16 = 1012;
    /// The token expired mid-session.
    pub const UNAUTHORIZED: u16 = 4001;
    /// A subscribe to a topic the token does not allow.
    pub const FORBIDDEN_TOPIC: u16 = 4003;
    /// The client cannot keep up (its outbound queue filled) or went silent.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The user already has the maximum number of sessions.
    pub const TOO_MANY_SESSIONS: u16 = 4009;
}

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Ack {
        id: String,
    },
    Read {
        id: String,
    },
    Resume {
        since: u64,
    },
    Subscribe {
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    Unsubscribe {
        topic: String,
    },
    Ping,
}

/// Why a client frame could not be decoded; the `code` goes into the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl ClientFrame {
    /// Decodes one text frame; any problem is a [`FrameError`], never a panic.
    pub fn decode(text: &str) -> Result<ClientFrame, FrameError> {
        #[derive(Deserialize)]
        struct Probe<'a> {
            #[serde(borrow, rename = "type")]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        let probe: Probe = serde_json::from_str(text).map_err(|e| FrameError {
            code: "invalid_json",
            message: format!("frame is not a JSON object: {e}"),
        })?;
        let Some(kind) = probe.kind else {
            return Err(FrameError {
                code: "invalid_frame",
                message: "frame has no 'type'".into(),
            });
        };
        if !matches!(
            kind.as_ref(),
            "ack" | "read" | "resume" | "subscribe" | "unsubscribe" | "ping"
        ) {
            return Err(FrameError {
                code: "unknown_type",
                message: format!("unknown frame type '{kind}'"),
            });
        }
        serde_json::from_str(text).map_err(|e| FrameError {
            code: "invalid_frame",
            message: format!("bad '{kind}' frame: {e}"),
        })
    }
}

/// A frame the server sends, other than messages (which [`MessageFrame`] encodes once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        session_id: String,
        user_id: String,
        heartbeat_s: u64,
    },
    Resumed {
        seq: u64,
        replayed: u64,
        complete: bool,
    },
    Subscribed {
        topic: String,
        seq: u64,
        /// Extension: present when the subscribe asked for `since`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replayed: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        complete: Option<bool>,
    },
    Unsubscribed {
        topic: String,
    },
    Pong,
    Error {
        code: String,
        message: String,
    },
}

impl ServerFrame {
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn encode(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The content of a message, as kept in inboxes and topic histories.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageContent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    pub created_at: String,
}

/// `{"type":"message",…}` as sent to clients: a personal message (no `topic`) or a topic one.
#[derive(Debug, Serialize)]
pub struct MessageFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    pub created_at: &'a str,
}

impl<'a> MessageFrame<'a> {
    pub fn new(content: &'a MessageContent, topic: Option<&'a str>, seq: u64) -> Self {
        MessageFrame {
            kind: "message",
            id: &content.id,
            topic,
            seq,
            title: content.title.as_deref(),
            body: content.body.as_deref(),
            data: content.data.as_deref(),
            created_at: &content.created_at,
        }
    }

    /// The frame's JSON text, encoded once and shared by every session that gets it.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The fields a gateway reads from an encoded message frame to route and de-duplicate it.
#[derive(Debug, Deserialize)]
pub struct FrameHead<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    pub seq: u64,
}

impl<'a> FrameHead<'a> {
    pub fn parse(frame: &'a [u8]) -> Option<FrameHead<'a>> {
        serde_json::from_slice(frame).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_frame() {
        assert_eq!(
            ClientFrame::decode(r#"{"type":"ack","id":"01J"}"#),
            Ok(ClientFrame::Ack { id: "01J".into() })
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"subscribe","topic":"news","since":50}"#),
            Ok(ClientFrame::Subscribe {
                topic: "news".into(),
                since: Some(50)
            })
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(
            ClientFrame::decode(r#"{"type":"resume","since":0}"#),
            Ok(ClientFrame::Resume { since: 0 })
        );
    }

    #[test]
    fn malformed_frames_are_errors_with_codes() {
        let code = |t: &str| ClientFrame::decode(t).unwrap_err().code;
        assert_eq!(code("not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_json");
        assert_eq!(code(r#"{"id":"x"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"ack"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"resume","since":-1}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":7}"#), "invalid_json");
    }

    #[test]
    fn message_frames_encode_as_the_spec_shows() {
        let content = MessageContent {
            id: "01J".into(),
            title: Some("Hi".into()),
            body: None,
            data: Some(RawValue::from_string(r#"{"a":1}"#.into()).unwrap()),
            created_at: "2026-11-26T10:00:00Z".into(),
        };
        let text = MessageFrame::new(&content, Some("news"), 57).encode();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"message","id":"01J","topic":"news","seq":57,
                "title":"Hi","data":{"a":1},"created_at":"2026-11-26T10:00:00Z"})
        );
        let head = FrameHead::parse(text.as_bytes()).unwrap();
        assert_eq!((head.id.as_ref(), head.seq), ("01J", 57));
    }
}
