//! Fuzzes API request decoding and validation: send bodies, user profiles, topic publishes.
#![no_main]

use herald_common::api::{SendRequest, TopicPublish, UserProfile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<SendRequest>(data) {
        let _ = req.validate();
    }
    if let Ok(profile) = serde_json::from_slice::<UserProfile>(data) {
        let _ = profile.validate();
    }
    let _ = serde_json::from_slice::<TopicPublish>(data);
});
