//! The comparison run: for each system, start its server, connect the subscribers through
//! worker processes, then measure idle cost, connect rate, latency at a fixed rate, and
//! deliveries at saturation (median of repeats), with the server's CPU read from /proc.
//! Then Herald-only scenarios: targeted delivery (with offline users falling back to a real
//! SMTP server), ingest, and scale-out over a local cluster of gateways.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::procstat;
use crate::proto::{self, System};
use crate::report;
use crate::worker::Report;

pub(crate) const API_KEY: &str = "bench-key";
const SECRET: &str = "bench-secret";

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Where results go (results.json, results.md, chart.svg).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw,herald,tungstenite,tokio-websockets,node,nats,mosquitto"
    )]
    pub systems: Vec<System>,
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Worker processes (each binds its own source address 127.0.0.N).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Broadcasts per second for the latency phase (× subscribers = deliveries/s).
    #[arg(long, default_value_t = 3)]
    pub rate: u32,
    /// Broadcasts per second offered in the saturation phase.
    /// (80 × 10,000 subscribers = 800,000 deliveries/s offered: more than any system here
    /// delivers, so each runs at its own ceiling.)
    #[arg(long, default_value_t = 80)]
    pub saturation_rate: u32,
    #[arg(long, default_value_t = 8)]
    pub secs: u64,
    /// Latency and saturation runs per system (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Targeted delivery: messages per second to random online users.
    #[arg(long, default_value_t = 2000)]
    pub targeted_rate: u32,
    #[arg(long, default_value_t = 1000)]
    pub targeted_users: usize,
    /// Targeted delivery: share of messages sent to offline users, which fall back to email
    /// through a real SMTP server (aiosmtpd from the venv).
    #[arg(long, default_value_t = 0.2)]
    pub offline_share: f64,
    /// Scale-out: sessions held over the local cluster's gateways.
    #[arg(long, default_value_t = 100_000)]
    pub scale_sessions: usize,
    /// Scale-out: gateway processes (each may hold at most ~19,900 sockets here).
    #[arg(long, default_value_t = 6)]
    pub gateways: usize,
    /// Ingest: HTTP requests in flight at once (each waits for its durable commit, so the
    /// store's group commits grow with this).
    #[arg(long, default_value_t = 256)]
    pub ingest_concurrency: usize,
    /// Ingest: the users messages go to (each offline, in-app only), spread evenly. A real
    /// backend writes to many users; a few hot users make every message land on the same
    /// per-user inbox pages (measured in BENCHMARKS.md).
    #[arg(long, default_value_t = 100_000)]
    pub ingest_users: usize,
    /// Scenarios to skip: fanout, targeted, ingest, scaleout; `saturation` skips only the
    /// fan-out's saturation phase (to iterate on latency).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct Latency {
    pub offered_per_s: f64,
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct Saturation {
    pub deliveries: u64,
    pub secs: f64,
    pub per_s: f64,
    pub server_cpu_s: f64,
    pub per_cpu_s: f64,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct FanoutResult {
    pub system: String,
    pub subscribers: usize,
    pub connected: u64,
    pub connect_per_s: f64,
    pub idle_rss_per_session_bytes: f64,
    pub idle_cpu_share: f64,
    /// Each quantile the median of `latency_runs`'.
    pub latency: Latency,
    #[serde(default)]
    pub latency_runs: Vec<Latency>,
    /// Median run.
    pub saturation: Saturation,
    pub saturation_runs: Vec<Saturation>,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct TargetedResult {
    pub users: usize,
    pub offered_per_s: f64,
    pub accepted: u64,
    pub to_client: Latency,
    /// From accept to the recorded ack (`delivered`), over a sample.
    pub to_delivered_p50_ms: f64,
    pub to_delivered_p99_ms: f64,
    /// Messages to offline users (in-app, then email through a real SMTP server).
    pub offline_accepted: u64,
    /// Mails the SMTP server filed.
    pub mails_received: u64,
    /// From accept to `sent` via email, from the records, over a sample.
    pub to_email_p50_ms: f64,
    pub to_email_p99_ms: f64,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct ScaleOutResult {
    pub gateways: usize,
    pub sessions: usize,
    pub connected: u64,
    pub connect_per_s: f64,
    /// Summed over the gateway processes, after connecting (idle, heartbeats on).
    pub gateways_rss_bytes: u64,
    pub rss_per_session_bytes: f64,
    pub idle_cpu_share: f64,
    pub nats_rss_bytes: u64,
    pub dispatcher_rss_bytes: u64,
    /// One broadcast per second to every session.
    pub broadcast: Latency,
    pub broadcast_gateway_cpu_s: f64,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct IngestResult {
    pub engine: String,
    pub path: String,
    pub accepted: u64,
    pub secs: f64,
    pub per_s: f64,
}

#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct Results {
    pub machine: String,
    pub date: String,
    pub options: String,
    pub fanout: Vec<FanoutResult>,
    pub targeted: Option<TargetedResult>,
    pub ingest: Vec<IngestResult>,
    pub scale_out: Option<ScaleOutResult>,
}

pub(crate) fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The run's scratch directory (data dirs, configs, the mail spool): one per controller
/// process, removed when the run ends.
pub(crate) fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("herald-bench-{}", std::process::id()))
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    scratch_root().join(name)
}

pub(crate) fn progress(text: &str) {
    eprintln!("[herald-bench] {text}");
}

/// The engines an `--engines` option names: `embedded`, `cluster` or `both`.
pub(crate) fn engines_of(choice: &str) -> Vec<&str> {
    match choice {
        "both" => vec!["embedded", "cluster"],
        one => vec![one],
    }
}

/// Which of two interleaved variants runs first in `round`: they alternate, so neither
/// always meets the fuller store.
pub(crate) fn interleaved(round: usize) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

/// A list of per-run rates, for a report.
pub(crate) fn runs_text(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `<name>.json` and `<name>.md` into `out`, prints the report and removes the
/// scratch directory.
pub(crate) fn write_results<T: Serialize>(
    out: &Path,
    name: &str,
    results: &T,
    md: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(results)?,
    )?;
    std::fs::write(out.join(format!("{name}.md")), md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(scratch_root());
    Ok(())
}

/// A running server under test.
struct Server {
    child: Child,
    ws_url: String,
    publisher: Publisher,
}

enum Publisher {
    Herald { base: String, http: reqwest::Client },
    Nats(async_nats::Client),
    Line(tokio::net::TcpStream),
    Mqtt(tokio::net::TcpStream),
}

impl Publisher {
    async fn publish(&mut self, payload: &str) -> anyhow::Result<()> {
        match self {
            Publisher::Herald { base, http } => {
                let r = http
                    .post(format!("{base}/v1/topics/bench/messages"))
                    .bearer_auth(API_KEY)
                    .json(&serde_json::json!({"title": payload}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    r.status().as_u16() == 202,
                    "publish answered {}",
                    r.status()
                );
            }
            Publisher::Nats(c) => c.publish("bench", payload.to_string().into()).await?,
            Publisher::Line(s) => s.write_all(format!("{payload}\n").as_bytes()).await?,
            Publisher::Mqtt(s) => {
                s.write_all(&proto::mqtt_publish("bench", payload.as_bytes()))
                    .await?
            }
        }
        Ok(())
    }
}

pub(crate) async fn wait_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nothing listening on {port}")
}

/// `herald <role>` with the bench's keys, no connect or frame limits, quiet logs.
fn herald_command(opts: &Options, role: &str) -> Command {
    herald_command_with(&opts.herald_bin, role)
}

fn herald_command_with(bin: &Option<PathBuf>, role: &str) -> Command {
    let bin = bin
        .clone()
        .unwrap_or_else(|| crate::root().join("target/release/herald"));
    let mut cmd = Command::new(bin);
    cmd.arg(role)
        .env("HERALD_API_KEYS", API_KEY)
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_CONNECTS_PER_S", "0")
        .env("HERALD_CLIENT_FRAMES_PER_S", "0")
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn start_herald(opts: &Options, extra: &[(&str, &str)]) -> anyhow::Result<(Child, String)> {
    let dir = scratch("herald");
    let _ = std::fs::remove_dir_all(&dir);
    start_herald_in(&dir, &opts.herald_bin, extra).await
}

/// `herald serve` on a free port with its data in `dir`; answers its address.
pub(crate) async fn start_herald_in(
    dir: &Path,
    bin: &Option<PathBuf>,
    extra: &[(&str, &str)],
) -> anyhow::Result<(Child, String)> {
    let port = free_port();
    let mut cmd = herald_command_with(bin, "serve");
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .env("HERALD_DATA_DIR", dir);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    wait_port(port).await?;
    Ok((child, format!("127.0.0.1:{port}")))
}

async fn start(system: System, opts: &Options) -> anyhow::Result<Server> {
    let root = crate::root();
    match system {
        System::Herald => {
            let (child, addr) = start_herald(opts, &[]).await?;
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?;
            Ok(Server {
                child,
                ws_url: format!("ws://{addr}/ws"),
                publisher: Publisher::Herald {
                    base: format!("http://{addr}"),
                    http,
                },
            })
        }
        System::Nats => {
            let (port, ws) = (free_port(), free_port());
            let conf = scratch("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "listen: 127.0.0.1:{port}\nwebsocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n}}\n"
                ),
            )?;
            let child = Command::new(nats_server_bin())
                .args(["-c"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            wait_port(ws).await?;
            let client = async_nats::connect(format!("127.0.0.1:{port}")).await?;
            Ok(Server {
                child,
                ws_url: format!("ws://127.0.0.1:{ws}"),
                publisher: Publisher::Nats(client),
            })
        }
        System::Node => {
            let ws = free_port();
            let child = Command::new("node")
                .arg(root.join("bench/peers/ws-broadcast.mjs"))
                .arg(ws.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            wait_port(ws + 1).await?;
            let control = tokio::net::TcpStream::connect(("127.0.0.1", ws + 1)).await?;
            Ok(Server {
                child,
                ws_url: format!("ws://127.0.0.1:{ws}"),
                publisher: Publisher::Line(control),
            })
        }
        System::Raw => start_own_server(&["raw-server"]).await,
        System::Tungstenite => start_own_server(&["ws-lib-server", "--lib", "tungstenite"]).await,
        System::TokioWebsockets => {
            start_own_server(&["ws-lib-server", "--lib", "tokio-websockets"]).await
        }
        System::Mosquitto => {
            let bin = mosquitto_bin()?;
            let (tcp, ws) = (free_port(), free_port());
            let conf = scratch("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {tcp} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\nallow_anonymous true\nmax_queued_messages 100000\n"
                ),
            )?;
            let (exe, lib) = bin;
            let child = Command::new(exe)
                .arg("-c")
                .arg(&conf)
                .env("LD_LIBRARY_PATH", lib)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            wait_port(ws).await?;
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tcp)).await?;
            s.write_all(&mqtt_connect_only("bench-publisher")).await?;
            Ok(Server {
                child,
                ws_url: format!("ws://127.0.0.1:{ws}"),
                publisher: Publisher::Mqtt(s),
            })
        }
    }
}

/// One of herald-bench's own servers (the raw loop, a library loop): a WebSocket port and a
/// control port that takes one line per broadcast.
async fn start_own_server(command: &[&str]) -> anyhow::Result<Server> {
    let (ws, control) = (free_port(), free_port());
    let child = Command::new(std::env::current_exe()?)
        .args(command)
        .args(["--port", &ws.to_string(), "--control", &control.to_string()])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_port(control).await?;
    let c = tokio::net::TcpStream::connect(("127.0.0.1", control)).await?;
    Ok(Server {
        child,
        ws_url: format!("ws://127.0.0.1:{ws}"),
        publisher: Publisher::Line(c),
    })
}

fn mqtt_connect_only(client_id: &str) -> Vec<u8> {
    let full = proto::mqtt_connect_and_subscribe(client_id, "x");
    // The CONNECT packet is the first one: 2 header bytes + its remaining length.
    let len = full[1] as usize;
    full[..2 + len].to_vec()
}

fn nats_server_bin() -> PathBuf {
    let venv = crate::root().join(".venv/bin/nats-server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("nats-server")
    }
}

/// mosquitto from Debian's packages, fetched without root by deploy/fetch-mosquitto.sh.
fn mosquitto_bin() -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = std::process::Command::new(crate::root().join("deploy/fetch-mosquitto.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "could not fetch mosquitto");
    let exe = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let libs = exe
        .ancestors()
        .nth(3)
        .map(|root| root.join("usr/lib/x86_64-linux-gnu"))
        .ok_or_else(|| anyhow::anyhow!("unexpected mosquitto path {}", exe.display()))?;
    Ok((exe, libs))
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line()).await??;
        line.ok_or_else(|| anyhow::anyhow!("worker ended"))
    }
}

/// Starts `workers` worker processes holding `total` clients of `system` (spread over the
/// comma-separated `url`s), shows a progress bar while they connect, and returns them with
/// the number connected and the connect rate (sessions/s, from the first spawn to the last
/// connect, JWT check and `welcome` included for Herald).
async fn start_workers(
    system: System,
    url: &str,
    total: usize,
    workers: usize,
    ack: bool,
) -> anyhow::Result<(Vec<Worker>, u64, f64)> {
    let per = total.div_ceil(workers);
    let started = Instant::now();
    let mut spawned = Vec::new();
    for w in 0..workers {
        let count = per.min(total.saturating_sub(w * per));
        if count == 0 {
            break;
        }
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "worker",
            "--system",
            &system.arg(),
            "--url",
            url,
            "--count",
            &count.to_string(),
        ])
        .args([
            "--source",
            &format!("127.0.0.{}", 2 + (w % 250)),
            "--offset",
            &(w * per).to_string(),
            "--secret",
            SECRET,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        if ack {
            cmd.arg("--ack");
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let lines = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("stdout"))?,
        )
        .lines();
        spawned.push(Worker {
            child,
            stdin,
            lines,
        });
    }
    let bar = progress_bar(total as u64, &format!("{}: connecting", system.name()));
    let counts: Vec<AtomicU64> = spawned.iter().map(|_| AtomicU64::new(0)).collect();
    let ready = futures::future::try_join_all(spawned.iter_mut().enumerate().map(|(i, w)| {
        let (counts, bar) = (&counts, &bar);
        async move {
            loop {
                let line = tokio::time::timeout(Duration::from_secs(300), w.lines.next_line())
                    .await??
                    .ok_or_else(|| anyhow::anyhow!("a worker ended while connecting"))?;
                let (done, n) = match line.split_once(' ') {
                    Some(("ready", n)) => (true, n),
                    Some(("connected", n)) => (false, n),
                    _ => continue,
                };
                counts[i].store(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
                bar.set_position(counts.iter().map(|c| c.load(Ordering::Relaxed)).sum());
                if done {
                    return anyhow::Ok(());
                }
            }
        }
    }))
    .await;
    bar.finish_and_clear();
    ready?;
    let connected: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let rate = connected as f64 / started.elapsed().as_secs_f64();
    Ok((spawned, connected, rate))
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "[herald-bench] {msg} [{bar:32}] {pos}/{len} ({per_sec}, {elapsed})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(len).with_style(style.progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

async fn collect(workers: &mut [Worker]) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut total = 0;
    let mut merged = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for w in workers.iter_mut() {
        let line = w.command("report").await?;
        let r: Report = serde_json::from_str(&line)?;
        total += r.received;
        let bytes: Vec<u8> = (0..r.histogram.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&r.histogram[i..i + 2], 16).ok())
            .collect();
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
        merged.add(&h)?;
    }
    Ok((total, merged))
}

async fn reset(workers: &mut [Worker]) -> anyhow::Result<()> {
    for w in workers.iter_mut() {
        w.command("reset").await?;
    }
    Ok(())
}

/// Publishes at `rate` per second for `secs`.
async fn publish_for(
    publisher: &mut Publisher,
    rate: u32,
    secs: u64,
    size: usize,
) -> anyhow::Result<u64> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(secs);
    let bar = progress_bar(rate as u64 * secs, "publishing");
    let mut sent = 0;
    while Instant::now() < end {
        tick.tick().await;
        publisher.publish(&proto::payload(size)).await?;
        sent += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(sent)
}

/// Polls until deliveries stop growing; returns (total, seconds since `start` to the last growth).
async fn settle(
    workers: &mut [Worker],
    start: Instant,
) -> anyhow::Result<(u64, f64, Histogram<u64>)> {
    let mut last = 0;
    let mut last_change = start.elapsed().as_secs_f64();
    let mut quiet = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (total, hist) = collect(workers).await?;
        if total > last {
            last = total;
            last_change = start.elapsed().as_secs_f64();
            quiet = 0;
        } else {
            quiet += 1;
        }
        if quiet >= 3 || start.elapsed() > Duration::from_secs(120) {
            return Ok((last, last_change, hist));
        }
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn fanout(system: System, opts: &Options) -> anyhow::Result<FanoutResult> {
    progress(&format!("{}: starting", system.name()));
    // Retries: a server that did not come up (say, a port it was given is still held by a
    // closed connection: libwebsockets, under mosquitto, binds without SO_REUSEADDR) gets
    // new ports.
    let mut attempt = 1;
    let mut server = loop {
        match start(system, opts).await {
            Ok(s) => break s,
            Err(e) if attempt < 4 => {
                progress(&format!(
                    "{}: did not start ({e:#}); retrying",
                    system.name()
                ));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let pid = server.child.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = procstat::rss_bytes(pid);
    let (mut workers, connected, connect_per_s) = start_workers(
        system,
        &server.ws_url,
        opts.subscribers,
        opts.workers,
        false,
    )
    .await?;
    progress(&format!(
        "{}: {connected} sessions at {connect_per_s:.0}/s",
        system.name()
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu = procstat::cpu_share(pid, Duration::from_secs(5)).await;
    let rss = procstat::rss_bytes(pid);
    let per_session = rss.saturating_sub(base_rss) as f64 / connected.max(1) as f64;

    // Latency at a fixed rate below saturation, repeated like saturation: each quantile
    // reported is the median of the runs' (one run's p99 moves by ±15 % on this machine).
    let mut latency_runs = Vec::new();
    for r in 0..opts.repeats.max(1) {
        reset(&mut workers).await?;
        let started = Instant::now();
        let sent = publish_for(&mut server.publisher, opts.rate, opts.secs, opts.size).await?;
        let (delivered, _, hist) = settle(&mut workers, started).await?;
        let run = Latency {
            offered_per_s: opts.rate as f64 * connected as f64,
            deliveries: delivered,
            p50_ms: ms(&hist, 0.5),
            p99_ms: ms(&hist, 0.99),
            p999_ms: ms(&hist, 0.999),
        };
        progress(&format!(
            "{}: latency run {}: {sent} broadcasts at {}/s → p50 {:.1} ms, p99 {:.1} ms",
            system.name(),
            r + 1,
            opts.rate,
            run.p50_ms,
            run.p99_ms
        ));
        latency_runs.push(run);
    }
    let median_of = |quantile: fn(&Latency) -> f64| {
        let mut v: Vec<f64> = latency_runs.iter().map(quantile).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let latency = Latency {
        offered_per_s: opts.rate as f64 * connected as f64,
        deliveries: latency_runs.iter().map(|l| l.deliveries).sum(),
        p50_ms: median_of(|l| l.p50_ms),
        p99_ms: median_of(|l| l.p99_ms),
        p999_ms: median_of(|l| l.p999_ms),
    };

    // Saturation, repeated.
    let mut runs = Vec::new();
    let saturation_runs = if opts.skip.iter().any(|s| s == "saturation") {
        0
    } else {
        opts.repeats
    };
    for r in 0..saturation_runs {
        reset(&mut workers).await?;
        let cpu0 = procstat::cpu_seconds(pid);
        let started = Instant::now();
        publish_for(
            &mut server.publisher,
            opts.saturation_rate,
            opts.secs,
            opts.size,
        )
        .await?;
        let (delivered, secs, _) = settle(&mut workers, started).await?;
        let cpu = procstat::cpu_seconds(pid) - cpu0;
        let run = Saturation {
            deliveries: delivered,
            secs,
            per_s: delivered as f64 / secs.max(0.001),
            server_cpu_s: cpu,
            per_cpu_s: delivered as f64 / cpu.max(0.001),
        };
        progress(&format!(
            "{}: saturation run {}: {:.0} deliveries/s, {:.0} per server CPU-second",
            system.name(),
            r + 1,
            run.per_s,
            run.per_cpu_s
        ));
        runs.push(run);
    }
    let mut sorted = runs.clone();
    sorted.sort_by(|a, b| a.per_cpu_s.total_cmp(&b.per_cpu_s));
    let median = sorted.get(sorted.len() / 2).cloned().unwrap_or_default();
    for w in workers.iter_mut() {
        let _ = w.stdin.write_all(b"quit\n").await;
        let _ = w.child.kill().await;
    }
    let _ = server.child.kill().await;
    Ok(FanoutResult {
        system: system.name().into(),
        subscribers: opts.subscribers,
        connected,
        connect_per_s,
        idle_rss_per_session_bytes: per_session,
        idle_cpu_share: idle_cpu,
        latency,
        latency_runs,
        saturation: median,
        saturation_runs: runs,
    })
}

/// A real SMTP server (aiosmtpd from the venv) filing each mail in a Maildir.
struct Smtp {
    _child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    async fn start() -> anyhow::Result<Smtp> {
        let python = crate::root().join(".venv/bin/python");
        anyhow::ensure!(
            python.exists(),
            "no .venv (bench/run.sh or scripts/test makes it)"
        );
        let port = free_port();
        let maildir = scratch("maildir");
        let _ = std::fs::remove_dir_all(&maildir);
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        wait_port(port).await?;
        Ok(Smtp {
            _child: child,
            port,
            maildir,
        })
    }

    fn mails(&self) -> u64 {
        std::fs::read_dir(self.maildir.join("new")).map_or(0, |d| d.count() as u64)
    }

    /// Waits until `n` mails are filed (or 60 s pass); returns how many were.
    async fn wait_for(&self, n: u64) -> u64 {
        let end = Instant::now() + Duration::from_secs(60);
        while self.mails() < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.mails()
    }
}

/// Milliseconds from a message's `created_at` to the first attempt on `channel` with
/// `outcome`, from `GET /v1/messages/{id}`.
async fn record_latency(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    channel: &str,
    outcome: &str,
) -> anyhow::Result<Option<u64>> {
    let v: serde_json::Value = http
        .get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(API_KEY)
        .send()
        .await?
        .json()
        .await?;
    let created = herald_common::time::parse_rfc3339(v["created_at"].as_str().unwrap_or(""));
    let at = v["recipients"][0]["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["channel"] == channel && a["outcome"] == outcome)
        .and_then(|a| herald_common::time::parse_rfc3339(a["at"].as_str().unwrap_or("")));
    Ok(created.zip(at).map(|(c, a)| (a - c).max(0) as u64))
}

const OFFLINE_USERS: usize = 200;

async fn targeted(opts: &Options) -> anyhow::Result<TargetedResult> {
    progress("targeted delivery: starting an SMTP server and herald serve");
    let smtp = Smtp::start().await?;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let (mut child, addr) = start_herald(opts, &[("HERALD_SMTP_URL", &smtp_url)]).await?;
    let url = format!("ws://{addr}/ws");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = format!("http://{addr}");
    for i in 0..OFFLINE_USERS {
        http.put(format!("{base}/v1/users/offline{i}"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"email": format!("offline{i}@bench.example")}))
            .send()
            .await?
            .error_for_status()?;
    }
    let (mut workers, connected, _) = start_workers(
        System::Herald,
        &url,
        opts.targeted_users,
        opts.workers,
        true,
    )
    .await?;
    reset(&mut workers).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.targeted_rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(opts.secs);
    let started = Instant::now();
    let offline_per_100 = (opts.offline_share * 100.0).round() as usize;
    let bar = progress_bar(opts.targeted_rate as u64 * opts.secs, "targeted: sending");
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        n += 1;
        let offline = n % 100 < offline_per_100;
        let body = if offline {
            serde_json::json!({"to": [format!("offline{}", n % OFFLINE_USERS)], "title": proto::payload(opts.size), "channels": ["in_app", "email"]})
        } else {
            let user = format!("bench{}", (n * 7919) % connected.max(1) as usize);
            serde_json::json!({"to": [user], "title": proto::payload(opts.size), "channels": ["in_app"]})
        };
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/messages"))
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["id"].as_str().map(|id| (id.to_string(), offline))
        }));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (mut online_ids, mut offline_ids) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await {
            Ok(Some((id, true))) => offline_ids.push(id),
            Ok(Some((id, false))) => online_ids.push(id),
            _ => {}
        }
    }
    let (delivered, _, hist) = settle(&mut workers, started).await?;
    let mails = smtp.wait_for(offline_ids.len() as u64).await;
    // Accept → ack, and accept → sent via email, from the records themselves, over a sample.
    let mut to_delivered = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for id in online_ids.iter().step_by((online_ids.len() / 300).max(1)) {
        if let Some(ms) = record_latency(&http, &base, id, "in_app", "acked").await? {
            let _ = to_delivered.record((ms * 1000).max(1));
        }
    }
    let mut to_email = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for id in offline_ids.iter().step_by((offline_ids.len() / 300).max(1)) {
        if let Some(ms) = record_latency(&http, &base, id, "email", "sent").await? {
            let _ = to_email.record((ms * 1000).max(1));
        }
    }
    for w in workers.iter_mut() {
        let _ = w.child.kill().await;
    }
    let _ = child.kill().await;
    drop(smtp);
    Ok(TargetedResult {
        users: connected as usize,
        offered_per_s: opts.targeted_rate as f64,
        accepted: (online_ids.len() + offline_ids.len()) as u64,
        to_client: Latency {
            offered_per_s: opts.targeted_rate as f64,
            deliveries: delivered,
            p50_ms: ms(&hist, 0.5),
            p99_ms: ms(&hist, 0.99),
            p999_ms: ms(&hist, 0.999),
        },
        to_delivered_p50_ms: ms(&to_delivered, 0.5),
        to_delivered_p99_ms: ms(&to_delivered, 0.99),
        offline_accepted: offline_ids.len() as u64,
        mails_received: mails,
        to_email_p50_ms: ms(&to_email, 0.5),
        to_email_p99_ms: ms(&to_email, 0.99),
    })
}

/// Accepted messages per second over HTTP: `--ingest-concurrency` connections, each with one
/// request in flight. A bare hyper connection per sender (no pool, no URL parsing, a body
/// built with one `format!`): the generator shares the server's cores, so it must cost
/// little per request.
async fn ingest_http(base: &str, opts: &Options, engine: &str) -> anyhow::Result<IngestResult> {
    let plain: BodyOf = Arc::new(|user| {
        format!(r#"{{"to":["offline{user}"],"title":"ingest","channels":["in_app"]}}"#)
    });
    ingest_with(
        base,
        opts.ingest_concurrency,
        opts.ingest_users,
        Duration::from_secs(opts.secs),
        plain,
        engine,
    )
    .await
}

/// The body of the request to user `n`.
pub(crate) type BodyOf = Arc<dyn Fn(usize) -> String + Send + Sync>;

/// Accepted messages per second over HTTP for `window`, with `concurrency` senders posting
/// `body(user)` to users `0..users`.
pub(crate) async fn ingest_with(
    base: &str,
    concurrency: usize,
    users: usize,
    window: Duration,
    body: BodyOf,
    engine: &str,
) -> anyhow::Result<IngestResult> {
    let users = users.max(1);
    let addr = base.trim_start_matches("http://").to_string();
    let end = Instant::now() + window;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let addr = addr.clone();
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            if let Err(e) = post_until(&addr, end, (c, concurrency, users), &*body, &mut ok).await {
                progress(&format!("ingest sender {c}: {e:#}"));
            }
            ok
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(IngestResult {
        engine: engine.into(),
        path: "HTTP POST /v1/messages".into(),
        accepted,
        secs,
        per_s: accepted as f64 / secs,
    })
}

/// One sender: POSTs `body_of(user)` to users `first`, `first + stride`, … (mod `users`)
/// until `end`, counting the 202s in `ok`.
async fn post_until(
    addr: &str,
    end: Instant,
    (first, stride, users): (usize, usize, usize),
    body_of: &(dyn Fn(usize) -> String + Send + Sync),
    ok: &mut u64,
) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let auth = format!("Bearer {API_KEY}");
    let mut n = first;
    while Instant::now() < end {
        let body = body_of(n % users);
        n += stride;
        let request = hyper::Request::post("/v1/messages")
            .header(HOST, addr)
            .header(AUTHORIZATION, &auth)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body)))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let accepted = response.status() == hyper::StatusCode::ACCEPTED;
        response.into_body().collect().await?;
        if accepted {
            *ok += 1;
        }
    }
    Ok(())
}

async fn ingest(opts: &Options) -> anyhow::Result<Vec<IngestResult>> {
    let mut out = Vec::new();
    progress("ingest: embedded engine over HTTP");
    let (mut child, addr) = start_herald(opts, &[]).await?;
    out.push(ingest_http(&format!("http://{addr}"), opts, "embedded").await?);
    let _ = child.kill().await;

    progress("ingest: cluster engine over HTTP and JetStream herald.send");
    let dir = scratch("nats-js");
    let (mut nats, url) = start_nats_js(&dir).await?;
    let (mut herald, addr) = start_herald(opts, &[("HERALD_NATS_URL", &url)]).await?;
    // Wait for the engine.
    for _ in 0..200 {
        if reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.push(ingest_http(&format!("http://{addr}"), opts, "cluster (NATS)").await?);
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    let end = started + Duration::from_secs(opts.secs);
    let mut accepted = 0u64;
    let mut n = 0u64;
    while Instant::now() < end {
        let mut acks = Vec::with_capacity(256);
        for _ in 0..256 {
            n += 1;
            let body = serde_json::json!({"to": [format!("js{}", n % opts.ingest_users.max(1) as u64)], "title": "ingest", "channels": ["in_app"]}).to_string();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("bench-{n}").as_str());
            acks.push(
                js.publish_with_headers("herald.send", headers, body.into())
                    .await?,
            );
        }
        for a in acks {
            if a.await.is_ok() {
                accepted += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    out.push(IngestResult {
        engine: "cluster (NATS)".into(),
        path: "JetStream publish to herald.send".into(),
        accepted,
        secs,
        per_s: accepted as f64 / secs,
    });
    let _ = herald.kill().await;
    let _ = nats.kill().await;
    Ok(out)
}

/// A role of a local cluster (`herald dispatcher` or `herald gateway`) against `nats`.
async fn start_role(
    opts: &Options,
    role: &str,
    nats: &str,
    listen_var: &str,
) -> anyhow::Result<(Child, String)> {
    let port = free_port();
    let child = herald_command(opts, role)
        .env(listen_var, format!("127.0.0.1:{port}"))
        .env("HERALD_NATS_URL", nats)
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..300 {
        if reqwest::get(format!("http://{addr}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok((child, addr));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{role} on {addr} never got ready")
}

/// A single nats-server with JetStream in `dir`; returns it and its URL once it listens.
pub(crate) async fn start_nats_js(dir: &Path) -> anyhow::Result<(Child, String)> {
    let port = free_port();
    let _ = std::fs::remove_dir_all(dir);
    let child = Command::new(nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_port(port).await?;
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

/// Scale-out: a local cluster (nats-server, one dispatcher, `gateways` gateways) holding
/// `scale_sessions` subscribed sessions; memory and CPU it takes, and one broadcast per
/// second to all of them.
async fn scale_out(opts: &Options) -> anyhow::Result<ScaleOutResult> {
    progress(&format!(
        "scale-out: nats-server, a dispatcher and {} gateways",
        opts.gateways
    ));
    let dir = scratch("scale");
    let (mut nats, nats_url) = start_nats_js(&dir).await?;
    let (mut dispatcher, api) =
        start_role(opts, "dispatcher", &nats_url, "HERALD_API_LISTEN").await?;
    let mut gateways = Vec::new();
    for _ in 0..opts.gateways {
        gateways.push(start_role(opts, "gateway", &nats_url, "HERALD_WS_LISTEN").await?);
    }
    let pids: Vec<u32> = gateways.iter().filter_map(|g| g.0.id()).collect();
    let rss = |pids: &[u32]| pids.iter().map(|&p| procstat::rss_bytes(p)).sum::<u64>();
    let cpu = |pids: &[u32]| pids.iter().map(|&p| procstat::cpu_seconds(p)).sum::<f64>();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = rss(&pids);
    let urls: Vec<String> = gateways
        .iter()
        .map(|(_, a)| format!("ws://{a}/ws"))
        .collect();
    // Each worker process holds at most 12,500 sockets (the cap here is ~19,900 per process).
    let workers = opts.scale_sessions.div_ceil(12_500).max(opts.workers);
    let (mut workers, connected, connect_per_s) = start_workers(
        System::Herald,
        &urls.join(","),
        opts.scale_sessions,
        workers,
        false,
    )
    .await?;
    progress(&format!(
        "scale-out: {connected} sessions over {} gateways at {connect_per_s:.0}/s",
        opts.gateways
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = cpu(&pids);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (cpu(&pids) - cpu0) / 5.0;
    let gateways_rss = rss(&pids);
    let nats_rss = nats.id().map_or(0, procstat::rss_bytes);
    let dispatcher_rss = dispatcher.id().map_or(0, procstat::rss_bytes);

    reset(&mut workers).await?;
    let mut publisher = Publisher::Herald {
        base: format!("http://{api}"),
        http: reqwest::Client::new(),
    };
    let cpu0 = cpu(&pids);
    let started = Instant::now();
    publish_for(&mut publisher, 1, opts.secs, opts.size).await?;
    let (delivered, _, hist) = settle(&mut workers, started).await?;
    let broadcast_cpu = cpu(&pids) - cpu0;
    for w in workers.iter_mut() {
        let _ = w.child.kill().await;
    }
    for (g, _) in gateways.iter_mut() {
        let _ = g.kill().await;
    }
    let _ = dispatcher.kill().await;
    let _ = nats.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ScaleOutResult {
        gateways: opts.gateways,
        sessions: opts.scale_sessions,
        connected,
        connect_per_s,
        gateways_rss_bytes: gateways_rss,
        rss_per_session_bytes: gateways_rss.saturating_sub(base_rss) as f64
            / connected.max(1) as f64,
        idle_cpu_share: idle_cpu,
        nats_rss_bytes: nats_rss,
        dispatcher_rss_bytes: dispatcher_rss,
        broadcast: Latency {
            offered_per_s: connected as f64,
            deliveries: delivered,
            p50_ms: ms(&hist, 0.5),
            p99_ms: ms(&hist, 0.99),
            p999_ms: ms(&hist, 0.999),
        },
        broadcast_gateway_cpu_s: broadcast_cpu,
    })
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem} GiB")
}

pub async fn run_all(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(scratch_root())?;
    let result = run_scenarios(opts).await;
    // JetStream stores and spools run to hundreds of MB per run: leave none behind.
    let _ = std::fs::remove_dir_all(scratch_root());
    result
}

async fn run_scenarios(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let mut results = Results {
        machine: machine(),
        date: herald_common::time::rfc3339(herald_common::time::now_ms()),
        options: format!(
            "{} subscribers over {} worker processes, {}-byte messages, latency at {} broadcasts/s, saturation offered at {} broadcasts/s for {} s, median of {} runs; ingest with {} HTTP requests in flight to {} users",
            opts.subscribers,
            opts.workers,
            opts.size,
            opts.rate,
            opts.saturation_rate,
            opts.secs,
            opts.repeats,
            opts.ingest_concurrency,
            opts.ingest_users
        ),
        ..Default::default()
    };
    if !opts.skip.iter().any(|s| s == "fanout") {
        for &system in &opts.systems {
            match fanout(system, &opts).await {
                Ok(r) => results.fanout.push(r),
                Err(e) => progress(&format!("{}: skipped: {e:#}", system.name())),
            }
        }
    }
    if !opts.skip.iter().any(|s| s == "targeted") {
        match targeted(&opts).await {
            Ok(t) => results.targeted = Some(t),
            Err(e) => progress(&format!("targeted: failed: {e:#}")),
        }
    }
    if !opts.skip.iter().any(|s| s == "ingest") {
        match ingest(&opts).await {
            Ok(i) => results.ingest = i,
            Err(e) => progress(&format!("ingest: failed: {e:#}")),
        }
    }
    if !opts.skip.iter().any(|s| s == "scaleout") {
        match scale_out(&opts).await {
            Ok(r) => results.scale_out = Some(r),
            Err(e) => progress(&format!("scale-out: failed: {e:#}")),
        }
    }
    report::write(&opts.out, &results)?;
    progress(&format!("results in {}", opts.out.display()));
    Ok(())
}
