//! The web console in a real browser: headless Chromium (Debian's build, fetched without
//! root) driven by playwright-core from npm. Screenshots land in `tests/output/`.

mod support;

use std::process::Command;

use support::Herald;

#[test]
fn the_console_sends_a_message_and_watches_it_arrive_and_be_delivered() {
    let root = support::root();
    let (chromium, browser_dir) = support::browser::chromium_and_playwright();
    let h = Herald::start();
    let mut node = Command::new("node");
    node.arg("console.mjs")
        .current_dir(&browser_dir)
        .env("BASE", h.base())
        .env("API_KEY", support::API_KEY)
        .env("CHROMIUM", &chromium)
        .env("HERALD_SCREENSHOTS", root.join("tests/output"));
    let (out, in_time) = support::run_bounded(node, std::time::Duration::from_secs(180));
    assert!(in_time, "the browser test hung (killed after 3 minutes)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nherald log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log_text()
    );
    assert!(stdout.starts_with("OK "), "{stdout}");
    assert!(root.join("tests/output/console-message.png").exists());
}
