//! The provider mock's own self-test (tests/mocks/test_providers.py): every route with a
//! request signed by independent code, and with a wrong one; the published vectors (RFC 8291
//! Appendix A, Standard Webhooks, Aliyun's and Tencent's worked examples). A mock that
//! accepts anything would make the channel tests prove nothing.

mod support;

use std::process::Command;
use std::time::Duration;

#[test]
fn the_provider_mock_verifies_what_the_real_services_verify() {
    let mut cmd = Command::new(support::python());
    cmd.args(["-m", "unittest", "-v", "tests/mocks/test_providers.py"])
        .current_dir(support::root());
    let (out, in_time) = support::run_bounded(cmd, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(in_time && out.status.success(), "{stderr}");
    assert!(stderr.contains("OK"), "{stderr}");
}
