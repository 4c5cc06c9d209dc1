//! Inbox marks on the cluster engine: one key-value entry per user, changed with
//! compare-and-set (two dispatchers marking at once both count).

use async_trait::async_trait;
use herald_common::ids::encode_kv_key;

use super::kv_json::{get_json_latest, modify};
use super::store::NatsStore;
use crate::inbox::{Inbox, InboxChange, InboxMarks};
use crate::store::StoreResult;

#[async_trait]
impl Inbox for NatsStore {
    async fn inbox_marks(&self, user_id: &str) -> StoreResult<InboxMarks> {
        let bucket = &self.engine().buckets.inbox_marks;
        Ok(
            get_json_latest::<InboxMarks>(bucket, &encode_kv_key(user_id))
                .await?
                .map(|(m, _)| m)
                .unwrap_or_default(),
        )
    }

    async fn change_inbox(
        &self,
        user_id: &str,
        change: InboxChange,
        at: i64,
    ) -> StoreResult<InboxMarks> {
        let bucket = &self.engine().buckets.inbox_marks;
        modify::<InboxMarks, InboxMarks>(bucket, &encode_kv_key(user_id), |marks| {
            let mut marks = marks.unwrap_or_default();
            marks.apply(&change, at);
            Ok((Some(marks.clone()), marks))
        })
        .await
    }
}
