//! Micro-benchmarks of the wire protocol: encoding a message frame (done once per
//! broadcast), reading its head (once per gateway), decoding client frames (per frame).

use criterion::{Criterion, criterion_group, criterion_main};
use herald_common::protocol::{ClientFrame, FrameHead, MessageContent, MessageFrame};
use serde_json::value::RawValue;
use std::hint::black_box;

fn content() -> MessageContent {
    MessageContent {
        id: "01JD9ZQ8W0M5XK2W8N3P4Q5R6S".into(),
        title: Some("Order shipped".into()),
        body: Some("Your order #42 is on its way to you, expect it on Tuesday.".into()),
        data: Some(RawValue::from_string(r#"{"order_id":42,"carrier":"ups"}"#.into()).unwrap()),
        created_at: "2026-11-26T10:00:00.000Z".into(),
    }
}

fn bench(c: &mut Criterion) {
    let content = content();
    c.bench_function("encode topic frame (~200 B)", |b| {
        b.iter(|| black_box(MessageFrame::new(black_box(&content), Some("news"), 57).encode()))
    });
    let frame = MessageFrame::new(&content, Some("news"), 57).encode();
    c.bench_function("parse frame head (id, seq)", |b| {
        b.iter(|| black_box(FrameHead::parse(black_box(frame.as_bytes())).map(|h| h.seq)))
    });
    let ack = r#"{"type":"ack","id":"01JD9ZQ8W0M5XK2W8N3P4Q5R6S"}"#;
    c.bench_function("decode client ack", |b| {
        b.iter(|| black_box(ClientFrame::decode(black_box(ack))))
    });
    let sub = r#"{"type":"subscribe","topic":"team.42.alerts","since":1234}"#;
    c.bench_function("decode client subscribe", |b| {
        b.iter(|| black_box(ClientFrame::decode(black_box(sub))))
    });
    c.bench_function("decode malformed frame", |b| {
        b.iter(|| black_box(ClientFrame::decode(black_box("{\"type\":\"ack\""))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
