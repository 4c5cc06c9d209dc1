//! Inbox state for notification centres (SPEC §11): per user, which of their personal
//! messages were read (one by one, or all up to a seq) and which archived. The messages
//! themselves are the user's inbox history (`History`); this is the small record beside it,
//! one per user.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreResult;

/// Marks kept per user at most; the oldest reads go first (the inbox keeps fewer entries).
pub const MAX_MARKS: usize = 5000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InboxMarks {
    /// Every message with a seq up to this one is read ("mark all read")…
    #[serde(default)]
    pub all_read_seq: u64,
    /// …as of this instant (Unix ms).
    #[serde(default)]
    pub all_read_at: i64,
    /// Message id → when it was read.
    #[serde(default)]
    pub read: BTreeMap<String, i64>,
    #[serde(default)]
    pub archived: BTreeSet<String>,
}

/// A change to a user's marks.
#[derive(Debug, Clone, PartialEq)]
pub enum InboxChange {
    Read(Vec<String>),
    /// Everything up to this seq (the inbox's newest when asked).
    ReadAll(u64),
    Archive(Vec<String>),
}

impl InboxMarks {
    /// When the message `id` at `seq` was read, if it was.
    pub fn read_at(&self, id: &str, seq: u64) -> Option<i64> {
        self.read
            .get(id)
            .copied()
            .or((seq <= self.all_read_seq && self.all_read_seq > 0).then_some(self.all_read_at))
    }

    pub fn apply(&mut self, change: &InboxChange, at: i64) {
        match change {
            InboxChange::Read(ids) => {
                for id in ids {
                    self.read.entry(id.clone()).or_insert(at);
                }
            }
            InboxChange::ReadAll(seq) => {
                if *seq > self.all_read_seq {
                    self.all_read_seq = *seq;
                    self.all_read_at = at;
                }
            }
            InboxChange::Archive(ids) => {
                for id in ids {
                    self.archived.insert(id.clone());
                    self.read.entry(id.clone()).or_insert(at);
                }
            }
        }
        while self.read.len() > MAX_MARKS {
            let oldest = self
                .read
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.read.remove(&id),
                None => break,
            };
        }
        while self.archived.len() > MAX_MARKS {
            let first = self.archived.iter().next().cloned();
            match first {
                Some(id) => self.archived.remove(&id),
                None => break,
            };
        }
    }
}

#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    async fn inbox_marks(&self, user_id: &str) -> StoreResult<InboxMarks>;
    /// Applies `change` atomically and returns the marks after it.
    async fn change_inbox(
        &self,
        user_id: &str,
        change: InboxChange,
        at: i64,
    ) -> StoreResult<InboxMarks>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_by_one_and_all_at_once() {
        let mut m = InboxMarks::default();
        assert_eq!(m.read_at("a", 1), None);
        m.apply(&InboxChange::Read(vec!["a".into()]), 10);
        m.apply(&InboxChange::Read(vec!["a".into()]), 20);
        assert_eq!(m.read_at("a", 1), Some(10), "the first read counts");
        assert_eq!(m.read_at("b", 2), None);
        m.apply(&InboxChange::ReadAll(3), 30);
        assert_eq!(m.read_at("b", 2), Some(30));
        assert_eq!(m.read_at("c", 4), None, "newer than the mark-all");
        m.apply(&InboxChange::ReadAll(2), 40);
        assert_eq!(m.all_read_seq, 3, "never moves back");
        m.apply(&InboxChange::Archive(vec!["c".into()]), 50);
        assert!(m.archived.contains("c") && m.read_at("c", 4) == Some(50));
    }
}
