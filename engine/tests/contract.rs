//! The engine contract: one suite of checks that every bus and every store must pass.
//! Each check is a plain async function over the traits; the bottom of the file runs them
//! against the embedded engine (and, in `tests/cluster_engine.rs`, against NATS).

mod suite;

use herald_engine::{MemoryBus, SqliteStore, sqlite::SqliteOptions};

fn sqlite(dir: &tempfile::TempDir, limit: u64) -> SqliteStore {
    SqliteStore::open(
        dir.path(),
        SqliteOptions {
            inbox_limit: limit,
            topic_limit: limit,
            sync_full: false,
            ..Default::default()
        },
    )
    .expect("open sqlite")
}

#[tokio::test]
async fn memory_bus_contract() {
    suite::bus_contract(&MemoryBus::new()).await;
}

#[tokio::test]
async fn sqlite_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    suite::store_contract(&sqlite(&dir, 5), true).await;
}

#[tokio::test]
async fn sqlite_history_contract() {
    let dir = tempfile::tempdir().unwrap();
    suite::history_contract(&sqlite(&dir, 5), 5).await;
}

#[tokio::test]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let record = suite::record("m-reopen", &["alice", "bob"]);
    {
        let store = sqlite(&dir, 5);
        use herald_engine::Store;
        store.accept(&record, None).await.unwrap();
    }
    let store = sqlite(&dir, 5);
    use herald_engine::Store;
    let pending = store.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].jobs.len(), 2);
}

#[tokio::test]
async fn sqlite_devices_contract() {
    let dir = tempfile::tempdir().unwrap();
    suite::devices_contract(&sqlite(&dir, 5)).await;
}

#[tokio::test]
async fn sqlite_slots_contract() {
    let dir = tempfile::tempdir().unwrap();
    suite::slots_contract(&sqlite(&dir, 5)).await;
}

#[tokio::test]
async fn sqlite_stops_and_templates_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir, 5);
    suite::stops_contract(&store).await;
    suite::templates_contract(&store).await;
}
