//! Micro-benchmark of the fan-out path: one topic frame from the bus to N local sessions'
//! sockets (parse the head once, share the bytes, one non-blocking send per session).
//! The sessions are real loopback sockets; their client ends are drained between
//! iterations, outside the timing.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_common::subjects::Subjects;
use herald_engine::{BusMsg, MemoryBus};
use herald_gateway::hub::{Hub, SessionShared};
use herald_gateway::wire::Wire;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

/// `n` connected pairs: the server ends as sessions of the hub, the client ends blocking-free.
fn sessions(
    rt: &tokio::runtime::Runtime,
    hub: &Arc<Hub>,
    n: usize,
) -> (Vec<Arc<SessionShared>>, Vec<std::net::TcpStream>) {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sessions = Vec::with_capacity(n);
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let client = std::net::TcpStream::connect(addr).unwrap();
            client.set_nonblocking(true).unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let config = WebSocketConfig::default().max_write_buffer_size(1 << 20);
            let ws = WebSocketContext::new(Role::Server, Some(config));
            let session = Arc::new(SessionShared {
                id: i as u64,
                user: Arc::from(format!("u{i}").as_str()),
                wire: Wire::new(ws, Arc::new(server), 1 << 20),
            });
            hub.subscribe_topic("news", &session).await.unwrap();
            session.wire.join_topic(Arc::from("news"), 0);
            sessions.push(session);
            clients.push(client);
        }
        (sessions, clients)
    })
}

fn bench(c: &mut Criterion) {
    // A runtime whose reactor runs in the background: socket readiness comes from it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fan-out one topic frame");
    let mut buf = vec![0u8; 64 * 1024];
    let mut seq = 0u64;
    for n in [100usize, 1_000, 5_000] {
        let (hub, _rx) = Hub::new(
            Arc::new(MemoryBus::new()),
            Subjects::new("herald"),
            32,
            Duration::ZERO,
        );
        let (_sessions, mut clients) = sessions(&rt, &hub, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seq += 1;
                    let payload = Bytes::from(format!(
                        r#"{{"type":"message","id":"01JD9ZQ8W0M5XK2W8N3P4Q5R6S","topic":"news","seq":{seq},"title":"0123456789012345678901234567890123456789","created_at":"2026-11-26T10:00:00Z"}}"#
                    ));
                    let started = Instant::now();
                    hub.route(BusMsg {
                        subject: "herald.topic.news".into(),
                        reply: None,
                        payload,
                    });
                    total += started.elapsed();
                    for client in &mut clients {
                        while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
                    }
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
