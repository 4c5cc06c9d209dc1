//! Helpers over JetStream key-value buckets: JSON values, reads from any replica or from
//! the stream's leader, and compare-and-set updates.

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{StoreError, StoreResult};

pub(crate) fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a JSON value, treating deleted keys as absent.
pub(crate) async fn get_json<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> StoreResult<Option<(T, u64)>> {
    let entry = store.entry(key).await.map_err(|e| backend("kv read", e))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let value = serde_json::from_slice(&e.value).map_err(|err| corrupt(key, err))?;
            Ok(Some((value, e.revision)))
        }
        _ => Ok(None),
    }
}

/// Reads a JSON value from the bucket's stream leader. Buckets allow direct gets, which any
/// replica may answer — one that has not applied the latest acknowledged write yet says
/// "absent" or gives an older revision. Wherever such an answer would lose or repeat work
/// (a job's state, a compare-and-set after a conflict), read here.
pub(crate) async fn get_json_latest<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> StoreResult<Option<(T, u64)>> {
    let subject = format!("{}{key}", store.prefix);
    let message = match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(backend("kv read", e)),
    };
    let deleted = message
        .headers
        .get("KV-Operation")
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
    if deleted {
        return Ok(None);
    }
    let value = serde_json::from_slice(&message.payload).map_err(|err| corrupt(key, err))?;
    Ok(Some((value, message.sequence)))
}

/// Reads from any replica, confirming an absence with the leader: for values that, once
/// written, never change (or where an older revision is harmless) but must not be missed.
pub(crate) async fn get_json_confirmed<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> StoreResult<Option<(T, u64)>> {
    match get_json::<T>(store, key).await? {
        Some(found) => Ok(Some(found)),
        None => get_json_latest::<T>(store, key).await,
    }
}

/// The last message of `subject`, from any replica or from the stream's leader.
pub(crate) async fn last_of(
    stream: &stream::Stream,
    subject: &str,
    from_leader: bool,
) -> StoreResult<Option<jetstream::message::StreamMessage>> {
    if from_leader {
        return match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(backend("history read", e)),
        };
    }
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(backend("history read", e)),
    }
}

/// The first message of `subject` at or after stream sequence `from`. Any replica may
/// answer; a replica that has not applied the newest writes says "none" where the leader
/// has one, so a miss is asked again of the leader and only the leader's miss is `None`.
/// (A replica holds a prefix of the stream, so what it does answer is the right message.)
pub(crate) async fn next_of(
    stream: &stream::Stream,
    subject: &str,
    from: u64,
) -> StoreResult<Option<jetstream::message::StreamMessage>> {
    match stream
        .direct_get_next_for_subject(subject, Some(from))
        .await
    {
        Ok(m) => return Ok(Some(m)),
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => {}
        Err(e) => return Err(backend("history read", e)),
    }
    match stream.get_first_raw_message_by_subject(subject, from).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(backend("history read", e)),
    }
}

/// Read-modify-write with compare-and-set, retried on conflict. `f` sees the current value
/// (or `None`) and returns the new value and a result, or `None` to leave it unchanged.
/// The first read may come from any replica; an absence, and every read after a conflict,
/// is confirmed with the leader, so a lagging replica costs a retry, never a wrong answer.
pub(crate) async fn modify<T, R>(
    store: &kv::Store,
    key: &str,
    mut f: impl FnMut(Option<T>) -> StoreResult<(Option<T>, R)>,
) -> StoreResult<R>
where
    T: Serialize + DeserializeOwned,
{
    let mut from_leader = false;
    for _ in 0..50 {
        let current = match from_leader {
            true => get_json_latest::<T>(store, key).await?,
            false => get_json_confirmed::<T>(store, key).await?,
        };
        let revision = current.as_ref().map(|(_, r)| *r);
        let (next, result) = f(current.map(|(v, _)| v))?;
        let Some(next) = next else {
            return Ok(result);
        };
        let bytes = Bytes::from(serde_json::to_vec(&next).map_err(|e| corrupt(key, e))?);
        let written = match revision {
            Some(rev) => store
                .update(key, bytes, rev)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None => store.create(key, bytes).await.map(|_| ()).map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            }),
        };
        match written {
            Ok(()) => return Ok(result),
            Err((true, _)) => from_leader = true,
            Err((false, e)) => return Err(backend("kv write", e)),
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key}: too much contention"
    )))
}

/// Creates `key` unless it exists; `false` if it already did.
pub(crate) async fn create_json<T: Serialize>(
    store: &kv::Store,
    key: &str,
    value: &T,
) -> StoreResult<bool> {
    let bytes = Bytes::from(serde_json::to_vec(value).map_err(|e| corrupt(key, e))?);
    match store.create(key, bytes).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(backend("kv create", e)),
    }
}

/// Writes `key`, whatever it held.
pub(crate) async fn put_json<T: Serialize>(
    store: &kv::Store,
    key: &str,
    value: &T,
) -> StoreResult<()> {
    let bytes = Bytes::from(serde_json::to_vec(value).map_err(|e| corrupt(key, e))?);
    store
        .put(key, bytes)
        .await
        .map(|_| ())
        .map_err(|e| backend("kv write", e))
}
