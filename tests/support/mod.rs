//! Test harness: real `herald` processes, a real SMTP server (aiosmtpd), real WebSocket
//! clients. Each harness type owns its process and kills it on drop. Nothing waits by
//! sleeping: helpers poll for a condition until a deadline.
#![allow(dead_code)]

pub mod apns;
pub mod browser;
pub mod mail;
pub mod nats;
pub mod providers;
pub mod rawhttp;
pub mod resilient;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)]
pub use mail::Smtp;
#[allow(unused_imports)]
pub use ws::{Client, Frame};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's python (made by `scripts/test`).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("HERALD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "no test venv at {}: run ./scripts/test (it creates it)",
        p.display()
    );
    p
}

/// A binary installed into the test venv (e.g. `nats-server`).
pub fn venv_bin(name: &str) -> PathBuf {
    python()
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which engine a test runs on: the same test, unchanged, runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `herald serve` alone: in-process bus + SQLite.
    Embedded,
    /// `herald serve` with `HERALD_NATS_URL` pointing at a real nats-server.
    Nats,
}

/// Runs each listed `async fn(Engine)` as two tests, `embedded::name` and `nats::name`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Engine::Embedded).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::support::Engine::Nats).await
                }
            )*
        }
    };
}

pub const API_KEY: &str = "test-api-key";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";

/// A `herald serve` process on port 0 with its own data directory.
pub struct Herald {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// The nats-server this herald uses, when it runs on the cluster engine.
    pub nats: Option<nats::Nats>,
    role: &'static str,
}

#[must_use]
pub struct HeraldBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    engine: Engine,
    role: &'static str,
    nats_url: Option<String>,
}

impl HeraldBuilder {
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.into()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Runs `herald dispatcher` or `herald gateway` against an existing NATS.
    pub fn role(mut self, role: &'static str, nats_url: &str) -> Self {
        self.role = role;
        self.nats_url = Some(nats_url.to_string());
        self = self.env("HERALD_NATS_URL", nats_url);
        match role {
            "dispatcher" => self.env("HERALD_API_LISTEN", "127.0.0.1:0"),
            "gateway" => self.env("HERALD_WS_LISTEN", "127.0.0.1:0"),
            _ => self,
        }
    }

    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn start(mut self) -> Herald {
        let nats =
            (self.engine == Engine::Nats && self.nats_url.is_none()).then(nats::Nats::single);
        if let Some(n) = &nats {
            self = self.env("HERALD_NATS_URL", n.url());
        }
        let (tmp, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut h = Herald {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir,
            _tmp: tmp,
            env: self.env,
            args: self.args,
            log: Arc::new(Mutex::new(Vec::new())),
            nats,
            role: self.role,
        };
        h.spawn();
        h
    }
}

impl Herald {
    pub fn builder() -> HeraldBuilder {
        HeraldBuilder {
            env: vec![
                ("HERALD_API_KEYS".into(), API_KEY.into()),
                ("HERALD_JWT_SECRET".into(), JWT_SECRET.into()),
                ("HERALD_LISTEN".into(), "127.0.0.1:0".into()),
                ("HERALD_RETRY_BASE_MS".into(), "100".into()),
                ("HERALD_RETRY_CAP_MS".into(), "1000".into()),
                ("HERALD_DRAIN_S".into(), "1".into()),
                (
                    "HERALD_LOG".into(),
                    "info,herald=debug,herald_dispatcher=debug".into(),
                ),
            ],
            args: Vec::new(),
            data_dir: None,
            engine: Engine::Embedded,
            role: "serve",
            nats_url: None,
        }
    }

    pub fn start() -> Herald {
        Self::builder().start()
    }

    /// A builder for `engine`.
    pub fn on(engine: Engine) -> HeraldBuilder {
        Self::builder().engine(engine)
    }

    fn spawn(&mut self) {
        // HERALD_BIN runs another build (e.g. release, for long chaos runs).
        let bin = std::env::var("HERALD_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_string());
        let mut cmd = Command::new(bin);
        cmd.arg(self.role).args(&self.args);
        cmd.env_clear();
        for k in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("HERALD_DATA_DIR", &self.data_dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn herald");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                        .collect();
                    let _ = tx.send(addr);
                }
                if std::env::var("HERALD_TEST_ECHO").is_ok() {
                    eprintln!("[herald] {line}");
                }
                if let Ok(mut l) = log.lock() {
                    l.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "herald did not start (exit: {status:?}); log:\n{}",
                    self.log_text()
                );
            }
        };
        self.addr = addr.parse().expect("bound address");
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base(), API_KEY)
    }

    /// Waits until this process answers `/readyz`; one that does not fails the test with
    /// its log (a dispatcher that never got ready once failed CI with nothing to go on).
    pub async fn wait_ready(&self, timeout: Duration) {
        let api = self.api();
        let deadline = Instant::now() + timeout;
        while !api.is_ready().await {
            assert!(
                Instant::now() < deadline,
                "{} never got ready within {timeout:?}; its log:\n{}",
                self.base(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// A client token for `user`, valid for `ttl`.
    pub fn token(&self, user: &str, topics: &[&str], ttl: Duration) -> String {
        let topics = (!topics.is_empty()).then(|| topics.iter().map(|t| t.to_string()).collect());
        herald_common::auth::TokenMinter::hs256(JWT_SECRET)
            .mint(user, topics, ttl)
            .expect("mint")
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(
            &self.ws_url(),
            &self.token(user, &[">"], Duration::from_secs(3600)),
        )
        .await
        .expect("connect")
    }

    /// `kill -9`: no chance to flush or drain.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM, then waits for the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A client of the HTTP API with the test API key.
#[derive(Clone)]
pub struct Api {
    base: String,
    key: String,
    pub http: reqwest::Client,
}

/// An HTTP answer: status, headers and JSON body (`Value::Null` if not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            base: base.to_string(),
            key: key.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether `/readyz` says 200 now (a process still setting up its engine may not even
    /// answer yet).
    pub async fn is_ready(&self) -> bool {
        let r = self
            .http
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// Waits until `/readyz` says 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(timeout, "/readyz", || async {
            self.is_ready().await.then_some(())
        })
        .await
    }

    pub async fn answer(rb: reqwest::RequestBuilder) -> Answer {
        let response = rb.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        Self::answer(rb).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// `POST /v1/messages`, expecting 202; returns the id.
    pub async fn send(&self, body: Value) -> String {
        let a = self.post("/v1/messages", body.clone()).await;
        assert_eq!(a.status, 202, "send {body} answered {a:?}");
        a.body["id"].as_str().expect("id").to_string()
    }

    pub async fn put_user(&self, id: &str, profile: Value) {
        let a = self
            .request(
                reqwest::Method::PUT,
                &format!("/v1/users/{id}"),
                Some(profile),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
    }

    pub async fn message(&self, id: &str) -> Value {
        let a = self.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(a.status, 200, "{a:?}");
        a.body
    }

    /// Waits until the message's status is no longer `pending`. A `503` (the store is
    /// electing a leader after a node loss, say) is retried, as its `Retry-After` asks.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        let what = format!("message {id} to reach a final status");
        eventually(timeout, &what, || async {
            let a = self.get(&format!("/v1/messages/{id}")).await;
            if a.status == 503 {
                return None;
            }
            assert_eq!(a.status, 200, "{a:?}");
            (a.body["status"] != "pending").then_some(a.body)
        })
        .await
    }
}

/// `(channel, outcome)` of each attempt of recipient `i`.
pub fn attempts(message: &Value, i: usize) -> Vec<(String, String)> {
    message["recipients"][i]["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["channel"].as_str().unwrap_or("").to_string(),
                        x["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Runs a command to its end, or kills it after `timeout` (a hung child must not hang the
/// suite): its output, and whether it finished in time.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (std::process::Output, bool) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => (out.expect("wait"), true),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let out = rx.recv().expect("killed child").expect("wait");
            (out, false)
        }
    }
}
