//! The cluster engine: NATS core is the bus; JetStream holds everything durable.
//!
//! | what | where |
//! | --- | --- |
//! | backend publishes (`<p>.send`) | stream `<P>_SEND` (work queue) |
//! | accepted messages (`<p>.ingest`) | stream `<P>_INGEST` (work queue) |
//! | delivery jobs (`<p>.jobs.<lane>`) | stream `<P>_JOBS` (work queue), one durable consumer per lane |
//! | inboxes (`<p>.inbox.<user>`) | stream `<P>_INBOX`, per-subject limit = inbox size, max age |
//! | topic histories (`<p>.history.<topic>`) | stream `<P>_TOPICS`, per-subject limit |
//! | dead letters (`<p>.dead`) | stream `<P>_DEAD`, 30 days |
//! | webhook deliveries (`<p>.hooks.<webhook>`) | stream `<P>_HOOKS` (work queue), one durable consumer per webhook |
//! | webhook delivery logs (`<p>.hooklog.<webhook>`) | stream `<P>_HOOKLOG`, per-subject limit, 30 days |
//! | message records, recipient states, users, idempotency keys, seq heads, devices, slots | key-value buckets |
//!
//! Every stream and bucket is created (or updated) on start, with the configured replicas.

pub mod bus;
mod devices;
pub mod hooks;
mod inbox;
mod keys;
mod kv_json;
pub mod queue;
pub mod store;
mod templates;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use herald_common::subjects::Subjects;

use crate::StoreError;
pub use bus::NatsBus;
pub use hooks::NatsHooks;
pub use queue::JetStreamQueue;
pub use store::NatsStore;

/// How long start-up waits for JetStream to become usable.
const SETUP_PATIENCE: Duration = Duration::from_secs(120);

/// How the cluster engine lays out its streams and buckets.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Comma-separated server URLs.
    pub url: String,
    pub prefix: String,
    /// Replicas of every stream and bucket.
    pub replicas: usize,
    pub inbox_limit: u64,
    pub inbox_max_age: Duration,
    pub topic_limit: u64,
    /// How long a dispatcher may hold a job without a sign of life.
    pub ack_wait: Duration,
    /// Connection name shown by the server.
    pub name: String,
}

/// The names of one deployment's streams and buckets.
#[derive(Debug, Clone)]
pub struct Names {
    pub send: String,
    pub ingest: String,
    pub jobs: String,
    pub inbox: String,
    pub topics: String,
    pub dead: String,
    pub messages: String,
    pub recipients: String,
    pub users: String,
    pub idempotency: String,
    pub heads: String,
    pub recent: String,
    pub devices: String,
    pub slots: String,
    pub cancel_keys: String,
    pub templates: String,
    pub hooks: String,
    pub hook_log: String,
    pub webhooks: String,
    pub inbox_marks: String,
    pub api_keys: String,
    pub key_usage: String,
}

impl Names {
    fn new(prefix: &str) -> Names {
        let up = prefix.replace(['.', '-'], "_").to_ascii_uppercase();
        let low = up.to_ascii_lowercase();
        Names {
            send: format!("{up}_SEND"),
            ingest: format!("{up}_INGEST"),
            jobs: format!("{up}_JOBS"),
            inbox: format!("{up}_INBOX"),
            topics: format!("{up}_TOPICS"),
            dead: format!("{up}_DEAD"),
            messages: format!("{low}_messages"),
            recipients: format!("{low}_recipients"),
            users: format!("{low}_users"),
            idempotency: format!("{low}_idempotency"),
            heads: format!("{low}_heads"),
            recent: format!("{low}_recent"),
            devices: format!("{low}_devices"),
            slots: format!("{low}_slots"),
            cancel_keys: format!("{low}_cancel_keys"),
            templates: format!("{low}_templates"),
            hooks: format!("{up}_HOOKS"),
            hook_log: format!("{up}_HOOKLOG"),
            webhooks: format!("{low}_webhooks"),
            inbox_marks: format!("{low}_inbox_marks"),
            api_keys: format!("{low}_api_keys"),
            key_usage: format!("{low}_key_usage"),
        }
    }
}

/// A connection to NATS with Herald's streams and buckets in place.
#[derive(Clone)]
pub struct NatsEngine {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub names: Names,
    pub options: NatsOptions,
    pub buckets: Buckets,
}

#[derive(Clone)]
pub struct Buckets {
    pub messages: kv::Store,
    pub recipients: kv::Store,
    pub users: kv::Store,
    pub idempotency: kv::Store,
    pub heads: kv::Store,
    /// Per user: the ids of the latest messages sent to them (for search).
    pub recent: kv::Store,
    /// Per user: their push devices.
    pub devices: kv::Store,
    /// Per slot key (caps, robot pace): the slots taken in the window.
    pub slots: kv::Store,
    /// Per cancel key: the messages accepted with it.
    pub cancel_keys: kv::Store,
    /// Template heads (`h.<name>`) and versions (`v.<name>.<version>`).
    pub templates: kv::Store,
    /// Status webhooks, by id.
    pub webhooks: kv::Store,
    /// Per user: which inbox messages were read or archived.
    pub inbox_marks: kv::Store,
    /// API keys created through the API (hashes), by name.
    pub api_keys: kv::Store,
    /// Per key and UTC day: messages sent (daily quotas).
    pub key_usage: kv::Store,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

impl NatsEngine {
    /// Connects (retrying while the servers come up) and creates or updates the layout.
    pub async fn connect(options: NatsOptions) -> Result<NatsEngine, StoreError> {
        let urls: Vec<async_nats::ServerAddr> = options
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| unavailable("HERALD_NATS_URL", e))?;
        let client = async_nats::ConnectOptions::new()
            .name(&options.name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(15)))
            .subscription_capacity(64 * 1024)
            .connect(urls)
            .await
            .map_err(|e| unavailable("cannot connect to NATS", e))?;
        let js = jetstream::new(client.clone());
        let names = Names::new(&options.prefix);
        let subjects = Subjects::new(options.prefix.clone());
        let buckets = patiently(|| {
            // Boxed: the set-up futures are large, and a caller's stack may be small.
            Box::pin(async {
                setup_streams(&js, &names, &subjects, &options).await?;
                setup_buckets(&js, &names, &options).await
            })
        })
        .await?;
        Ok(NatsEngine {
            client,
            js,
            subjects,
            names,
            options,
            buckets,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Runs a set-up step until it succeeds or [`SETUP_PATIENCE`] is spent. A NATS cluster
/// that is still electing its JetStream leader, or creating the assets another process
/// asked for a moment ago, answers nothing or times out: keep trying for a while rather
/// than fail the whole process.
pub(crate) async fn patiently<T, F, Fut>(mut step: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn setup_streams(
    js: &jetstream::Context,
    names: &Names,
    subjects: &Subjects,
    o: &NatsOptions,
) -> Result<(), StoreError> {
    let base = |name: &str, subject: String| stream::Config {
        name: name.to_string(),
        subjects: vec![subject],
        num_replicas: o.replicas,
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    };
    let work = |name: &str, subject: String| stream::Config {
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(600),
        ..base(name, subject)
    };
    let configs = [
        work(&names.send, subjects.send()),
        work(&names.ingest, subjects.ingest()),
        work(&names.jobs, format!("{}.jobs.*", subjects.prefix())),
        work(&names.hooks, format!("{}.hooks.*", subjects.prefix())),
        stream::Config {
            max_messages_per_subject: crate::hooks::LOG_LIMIT as i64,
            max_age: Duration::from_secs(30 * 86_400),
            ..base(&names.hook_log, format!("{}.hooklog.*", subjects.prefix()))
        },
        stream::Config {
            max_messages_per_subject: o.inbox_limit as i64,
            max_age: o.inbox_max_age,
            duplicate_window: Duration::from_secs(600),
            ..base(&names.inbox, format!("{}.inbox.*", subjects.prefix()))
        },
        stream::Config {
            max_age: Duration::from_secs(30 * 86_400),
            duplicate_window: Duration::from_secs(600),
            ..base(&names.dead, format!("{}.dead", subjects.prefix()))
        },
        stream::Config {
            max_messages_per_subject: o.topic_limit as i64,
            duplicate_window: Duration::from_secs(120),
            ..base(&names.topics, format!("{}.history.>", subjects.prefix()))
        },
    ];
    // Concurrently: on a NATS cluster each replicated stream elects its own leader, which
    // takes seconds; one after the other would add those up.
    // Existing streams are left alone unless their limits differ: with many processes
    // starting at once, needless updates only contend for the cluster's leader.
    let creations = configs.into_iter().map(|config| {
        Box::pin(async move {
            let name = config.name.clone();
            let fail = |e: &dyn std::fmt::Display| unavailable(&format!("stream {name}"), e);
            match js.get_stream(&name).await {
                Ok(mut existing) => {
                    let current = existing.info().await.map_err(|e| fail(&e))?.config.clone();
                    let differs = current.num_replicas != config.num_replicas
                        || current.max_messages_per_subject != config.max_messages_per_subject
                        || current.max_age != config.max_age
                        || current.subjects != config.subjects;
                    if differs {
                        js.update_stream(config).await.map_err(|e| fail(&e))?;
                    }
                    Ok(())
                }
                Err(_) => match js.create_stream(config.clone()).await {
                    Ok(_) => Ok(()),
                    // Another process created it a moment ago.
                    Err(_) if js.get_stream(&name).await.is_ok() => Ok(()),
                    Err(e) => Err(fail(&e)),
                },
            }
        })
    });
    futures::future::try_join_all(creations).await?;
    Ok(())
}

async fn setup_buckets(
    js: &jetstream::Context,
    names: &Names,
    o: &NatsOptions,
) -> Result<Buckets, StoreError> {
    let bucket = |name: &str, max_age: Duration| kv::Config {
        bucket: name.to_string(),
        history: 1,
        max_age,
        num_replicas: o.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let day = Duration::from_secs(86_400);
    let creations = [
        (&names.messages, day * 30),
        (&names.recipients, day * 30),
        (&names.users, Duration::ZERO),
        (&names.idempotency, day),
        (&names.heads, Duration::ZERO),
        (&names.recent, day * 30),
        (&names.devices, Duration::ZERO),
        (&names.slots, day * 31),
        (&names.cancel_keys, day * 400),
        (&names.templates, Duration::ZERO),
        (&names.webhooks, Duration::ZERO),
        (&names.inbox_marks, Duration::ZERO),
        (&names.api_keys, Duration::ZERO),
        (&names.key_usage, day * 3),
    ]
    .map(|(name, age)| {
        let config = bucket(name, age);
        Box::pin(async move {
            if let Ok(store) = js.get_key_value(name.as_str()).await {
                return Ok(store);
            }
            match js.create_key_value(config).await {
                Ok(store) => Ok(store),
                Err(e) => js
                    .get_key_value(name.as_str())
                    .await
                    .map_err(|_| unavailable(&format!("bucket {name}"), e)),
            }
        })
    });
    let out = futures::future::try_join_all(creations).await?;
    let mut it = out.into_iter();
    let mut next = || {
        it.next()
            .ok_or_else(|| StoreError::Backend("bucket setup".into()))
    };
    Ok(Buckets {
        messages: next()?,
        recipients: next()?,
        users: next()?,
        idempotency: next()?,
        heads: next()?,
        recent: next()?,
        devices: next()?,
        slots: next()?,
        cancel_keys: next()?,
        templates: next()?,
        webhooks: next()?,
        inbox_marks: next()?,
        api_keys: next()?,
        key_usage: next()?,
    })
}
