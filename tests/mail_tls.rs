//! Mail as real relays and receivers demand it: an SMTP server (aiosmtpd) that requires
//! STARTTLS with a certificate from a test CA (trustme) and AUTH over TLS; mail signed
//! with DKIM and checked by an independent verifier (dkimpy, its DNS answered by the test).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Engine, Herald, attempts};

const WAIT: Duration = Duration::from_secs(30);

/// The STARTTLS-only relay of `tests/mocks/smtp_tls.py`.
struct TlsRelay {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRelay {
    fn start() -> TlsRelay {
        TlsRelay::spawn(false)
    }

    /// TLS from the first byte (`smtps://`, port 465 style).
    fn start_smtps() -> TlsRelay {
        TlsRelay::spawn(true)
    }

    fn spawn(smtps: bool) -> TlsRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(support::python())
            .arg(support::root().join("tests/mocks/smtp_tls.py"))
            .args([
                "--port",
                &port.to_string(),
                "--user",
                "herald",
                "--password",
                "s3cret",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(smtps.then_some("--smtps"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp_tls.py (run ./scripts/test to make the venv)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("ready").exists() {
            assert!(Instant::now() < deadline, "smtp_tls.py did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsRelay { child, port, dir }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "smtp://{user}:{password}@127.0.0.1:{}?tls=starttls",
            self.port
        )
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn mails(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dkim_tool(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(support::python())
        .arg(support::root().join("tests/mocks/dkim_tool.py"))
        .args(args)
        .output()
        .expect("run dkim_tool.py");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let (ok, out) = dkim_tool(&["keygen".as_ref(), dir.as_os_str()]);
    assert!(ok, "keygen: {out}");
    (dir.join("dkim.pem"), dir.join("dns.txt"))
}

fn header_of<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn starttls_with_the_ca_delivers_signed_mail(engine: Engine) {
    let relay = TlsRelay::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, dns) = keygen(keys.path());
    let h = Herald::on(engine)
        .env("HERALD_SMTP_URL", relay.url("herald", "s3cret"))
        .env("HERALD_SMTP_FROM", "Herald <noreply@herald.test>")
        .env("HERALD_TLS_CA_FILE", relay.ca().display().to_string())
        .env("HERALD_DKIM_KEY_FILE", key.display().to_string())
        .env("HERALD_DKIM_SELECTOR", "mail2026")
        .env("HERALD_PUBLIC_URL", "https://herald.example.com")
        .start();
    let api = h.api();
    api.put_user("bob", json!({"email": "bob@example.com"}))
        .await;
    let id = api
        .send(
            json!({"to": ["bob"], "title": "Your invoice", "body": "Invoice 42 is ready",
                     "category": "billing", "channels": ["email"],
                     "email": {"html": "<p>Invoice <b>42</b> is ready</p>"}}),
        )
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    let detail = m["recipients"][0]["attempts"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("250"), "the relay's answer: {detail}");

    // Everything happened inside TLS, after AUTH.
    let log = relay.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("AUTH") && l.ends_with("ok=True")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.starts_with("MAIL") || l.starts_with("DATA"))
            .all(|l| l.contains("tls=True")),
        "{log:?}"
    );
    let mails = relay.mails();
    assert_eq!(mails.len(), 1, "{log:?}");
    let raw = std::fs::read_to_string(&mails[0]).expect("the mail");
    assert_eq!(header_of(&raw, "Subject"), Some("Your invoice"));
    assert!(
        header_of(&raw, "Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")),
        "{raw}"
    );
    let signature = header_of(&raw, "DKIM-Signature").expect("a DKIM-Signature header");
    assert!(signature.contains("d=herald.test"), "{signature}");
    assert!(signature.contains("s=mail2026"), "{signature}");

    // An independent verifier, asking "DNS" for the selector's record.
    let (ok, out) = dkim_tool(&["verify".as_ref(), mails[0].as_os_str(), dns.as_os_str()]);
    assert!(ok, "dkimpy: {out}");
    assert!(out.contains("mail2026._domainkey.herald.test."), "{out}");

    // A mail changed on the way no longer verifies: the check can fail.
    let tampered = keys.path().join("tampered.eml");
    std::fs::write(&tampered, raw.replace("Your invoice", "Your 1nvoice")).expect("write");
    let (ok, out) = dkim_tool(&["verify".as_ref(), tampered.as_os_str(), dns.as_os_str()]);
    assert!(!ok, "a tampered subject verified: {out}");
}

on_both_engines!(starttls_with_the_ca_delivers_signed_mail);

/// Without the test CA the relay's certificate is not trusted: nothing goes out, in
/// cleartext or otherwise, and the attempt says why.
#[tokio::test]
async fn an_untrusted_certificate_sends_nothing_and_says_why() {
    let relay = TlsRelay::start();
    let h = Herald::on(Engine::Embedded)
        .env("HERALD_SMTP_URL", relay.url("herald", "s3cret"))
        .env("HERALD_RETRY_ATTEMPTS", "2")
        .env("HERALD_RETRY_BASE_MS", "100")
        .start();
    let api = h.api();
    api.put_user("bob", json!({"email": "bob@example.com"}))
        .await;
    let id = api
        .send(json!({"to": ["bob"], "title": "Hi", "channels": ["email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "failed", "{m}");
    let tried = attempts(&m, 0);
    assert!(
        tried
            .iter()
            .all(|(c, o)| c == "email" && o == "transient_error"),
        "{tried:?}"
    );
    let detail = m["recipients"][0]["attempts"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(detail.contains("certificate"), "says why: {detail}");
    assert!(relay.mails().is_empty());
    assert!(
        !relay
            .log()
            .iter()
            .any(|l| l.starts_with("MAIL") || l.starts_with("AUTH")),
        "{:?}",
        relay.log()
    );
}

/// `smtps://`: TLS from the first byte, verified with the CA file.
#[tokio::test]
async fn smtps_with_the_ca_delivers() {
    let relay = TlsRelay::start_smtps();
    let h = Herald::on(Engine::Embedded)
        .env(
            "HERALD_SMTP_URL",
            format!("smtps://herald:s3cret@127.0.0.1:{}", relay.port),
        )
        .env("HERALD_TLS_CA_FILE", relay.ca().display().to_string())
        .start();
    let api = h.api();
    api.put_user("bob", json!({"email": "bob@example.com"}))
        .await;
    let id = api
        .send(json!({"to": ["bob"], "title": "Over TLS", "channels": ["email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    let mails = relay.mails();
    assert_eq!(mails.len(), 1);
    let raw = std::fs::read_to_string(&mails[0]).expect("the mail");
    assert_eq!(header_of(&raw, "Subject"), Some("Over TLS"));
    assert!(
        relay.log().iter().any(|l| l.starts_with("DATA tls=True")),
        "{:?}",
        relay.log()
    );
}

/// A wrong password is the relay refusing for good: a permanent error, not retried.
#[tokio::test]
async fn a_wrong_password_is_a_permanent_error() {
    let relay = TlsRelay::start();
    let h = Herald::on(Engine::Embedded)
        .env("HERALD_SMTP_URL", relay.url("herald", "wrong"))
        .env("HERALD_TLS_CA_FILE", relay.ca().display().to_string())
        .start();
    let api = h.api();
    api.put_user("bob", json!({"email": "bob@example.com"}))
        .await;
    let id = api
        .send(json!({"to": ["bob"], "title": "Hi", "channels": ["email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "failed", "{m}");
    assert_eq!(
        attempts(&m, 0),
        vec![("email".to_string(), "permanent_error".to_string())]
    );
    let detail = m["recipients"][0]["attempts"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("535"), "{detail}");
    assert!(
        !detail.contains("wrong"),
        "the password is not in the detail: {detail}"
    );
    assert!(relay.mails().is_empty());
}

/// A DKIM key that is not one stops the start with a message naming the setting.
#[test]
fn a_bad_dkim_key_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("dkim.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check-config"])
        .env("HERALD_API_KEYS", "k")
        .env("HERALD_JWT_SECRET", "s")
        .env("HERALD_SMTP_URL", "smtp://127.0.0.1:2525")
        .env("HERALD_DKIM_KEY_FILE", &key)
        .env("HERALD_DKIM_SELECTOR", "s1")
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("HERALD_DKIM_KEY_FILE"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check-config"])
        .env("HERALD_API_KEYS", "k")
        .env("HERALD_JWT_SECRET", "s")
        .env("HERALD_DKIM_KEY_FILE", &key)
        .output()
        .expect("run herald");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("HERALD_DKIM_SELECTOR"),
        "{text}"
    );
}
