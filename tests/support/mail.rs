//! A real SMTP server: aiosmtpd from the test venv, filing each mail in a Maildir.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One received mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded text of the first part whose content type starts with `mime`
    /// (`text/plain`, `text/html`), looking inside multipart bodies.
    pub fn part(&self, mime: &str) -> Option<String> {
        let content_type = self.header("Content-Type").unwrap_or("text/plain");
        if let Some(boundary) = boundary_of(content_type) {
            let marker = format!("--{boundary}");
            for chunk in self.body.split(&marker).skip(1) {
                let chunk = chunk.trim_start_matches(['\r', '\n']);
                if chunk.starts_with("--") {
                    break;
                }
                if let Some(found) = Mail::parse(chunk).part(mime) {
                    return Some(found);
                }
            }
            return None;
        }
        if !content_type.to_ascii_lowercase().starts_with(mime) {
            return None;
        }
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or("7bit")
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => {
                use base64::Engine as _;
                let compact: String = self.body.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64 part")
            }
            "quoted-printable" => decode_qp(&self.body),
            _ => self.body.clone().into_bytes(),
        };
        Some(String::from_utf8_lossy(&bytes).trim_end().to_string())
    }

    fn parse(raw: &str) -> Mail {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Mail {
            headers,
            body: body.to_string(),
        }
    }
}

fn boundary_of(content_type: &str) -> Option<String> {
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    let at = content_type.find("boundary=")? + "boundary=".len();
    let rest = &content_type[at..];
    let value = rest.split(';').next()?.trim().trim_matches('"');
    Some(value.to_string())
}

fn decode_qp(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

pub struct Smtp {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Smtp {
    pub fn start() -> Smtp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Smtp {
            child: None,
            port: free_port(),
            dir,
        };
        s.spawn();
        s
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    fn spawn(&mut self) {
        let child = Command::new(super::python())
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (run ./scripts/test to make the venv)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server (connections are refused until [`Smtp::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every mail received so far.
    pub fn mails(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(raw) = std::fs::read_to_string(e.path()) {
                    out.push(Mail::parse(&raw));
                }
            }
        }
        out
    }

    /// Waits until at least `n` mails arrived.
    pub async fn wait_mails(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let what = format!("{n} mails");
        super::eventually(timeout, &what, || async {
            let m = self.mails();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}
