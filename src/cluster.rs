//! The cluster engine's roles: `herald dispatcher`, `herald gateway`, and `herald serve`
//! with `HERALD_NATS_URL` set (both roles in one process). NATS is the bus, JetStream the
//! store; presence is asked of every gateway over the bus.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_common::config::Config;
use herald_common::events::PRESENCE_QUERY;
use herald_common::subjects::Subjects;
use herald_dispatcher::{Dispatcher, Engine, PresenceSource};
use herald_engine::nats::{JetStreamQueue, NatsBus, NatsEngine, NatsOptions, NatsStore};
use herald_engine::{Bus, Store};
use herald_gateway::Gateway;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops;

/// How long a presence query waits for every gateway to answer.
const PRESENCE_WINDOW: Duration = Duration::from_millis(150);

/// Presence summed over every gateway's answer to a query on the user's subject. No
/// gateway holding the user means no responders: the answer is immediate.
struct ClusterPresence {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
}

#[async_trait]
impl PresenceSource for ClusterPresence {
    async fn sessions(&self, user_id: &str) -> Result<u64, String> {
        let replies = self
            .bus
            .gather(
                &self.subjects.user(user_id),
                Bytes::from_static(PRESENCE_QUERY),
                PRESENCE_WINDOW,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(sum_counts(&replies))
    }

    async fn total_sessions(&self) -> Result<u64, String> {
        let replies = self
            .bus
            .gather(
                &self.subjects.gateways(),
                Bytes::from_static(b"sessions?"),
                PRESENCE_WINDOW,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(sum_counts(&replies))
    }
}

/// Sums decimal counts answered by gateways.
fn sum_counts(replies: &[Bytes]) -> u64 {
    replies
        .iter()
        .filter_map(|r| std::str::from_utf8(r).ok()?.trim().parse::<u64>().ok())
        .sum()
}

/// A connected cluster engine.
pub struct Parts {
    pub engine: NatsEngine,
    pub bus: Arc<NatsBus>,
    pub store: Arc<NatsStore>,
}

pub async fn connect(config: &Config, role: &str) -> anyhow::Result<Parts> {
    let url = config
        .nats_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("HERALD_NATS_URL is not set"))?;
    let engine = NatsEngine::connect(NatsOptions {
        url,
        prefix: config.nats_prefix.clone(),
        replicas: config.nats_replicas,
        inbox_limit: config.inbox_limit,
        inbox_max_age: config.inbox_max_age,
        topic_limit: config.topic_history_limit,
        ack_wait: config.nats_ack_wait,
        name: format!("herald-{role}"),
    })
    .await?;
    let bus = Arc::new(NatsBus::new(engine.client.clone()).await?);
    let store = Arc::new(NatsStore::new(engine.clone()).await?);
    Ok(Parts { engine, bus, store })
}

fn ready(parts: &Parts) -> ops::ReadyCheck {
    let store = Arc::clone(&parts.store);
    Arc::new(move || {
        let s = Arc::clone(&store);
        Box::pin(async move { s.is_ready().await })
    })
}

async fn start_dispatcher(
    config: &Config,
    parts: &Parts,
    shutdown: &CancellationToken,
) -> anyhow::Result<Dispatcher> {
    let queue = JetStreamQueue::new(parts.engine.clone(), (*parts.store).clone()).await?;
    let bus: Arc<dyn Bus> = parts.bus.clone();
    let subjects = Subjects::new(config.nats_prefix.clone());
    let dispatcher = Dispatcher::start(
        config,
        Engine {
            store: parts.store.clone(),
            history: parts.store.clone(),
            devices: parts.store.clone(),
            slots: parts.store.clone(),
            templates: parts.store.clone(),
            bus: Arc::clone(&bus),
            queue: Arc::new(Arc::clone(&queue)),
            presence: Arc::new(ClusterPresence {
                bus: Arc::clone(&bus),
                subjects: subjects.clone(),
            }),
            hooks: Arc::new(herald_engine::nats::NatsHooks::new(parts.engine.clone()).await?),
            inbox: parts.store.clone(),
            keys: parts.store.clone(),
        },
        shutdown.clone(),
    )
    .await?;
    dispatcher.spawn(Arc::clone(&queue).run_ingest(shutdown.clone()));
    dispatcher.spawn(herald_dispatcher::ingest::run(
        queue,
        Arc::clone(dispatcher.pipeline()),
        bus,
        subjects,
        shutdown.clone(),
    ));
    Ok(dispatcher)
}

fn start_gateway(
    config: &Config,
    parts: &Parts,
    shutdown: &CancellationToken,
) -> anyhow::Result<Gateway> {
    Ok(Gateway::start(
        parts.bus.clone(),
        parts.store.clone(),
        crate::token_verifier(config)?,
        Subjects::new(config.nats_prefix.clone()),
        crate::serve::gateway_config(config, config.presence_linger),
        shutdown.clone(),
    ))
}

async fn drain(gateway: Option<&Gateway>, dispatcher: Option<&Dispatcher>, config: &Config) {
    if let Some(g) = gateway
        && !g.drained(config.drain + Duration::from_secs(3)).await
    {
        tracing::warn!("some sessions did not close within the drain window");
    }
    if let Some(d) = dispatcher
        && !d.drained(Duration::from_secs(10)).await
    {
        tracing::warn!(
            "some deliveries were still running; JetStream hands them to another dispatcher"
        );
    }
}

/// `herald dispatcher`: the API and delivery workers.
pub async fn run_dispatcher(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let parts = connect(&config, "dispatcher").await?;
    let dispatcher = start_dispatcher(&config, &parts, &shutdown).await?;
    let app = ops::with_fallbacks(
        dispatcher
            .router()
            .merge(ops::router(ready(&parts), metrics)),
    );
    crate::http::serve_role(listener, app, &config, &shutdown).await;
    drain(None, Some(&dispatcher), &config).await;
    Ok(())
}

/// `herald gateway`: WebSocket sessions.
pub async fn run_gateway(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let parts = connect(&config, "gateway").await?;
    let gateway = start_gateway(&config, &parts, &shutdown)?;
    let app = ops::with_fallbacks(gateway.router().merge(ops::router(ready(&parts), metrics)));
    crate::http::serve_role(listener, app, &config, &shutdown).await;
    drain(Some(&gateway), None, &config).await;
    Ok(())
}

/// `herald serve` on the cluster engine: both roles, one listener.
pub async fn run_serve(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let parts = connect(&config, "serve").await?;
    let gateway = start_gateway(&config, &parts, &shutdown)?;
    let dispatcher = start_dispatcher(&config, &parts, &shutdown).await?;
    let app = ops::with_fallbacks(
        dispatcher
            .router()
            .merge(gateway.router())
            .merge(ops::router(ready(&parts), metrics)),
    );
    crate::http::serve_role(listener, app, &config, &shutdown).await;
    drain(Some(&gateway), Some(&dispatcher), &config).await;
    Ok(())
}
