//! herald-bench: a load generator with real WebSocket clients (in worker processes spread
//! over source addresses), real publishers (HTTP, NATS, MQTT), and a side-by-side
//! comparison of Herald against peers and a raw-socket ceiling on the same machine, in the
//! same run. Results: JSON, a Markdown table and an SVG chart.
//!
//!   herald-bench all --out bench/results          the whole comparison (see BENCHMARKS.md)
//!   herald-bench report --out bench/results       rewrite results.md and chart.svg from results.json
//!   herald-bench worker …                          one worker process (spawned by the above)
//!   herald-bench raw-server …                      the raw-loop ceiling server
//!   herald-bench ws-lib-server --lib …             the same broadcast server per WebSocket library

mod controller;
mod hooks;
mod logic;
mod procstat;
mod proto;
mod push;
mod raw;
mod report;
mod worker;
mod wslib;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use proto::System;

#[derive(Parser)]
#[command(
    name = "herald-bench",
    about = "Herald's load generator and peer comparison"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the comparison and write JSON, Markdown and SVG results.
    All(controller::Options),
    /// App-push throughput per engine against local FCM and APNs mocks, beside a naive
    /// client (writes push.json and push.md in `--out`).
    Push(push::Options),
    /// What templates cost at ingest, and what deferred recipients hold (writes logic.json
    /// and logic.md in `--out`).
    Logic(logic::Options),
    /// Status webhook callbacks/s per engine against a local receiver, and ingest with a
    /// webhook against without (writes webhooks.json and webhooks.md in `--out`).
    Webhooks(hooks::Options),
    /// The FCM and APNs mocks of `push` (spawned by it).
    PushMock {
        #[arg(long)]
        port: u16,
    },
    /// Rewrite results.md and chart.svg from the results.json in `--out`.
    Report {
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// One worker process of WebSocket clients (driven over stdin by `all`).
    Worker {
        #[arg(long, value_enum)]
        system: System,
        #[arg(long)]
        url: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        source: Option<IpAddr>,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value = "bench-secret")]
        secret: String,
        #[arg(long, default_value = "bench")]
        topic: String,
        #[arg(long)]
        ack: bool,
    },
    /// The raw-loop ceiling server.
    RawServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        control: u16,
    },
    /// A Herald-like broadcast server on one WebSocket library (to compare libraries).
    WsLibServer {
        #[arg(long, value_enum)]
        lib: wslib::Lib,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        control: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let workers = match &cli.command {
        Command::Worker { .. }
        | Command::RawServer { .. }
        | Command::WsLibServer { .. }
        | Command::PushMock { .. } => 2,
        Command::All(_)
        | Command::Report { .. }
        | Command::Push(_)
        | Command::Logic(_)
        | Command::Webhooks(_) => 2,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::All(opts) => controller::run_all(opts).await,
            Command::Push(opts) => push::run(opts).await,
            Command::Logic(opts) => logic::run(opts).await,
            Command::Webhooks(opts) => hooks::run(opts).await,
            Command::PushMock { port } => push::run_mock(port).await,
            Command::Report { out } => {
                let json = std::fs::read_to_string(out.join("results.json"))?;
                report::write(&out, &serde_json::from_str(&json)?)
            }
            Command::Worker {
                system,
                url,
                count,
                source,
                offset,
                secret,
                topic,
                ack,
            } => {
                worker::run(worker::Args {
                    system,
                    url,
                    count,
                    source,
                    offset,
                    secret,
                    topic,
                    ack,
                })
                .await
            }
            Command::RawServer { port, control } => raw::run(port, control).await,
            Command::WsLibServer { lib, port, control } => wslib::run(lib, port, control).await,
        }
    })
}

/// The workspace root (for peers' scripts and the herald binary).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
