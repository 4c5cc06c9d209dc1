//! `herald serve`: dispatcher and gateway in one process, API and `/ws` on one listener,
//! on the embedded engine (in-process bus + SQLite) — or on NATS when `HERALD_NATS_URL` is set.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_common::config::Config;
use herald_common::subjects::Subjects;
use herald_dispatcher::{Dispatcher, Engine, PresenceSource};
use herald_engine::sqlite::SqliteOptions;
use herald_engine::{Bus, LocalQueue, MemoryBus, SqliteStore, Store};
use herald_gateway::{Gateway, GatewayConfig, Hub};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops;

/// Presence straight from the one local hub.
struct LocalPresence(Arc<Hub>);

#[async_trait]
impl PresenceSource for LocalPresence {
    async fn sessions(&self, user_id: &str) -> Result<u64, String> {
        Ok(self.0.sessions_of(user_id) as u64)
    }

    async fn total_sessions(&self) -> Result<u64, String> {
        Ok(self.0.session_count())
    }
}

pub fn gateway_config(config: &Config, linger: Duration) -> GatewayConfig {
    GatewayConfig {
        heartbeat: config.heartbeat,
        limits: config.limits.clone(),
        drain: config.drain,
        inbox_limit: config.inbox_limit as usize,
        topic_history_limit: config.topic_history_limit as usize,
        linger,
    }
}

/// Runs until `shutdown` fires, then drains: sessions close with `1012` over the drain
/// window, in-flight deliveries finish (or stay recorded for the next start).
pub async fn run(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.nats_url.is_some() {
        return crate::cluster::run_serve(config, listener, metrics, shutdown).await;
    }
    let store = SqliteStore::open(
        &config.data_dir,
        SqliteOptions {
            inbox_limit: config.inbox_limit,
            topic_limit: config.topic_history_limit,
            sync_full: true,
            busy_timeout: config.sqlite_busy,
        },
    )?;
    let store = Arc::new(store);
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let subjects = Subjects::new(config.nats_prefix.clone());
    let gateway = Gateway::start(
        Arc::clone(&bus),
        store.clone(),
        crate::token_verifier(&config)?,
        subjects,
        gateway_config(&config, Duration::ZERO),
        shutdown.clone(),
    );
    let (queue, unfinished) = LocalQueue::recover(store.as_ref(), store.job_index()).await?;
    if unfinished > 0 {
        tracing::info!(jobs = unfinished, "resuming unfinished deliveries");
    }
    let dispatcher = Dispatcher::start(
        &config,
        Engine {
            store: store.clone(),
            history: store.clone(),
            devices: store.clone(),
            slots: store.clone(),
            templates: store.clone(),
            bus: Arc::clone(&bus),
            queue: Arc::new(queue),
            presence: Arc::new(LocalPresence(gateway.hub())),
            hooks: store.clone(),
            inbox: store.clone(),
            keys: store.clone(),
        },
        shutdown.clone(),
    )
    .await?;
    let ready_store = store.clone();
    let ready: ops::ReadyCheck = Arc::new(move || {
        let s = ready_store.clone();
        Box::pin(async move { s.is_ready().await })
    });
    let app = ops::with_fallbacks(
        dispatcher
            .router()
            .merge(gateway.router())
            .merge(ops::router(ready, metrics)),
    );
    let drain = config.drain;
    crate::http::serve_role(listener, app, &config, &shutdown).await;
    tracing::info!("draining sessions and deliveries");
    if !gateway.drained(drain + Duration::from_secs(3)).await {
        tracing::warn!("some sessions did not close within the drain window");
    }
    if !dispatcher.drained(Duration::from_secs(10)).await {
        tracing::warn!("some deliveries were still running; they resume on the next start");
    }
    Ok(())
}
