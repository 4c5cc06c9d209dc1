//! The JavaScript SDK's own test suite (node's test runner, no dependencies), run against
//! this build's `herald serve`.

mod support;

use std::time::Duration;

#[test]
fn the_javascript_sdk_passes_its_tests() {
    let mut npm = std::process::Command::new("npm");
    npm.arg("test")
        .current_dir(support::root().join("clients/js"))
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"));
    let (out, in_time) = support::run_bounded(npm, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        in_time && out.status.success(),
        "npm test failed{}:\n{stdout}\n{}",
        if in_time {
            ""
        } else {
            " (killed after 5 minutes)"
        },
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
