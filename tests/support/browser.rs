//! What a real-browser test needs, fetched without root: Debian's Chromium
//! (deploy/fetch-chromium.sh) and playwright-core in tests/browser (deploy/fetch-npm.sh).

use std::path::PathBuf;
use std::process::Command;

/// The Chromium binary and the tests/browser directory, ready to run `node <script>`.
pub fn chromium_and_playwright() -> (String, PathBuf) {
    let root = super::root();
    let chromium = Command::new(root.join("deploy/fetch-chromium.sh"))
        .output()
        .expect("run deploy/fetch-chromium.sh");
    assert!(
        chromium.status.success(),
        "{}",
        String::from_utf8_lossy(&chromium.stderr)
    );
    let chromium = String::from_utf8_lossy(&chromium.stdout).trim().to_string();
    let browser_dir = root.join("tests/browser");
    let npm = Command::new(root.join("deploy/fetch-npm.sh"))
        .arg(&browser_dir)
        .output()
        .expect("run deploy/fetch-npm.sh");
    assert!(
        npm.status.success(),
        "npm ci in tests/browser: {}",
        String::from_utf8_lossy(&npm.stderr)
    );
    (chromium, browser_dir)
}
