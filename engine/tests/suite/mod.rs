//! Shared engine contract checks, used by each engine's test file.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use herald_common::api::{
    ChannelKind, DeviceAddress, DeviceOutcome, Outcome, Priority, RecipientStatus, Strategy,
    UserProfile,
};
use herald_common::protocol::MessageContent;
use herald_engine::store::{
    AcceptOutcome, AttemptRecord, IdempotencyClaim, JobNext, JobState, MessageRecord, Phase,
    Receipt, RecipientRecord, Stop, Templates,
};
use herald_engine::{Bus, Devices, History, RequestError, SlotTaken, Slots, Store};
use tokio::sync::mpsc;

pub fn record(id: &str, users: &[&str]) -> MessageRecord {
    MessageRecord {
        id: id.to_string(),
        created_at: herald_common::time::now_ms(),
        priority: Priority::Normal,
        strategy: Strategy::Fallback,
        channels: vec![ChannelKind::InApp, ChannelKind::Email],
        ack_timeout_ms: 1000,
        expires_at: None,
        title: Some("t".into()),
        body: Some("b".into()),
        data: None,
        email: None,
        sms: None,
        push: None,
        chat: None,
        template: None,
        locale: None,
        category: None,
        send_at: None,
        cancel_key: None,
        escalate: None,
        sender: None,
        recipients: users
            .iter()
            .map(|u| RecipientRecord {
                user_id: u.to_string(),
                email: None,
                phone: None,
            })
            .collect(),
    }
}

fn content(id: &str) -> MessageContent {
    MessageContent {
        id: id.into(),
        title: Some(format!("title {id}")),
        body: None,
        data: None,
        created_at: "2026-11-26T10:00:00Z".into(),
    }
}

async fn recv(rx: &mut mpsc::Receiver<herald_engine::BusMsg>) -> herald_engine::BusMsg {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a message within 5s")
        .expect("channel open")
}

pub async fn bus_contract(bus: &dyn Bus) {
    let unique = ulid::Ulid::generate().to_string();
    let subject = format!("herald.test.{unique}");

    // Nobody listening: a request learns it at once.
    let started = std::time::Instant::now();
    let pending = bus
        .request(&subject, Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert!(matches!(
        pending.wait(Duration::from_secs(5)).await,
        Err(RequestError::NoResponders)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no-responders must not wait for the timeout"
    );

    // A subscriber gets publishes and can answer requests.
    let (tx, mut rx) = mpsc::channel(128);
    let sub = bus.subscribe(&subject, tx).await.unwrap();
    bus.publish(&subject, Bytes::from_static(b"one"))
        .await
        .unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(&m.payload[..], b"one");
    assert!(m.reply.is_none());

    let pending = bus
        .request(&subject, Bytes::from_static(b"ping"))
        .await
        .unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(&m.payload[..], b"ping");
    bus.publish(
        m.reply.as_deref().expect("a reply subject"),
        Bytes::from_static(b"pong"),
    )
    .await
    .unwrap();
    assert_eq!(
        &pending.wait(Duration::from_secs(5)).await.unwrap()[..],
        b"pong"
    );

    // A subscriber that never answers: timeout, not no-responders.
    let pending = bus
        .request(&subject, Bytes::from_static(b"ignored"))
        .await
        .unwrap();
    assert!(matches!(
        pending.wait(Duration::from_millis(200)).await,
        Err(RequestError::Timeout)
    ));
    let _ = recv(&mut rx).await;

    // Order of publishes from one process is kept.
    for i in 0..50u32 {
        bus.publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..50u32 {
        assert_eq!(recv(&mut rx).await.payload, Bytes::from(i.to_string()));
    }

    // Gather collects every answer; with nobody listening it returns at once, empty.
    let (tx2, rx2) = mpsc::channel(16);
    let _second = bus.subscribe(&subject, tx2).await.unwrap();
    let answer = |mut rx: mpsc::Receiver<herald_engine::BusMsg>, text: &'static [u8]| async move {
        let m = recv(&mut rx).await;
        (m.reply.expect("a reply subject"), text, rx)
    };
    let gathering = bus.gather(
        &subject,
        Bytes::from_static(b"who?"),
        Duration::from_millis(800),
    );
    let answering = async {
        let (r1, t1, rx_back) = answer(rx, b"one").await;
        bus.publish(&r1, Bytes::from_static(t1)).await.unwrap();
        let (r2, t2, rx2_back) = answer(rx2, b"two").await;
        bus.publish(&r2, Bytes::from_static(t2)).await.unwrap();
        (rx_back, rx2_back)
    };
    let (gathered, (_rx, _rx2)) = tokio::join!(gathering, answering);
    let mut gathered: Vec<Vec<u8>> = gathered.unwrap().iter().map(|b| b.to_vec()).collect();
    gathered.sort();
    assert_eq!(gathered, vec![b"one".to_vec(), b"two".to_vec()]);
    drop(_second);
    let nobody = format!("herald.test.{unique}.nobody");
    let started = std::time::Instant::now();
    assert!(
        bus.gather(&nobody, Bytes::from_static(b"?"), Duration::from_secs(3))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gather with no listeners must not wait out the window"
    );

    // Dropping the subscription removes the interest.
    drop(sub);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let pending = bus
            .request(&subject, Bytes::from_static(b"gone"))
            .await
            .unwrap();
        match pending.wait(Duration::from_millis(500)).await {
            Err(RequestError::NoResponders) => break,
            other if std::time::Instant::now() > deadline => panic!("still subscribed: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // Queue groups: each message goes to one member.
    let group_subject = format!("herald.test.{unique}.group");
    let (tx1, mut rx1) = mpsc::channel(64);
    let (tx2, mut rx2) = mpsc::channel(64);
    let _s1 = bus
        .queue_subscribe(&group_subject, "workers", tx1)
        .await
        .unwrap();
    let _s2 = bus
        .queue_subscribe(&group_subject, "workers", tx2)
        .await
        .unwrap();
    for i in 0..20u32 {
        bus.publish(&group_subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got < 20 {
        tokio::select! {
            Some(_) = rx1.recv() => got += 1,
            Some(_) = rx2.recv() => got += 1,
            _ = tokio::time::sleep_until(deadline) => panic!("queue group got {got} of 20"),
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rx1.try_recv().is_err() && rx2.try_recv().is_err(),
        "a message went to both members"
    );
}

/// Retries a first step until the engine has taken the message in (the cluster engine does
/// that asynchronously, from its ingest stream).
async fn first_advance(
    store: &dyn Store,
    id: &str,
    idx: u32,
    attempt: Option<AttemptRecord>,
    next: JobNext,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.advance(id, idx, attempt.clone(), next.clone()).await {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("advance never succeeded: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The store contract; `recovers` says whether the engine refills its queue from
/// [`Store::pending`] (the embedded one does; JetStream redelivers by itself).
pub async fn store_contract(store: &dyn Store, recovers: bool) {
    let unique = ulid::Ulid::generate().to_string();
    let id = format!("m1-{unique}");
    let rec = record(&id, &["alice", "bob"]);
    let claim = || IdempotencyClaim {
        key: format!("k-{unique}"),
        body_hash: vec![1, 2, 3],
    };
    assert_eq!(
        store.accept(&rec, Some(claim())).await.unwrap(),
        AcceptOutcome::Created
    );

    // Same key, same body: the original answer. Different body: conflict.
    let again = record(&format!("m2-{unique}"), &["alice", "bob"]);
    assert_eq!(
        store.accept(&again, Some(claim())).await.unwrap(),
        AcceptOutcome::Duplicate {
            message_id: id.clone(),
            recipients: 2
        }
    );
    let other = IdempotencyClaim {
        key: format!("k-{unique}"),
        body_hash: vec![9],
    };
    assert_eq!(
        store.accept(&again, Some(other)).await.unwrap(),
        AcceptOutcome::Conflict
    );
    assert!(
        store
            .message(&format!("m2-{unique}"))
            .await
            .unwrap()
            .is_none(),
        "a duplicate stores nothing"
    );

    let view = store.message(&id).await.unwrap().expect("stored");
    assert_eq!(view.recipients.len(), 2);
    assert!(
        view.recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Pending)
    );

    if recovers {
        let pending = store.pending().await.unwrap();
        let mine = pending
            .iter()
            .find(|p| p.record.id == id)
            .expect("pending jobs");
        assert_eq!(mine.jobs.len(), 2);
        assert_eq!(mine.record.title.as_deref(), Some("t"));
    }

    // alice: offline on in_app, then sent by email.
    let now = herald_common::time::now_ms();
    let offline = AttemptRecord::new(ChannelKind::InApp, Outcome::Offline, None, now);
    let next = JobState {
        channel_idx: 1,
        done_devices: vec!["phone".into()],
        ..JobState::start(0, now)
    };
    first_advance(
        store,
        &id,
        0,
        Some(offline),
        JobNext::Continue(next.clone()),
    )
    .await;
    if recovers {
        let pending = store.pending().await.unwrap();
        let mine = pending.iter().find(|p| p.record.id == id).unwrap();
        assert_eq!(mine.jobs.iter().find(|j| j.idx == 0), Some(&next));
    }
    let sent = AttemptRecord {
        provider: Some("relay-a".into()),
        devices: vec![DeviceOutcome {
            device_id: "phone".into(),
            outcome: Outcome::Sent,
            provider: Some("fcm".into()),
            detail: None,
        }],
        ..AttemptRecord::new(
            ChannelKind::Email,
            Outcome::Sent,
            Some("250 OK".into()),
            now + 5,
        )
    };
    store
        .advance(
            &id,
            0,
            Some(sent),
            JobNext::Finish {
                status: RecipientStatus::Sent,
                channel: Some(ChannelKind::Email),
            },
        )
        .await
        .unwrap();
    // bob: failed everywhere.
    let failed = JobNext::Finish {
        status: RecipientStatus::Failed,
        channel: None,
    };
    first_advance(store, &id, 1, None, failed).await;
    // bob is a dead letter now, alice is not.
    let page = store.dead_letters(100, None).await.unwrap();
    let mine: Vec<_> = page.items.iter().filter(|d| d.id == id).collect();
    assert_eq!(mine.len(), 1, "{page:?}");
    assert_eq!(
        (mine[0].user_id.as_str(), mine[0].status),
        ("bob", RecipientStatus::Failed)
    );
    assert_eq!(mine[0].title.as_deref(), Some("t"));
    assert_eq!(
        store
            .mark_receipt(&id, "alice", Receipt::Read, now + 10)
            .await
            .unwrap(),
        vec![0],
        "the first read of alice's recipient"
    );
    assert!(
        store
            .mark_receipt(&id, "alice", Receipt::Read, now + 20)
            .await
            .unwrap()
            .is_empty(),
        "the first read wins"
    );
    assert_eq!(
        store.receipts(&id, 0).await.unwrap(),
        (Some(now + 10), None)
    );

    let view = store.message(&id).await.unwrap().unwrap();
    let alice = &view.recipients[0];
    assert_eq!(
        (alice.status, alice.channel),
        (RecipientStatus::Sent, Some(ChannelKind::Email))
    );
    let outcomes: Vec<_> = alice
        .attempts
        .iter()
        .map(|a| (a.channel, a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (ChannelKind::InApp, Outcome::Offline),
            (ChannelKind::Email, Outcome::Sent)
        ]
    );
    assert!(alice.read_at.is_some());
    assert_eq!(view.recipients[1].status, RecipientStatus::Failed);
    assert_eq!(view.status, herald_common::api::MessageStatus::Partial);
    if recovers {
        assert!(
            !store
                .pending()
                .await
                .unwrap()
                .iter()
                .any(|p| p.record.id == id),
            "finished jobs are gone"
        );
    }

    // Users.
    let user = format!("u-{unique}");
    assert!(store.user(&user).await.unwrap().is_none());
    let mut profile = UserProfile {
        email: Some("a@example.com".into()),
        ..Default::default()
    };
    profile.preferences.insert("sms".into(), false);
    store.put_user(&user, &profile).await.unwrap();
    assert_eq!(store.user(&user).await.unwrap(), Some(profile));
    assert!(store.delete_user(&user).await.unwrap());
    assert!(!store.delete_user(&user).await.unwrap());
    assert!(store.user(&user).await.unwrap().is_none());
    assert!(store.is_ready().await);
}

/// `limit` is how many entries the engine keeps per stream.
pub async fn history_contract(history: &dyn History, limit: u64) {
    let unique = ulid::Ulid::generate().to_string();
    let user = format!("user.{unique}>*");
    let empty = history.read_inbox(&user, 0, 100).await.unwrap();
    assert_eq!(
        (empty.head, empty.complete, empty.entries.len()),
        (0, true, 0)
    );

    for i in 1..=3u64 {
        assert_eq!(
            history
                .append_inbox(&user, &content(&format!("p{i}")), None)
                .await
                .unwrap(),
            i
        );
    }
    // Appending the same message again keeps its seq.
    assert_eq!(
        history
            .append_inbox(&user, &content("p2"), None)
            .await
            .unwrap(),
        2
    );
    let page = history.read_inbox(&user, 1, 100).await.unwrap();
    let seqs: Vec<u64> = page.entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(page.entries[0].1.id, "p2");
    assert_eq!((page.head, page.complete), (3, true));

    // Another user's inbox is separate, even with a similar id.
    let other = history
        .read_inbox(&format!("user.{unique}>"), 0, 100)
        .await
        .unwrap();
    assert_eq!(other.head, 0);

    // Past the limit, old entries go and a resume from before them is incomplete.
    for i in 4..=(limit + 3) {
        history
            .append_inbox(&user, &content(&format!("p{i}")), None)
            .await
            .unwrap();
    }
    let page = history.read_inbox(&user, 0, 100).await.unwrap();
    assert_eq!(page.head, limit + 3);
    assert!(!page.complete);
    assert_eq!(page.entries.len() as u64, limit);
    assert_eq!(page.entries[0].0, 4);
    assert!(history.read_inbox(&user, 3, 100).await.unwrap().complete);

    // Expired personal messages are not replayed.
    let expired_user = format!("exp-{unique}");
    history
        .append_inbox(
            &expired_user,
            &content("old"),
            Some(herald_common::time::now_ms() - 1),
        )
        .await
        .unwrap();
    history
        .append_inbox(&expired_user, &content("new"), None)
        .await
        .unwrap();
    let page = history.read_inbox(&expired_user, 0, 100).await.unwrap();
    let ids: Vec<&str> = page.entries.iter().map(|(_, c)| c.id.as_str()).collect();
    assert_eq!(ids, vec!["new"]);

    // Topics: their own seq per topic.
    let topic = format!("news.{unique}");
    assert_eq!(
        history.append_topic(&topic, &content("t1")).await.unwrap(),
        1
    );
    assert_eq!(
        history.append_topic(&topic, &content("t2")).await.unwrap(),
        2
    );
    assert_eq!(
        history
            .append_topic(&format!("{topic}.x"), &content("t3"))
            .await
            .unwrap(),
        1
    );
    let page = history.read_topic(&topic, 1, 10).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].1.id, "t2");
    assert_eq!(page.head, 2);
}

/// Devices: one per token however often it registers, at most `max` (the least recently
/// registered goes), deactivation that a later registration undoes.
pub async fn devices_contract(store: &dyn Devices) {
    let user = format!("dev-{}", ulid::Ulid::generate());
    let fcm = |t: &str| DeviceAddress::Fcm { token: t.into() };
    assert!(store.devices(&user).await.unwrap().is_empty());
    store
        .put_device(&user, "a", fcm("tok-a"), 1, 3)
        .await
        .unwrap();
    store
        .put_device(&user, "b", fcm("tok-b"), 2, 3)
        .await
        .unwrap();
    // The same token under another id is the same device: the old id goes.
    store
        .put_device(&user, "b2", fcm("tok-b"), 3, 3)
        .await
        .unwrap();
    let ids = |list: Vec<herald_engine::DeviceRecord>| {
        list.into_iter().map(|d| d.device_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.devices(&user).await.unwrap()), ["a", "b2"]);
    store
        .put_device(&user, "c", fcm("tok-c"), 4, 3)
        .await
        .unwrap();
    store
        .put_device(&user, "d", fcm("tok-d"), 5, 3)
        .await
        .unwrap();
    assert_eq!(
        ids(store.devices(&user).await.unwrap()),
        ["b2", "c", "d"],
        "past the limit the least recently registered goes"
    );
    // Gone for a push sent at 10: deactivated once, with its reason.
    assert!(
        store
            .deactivate_device(&user, "c", "fcm: UNREGISTERED", 10)
            .await
            .unwrap()
    );
    assert!(
        !store
            .deactivate_device(&user, "c", "again", 11)
            .await
            .unwrap()
    );
    let c = store
        .devices(&user)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == "c")
        .unwrap();
    assert!(!c.active);
    assert_eq!(c.deactivated_reason.as_deref(), Some("fcm: UNREGISTERED"));
    // A device that registered again after the push was sent stays active.
    store
        .put_device(&user, "d", fcm("tok-d"), 20, 3)
        .await
        .unwrap();
    assert!(
        !store
            .deactivate_device(&user, "d", "apns: 410", 15)
            .await
            .unwrap()
    );
    assert!(store.delete_device(&user, "b2").await.unwrap());
    assert!(!store.delete_device(&user, "b2").await.unwrap());
    assert_eq!(ids(store.devices(&user).await.unwrap()), ["c", "d"]);
}

/// Slots: a sliding window per key, idempotent per token, never more than the limit even
/// when taken concurrently.
pub async fn slots_contract(store: &(dyn Slots + Sync)) {
    let key = format!("cap:{}", ulid::Ulid::generate());
    let now = 1_000_000;
    assert_eq!(
        store.take_slot(&key, "m1", 2, 1000, now).await.unwrap(),
        SlotTaken::Granted
    );
    assert_eq!(
        store.take_slot(&key, "m1", 2, 1000, now + 1).await.unwrap(),
        SlotTaken::Granted,
        "the same token is the same slot"
    );
    assert_eq!(
        store.take_slot(&key, "m2", 2, 1000, now + 2).await.unwrap(),
        SlotTaken::Granted
    );
    assert_eq!(
        store.take_slot(&key, "m3", 2, 1000, now + 3).await.unwrap(),
        SlotTaken::Full { until: now + 1000 }
    );
    assert_eq!(
        store
            .take_slot(&key, "m3", 2, 1000, now + 1001)
            .await
            .unwrap(),
        SlotTaken::Granted,
        "the window slides"
    );
    // Concurrent takers: exactly `limit` win.
    let key = format!("race:{}", ulid::Ulid::generate());
    let takes = (0..20).map(|i| {
        let key = key.clone();
        async move {
            store
                .take_slot(&key, &format!("t{i}"), 5, 60_000, now)
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(takes).await;
    assert_eq!(
        results.iter().filter(|r| **r == SlotTaken::Granted).count(),
        5
    );
}

/// Stops from outside (SPEC §9–10): a cancel ends any recipient not yet final as
/// `canceled`, once; a satisfied escalation ends only a recipient waiting for one; the
/// cancel key finds every message accepted with it.
pub async fn stops_contract(store: &dyn Store) {
    let unique = ulid::Ulid::generate().to_string();
    let key = format!("ck-{unique}");
    let mut ids = Vec::new();
    for n in 0..2 {
        let mut rec = record(&format!("s{n}-{unique}"), &["ann", "bob"]);
        rec.cancel_key = Some(key.clone());
        rec.send_at = Some(rec.created_at + 3_600_000);
        assert_eq!(
            store.accept(&rec, None).await.unwrap(),
            AcceptOutcome::Created
        );
        ids.push(rec.id);
    }
    let group = wait_for(
        || async { store.cancel_group(&key).await.unwrap() },
        |g| g.len() == 2,
    )
    .await;
    assert_eq!(group, vec![(ids[0].clone(), 2), (ids[1].clone(), 2)]);
    let view = wait_for(
        || async { store.message(&ids[0]).await.unwrap() },
        |v| v.is_some(),
    )
    .await
    .unwrap();
    assert!(
        view.recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Scheduled),
        "{view:?}"
    );
    let now = herald_common::time::now_ms();
    let id = &ids[0];
    // Wait for the recipient states (the cluster engine writes them from its ingest).
    wait_for(
        || async {
            store.receipts(id, 1).await.is_ok() && store.record(id).await.unwrap().is_some()
        },
        |ok| *ok,
    )
    .await;
    // bob waits for a read after an in-app delivery.
    let awaiting = JobState {
        phase: Phase::Awaiting {
            until: now + 600_000,
        },
        due_at: now + 600_000,
        ..JobState::start(1, now)
    };
    first_advance(store, id, 1, None, JobNext::Continue(awaiting)).await;
    assert!(
        !store.stop(id, 0, Stop::Satisfied, now).await.unwrap(),
        "ann waits for no read"
    );
    assert!(store.stop(id, 0, Stop::Cancel, now).await.unwrap());
    assert!(!store.stop(id, 0, Stop::Cancel, now).await.unwrap(), "once");
    assert!(store.stop(id, 1, Stop::Satisfied, now).await.unwrap());
    assert!(
        !store.stop(id, 1, Stop::Cancel, now).await.unwrap(),
        "final already"
    );
    let view = store.message(id).await.unwrap().unwrap();
    let statuses: Vec<_> = view.recipients.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![RecipientStatus::Canceled, RecipientStatus::Delivered]
    );
    assert_eq!(
        store.record(id).await.unwrap().map(|r| r.cancel_key),
        Some(Some(key.clone()))
    );
    assert!(store.record("no-such-message").await.unwrap().is_none());
}

/// Templates: every put is a new version; a delete hides the name but keeps its versions
/// (messages accepted earlier still render), and a put after it goes on counting.
pub async fn templates_contract(store: &dyn Templates) {
    let unique = ulid::Ulid::generate().to_string();
    let name = format!("t-{unique}");
    let spec = |title: &str| -> herald_common::api::TemplateSpec {
        serde_json::from_value(serde_json::json!({
            "default_locale": "en",
            "locales": {"en": {"title": title}, "zh-CN": {"title": "你好 {{ name }}"}}
        }))
        .unwrap()
    };
    assert!(store.template(&name, None).await.unwrap().is_none());
    assert_eq!(
        store
            .put_template(&name, &spec("v1 {{ name }}"), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .put_template(&name, &spec("v2 {{ name }}"), 2)
            .await
            .unwrap(),
        2
    );
    let latest = store.template(&name, None).await.unwrap().unwrap();
    assert_eq!(
        (latest.version, latest.spec.clone()),
        (2, spec("v2 {{ name }}"))
    );
    let first = store.template(&name, Some(1)).await.unwrap().unwrap();
    assert_eq!(first.spec, spec("v1 {{ name }}"));
    assert!(
        store
            .templates()
            .await
            .unwrap()
            .contains(&(name.clone(), 2))
    );
    assert!(store.delete_template(&name).await.unwrap());
    assert!(!store.delete_template(&name).await.unwrap());
    assert!(store.template(&name, None).await.unwrap().is_none());
    assert!(
        !store
            .templates()
            .await
            .unwrap()
            .iter()
            .any(|(n, _)| n == &name)
    );
    assert!(
        store.template(&name, Some(1)).await.unwrap().is_some(),
        "versions outlive a delete"
    );
    assert_eq!(store.put_template(&name, &spec("v3"), 3).await.unwrap(), 3);
    assert_eq!(
        store
            .template(&name, None)
            .await
            .unwrap()
            .map(|t| t.version),
        Some(3)
    );
}

/// Polls `get` until `done` holds (at most 10 s).
async fn wait_for<T, F, Fut>(get: F, done: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = get().await;
        if done(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
