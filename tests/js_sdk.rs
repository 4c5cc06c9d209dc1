//! The JavaScript SDK's own test suite (node's test runner, no dependencies), run against
//! this build's `herald serve`.

mod support;

#[test]
fn the_javascript_sdk_passes_its_tests() {
    let out = std::process::Command::new("npm")
        .arg("test")
        .current_dir(support::root().join("clients/js"))
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .output()
        .expect("run npm (Node.js 20+ is on the machine)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "npm test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
