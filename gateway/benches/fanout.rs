//! Micro-benchmark of the fan-out path: one topic frame from the bus to N local sessions'
//! outboxes (parse the head once, share the bytes, push without awaiting).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_common::subjects::Subjects;
use herald_engine::{BusMsg, MemoryBus};
use herald_gateway::hub::{Hub, SessionShared};
use herald_gateway::outbox::{Outbound, Outbox};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fan-out one topic frame");
    for n in [100usize, 1_000, 10_000] {
        let (hub, _rx) = Hub::new(
            Arc::new(MemoryBus::new()),
            Subjects::new("herald"),
            32,
            Duration::ZERO,
        );
        let sessions: Vec<Arc<SessionShared>> = (0..n)
            .map(|i| {
                Arc::new(SessionShared {
                    id: i as u64,
                    user: Arc::from(format!("u{i}").as_str()),
                    outbox: Outbox::new(1 << 30),
                })
            })
            .collect();
        rt.block_on(async {
            for s in &sessions {
                hub.subscribe_topic("news", s).await.unwrap();
            }
        });
        let payload = Bytes::from(
            r#"{"type":"message","id":"01JD9ZQ8W0M5XK2W8N3P4Q5R6S","topic":"news","seq":57,"title":"0123456789012345678901234567890123456789","created_at":"2026-11-26T10:00:00Z"}"#,
        );
        let mut drained = Vec::new();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                hub.route(BusMsg {
                    subject: "herald.topic.news".into(),
                    reply: None,
                    payload: payload.clone(),
                });
                // Empty the outboxes so they never fill (the session task's job).
                for s in &sessions {
                    drained.clear();
                    s.outbox.drain(&mut drained);
                }
            })
        });
        let _: Option<Outbound> = None;
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
