//! The mock push, chat and SMS providers (tests/mocks/providers.py): one real HTTP server in
//! the providers' API shapes that verifies signatures, tokens and encryption as the real
//! services would. This harness starts it and drives its control API.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Mock {
    child: Child,
    pub base: String,
    http: reqwest::Client,
}

impl Mock {
    pub fn start() -> Mock {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut child = Command::new(super::python())
            .arg(super::root().join("tests/mocks/providers.py"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the provider mock");
        let stdout = child.stdout.take().expect("stdout");
        // Owned from here on: a panic below still kills the child.
        let mut mock = Mock {
            child,
            base: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the mock says where it listens");
        mock.base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the mock: {line}"))
            .to_string();
        mock
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("mock control");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "mock {path} refused {body}: {text}");
    }

    /// Merges provider configuration (credentials, subscriptions, robots).
    pub async fn config(&self, config: Value) {
        self.post("/_config", config).await;
    }

    /// Queues answers for a route (optionally only for one target).
    pub async fn script(&self, route: &str, target: Option<&str>, responses: Value) {
        self.post(
            "/_script",
            json!({"route": route, "match": target, "responses": responses}),
        )
        .await;
    }

    /// Every request the route saw, oldest first.
    pub async fn requests(&self, route: &str) -> Vec<Value> {
        let r = self
            .http
            .get(self.url(&format!("/_requests?route={route}")))
            .send()
            .await
            .expect("mock requests");
        r.json::<Vec<Value>>().await.expect("requests JSON")
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(self.url("/_stats"))
            .send()
            .await
            .expect("mock stats")
            .json()
            .await
            .expect("stats JSON")
    }

    /// Waits until the route saw `n` requests; returns them.
    pub async fn wait_requests(&self, route: &str, n: usize, timeout: Duration) -> Vec<Value> {
        super::eventually(timeout, &format!("{n} requests on {route}"), || async {
            let r = self.requests(route).await;
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
