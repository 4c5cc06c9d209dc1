//! The wire protocols the load generator's clients speak, one per system under test, and
//! the payload convention: every published message starts with its send time in
//! nanoseconds since the epoch, padded to the message size.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A payload of `size` bytes that starts with the current time.
pub fn payload(size: usize) -> String {
    let mut p = now_ns().to_string();
    while p.len() < size {
        p.push('x');
    }
    p
}

/// The send time at the start of `text` (digits up to the first non-digit).
pub fn sent_at(text: &[u8]) -> Option<u128> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits < 10 {
        return None;
    }
    std::str::from_utf8(&text[..digits]).ok()?.parse().ok()
}

/// Which system a client talks to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum System {
    /// Herald (`/ws`, subprotocol herald.v1).
    Herald,
    /// nats-server's WebSocket listener (NATS protocol over WebSocket).
    Nats,
    /// mosquitto's WebSocket listener (MQTT 3.1.1 over WebSocket).
    Mosquitto,
    /// Node's `ws` broadcast server (plain text frames).
    Node,
    /// The raw loop: pre-encoded frames, one write per frame per socket.
    Raw,
    /// A Herald-like broadcast server on tokio-tungstenite (Herald's WebSocket library).
    Tungstenite,
    /// The same server on tokio-websockets.
    TokioWebsockets,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Herald => "Herald",
            System::Nats => "nats-server WebSocket",
            System::Mosquitto => "mosquitto WebSocket",
            System::Node => "Node ws",
            System::Raw => "raw loop (one write per frame)",
            System::Tungstenite => "tokio-tungstenite loop",
            System::TokioWebsockets => "tokio-websockets loop",
        }
    }

    /// The name `--system` takes.
    pub fn arg(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Finds message payloads in what a server sent, per protocol.
pub fn payloads<'a>(system: System, frame: &'a [u8], out: &mut Vec<&'a [u8]>) {
    match system {
        System::Herald => {
            // {"type":"message",...,"title":"<payload>",...}: the title holds the payload.
            if let Some(i) = find(frame, b"\"title\":\"") {
                out.push(&frame[i + 9..]);
            }
        }
        System::Node | System::Raw | System::Tungstenite | System::TokioWebsockets => {
            out.push(frame)
        }
        System::Nats => {
            // Possibly several "MSG <subject> <sid> <len>\r\n<payload>\r\n" per frame.
            let mut rest = frame;
            while let Some(i) = find(rest, b"MSG ") {
                let after = &rest[i..];
                let Some(eol) = find(after, b"\r\n") else {
                    break;
                };
                let body = &after[eol + 2..];
                out.push(body);
                rest = body;
            }
        }
        System::Mosquitto => {
            // One or more MQTT PUBLISH packets (QoS 0).
            let mut rest = frame;
            while rest.len() > 2 {
                let kind = rest[0] >> 4;
                let (len, header) = match remaining_length(&rest[1..]) {
                    Some(v) => v,
                    None => break,
                };
                let start = 1 + header;
                if rest.len() < start + len {
                    break;
                }
                let packet = &rest[start..start + len];
                if kind == 3 && packet.len() >= 2 {
                    let topic_len = u16::from_be_bytes([packet[0], packet[1]]) as usize;
                    if packet.len() >= 2 + topic_len {
                        out.push(&packet[2 + topic_len..]);
                    }
                }
                rest = &rest[start + len..];
            }
        }
    }
}

/// Where `needle` starts in `hay` (SIMD search: a naive scan made the load generator's
/// workers spend more per Herald frame than per raw one, on the cores the server uses too).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn remaining_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().take(4).enumerate() {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn encode_remaining(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// MQTT 3.1.1 CONNECT (clean session) then SUBSCRIBE `topic` at QoS 0.
pub fn mqtt_connect_and_subscribe(client_id: &str, topic: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    out.push(0x10);
    encode_remaining(body.len(), &mut out);
    out.extend_from_slice(&body);
    let mut sub = vec![0, 1];
    sub.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    sub.extend_from_slice(topic.as_bytes());
    sub.push(0);
    out.push(0x82);
    encode_remaining(sub.len(), &mut out);
    out.extend_from_slice(&sub);
    out
}

/// MQTT 3.1.1 PUBLISH at QoS 0.
pub fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x30];
    encode_remaining(2 + topic.len() + payload.len(), &mut out);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_send_time() {
        let p = payload(100);
        assert_eq!(p.len(), 100);
        assert!(sent_at(p.as_bytes()).unwrap() <= now_ns());
    }

    #[test]
    fn finds_payloads_in_each_protocol() {
        let mut out = Vec::new();
        payloads(System::Herald, br#"{"type":"message","id":"x","topic":"b","seq":1,"title":"1234567890123xx","created_at":"t"}"#, &mut out);
        assert_eq!(sent_at(out[0]), Some(1234567890123));
        out.clear();
        payloads(
            System::Nats,
            b"MSG bench 1 15\r\n1234567890123xx\r\nMSG bench 1 15\r\n1234567890124xx\r\n",
            &mut out,
        );
        assert_eq!(
            out.iter().map(|p| sent_at(p).unwrap()).collect::<Vec<_>>(),
            vec![1234567890123, 1234567890124]
        );
        out.clear();
        let mut two = mqtt_publish("bench", b"1234567890123xx");
        two.extend(mqtt_publish("bench", b"1234567890125xx"));
        payloads(System::Mosquitto, &two, &mut out);
        assert_eq!(
            out.iter().map(|p| sent_at(p).unwrap()).collect::<Vec<_>>(),
            vec![1234567890123, 1234567890125]
        );
    }
}
