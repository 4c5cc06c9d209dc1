//! Crash safety: `kill -9` in the middle of a batch, restart on the same data directory;
//! every accepted message reaches a final status and every mail arrives.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Api, Herald, Smtp, attempts};

#[tokio::test]
async fn kill_9_mid_batch_loses_nothing_that_was_accepted() {
    let smtp = Smtp::start();
    let mut h = Herald::builder().env("HERALD_SMTP_URL", smtp.url()).start();
    let api = h.api();
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();

    // Eight senders push a batch of 400 as fast as they can...
    let mut senders = Vec::new();
    for s in 0..8 {
        let api = api.clone();
        let accepted = Arc::clone(&accepted);
        senders.push(tokio::spawn(async move {
            for i in 0..50 {
                let body = json!({"to": [{"user_id": format!("u{s}-{i}"), "email": format!("u{s}-{i}@example.com")}],
                                  "title": format!("batch {s}-{i}")});
                let Ok(r) = api.http.post(api.url("/v1/messages")).bearer_auth(support::API_KEY).json(&body).send().await else {
                    return; // the server is gone
                };
                if r.status().as_u16() == 202 {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(id) = v["id"].as_str() {
                        accepted.lock().unwrap().push(id.to_string());
                    }
                }
            }
        }));
    }
    // ...and the process dies once 120 were accepted, mid-delivery.
    support::eventually(Duration::from_secs(60), "120 accepted", || async {
        (accepted.lock().unwrap().len() >= 120).then_some(())
    })
    .await;
    h.kill9();
    for s in senders {
        let _ = s.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    // Transactions the dead process had under way finish on the SMTP side: wait until the
    // mailbox stops changing before taking the "before restart" snapshot.
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
    let before: Vec<String> = smtp
        .mails()
        .iter()
        .filter_map(|m| m.header("Message-ID").map(str::to_string))
        .collect();
    let mails_before = before.len();
    assert!(accepted.len() >= 120);
    assert!(
        mails_before < accepted.len(),
        "the crash must come mid-delivery ({mails_before} mails already)"
    );

    h.restart();
    let api = Api::new(&h.base(), support::API_KEY);
    for id in &accepted {
        let m = api.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(m["status"], "delivered", "{m}");
        assert_eq!(m["recipients"][0]["channel"], "email");
        let a = attempts(&m, 0);
        assert_eq!(a.first().map(|x| x.1.as_str()), Some("offline"), "{a:?}");
        assert_eq!(
            a.iter().filter(|x| x.1 == "sent").count(),
            1,
            "one recorded send: {a:?}"
        );
    }

    // Every accepted message's mail arrived; a copy is repeated only if it was in flight.
    let mails = smtp
        .wait_mails(accepted.len(), Duration::from_secs(60))
        .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        *copies
            .entry(m.header("Message-ID").unwrap_or("").to_string())
            .or_default() += 1;
    }
    for id in &accepted {
        let mid = format!("<{id}.0@herald>");
        assert!(copies.contains_key(&mid), "mail for {id} never arrived");
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(copies.values().all(|n| *n <= 2), "{copies:?}");
    // A copy is sent again only when the first one went out but its outcome was not yet
    // recorded when the process died: so its first copy must predate the kill.
    for (mid, n) in &copies {
        if *n > 1 {
            assert!(
                before.contains(mid),
                "{mid} was sent twice but not in flight at the crash"
            );
        }
    }
    eprintln!(
        "crash test: {} accepted, {} mailed before the kill, {} mails in all, {} duplicates",
        accepted.len(),
        mails_before,
        mails.len(),
        duplicates
    );
}
