//! Fuzzes the WebSocket client-frame decoder: any text must decode or fail cleanly.
#![no_main]

use herald_common::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(frame) = ClientFrame::decode(text) {
            // What decodes re-encodes and decodes to the same frame.
            let again = serde_json::to_string(&frame).expect("encode");
            assert_eq!(ClientFrame::decode(&again).ok(), Some(frame));
        }
    }
});
