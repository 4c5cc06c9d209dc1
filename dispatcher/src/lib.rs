//! Herald's dispatcher: `api` (HTTP), `pipeline` (accept → route → deliver), `scheduler`
//! (priority lanes and retry timing), `channels` (in-app, email, SMS). It reaches the rest
//! of Herald only through the engine's `Store`, `History` and `Bus`.

pub mod alerts;
pub mod api;
pub mod channels;
pub mod console;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod ordering;
pub mod pipeline;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_common::auth::ApiKeys;
use herald_common::config::Config;
use herald_common::events::ReadReceipt;
use herald_common::subjects::Subjects;
use herald_engine::{Bus, History, JobQueue, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use api::ApiState;
pub use api::PresenceSource;
use channels::{Channel, Channels, email::Email, in_app::InApp, sms::Sms};
use pipeline::{Pipeline, PipelineConfig};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Email(#[from] channels::email::EmailSetupError),
    #[error(transparent)]
    Sms(#[from] channels::sms::SmsSetupError),
    #[error("cannot load unfinished deliveries: {0}")]
    Store(#[from] StoreError),
    #[error("cannot subscribe to read receipts: {0}")]
    Bus(String),
}

/// The engine a dispatcher runs on.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub history: Arc<dyn History>,
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn JobQueue>,
    pub presence: Arc<dyn PresenceSource>,
}

/// A running dispatcher: delivery workers plus the API router.
pub struct Dispatcher {
    state: Arc<ApiState>,
    tracker: TaskTracker,
}

/// Builds the channels the configuration asks for.
pub fn channels_from(
    config: &Config,
    bus: Arc<dyn Bus>,
    history: Arc<dyn History>,
    subjects: Subjects,
) -> Result<Channels, StartError> {
    let email = match &config.smtp_url {
        Some(url) => Email::smtp(url.expose(), &config.smtp_from, config.smtp_timeout)?,
        None => Email::outbox(config.outbox_dir(), &config.smtp_from)?,
    };
    let sms = match &config.sms.url {
        Some(_) => Sms::http(config.sms.clone())?,
        None => Sms::outbox(config.outbox_dir()),
    };
    let list: Vec<Arc<dyn Channel>> = vec![
        Arc::new(InApp::new(bus, history, subjects)),
        Arc::new(email),
        Arc::new(sms),
    ];
    Ok(Channels::new(list))
}

impl Dispatcher {
    /// Starts delivery (resuming unfinished work first) and read-receipt handling.
    pub async fn start(
        config: &Config,
        engine: Engine,
        shutdown: CancellationToken,
    ) -> Result<Dispatcher, StartError> {
        let subjects = Subjects::new(config.nats_prefix.clone());
        let channels = channels_from(
            config,
            Arc::clone(&engine.bus),
            Arc::clone(&engine.history),
            subjects.clone(),
        )?;
        let pipeline = Pipeline::new(
            Arc::clone(&engine.store),
            Arc::clone(&engine.bus),
            subjects.clone(),
            channels,
            Arc::clone(&engine.queue),
            PipelineConfig {
                alerts: config.alerts.clone(),
                default_channels: config.default_channels.clone(),
                ack_timeout: config.ack_timeout,
                retry: config.retry.clone(),
                lane_concurrency: config.lane_concurrency,
            },
        );
        let tracker = TaskTracker::new();
        metrics::describe();
        tracker.spawn(metrics::sample(
            Arc::clone(&engine.queue),
            Arc::clone(&engine.store),
            shutdown.clone(),
        ));
        pipeline.start(shutdown.clone(), &tracker);
        let keys: Vec<String> = config
            .api_keys
            .iter()
            .map(|k| k.expose().to_string())
            .collect();
        let state = Arc::new(ApiState {
            pipeline,
            store: Arc::clone(&engine.store),
            history: engine.history,
            bus: Arc::clone(&engine.bus),
            subjects: subjects.clone(),
            limiter: herald_common::ratelimit::KeyedLimiter::new(config.api_rate_limit),
            api_keys: ApiKeys::new(&keys),
            presence: engine.presence,
            topic_order: ordering::OrderLocks::new(256),
            minter: config
                .jwt_secret
                .as_ref()
                .map(|s| herald_common::auth::TokenMinter::hs256(s.expose())),
            public_ws_url: config.public_ws_url.clone(),
        });
        let (tx, rx) = mpsc::channel(4096);
        let sub = engine
            .bus
            .queue_subscribe(&subjects.reads(), "herald-dispatchers", tx)
            .await
            .map_err(|e| StartError::Bus(e.to_string()))?;
        tracker.spawn(record_reads(engine.store, rx, sub, shutdown));
        Ok(Dispatcher { state, tracker })
    }

    pub fn router(&self) -> Router {
        api::router(Arc::clone(&self.state))
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.state.pipeline
    }

    /// Runs `fut` with the dispatcher's other tasks (waited for by [`Dispatcher::drained`]).
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(fut);
    }

    /// Waits for in-flight deliveries to finish, at most `timeout`. Unfinished ones stay
    /// recorded and resume on the next start.
    pub async fn drained(&self, timeout: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }
}

async fn record_reads(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<herald_engine::BusMsg>,
    _sub: herald_engine::Subscription,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => return },
            _ = shutdown.cancelled() => return,
        };
        let Ok(receipt) = serde_json::from_slice::<ReadReceipt>(&msg.payload) else {
            tracing::warn!("ignoring a malformed read receipt");
            continue;
        };
        if let Err(e) = store
            .mark_read(&receipt.id, &receipt.user_id, receipt.at)
            .await
        {
            tracing::warn!(message_id = %receipt.id, error = %e, "could not record read receipt");
        }
    }
}
