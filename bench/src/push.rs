//! `herald-bench push`: app-push throughput. Herald (each engine) delivers messages with
//! `channels: ["push"]` to users with one FCM or APNs device each, through local provider
//! mocks in their own process (`herald-bench push-mock`: FCM's token and send endpoints over
//! HTTP/1.1, APNs over HTTP/2), which count sends, token mints and connections. In the same
//! run, the same sends through a naive client — one request at a time, a new connection and
//! a new token for each — give the baseline the report compares CPU per delivery with.
//!
//! Locally there is no TLS: each connection the mock counts stands for a TLS handshake
//! against the real service.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::procstat::cpu_seconds;

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Users (one device each: half FCM, half APNs).
    #[arg(long, default_value_t = 20_000)]
    pub devices: usize,
    /// Rounds over every user: pushes = devices × rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Recipients per message.
    #[arg(long, default_value_t = 1000)]
    pub per_message: usize,
    /// Sends the naive client makes (per platform).
    #[arg(long, default_value_t = 2000)]
    pub naive: usize,
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
struct Counts {
    fcm_sends: u64,
    fcm_mints: u64,
    apns_sends: u64,
    apns_tokens: u64,
    connections: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct EngineRun {
    pub engine: String,
    pub pushes: u64,
    pub secs: f64,
    pub per_s: f64,
    pub herald_cpu_s: f64,
    pub per_cpu_s: f64,
    pub fcm_mints: u64,
    pub apns_tokens: u64,
    pub connections: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct NaiveRun {
    pub pushes: u64,
    pub secs: f64,
    pub per_s: f64,
    pub client_cpu_s: f64,
    pub per_cpu_s: f64,
    pub fcm_mints: u64,
    pub apns_tokens: u64,
    pub connections: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct PushResults {
    pub machine: String,
    pub date: String,
    pub devices: usize,
    pub engines: Vec<EngineRun>,
    pub naive: Option<NaiveRun>,
}

// ---- the mock (its own process) -------------------------------------------------------

#[derive(Default)]
struct MockState {
    fcm_sends: AtomicU64,
    fcm_mints: AtomicU64,
    apns_sends: AtomicU64,
    connections: AtomicU64,
    /// Access tokens handed out, and APNs provider tokens seen.
    minted: Mutex<HashSet<String>>,
    apns_tokens: Mutex<HashSet<String>>,
}

fn answer(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

async fn mock_handle(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_once(' ').map_or("", |x| x.1).to_string())
        .unwrap_or_default();
    let body = req.into_body().collect().await?.to_bytes();
    Ok(match path.as_str() {
        "/token" => {
            let n = state.fcm_mints.fetch_add(1, Ordering::Relaxed);
            let token = format!("ya29.bench-{n}");
            if let Ok(mut m) = state.minted.lock() {
                m.insert(token.clone());
            }
            answer(
                200,
                json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
                    .to_string(),
            )
        }
        "/_counts" => {
            let counts = Counts {
                fcm_sends: state.fcm_sends.load(Ordering::Relaxed),
                fcm_mints: state.fcm_mints.load(Ordering::Relaxed),
                apns_sends: state.apns_sends.load(Ordering::Relaxed),
                apns_tokens: state.apns_tokens.lock().map_or(0, |t| t.len() as u64),
                connections: state.connections.load(Ordering::Relaxed),
            };
            answer(200, serde_json::to_string(&counts).unwrap_or_default())
        }
        p if p.starts_with("/v1/projects/") => {
            // FCM checks the access token and the message.
            let known = state.minted.lock().is_ok_and(|m| m.contains(&bearer));
            let has_token = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["message"]["token"].as_str().map(str::to_string))
                .is_some();
            if !known || !has_token {
                answer(
                    401,
                    json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}).to_string(),
                )
            } else {
                let n = state.fcm_sends.fetch_add(1, Ordering::Relaxed);
                answer(
                    200,
                    json!({"name": format!("projects/p/messages/{n}")}).to_string(),
                )
            }
        }
        p if p.starts_with("/3/device/") => {
            if bearer.is_empty() {
                answer(403, json!({"reason": "MissingProviderToken"}).to_string())
            } else {
                if let Ok(mut t) = state.apns_tokens.lock()
                    && t.len() < 100_000
                {
                    t.insert(bearer);
                }
                state.apns_sends.fetch_add(1, Ordering::Relaxed);
                answer(200, String::new())
            }
        }
        _ => answer(404, "{}".into()),
    })
}

/// `herald-bench push-mock --port P`: FCM (HTTP/1.1) and APNs (HTTP/2 prior knowledge) on
/// one port; prints `listening` when ready.
pub async fn run_mock(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let state = Arc::new(MockState::default());
    println!("listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| mock_handle(Arc::clone(&state), req));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

// ---- the run --------------------------------------------------------------------------

struct Mock {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Mock {
    async fn start() -> anyhow::Result<Mock> {
        let port = crate::controller::free_port();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["push-mock", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        crate::controller::wait_port(port).await?;
        let _ = &mut child;
        Ok(Mock {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        })
    }

    async fn counts(&self) -> anyhow::Result<Counts> {
        Ok(self
            .http
            .get(format!("{}/_counts", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// The credential files Herald's providers read.
struct Keys {
    fcm_file: PathBuf,
    apns_file: PathBuf,
    /// The service account's RSA key, for the naive client's token requests.
    rsa_pem: String,
    apns_key: p256::SecretKey,
}

fn write_keys(dir: &Path, mock: &str) -> anyhow::Result<Keys> {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    std::fs::create_dir_all(dir)?;
    let fixture = crate::root().join("tests/fixtures/fcm-service-account.json");
    let mut account: Value = serde_json::from_str(&std::fs::read_to_string(fixture)?)?;
    account["token_uri"] = json!(format!("{mock}/token"));
    let rsa_pem = account["private_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let fcm_file = dir.join("fcm.json");
    std::fs::write(&fcm_file, account.to_string())?;
    let apns_key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let apns_file = dir.join("AuthKey.p8");
    std::fs::write(
        &apns_file,
        apns_key.to_pkcs8_pem(LineEnding::LF)?.as_bytes(),
    )?;
    Ok(Keys {
        fcm_file,
        apns_file,
        rsa_pem,
        apns_key,
    })
}

fn device(i: usize) -> Value {
    if i.is_multiple_of(2) {
        json!({"platform": "fcm", "token": format!("fcm-token-{i:08}")})
    } else {
        json!({"platform": "apns", "token": format!("{i:064x}"), "topic": "com.example.bench"})
    }
}

async fn run_engine(
    opts: &Options,
    engine: &str,
    keys: &Keys,
    mock: &Mock,
) -> anyhow::Result<EngineRun> {
    let dir = crate::controller::scratch(&format!("push-{engine}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut nats: Option<(Child, String)> = None;
    let mut env: Vec<(&str, String)> = vec![
        (
            "HERALD_FCM_CREDENTIALS_FILE",
            keys.fcm_file.display().to_string(),
        ),
        ("HERALD_FCM_URL", mock.base.clone()),
        ("HERALD_APNS_KEY_FILE", keys.apns_file.display().to_string()),
        ("HERALD_APNS_KEY_ID", "BENCHKEY01".into()),
        ("HERALD_APNS_TEAM_ID", "BENCHTEAM1".into()),
        ("HERALD_APNS_URL", mock.base.clone()),
        ("HERALD_MAX_DEVICES_PER_USER", "4".into()),
    ];
    if engine == "cluster" {
        let started = crate::controller::start_nats_js(&dir.join("nats")).await?;
        env.push(("HERALD_NATS_URL", started.1.clone()));
        nats = Some(started);
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (herald, addr) = crate::controller::start_herald_in(&dir, &opts.herald_bin, &pairs).await?;
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    crate::controller::progress(&format!(
        "push/{engine}: registering {} devices",
        opts.devices
    ));
    let puts = futures::stream::iter((0..opts.devices).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.put(format!("{base}/v1/users/u{i}/devices/d"))
                .bearer_auth(crate::controller::API_KEY)
                .json(&device(i))
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(())
        }
    }));
    use futures::StreamExt;
    let registered: Vec<anyhow::Result<()>> = puts.buffer_unordered(64).collect().await;
    registered
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let before = mock.counts().await?;
    let pushes = (opts.devices * opts.rounds) as u64;
    crate::controller::progress(&format!("push/{engine}: {pushes} pushes"));
    let herald_pid = herald.id().unwrap_or(0);
    let cpu0 = cpu_seconds(herald_pid);
    let started = Instant::now();
    let messages = (0..opts.rounds).flat_map(|_| {
        (0..opts.devices)
            .collect::<Vec<_>>()
            .chunks(opts.per_message)
            .map(|c| c.to_vec())
            .collect::<Vec<_>>()
    });
    let sends = futures::stream::iter(messages.map(|chunk| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let to: Vec<String> = chunk.iter().map(|i| format!("u{i}")).collect();
            let body = json!({"to": to, "title": "Your order shipped", "body": "Track it", "data": {"order": 42}, "channels": ["push"]});
            let r = http
                .post(format!("{base}/v1/messages"))
                .bearer_auth(crate::controller::API_KEY)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 202, "send answered {}", r.status());
            anyhow::Ok(())
        }
    }));
    let sent: Vec<anyhow::Result<()>> = sends.buffer_unordered(8).collect().await;
    sent.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let after = loop {
        let c = mock.counts().await?;
        if c.fcm_sends + c.apns_sends - before.fcm_sends - before.apns_sends >= pushes
            || Instant::now() > deadline
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let herald_cpu_s = cpu_seconds(herald_pid) - cpu0;
    let delivered = after.fcm_sends + after.apns_sends - before.fcm_sends - before.apns_sends;
    drop(herald);
    drop(nats);
    Ok(EngineRun {
        engine: engine.to_string(),
        pushes: delivered,
        secs,
        per_s: delivered as f64 / secs,
        herald_cpu_s,
        per_cpu_s: delivered as f64 / herald_cpu_s.max(0.001),
        fcm_mints: after.fcm_mints - before.fcm_mints,
        apns_tokens: after.apns_tokens - before.apns_tokens,
        connections: after.connections - before.connections,
    })
}

/// The naive client: one request at a time, a new connection and a new token for each.
async fn run_naive(opts: &Options, keys: &Keys, mock: &Mock) -> anyhow::Result<NaiveRun> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let before = mock.counts().await?;
    let me = std::process::id();
    let cpu0 = cpu_seconds(me);
    let started = Instant::now();
    let rsa = EncodingKey::from_rsa_pem(keys.rsa_pem.as_bytes())?;
    let es = {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        EncodingKey::from_ec_pem(keys.apns_key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    for i in 0..opts.naive {
        // FCM: mint, then send, each on a fresh connection.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let assertion = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"iss": "bench", "scope": "fcm", "aud": format!("{}/token", mock.base), "iat": now(), "exp": now() + 3600}),
            &rsa,
        )?;
        let token: Value = client
            .post(format!("{}/token", mock.base))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
            .send()
            .await?
            .json()
            .await?;
        let access = token["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let r = client
            .post(format!("{}/v1/projects/p/messages:send", mock.base))
            .bearer_auth(access)
            .json(&json!({"message": {"token": format!("fcm-token-{i}"), "notification": {"title": "Your order shipped", "body": "Track it"}, "data": {"order": "42"}}}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "naive FCM send: {}", r.status());
        // APNs: a new provider token and a new HTTP/2 connection.
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .pool_max_idle_per_host(0)
            .build()?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("BENCHKEY01".into());
        let jwt = jsonwebtoken::encode(&header, &json!({"iss": "BENCHTEAM1", "iat": now()}), &es)?;
        let r = h2
            .post(format!("{}/3/device/{:064x}", mock.base, i))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", "com.example.bench")
            .header("apns-push-type", "alert")
            .json(&json!({"aps": {"alert": {"title": "Your order shipped", "body": "Track it"}}, "order": 42}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "naive APNs send: {}", r.status());
    }
    let secs = started.elapsed().as_secs_f64();
    let client_cpu_s = cpu_seconds(me) - cpu0;
    let after = mock.counts().await?;
    let pushes = after.fcm_sends + after.apns_sends - before.fcm_sends - before.apns_sends;
    Ok(NaiveRun {
        pushes,
        secs,
        per_s: pushes as f64 / secs,
        client_cpu_s,
        per_cpu_s: pushes as f64 / client_cpu_s.max(0.001),
        fcm_mints: after.fcm_mints - before.fcm_mints,
        apns_tokens: after.apns_tokens - before.apns_tokens,
        connections: after.connections - before.connections,
    })
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mock = Mock::start().await?;
    let keys = write_keys(&crate::controller::scratch("push-keys"), &mock.base)?;
    let engines = crate::controller::engines_of(&opts.engines);
    let mut results = PushResults {
        machine: crate::controller::machine(),
        date: herald_common::time::rfc3339(herald_common::time::now_ms()),
        devices: opts.devices,
        ..Default::default()
    };
    for engine in engines {
        let run = run_engine(&opts, engine, &keys, &mock).await?;
        crate::controller::progress(&format!("push/{engine}: {run:?}"));
        results.engines.push(run);
    }
    crate::controller::progress("push: the naive client");
    let naive = run_naive(&opts, &keys, &mock).await?;
    crate::controller::progress(&format!("push/naive: {naive:?}"));
    results.naive = Some(naive);
    let mock_cpu = cpu_seconds(mock.pid());
    let md = report(&results, mock_cpu);
    crate::controller::write_results(&opts.out, "push", &results, &md)
}

fn report(r: &PushResults, mock_cpu: f64) -> String {
    let mut md = format!(
        "## Push throughput ({} devices, half FCM, half APNs; {})\n\n{}\n\n| run | pushes | s | pushes/s | CPU-s | pushes per CPU-s | token mints (FCM) | provider tokens (APNs) | connections opened |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        r.devices, r.date, r.machine
    );
    for e in &r.engines {
        md += &format!(
            "| Herald, {} engine | {} | {:.1} | {:.0} | {:.1} (herald) | {:.0} | {} | {} | {} |\n",
            e.engine,
            e.pushes,
            e.secs,
            e.per_s,
            e.herald_cpu_s,
            e.per_cpu_s,
            e.fcm_mints,
            e.apns_tokens,
            e.connections
        );
    }
    if let Some(n) = &r.naive {
        md += &format!(
            "| naive client (one at a time, new connection and token each) | {} | {:.1} | {:.0} | {:.1} (client) | {:.0} | {} | {} | {} |\n",
            n.pushes,
            n.secs,
            n.per_s,
            n.client_cpu_s,
            n.per_cpu_s,
            n.fcm_mints,
            n.apns_tokens,
            n.connections
        );
        for e in &r.engines {
            md += &format!(
                "\nHerald ({}) spends {:.1}× less CPU per push than the naive client, with everything a push costs it (accept, store, job, device lookup, record).",
                e.engine,
                e.per_cpu_s / n.per_cpu_s.max(0.001)
            );
        }
    }
    md += &format!("\n\nThe mock process used {mock_cpu:.1} CPU-s in all.\n");
    md
}
