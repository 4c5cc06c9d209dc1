//! Per-key ordering: the seq of a user's inbox or a topic's history must reach the bus in
//! seq order, so "append, then publish" runs under a lock striped by key.

use std::hash::{DefaultHasher, Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

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
