//! The local cluster script (`deploy/local-cluster.sh`): nats-server, 2 dispatchers,
//! 3 gateways and HAProxy in front, driven through the one URL a client would use.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Api, Client};

struct LocalCluster {
    dir: tempfile::TempDir,
}

impl LocalCluster {
    fn script(&self, action: &str, port: u16) -> std::process::Output {
        Command::new(support::root().join("deploy/local-cluster.sh"))
            .arg(action)
            .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
            .env("CLUSTER_DIR", self.dir.path())
            .env("HERALD_LB_PORT", port.to_string())
            .env("HERALD_API_KEYS", support::API_KEY)
            .env("HERALD_JWT_SECRET", support::JWT_SECRET)
            .output()
            .expect("run deploy/local-cluster.sh")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.script("down", 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_serves_clients_through_haproxy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = LocalCluster {
        dir: tempfile::tempdir().unwrap(),
    };
    let out = cluster.script("up", port);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "up failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{port}")),
        "{stdout}"
    );

    let base = format!("http://127.0.0.1:{port}");
    let ws = format!("ws://127.0.0.1:{port}/ws");
    let api = Api::new(&base, support::API_KEY);
    let token = |user: &str| {
        herald_common::auth::TokenMinter::hs256(support::JWT_SECRET)
            .mint(user, Some(vec!["news".into()]), Duration::from_secs(600))
            .unwrap()
    };
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(&ws, &token(&format!("u{i}")))
            .await
            .expect("connect through haproxy");
        c.send(json!({"type": "subscribe", "topic": "news"})).await;
        c.expect("subscribed").await;
        clients.push(c);
    }

    // HAProxy spread the sessions over the three gateways.
    let cfg = std::fs::read_to_string(cluster.dir.path().join("haproxy.cfg")).unwrap();
    let gateways: Vec<String> = cfg
        .lines()
        .filter(|l| l.trim_start().starts_with("server g"))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
        .collect();
    assert_eq!(gateways.len(), 3);
    for g in &gateways {
        let metrics = api
            .http
            .get(format!("http://{g}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("herald_gateway_sessions 2"),
            "gateway {g}:\n{metrics}"
        );
    }

    // Personal messages through the API behind the same URL reach each client.
    for (i, c) in clients.iter_mut().enumerate() {
        let id = api.send(json!({"to": [format!("u{i}")], "title": format!("hi u{i}"), "channels": ["in_app"]})).await;
        let m = c.expect("message").await;
        assert_eq!(m["id"], id.as_str());
        c.ack(&id).await;
        assert_eq!(
            api.wait_final(&id, Duration::from_secs(20)).await["status"],
            "delivered"
        );
    }
    // A broadcast reaches everyone, whichever gateway holds them.
    let t = api
        .post("/v1/topics/news/messages", json!({"title": "all"}))
        .await;
    for c in clients.iter_mut() {
        assert_eq!(c.expect("message").await["id"], t.body["id"]);
    }
    assert_eq!(
        api.get("/v1/users/u3/presence").await.body,
        json!({"online": true, "sessions": 1})
    );
}

/// The deployment files that cannot run here (no Docker engine, no Kubernetes) are at least
/// well-formed: every YAML document parses and has the fields its kind needs, and HAProxy
/// accepts the compose load-balancer config.
#[test]
fn deployment_files_are_well_formed() {
    let check = r#"
import sys, yaml, pathlib
root = pathlib.Path(sys.argv[1])
problems = []
for path in sorted((root / "deploy/kubernetes").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                problems.append(f"{path.name}: a document lacks {field}")
        if "name" not in doc.get("metadata", {}):
            problems.append(f"{path.name}: {doc.get('kind')} has no metadata.name")
        if doc.get("kind") in ("Deployment", "StatefulSet"):
            spec = doc["spec"]
            labels = spec["template"]["metadata"]["labels"]
            if spec["selector"]["matchLabels"].items() - labels.items():
                problems.append(f"{path.name}: {doc['metadata']['name']} selector does not match its pods")
compose = yaml.safe_load((root / "deploy/compose/compose.yaml").read_text())
for name in ("nats-1", "nats-2", "nats-3", "dispatcher", "gateway", "haproxy"):
    if name not in compose["services"]:
        problems.append(f"compose.yaml: no service {name}")
gw = next(d for d in yaml.safe_load_all((root / "deploy/kubernetes/herald.yaml").read_text()) if d and d["metadata"]["name"] == "herald-gateway")
if "preStop" not in gw["spec"]["template"]["spec"]["containers"][0].get("lifecycle", {}):
    problems.append("gateway has no preStop drain")
print("\n".join(problems))
sys.exit(1 if problems else 0)
"#;
    let out = Command::new(support::python())
        .arg("-c")
        .arg(check)
        .arg(support::root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let haproxy = Command::new(support::root().join("deploy/fetch-haproxy.sh"))
        .output()
        .unwrap();
    assert!(
        haproxy.status.success(),
        "{}",
        String::from_utf8_lossy(&haproxy.stderr)
    );
    let bin = String::from_utf8(haproxy.stdout).unwrap();
    let out = Command::new(bin.trim())
        .args(["-c", "-f"])
        .arg(support::root().join("deploy/compose/haproxy.cfg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
