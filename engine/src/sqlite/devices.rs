//! Push devices in SQLite: one row per (user, device), the record as JSON.

use async_trait::async_trait;
use herald_common::api::DeviceAddress;
use rusqlite::{Connection, params};

use super::{SqliteStore, corrupt};
use crate::store::{DeviceRecord, Devices, StoreResult, register_device};

fn load(c: &Connection, user_id: &str) -> rusqlite::Result<Vec<DeviceRecord>> {
    let mut stmt = c.prepare_cached("SELECT record FROM devices WHERE user_id = ?1")?;
    let rows = stmt.query_map([user_id], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for json in rows {
        out.push(serde_json::from_str::<DeviceRecord>(&json?).map_err(corrupt)?);
    }
    out.sort_by_key(|d| d.registered_at);
    Ok(out)
}

fn save(c: &Connection, user_id: &str, device: &DeviceRecord) -> rusqlite::Result<()> {
    let json = serde_json::to_string(device).map_err(corrupt)?;
    c.prepare_cached(
        "INSERT INTO devices (user_id, device_id, record) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET record = excluded.record",
    )?
    .execute(params![user_id, device.device_id, json])?;
    Ok(())
}

#[async_trait]
impl Devices for SqliteStore {
    async fn put_device(
        &self,
        user_id: &str,
        device_id: &str,
        address: DeviceAddress,
        now: i64,
        max: usize,
    ) -> StoreResult<DeviceRecord> {
        let (user_id, device_id) = (user_id.to_string(), device_id.to_string());
        self.write(move |c| {
            let before = load(c, &user_id)?;
            let mut after = before.clone();
            let record = register_device(&mut after, &device_id, address.clone(), now, max);
            for gone in before
                .iter()
                .filter(|b| !after.iter().any(|a| a.device_id == b.device_id))
            {
                c.prepare_cached("DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2")?
                    .execute(params![user_id, gone.device_id])?;
            }
            save(c, &user_id, &record)?;
            Ok(record)
        })
        .await
    }

    async fn devices(&self, user_id: &str) -> StoreResult<Vec<DeviceRecord>> {
        let user_id = user_id.to_string();
        self.read(move |c| load(c, &user_id)).await
    }

    async fn delete_device(&self, user_id: &str, device_id: &str) -> StoreResult<bool> {
        let (user_id, device_id) = (user_id.to_string(), device_id.to_string());
        self.write(move |c| {
            Ok(
                c.prepare_cached("DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2")?
                    .execute(params![user_id, device_id])?
                    > 0,
            )
        })
        .await
    }

    async fn deactivate_device(
        &self,
        user_id: &str,
        device_id: &str,
        reason: &str,
        sent_at: i64,
    ) -> StoreResult<bool> {
        let (user_id, device_id, reason) = (
            user_id.to_string(),
            device_id.to_string(),
            reason.to_string(),
        );
        self.write(move |c| {
            let Some(mut device) = load(c, &user_id)?
                .into_iter()
                .find(|d| d.device_id == device_id)
            else {
                return Ok(false);
            };
            if !device.active || device.registered_at > sent_at {
                return Ok(false);
            }
            device.active = false;
            device.deactivated_reason = Some(reason.clone());
            device.deactivated_at = Some(herald_common::time::now_ms());
            save(c, &user_id, &device)?;
            Ok(true)
        })
        .await
    }
}
