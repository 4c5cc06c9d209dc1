//! The `herald` binary's command line: `--dev`, config errors (exit 64), `token`, `--config`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{Api, Client, Frame};

fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        cmd.env("PATH", p);
    }
    cmd
}

#[test]
fn missing_secrets_exit_64_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("HERALD_API_KEYS"), "{err}");

    let out = herald()
        .args(["serve"])
        .env("HERALD_API_KEYS", "k")
        .env("HERALD_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HERALD_JWT_SECRET"));

    let out = herald()
        .args(["serve"])
        .env("HERALD_API_KEYS", "k")
        .env("HERALD_JWT_SECRET", "s")
        .env("HERALD_ACK_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HERALD_ACK_TIMEOUT_MS"));
}

#[test]
fn token_mints_a_verifiable_client_token() {
    let out = herald()
        .args([
            "token",
            "--user",
            "alice",
            "--topics",
            "news,team.*",
            "--ttl",
            "2h",
        ])
        .env("HERALD_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = herald_common::auth::TokenVerifier::hs256("cli-secret")
        .verify(token.trim())
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(
        claims.topics,
        Some(vec!["news".to_string(), "team.*".to_string()])
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((claims.exp as i64 - (now as i64 + 7200)).abs() < 60);

    let out = herald()
        .args(["token", "--user", "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = herald()
        .args(["token", "--user", "bad user"])
        .env("HERALD_JWT_SECRET", "s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// Starts `herald serve --dev`, returns the child and its banner's (address, key, token).
fn start_dev(
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> (std::process::Child, String, String, String) {
    let mut cmd = herald();
    cmd.args(["serve", "--dev"])
        .env("HERALD_DATA_DIR", dir)
        .env("HERALD_LISTEN", "0.0.0.0:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut addr, mut key, mut token) = (String::new(), String::new(), String::new());
    let mut lines = stdout.lines().map_while(Result::ok);
    for line in lines.by_ref() {
        if let Some(rest) = line.split("dev mode on http://").nth(1) {
            addr = rest.trim().to_string();
        }
        if let Some(rest) = line.trim().strip_prefix("API key:") {
            key = rest.trim().to_string();
        }
        if line.trim().starts_with("curl -s -X POST") && key.is_empty() {
            key = line
                .split("Bearer ")
                .nth(1)
                .and_then(|s| s.split('\'').next())
                .unwrap_or("")
                .to_string();
        }
        if line.trim().starts_with("eyJ") {
            token = line.trim().to_string();
        }
        if line.contains("Then see where it went") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr, key, token)
}

#[tokio::test]
async fn dev_mode_prints_everything_needed_for_a_first_message() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, key, token) = start_dev(dir.path(), &[]);
    assert!(
        addr.starts_with("127.0.0.1:"),
        "--dev binds loopback only: {addr}"
    );
    assert!(
        !key.is_empty() && !token.is_empty(),
        "banner has a key ({key}) and a token ({token})"
    );

    // Exactly what the banner tells a new user to do.
    let mut alice = Client::connect(&format!("ws://{addr}/ws"), &token)
        .await
        .expect("the printed token works");
    let api = Api::new(&format!("http://{addr}"), &key);
    let id = api
        .send(json!({"to": ["alice"], "title": "Hello", "body": "Your first Herald message"}))
        .await;
    let m = alice.expect("message").await;
    assert_eq!(m["body"], "Your first Herald message");
    alice.ack(&id).await;
    assert_eq!(
        api.wait_final(&id, Duration::from_secs(20)).await["recipients"][0]["status"],
        "delivered"
    );
    alice.ws.close(None).await.ok();
    let _ = child.kill();
    let _ = child.wait();

    // Configured secrets are kept, not replaced.
    let (mut child, addr, _, token) = start_dev(
        dir.path(),
        &[
            ("HERALD_API_KEYS", "mine"),
            ("HERALD_JWT_SECRET", "my-secret"),
        ],
    );
    let claims = herald_common::auth::TokenVerifier::hs256("my-secret")
        .verify(&token)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    let api = Api::new(&format!("http://{addr}"), "mine");
    assert_eq!(api.get("/v1/users/alice/presence").await.status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_config_file_is_read_and_env_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!(
            "api_keys = [\"from-file\"]\njwt_secret = \"file-secret\"\ndata_dir = \"{}\"\nheartbeat_s = 7\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = herald()
        .args(["--config"])
        .arg(&file)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_HEARTBEAT_S", "9")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = String::new();
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split_whitespace().next().unwrap_or("").to_string();
            break;
        }
    }
    assert!(!addr.is_empty());
    let api = Api::new(&format!("http://{addr}"), "from-file");
    assert_eq!(api.get("/v1/users/x/presence").await.status, 200);
    let token = herald_common::auth::TokenMinter::hs256("file-secret")
        .mint("x", None, Duration::from_secs(60))
        .unwrap();
    let c = Client::connect(&format!("ws://{addr}/ws"), &token)
        .await
        .unwrap();
    assert_eq!(c.welcome["heartbeat_s"], 9, "environment beats the file");
    assert!(dir.path().join("data/herald.db").exists());
    let _ = child.kill();
    let _ = child.wait();
    let _ = Frame::Ended;
}

#[test]
fn check_config_lists_providers_without_secrets_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("tencent-key");
    std::fs::write(&secret, "tencent-super-secret\n").unwrap();
    let vapid = herald().arg("vapid").output().unwrap();
    assert!(vapid.status.success());
    let vapid_file = dir.path().join("vapid.pem");
    std::fs::write(&vapid_file, &vapid.stdout).unwrap();
    let public = String::from_utf8_lossy(&vapid.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("# "))
        .unwrap()
        .to_string();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!(
            r#"
smtp_url = "smtp://mailer:mail-password@smtp.example.com:587?tls=starttls"
vapid_private_key_file = "{}"
vapid_subject = "mailto:ops@example.com"
[[sms.providers]]
name = "cn"
kind = "tencent"
account = "AKID"
token_file = "{}"
app_id = "1400000000"
sign_name = "Herald"
template = "1"
[[caps]]
category = "marketing"
per_user = 3
window_s = 86400
"#,
            vapid_file.display(),
            secret.display()
        ),
    )
    .unwrap();
    let out = herald()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("HERALD_API_KEYS", "api-key-secret")
        .env("HERALD_JWT_SECRET", "jwt-secret-value")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for says in [
        "default channels: in_app, push, email, sms",
        "email: provider 'smtp' (smtp",
        "sms: provider 'cn' (tencent)",
        "push: provider 'webpush' (webpush)",
        &format!("VAPID public key {public}"),
        "at most 3 'marketing' per user per 86400 s",
    ] {
        assert!(text.contains(says), "says {says:?}:\n{text}");
    }
    for secret in [
        "mail-password",
        "tencent-super-secret",
        "api-key-secret",
        "jwt-secret-value",
    ] {
        assert!(!text.contains(secret), "a secret in the output:\n{text}");
    }
    // A broken key file or a bad entry: exit 64, one line naming it.
    std::fs::write(
        &vapid_file,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = herald()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("HERALD_API_KEYS", "k")
        .env("HERALD_JWT_SECRET", "s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vapid.pem") && err.contains("P-256"), "{err}");
    let out = herald()
        .args(["check-config"])
        .env("HERALD_API_KEYS", "k")
        .env("HERALD_JWT_SECRET", "s")
        .env(
            "HERALD_FCM_CREDENTIALS_FILE",
            dir.path().join("missing.json"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}
