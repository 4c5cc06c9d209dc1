//! The inbox of a notification centre (SPEC §11): a user's personal messages (their inbox
//! history) with read and archived marks beside them, and the unread count. A read — through
//! the API or on any session — is announced to every session of the user as
//! `{"type":"read","ids":[…],"unread":N}`, so every badge shows the same count.

use std::sync::Arc;

use bytes::Bytes;
use herald_common::api::{InboxMessage, InboxPage};
use herald_common::events::ReadNotice;
use herald_common::protocol::MessageContent;
use herald_common::subjects::Subjects;
use herald_common::time::{now_ms, rfc3339};
use herald_engine::{Bus, History, Inbox, InboxChange, InboxMarks, StoreError};

pub struct InboxService {
    pub history: Arc<dyn History>,
    pub marks: Arc<dyn Inbox>,
    pub bus: Arc<dyn Bus>,
    pub subjects: Subjects,
    /// Entries an inbox keeps (`HERALD_INBOX_LIMIT`): the whole inbox is read to count.
    pub limit: usize,
}

fn message(seq: u64, c: MessageContent, marks: &InboxMarks) -> InboxMessage {
    let read_at = marks.read_at(&c.id, seq).map(rfc3339);
    let archived = marks.archived.contains(&c.id);
    InboxMessage {
        seq,
        title: c.title,
        body: c.body,
        data: c.data.and_then(|d| serde_json::from_str(d.get()).ok()),
        created_at: c.created_at,
        read_at,
        archived,
        id: c.id,
    }
}

fn unread(entries: &[(u64, MessageContent)], marks: &InboxMarks) -> u64 {
    entries
        .iter()
        .filter(|(seq, c)| marks.read_at(&c.id, *seq).is_none() && !marks.archived.contains(&c.id))
        .count() as u64
}

impl InboxService {
    async fn entries(&self, user: &str) -> Result<Vec<(u64, MessageContent)>, StoreError> {
        Ok(self.history.read_inbox(user, 0, self.limit).await?.entries)
    }

    /// The newest `limit` messages with a seq below `before`, and the unread count.
    pub async fn page(
        &self,
        user: &str,
        limit: usize,
        before: Option<u64>,
    ) -> Result<InboxPage, StoreError> {
        let entries = self.entries(user).await?;
        let marks = self.marks.inbox_marks(user).await?;
        let unread = unread(&entries, &marks);
        let messages = entries
            .into_iter()
            .rev()
            .filter(|(seq, _)| before.is_none_or(|b| *seq < b))
            .take(limit)
            .map(|(seq, c)| message(seq, c, &marks))
            .collect();
        Ok(InboxPage { messages, unread })
    }

    /// Marks messages read (`ids`, or all when `None`) or archived; returns the ids that
    /// were unread and are read now, and the unread count after. Tells every session.
    pub async fn mark(
        &self,
        user: &str,
        ids: Option<&[String]>,
        archive: bool,
    ) -> Result<(Vec<String>, u64), StoreError> {
        let entries = self.entries(user).await?;
        let before = self.marks.inbox_marks(user).await?;
        let is_unread =
            |seq: u64, id: &str| before.read_at(id, seq).is_none() && !before.archived.contains(id);
        let (change, newly): (InboxChange, Vec<String>) = match (ids, archive) {
            (Some(ids), archive) => {
                let newly = entries
                    .iter()
                    .filter(|(seq, c)| ids.contains(&c.id) && is_unread(*seq, &c.id))
                    .map(|(_, c)| c.id.clone())
                    .collect();
                let ids = ids.to_vec();
                let change = if archive {
                    InboxChange::Archive(ids)
                } else {
                    InboxChange::Read(ids)
                };
                (change, newly)
            }
            (None, _) => {
                let head = entries.last().map_or(0, |(seq, _)| *seq);
                let newly = entries
                    .iter()
                    .filter(|(seq, c)| is_unread(*seq, &c.id))
                    .map(|(_, c)| c.id.clone())
                    .collect();
                (InboxChange::ReadAll(head), newly)
            }
        };
        let after = self.marks.change_inbox(user, change, now_ms()).await?;
        let count = unread(&entries, &after);
        self.notify(user, &newly, count).await;
        Ok((newly, count))
    }

    /// A session reported `id` read: marks it and tells the user's sessions.
    pub async fn read_on_session(&self, user: &str, id: &str) -> Result<(), StoreError> {
        self.mark(user, Some(&[id.to_string()]), false)
            .await
            .map(|_| ())
    }

    async fn notify(&self, user: &str, ids: &[String], unread: u64) {
        if ids.is_empty() {
            return;
        }
        let Ok(payload) = serde_json::to_vec(&ReadNotice::new(ids.to_vec(), unread)) else {
            return;
        };
        if let Err(e) = self
            .bus
            .publish(&self.subjects.user(user), Bytes::from(payload))
            .await
        {
            tracing::warn!(user_id = %user, error = %e, "could not tell sessions of a read");
        }
    }
}
