//! The gateway's metrics, registered at start (zeros rather than gaps on dashboards).
//! Disconnects are labelled by close code only.

use std::sync::Arc;
use std::time::Duration;

use herald_engine::Bus;
use metrics::{describe_counter, describe_gauge};
use tokio_util::sync::CancellationToken;

pub fn describe() {
    describe_gauge!(
        "herald_gateway_sessions",
        "Live WebSocket sessions on this gateway"
    );
    describe_counter!("herald_gateway_connects_total", "Sessions opened");
    describe_counter!(
        "herald_gateway_disconnects_total",
        "Sessions closed, by close code"
    );
    describe_counter!(
        "herald_gateway_connects_refused_total",
        "Upgrades refused, by reason"
    );
    describe_counter!(
        "herald_gateway_auth_failures_total",
        "Upgrades refused for a bad token"
    );
    describe_counter!(
        "herald_gateway_slow_consumers_total",
        "Sessions closed or dropped frames for not keeping up"
    );
    describe_counter!(
        "herald_gateway_flood_closes_total",
        "Sessions closed for sending too many frames"
    );
    describe_counter!(
        "herald_gateway_frames_sent_total",
        "Frames written to clients"
    );
    describe_counter!(
        "herald_gateway_topic_deliveries_total",
        "Topic frames queued to sessions"
    );
    describe_counter!(
        "herald_gateway_bad_frames_total",
        "Malformed client frames answered with an error frame"
    );
    describe_counter!(
        "herald_gateway_oversized_frames_total",
        "Client frames over the size limit (closed 1009)"
    );
    describe_gauge!(
        "herald_engine_ready",
        "1 when the engine (SQLite or NATS) is usable"
    );
    metrics::gauge!("herald_gateway_sessions").set(0.0);
    for name in [
        "herald_gateway_connects_total",
        "herald_gateway_auth_failures_total",
        "herald_gateway_slow_consumers_total",
        "herald_gateway_flood_closes_total",
        "herald_gateway_frames_sent_total",
        "herald_gateway_topic_deliveries_total",
        "herald_gateway_bad_frames_total",
        "herald_gateway_oversized_frames_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for code in [
        "1000", "1001", "1006", "1009", "1012", "4001", "4003", "4008", "4009",
    ] {
        metrics::counter!("herald_gateway_disconnects_total", "code" => code).absolute(0);
    }
}

/// Samples the bus's health every few seconds until `shutdown`.
pub async fn sample(bus: Arc<dyn Bus>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        metrics::gauge!("herald_engine_ready").set(if bus.is_ready() { 1.0 } else { 0.0 });
    }
}
