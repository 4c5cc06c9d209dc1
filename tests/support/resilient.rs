//! A client that stays connected through anything: on any close it reconnects to one of the
//! live gateways, resumes its personal messages and recovers its topic from the last seq it
//! saw, as the SDK does. It records what it saw so tests can check for loss and duplicates.
//!
//! Personal messages resume from the end of the run of seqs it has without a gap, not from
//! the highest: on the cluster engine two dispatchers may deliver a user's messages out of
//! seq order, so a session can have seq 8 and not 7 (7's in-app attempt met the gateway
//! going down); resuming from 8 would never bring 7. A completed resume answers the head
//! seq, and everything up to it has then been replayed (or has expired).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Client, Frame};

/// Where clients may connect (updated as gateways come and go).
pub type Urls = Arc<Mutex<Vec<String>>>;

#[derive(Default, Debug)]
pub struct Seen {
    pub ids: HashSet<String>,
    pub seqs: BTreeSet<u64>,
    pub topic_seqs: BTreeSet<u64>,
    /// The same id twice within one session (must never happen).
    pub duplicates_in_a_session: usize,
    pub closes: Vec<(u16, Instant)>,
    pub sessions: usize,
    /// Every personal seq up to this one is known (seen, or covered by a completed resume).
    pub floor: u64,
}

impl Seen {
    /// Where a resume starts: the floor, then every seq after it that was seen.
    pub fn resume_from(&self) -> u64 {
        let mut at = self.floor;
        while self.seqs.contains(&(at + 1)) {
            at += 1;
        }
        at
    }
}

pub async fn run(
    start: usize,
    token: String,
    urls: Urls,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    topic: Option<String>,
) {
    let mut turn = start;
    while !stop.load(Ordering::Relaxed) {
        let url = {
            let u = urls.lock().unwrap();
            turn += 1;
            u[turn % u.len()].clone()
        };
        let mut c = match Client::connect(&url, &token).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50 + rand::random_range(0..250))).await;
                continue;
            }
        };
        let (since, topic_since) = {
            let mut s = seen.lock().unwrap();
            s.sessions += 1;
            (s.resume_from(), s.topic_seqs.last().copied().unwrap_or(0))
        };
        c.send(json!({"type": "resume", "since": since})).await;
        if let Some(t) = &topic {
            c.send(json!({"type": "subscribe", "topic": t, "since": topic_since}))
                .await;
        }
        let mut session_ids = HashSet::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match c.next(Duration::from_millis(200)).await {
                None => continue,
                Some(Frame::Json(v)) if v["type"] == "message" => {
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    let seq = v["seq"].as_u64().unwrap_or(0);
                    let personal = v.get("topic").is_none();
                    {
                        let mut s = seen.lock().unwrap();
                        if !session_ids.insert(id.clone()) {
                            s.duplicates_in_a_session += 1;
                        }
                        if personal {
                            s.seqs.insert(seq);
                            s.ids.insert(id.clone());
                        } else {
                            s.topic_seqs.insert(seq);
                        }
                    }
                    if personal {
                        c.ack(&id).await;
                    }
                }
                Some(Frame::Json(v)) if v["type"] == "resumed" && v["complete"] == true => {
                    let head = v["seq"].as_u64().unwrap_or(0);
                    let mut s = seen.lock().unwrap();
                    s.floor = s.floor.max(head);
                }
                Some(Frame::Json(v))
                    if v["type"] == "error"
                        && matches!(
                            v["code"].as_str(),
                            Some("unavailable" | "history_unavailable")
                        ) =>
                {
                    // The gateway could not read history (its store is failing over) and
                    // has retried for a while: a new session resumes, as the SDK does.
                    seen.lock().unwrap().closes.push((1000, Instant::now()));
                    break;
                }
                Some(Frame::Json(_)) => {}
                Some(Frame::Close(code)) => {
                    seen.lock().unwrap().closes.push((code, Instant::now()));
                    break;
                }
                Some(Frame::Ended) => {
                    seen.lock().unwrap().closes.push((1006, Instant::now()));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..200))).await;
    }
}
