//! The embedded engine's store: one SQLite file (WAL) under `HERALD_DATA_DIR`.
//!
//! All writes go through one writer thread that group-commits: it takes every write waiting
//! in its queue, runs each in its own savepoint inside one transaction, commits once, and
//! only then answers the callers. So `Ok` from a write means "on disk", and a burst of
//! writes costs one fsync. Reads use a small pool of separate connections (WAL lets them
//! run beside the writer).
//!
//! By concept: `messages` (the `Store`: messages, recipients, attempts, jobs, users),
//! `history` (inboxes and topic histories), `devices`, `slots`, `templates`, `hooks` (status
//! webhooks).

mod devices;
mod history;
mod hooks;
mod inbox;
mod keys;
mod messages;
mod slots;
mod templates;

use std::path::Path;
use std::sync::{Arc, Mutex};

use herald_common::api::{ChannelKind, RecipientStatus};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

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
    /// Where the embedded queue's jobs are (waiting, running, stopped): shared with the
    /// `LocalQueue`, so a stop is decided under the same lock as a job's start.
    index: Arc<crate::jobs::JobIndex>,
    /// Webhook deliveries waiting, per webhook (their rows are in `hook_deliveries`).
    hooks: Arc<crate::hooks::HookLanes>,
}

pub(super) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> rusqlite::Error {
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
"#;

/// Schema changes after the first version, in order: `MIGRATIONS[i]` takes a database at
/// `user_version` i + 1 to i + 2. A new database gets the first schema, then every step.
const MIGRATIONS: &[&str] = &[
    // 2: attempts name their provider and each device's result; jobs carry extra state;
    // acks are recorded; cancel keys and templates.
    r#"
ALTER TABLE attempts ADD COLUMN provider TEXT;
ALTER TABLE attempts ADD COLUMN devices TEXT;
ALTER TABLE jobs ADD COLUMN ext TEXT;
ALTER TABLE recipients ADD COLUMN acked_at INTEGER;
CREATE TABLE IF NOT EXISTS cancel_keys (
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipients INTEGER NOT NULL,
    PRIMARY KEY (key, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS templates (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS template_heads (
    name TEXT PRIMARY KEY,
    latest INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slots (
    key TEXT NOT NULL,
    token TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (key, token)
) WITHOUT ROWID;
"#,
    // 3: status webhooks, their queued deliveries and their delivery logs.
    r#"
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_deliveries (
    id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    body BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (webhook, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_log_by_webhook ON hook_log (webhook, seq);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_usage (
    name TEXT NOT NULL,
    day INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (name, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_marks (
    user_id TEXT PRIMARY KEY,
    marks TEXT NOT NULL
) WITHOUT ROWID;
"#,
];

/// Creates the tables of a new database and brings an older one up to date.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut version = version.max(1) as usize;
    while let Some(step) = MIGRATIONS.get(version - 1) {
        conn.execute_batch(&format!(
            "BEGIN; {step} PRAGMA user_version = {}; COMMIT;",
            version + 1
        ))?;
        version += 1;
    }
    Ok(())
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
    /// The index a `LocalQueue` over this store must share (see [`crate::jobs::JobIndex`]).
    pub fn job_index(&self) -> Arc<crate::jobs::JobIndex> {
        Arc::clone(&self.index)
    }

    /// Opens (creating if needed) `dir/herald.db` and starts the writer thread.
    pub fn open(dir: &Path, options: SqliteOptions) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("herald.db");
        let conn = open_connection(&path, &options)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        migrate(&conn).map_err(backend)?;
        let hooks = Arc::new(hooks::load(&conn).map_err(backend)?);
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
            index: Arc::default(),
            hooks,
        })
    }

    /// Runs `f` on the writer connection inside the next group commit; answers after COMMIT.
    /// `f` may run twice: a second time if another write in its batch failed (see
    /// [`commit_batch`]).
    pub(super) async fn write<T: Send + 'static>(
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
    pub(super) async fn read<T: Send + 'static>(
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

pub(super) fn status_of(text: &str) -> rusqlite::Result<RecipientStatus> {
    text.parse().map_err(corrupt)
}

pub(super) fn channel_of(text: &str) -> rusqlite::Result<ChannelKind> {
    text.parse().map_err(corrupt)
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
