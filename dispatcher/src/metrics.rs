//! The dispatcher's metrics, registered at start so dashboards show zeros, not gaps, and
//! sampled gauges (queue depth, engine health). Labels stay low-cardinality: priority,
//! channel, outcome, status, lane, kind — never a user or message id.

use std::sync::Arc;
use std::time::Duration;

use herald_common::api::{ChannelKind, Outcome, Priority, RecipientStatus};
use herald_engine::{JobQueue, Store};
use metrics::{describe_counter, describe_gauge, describe_histogram};
use tokio_util::sync::CancellationToken;

pub fn describe() {
    describe_counter!(
        "herald_messages_accepted_total",
        "Messages accepted, by priority"
    );
    describe_counter!(
        "herald_api_messages_total",
        "Messages accepted over HTTP, by the sending API key's name (\"other\" past 32 keys)"
    );
    describe_counter!(
        "herald_attempts_total",
        "Delivery attempts, by channel and outcome"
    );
    describe_counter!(
        "herald_fallbacks_total",
        "Moves to the next channel, by the channel left"
    );
    describe_counter!(
        "herald_retries_total",
        "Transient errors retried, by channel"
    );
    describe_counter!(
        "herald_recipients_final_total",
        "Recipients reaching a final status, by status"
    );
    describe_counter!("herald_dead_letters_total", "Recipients that ended failed");
    describe_counter!("herald_alerts_total", "Alerts raised, by kind");
    describe_counter!("herald_topic_messages_total", "Topic messages published");
    describe_counter!(
        "herald_api_rate_limited_total",
        "API calls refused with 429"
    );
    describe_histogram!(
        "herald_delivery_seconds",
        "From accept to a recipient's final status"
    );
    describe_gauge!(
        "herald_queue_depth",
        "Deliveries waiting or running, by lane"
    );
    describe_gauge!(
        "herald_engine_ready",
        "1 when the engine (SQLite or NATS) is usable"
    );
    for p in Priority::ALL {
        metrics::counter!("herald_messages_accepted_total", "priority" => p.as_str()).absolute(0);
    }
    for c in ChannelKind::ALL {
        for o in Outcome::ALL {
            metrics::counter!("herald_attempts_total", "channel" => c.as_str(), "outcome" => o.as_str()).absolute(0);
        }
        metrics::counter!("herald_fallbacks_total", "from" => c.as_str()).absolute(0);
        metrics::counter!("herald_retries_total", "channel" => c.as_str()).absolute(0);
    }
    for s in RecipientStatus::ALL.iter().filter(|s| s.is_final()) {
        metrics::counter!("herald_recipients_final_total", "status" => s.as_str()).absolute(0);
    }
    for kind in ["message_failed", "channel_error_rate"] {
        metrics::counter!("herald_alerts_total", "kind" => kind).absolute(0);
    }
    metrics::counter!("herald_dead_letters_total").absolute(0);
    metrics::counter!("herald_topic_messages_total").absolute(0);
}

/// Samples the queue depth and engine health every few seconds until `shutdown`.
pub async fn sample(queue: Arc<dyn JobQueue>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let depths = queue.depths().await;
        for p in Priority::ALL {
            metrics::gauge!("herald_queue_depth", "lane" => p.as_str())
                .set(depths[p.lane()] as f64);
        }
        let ready = store.is_ready().await;
        metrics::gauge!("herald_engine_ready").set(if ready { 1.0 } else { 0.0 });
    }
}
