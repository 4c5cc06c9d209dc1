//! The embedded store's own write ceiling, without HTTP or the delivery pipeline in the way:
//! many tasks each record what one message to an offline user costs the store —
//! accept, the in-app inbox append, and the final status with its attempt — as fast as
//! the writer's group commits allow.
//!
//! cargo run --release -p herald-engine --example store_load -- [--secs 6] [--tasks 256]
//!     [--users 256] [--no-inbox] [--split-final]
//!
//! `--split-final` records the last attempt and the final status as two writes (how the
//! pipeline did it before they were merged), for an A/B of that change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_common::api::{ChannelKind, Outcome, Priority, RecipientStatus, Strategy};
use herald_common::time::now_ms;
use herald_engine::sqlite::SqliteStore;
use herald_engine::store::{AttemptRecord, JobNext, JobState, MessageRecord, RecipientRecord};
use herald_engine::{History, Store};

struct Options {
    secs: u64,
    tasks: usize,
    users: usize,
    inbox: bool,
    split_final: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        secs: 6,
        tasks: 256,
        users: 256,
        inbox: true,
        split_final: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> anyhow::Result<u64> {
            Ok(args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))?
                .parse()?)
        };
        match arg.as_str() {
            "--secs" => o.secs = value()?,
            "--tasks" => o.tasks = value()? as usize,
            "--users" => o.users = value()?.max(1) as usize,
            "--no-inbox" => o.inbox = false,
            "--split-final" => o.split_final = true,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

async fn one_message(store: &SqliteStore, o: &Options, user: String) -> anyhow::Result<()> {
    let record = MessageRecord {
        id: ulid::Ulid::generate().to_string(),
        created_at: now_ms(),
        priority: Priority::Normal,
        strategy: Strategy::Fallback,
        channels: vec![ChannelKind::InApp],
        ack_timeout_ms: 5000,
        expires_at: None,
        title: Some("ingest".into()),
        body: None,
        recipients: vec![RecipientRecord {
            user_id: user,
            email: None,
            phone: None,
        }],
        ..Default::default()
    };
    store.accept(&record, None).await?;
    if o.inbox {
        store
            .append_inbox(&record.recipients[0].user_id, &record.content(), None)
            .await?;
    }
    let mut attempt = Some(AttemptRecord::new(
        ChannelKind::InApp,
        Outcome::Offline,
        Some("no live session".into()),
        now_ms(),
    ));
    if o.split_final {
        let next = JobState {
            channel_idx: 1,
            ..JobState::start(0, now_ms())
        };
        store
            .advance(&record.id, 0, attempt.take(), JobNext::Continue(next))
            .await?;
    }
    let finish = JobNext::Finish {
        status: RecipientStatus::Failed,
        channel: None,
    };
    store.advance(&record.id, 0, attempt, finish).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = Arc::new(options()?);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path(), Default::default())?);
    let started = Instant::now();
    let end = started + Duration::from_secs(o.secs);
    let mut tasks = Vec::new();
    for t in 0..o.tasks {
        let (store, o) = (Arc::clone(&store), Arc::clone(&o));
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                let user = format!("user{}", (t + done as usize * o.tasks) % o.users);
                one_message(&store, &o, user).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut messages = 0;
    for t in tasks {
        messages += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{messages} messages in {secs:.1} s: {:.0} messages/s",
        messages as f64 / secs
    );
    Ok(())
}
