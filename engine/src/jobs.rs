//! Where recipients' deliveries wait for their turn: one queue per priority lane, ordered by
//! due time. The embedded engine keeps the queue in memory (SQLite holds the truth and
//! refills it on start); the cluster engine keeps it in JetStream, shared by all dispatchers.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_common::time::now_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{JobState, MessageRecord, Store, StoreResult};

/// Lanes, most urgent first (`Priority::lane`).
pub const LANES: usize = 3;

/// One recipient's delivery.
#[derive(Debug, Clone)]
pub struct Job {
    pub message: Arc<MessageRecord>,
    pub state: JobState,
}

impl Job {
    /// A job with a minimal message, for tests of queues and lanes.
    #[doc(hidden)]
    pub fn sample(id: &str, priority: herald_common::api::Priority, due_at: i64) -> Job {
        use herald_common::api::{ChannelKind, Strategy};
        Job {
            message: Arc::new(MessageRecord {
                id: id.into(),
                created_at: 0,
                priority,
                strategy: Strategy::Fallback,
                channels: vec![ChannelKind::Email],
                ack_timeout_ms: 1,
                ..Default::default()
            }),
            state: JobState::start(0, due_at),
        }
    }
}

/// How a leased job ends for now.
#[derive(Debug, Clone)]
pub enum Settle {
    /// The recipient reached a final status.
    Done,
    /// Run it again from `state` once `state.due_at` has come.
    Retry(JobState),
}

/// Releases a leased job back to its queue.
#[async_trait]
pub trait Settler: Send + Sync {
    /// Settles the job of recipient `idx` of `message`.
    async fn settle(self: Box<Self>, message: Arc<MessageRecord>, idx: u32, how: Settle);
}

/// A job handed to one worker until it is settled.
pub struct Lease {
    pub job: Job,
    settler: Box<dyn Settler>,
    /// Set when the job was found already final on a redelivery: the dispatcher that
    /// recorded it may have died before announcing it, so it is announced again (with the
    /// same `webhook-id`s) and settled.
    pub finished: Option<Finished>,
}

/// The final status of a job found final.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub status: herald_common::api::RecipientStatus,
    pub channel: Option<herald_common::api::ChannelKind>,
}

impl Lease {
    pub fn new(job: Job, settler: Box<dyn Settler>) -> Lease {
        Lease {
            job,
            settler,
            finished: None,
        }
    }

    /// A job found final, to be announced again and settled.
    pub fn finished(job: Job, settler: Box<dyn Settler>, finished: Finished) -> Lease {
        Lease {
            job,
            settler,
            finished: Some(finished),
        }
    }

    pub async fn settle(self, how: Settle) {
        let idx = self.job.state.idx;
        self.settler.settle(self.job.message, idx, how).await
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Queues the jobs of a message that was just accepted through [`Store::accept`]
    /// (a no-op where accepting already queued them).
    async fn enqueue_accepted(&self, message: Arc<MessageRecord>) -> StoreResult<()>;

    /// Waits for the next due job of `lane`; `None` once `shutdown` fires.
    async fn next(&self, lane: usize, shutdown: &CancellationToken) -> Option<Lease>;

    /// Jobs waiting or running in each lane (for the `herald_queue_depth` gauge).
    async fn depths(&self) -> [u64; LANES];
}

struct Entry {
    due: i64,
    order: u64,
    job: Job,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // BinaryHeap is a max-heap: reverse so the earliest due (then the oldest) comes first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

struct Lane {
    queue: Mutex<BinaryHeap<Entry>>,
    notify: Notify,
}

/// Where each of the embedded queue's jobs is: waiting in the queue, run by a worker, or
/// stopped from outside (canceled; an escalation wait a read satisfied). Shared by the
/// queue and the store that records stops, so that a stop and a job's start are one
/// decision under one lock: a job is never started after its stop was recorded, and a job
/// that started is never recorded as stopped.
#[derive(Default)]
pub struct JobIndex {
    places: Mutex<std::collections::HashMap<(Arc<str>, u32), Place>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Queued,
    Running,
    Stopped,
}

impl JobIndex {
    fn key(id: &str, idx: u32) -> (Arc<str>, u32) {
        (Arc::from(id), idx)
    }

    /// A job goes into the queue; `false` if it was stopped meanwhile (it is dropped).
    fn queue(&self, id: &str, idx: u32) -> bool {
        self.move_to(id, idx, Place::Queued)
    }

    /// A worker takes a job; `false` if it was stopped (it is skipped).
    fn start(&self, id: &str, idx: u32) -> bool {
        self.move_to(id, idx, Place::Running)
    }

    /// The job is now at `place`, unless it was stopped: then it is forgotten and `false`.
    fn move_to(&self, id: &str, idx: u32, place: Place) -> bool {
        let Ok(mut p) = self.places.lock() else {
            return true;
        };
        let key = Self::key(id, idx);
        if p.get(&key) == Some(&Place::Stopped) {
            p.remove(&key);
            return false;
        }
        p.insert(key, place);
        true
    }

    fn finish(&self, id: &str, idx: u32) {
        if let Ok(mut p) = self.places.lock() {
            p.remove(&Self::key(id, idx));
        }
    }

    /// Stops a job unless a worker runs it: `record` writes the stop (and says whether
    /// there was anything to stop) while the index is locked.
    pub fn try_stop<E>(
        &self,
        id: &str,
        idx: u32,
        record: impl FnOnce() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let Ok(mut p) = self.places.lock() else {
            return Ok(false);
        };
        let key = Self::key(id, idx);
        if p.get(&key) == Some(&Place::Running) {
            return Ok(false);
        }
        let stopped = record()?;
        if stopped {
            p.insert(key, Place::Stopped);
        }
        Ok(stopped)
    }

    /// Jobs it knows of (waiting, running or stopped-but-not-yet-dropped).
    pub fn len(&self) -> usize {
        self.places.lock().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The embedded engine's queue: in memory, refilled from the store on start.
pub struct LocalQueue {
    lanes: [Lane; LANES],
    order: AtomicU64,
    index: Arc<JobIndex>,
}

impl LocalQueue {
    /// An empty queue whose jobs' places are kept in `index` (which the store shares).
    pub fn new(index: Arc<JobIndex>) -> LocalQueue {
        let lane = || Lane {
            queue: Mutex::new(BinaryHeap::new()),
            notify: Notify::new(),
        };
        LocalQueue {
            lanes: [lane(), lane(), lane()],
            order: AtomicU64::new(0),
            index,
        }
    }
}

impl Default for LocalQueue {
    fn default() -> Self {
        LocalQueue::new(Arc::default())
    }
}

struct LocalSettler(Arc<LocalQueue>);

#[async_trait]
impl Settler for LocalSettler {
    async fn settle(self: Box<Self>, message: Arc<MessageRecord>, idx: u32, how: Settle) {
        match how {
            Settle::Retry(state) => self.0.push(Job { message, state }),
            Settle::Done => self.0.index.finish(&message.id, idx),
        }
    }
}

impl LocalQueue {
    /// A queue holding every unfinished job the store knows of; `index` is the one the
    /// store records stops in.
    pub async fn recover(
        store: &dyn Store,
        index: Arc<JobIndex>,
    ) -> StoreResult<(Arc<LocalQueue>, usize)> {
        let queue = Arc::new(LocalQueue::new(index));
        let mut jobs = 0;
        for p in store.pending().await? {
            let message = Arc::new(p.record);
            for state in p.jobs {
                jobs += 1;
                queue.push(Job {
                    message: Arc::clone(&message),
                    state,
                });
            }
        }
        Ok((queue, jobs))
    }

    pub fn push(&self, job: Job) {
        if !self.index.queue(&job.message.id, job.state.idx) {
            return;
        }
        let lane = &self.lanes[job.message.priority.lane()];
        let entry = Entry {
            due: job.state.due_at,
            order: self.order.fetch_add(1, AtomicOrdering::Relaxed),
            job,
        };
        if let Ok(mut q) = lane.queue.lock() {
            q.push(entry);
        }
        lane.notify.notify_one();
    }

    /// Jobs waiting (due or not) in `lane`.
    pub fn depth(&self, lane: usize) -> usize {
        self.lanes
            .get(lane)
            .and_then(|l| l.queue.lock().ok().map(|q| q.len()))
            .unwrap_or(0)
    }
}

#[async_trait]
impl JobQueue for Arc<LocalQueue> {
    async fn depths(&self) -> [u64; LANES] {
        std::array::from_fn(|lane| self.depth(lane) as u64)
    }

    async fn enqueue_accepted(&self, message: Arc<MessageRecord>) -> StoreResult<()> {
        for idx in 0..message.recipients.len() {
            self.push(Job {
                message: Arc::clone(&message),
                state: JobState::start(idx as u32, message.first_due()),
            });
        }
        Ok(())
    }

    async fn next(&self, lane: usize, shutdown: &CancellationToken) -> Option<Lease> {
        let lane_ref = self.lanes.get(lane)?;
        loop {
            let notified = lane_ref.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = lane_ref
                .queue
                .lock()
                .ok()
                .and_then(|q| q.peek().map(|e| e.due));
            let now = now_ms();
            match next_due {
                Some(due) if due <= now => {
                    if let Some(entry) = lane_ref.queue.lock().ok().and_then(|mut q| q.pop()) {
                        if !self.index.start(&entry.job.message.id, entry.job.state.idx) {
                            continue; // stopped while it waited
                        }
                        let settler = Box::new(LocalSettler(Arc::clone(self)));
                        return Some(Lease::new(entry.job, settler));
                    }
                }
                Some(due) => {
                    let wait = Duration::from_millis((due - now) as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut notified => {}
                        _ = shutdown.cancelled() => return None,
                    }
                }
                None => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_common::api::Priority;

    fn job(id: &str, priority: Priority, due_at: i64) -> Job {
        Job::sample(id, priority, due_at)
    }

    #[tokio::test]
    async fn hands_out_due_jobs_in_due_order_and_waits_for_future_ones() {
        let q = Arc::new(LocalQueue::default());
        let now = now_ms();
        q.push(job("later", Priority::Normal, now + 150));
        q.push(job("second", Priority::Normal, now - 5));
        q.push(job("first", Priority::Normal, now - 10));
        let shutdown = CancellationToken::new();
        let lane = Priority::Normal.lane();
        let mut got = Vec::new();
        for _ in 0..3 {
            let lease = q.next(lane, &shutdown).await.unwrap();
            got.push((lease.job.message.id.clone(), now_ms()));
        }
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["first", "second", "later"]);
        assert!(got[2].1 >= now + 150, "a job never runs before it is due");
    }

    #[tokio::test]
    async fn lanes_are_separate_and_retries_come_back() {
        let q = Arc::new(LocalQueue::default());
        q.push(job("low", Priority::Low, 0));
        q.push(job("high", Priority::High, 0));
        let shutdown = CancellationToken::new();
        let high = q.next(Priority::High.lane(), &shutdown).await.unwrap();
        assert_eq!(high.job.message.id, "high");
        let mut state = high.job.state.clone();
        state.due_at = now_ms() + 20;
        high.settle(Settle::Retry(state)).await;
        assert_eq!(q.depth(Priority::High.lane()), 1);
        assert_eq!(q.depth(Priority::Low.lane()), 1);
        let again = q.next(Priority::High.lane(), &shutdown).await.unwrap();
        assert_eq!(again.job.message.id, "high");
        shutdown.cancel();
        assert!(q.next(Priority::High.lane(), &shutdown).await.is_none());
    }
}
