//! Property tests for the decoders that face the outside world: whatever arrives, decoding
//! returns a value or an error — never a panic — and what Herald itself encodes decodes back.

use herald_common::api::SendRequest;
use herald_common::protocol::ClientFrame;
use herald_common::topic::{pattern_matches, validate_topic};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("id".to_string()),
                    Just("to".to_string()),
                    Just("title".to_string()),
                    Just("since".to_string()),
                    Just("topic".to_string()),
                    ".{0,8}".prop_map(String::from)
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_-]{1,6}", 1..5).prop_map(|t| t.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn frame_decoding_never_panics_on_text(text in ".{0,200}") {
        let _ = ClientFrame::decode(&text);
    }

    #[test]
    fn frame_decoding_never_panics_on_json(v in json()) {
        let _ = ClientFrame::decode(&v.to_string());
    }

    #[test]
    fn frames_round_trip(id in "[0-9A-Z]{1,26}", since in any::<u64>(), t in topic()) {
        for frame in [
            ClientFrame::Ack { id: id.clone() },
            ClientFrame::Read { id: id.clone() },
            ClientFrame::Resume { since },
            ClientFrame::Subscribe { topic: t.clone(), since: Some(since) },
            ClientFrame::Unsubscribe { topic: t.clone() },
            ClientFrame::Ping,
        ] {
            let text = serde_json::to_string(&frame).unwrap();
            prop_assert_eq!(ClientFrame::decode(&text), Ok(frame));
        }
    }

    #[test]
    fn request_decoding_and_validation_never_panic(v in json()) {
        if let Ok(req) = serde_json::from_value::<SendRequest>(v) {
            let _ = req.validate();
        }
    }

    #[test]
    fn request_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(req) = serde_json::from_slice::<SendRequest>(&bytes) {
            let _ = req.validate();
        }
    }

    #[test]
    fn valid_requests_validate(users in prop::collection::vec("[a-z0-9._@-]{1,20}", 1..10), title in "[a-zA-Z ]{0,10}[a-zA-Z]") {
        let req: SendRequest = serde_json::from_value(serde_json::json!({"to": users, "title": title})).unwrap();
        prop_assert_eq!(req.validate(), Ok(()));
    }

    #[test]
    fn topic_patterns_behave(t in topic()) {
        prop_assert!(validate_topic(&t).is_ok());
        prop_assert!(pattern_matches(&t, &t), "a topic matches itself");
        prop_assert!(pattern_matches(">", &t), "'>' matches everything");
        let first = t.split('.').next().unwrap();
        let depth = t.split('.').count();
        prop_assert_eq!(pattern_matches(&format!("{first}.>"), &t), depth > 1);
        let stars = vec!["*"; depth].join(".");
        prop_assert!(pattern_matches(&stars, &t), "one '*' per token matches");
        prop_assert!(!pattern_matches(&format!("{t}.x"), &t), "a longer pattern does not match");
    }
}
