//! The cluster engine's store: message records, recipient states, users and idempotency
//! keys in JetStream key-value buckets; inboxes and topic histories in streams with one
//! subject per user or topic and a gapless-enough per-subject `seq` kept in a head bucket.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use bytes::Bytes;
use herald_common::api::{
    ChannelKind, DeadLetter, DeadLetterPage, MessageStatus, MessageView, RecipientStatus,
    RecipientView, UserProfile,
};
use herald_common::ids::encode_kv_key;
use herald_common::protocol::MessageContent;
use herald_common::time::{now_ms, rfc3339};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::NatsEngine;
pub(crate) use super::kv_json::{
    backend, corrupt, create_json, get_json, get_json_confirmed, get_json_latest, hex, last_of,
    modify, next_of,
};
use crate::store::{
    AcceptOutcome, AttemptRecord, History, HistoryPage, IdempotencyClaim, JobNext, JobState,
    MessageRecord, PendingMessage, Receipt, Stop, Store, StoreError, StoreResult,
};

const HEADER_SEQ: &str = "Herald-Seq";
const HEADER_ID: &str = "Herald-Id";
const HEADER_EXPIRES: &str = "Herald-Expires";
const MSG_ID: &str = "Nats-Msg-Id";

/// A recipient's state, one key per recipient: `<message id>.<index>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RecipientEntry {
    pub user_id: String,
    pub status: RecipientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<i64>,
    /// Where delivery continues; `None` once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobState>,
    /// Set while a dispatcher runs the job (until this instant, Unix ms): a cancel does not
    /// stop a job that is being attempted (see [`Store::stop`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
}

impl RecipientEntry {
    /// A recipient before (or without) its first step.
    pub(crate) fn new(user_id: &str, status: RecipientStatus, job: Option<JobState>) -> Self {
        RecipientEntry {
            user_id: user_id.to_string(),
            status,
            channel: None,
            attempts: Vec::new(),
            read_at: None,
            acked_at: None,
            job,
            lease_until: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyEntry {
    hash: String,
    id: String,
    recipients: usize,
}

/// What travels on `<p>.ingest`: an accepted record and the idempotency key it claimed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IngestRecord {
    pub record: MessageRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

pub(crate) fn idempotency_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn recipient_key(message_id: &str, idx: u32) -> String {
    format!("{message_id}.{idx}")
}

#[derive(Clone)]
pub struct NatsStore {
    engine: NatsEngine,
    inbox: stream::Stream,
    topics: stream::Stream,
    dead: stream::Stream,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

fn seq_of(m: &jetstream::message::StreamMessage) -> u64 {
    header(&m.headers, HEADER_SEQ)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Which sequenced stream a history call is about.
#[derive(Clone, Copy)]
enum Kind {
    Inbox,
    Topic,
}

impl NatsStore {
    pub(crate) fn engine(&self) -> &NatsEngine {
        &self.engine
    }

    pub async fn new(engine: NatsEngine) -> Result<NatsStore, StoreError> {
        let inbox = engine
            .js
            .get_stream(&engine.names.inbox)
            .await
            .map_err(|e| backend("inbox stream", e))?;
        let topics = engine
            .js
            .get_stream(&engine.names.topics)
            .await
            .map_err(|e| backend("topics stream", e))?;
        let dead = engine
            .js
            .get_stream(&engine.names.dead)
            .await
            .map_err(|e| backend("dead-letter stream", e))?;
        Ok(NatsStore {
            engine,
            inbox,
            topics,
            dead,
        })
    }

    fn stream(&self, kind: Kind) -> &stream::Stream {
        match kind {
            Kind::Inbox => &self.inbox,
            Kind::Topic => &self.topics,
        }
    }

    fn subject(&self, kind: Kind, name: &str) -> String {
        match kind {
            Kind::Inbox => self.engine.subjects.inbox(name),
            Kind::Topic => self.engine.subjects.history(name),
        }
    }

    fn head_key(kind: Kind, name: &str) -> String {
        match kind {
            Kind::Inbox => format!("i.{}", encode_kv_key(name)),
            Kind::Topic => format!("t.{name}"),
        }
    }

    /// The newest entry of a subject, from the stream's leader, and its seq (once every
    /// entry has aged out: the one remembered in the head bucket, also from the leader).
    /// Not from any replica: a resume that took a lagging replica's head for the truth
    /// would answer `complete` without an entry the user's live delivery had already
    /// missed, and that entry would never come (seen in the cluster chaos run).
    async fn head(
        &self,
        kind: Kind,
        name: &str,
    ) -> StoreResult<(u64, Option<jetstream::message::StreamMessage>)> {
        let subject = self.subject(kind, name);
        match last_of(self.stream(kind), &subject, true).await? {
            Some(last) => Ok((seq_of(&last), Some(last))),
            None => {
                let kept =
                    get_json_latest::<u64>(&self.engine.buckets.heads, &Self::head_key(kind, name))
                        .await?;
                Ok((kept.map_or(0, |(h, _)| h), None))
            }
        }
    }

    /// Appends under optimistic concurrency: the publish names the subject's last stream
    /// sequence, so two writers cannot both take the same seq, and a repeat of the same
    /// message id is a JetStream duplicate that returns the seq it already has.
    async fn append(
        &self,
        kind: Kind,
        name: &str,
        content: &MessageContent,
        expires_at: Option<i64>,
    ) -> StoreResult<u64> {
        let subject = self.subject(kind, name);
        let stream = self.stream(kind);
        let head_key = Self::head_key(kind, name);
        let payload = Bytes::from(serde_json::to_vec(content).map_err(|e| corrupt("content", e))?);
        // After a conflict the replica that answered may lag: ask the leader from then on.
        let mut from_leader = false;
        for _ in 0..50 {
            let (last_stream_seq, last_seq) = match last_of(stream, &subject, from_leader).await? {
                Some(last) => {
                    if header(&last.headers, HEADER_ID) == Some(content.id.as_str()) {
                        return Ok(seq_of(&last));
                    }
                    (last.sequence, seq_of(&last))
                }
                None => {
                    let heads = &self.engine.buckets.heads;
                    let kept = match from_leader {
                        true => get_json_latest::<u64>(heads, &head_key).await?,
                        false => get_json::<u64>(heads, &head_key).await?,
                    };
                    (0, kept.map_or(0, |(h, _)| h))
                }
            };
            let seq = last_seq + 1;
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(format!("{head_key}.{}", content.id))
                .expected_last_subject_sequence(last_stream_seq)
                .header(HEADER_SEQ, seq.to_string().as_str())
                .header(HEADER_ID, content.id.as_str());
            if let Some(at) = expires_at {
                publish = publish.header(HEADER_EXPIRES, at.to_string().as_str());
            }
            let sent = self.engine.js.send_publish(subject.clone(), publish).await;
            let acked = match sent {
                Ok(future) => future.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) if ack.duplicate => {
                    let original = stream
                        .direct_get(ack.sequence)
                        .await
                        .map_err(|e| backend("history read", e))?;
                    return Ok(seq_of(&original));
                }
                Ok(_) => {
                    // Remembered for when every entry has aged out; best effort.
                    let _ = modify::<u64, ()>(&self.engine.buckets.heads, &head_key, |h| {
                        Ok((h.is_none_or(|h| h < seq).then_some(seq), ()))
                    })
                    .await;
                    return Ok(seq);
                }
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    from_leader = true;
                }
                Err(e) => return Err(backend("history publish", e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "{subject}: too much contention"
        )))
    }

    /// Entries of one subject with `seq > since`, oldest first, plus the first seq kept.
    /// The head comes from the leader and the entries from any replica up to it
    /// ([`next_of`] asks the leader what a lagging replica does not have yet), so a page
    /// holds every entry appended before the read began.
    async fn read(
        &self,
        kind: Kind,
        name: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let (head, last) = self.head(kind, name).await?;
        let empty = |complete| HistoryPage {
            entries: Vec::new(),
            head,
            complete,
        };
        if head <= since || limit == 0 {
            return Ok(empty(true));
        }
        // Everything was trimmed or expired.
        let Some(last) = last else {
            return Ok(empty(false));
        };
        let subject = self.subject(kind, name);
        let stream = self.stream(kind);
        let parse_seq = |m: &jetstream::message::StreamMessage| -> u64 {
            header(&m.headers, HEADER_SEQ)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let Some(first) = next_of(stream, &subject, 1).await? else {
            return Ok(empty(false));
        };
        let first_kept = parse_seq(&first);
        let complete = first_kept <= since + 1;
        // Per-subject seq grows with the stream sequence: binary-search the first entry
        // past `since` instead of reading everything before it.
        let mut start = first.sequence;
        if first_kept <= since {
            // Invariant: the entry at-or-after `lo` is <= since, the one at-or-after `hi` is past it.
            let (mut lo, mut hi) = (first.sequence, last.sequence);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let Some(m) = next_of(stream, &subject, mid).await? else {
                    break;
                };
                if parse_seq(&m) > since {
                    hi = mid;
                } else {
                    lo = m.sequence.max(mid);
                }
            }
            start = hi;
        }
        let now = now_ms();
        let mut entries = Vec::new();
        let mut from = start;
        while entries.len() < limit && from <= last.sequence {
            let Some(m) = next_of(stream, &subject, from).await? else {
                break;
            };
            from = m.sequence + 1;
            let seq = parse_seq(&m);
            let expired = header(&m.headers, HEADER_EXPIRES)
                .and_then(|s| s.parse::<i64>().ok())
                .is_some_and(|at| at <= now);
            if seq <= since || expired {
                continue;
            }
            let content: MessageContent =
                serde_json::from_slice(&m.payload).map_err(|e| corrupt("history entry", e))?;
            entries.push((seq, content));
        }
        entries.sort_by_key(|(seq, _)| *seq);
        Ok(HistoryPage {
            entries,
            head,
            complete,
        })
    }

    async fn recipient(&self, message_id: &str, idx: u32) -> StoreResult<Option<RecipientEntry>> {
        Ok(get_json_confirmed(
            &self.engine.buckets.recipients,
            &recipient_key(message_id, idx),
        )
        .await?
        .map(|(v, _)| v))
    }

    async fn claimed(&self, key: &str, hash: &str) -> StoreResult<Option<AcceptOutcome>> {
        Ok(
            get_json::<IdempotencyEntry>(&self.engine.buckets.idempotency, &idempotency_key(key))
                .await?
                .map(|(e, _)| {
                    if e.hash == hash {
                        AcceptOutcome::Duplicate {
                            message_id: e.id,
                            recipients: e.recipients,
                        }
                    } else {
                        AcceptOutcome::Conflict
                    }
                }),
        )
    }

    /// Files a recipient that ended failed or expired in the dead-letter stream (once:
    /// the publish is de-duplicated by recipient).
    async fn bury(&self, message_id: &str, idx: u32, entry: RecipientEntry) -> StoreResult<()> {
        let title = self.record(message_id).await?.and_then(|r| r.title);
        let letter = DeadLetter {
            id: message_id.to_string(),
            user_id: entry.user_id,
            status: entry.status,
            at: rfc3339(now_ms()),
            title,
            attempts: entry.attempts.iter().map(AttemptRecord::view).collect(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            MSG_ID,
            format!("dead.{}", recipient_key(message_id, idx)).as_str(),
        );
        let payload =
            Bytes::from(serde_json::to_vec(&letter).map_err(|e| corrupt("dead letter", e))?);
        self.engine
            .js
            .publish_with_headers(self.engine.subjects.dead(), headers, payload)
            .await
            .map_err(|e| backend("dead-letter publish", e))?
            .await
            .map_err(|e| backend("dead-letter ack", e))?;
        Ok(())
    }

    /// Notes that `message_id` went to `user_id` (the last 50 per user are kept).
    pub(crate) async fn remember_for_user(
        &self,
        user_id: &str,
        message_id: &str,
    ) -> StoreResult<()> {
        modify::<Vec<String>, ()>(
            &self.engine.buckets.recent,
            &encode_kv_key(user_id),
            |ids| {
                let mut ids = ids.unwrap_or_default();
                if ids.iter().any(|i| i == message_id) {
                    return Ok((None, ()));
                }
                ids.push(message_id.to_string());
                if ids.len() > 50 {
                    ids.remove(0);
                }
                Ok((Some(ids), ()))
            },
        )
        .await
    }

    /// Remembers a key's answer (first writer wins).
    pub(crate) async fn claim(
        &self,
        key: &str,
        hash: &str,
        record: &MessageRecord,
    ) -> StoreResult<()> {
        let entry = IdempotencyEntry {
            hash: hash.to_string(),
            id: record.id.clone(),
            recipients: record.recipients.len(),
        };
        create_json(
            &self.engine.buckets.idempotency,
            &idempotency_key(key),
            &entry,
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for NatsStore {
    /// Publishes the record to the ingest stream; `Ok` once JetStream acked it. The same
    /// idempotency key publishes with the same `Nats-Msg-Id`, so concurrent repeats collapse.
    async fn accept(
        &self,
        record: &MessageRecord,
        claim: Option<IdempotencyClaim>,
    ) -> StoreResult<AcceptOutcome> {
        let hash = claim.as_ref().map(|c| hex(&c.body_hash));
        if let (Some(c), Some(h)) = (&claim, &hash)
            && let Some(prior) = self.claimed(&c.key, h).await?
        {
            return Ok(prior);
        }
        // The record is readable (GET shows it pending) as soon as the answer is 202.
        create_json(&self.engine.buckets.messages, &record.id, record).await?;
        // A cancel right after the 202 must find the message by its key.
        if let Some(key) = &record.cancel_key {
            let entry = (record.id.clone(), record.recipients.len() as u32);
            modify::<Vec<(String, u32)>, ()>(
                &self.engine.buckets.cancel_keys,
                &idempotency_key(key),
                |list| {
                    let mut list = list.unwrap_or_default();
                    if list.contains(&entry) {
                        return Ok((None, ()));
                    }
                    list.push(entry.clone());
                    Ok((Some(list), ()))
                },
            )
            .await?;
        }
        let msg_id = match &claim {
            Some(c) => format!("idem.{}", idempotency_key(&c.key)),
            None => format!("msg.{}", record.id),
        };
        let ingest = IngestRecord {
            record: record.clone(),
            key: claim.as_ref().map(|c| c.key.clone()),
            hash: hash.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, msg_id.as_str());
        let payload = Bytes::from(serde_json::to_vec(&ingest).map_err(|e| corrupt("record", e))?);
        let ack = self
            .engine
            .js
            .publish_with_headers(self.engine.subjects.ingest(), headers, payload)
            .await
            .map_err(|e| backend("ingest publish", e))?
            .await
            .map_err(|e| backend("ingest ack", e))?;
        let (Some(c), Some(h)) = (&claim, &hash) else {
            return Ok(AcceptOutcome::Created);
        };
        if ack.duplicate {
            // Another request with this key won the race: answer what it got, once known.
            for _ in 0..20 {
                if let Some(prior) = self.claimed(&c.key, h).await? {
                    return Ok(prior);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return Ok(AcceptOutcome::InProgress);
        }
        self.claim(&c.key, h, record).await?;
        Ok(AcceptOutcome::Created)
    }

    async fn advance(
        &self,
        message_id: &str,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
    ) -> StoreResult<()> {
        let key = recipient_key(message_id, idx);
        let entry = modify::<RecipientEntry, RecipientEntry>(
            &self.engine.buckets.recipients,
            &key,
            |entry| {
                let Some(mut e) = entry else {
                    return Err(corrupt(&key, "no such recipient"));
                };
                if let Some(a) = &attempt {
                    e.attempts.push(a.clone());
                }
                match &next {
                    JobNext::Continue(state) => {
                        e.job = Some(state.clone());
                        if e.status == RecipientStatus::Scheduled {
                            e.status = RecipientStatus::Pending;
                        }
                    }
                    JobNext::Finish { status, channel } => {
                        e.status = *status;
                        e.channel = *channel;
                        e.job = None;
                        e.lease_until = None;
                    }
                }
                Ok((Some(e.clone()), e))
            },
        )
        .await?;
        if matches!(
            entry.status,
            RecipientStatus::Failed | RecipientStatus::Expired
        ) {
            self.bury(message_id, idx, entry).await?;
        }
        Ok(())
    }

    /// JetStream redelivers unfinished jobs by itself.
    async fn pending(&self) -> StoreResult<Vec<PendingMessage>> {
        Ok(Vec::new())
    }

    async fn message(&self, id: &str) -> StoreResult<Option<MessageView>> {
        let Some(record) = self.record(id).await? else {
            return Ok(None);
        };
        let reads = (0..record.recipients.len() as u32).map(|i| self.recipient(&record.id, i));
        let entries = futures::future::try_join_all(reads).await?;
        let recipients: Vec<RecipientView> = record
            .recipients
            .iter()
            .zip(entries)
            .map(|(r, e)| match e {
                Some(e) => RecipientView {
                    user_id: e.user_id,
                    status: e.status,
                    channel: e.channel,
                    attempts: e.attempts.iter().map(AttemptRecord::view).collect(),
                    read_at: e.read_at.map(rfc3339),
                },
                // Accepted, not yet taken in by a dispatcher.
                None => RecipientView {
                    user_id: r.user_id.clone(),
                    status: RecipientStatus::Pending,
                    channel: None,
                    attempts: Vec::new(),
                    read_at: None,
                },
            })
            .collect();
        Ok(Some(MessageView {
            id: record.id.clone(),
            status: MessageStatus::derive(recipients.iter().map(|r| r.status)),
            created_at: rfc3339(record.created_at),
            priority: record.priority,
            sender: record.sender.clone(),
            recipients,
        }))
    }

    async fn record(&self, id: &str) -> StoreResult<Option<MessageRecord>> {
        Ok(get_json_confirmed(&self.engine.buckets.messages, id)
            .await?
            .map(|(v, _)| v))
    }

    async fn mark_receipt(
        &self,
        id: &str,
        user_id: &str,
        kind: Receipt,
        at: i64,
    ) -> StoreResult<Vec<u32>> {
        let Some(record) = self.record(id).await? else {
            return Ok(Vec::new());
        };
        let mut mine = Vec::new();
        for (idx, r) in record.recipients.iter().enumerate() {
            if r.user_id != user_id {
                continue;
            }
            let key = recipient_key(id, idx as u32);
            let first =
                modify::<RecipientEntry, bool>(&self.engine.buckets.recipients, &key, |entry| {
                    let Some(mut e) = entry else {
                        return Ok((None, false));
                    };
                    let slot = match kind {
                        Receipt::Read => &mut e.read_at,
                        Receipt::Ack => &mut e.acked_at,
                    };
                    if slot.is_some() {
                        return Ok((None, false));
                    }
                    *slot = Some(at);
                    Ok((Some(e), true))
                })
                .await?;
            if first {
                mine.push(idx as u32);
            }
        }
        Ok(mine)
    }

    async fn receipts(&self, id: &str, idx: u32) -> StoreResult<(Option<i64>, Option<i64>)> {
        Ok(self
            .recipient(id, idx)
            .await?
            .map_or((None, None), |e| (e.read_at, e.acked_at)))
    }

    async fn stop(&self, id: &str, idx: u32, stop: Stop, at: i64) -> StoreResult<bool> {
        let user_id = match self.record(id).await? {
            Some(r) => r.recipients.get(idx as usize).map(|r| r.user_id.clone()),
            None => None,
        };
        let Some(user_id) = user_id else {
            return Ok(false);
        };
        modify::<RecipientEntry, bool>(
            &self.engine.buckets.recipients,
            &recipient_key(id, idx),
            |entry| match entry {
                // Accepted, not yet taken in by a dispatcher: canceled before it starts
                // (the ingest then finds the recipient final).
                None if stop == Stop::Cancel => Ok((
                    Some(RecipientEntry::new(&user_id, stop.status(), None)),
                    true,
                )),
                None => Ok((None, false)),
                Some(mut e) => {
                    let running = e.lease_until.is_some_and(|until| until > at);
                    match &e.job {
                        Some(state) if !running && stop.applies(state) => {
                            e.status = stop.status();
                            e.channel = stop.channel().or(e.channel);
                            e.job = None;
                            e.lease_until = None;
                            Ok((Some(e), true))
                        }
                        _ => Ok((None, false)),
                    }
                }
            },
        )
        .await
    }

    async fn cancel_group(&self, cancel_key: &str) -> StoreResult<Vec<(String, u32)>> {
        Ok(get_json_latest::<Vec<(String, u32)>>(
            &self.engine.buckets.cancel_keys,
            &idempotency_key(cancel_key),
        )
        .await?
        .map(|(list, _)| list)
        .unwrap_or_default())
    }

    async fn put_user(&self, id: &str, profile: &UserProfile) -> StoreResult<()> {
        let bytes = Bytes::from(serde_json::to_vec(profile).map_err(|e| corrupt("profile", e))?);
        self.engine
            .buckets
            .users
            .put(encode_kv_key(id), bytes)
            .await
            .map_err(|e| backend("kv write", e))?;
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserProfile>> {
        Ok(get_json(&self.engine.buckets.users, &encode_kv_key(id))
            .await?
            .map(|(v, _)| v))
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let key = encode_kv_key(id);
        let existed = get_json::<UserProfile>(&self.engine.buckets.users, &key)
            .await?
            .is_some();
        if existed {
            self.engine
                .buckets
                .users
                .delete(&key)
                .await
                .map_err(|e| backend("kv delete", e))?;
        }
        Ok(existed)
    }

    async fn messages_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<MessageView>> {
        let ids = get_json::<Vec<String>>(&self.engine.buckets.recent, &encode_kv_key(user_id))
            .await?
            .map(|(ids, _)| ids)
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in ids.iter().rev().take(limit) {
            if let Some(view) = self.message(id).await? {
                out.push(view);
            }
        }
        Ok(out)
    }

    async fn dead_letters(
        &self,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<DeadLetterPage> {
        let info = self
            .dead
            .get_info()
            .await
            .map_err(|e| backend("dead letters", e))?;
        let first = info.state.first_sequence;
        let mut seq = match before.and_then(|b| b.parse::<u64>().ok()) {
            Some(b) => b.saturating_sub(1).min(info.state.last_sequence),
            None => info.state.last_sequence,
        };
        let mut items = Vec::new();
        let mut last = None;
        while seq >= first.max(1) && items.len() < limit {
            match self.dead.direct_get(seq).await {
                Ok(m) => {
                    if let Ok(d) = serde_json::from_slice::<DeadLetter>(&m.payload) {
                        items.push(d);
                        last = Some(seq);
                    }
                }
                Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => {}
                Err(e) => return Err(backend("dead letters", e)),
            }
            seq -= 1;
        }
        let next = (items.len() == limit)
            .then(|| last.map(|s| s.to_string()))
            .flatten();
        Ok(DeadLetterPage { items, next })
    }

    async fn is_ready(&self) -> bool {
        self.engine.is_connected()
    }
}

#[async_trait]
impl History for NatsStore {
    async fn append_inbox(
        &self,
        user_id: &str,
        content: &MessageContent,
        expires_at: Option<i64>,
    ) -> StoreResult<u64> {
        self.append(Kind::Inbox, user_id, content, expires_at).await
    }

    async fn read_inbox(
        &self,
        user_id: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        self.read(Kind::Inbox, user_id, since, limit).await
    }

    async fn append_topic(&self, topic: &str, content: &MessageContent) -> StoreResult<u64> {
        self.append(Kind::Topic, topic, content, None).await
    }

    async fn read_topic(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage> {
        self.read(Kind::Topic, topic, since, limit).await
    }
}
