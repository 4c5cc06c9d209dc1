//! Writes the results: `results.json` (everything), `results.md` (the tables that go into
//! BENCHMARKS.md) and `chart.svg` (deliveries per server CPU-second and idle memory per
//! session, side by side).

use std::fmt::Write as _;
use std::path::Path;

use crate::controller::Results;

pub fn write(dir: &Path, r: &Results) -> anyhow::Result<()> {
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(dir.join("results.md"), markdown(r))?;
    std::fs::write(dir.join("chart.svg"), chart(r))?;
    Ok(())
}

fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Measured {} on {}. {}.\n", r.date, r.machine, r.options);
    if !r.fanout.is_empty() {
        let raw = r
            .fanout
            .iter()
            .find(|f| f.system.starts_with("raw"))
            .map(|f| f.saturation.per_cpu_s);
        let raw_p99 = r
            .fanout
            .iter()
            .find(|f| f.system.starts_with("raw"))
            .map(|f| f.latency.p99_ms);
        let _ = writeln!(
            md,
            "| server | idle RSS per session | connects/s | fan-out at saturation | per server CPU-second | vs raw loop | p50 / p99 / p99.9 at {:.0}k deliveries/s | p99 vs raw |",
            r.fanout[0].latency.offered_per_s / 1000.0
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for f in &r.fanout {
            let vs = raw.map_or("–".into(), |raw| {
                format!("{:.0} %", 100.0 * f.saturation.per_cpu_s / raw)
            });
            let p99 = raw_p99.map_or("–".into(), |raw| {
                format!("{:.2}×", f.latency.p99_ms / raw.max(0.001))
            });
            let _ = writeln!(
                md,
                "| {} | {:.1} KB | {:.0} | {:.0} /s | {:.0} | {} | {:.1} / {:.1} / {:.1} ms | {} |",
                f.system,
                f.idle_rss_per_session_bytes / 1000.0,
                f.connect_per_s,
                f.saturation.per_s,
                f.saturation.per_cpu_s,
                vs,
                f.latency.p50_ms,
                f.latency.p99_ms,
                f.latency.p999_ms,
                p99
            );
        }
        let _ = writeln!(md, "\nSaturation runs (deliveries per server CPU-second): ");
        for f in &r.fanout {
            let runs: Vec<String> = f
                .saturation_runs
                .iter()
                .map(|s| format!("{:.0}", s.per_cpu_s))
                .collect();
            let _ = writeln!(
                md,
                "- {}: {} (idle CPU {:.1} % of a core with {} sessions)",
                f.system,
                runs.join(", "),
                f.idle_cpu_share * 100.0,
                f.connected
            );
        }
        let _ = writeln!(md, "\nLatency runs (p99 at the fixed rate): ");
        for f in &r.fanout {
            let runs: Vec<String> = f
                .latency_runs
                .iter()
                .map(|l| format!("{:.1} ms", l.p99_ms))
                .collect();
            let _ = writeln!(md, "- {}: {}", f.system, runs.join(", "));
        }
    }
    if let Some(t) = &r.targeted {
        let _ = writeln!(
            md,
            "\n| targeted delivery (embedded) | value |\n| --- | --- |"
        );
        let _ = writeln!(
            md,
            "| online users | {} |\n| offered | {:.0} messages/s |\n| accepted | {} |",
            t.users, t.offered_per_s, t.accepted
        );
        let _ = writeln!(
            md,
            "| POST to client p50 / p99 / p99.9 | {:.1} / {:.1} / {:.1} ms |",
            t.to_client.p50_ms, t.to_client.p99_ms, t.to_client.p999_ms
        );
        let _ = writeln!(
            md,
            "| accept to `delivered` (ack recorded) p50 / p99 | {:.1} / {:.1} ms |",
            t.to_delivered_p50_ms, t.to_delivered_p99_ms
        );
        let _ = writeln!(
            md,
            "| to offline users (in-app → email, real SMTP server) | {} accepted, {} mails filed |",
            t.offline_accepted, t.mails_received
        );
        let _ = writeln!(
            md,
            "| accept to `sent` via email p50 / p99 | {:.1} / {:.1} ms |",
            t.to_email_p50_ms, t.to_email_p99_ms
        );
    }
    if !r.ingest.is_empty() {
        let _ = writeln!(md, "\n| ingest | path | accepted/s |\n| --- | --- | --- |");
        for i in &r.ingest {
            let _ = writeln!(md, "| {} | {} | {:.0} |", i.engine, i.path, i.per_s);
        }
    }
    if let Some(s) = &r.scale_out {
        let mb = |b: u64| b as f64 / 1_048_576.0;
        let _ = writeln!(
            md,
            "\n| scale-out (local cluster) | value |\n| --- | --- |\n| gateways | {} |\n| sessions connected | {} of {} |\n| connects/s (all gateways) | {:.0} |",
            s.gateways, s.connected, s.sessions, s.connect_per_s
        );
        let _ = writeln!(
            md,
            "| gateways' RSS, total | {:.0} MiB ({:.1} KB per session) |\n| gateways' idle CPU | {:.1} % of a core |\n| nats-server / dispatcher RSS | {:.0} / {:.0} MiB |",
            mb(s.gateways_rss_bytes),
            s.rss_per_session_bytes / 1000.0,
            s.idle_cpu_share * 100.0,
            mb(s.nats_rss_bytes),
            mb(s.dispatcher_rss_bytes)
        );
        let _ = writeln!(
            md,
            "| one broadcast/s to every session: deliveries | {} |\n| publish to receive p50 / p99 / p99.9 | {:.0} / {:.0} / {:.0} ms |\n| gateways' CPU per 100k deliveries | {:.2} s |",
            s.broadcast.deliveries,
            s.broadcast.p50_ms,
            s.broadcast.p99_ms,
            s.broadcast.p999_ms,
            s.broadcast_gateway_cpu_s * 100_000.0 / s.broadcast.deliveries.max(1) as f64
        );
    }
    md
}

fn chart(r: &Results) -> String {
    // Two panels of one bar per system, stacked; the height follows the number of systems.
    let panel = 44.0 + r.fanout.len() as f64 * 32.0;
    let (w, h) = (900.0, 20.0 + 2.0 * panel + 20.0);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"##
    );
    let panels = [
        (
            "Broadcast deliveries per server CPU-second (higher is better)",
            r.fanout
                .iter()
                .map(|f| (f.system.clone(), f.saturation.per_cpu_s))
                .collect::<Vec<_>>(),
            20.0,
        ),
        (
            "Idle RSS per session, KB (lower is better)",
            r.fanout
                .iter()
                .map(|f| (f.system.clone(), f.idle_rss_per_session_bytes / 1000.0))
                .collect(),
            20.0 + panel + 20.0,
        ),
    ];
    for (title, bars, top) in panels {
        let _ = write!(
            svg,
            r#"<text x="20" y="{}" font-weight="bold">{title}</text>"#,
            top + 14.0
        );
        let max = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max);
        let bh = 28.0;
        for (i, (name, v)) in bars.iter().enumerate() {
            let y = top + 28.0 + i as f64 * (bh + 4.0);
            let len = (w - 380.0) * v / max;
            let color = if name == "Herald" {
                "#3b6fe0"
            } else {
                "#9aa4b8"
            };
            let _ = write!(
                svg,
                r#"<text x="20" y="{}">{name}</text><rect x="230" y="{}" width="{len:.1}" height="{bh}" fill="{color}"/><text x="{}" y="{}">{v:.1}</text>"#,
                y + 18.0,
                y,
                236.0 + len,
                y + 18.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}
