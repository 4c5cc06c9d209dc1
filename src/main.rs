//! `herald`: parse flags, load config, start tracing, bind, wire signals, run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_common::auth::TokenMinter;
use herald_common::config::{self, Config, LogFormat, Role, Secret};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Reach users in the app now, by email or SMS surely."
)]
struct Cli {
    /// A TOML file with settings (keys are the variable names without HERALD_, lower-case).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: API and /ws on one listener, embedded engine.
    Serve {
        /// Generate missing secrets, print them with a ready curl line, bind loopback only.
        #[arg(long)]
        dev: bool,
        /// Address for the API and /ws (HERALD_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Directory of the embedded engine (HERALD_DATA_DIR).
        #[arg(long)]
        data_dir: Option<String>,
    },
    /// The HTTP API and delivery workers (cluster engine: needs HERALD_NATS_URL).
    Dispatcher {
        /// Address for the API (HERALD_API_LISTEN).
        #[arg(long)]
        listen: Option<String>,
    },
    /// WebSocket sessions (cluster engine: needs HERALD_NATS_URL).
    Gateway {
        /// Address for /ws (HERALD_WS_LISTEN).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Load and check the whole configuration — key files read and parsed, URLs checked —
    /// and print the configured channels and providers (never a secret). Exit 64 on any
    /// problem, naming it.
    CheckConfig,
    /// Print a new VAPID key pair for Web Push (HERALD_VAPID_PRIVATE_KEY_FILE takes the
    /// private key's PEM; browsers subscribe with the public key).
    Vapid,
    /// Mint a client token with the configured secret.
    Token {
        #[arg(long)]
        user: String,
        /// Topic patterns the client may subscribe to (`*` one token, `>` the rest).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 30m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("'{text}': unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("ttl must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("herald: {message}");
    ExitCode::from(EXIT_CONFIG)
}

fn random_secret(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn load(cli_config: Option<&PathBuf>, flags: &[(&'static str, String)]) -> Result<Config, String> {
    let file = match cli_config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Config::load(file.as_deref(), |k| std::env::var(k).ok(), flags).map_err(|e| e.to_string())
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn install_metrics() -> Option<PrometheusHandle> {
    let buckets = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .ok()?
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok()
}

/// Fires `token` on SIGTERM or Ctrl-C.
fn wire_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

fn dev_banner(config: &Config, addr: SocketAddr, generated: bool) {
    let key = config
        .api_keys
        .first()
        .and_then(|k| herald_common::auth::KeyEntry::parse(k.expose(), 1).ok())
        .map(|k| k.key)
        .unwrap_or_default();
    let token = config
        .jwt_secret
        .as_ref()
        .and_then(|s| {
            TokenMinter::hs256(s.expose())
                .mint("alice", Some(vec![">".into()]), Duration::from_secs(86400))
                .ok()
        })
        .unwrap_or_default();
    println!();
    println!("Herald is running in dev mode on http://{addr}");
    if generated {
        println!(
            "  (generated for this run; set HERALD_API_KEYS / HERALD_JWT_SECRET to keep them)"
        );
        println!("  API key:     {key}");
        if let Some(s) = &config.jwt_secret {
            println!("  JWT secret:  {}", s.expose());
        }
    }
    println!("  Client token for user 'alice' (24h, all topics):");
    println!("    {token}");
    println!();
    println!("Watch alice's messages arrive (any WebSocket client, e.g. websocat):");
    println!("  websocat 'ws://{addr}/ws?token={token}'");
    println!();
    println!("Send her a message:");
    println!(
        "  curl -s -X POST http://{addr}/v1/messages -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '{{\"to\":[\"alice\"],\"title\":\"Hello\",\"body\":\"Your first Herald message\"}}'"
    );
    println!();
    println!(
        "Then see where it went: curl -s http://{addr}/v1/messages/<id> -H 'Authorization: Bearer {key}'"
    );
    println!(
        "Offline users get email in {}/ (set HERALD_SMTP_URL for real mail).",
        config.outbox_dir().display()
    );
    println!();
}

/// Herald allocates with mimalloc: its per-thread heaps take no lock where glibc's shared
/// arena did (embedded ingest +40 %), and with the two settings below it keeps less memory
/// per idle session than glibc did (BENCHMARKS.md):
/// - no transparent huge pages: a 2 MiB page faulted in for a few sessions' small objects
///   made idle RSS jump between 4 and 6 KB per session;
/// - memory freed by a connection's handshake goes back to the OS after 10 ms instead of
///   mimalloc's default 1 s, which an idle process, making no further allocations, never
///   reaches.
///
/// An operator's own `MIMALLOC_ALLOW_THP` or `MIMALLOC_PURGE_DELAY` wins.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (include/mimalloc.h); the crate's
/// Rust constants predate version 3.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one allocator option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag on this process's memory map.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig => {
            let config = match load(cli.config.as_ref(), &[]) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let role = if config.nats_url.is_some() {
                Role::Dispatcher
            } else {
                Role::Serve
            };
            if let Err(e) = config.validate(role) {
                return fail(e);
            }
            match herald_dispatcher::check_config(&config) {
                Ok(summary) => {
                    println!(
                        "configuration is valid ({} engine)",
                        if config.nats_url.is_some() {
                            "cluster"
                        } else {
                            "embedded"
                        }
                    );
                    for line in summary.lines {
                        println!("  {line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Vapid => match herald_dispatcher::channels::push::webpush::new_key_pair() {
            Ok((private_pem, public_key)) => {
                // One file for HERALD_VAPID_PRIVATE_KEY_FILE: the text before the PEM block
                // is a comment key readers skip.
                println!("# Herald VAPID key pair. Public key (applicationServerKey):");
                println!("# {public_key}");
                print!("{private_pem}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Token { user, topics, ttl } => {
            let config = match load(cli.config.as_ref(), &[]) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if let Err(e) = config.validate(Role::Token) {
                return fail(e);
            }
            let ttl = match parse_ttl(&ttl) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let Some(secret) = &config.jwt_secret else {
                return fail("HERALD_JWT_SECRET is required to mint tokens");
            };
            let topics = (!topics.is_empty()).then_some(topics);
            match TokenMinter::hs256(secret.expose()).mint(&user, topics, ttl) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Serve {
            dev,
            listen,
            data_dir,
        } => {
            let mut flags = Vec::new();
            if let Some(l) = listen {
                flags.push((config::ENV_LISTEN, l));
            }
            if let Some(d) = data_dir {
                flags.push((config::ENV_DATA_DIR, d));
            }
            let mut config = match load(cli.config.as_ref(), &flags) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let mut generated = false;
            if dev {
                if config.api_keys.is_empty() {
                    config.api_keys = vec![Secret::new(format!("dev-{}", random_secret(12)))];
                    generated = true;
                }
                if config.jwt_secret.is_none() && config.jwt_public_key.is_none() {
                    config.jwt_secret = Some(Secret::new(random_secret(32)));
                    generated = true;
                }
                if !config.listen.ip().is_loopback() {
                    config.listen =
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.listen.port());
                }
            }
            if let Err(e) = config.validate(Role::Serve) {
                return fail(e);
            }
            if let Err(e) = herald_dispatcher::check_config(&config) {
                return fail(e);
            }
            let listen = config.listen;
            run_role(
                config,
                listen,
                move |config, addr| {
                    if dev {
                        dev_banner(config, addr, generated);
                    }
                },
                |config, listener, metrics, shutdown| {
                    Box::pin(herald::serve::run(config, listener, metrics, shutdown))
                },
            )
        }
        Command::Dispatcher { listen } => {
            let flags: Vec<_> = listen
                .map(|l| (config::ENV_API_LISTEN, l))
                .into_iter()
                .collect();
            let config = match load_for(cli.config.as_ref(), &flags, Role::Dispatcher) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if let Err(e) = herald_dispatcher::check_config(&config) {
                return fail(e);
            }
            let listen = config.api_listen;
            run_role(
                config,
                listen,
                |_, _| {},
                |config, listener, metrics, shutdown| {
                    Box::pin(herald::cluster::run_dispatcher(
                        config, listener, metrics, shutdown,
                    ))
                },
            )
        }
        Command::Gateway { listen } => {
            let flags: Vec<_> = listen
                .map(|l| (config::ENV_WS_LISTEN, l))
                .into_iter()
                .collect();
            let config = match load_for(cli.config.as_ref(), &flags, Role::Gateway) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let listen = config.ws_listen;
            run_role(
                config,
                listen,
                |_, _| {},
                |config, listener, metrics, shutdown| {
                    Box::pin(herald::cluster::run_gateway(
                        config, listener, metrics, shutdown,
                    ))
                },
            )
        }
    }
}

fn load_for(
    file: Option<&PathBuf>,
    flags: &[(&'static str, String)],
    role: Role,
) -> Result<Config, String> {
    let config = load(file, flags)?;
    config.validate(role).map_err(|e| e.to_string())?;
    Ok(config)
}

type RoleFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// Starts tracing and the runtime, binds `listen`, wires signals and runs the role.
fn run_role(
    config: Config,
    listen: SocketAddr,
    on_bound: impl FnOnce(&Config, SocketAddr),
    role: impl FnOnce(Config, TcpListener, Option<PrometheusHandle>, CancellationToken) -> RoleFuture,
) -> ExitCode {
    init_tracing(config.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let listener = match herald::http::bind(listen) {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot bind {listen}: {e}")),
        };
        let addr = listener.local_addr().unwrap_or(listen);
        let engine = if config.nats_url.is_some() {
            "nats"
        } else {
            "embedded"
        };
        tracing::info!(engine, data_dir = %config.data_dir.display(), "listening on http://{addr}");
        on_bound(&config, addr);
        let shutdown = CancellationToken::new();
        wire_signals(shutdown.clone());
        match role(config, listener, install_metrics(), shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "herald stopped");
                eprintln!("herald: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn the_purge_delay_option_is_where_tune_allocator_sets_it() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // Untouched in tests, so it holds mimalloc 3's default for purge_delay (1000 ms), a
        // default no other option has: a newer mimalloc that moves the option fails here.
        // SAFETY: reads one allocator option.
        let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            value, 1000,
            "mi_option_e changed: fix MI_OPTION_PURGE_DELAY"
        );
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
