//! Push devices and sliding-window slots on the cluster engine: one key-value entry per
//! user (its device list) and per slot key (its taken slots), each changed with
//! compare-and-set, so concurrent dispatchers never lose a registration or both take the
//! last slot.

use async_trait::async_trait;
use herald_common::api::DeviceAddress;
use herald_common::ids::encode_kv_key;
use sha2::{Digest, Sha256};

use super::kv_json::{get_json_confirmed, hex, modify};
use super::store::NatsStore;
use crate::store::{
    DeviceRecord, Devices, SlotTaken, Slots, StoreResult, register_device, take_from,
};

#[async_trait]
impl Devices for NatsStore {
    async fn put_device(
        &self,
        user_id: &str,
        device_id: &str,
        address: DeviceAddress,
        now: i64,
        max: usize,
    ) -> StoreResult<DeviceRecord> {
        modify::<Vec<DeviceRecord>, DeviceRecord>(
            &self.engine().buckets.devices,
            &encode_kv_key(user_id),
            |list| {
                let mut list = list.unwrap_or_default();
                let record = register_device(&mut list, device_id, address.clone(), now, max);
                Ok((Some(list), record))
            },
        )
        .await
    }

    async fn devices(&self, user_id: &str) -> StoreResult<Vec<DeviceRecord>> {
        Ok(get_json_confirmed::<Vec<DeviceRecord>>(
            &self.engine().buckets.devices,
            &encode_kv_key(user_id),
        )
        .await?
        .map(|(list, _)| list)
        .unwrap_or_default())
    }

    async fn delete_device(&self, user_id: &str, device_id: &str) -> StoreResult<bool> {
        modify::<Vec<DeviceRecord>, bool>(
            &self.engine().buckets.devices,
            &encode_kv_key(user_id),
            |list| {
                let Some(mut list) = list else {
                    return Ok((None, false));
                };
                let before = list.len();
                list.retain(|d| d.device_id != device_id);
                let gone = list.len() < before;
                Ok((gone.then_some(list), gone))
            },
        )
        .await
    }

    async fn deactivate_device(
        &self,
        user_id: &str,
        device_id: &str,
        reason: &str,
        sent_at: i64,
    ) -> StoreResult<bool> {
        let at = herald_common::time::now_ms();
        modify::<Vec<DeviceRecord>, bool>(
            &self.engine().buckets.devices,
            &encode_kv_key(user_id),
            |list| {
                let Some(mut list) = list else {
                    return Ok((None, false));
                };
                let Some(d) = list
                    .iter_mut()
                    .find(|d| d.device_id == device_id && d.active && d.registered_at <= sent_at)
                else {
                    return Ok((None, false));
                };
                d.active = false;
                d.deactivated_reason = Some(reason.to_string());
                d.deactivated_at = Some(at);
                Ok((Some(list), true))
            },
        )
        .await
    }
}

#[async_trait]
impl Slots for NatsStore {
    async fn take_slot(
        &self,
        key: &str,
        token: &str,
        limit: u32,
        window_ms: i64,
        now: i64,
    ) -> StoreResult<SlotTaken> {
        // Any text may be a slot key: its digest is a valid bucket key.
        let bucket_key = hex(&Sha256::digest(key.as_bytes()));
        modify::<Vec<(String, i64)>, SlotTaken>(
            &self.engine().buckets.slots,
            &bucket_key,
            |slots| {
                let mut slots = slots.unwrap_or_default();
                let before = slots.clone();
                let taken = take_from(&mut slots, token, limit, window_ms, now);
                let changed = slots != before;
                Ok((changed.then_some(slots), taken))
            },
        )
        .await
    }
}
