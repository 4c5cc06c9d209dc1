//! `herald-bench logic`: what the notification logic of SPEC §8–10 costs.
//!
//! - *Ingest with templates*: accepted messages/s over HTTP with a stored five-part template
//!   and its variables, against the same sends with plain `title`/`body`, alternated in one
//!   run on the same server (runs interleaved, medians compared), on each engine. Users are
//!   offline and the channel is `in_app`, so each accepted message is also delivered (and,
//!   templated, rendered) while the ingest runs.
//! - *Deferred recipients*: recipients whose quiet hours hold their email back are jobs with
//!   a later due time, not sleeping tasks. Sends that many, waits until every one has its
//!   `deferred` attempt, then measures the resident memory added and the idle CPU while they
//!   wait (Herald, and nats-server on the cluster engine).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::Child;

use crate::controller::{API_KEY, BodyOf, ingest_with, progress, scratch, start_herald_in};
use crate::procstat::{cpu_share, rss_bytes};

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Deferred recipients to hold.
    #[arg(long, default_value_t = 100_000)]
    pub deferred: usize,
    /// Recipients per message when sending them.
    #[arg(long, default_value_t = 1000)]
    pub per_message: usize,
    /// Seconds per ingest run (each variant runs `--rounds` times, interleaved).
    #[arg(long, default_value_t = 6)]
    pub secs: u64,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// HTTP requests in flight during ingest.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// `embedded`, `cluster` or `both`.
    #[arg(long, default_value = "both")]
    pub engines: String,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 20)]
    pub idle_secs: u64,
    /// The herald binary (default: target/release/herald).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct IngestPair {
    pub engine: String,
    pub plain_per_s: Vec<f64>,
    pub templated_per_s: Vec<f64>,
    pub plain_median: f64,
    pub templated_median: f64,
    /// templated / plain.
    pub ratio: f64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct DeferredRun {
    pub engine: String,
    pub recipients: usize,
    pub deferred: usize,
    pub send_secs: f64,
    pub herald_rss_before_mb: f64,
    pub herald_rss_after_mb: f64,
    pub nats_rss_before_mb: Option<f64>,
    pub nats_rss_after_mb: Option<f64>,
    /// Share of one core while holding them.
    pub herald_idle_cpu: f64,
    pub nats_idle_cpu: Option<f64>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct LogicResults {
    pub machine: String,
    pub date: String,
    pub ingest: Vec<IngestPair>,
    pub deferred: Vec<DeferredRun>,
}

/// The template of the criterion bench (dispatcher/benches/templates.rs), and its
/// variables: five parts, a loop, currency, a date and a plural.
const FIXTURE: &str = include_str!("../../tests/fixtures/template-order-shipped.json");

fn fixture(part: &str) -> Value {
    serde_json::from_str::<Value>(FIXTURE).map_or(Value::Null, |all| all[part].clone())
}

/// A plain in-app send to an offline user: the same text the fixture template renders for
/// `in_app` (title and body), inline.
pub(crate) fn plain_body() -> BodyOf {
    Arc::new(|user| {
        format!(
            r#"{{"to":["offline{user}"],"title":"Order A-1042 shipped","body":"Hi Ada, your 3 items ship December 24, 2026.","channels":["in_app"]}}"#
        )
    })
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) struct Server {
    pub herald: Child,
    pub nats: Option<Child>,
    pub base: String,
}

/// Herald on `engine` (with its own nats-server on `cluster`), ready.
pub(crate) async fn start(
    engine: &str,
    name: &str,
    herald_bin: &Option<PathBuf>,
    extra: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let dir = scratch(&format!("logic-{name}-{engine}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut env: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut nats = None;
    if engine == "cluster" {
        let (child, url) = crate::controller::start_nats_js(&dir.join("nats")).await?;
        env.push(("HERALD_NATS_URL", url));
        nats = Some(child);
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (herald, addr) = start_herald_in(&dir, herald_bin, &pairs).await?;
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "herald ({engine}) never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Server { herald, nats, base })
}

async fn ingest(opts: &Options, engine: &str) -> anyhow::Result<IngestPair> {
    let server = start(engine, "ingest", &opts.herald_bin, &[]).await?;
    let http = reqwest::Client::new();
    http.put(format!("{}/v1/templates/order_shipped", server.base))
        .bearer_auth(API_KEY)
        .json(&fixture("template"))
        .send()
        .await?
        .error_for_status()?;
    let plain = plain_body();
    let vars = fixture("vars").to_string();
    let templated: BodyOf = Arc::new(move |user| {
        format!(
            r#"{{"to":["offline{user}"],"template":"order_shipped","vars":{vars},"channels":["in_app"]}}"#
        )
    });
    let window = Duration::from_secs(opts.secs);
    let mut pair = IngestPair {
        engine: engine.to_string(),
        ..Default::default()
    };
    for round in 0..opts.rounds {
        let order = crate::controller::interleaved(round);
        for with_template in order {
            let body = if with_template { &templated } else { &plain };
            let r = ingest_with(
                &server.base,
                opts.concurrency,
                100_000,
                window,
                Arc::clone(body),
                engine,
            )
            .await?;
            progress(&format!(
                "logic/{engine}: ingest {} {:.0}/s",
                if with_template { "templated" } else { "plain" },
                r.per_s
            ));
            if with_template {
                pair.templated_per_s.push(r.per_s);
            } else {
                pair.plain_per_s.push(r.per_s);
            }
        }
    }
    pair.plain_median = median(&pair.plain_per_s);
    pair.templated_median = median(&pair.templated_per_s);
    pair.ratio = pair.templated_median / pair.plain_median.max(1.0);
    drop(server);
    Ok(pair)
}

/// A quiet-hours window (UTC) that started an hour ago and ends in three.
fn quiet_window() -> String {
    let minute = (herald_common::time::now_ms() / 60_000).rem_euclid(1440);
    let at = |h: i64| {
        let m = (minute + h * 60).rem_euclid(1440);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("{}-{}", at(-1), at(3))
}

async fn deferred(opts: &Options, engine: &str) -> anyhow::Result<DeferredRun> {
    let window = quiet_window();
    let server = start(
        engine,
        "deferred",
        &opts.herald_bin,
        &[("HERALD_QUIET_HOURS", &window)],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let herald_pid = server.herald.id().unwrap_or(0);
    let nats_pid = server.nats.as_ref().and_then(|n| n.id());
    let mut run = DeferredRun {
        engine: engine.to_string(),
        recipients: opts.deferred,
        herald_rss_before_mb: mb(rss_bytes(herald_pid)),
        nats_rss_before_mb: nats_pid.map(|p| mb(rss_bytes(p))),
        ..Default::default()
    };
    progress(&format!(
        "logic/{engine}: {} recipients in quiet hours {window} UTC",
        opts.deferred
    ));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()?;
    let started = Instant::now();
    let chunks: Vec<Vec<usize>> = (0..opts.deferred)
        .collect::<Vec<_>>()
        .chunks(opts.per_message.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    use futures::StreamExt;
    let sends = futures::stream::iter(chunks.into_iter().map(|chunk| {
        let (http, base) = (http.clone(), server.base.clone());
        async move {
            let to: Vec<String> = chunk.iter().map(|i| format!("q{i}")).collect();
            let body = json!({"to": to, "title": "Your weekly summary", "body": "Three things happened", "channels": ["email"], "category": "digest"});
            let r: Value = http
                .post(format!("{base}/v1/messages"))
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(r["id"].as_str().unwrap_or_default().to_string())
        }
    }));
    let ids: Vec<String> = sends
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    // Every recipient has its deferred attempt. A message once complete is not read again
    // (on the cluster engine a view is a KV read per recipient).
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut next = 0;
    while next < ids.len() && Instant::now() < deadline {
        let view: Value = http
            .get(format!("{}/v1/messages/{}", server.base, ids[next]))
            .bearer_auth(API_KEY)
            .send()
            .await?
            .json()
            .await?;
        let (all, done) = view["recipients"].as_array().map_or((0, 0), |rs| {
            let done = rs
                .iter()
                .filter(|r| {
                    r["status"] == "pending"
                        && r["attempts"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x["outcome"] == "deferred"))
                })
                .count();
            (rs.len(), done)
        });
        if all > 0 && done == all {
            run.deferred += done;
            next += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    run.send_secs = started.elapsed().as_secs_f64();
    progress(&format!(
        "logic/{engine}: {} deferred after {:.1} s; idling",
        run.deferred, run.send_secs
    ));
    // Let the last writes and the allocator settle before the idle window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = Duration::from_secs(opts.idle_secs);
    let (h, n) = tokio::join!(cpu_share(herald_pid, idle), async {
        match nats_pid {
            Some(p) => Some(cpu_share(p, idle).await),
            None => None,
        }
    });
    run.herald_idle_cpu = h;
    run.nats_idle_cpu = n;
    run.herald_rss_after_mb = mb(rss_bytes(herald_pid));
    run.nats_rss_after_mb = nats_pid.map(|p| mb(rss_bytes(p)));
    drop(server);
    Ok(run)
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let engines = crate::controller::engines_of(&opts.engines);
    let mut results = LogicResults {
        machine: crate::controller::machine(),
        date: herald_common::time::rfc3339(herald_common::time::now_ms()),
        ..Default::default()
    };
    for engine in &engines {
        let pair = ingest(&opts, engine).await?;
        progress(&format!("logic/{engine}: {pair:?}"));
        results.ingest.push(pair);
    }
    for engine in &engines {
        let run = deferred(&opts, engine).await?;
        progress(&format!("logic/{engine}: {run:?}"));
        results.deferred.push(run);
    }
    let md = report(&results, &opts);
    crate::controller::write_results(&opts.out, "logic", &results, &md)
}

fn report(r: &LogicResults, opts: &Options) -> String {
    let mut md = format!(
        "## Notification logic ({})\n\n{}\n\n### Ingest with templates\n\n{} HTTP requests in flight, {} s runs, {} of each variant interleaved; users offline, channel `in_app` (so every message is also delivered during the run); plain sends carry inline the title and body the template renders. A delivery renders only the parts its channels read (here title and body), once per message, locale and zone.\n\n| engine | plain accepted/s (median) | templated accepted/s (median) | templated / plain | runs (plain; templated) |\n| --- | ---: | ---: | ---: | --- |\n",
        r.date, r.machine, opts.concurrency, opts.secs, opts.rounds
    );
    for p in &r.ingest {
        md += &format!(
            "| {} | {:.0} | {:.0} | {:.2} | {}; {} |\n",
            p.engine,
            p.plain_median,
            p.templated_median,
            p.ratio,
            crate::controller::runs_text(&p.plain_per_s),
            crate::controller::runs_text(&p.templated_per_s)
        );
    }
    md += "\n### Deferred recipients (quiet hours)\n\n| engine | recipients deferred | time to defer them | Herald RSS before → after | nats-server RSS before → after | idle CPU while holding them (share of a core) |\n| --- | ---: | ---: | --- | --- | --- |\n";
    for d in &r.deferred {
        let nats = match (d.nats_rss_before_mb, d.nats_rss_after_mb) {
            (Some(b), Some(a)) => format!("{b:.0} → {a:.0} MB"),
            _ => "—".into(),
        };
        let cpu = match d.nats_idle_cpu {
            Some(n) => format!("Herald {:.3}, nats-server {n:.3}", d.herald_idle_cpu),
            None => format!("Herald {:.3}", d.herald_idle_cpu),
        };
        md += &format!(
            "| {} | {} of {} | {:.1} s | {:.0} → {:.0} MB | {} | {} |\n",
            d.engine,
            d.deferred,
            d.recipients,
            d.send_secs,
            d.herald_rss_before_mb,
            d.herald_rss_after_mb,
            nats,
            cpu
        );
    }
    md
}
