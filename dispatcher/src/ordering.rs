//! Per-key ordering: the seq of a user's inbox or a topic's history must reach the bus in
//! seq order, so "append, then publish" runs under a lock striped by key.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, MutexGuard, oneshot};

pub struct OrderLocks {
    stripes: Vec<Mutex<()>>,
}

impl OrderLocks {
    pub fn new(stripes: usize) -> Self {
        OrderLocks {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Holds the stripe of `key` until the guard drops.
    pub async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().await
    }
}

/// Turns per key in the order jobs were taken from the queue: a job waits for the one taken
/// before it (for the same user) to pass, so messages accepted one after another get inbox
/// seqs in that order even though their jobs run concurrently (each first reads the user's
/// profile, and those reads may finish in any order).
#[derive(Default)]
pub struct Turns {
    /// The last turn taken per key, while it has not passed.
    last: std::sync::Mutex<HashMap<String, (u64, oneshot::Receiver<()>)>>,
    next_id: AtomicU64,
}

impl Turns {
    /// Takes the next turn for `key`. Call in queue order (not from a spawned task).
    pub fn take(self: &Arc<Self>, key: &str) -> Turn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, passed) = oneshot::channel();
        let prev = match self.last.lock() {
            Ok(mut last) => last.insert(key.to_string(), (id, passed)).map(|(_, rx)| rx),
            Err(_) => None,
        };
        Turn {
            turns: Arc::clone(self),
            key: key.to_string(),
            id,
            prev: std::sync::Mutex::new(prev),
            done: std::sync::Mutex::new(Some(done)),
        }
    }
}

/// One job's turn; passes when dropped at the latest.
pub struct Turn {
    turns: Arc<Turns>,
    key: String,
    id: u64,
    prev: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    done: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Turn {
    /// Waits until the job taken before this one has passed.
    pub async fn wait(&self) {
        let prev = self.prev.lock().ok().and_then(|mut p| p.take());
        if let Some(prev) = prev {
            // Sent or dropped: either way the predecessor is past its turn.
            let _ = prev.await;
        }
    }

    /// Lets the next job for the same key go.
    pub fn pass(&self) {
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if done.is_none() {
            return;
        }
        drop(done);
        if let Ok(mut last) = self.turns.last.lock()
            && last.get(&self.key).is_some_and(|(id, _)| *id == self.id)
        {
            last.remove(&self.key);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_pass_in_the_order_taken() {
        let turns = Arc::new(Turns::default());
        let first = turns.take("u");
        let second = turns.take("u");
        let other = turns.take("v");
        other.wait().await; // another key never waits
        let waiting = tokio::spawn(async move {
            second.wait().await;
            second
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        first.wait().await;
        first.pass();
        let second = waiting.await.unwrap();
        drop(second);
        drop(other);
        assert!(
            turns.last.lock().unwrap().is_empty(),
            "nothing kept once all passed"
        );
    }
}
