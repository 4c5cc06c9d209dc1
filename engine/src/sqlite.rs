//! The embedded engine's store: one SQLite file (WAL) under `HERALD_DATA_DIR`.
//!
//! All writes go through one writer thread that group-commits: it takes every write waiting
//! in its queue, runs each in its own savepoint inside one transaction, commits once, and
//! only then answers the callers. So `Ok` from a write means "on disk", and a burst of
//! writes costs one fsync. Reads use a small pool of separate connections (WAL lets them
//! run beside the writer).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_common::api::{
    ChannelKind, DeadLetter, DeadLetterPage, MessageStatus, MessageView, Priority, RecipientStatus,
    RecipientView, UserProfile,
};
use herald_common::protocol::MessageContent;
use herald_common::time::{now_ms, rfc3339};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::store::{
    AcceptOutcome, AttemptRecord, History, HistoryPage, IdempotencyClaim, JobNext, JobState,
    MessageRecord, PendingMessage, Store, StoreError, StoreResult,
};

/// The most writes folded into one transaction.
const MAX_BATCH: usize = 1024;
/// Writes waiting for the writer thread before callers wait for room.
const WRITE_QUEUE: usize = 16 * 1024;
/// Reader threads, each with its own connection: the most reads that run at once.
const READERS: usize = 4;

type WriteJob = Box<dyn WriteOp>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// How the store keeps data.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Personal messages kept per user for `resume`.
    pub inbox_limit: u64,
    /// Messages kept per topic for recovery.
    pub topic_limit: u64,
    /// `true`: fsync every commit (survives power loss); `false`: survives process crashes.
    pub sync_full: bool,
    /// How long a write waits for a lock another process holds before failing.
    pub busy_timeout: std::time::Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            inbox_limit: 1000,
            topic_limit: 1000,
            sync_full: true,
            busy_timeout: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<WriteJob>,
    /// Reads go to [`READERS`] reader threads, each with its own connection: a storm of
    /// reads (thousands of sessions subscribing at once) queues here instead of growing the
    /// blocking pool and opening connections (both of which cost memory that stays).
    readers: std::sync::mpsc::Sender<ReadJob>,
    options: SqliteOptions,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(StoreError::Corrupt(e.to_string())))
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    priority TEXT NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT,
    read_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_by_user ON recipients (user_id);
CREATE INDEX IF NOT EXISTS recipients_dead ON recipients (updated_at, message_id, idx)
    WHERE status IN ('failed', 'expired');
CREATE TABLE IF NOT EXISTS attempts (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_message ON attempts (message_id, idx);
CREATE TABLE IF NOT EXISTS jobs (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    channel_idx INTEGER NOT NULL,
    channel_attempt INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    best_status TEXT,
    best_channel TEXT,
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    body_hash BLOB NOT NULL,
    message_id TEXT NOT NULL,
    recipients INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    kind INTEGER NOT NULL,
    name TEXT NOT NULL,
    head INTEGER NOT NULL,
    floor INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    user_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    content TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS inbox_by_message ON inbox (user_id, message_id);
CREATE TABLE IF NOT EXISTS topic_history (
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    content TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"#;

/// Which sequenced stream a history call is about.
#[derive(Clone, Copy)]
enum StreamKind {
    Inbox,
    Topic,
}

impl StreamKind {
    fn code(self) -> i64 {
        match self {
            StreamKind::Inbox => 0,
            StreamKind::Topic => 1,
        }
    }
    fn table(self) -> &'static str {
        match self {
            StreamKind::Inbox => "inbox",
            StreamKind::Topic => "topic_history",
        }
    }
    fn key(self) -> &'static str {
        match self {
            StreamKind::Inbox => "user_id",
            StreamKind::Topic => "topic",
        }
    }
}

fn open_connection(path: &Path, options: &SqliteOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if options.sync_full { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/herald.db` and starts the writer thread.
    pub fn open(dir: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("herald.db");
        let conn = open_connection(&path, &options)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        let (readers, jobs) = std::sync::mpsc::channel::<ReadJob>();
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..READERS {
            let conn = open_connection(&path, &options).map_err(|e| {
                StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
            })?;
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("herald-sqlite-r{n}"))
                .spawn(move || reader_loop(&conn, &jobs))
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader: {e}")))?;
        }
        Ok(SqliteStore {
            writer: tx,
            readers,
            options,
        })
    }

    /// Runs `f` on the writer connection inside the next group commit; answers after COMMIT.
    /// `f` may run twice: a second time if another write in its batch failed (see
    /// [`commit_batch`]).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: WriteJob = Box::new(Write {
            f,
            result: None,
            answer: tx,
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }

    /// Runs `f` on the next free reader thread's connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn).map_err(unwrap_store_error));
        });
        let failed = || StoreError::Unavailable("the read did not complete".into());
        self.readers.send(job).map_err(|_| failed())?;
        rx.await.map_err(|_| failed())?
    }
}

/// One reader thread: takes the next job (the queue is shared by all readers) until the
/// store is dropped.
fn reader_loop(conn: &Connection, jobs: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A read that panics fails only its caller (its answer channel is dropped);
            // the thread goes on serving the others.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
            }
            Err(_) => return,
        }
    }
}

fn unwrap_store_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::ToSqlConversionFailure(inner) = &e
        && let Some(se) = inner.downcast_ref::<StoreError>()
    {
        return se.clone();
    }
    backend(e)
}

/// One write waiting for the writer thread.
trait WriteOp: Send {
    /// Runs the write on the writer's connection; `false` if it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once its transaction committed (or did not).
    fn complete(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Write<F, T> {
    f: F,
    result: Option<rusqlite::Result<T>>,
    answer: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> WriteOp for Write<F, T>
where
    F: FnMut(&Connection) -> rusqlite::Result<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.f)(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn complete(self: Box<Self>, committed: Result<(), StoreError>) {
        let _ = self.answer.send(match (committed, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Ok(()), Some(Err(e))) => Err(unwrap_store_error(e)),
            (Ok(()), None) => Err(StoreError::Unavailable("the write did not run".into())),
        });
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch);
        for job in batch.drain(..) {
            job.complete(committed.clone());
        }
    }
}

/// Runs a batch of writes in one transaction, so they share one commit. A failing write
/// must not undo the others, but a savepoint per write costs a copy of every page it
/// touches; so the batch first runs without savepoints, and only if a write fails is the
/// transaction rolled back and the batch run again with each write in its own savepoint.
fn commit_batch(conn: &Connection, batch: &mut [WriteJob]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    if batch.iter_mut().all(|job| job.run(conn)) {
        return commit(conn);
    }
    let _ = conn.execute_batch("ROLLBACK");
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    for job in batch.iter_mut() {
        // Prepared once (cached): parsing these per write cost more than the writes.
        let savepoint = run_cached(conn, "SAVEPOINT op");
        let ok = job.run(conn);
        if savepoint.is_ok() {
            if !ok {
                let _ = run_cached(conn, "ROLLBACK TO op");
            }
            let _ = run_cached(conn, "RELEASE op");
        }
    }
    commit(conn)
}

fn commit(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = %e, "sqlite commit failed");
        backend(e)
    })
}

fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

fn status_of(text: &str) -> rusqlite::Result<RecipientStatus> {
    text.parse().map_err(corrupt)
}

fn channel_of(text: &str) -> rusqlite::Result<ChannelKind> {
    text.parse().map_err(corrupt)
}

fn append_stream(
    conn: &Connection,
    kind: StreamKind,
    name: &str,
    content: &MessageContent,
    expires_at: Option<i64>,
    limit: u64,
) -> rusqlite::Result<u64> {
    let (table, key) = (kind.table(), kind.key());
    if let Some(seq) = conn
        .prepare_cached(&format!(
            "SELECT seq FROM {table} WHERE {key} = ?1 AND message_id = ?2"
        ))?
        .query_row(params![name, content.id], |r| r.get::<_, i64>(0))
        .optional()?
    {
        return Ok(seq as u64);
    }
    let (head, floor) = stream_bounds(conn, kind, name)?;
    let seq = head + 1;
    let json = serde_json::to_string(content).map_err(corrupt)?;
    conn.prepare_cached(&format!(
        "INSERT INTO {table} ({key}, seq, message_id, content, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?
    .execute(params![name, seq as i64, content.id, json, expires_at])?;
    let new_floor = floor.max((seq + 1).saturating_sub(limit)).max(1);
    if new_floor > floor {
        conn.prepare_cached(&format!(
            "DELETE FROM {table} WHERE {key} = ?1 AND seq < ?2"
        ))?
        .execute(params![name, new_floor as i64])?;
    }
    conn.prepare_cached(
        "INSERT INTO streams (kind, name, head, floor) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, name) DO UPDATE SET head = excluded.head, floor = excluded.floor",
    )?
    .execute(params![kind.code(), name, seq as i64, new_floor as i64])?;
    Ok(seq)
}

/// `(head, floor)`: the newest seq, and the oldest seq still kept (1 until trimming starts).
fn stream_bounds(conn: &Connection, kind: StreamKind, name: &str) -> rusqlite::Result<(u64, u64)> {
    Ok(conn
        .prepare_cached("SELECT head, floor FROM streams WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind.code(), name], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .optional()?
        .unwrap_or((0, 1)))
}

fn read_stream(
    conn: &Connection,
    kind: StreamKind,
    name: &str,
    since: u64,
    limit: usize,
) -> rusqlite::Result<HistoryPage> {
    let (table, key) = (kind.table(), kind.key());
    let (head, floor) = stream_bounds(conn, kind, name)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seq, content FROM {table} WHERE {key} = ?1 AND seq > ?2
         AND (expires_at IS NULL OR expires_at > ?3) ORDER BY seq LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            name,
            since.min(i64::MAX as u64) as i64,
            now_ms(),
            limit as i64
        ],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
    )?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, json) = row?;
        let content: MessageContent = serde_json::from_str(&json).map_err(corrupt)?;
        entries.push((seq, content));
    }
    Ok(HistoryPage {
        entries,
        head,
        complete: since.saturating_add(1) >= floor || head <= since,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(
        &self,
        record: &MessageRecord,
        claim: Option<IdempotencyClaim>,
    ) -> StoreResult<AcceptOutcome> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?;
        let id = record.id.clone();
        let created_at = record.created_at;
        let priority = record.priority;
        let users: Vec<String> = record
            .recipients
            .iter()
            .map(|r| r.user_id.clone())
            .collect();
        self.write(move |c| {
            if let Some(claim) = &claim {
                let prior = c
                    .prepare_cached(
                        "SELECT body_hash, message_id, recipients FROM idempotency WHERE key = ?1",
                    )?
                    .query_row([&claim.key], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()?;
                if let Some((hash, message_id, recipients)) = prior {
                    return Ok(if hash == claim.body_hash {
                        AcceptOutcome::Duplicate {
                            message_id,
                            recipients: recipients as usize,
                        }
                    } else {
                        AcceptOutcome::Conflict
                    });
                }
                c.prepare_cached(
                    "INSERT INTO idempotency (key, body_hash, message_id, recipients, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    claim.key,
                    claim.body_hash,
                    id,
                    users.len() as i64,
                    created_at
                ])?;
            }
            c.prepare_cached(
                "INSERT INTO messages (id, created_at, priority, record) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, created_at, priority.as_str(), json])?;
            let mut recipient = c.prepare_cached(
                "INSERT INTO recipients (message_id, idx, user_id, status, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', ?4)",
            )?;
            let mut job = c.prepare_cached(
                "INSERT INTO jobs (message_id, idx, channel_idx, channel_attempt, due_at)
                 VALUES (?1, ?2, 0, 0, ?3)",
            )?;
            for (idx, user) in users.iter().enumerate() {
                recipient.execute(params![id, idx as i64, user, created_at])?;
                job.execute(params![id, idx as i64, created_at])?;
            }
            Ok(AcceptOutcome::Created)
        })
        .await
    }

    async fn advance(
        &self,
        message_id: &str,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
    ) -> StoreResult<()> {
        let message_id = message_id.to_string();
        self.write(move |c| {
            if let Some(a) = &attempt {
                c.prepare_cached(
                    "INSERT INTO attempts (message_id, idx, channel, outcome, detail, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    message_id,
                    idx,
                    a.channel.as_str(),
                    a.outcome.as_str(),
                    a.detail,
                    a.at
                ])?;
            }
            match &next {
                JobNext::Continue(s) => {
                    c.prepare_cached(
                        "UPDATE jobs SET channel_idx = ?3, channel_attempt = ?4, due_at = ?5,
                         best_status = ?6, best_channel = ?7 WHERE message_id = ?1 AND idx = ?2",
                    )?
                    .execute(params![
                        message_id,
                        idx,
                        s.channel_idx,
                        s.channel_attempt,
                        s.due_at,
                        s.best.map(|b| b.0.as_str()),
                        s.best.map(|b| b.1.as_str()),
                    ])?;
                }
                JobNext::Finish { status, channel } => {
                    c.prepare_cached("DELETE FROM jobs WHERE message_id = ?1 AND idx = ?2")?
                        .execute(params![message_id, idx])?;
                    c.prepare_cached(
                        "UPDATE recipients SET status = ?3, channel = ?4, updated_at = ?5
                         WHERE message_id = ?1 AND idx = ?2",
                    )?
                    .execute(params![
                        message_id,
                        idx,
                        status.as_str(),
                        channel.map(|c| c.as_str()),
                        now_ms()
                    ])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn pending(&self) -> StoreResult<Vec<PendingMessage>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT j.message_id, j.idx, j.channel_idx, j.channel_attempt, j.due_at,
                        j.best_status, j.best_channel, m.record
                 FROM jobs j JOIN messages m ON m.id = j.message_id
                 ORDER BY j.message_id, j.idx",
            )?;
            let mut rows = stmt.query([])?;
            let mut out: Vec<PendingMessage> = Vec::new();
            while let Some(r) = rows.next()? {
                let message_id: String = r.get(0)?;
                let best = match (
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ) {
                    (Some(s), Some(ch)) => Some((status_of(&s)?, channel_of(&ch)?)),
                    _ => None,
                };
                let job = JobState {
                    idx: r.get(1)?,
                    channel_idx: r.get(2)?,
                    channel_attempt: r.get(3)?,
                    due_at: r.get(4)?,
                    best,
                };
                match out.last_mut() {
                    Some(p) if p.record.id == message_id => p.jobs.push(job),
                    _ => {
                        let json: String = r.get(7)?;
                        let record: MessageRecord = serde_json::from_str(&json).map_err(corrupt)?;
                        out.push(PendingMessage {
                            record,
                            jobs: vec![job],
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn message(&self, id: &str) -> StoreResult<Option<MessageView>> {
        let id = id.to_string();
        self.read(move |c| {
            let Some((created_at, priority)) = c
                .prepare_cached("SELECT created_at, priority FROM messages WHERE id = ?1")?
                .query_row([&id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()?
            else {
                return Ok(None);
            };
            let priority: Priority = priority.parse().map_err(corrupt)?;
            let mut recipients: BTreeMap<u32, RecipientView> = BTreeMap::new();
            let mut stmt = c.prepare_cached(
                "SELECT idx, user_id, status, channel, read_at FROM recipients
                 WHERE message_id = ?1 ORDER BY idx",
            )?;
            let mut rows = stmt.query([&id])?;
            while let Some(r) = rows.next()? {
                let channel = r.get::<_, Option<String>>(3)?;
                recipients.insert(
                    r.get(0)?,
                    RecipientView {
                        user_id: r.get(1)?,
                        status: status_of(&r.get::<_, String>(2)?)?,
                        channel: channel.as_deref().map(channel_of).transpose()?,
                        attempts: Vec::new(),
                        read_at: r.get::<_, Option<i64>>(4)?.map(rfc3339),
                    },
                );
            }
            let mut stmt = c.prepare_cached(
                "SELECT idx, channel, outcome, detail, at FROM attempts
                 WHERE message_id = ?1 ORDER BY rowid",
            )?;
            let mut rows = stmt.query([&id])?;
            while let Some(r) = rows.next()? {
                let idx: u32 = r.get(0)?;
                let attempt = AttemptRecord {
                    channel: channel_of(&r.get::<_, String>(1)?)?,
                    outcome: r.get::<_, String>(2)?.parse().map_err(corrupt)?,
                    detail: r.get(3)?,
                    at: r.get(4)?,
                };
                if let Some(rv) = recipients.get_mut(&idx) {
                    rv.attempts.push(attempt.view());
                }
            }
            let recipients: Vec<RecipientView> = recipients.into_values().collect();
            Ok(Some(MessageView {
                status: MessageStatus::derive(recipients.iter().map(|r| r.status)),
                id,
                created_at: rfc3339(created_at),
                priority,
                recipients,
            }))
        })
        .await
    }

    async fn mark_read(&self, id: &str, user_id: &str, at: i64) -> StoreResult<()> {
        let (id, user_id) = (id.to_string(), user_id.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE recipients SET read_at = ?3
                 WHERE message_id = ?1 AND user_id = ?2 AND read_at IS NULL",
            )?
            .execute(params![id, user_id, at])?;
            Ok(())
        })
        .await
    }

    async fn put_user(&self, id: &str, profile: &UserProfile) -> StoreResult<()> {
        let id = id.to_string();
        let json =
            serde_json::to_string(profile).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO users (id, profile, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
            )?
            .execute(params![id, json, now_ms()])?;
            Ok(())
        })
        .await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserProfile>> {
        let id = id.to_string();
        self.read(move |c| {
            let json = c
                .prepare_cached("SELECT profile FROM users WHERE id = ?1")?
                .query_row([&id], |r| r.get::<_, String>(0))
                .optional()?;
            json.map(|j| serde_json::from_str(&j).map_err(corrupt))
                .transpose()
        })
        .await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([&id])?
                > 0)
        })
        .await
    }

    async fn messages_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<MessageView>> {
        let user_id = user_id.to_string();
        let ids = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT DISTINCT message_id FROM recipients WHERE user_id = ?1 ORDER BY message_id DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![user_id, limit as i64], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(view) = self.message(&id).await? {
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
        // Cursor: "<updated_at>.<message_id>.<idx>" of the last item shown.
        let cursor = before.and_then(|c| {
            let mut parts = c.splitn(3, '.');
            Some((
                parts.next()?.parse::<i64>().ok()?,
                parts.next()?.to_string(),
                parts.next()?.parse::<i64>().ok()?,
            ))
        });
        self.read(move |c| {
            // With no cursor, start above every possible row.
            let (at, id, idx) = cursor.unwrap_or((i64::MAX, "\u{10FFFF}".to_string(), i64::MAX));
            let mut stmt = c.prepare_cached(
                "SELECT r.message_id, r.idx, r.user_id, r.status, r.updated_at, json_extract(m.record, '$.title')
                 FROM recipients r JOIN messages m ON m.id = r.message_id
                 WHERE r.status IN ('failed', 'expired')
                   AND (r.updated_at, r.message_id, r.idx) < (?1, ?2, ?3)
                 ORDER BY r.updated_at DESC, r.message_id DESC, r.idx DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![at, id, idx, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            let mut items = Vec::new();
            let mut last = None;
            for row in rows {
                let (message_id, idx, user_id, status, updated_at, title) = row?;
                let mut attempts = Vec::new();
                let mut q = c.prepare_cached(
                    "SELECT channel, outcome, detail, at FROM attempts WHERE message_id = ?1 AND idx = ?2 ORDER BY rowid",
                )?;
                let mut arows = q.query(params![message_id, idx])?;
                while let Some(a) = arows.next()? {
                    attempts.push(
                        AttemptRecord {
                            channel: channel_of(&a.get::<_, String>(0)?)?,
                            outcome: a.get::<_, String>(1)?.parse().map_err(corrupt)?,
                            detail: a.get(2)?,
                            at: a.get(3)?,
                        }
                        .view(),
                    );
                }
                last = Some(format!("{updated_at}.{message_id}.{idx}"));
                items.push(DeadLetter {
                    id: message_id,
                    user_id,
                    status: status_of(&status)?,
                    at: rfc3339(updated_at),
                    title,
                    attempts,
                });
            }
            let next = if items.len() == limit { last } else { None };
            Ok(DeadLetterPage { items, next })
        })
        .await
    }

    async fn is_ready(&self) -> bool {
        !self.writer.is_closed()
            && self
                .read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
                .await
                .is_ok()
    }
}

#[async_trait]
impl History for SqliteStore {
    async fn append_inbox(
        &self,
        user_id: &str,
        content: &MessageContent,
        expires_at: Option<i64>,
    ) -> StoreResult<u64> {
        let (user_id, content, limit) = (
            user_id.to_string(),
            content.clone(),
            self.options.inbox_limit,
        );
        self.write(move |c| {
            append_stream(c, StreamKind::Inbox, &user_id, &content, expires_at, limit)
        })
        .await
    }

    async fn read_inbox(
        &self,
        user_id: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let user_id = user_id.to_string();
        self.read(move |c| read_stream(c, StreamKind::Inbox, &user_id, since, limit))
            .await
    }

    async fn append_topic(&self, topic: &str, content: &MessageContent) -> StoreResult<u64> {
        let (topic, content, limit) =
            (topic.to_string(), content.clone(), self.options.topic_limit);
        self.write(move |c| append_stream(c, StreamKind::Topic, &topic, &content, None, limit))
            .await
    }

    async fn read_topic(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage> {
        let topic = topic.to_string();
        self.read(move |c| read_stream(c, StreamKind::Topic, &topic, since, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(x: i64, then_fail: bool) -> (WriteJob, oneshot::Receiver<StoreResult<()>>) {
        let (answer, rx) = oneshot::channel();
        let f = move |c: &Connection| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            if then_fail {
                // The same key again: a constraint error after a write that must be undone.
                c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            }
            Ok(())
        };
        let job: WriteJob = Box::new(Write {
            f,
            result: None,
            answer,
        });
        (job, rx)
    }

    #[test]
    fn a_failing_write_undoes_only_itself_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db"), &SqliteOptions::default()).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        let (a, mut ra) = insert(1, false);
        let (b, mut rb) = insert(2, true);
        let (c, mut rc) = insert(3, false);
        let mut batch = vec![a, b, c];
        assert!(commit_batch(&conn, &mut batch).is_ok());
        for job in batch {
            job.complete(Ok(()));
        }
        assert!(matches!(ra.try_recv(), Ok(Ok(()))));
        assert!(matches!(rb.try_recv(), Ok(Err(StoreError::Backend(_)))));
        assert!(matches!(rc.try_recv(), Ok(Ok(()))));
        let kept: Vec<i64> = conn
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, vec![1, 3]);
    }
}
