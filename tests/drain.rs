//! Graceful drain and rolling restart: SIGTERM closes sessions with 1012 spread over the
//! drain window; restarting every gateway one by one under load loses nothing, because
//! clients reconnect elsewhere and `resume` from their last seq.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::Herald;
use support::nats::Nats;
use support::resilient::{self, Seen, Urls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_gateway_under_load_loses_nothing() {
    let nats = Nats::single();
    let env = |b: support::HeraldBuilder| {
        b.env("HERALD_DRAIN_S", "2")
            .env("HERALD_PRESENCE_LINGER_MS", "0")
    };
    let dispatcher = env(Herald::builder().role("dispatcher", &nats.url())).start();
    let mut gateways: Vec<Herald> = (0..3)
        .map(|_| env(Herald::builder().role("gateway", &nats.url())).start())
        .collect();
    let urls: Urls = Arc::new(Mutex::new(gateways.iter().map(|g| g.ws_url()).collect()));
    let api = dispatcher.api();
    api.wait_ready(Duration::from_secs(60)).await;

    let users: Vec<String> = (0..12).map(|i| format!("roll{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut seen: HashMap<String, Arc<Mutex<Seen>>> = HashMap::new();
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let s = Arc::new(Mutex::new(Seen::default()));
        seen.insert(u.clone(), Arc::clone(&s));
        let token = gateways[0].token(u, &[], Duration::from_secs(600));
        tasks.push(tokio::spawn(resilient::run(
            i,
            token,
            Arc::clone(&urls),
            s,
            Arc::clone(&stop),
            None,
        )));
    }
    // Load: personal messages to every user, all along.
    let sent: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (api, users, sent, sending) = (
            api.clone(),
            users.clone(),
            Arc::clone(&sent),
            Arc::clone(&sending),
        );
        tokio::spawn(async move {
            let mut i = 0usize;
            while sending.load(Ordering::Relaxed) {
                let user = &users[i % users.len()];
                let a = api.post("/v1/messages", json!({"to": [user], "title": format!("m{i}"), "channels": ["in_app"], "ack_timeout_ms": 1000})).await;
                if a.status == 202 {
                    sent.lock()
                        .unwrap()
                        .push((user.clone(), a.body["id"].as_str().unwrap().to_string()));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Roll every gateway: SIGTERM, wait for a clean exit, start a replacement.
    let mut drains = Vec::new();
    for (i, gateway) in gateways.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let old = gateway.ws_url();
        let started = Instant::now();
        let code = tokio::task::block_in_place(|| gateway.terminate(Duration::from_secs(30)));
        assert_eq!(code, Some(0), "gateway {i} exits cleanly");
        drains.push(started.elapsed());
        let fresh = env(Herald::builder().role("gateway", &nats.url())).start();
        {
            let mut u = urls.lock().unwrap();
            u.retain(|x| *x != old);
            u.push(fresh.ws_url());
        }
        *gateway = fresh;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    sending.store(false, Ordering::Relaxed);
    sender.await.unwrap();

    // Every message reaches its user: live, or by resume after the reconnect.
    let sent = sent.lock().unwrap().clone();
    assert!(
        sent.len() > 100,
        "load was sent throughout ({} messages)",
        sent.len()
    );
    support::eventually(
        Duration::from_secs(30),
        "every message seen by its user",
        || {
            let missing: Vec<&(String, String)> = sent
                .iter()
                .filter(|(u, id)| !seen[u].lock().unwrap().ids.contains(id))
                .collect();
            let done = missing.is_empty();
            if !done && missing.len() < 5 {
                eprintln!("still missing: {missing:?}");
            }
            async move { done.then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }

    let mut restarting = Vec::new();
    for s in seen.values() {
        let s = s.lock().unwrap();
        assert_eq!(
            s.duplicates_in_a_session, 0,
            "an id was shown twice in one session"
        );
        restarting.extend(
            s.closes
                .iter()
                .filter(|(c, _)| *c == 1012)
                .map(|(_, at)| *at),
        );
    }
    assert!(
        restarting.len() >= 12,
        "every gateway's sessions were closed with 1012: {}",
        restarting.len()
    );
    assert!(
        drains.iter().all(|d| *d > Duration::from_millis(300)),
        "each gateway drained its sessions: {drains:?}"
    );
    // Closes are spread over the drain window, not all at once.
    restarting.sort();
    let spread = restarting
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d < Duration::from_secs(1))
        .sum::<Duration>();
    assert!(
        spread > Duration::from_millis(300),
        "closes spread over the window: {spread:?}"
    );
    eprintln!(
        "rolling restart: {} messages, drains took {drains:?}, {} sessions closed with 1012",
        sent.len(),
        restarting.len()
    );
}
