//! The cluster engine as users deploy it: real nats-server (one node, or three with
//! replicated streams), several `herald dispatcher` and `herald gateway` processes, and
//! faults: `kill -9` of a gateway, of a dispatcher, of a NATS node.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::nats::Nats;
use support::{Api, Client, Frame, Herald, Smtp, attempts, pairs};

const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    nats: Nats,
    dispatchers: Vec<Herald>,
    gateways: Vec<Herald>,
}

impl Cluster {
    fn start(nats: Nats, dispatchers: usize, gateways: usize, env: &[(&str, &str)]) -> Cluster {
        let url = nats.url();
        let make = |role: &'static str| {
            let mut b = Herald::builder().role(role, &url);
            for (k, v) in env {
                b = b.env(k, *v);
            }
            b.start()
        };
        let dispatchers = (0..dispatchers).map(|_| make("dispatcher")).collect();
        let gateways = (0..gateways).map(|_| make("gateway")).collect();
        Cluster {
            nats,
            dispatchers,
            gateways,
        }
    }

    /// Waits until every process says its engine is ready (a NATS cluster that just
    /// started takes a while to elect leaders for replicated streams).
    async fn ready(self) -> Cluster {
        for h in self.dispatchers.iter().chain(&self.gateways) {
            h.api().wait_ready(Duration::from_secs(120)).await;
        }
        self
    }

    fn api(&self, i: usize) -> Api {
        self.dispatchers[i].api()
    }

    async fn connect(&self, gateway: usize, user: &str) -> Client {
        self.gateways[gateway].connect(user).await
    }
}

async fn presence(api: &Api, user: &str) -> Value {
    api.get(&format!("/v1/users/{user}/presence")).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_three_gateways_work_as_one() {
    let c = Cluster::start(Nats::single(), 2, 3, &[]).ready().await;
    let (d0, d1) = (c.api(0), c.api(1));

    // Sessions spread over gateways; presence counts them all.
    let mut a0 = c.connect(0, "alice").await;
    let mut a1 = c.connect(1, "alice").await;
    let b2 = c.connect(2, "bob").await;
    assert_eq!(
        presence(&d0, "alice").await,
        json!({"online": true, "sessions": 2})
    );
    assert_eq!(
        presence(&d1, "bob").await,
        json!({"online": true, "sessions": 1})
    );
    assert_eq!(
        presence(&d0, "carol").await,
        json!({"online": false, "sessions": 0})
    );

    // A user with sessions on two gateways gets each message on both.
    let id = d1
        .send(json!({"to": ["alice"], "title": "to both", "channels": ["in_app"]}))
        .await;
    let m0 = a0.expect("message").await;
    let m1 = a1.expect("message").await;
    assert_eq!(
        (m0["id"].as_str(), m1["id"].as_str()),
        (Some(id.as_str()), Some(id.as_str()))
    );
    assert_eq!(m0["seq"], m1["seq"]);
    a1.ack(&id).await;
    let m = d0.wait_final(&id, WAIT).await;
    assert_eq!(attempts(&m, 0), pairs(&[("in_app", "acked")]));

    // A topic broadcast reaches every gateway.
    let mut subs = Vec::new();
    for g in 0..3 {
        let token = c.gateways[g].token(&format!("fan{g}"), &["news"], Duration::from_secs(600));
        let mut s = Client::connect(&c.gateways[g].ws_url(), &token)
            .await
            .unwrap();
        s.send(json!({"type": "subscribe", "topic": "news"})).await;
        assert_eq!(s.expect("subscribed").await["topic"], "news");
        subs.push(s);
    }
    let t = d0
        .post("/v1/topics/news/messages", json!({"title": "everyone"}))
        .await;
    assert_eq!(t.status, 202);
    for s in subs.iter_mut() {
        let m = s.expect("message").await;
        assert_eq!(
            (m["id"].clone(), m["topic"].as_str(), m["seq"].clone()),
            (t.body["id"].clone(), Some("news"), t.body["seq"].clone())
        );
    }

    // A backend publishes to herald.send over JetStream: delivered like an HTTP send, with
    // its status changes on herald.events.<status>.
    let nc = async_nats::connect(c.nats.url()).await.unwrap();
    let mut events = nc.subscribe("herald.events.>").await.unwrap();
    nc.flush().await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-7-shipped");
    let body = json!({"to": ["bob"], "title": "via NATS", "channels": ["in_app"]}).to_string();
    js.publish_with_headers("herald.send", headers.clone(), body.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut bob = b2.auto_ack();
    let frame = match tokio::time::timeout(WAIT, bob.recv()).await {
        Ok(Some(Frame::Json(v))) => v,
        other => panic!("bob got {other:?}"),
    };
    assert_eq!(frame["title"], "via NATS");
    let nats_id = frame["id"].as_str().unwrap().to_string();
    assert_eq!(d1.wait_final(&nats_id, WAIT).await["status"], "delivered");
    let event: Value = loop {
        let e = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&e.payload).unwrap();
        if v["id"] == nats_id.as_str() {
            assert_eq!(e.subject.as_str(), "herald.events.delivered");
            break v;
        }
    };
    assert_eq!(
        (
            event["user_id"].as_str(),
            event["status"].as_str(),
            event["channel"].as_str()
        ),
        (Some("bob"), Some("delivered"), Some("in_app"))
    );
    assert!(event["at"].as_str().is_some());

    // The same Nats-Msg-Id again is the same message: nothing new reaches bob, while a
    // later, different publish does.
    js.publish_with_headers("herald.send", headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut next_headers = async_nats::HeaderMap::new();
    next_headers.insert("Nats-Msg-Id", "order-8-shipped");
    let marker = json!({"to": ["bob"], "title": "marker", "channels": ["in_app"]}).to_string();
    js.publish_with_headers("herald.send", next_headers, marker.into())
        .await
        .unwrap()
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, bob.recv()).await {
        Ok(Some(Frame::Json(v))) => assert_eq!(
            v["title"], "marker",
            "a repeated Nats-Msg-Id was sent again"
        ),
        other => panic!("{other:?}"),
    }

    // A publish that is not a valid send is announced on herald.events.rejected.
    let mut rejected = nc.subscribe("herald.events.rejected").await.unwrap();
    nc.flush().await.unwrap();
    js.publish("herald.send", json!({"to": []}).to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, rejected.next())
        .await
        .unwrap()
        .unwrap();
    let r: Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(r["code"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_means_fallback_and_resume_elsewhere() {
    let smtp = Smtp::start();
    let mut c = Cluster::start(Nats::single(), 1, 2, &[("HERALD_SMTP_URL", &smtp.url())])
        .ready()
        .await;
    let api = c.api(0);
    api.put_user("alice", json!({"email": "alice@example.com"}))
        .await;
    let mut frames = c.connect(0, "alice").await.auto_ack();
    let first = api
        .send(json!({"to": ["alice"], "title": "one", "ack_timeout_ms": 2000}))
        .await;
    assert_eq!(
        api.wait_final(&first, WAIT).await["recipients"][0]["channel"],
        "in_app"
    );
    let seen = match frames.recv().await {
        Some(Frame::Json(v)) => v["seq"].as_u64().unwrap(),
        other => panic!("{other:?}"),
    };

    c.gateways[0].kill9();
    assert_eq!(
        tokio::time::timeout(WAIT, frames.recv()).await.unwrap(),
        Some(Frame::Ended)
    );
    let started = Instant::now();
    let second = api
        .send(json!({"to": ["alice"], "title": "two", "ack_timeout_ms": 2000}))
        .await;
    let m = api.wait_final(&second, WAIT).await;
    let elapsed = started.elapsed();
    assert_eq!(m["recipients"][0]["channel"], "email", "{m}");
    let a = attempts(&m, 0);
    assert!(a[0].1 == "offline" || a[0].1 == "ack_timeout", "{a:?}");
    assert!(
        elapsed < Duration::from_millis(2000 + 1500),
        "fell back within the ack timeout: {elapsed:?}"
    );
    assert_eq!(
        smtp.wait_mails(1, WAIT).await[0].header("Subject"),
        Some("two")
    );

    // The client reconnects to the other gateway and resumes: nothing lost.
    let mut again = c.connect(1, "alice").await;
    again.send(json!({"type": "resume", "since": seen})).await;
    let missed = again.expect("message").await;
    assert_eq!(missed["id"], second.as_str());
    assert_eq!(missed["seq"], seen + 1);
    let resumed = again.expect("resumed").await;
    assert_eq!(
        (resumed["replayed"].as_u64(), resumed["complete"].as_bool()),
        (Some(1), Some(true))
    );
}

/// Sends `n` messages (idempotent, retried until accepted) to offline users with email.
async fn send_batch(api: Api, prefix: &str, n: usize, accepted: Arc<Mutex<Vec<String>>>) {
    for i in 0..n {
        let body = json!({"to": [{"user_id": format!("{prefix}{i}"), "email": format!("{prefix}{i}@example.com")}],
                          "title": format!("{prefix} {i}"), "channels": ["email"]});
        let key = format!("{prefix}-{i}");
        let deadline = Instant::now() + WAIT;
        loop {
            let sent = api
                .http
                .post(api.url("/v1/messages"))
                .bearer_auth(support::API_KEY)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            if let Ok(r) = sent
                && r.status().as_u16() == 202
            {
                let v: Value = r.json().await.unwrap_or_default();
                accepted
                    .lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap_or_default().to_string());
                break;
            }
            assert!(Instant::now() < deadline, "{key} never accepted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every accepted message ended `sent` with its mail delivered; a repeated mail's first copy
/// predates the fault (it was in flight). Returns the number of repeats.
async fn check_batch(
    api: &Api,
    smtp: &Smtp,
    accepted: &[String],
    before_fault: &[String],
) -> usize {
    for id in accepted {
        let m = api.wait_final(id, Duration::from_secs(90)).await;
        assert_eq!(m["status"], "delivered", "{m}");
        assert_eq!(m["recipients"][0]["channel"], "email");
    }
    let mails = smtp
        .wait_mails(accepted.len(), Duration::from_secs(60))
        .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        *copies
            .entry(m.header("Message-ID").unwrap_or("").to_string())
            .or_default() += 1;
    }
    for id in accepted {
        assert!(
            copies.contains_key(&format!("<{id}.0@herald>")),
            "mail for {id} never arrived"
        );
    }
    for (mid, n) in &copies {
        if *n > 1 {
            assert!(
                before_fault.contains(mid),
                "{mid} sent twice without being in flight at the fault"
            );
        }
    }
    copies.values().map(|n| n - 1).sum()
}

async fn settled_mail_ids(smtp: &Smtp) -> Vec<String> {
    let mut last = usize::MAX;
    support::eventually(Duration::from_secs(20), "the mailbox to settle", || {
        let now = smtp.mails().len();
        let settled = now == last;
        last = now;
        async move {
            if !settled {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            settled.then_some(())
        }
    })
    .await;
    smtp.mails()
        .iter()
        .filter_map(|m| m.header("Message-ID").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_leaves_its_work_to_the_other() {
    let smtp = Smtp::start();
    let mut c = Cluster::start(
        Nats::single(),
        2,
        0,
        &[
            ("HERALD_SMTP_URL", &smtp.url()),
            ("HERALD_NATS_ACK_WAIT_S", "3"),
        ],
    )
    .ready()
    .await;
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let sender = tokio::spawn(send_batch(c.api(1), "k", 150, Arc::clone(&accepted)));
    // Both dispatchers are delivering; kill one in the middle.
    support::eventually(WAIT, "30 mails", || async {
        (smtp.mails().len() >= 30).then_some(())
    })
    .await;
    c.dispatchers[0].kill9();
    let at_kill = smtp.mails().len();
    let before = settled_mail_ids(&smtp).await;
    sender.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(at_kill < accepted.len(), "the kill must come mid-batch");
    let repeats = check_batch(&c.api(1), &smtp, &accepted, &before).await;
    eprintln!(
        "dispatcher kill: {} accepted, {} mailed before, {repeats} repeats",
        accepted.len(),
        before.len()
    );
}

/// SPEC §9: a frequency cap counted by two dispatchers at once never lets both take the
/// last slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_share_one_frequency_cap() {
    let smtp = Smtp::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "[[caps]]\ncategory = \"promo\"\nper_user = 4\nwindow_s = 3600\n",
    )
    .unwrap();
    let config = file.display().to_string();
    let c = Cluster::start(
        Nats::single(),
        2,
        0,
        &[("HERALD_SMTP_URL", &smtp.url()), ("HERALD_CONFIG", &config)],
    )
    .ready()
    .await;
    c.api(0)
        .put_user("gus", json!({"email": "gus@example.com"}))
        .await;
    // Twelve promos at once, half through each dispatcher.
    let ids: Vec<String> = futures::future::join_all((0..12).map(|n| {
        let api = c.api(n % 2);
        async move {
            api.send(
                json!({"to": ["gus"], "title": format!("Deal {n}"), "category": "promo",
                            "channels": ["email"]}),
            )
            .await
        }
    }))
    .await;
    let mut sent = 0;
    for id in &ids {
        let m = c.api(0).wait_final(id, WAIT).await;
        match m["recipients"][0]["status"].as_str() {
            Some("sent") => sent += 1,
            Some("skipped") => assert!(
                m["recipients"][0]["attempts"][0]["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("frequency cap")),
                "{m}"
            ),
            other => panic!("{other:?}: {m}"),
        }
    }
    assert_eq!(sent, 4, "exactly the cap");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_nats_cluster_survives_losing_a_node() {
    let smtp = Smtp::start();
    let mut c = Cluster::start(
        Nats::cluster3(),
        1,
        1,
        &[
            ("HERALD_SMTP_URL", &smtp.url()),
            ("HERALD_NATS_REPLICAS", "3"),
            ("HERALD_NATS_ACK_WAIT_S", "5"),
        ],
    )
    .ready()
    .await;
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    send_batch(c.api(0), "r", 40, Arc::clone(&accepted)).await;
    c.nats.nodes[0].kill9();
    let before = settled_mail_ids(&smtp).await;
    // Keep sending through the loss (retried until accepted, idempotently).
    send_batch(c.api(0), "s", 40, Arc::clone(&accepted)).await;
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 80);
    let repeats = check_batch(&c.api(0), &smtp, &accepted, &before).await;
    eprintln!(
        "NATS node loss: {} accepted, {repeats} repeats",
        accepted.len()
    );
    // The gateway still serves sessions and in-app delivery.
    let mut alice = c.connect(0, "alice").await;
    let id = c
        .api(0)
        .send(json!({"to": ["alice"], "title": "still here"}))
        .await;
    assert_eq!(alice.expect("message").await["id"], id.as_str());
}
