//! Monitoring as operators use it: the Prometheus rules and scrape config pass promtool, the
//! Grafana dashboard is well-formed, every metric they name is one Herald exports, and JSON
//! logs carry the message id on every line about a message.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::Herald;

fn promtool() -> String {
    let out = Command::new(support::root().join("deploy/fetch-promtool.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("herald_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_string());
        i = end;
    }
    names
}

#[tokio::test]
async fn rules_config_and_dashboard_check_out_against_real_metrics() {
    let promtool = promtool();
    let dir = support::root().join("deploy/monitoring");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/dashboards/herald.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "herald-overview");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut exprs = String::new();
    for p in panels {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty());
        for t in targets {
            exprs.push_str(t["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    exprs.push_str(&std::fs::read_to_string(dir.join("alerts.yml")).unwrap());

    // A herald that has done a bit of everything, so histograms have series too.
    let h = Herald::start();
    let api = h.api();
    let _c = h.connect("watcher").await;
    let id = api
        .send(json!({"to": [{"user_id": "m", "email": "m@example.com"}], "title": "x"}))
        .await;
    api.wait_final(&id, Duration::from_secs(20)).await;
    let exported = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported_names = metric_names(&exported);
    for name in metric_names(&exprs) {
        assert!(
            exported_names.contains(&name),
            "{name} is used by a rule or panel but not exported:\n{exported}"
        );
    }
    for needle in [
        "# HELP herald_attempts_total",
        "herald_queue_depth{lane=\"high\"}",
        "herald_engine_ready 1",
        "herald_gateway_disconnects_total{code=\"4008\"} 0",
    ] {
        assert!(exported.contains(needle), "{needle} missing:\n{exported}");
    }
}

#[tokio::test]
async fn json_logs_name_the_message_on_every_line_about_it() {
    let h = Herald::builder()
        .env("HERALD_LOG_FORMAT", "json")
        .env("HERALD_LOG", "info,herald_dispatcher=debug")
        .start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "j", "email": "j@example.com"}], "title": "logged"}))
        .await;
    api.wait_final(&id, Duration::from_secs(20)).await;
    support::eventually(
        Duration::from_secs(10),
        "lines about the message",
        || async { (h.log_text().matches(id.as_str()).count() >= 2).then_some(()) },
    )
    .await;
    let mut about = 0;
    for line in h.log_text().lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if !line.contains(&id) {
            continue;
        }
        about += 1;
        let tagged = v["message_id"] == id.as_str()
            || v["span"]["message_id"] == id.as_str()
            || v["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["message_id"] == id.as_str()));
        assert!(tagged, "a line about {id} lacks message_id: {line}");
    }
    assert!(about >= 2, "{about} lines about the message");
}
