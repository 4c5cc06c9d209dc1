//! Templates on the cluster engine: a head per name (`h.<name>`: latest version, deleted)
//! moved forward with compare-and-set, and each version under `v.<name>.<version>`, never
//! changed after it is written.

use async_trait::async_trait;
use herald_common::api::TemplateSpec;
use serde::{Deserialize, Serialize};

use super::kv_json::{create_json, get_json_confirmed, get_json_latest, modify};
use super::store::NatsStore;
use crate::store::{StoreError, StoreResult, TemplateRecord, Templates};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    latest: u32,
    #[serde(default)]
    deleted: bool,
}

fn head_key(name: &str) -> String {
    format!("h.{name}")
}

fn version_key(name: &str, version: u32) -> String {
    format!("v.{name}.{version}")
}

#[async_trait]
impl Templates for NatsStore {
    async fn put_template(&self, name: &str, spec: &TemplateSpec, now: i64) -> StoreResult<u32> {
        let bucket = &self.engine().buckets.templates;
        // Take the next version number first, then write that version: a version number
        // is never handed out twice, even to two dispatchers at once.
        let version = modify::<Head, u32>(bucket, &head_key(name), |head| {
            let next = head.map_or(1, |h| h.latest + 1);
            Ok((
                Some(Head {
                    latest: next,
                    deleted: true,
                }),
                next,
            ))
        })
        .await?;
        let record = TemplateRecord {
            name: name.to_string(),
            version,
            created_at: now,
            spec: spec.clone(),
        };
        if !create_json(bucket, &version_key(name, version), &record).await? {
            return Err(StoreError::Backend(format!(
                "template {name} version {version} exists already"
            )));
        }
        // Visible once its version is written.
        modify::<Head, ()>(bucket, &head_key(name), |head| match head {
            Some(h) if h.latest == version => Ok((
                Some(Head {
                    latest: version,
                    deleted: false,
                }),
                (),
            )),
            _ => Ok((None, ())),
        })
        .await?;
        Ok(version)
    }

    async fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<TemplateRecord>> {
        let bucket = &self.engine().buckets.templates;
        let version = match version {
            Some(v) => v,
            // The latest from the leader: a replica may not have the newest PUT yet.
            None => match get_json_latest::<Head>(bucket, &head_key(name)).await? {
                Some((h, _)) if !h.deleted => h.latest,
                _ => return Ok(None),
            },
        };
        Ok(
            get_json_confirmed::<TemplateRecord>(bucket, &version_key(name, version))
                .await?
                .map(|(r, _)| r),
        )
    }

    async fn latest_template(&self, name: &str) -> StoreResult<Option<u32>> {
        let bucket = &self.engine().buckets.templates;
        // From the leader: a replica may not have the newest PUT yet.
        Ok(
            match get_json_latest::<Head>(bucket, &head_key(name)).await? {
                Some((h, _)) if !h.deleted => Some(h.latest),
                _ => None,
            },
        )
    }

    async fn templates(&self) -> StoreResult<Vec<(String, u32)>> {
        let bucket = &self.engine().buckets.templates;
        let mut keys = bucket
            .keys()
            .await
            .map_err(|e| StoreError::Unavailable(format!("templates: {e}")))?;
        let mut out = Vec::new();
        use futures::StreamExt;
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            let Some(name) = key.strip_prefix("h.") else {
                continue;
            };
            if let Some((h, _)) = get_json_confirmed::<Head>(bucket, &key).await?
                && !h.deleted
            {
                out.push((name.to_string(), h.latest));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete_template(&self, name: &str) -> StoreResult<bool> {
        modify::<Head, bool>(
            &self.engine().buckets.templates,
            &head_key(name),
            |head| match head {
                Some(h) if !h.deleted => Ok((
                    Some(Head {
                        latest: h.latest,
                        deleted: true,
                    }),
                    true,
                )),
                _ => Ok((None, false)),
            },
        )
        .await
    }
}
