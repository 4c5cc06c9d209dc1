//! Delivery workers: one loop per priority lane takes due jobs from the engine's queue and
//! runs each in its own task, up to the lane's own concurrency limit. A flood of low-priority
//! work fills only the low lane's slots, so high priority never waits behind it.

use std::future::Future;
use std::sync::Arc;

use herald_engine::jobs::LANES;
use herald_engine::{JobQueue, Lease};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts the lane loops; each runs leased jobs with `run` until `shutdown`.
pub fn start_lanes<F, Fut>(
    queue: Arc<dyn JobQueue>,
    concurrency: usize,
    run: F,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) where
    F: Fn(Lease) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for lane in 0..LANES {
        let queue = Arc::clone(&queue);
        let run = run.clone();
        let shutdown = shutdown.clone();
        let workers = tracker.clone();
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        tracker.spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = shutdown.cancelled() => return,
                };
                let Some(lease) = queue.next(lane, &shutdown).await else {
                    return;
                };
                let fut = run(lease);
                workers.spawn(async move {
                    fut.await;
                    drop(permit);
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_common::api::Priority;
    use herald_engine::jobs::{Job, LocalQueue};
    use std::time::Duration;
    use tokio::sync::Notify;

    fn job(id: &str, priority: Priority) -> Job {
        Job::sample(id, priority, 0)
    }

    #[tokio::test]
    async fn a_busy_low_lane_does_not_hold_high() {
        let queue = Arc::new(LocalQueue::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let r = Arc::clone(&release);
        start_lanes(
            Arc::new(Arc::clone(&queue)),
            1,
            move |lease: Lease| {
                let tx = tx.clone();
                let r = Arc::clone(&r);
                async move {
                    let _ = tx.send(lease.job.message.id.clone());
                    if lease.job.message.priority == Priority::Low {
                        r.notified().await;
                    }
                }
            },
            shutdown.clone(),
            &tracker,
        );
        queue.push(job("low-1", Priority::Low));
        queue.push(job("low-2", Priority::Low));
        assert_eq!(rx.recv().await.unwrap(), "low-1");
        queue.push(job("high", Priority::High));
        let next = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next, "high", "high must not wait for the low lane's slot");
        assert_eq!(queue.depth(Priority::Low.lane()), 1);
        release.notify_waiters();
        shutdown.cancel();
    }
}
