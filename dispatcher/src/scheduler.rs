//! Delivery scheduling: one lane per priority, each with its own queue (ordered by due time)
//! and its own concurrency limit, so a flood of low-priority work never holds a slot that a
//! high-priority message needs. Retries wait here as queue entries, not as sleeping tasks.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_common::api::Priority;
use herald_common::time::now_ms;
use herald_engine::store::{JobState, MessageRecord};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One recipient's delivery, waiting for its turn.
#[derive(Debug, Clone)]
pub struct Job {
    pub message: Arc<MessageRecord>,
    pub state: JobState,
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
    // BinaryHeap is a max-heap: reverse so the earliest due (then oldest) comes first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

struct Lane {
    queue: Mutex<BinaryHeap<Entry>>,
    notify: Notify,
    slots: Arc<Semaphore>,
}

pub struct Scheduler {
    lanes: [Lane; 3],
    order: AtomicU64,
}

impl Scheduler {
    /// `concurrency`: deliveries that may run at once in each lane.
    pub fn new(concurrency: usize) -> Arc<Scheduler> {
        let lane = || Lane {
            queue: Mutex::new(BinaryHeap::new()),
            notify: Notify::new(),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
        };
        Arc::new(Scheduler {
            lanes: [lane(), lane(), lane()],
            order: AtomicU64::new(0),
        })
    }

    pub fn push(&self, job: Job) {
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

    /// Jobs waiting (due or not) in the lane of `priority`.
    pub fn depth(&self, priority: Priority) -> usize {
        self.lanes[priority.lane()]
            .queue
            .lock()
            .map_or(0, |q| q.len())
    }

    /// Starts one loop per lane that runs due jobs with `run`, until `shutdown`.
    pub fn start<F, Fut>(
        self: &Arc<Self>,
        run: F,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) where
        F: Fn(Job) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for lane in 0..self.lanes.len() {
            let me = Arc::clone(self);
            let run = run.clone();
            let shutdown = shutdown.clone();
            let inner = tracker.clone();
            tracker.spawn(async move { me.lane_loop(lane, run, shutdown, inner).await });
        }
    }

    async fn lane_loop<F, Fut>(
        &self,
        lane: usize,
        run: F,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let lane = &self.lanes[lane];
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&lane.slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let job = loop {
                let notified = lane.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let next_due = lane.queue.lock().ok().and_then(|q| q.peek().map(|e| e.due));
                let now = now_ms();
                match next_due {
                    Some(due) if due <= now => {
                        if let Some(entry) = lane.queue.lock().ok().and_then(|mut q| q.pop()) {
                            break entry.job;
                        }
                    }
                    Some(due) => {
                        let wait = Duration::from_millis((due - now) as u64);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = &mut notified => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    None => {
                        tokio::select! {
                            _ = &mut notified => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
            };
            let fut = run(job);
            tracker.spawn(async move {
                fut.await;
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_common::api::{ChannelKind, Strategy};

    fn job(id: &str, priority: Priority, due_at: i64) -> Job {
        Job {
            message: Arc::new(MessageRecord {
                id: id.into(),
                created_at: 0,
                priority,
                strategy: Strategy::Fallback,
                channels: vec![ChannelKind::Email],
                ack_timeout_ms: 1,
                expires_at: None,
                title: None,
                body: None,
                data: None,
                email: None,
                sms: None,
                recipients: vec![],
            }),
            state: JobState {
                idx: 0,
                channel_idx: 0,
                channel_attempt: 0,
                due_at,
                best: None,
            },
        }
    }

    #[tokio::test]
    async fn runs_due_jobs_in_due_order_and_waits_for_future_ones() {
        let s = Scheduler::new(1);
        let now = now_ms();
        s.push(job("later", Priority::Normal, now + 150));
        s.push(job("second", Priority::Normal, now - 5));
        s.push(job("first", Priority::Normal, now - 10));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        s.start(
            move |j: Job| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((j.message.id.clone(), now_ms()));
                }
            },
            shutdown.clone(),
            &tracker,
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                tokio::time::timeout(Duration::from_secs(2), rx.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["first", "second", "later"]);
        assert!(got[2].1 >= now + 150, "a job never runs before it is due");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_busy_low_lane_does_not_hold_high() {
        let s = Scheduler::new(1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let r = Arc::clone(&release);
        s.start(
            move |j: Job| {
                let tx = tx.clone();
                let r = Arc::clone(&r);
                async move {
                    let _ = tx.send(j.message.id.clone());
                    if j.message.priority == Priority::Low {
                        r.notified().await;
                    }
                }
            },
            shutdown.clone(),
            &tracker,
        );
        s.push(job("low-1", Priority::Low, 0));
        s.push(job("low-2", Priority::Low, 0));
        assert_eq!(rx.recv().await.unwrap(), "low-1");
        s.push(job("high", Priority::High, 0));
        let next = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next, "high", "high must not wait for the low lane's slot");
        assert_eq!(s.depth(Priority::Low), 1);
        release.notify_waiters();
        shutdown.cancel();
    }
}
