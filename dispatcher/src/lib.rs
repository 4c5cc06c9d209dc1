//! Herald's dispatcher: `api` (HTTP), `pipeline` (accept → route → deliver), `scheduler`
//! (priority lanes and retry timing), `channels` (in-app, email, SMS). It reaches the rest
//! of Herald only through the engine's `Store`, `History` and `Bus`.

pub mod alerts;
pub mod api;
pub mod channels;
pub mod console;
pub mod error;
pub mod inbox;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod ordering;
pub mod pipeline;
pub mod scheduler;
pub mod stages;
pub mod strict_json;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_common::auth::ApiKeys;
use herald_common::config::Config;
use herald_common::events::ReadReceipt;
use herald_common::subjects::Subjects;
use herald_engine::store::Templates;
use herald_engine::{Bus, Devices, History, JobQueue, Slots, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use api::ApiState;
pub use api::PresenceSource;
use channels::chat::Chat;
use channels::providers::{Providers, Registry};
use channels::push::{Push, PushProvider, PushProviders};
use channels::{Channel, ChannelClients, Channels, email::Email, in_app::InApp, sms::SmsChannel};
use pipeline::{Pipeline, PipelineConfig, PipelineParts};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Email(#[from] channels::email::EmailSetupError),
    #[error(transparent)]
    Sms(#[from] channels::sms::SmsSetupError),
    #[error("{0}")]
    Push(String),
    #[error("{0}")]
    Client(String),
    #[error("cannot load unfinished deliveries: {0}")]
    Store(#[from] StoreError),
    #[error("cannot subscribe to read receipts: {0}")]
    Bus(String),
}

/// The engine a dispatcher runs on.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub history: Arc<dyn History>,
    pub devices: Arc<dyn Devices>,
    pub slots: Arc<dyn Slots>,
    pub templates: Arc<dyn Templates>,
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn JobQueue>,
    pub presence: Arc<dyn PresenceSource>,
    pub hooks: Arc<dyn herald_engine::Webhooks>,
    pub inbox: Arc<dyn herald_engine::Inbox>,
    pub keys: Arc<dyn herald_engine::Keys>,
}

/// A running dispatcher: delivery workers plus the API router.
pub struct Dispatcher {
    state: Arc<ApiState>,
    tracker: TaskTracker,
}

/// The push providers the configuration names, per platform (reading their key files).
pub fn push_providers(
    config: &Config,
    registry: &Registry,
) -> Result<(PushProviders, Option<String>), StartError> {
    let clients = ChannelClients::of(config);
    let push = &config.push;
    let fail = |what: &str, name: &str, e: String| {
        StartError::Push(format!("{what} provider '{name}': {e}"))
    };
    let mut fcm: Vec<(_, &'static str, Box<dyn PushProvider>)> = Vec::new();
    for c in &push.fcm {
        let p = channels::push::fcm::Fcm::new(c, &clients.push)
            .map_err(|e| fail("FCM", &c.id.name, e))?;
        fcm.push((c.id.clone(), "fcm", Box::new(p)));
    }
    let mut apns: Vec<(_, &'static str, Box<dyn PushProvider>)> = Vec::new();
    for c in &push.apns {
        let p = channels::push::apns::Apns::new(c, &clients.push)
            .map_err(|e| fail("APNs", &c.id.name, e))?;
        apns.push((c.id.clone(), "apns", Box::new(p)));
    }
    let mut webpush: Vec<(_, &'static str, Box<dyn PushProvider>)> = Vec::new();
    let mut public_key = None;
    for c in &push.webpush {
        let p = channels::push::webpush::WebPush::new(c, &clients.push)
            .map_err(|e| fail("Web Push", &c.id.name, e))?;
        public_key.get_or_insert_with(|| p.public_key().to_string());
        webpush.push((c.id.clone(), "webpush", Box::new(p)));
    }
    let circuit = config.circuit;
    Ok((
        PushProviders {
            fcm: Providers::new(
                herald_common::api::ChannelKind::Push,
                fcm,
                circuit,
                registry,
            ),
            apns: Providers::new(
                herald_common::api::ChannelKind::Push,
                apns,
                circuit,
                registry,
            ),
            webpush: Providers::new(
                herald_common::api::ChannelKind::Push,
                webpush,
                circuit,
                registry,
            ),
        },
        public_key,
    ))
}

/// The channels the configuration asks for, their providers registered in `registry`.
/// Also the Web Push public key, when Web Push is configured.
pub fn channels_from(
    config: &Config,
    engine: &Engine,
    subjects: Subjects,
    registry: &Registry,
) -> Result<(Channels, Option<String>), StartError> {
    let clients = ChannelClients::of(config);
    let email = Email::new(
        &config.email,
        config.outbox_dir(),
        config.smtp_timeout,
        &channels::email::Security::of(config),
        config.circuit,
        registry,
    )?
    .with_unsubscribe(
        stages::unsubscribe::Unsubscribe::from_config(config),
        &config.critical_categories,
    );
    let sms = SmsChannel::new(
        &config.sms,
        config.outbox_dir(),
        &clients.sms,
        config.circuit,
        registry,
    )?;
    let (push, public_key) = push_providers(config, registry)?;
    let mut list: Vec<Arc<dyn Channel>> = vec![
        Arc::new(InApp::new(
            Arc::clone(&engine.bus),
            Arc::clone(&engine.history),
            subjects,
        )),
        Arc::new(Push::new(Arc::clone(&engine.devices), push)),
        Arc::new(email),
        Arc::new(sms),
    ];
    for chat in Chat::all(&clients.chat, Arc::clone(&engine.slots)).map_err(StartError::Client)? {
        list.push(Arc::new(chat));
    }
    Ok((Channels::new(list), public_key))
}

/// Everything `herald check-config` reports: what would be used, without secrets.
pub struct ConfigSummary {
    pub lines: Vec<String>,
}

/// Loads and checks every provider the configuration names — key files read and parsed,
/// clients built — without connecting anywhere, and says what is configured.
pub fn check_config(config: &Config) -> Result<ConfigSummary, StartError> {
    let registry = Registry::default();
    let clients = ChannelClients::of(config);
    Email::check(&config.email, &channels::email::Security::of(config))?;
    SmsChannel::new(
        &config.sms,
        config.outbox_dir(),
        &clients.sms,
        config.circuit,
        &registry,
    )?;
    let (_, public_key) = push_providers(config, &registry)?;
    clients
        .chat
        .build(false)
        .map_err(|e| StartError::Client(e.to_string()))?;
    let mut lines = vec![format!(
        "default channels: {}",
        config
            .default_channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    for e in &config.email {
        lines.push(match &e.url {
            Some(_) => format!("email: provider '{}' (smtp, from {})", e.id.name, e.from),
            None => format!(
                "email: provider '{}' (outbox: mail is filed in {})",
                e.id.name,
                config.outbox_dir().display()
            ),
        });
    }
    for p in registry.stats() {
        lines.push(format!("{}: provider '{}' ({})", p.channel, p.name, p.kind));
    }
    if let Some(k) = public_key {
        lines.push(format!("webpush: VAPID public key {k}"));
    }
    for cap in &config.caps {
        lines.push(format!(
            "cap: at most {} '{}' per user per {} s",
            cap.per_user, cap.category, cap.window_s
        ));
    }
    lines.push("chat: dingtalk, feishu, wecom, slack, webhook (addresses from profiles)".into());
    Ok(ConfigSummary { lines })
}

impl Dispatcher {
    /// Starts delivery (resuming unfinished work first) and read-receipt handling.
    pub async fn start(
        config: &Config,
        engine: Engine,
        shutdown: CancellationToken,
    ) -> Result<Dispatcher, StartError> {
        let subjects = Subjects::new(config.nats_prefix.clone());
        let providers = Registry::default();
        let (channels, webpush_key) = channels_from(config, &engine, subjects.clone(), &providers)?;
        let tracker = TaskTracker::new();
        let hook_client = channels::ClientOptions {
            timeout: config.webhooks.timeout,
            ca_file: config.tls_ca_file.clone(),
        }
        .build(false)
        .map_err(|e| StartError::Client(e.to_string()))?;
        let hooks = webhooks::Hooks::start(
            Arc::clone(&engine.hooks),
            hook_client,
            config.webhooks.clone(),
            alerts::Alerts::new(config.alerts.clone()),
            shutdown.clone(),
            &tracker,
        )
        .await?;
        let pipeline = Pipeline::new(
            PipelineParts {
                store: Arc::clone(&engine.store),
                templates: Arc::clone(&engine.templates),
                slots: Arc::clone(&engine.slots),
                bus: Arc::clone(&engine.bus),
                queue: Arc::clone(&engine.queue),
                hooks: Some(Arc::clone(&hooks)),
            },
            subjects.clone(),
            channels,
            PipelineConfig {
                alerts: config.alerts.clone(),
                default_channels: config.default_channels.clone(),
                ack_timeout: config.ack_timeout,
                retry: config.retry.clone(),
                lane_concurrency: config.lane_concurrency,
                critical_categories: config.critical_categories.clone(),
                quiet_hours: config.quiet_hours.clone(),
                default_timezone: config.default_timezone.clone(),
                caps: config.caps.clone(),
            },
        );
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
        let inbox = Arc::new(inbox::InboxService {
            history: Arc::clone(&engine.history),
            marks: Arc::clone(&engine.inbox),
            bus: Arc::clone(&engine.bus),
            subjects: subjects.clone(),
            limit: config.inbox_limit as usize,
        });
        let dynamic_keys = keys::DynamicKeys::start(
            Arc::clone(&engine.keys),
            Arc::clone(&engine.bus),
            &subjects,
            shutdown.clone(),
            &tracker,
        )
        .await
        .map_err(StartError::Bus)?;
        let state = Arc::new(ApiState {
            pipeline,
            store: Arc::clone(&engine.store),
            history: engine.history,
            devices: engine.devices,
            max_devices: config.max_devices_per_user,
            providers,
            webpush_key,
            verifier: herald_common::auth::TokenVerifier::from_config(config)
                .map_err(StartError::Client)?,
            cors_origins: config.cors_origins.clone(),
            unsubscribe: stages::unsubscribe::Unsubscribe::from_config(config),
            bus: Arc::clone(&engine.bus),
            subjects: subjects.clone(),
            limiter: herald_common::ratelimit::KeyedLimiter::with_default(config.api_rate_limit),
            api_keys: ApiKeys::parse(&keys).map_err(StartError::Client)?,
            presence: engine.presence,
            topic_order: ordering::OrderLocks::new(256),
            minter: config
                .jwt_secret
                .as_ref()
                .map(|s| herald_common::auth::TokenMinter::hs256(s.expose())),
            public_ws_url: config.public_ws_url.clone(),
            hooks,
            inbox: Arc::clone(&inbox),
            keys: dynamic_keys,
        });
        let (tx, rx) = mpsc::channel(4096);
        let sub = engine
            .bus
            .queue_subscribe(&subjects.reads(), "herald-dispatchers", tx)
            .await
            .map_err(|e| StartError::Bus(e.to_string()))?;
        tracker.spawn(record_receipts(
            Arc::clone(&state.pipeline),
            inbox,
            rx,
            sub,
            shutdown,
        ));
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

async fn record_receipts(
    pipeline: Arc<Pipeline>,
    inbox: Arc<inbox::InboxService>,
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
            tracing::warn!("ignoring a malformed receipt");
            continue;
        };
        if let Err(e) = pipeline.receipt(&receipt).await {
            tracing::warn!(message_id = %receipt.id, error = %e, "could not record a receipt");
        }
        if receipt.kind == herald_common::events::Receipt::Read
            && let Err(e) = inbox.read_on_session(&receipt.user_id, &receipt.id).await
        {
            tracing::warn!(message_id = %receipt.id, error = %e, "could not mark an inbox read");
        }
    }
}
