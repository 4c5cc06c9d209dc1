//! `herald-bench webhooks`: what status webhooks (SPEC §11) deliver, and what they cost
//! the send path, on each engine.
//!
//! - *Callbacks/s*: a receiver in this process first holds every POST (so Herald's queue for
//!   the webhook fills with `--events` status events: offline recipients of `in_app`-only
//!   messages, each one `failed` event), then answers them all `200` at once; the rate is the
//!   events over the time from the release to the last one received. The receiver checks the
//!   Standard Webhooks signature of every 50th POST and counts the TCP connections Herald
//!   opened (connection reuse).
//! - *Ingest with webhooks*: accepted messages/s over HTTP with a `*` webhook registered
//!   (answered at once) against none, runs interleaved on the same server, medians compared.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::controller::{API_KEY, ingest_with, progress};
use crate::logic::{median, start};

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Status events queued before the receiver lets them through.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Recipients per message when making them.
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
    /// The herald binary (default: target/release/herald).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct HookRun {
    pub engine: String,
    pub events: usize,
    /// Time to accept the messages and queue every event for the webhook.
    pub queue_secs: f64,
    /// From the release to the last event received.
    pub drain_secs: f64,
    pub callbacks_per_s: f64,
    /// TCP connections Herald opened to the receiver over the whole run.
    pub connections: u64,
    pub signatures_checked: u64,
    pub signatures_bad: u64,
    pub ingest_without_per_s: Vec<f64>,
    pub ingest_with_per_s: Vec<f64>,
    pub ingest_without_median: f64,
    pub ingest_with_median: f64,
    /// with / without.
    pub ingest_ratio: f64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct HookResults {
    pub machine: String,
    pub date: String,
    pub runs: Vec<HookRun>,
}

#[derive(Default)]
struct Receiver {
    hold: AtomicBool,
    released: Notify,
    received: AtomicU64,
    connections: AtomicU64,
    checked: AtomicU64,
    bad: AtomicU64,
    key: std::sync::Mutex<Option<Vec<u8>>>,
}

async fn handle(
    r: Arc<Receiver>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = req.into_body().collect().await?.to_bytes();
    while r.hold.load(Ordering::Acquire) {
        let released = r.released.notified();
        if !r.hold.load(Ordering::Acquire) {
            break;
        }
        released.await;
    }
    let n = r.received.fetch_add(1, Ordering::Relaxed);
    if n.is_multiple_of(50) {
        let key = r.key.lock().ok().and_then(|k| k.clone());
        if let (Some(key), Ok(ts)) = (key, ts.parse::<i64>()) {
            r.checked.fetch_add(1, Ordering::Relaxed);
            if herald_common::webhooks::sign(&key, &id, ts, &body) != sig {
                r.bad.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

async fn serve(r: Arc<Receiver>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            r.connections.fetch_add(1, Ordering::Relaxed);
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(Arc::clone(&r), req));
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    Ok(format!("http://{addr}/hook"))
}

async fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut rb = http.request(method, url).bearer_auth(API_KEY);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?.error_for_status()?;
    Ok(r.json().await.unwrap_or(Value::Null))
}

async fn create_hook(
    http: &reqwest::Client,
    base: &str,
    url: &str,
    receiver: &Receiver,
) -> anyhow::Result<String> {
    let hook = api(
        http,
        reqwest::Method::POST,
        format!("{base}/v1/webhooks"),
        Some(json!({"url": url, "events": ["*"]})),
    )
    .await?;
    let secret = hook["secret"].as_str().unwrap_or_default();
    let key = herald_common::webhooks::decode_secret(secret).map_err(anyhow::Error::msg)?;
    if let Ok(mut k) = receiver.key.lock() {
        *k = Some(key);
    }
    Ok(hook["id"].as_str().unwrap_or_default().to_string())
}

async fn run_engine(opts: &Options, engine: &str) -> anyhow::Result<HookRun> {
    let receiver = Arc::new(Receiver::default());
    let url = serve(Arc::clone(&receiver)).await?;
    let server = start(engine, "webhooks", &opts.herald_bin, &[]).await?;
    let http = reqwest::Client::new();
    let mut run = HookRun {
        engine: engine.to_string(),
        events: opts.events,
        ..Default::default()
    };

    // Callbacks/s: fill the webhook's queue while the receiver holds, then release.
    receiver.hold.store(true, Ordering::Release);
    let id = create_hook(&http, &server.base, &url, &receiver).await?;
    let started = Instant::now();
    let per = opts.per_message.max(1);
    let mut made = 0;
    let mut batch = 0;
    while made < opts.events {
        let n = per.min(opts.events - made);
        let to: Vec<String> = (0..n).map(|i| format!("hook{batch}-{i}")).collect();
        api(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/messages", server.base),
            Some(json!({"to": to, "title": "x", "channels": ["in_app"]})),
        )
        .await?;
        made += n;
        batch += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let hook = api(
            &http,
            reqwest::Method::GET,
            format!("{}/v1/webhooks/{id}", server.base),
            None,
        )
        .await?;
        if hook["backlog"].as_u64().unwrap_or(0) >= opts.events as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{engine}: events never all queued ({hook})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.queue_secs = started.elapsed().as_secs_f64();
    progress(&format!(
        "webhooks/{engine}: {} events queued in {:.1} s",
        opts.events, run.queue_secs
    ));
    let released = Instant::now();
    receiver.hold.store(false, Ordering::Release);
    receiver.released.notify_waiters();
    while receiver.received.load(Ordering::Relaxed) < opts.events as u64 {
        anyhow::ensure!(
            released.elapsed() < Duration::from_secs(600),
            "{engine}: only {} callbacks arrived",
            receiver.received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.drain_secs = released.elapsed().as_secs_f64();
    run.callbacks_per_s = opts.events as f64 / run.drain_secs;
    progress(&format!(
        "webhooks/{engine}: {:.0} callbacks/s",
        run.callbacks_per_s
    ));

    // Ingest with and without a webhook, interleaved.
    api(
        &http,
        reqwest::Method::DELETE,
        format!("{}/v1/webhooks/{id}", server.base),
        None,
    )
    .await?;
    let plain = crate::logic::plain_body();
    let window = Duration::from_secs(opts.secs);
    for round in 0..opts.rounds {
        let order = crate::controller::interleaved(round);
        for with_hook in order {
            let hook = if with_hook {
                Some(create_hook(&http, &server.base, &url, &receiver).await?)
            } else {
                None
            };
            // Let the previous run's deliveries and callbacks finish first.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let r = ingest_with(
                &server.base,
                opts.concurrency,
                100_000,
                window,
                Arc::clone(&plain),
                engine,
            )
            .await?;
            progress(&format!(
                "webhooks/{engine}: ingest {} {:.0}/s",
                if with_hook {
                    "with a webhook"
                } else {
                    "without"
                },
                r.per_s
            ));
            if let Some(id) = hook {
                run.ingest_with_per_s.push(r.per_s);
                api(
                    &http,
                    reqwest::Method::DELETE,
                    format!("{}/v1/webhooks/{id}", server.base),
                    None,
                )
                .await?;
            } else {
                run.ingest_without_per_s.push(r.per_s);
            }
        }
    }
    run.ingest_with_median = median(&run.ingest_with_per_s);
    run.ingest_without_median = median(&run.ingest_without_per_s);
    run.ingest_ratio = run.ingest_with_median / run.ingest_without_median.max(1.0);
    run.connections = receiver.connections.load(Ordering::Relaxed);
    run.signatures_checked = receiver.checked.load(Ordering::Relaxed);
    run.signatures_bad = receiver.bad.load(Ordering::Relaxed);
    drop(server);
    Ok(run)
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let engines = crate::controller::engines_of(&opts.engines);
    let mut results = HookResults {
        machine: crate::controller::machine(),
        date: herald_common::time::rfc3339(herald_common::time::now_ms()),
        ..Default::default()
    };
    for engine in &engines {
        let run = run_engine(&opts, engine).await?;
        progress(&format!("webhooks/{engine}: {run:?}"));
        results.runs.push(run);
    }
    let md = report(&results, &opts);
    crate::controller::write_results(&opts.out, "webhooks", &results, &md)
}

fn report(r: &HookResults, opts: &Options) -> String {
    let mut md = format!(
        "## Status webhooks ({})\n\n{}\n\nCallbacks: {} `failed` events (offline recipients of `in_app`-only messages, {} per message) queued while a local receiver held its POSTs, then released; callbacks/s = events / (release → last received). Every 50th signature checked. Ingest: {} HTTP requests in flight, {} s runs, {} of each interleaved, with a `*` webhook registered (every accepted message is delivered and announced during the run) against none.\n\n| engine | callbacks/s | queued in | TCP connections | signatures bad / checked | ingest without (median) | ingest with a webhook (median) | with / without | runs (without; with) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
        r.date, r.machine, opts.events, opts.per_message, opts.concurrency, opts.secs, opts.rounds
    );
    for run in &r.runs {
        md += &format!(
            "| {} | {:.0} | {:.1} s | {} | {} / {} | {:.0} | {:.0} | {:.2} | {}; {} |\n",
            run.engine,
            run.callbacks_per_s,
            run.queue_secs,
            run.connections,
            run.signatures_bad,
            run.signatures_checked,
            run.ingest_without_median,
            run.ingest_with_median,
            run.ingest_ratio,
            crate::controller::runs_text(&run.ingest_without_per_s),
            crate::controller::runs_text(&run.ingest_with_per_s)
        );
    }
    md
}
