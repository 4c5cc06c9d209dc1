//! The inbox example page (`clients/js/examples/inbox/`) in a real browser: headless
//! Chromium (Debian's build, fetched without root) driven by playwright-core from npm, as in
//! `tests/console.rs`. Two browser contexts are two devices of one user;
//! `tests/browser/inbox.mjs` checks that a read on one reaches the other's bell over its
//! socket. The page is served from its own origin by a small static server here; its
//! WebSocket goes to Herald directly, which allows exactly that origin
//! (`HERALD_ALLOWED_ORIGINS`). Screenshots land in `tests/output/`.
//!
//! Its HTTP calls (`/v1/me/inbox`) go one of two ways:
//! - through the page's own origin, which forwards `/v1/…` to Herald (Herald behind the
//!   app's reverse proxy): the first test;
//! - to Herald's origin, allowed by `HERALD_CORS_ORIGINS` (a preflight, since they carry
//!   `Authorization`): the second (it failed while the server-wide 405 fallback answered
//!   that preflight instead of the CORS layer).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::Herald;

/// Serves the files under `dir` (GET only) on 127.0.0.1 and, once `upstream` is set,
/// forwards `/v1/…` to it; returns its origin.
fn serve_static(dir: PathBuf, upstream: Arc<OnceLock<SocketAddr>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the static server");
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let dir = dir.clone();
            let upstream = upstream.get().copied();
            std::thread::spawn(move || answer(&dir, upstream, stream));
        }
    });
    origin
}

fn answer(dir: &Path, upstream: Option<SocketAddr>, mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the socket"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) <= 2 {
            break;
        }
        headers.push(line);
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/");
    if let (Some(herald), true) = (upstream, path.starts_with("/v1/")) {
        return forward(herald, &request_line, &headers, reader, stream);
    }
    let relative = Path::new(path.trim_start_matches('/'));
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let mut file = dir.join(relative);
    if file.is_dir() {
        file = file.join("index.html");
    }
    let (status, kind, body) = match std::fs::read(&file) {
        Ok(body) if method == "GET" && safe => {
            let kind = match file.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js" | "mjs") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                _ => "application/octet-stream",
            };
            ("200 OK", kind, body)
        }
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// One request to Herald and its answer back, on a connection of its own.
fn forward(
    herald: SocketAddr,
    request_line: &str,
    headers: &[String],
    mut reader: BufReader<TcpStream>,
    mut stream: TcpStream,
) {
    let length = headers
        .iter()
        .find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let Ok(mut up) = TcpStream::connect(herald) else {
        let _ = stream.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    };
    let mut request = request_line.to_string();
    for h in headers {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(h);
        }
    }
    request.push_str("connection: close\r\n\r\n");
    if up.write_all(request.as_bytes()).is_ok() && up.write_all(&body).is_ok() {
        let _ = std::io::copy(&mut up, &mut stream);
    }
}

/// Runs `tests/browser/inbox.mjs` on the page, its API through its own origin
/// (`same_origin`) or Herald's (CORS).
fn two_devices(same_origin: bool) {
    let root = support::root();
    let (chromium, browser_dir) = support::browser::chromium_and_playwright();
    let upstream = Arc::new(OnceLock::new());
    let origin = serve_static(
        root.join("clients/js"),
        if same_origin {
            Arc::clone(&upstream)
        } else {
            Arc::new(OnceLock::new())
        },
    );
    let mut h = Herald::builder().env("HERALD_ALLOWED_ORIGINS", origin.as_str());
    if !same_origin {
        h = h.env("HERALD_CORS_ORIGINS", origin.as_str());
    }
    let h = h.start();
    upstream.set(h.addr).expect("set once");
    let token = h.token("bob", &[], Duration::from_secs(600));
    // The token rides in the fragment, which the browser never sends to a server.
    let mut page = format!(
        "{origin}/examples/inbox/index.html#url={}&token={token}",
        h.ws_url()
    );
    if same_origin {
        page.push_str(&format!("&api={origin}"));
    }
    let mut node = Command::new("node");
    node.arg("inbox.mjs")
        .current_dir(&browser_dir)
        .env("PAGE", &page)
        .env("BASE", h.base())
        .env("API_KEY", support::API_KEY)
        .env("USER_ID", "bob")
        .env("CHROMIUM", &chromium)
        .env("HERALD_SCREENSHOTS", root.join("tests/output"));
    let (out, in_time) = support::run_bounded(node, Duration::from_secs(180));
    assert!(in_time, "the browser test hung (killed after 3 minutes)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nherald log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log_text()
    );
    assert!(stdout.starts_with("OK "), "{stdout}");
    assert!(root.join("tests/output/inbox-all-read.png").exists());
}

#[test]
fn the_inbox_page_keeps_two_devices_bells_in_step() {
    two_devices(true);
}

#[test]
fn the_inbox_page_keeps_two_devices_bells_in_step_calling_herald_across_origins() {
    two_devices(false);
}
