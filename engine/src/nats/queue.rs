//! The cluster engine's job queue. Accepted records arrive on the ingest stream; whichever
//! dispatcher takes one writes its record and recipient states and publishes one job per
//! recipient to its lane's work-queue stream. Every dispatcher pulls from every lane; a job
//! is held (with progress acks while it runs) until settled: acked when final, or nak'd
//! with the retry's delay, so waiting retries hold no worker and survive any crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use herald_common::time::now_ms;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::NatsEngine;
use super::store::{
    IngestRecord, NatsStore, RecipientEntry, backend, create_json, get_json_confirmed, modify,
    recipient_key,
};
use crate::jobs::{Finished, Job, JobQueue, LANES, Lease, Settle, Settler};
use crate::store::{JobState, MessageRecord, StoreResult};

/// A job on a lane subject: which recipient of which message.
#[derive(Debug, Serialize, Deserialize)]
struct JobRef {
    id: String,
    idx: u32,
}

/// Records taken in at once by one dispatcher.
const INGEST_WORKERS: usize = 16;

/// Deliveries of a job whose record cannot be found before it is dropped (2 s apart).
const ORPHAN_DELIVERIES: i64 = 30;

type Consumer = async_nats::jetstream::consumer::Consumer<pull::Config>;

pub struct JetStreamQueue {
    engine: NatsEngine,
    store: NatsStore,
    /// Each lane's consumer and the jobs pulled, loaded and leased, not yet handed out.
    lanes: Vec<(Consumer, Mutex<std::collections::VecDeque<Lease>>)>,
    ingest: Consumer,
    sends: Consumer,
    records: Mutex<HashMap<String, Arc<MessageRecord>>>,
}

/// A publish a backend made on `<prefix>.send`, to be accepted like an HTTP send.
pub struct RawSend {
    pub payload: Bytes,
    /// Its `Nats-Msg-Id`, if it had one.
    pub msg_id: Option<String>,
    /// Its stream sequence.
    pub seq: u64,
    message: Message,
}

impl RawSend {
    /// Done with it (accepted, or rejected for good).
    pub async fn done(self) {
        if let Err(e) = self.message.ack().await {
            tracing::warn!(error = %e, "could not ack a send");
        }
    }

    /// Could not be handled now; it comes back after `delay`.
    pub async fn later(self, delay: Duration) {
        let _ = self.message.ack_with(AckKind::Nak(Some(delay))).await;
    }
}

/// Jobs one pull asks for at most. Pulled jobs are leased at once (their progress acks
/// start), so none ages toward `ack_wait` unseen.
const PULL_BATCH: usize = 64;

/// What the consumer has for us now: waits (up to 5 s at a time) for the first message,
/// then takes whatever else is available, up to `max`. `None` once `shutdown` fires.
pub(super) async fn fetch_batch(
    consumer: &Consumer,
    max: usize,
    shutdown: &CancellationToken,
) -> Option<Vec<Message>> {
    loop {
        let batch = tokio::select! {
            b = consumer.fetch().max_messages(max).expires(Duration::from_secs(5)).messages() => b,
            _ = shutdown.cancelled() => return None,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "fetch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.cancelled() => return None,
                }
            }
        };
        let mut got = Vec::new();
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = shutdown.cancelled() => return None,
            };
            match next {
                Some(Ok(m)) => got.push(m),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "fetch ended");
                    break;
                }
                None => break,
            }
        }
        if !got.is_empty() {
            return Some(got);
        }
    }
}

async fn fetch_one(consumer: &Consumer, shutdown: &CancellationToken) -> Option<Message> {
    fetch_batch(consumer, 1, shutdown).await?.pop()
}

fn durable(name: &str, filter: String, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_string()),
        filter_subject: filter,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: 100_000,
        ..Default::default()
    }
}

impl JetStreamQueue {
    /// Opens the queue's consumers (creating them if this is the first dispatcher),
    /// patiently: several dispatchers starting at once on a fresh cluster ask for the same
    /// consumers while their streams still elect leaders.
    pub async fn new(engine: NatsEngine, store: NatsStore) -> StoreResult<Arc<JetStreamQueue>> {
        super::patiently(|| Box::pin(Self::open(engine.clone(), store.clone()))).await
    }

    async fn open(engine: NatsEngine, store: NatsStore) -> StoreResult<Arc<JetStreamQueue>> {
        let ack_wait = engine.options.ack_wait;
        let js = &engine.js;
        let jobs = js
            .get_stream(&engine.names.jobs)
            .await
            .map_err(|e| backend("jobs stream", e))?;
        let mut lanes = Vec::new();
        for lane in 0..LANES {
            let name = format!("lane-{lane}");
            let consumer = jobs
                .get_or_create_consumer(&name, durable(&name, engine.subjects.jobs(lane), ack_wait))
                .await
                .map_err(|e| backend("lane consumer", e))?;
            lanes.push((consumer, Mutex::new(std::collections::VecDeque::new())));
        }
        let ingest = js
            .get_stream(&engine.names.ingest)
            .await
            .map_err(|e| backend("ingest stream", e))?
            .get_or_create_consumer(
                "ingest",
                durable("ingest", engine.subjects.ingest(), ack_wait),
            )
            .await
            .map_err(|e| backend("ingest consumer", e))?;
        let sends = js
            .get_stream(&engine.names.send)
            .await
            .map_err(|e| backend("send stream", e))?
            .get_or_create_consumer("send", durable("send", engine.subjects.send(), ack_wait))
            .await
            .map_err(|e| backend("send consumer", e))?;
        Ok(Arc::new(JetStreamQueue {
            engine,
            store,
            lanes,
            ingest,
            sends,
            records: Mutex::new(HashMap::new()),
        }))
    }

    /// Takes accepted records in and turns them into jobs, with `workers` at once, until
    /// `shutdown`.
    pub async fn run_ingest(self: Arc<Self>, shutdown: CancellationToken) {
        let workers: Vec<_> = (0..INGEST_WORKERS)
            .map(|_| tokio::spawn(Arc::clone(&self).ingest_worker(shutdown.clone())))
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }

    async fn ingest_worker(self: Arc<Self>, shutdown: CancellationToken) {
        while let Some(msg) = fetch_one(&self.ingest, &shutdown).await {
            let ingest: IngestRecord = match serde_json::from_slice(&msg.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "dropping an unreadable ingest record");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let id = ingest.record.id.clone();
            match self.materialize(ingest).await {
                Ok(()) => {
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(message_id = %id, error = %e, "could not ack ingest");
                    }
                }
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "ingest failed; will retry");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
    }

    /// Writes the record and recipient states and queues one job per recipient. Every step
    /// is idempotent, so a redelivered record changes nothing that was already done.
    async fn materialize(&self, ingest: IngestRecord) -> StoreResult<()> {
        let IngestRecord { record, key, hash } = ingest;
        let b = &self.engine.buckets;
        if let (Some(k), Some(h)) = (&key, &hash) {
            self.store.claim(k, h, &record).await?;
        }
        create_json(&b.messages, &record.id, &record).await?;
        for (idx, r) in record.recipients.iter().enumerate() {
            let entry = RecipientEntry::new(
                &r.user_id,
                record.first_status(),
                Some(JobState::start(idx as u32, record.first_due())),
            );
            create_json(
                &b.recipients,
                &recipient_key(&record.id, idx as u32),
                &entry,
            )
            .await?;
            self.store.remember_for_user(&r.user_id, &record.id).await?;
        }
        let lane = record.priority.lane();
        let mut acks = Vec::new();
        for idx in 0..record.recipients.len() as u32 {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("job.{}.{idx}", record.id).as_str());
            let payload = serde_json::to_vec(&JobRef {
                id: record.id.clone(),
                idx,
            })
            .map_err(|e| backend("job", e))?;
            let ack = self
                .engine
                .js
                .publish_with_headers(
                    self.engine.subjects.jobs(lane),
                    headers,
                    Bytes::from(payload),
                )
                .await
                .map_err(|e| backend("job publish", e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| backend("job ack", e))?;
        }
        self.remember(Arc::new(record));
        Ok(())
    }

    fn remember(&self, record: Arc<MessageRecord>) {
        if let Ok(mut cache) = self.records.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(record.id.clone(), record);
        }
    }

    /// A message's record: records never change, so any replica's copy will do, but only
    /// the leader can say there is none.
    async fn record(&self, id: &str) -> StoreResult<Option<Arc<MessageRecord>>> {
        if let Some(r) = self.records.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(Some(r));
        }
        let Some((record, _)) =
            get_json_confirmed::<MessageRecord>(&self.engine.buckets.messages, id).await?
        else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.remember(Arc::clone(&record));
        Ok(Some(record))
    }

    /// The next publish from a backend on `<prefix>.send`.
    pub async fn next_send(&self, shutdown: &CancellationToken) -> Option<RawSend> {
        let message = fetch_one(&self.sends, shutdown).await?;
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string());
        Some(RawSend {
            payload: message.payload.clone(),
            msg_id,
            seq,
            message,
        })
    }
}

/// How long a job's lease in its entry lasts at most: settling ends it sooner; a
/// dispatcher that dies mid-job leaves it to lapse (the job goes to another dispatcher
/// after `ack_wait` and is leased anew).
const LEASE: Duration = Duration::from_secs(600);

/// Keeps a running job's lease alive and settles it.
struct NatsSettler {
    message: Arc<Message>,
    keepalive: tokio::task::AbortHandle,
    recipients: async_nats::jetstream::kv::Store,
    key: String,
}

#[async_trait]
impl Settler for NatsSettler {
    async fn settle(self: Box<Self>, _message: Arc<MessageRecord>, _idx: u32, how: Settle) {
        self.keepalive.abort();
        let result = match how {
            Settle::Done => self.message.ack().await,
            Settle::Retry(state) => {
                // Waiting now (a retry, quiet hours, an escalation): a cancel may stop it.
                let released = modify::<RecipientEntry, ()>(&self.recipients, &self.key, |e| {
                    Ok((
                        e.map(|mut e| {
                            e.lease_until = None;
                            e
                        }),
                        (),
                    ))
                })
                .await;
                if let Err(e) = released {
                    tracing::warn!(error = %e, "could not release a job's lease; it lapses");
                }
                let delay = Duration::from_millis((state.due_at - now_ms()).max(0) as u64);
                self.message.ack_with(AckKind::Nak(Some(delay))).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not settle a job; it will be redelivered");
        }
    }
}

/// Settles a job that needs no lease kept: acked either way.
struct AckSettler(Message);

#[async_trait]
impl Settler for AckSettler {
    async fn settle(self: Box<Self>, _message: Arc<MessageRecord>, _idx: u32, _how: Settle) {
        if let Err(e) = self.0.ack().await {
            tracing::warn!(error = %e, "could not settle a job; it will be redelivered");
        }
    }
}

#[async_trait]
impl JobQueue for Arc<JetStreamQueue> {
    async fn depths(&self) -> [u64; LANES] {
        let mut out = [0; LANES];
        for (lane, (consumer, _)) in self.lanes.iter().enumerate() {
            if let Ok(info) = consumer.get_info().await {
                out[lane] = info.num_pending + info.num_ack_pending as u64;
            }
        }
        out
    }

    /// Accepting published the record to the ingest stream; jobs come from there.
    async fn enqueue_accepted(&self, _message: Arc<MessageRecord>) -> StoreResult<()> {
        Ok(())
    }

    /// Jobs are pulled in batches and loaded concurrently (each load is a round trip to the
    /// leader), then handed out in the order they came.
    async fn next(&self, lane: usize, shutdown: &CancellationToken) -> Option<Lease> {
        let (consumer, ready) = self.lanes.get(lane)?;
        loop {
            if let Some(lease) = ready.lock().ok().and_then(|mut r| r.pop_front()) {
                return Some(lease);
            }
            let batch = fetch_batch(consumer, PULL_BATCH, shutdown).await?;
            let leases =
                futures::future::join_all(batch.into_iter().map(|m| self.lease_of(m))).await;
            if let Ok(mut r) = ready.lock() {
                r.extend(leases.into_iter().flatten());
            }
        }
    }
}

impl JetStreamQueue {
    /// The lease of a pulled job, or `None` when it is not to run now (settled here: not
    /// due yet, already final, unreadable, or its record not found).
    async fn lease_of(&self, msg: Message) -> Option<Lease> {
        let Ok(job) = serde_json::from_slice::<JobRef>(&msg.payload) else {
            tracing::error!("dropping an unreadable job");
            let _ = msg.ack_with(AckKind::Term).await;
            return None;
        };
        // The job is leased in its recipient's entry (compare-and-set, so from the leader's
        // latest): a cancel does not stop a job being attempted, and a job never starts
        // after a cancel was recorded. A job not due yet is not leased.
        let key = recipient_key(&job.id, job.idx);
        let now = now_ms();
        let loaded = async {
            let record = self.record(&job.id).await?;
            let entry = modify::<RecipientEntry, Option<RecipientEntry>>(
                &self.engine.buckets.recipients,
                &key,
                |entry| match entry {
                    Some(mut e) if e.job.as_ref().is_some_and(|j| j.due_at - now <= 20) => {
                        e.lease_until = Some(now + LEASE.as_millis() as i64);
                        Ok((Some(e.clone()), Some(e)))
                    }
                    other => Ok((None, other)),
                },
            )
            .await?;
            StoreResult::Ok((record, entry))
        }
        .await;
        let (record, entry) = match loaded {
            Ok((Some(r), Some(e))) => (r, e),
            Ok(_) if msg.info().map_or(0, |i| i.delivered) < ORPHAN_DELIVERIES => {
                // Jobs are published after their record; give a lagging cluster time.
                tracing::warn!(message_id = %job.id, "job before its record; retrying later");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await;
                return None;
            }
            Ok(_) => {
                tracing::error!(message_id = %job.id, "job without a record; dropping it");
                let _ = msg.ack_with(AckKind::Term).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(message_id = %job.id, error = %e, "cannot load job; retrying later");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return None;
            }
        };
        let Some(state) = entry.job else {
            // Already final: a redelivery after the ack was lost, or after the dispatcher
            // that finished it died, perhaps before announcing it: announce it again.
            let redelivered = msg.info().map_or(0, |i| i.delivered) > 1;
            if !redelivered || !entry.status.is_final() {
                let _ = msg.ack().await;
                return None;
            }
            return Some(Lease::finished(
                Job {
                    message: record,
                    state: JobState::start(job.idx, now),
                },
                Box::new(AckSettler(msg)),
                Finished {
                    status: entry.status,
                    channel: entry.channel,
                },
            ));
        };
        let early = state.due_at - now_ms();
        if early > 20 {
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_millis(early as u64))))
                .await;
            return None;
        }
        let message = Arc::new(msg);
        let alive = Arc::clone(&message);
        let every = self.engine.options.ack_wait / 3;
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = alive.ack_with(AckKind::Progress).await;
            }
        })
        .abort_handle();
        Some(Lease::new(
            Job {
                message: record,
                state,
            },
            Box::new(NatsSettler {
                message,
                keepalive,
                recipients: self.engine.buckets.recipients.clone(),
                key,
            }),
        ))
    }
}
