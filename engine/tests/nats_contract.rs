//! The engine contract suite on the cluster engine, against a real `nats-server`.

#[path = "../../tests/support/nats.rs"]
mod nats_server;
mod suite;

use std::time::Duration;

use herald_engine::nats::{NatsBus, NatsEngine, NatsOptions, NatsStore};

async fn engine(url: &str, prefix: &str, limit: u64) -> NatsEngine {
    NatsEngine::connect(NatsOptions {
        url: url.to_string(),
        prefix: prefix.to_string(),
        replicas: 1,
        inbox_limit: limit,
        inbox_max_age: Duration::from_secs(3600),
        topic_limit: limit,
        ack_wait: Duration::from_secs(5),
        name: "contract".into(),
    })
    .await
    .expect("connect to nats")
}

#[tokio::test]
async fn nats_bus_contract() {
    let nats = nats_server::Nats::single();
    let e = engine(&nats.url(), "herald", 5).await;
    suite::bus_contract(&NatsBus::new(e.client.clone()).await.unwrap()).await;
}

#[tokio::test]
async fn nats_store_contract() {
    let nats = nats_server::Nats::single();
    let e = engine(&nats.url(), "herald", 5).await;
    let store = NatsStore::new(e.clone()).await.unwrap();
    // Accepted records become recipient states through the ingest stream.
    let queue = herald_engine::nats::JetStreamQueue::new(e, store.clone())
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(queue.run_ingest(shutdown.clone()));
    suite::store_contract(&store, false).await;
    suite::stops_contract(&store).await;
    suite::templates_contract(&store).await;
    shutdown.cancel();
}

#[tokio::test]
async fn nats_history_contract() {
    let nats = nats_server::Nats::single();
    let e = engine(&nats.url(), "herald", 5).await;
    suite::history_contract(&NatsStore::new(e).await.unwrap(), 5).await;
}

#[tokio::test]
async fn nats_devices_and_slots_contract() {
    let nats = nats_server::Nats::single();
    let e = engine(&nats.url(), "herald", 5).await;
    let store = NatsStore::new(e).await.unwrap();
    suite::devices_contract(&store).await;
    suite::slots_contract(&store).await;
}
