//! Several providers per channel (SPEC §7), on both engines: failover to the next provider
//! at once on a transient error, circuits that open and recover, the provider named on every
//! attempt and in `/v1/stats`; Aliyun and Tencent SMS with their real request signing
//! (verified by the mock); SMTP relays failing over to a real SMTP server.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::providers::Mock;
use support::{Engine, Herald, HeraldBuilder, Smtp, attempts, pairs};

const WAIT: Duration = Duration::from_secs(30);

fn sms_toml(mock: &Mock) -> String {
    format!(
        r#"
[[sms.providers]]
name = "primary"
kind = "aliyun"
url = "{aliyun}"
account = "LTAI-test"
token_file = "{{SECRET_FILE}}"
sign_name = "Herald"
template = "SMS_100"

[[sms.providers]]
name = "backup"
kind = "tencent"
url = "{tencent}"
account = "AKID-test"
token = "tencent-secret-key"
app_id = "1400000000"
sign_name = "Herald"
template = "200"
weight = 0
"#,
        aliyun = mock.url("/aliyun"),
        tencent = mock.url("/tencent"),
    )
}

/// A herald with the two SMS providers of `sms_toml` (the Aliyun secret read from a file).
fn with_providers(b: HeraldBuilder, mock: &Mock, dir: &tempfile::TempDir) -> HeraldBuilder {
    let secret = dir.path().join("aliyun-secret");
    std::fs::write(&secret, "aliyun-access-key-secret\n").unwrap();
    let toml = sms_toml(mock).replace("{SECRET_FILE}", &secret.display().to_string());
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, toml).unwrap();
    b.arg("--config").arg(&file.display().to_string())
}

async fn mock_with_sms() -> Mock {
    let mock = Mock::start();
    mock.config(json!({
        "aliyun": {"access_key_id": "LTAI-test", "access_key_secret": "aliyun-access-key-secret"},
        "tencent": {"secret_id": "AKID-test", "secret_key": "tencent-secret-key"},
    }))
    .await;
    mock
}

fn sms(to: &str, text: &str) -> Value {
    json!({"to": [{"user_id": format!("u{}", &to[1..]), "phone": to}], "title": text, "channels": ["sms"]})
}

async fn a_transient_failure_moves_to_the_backup_at_once(engine: Engine) {
    let mock = mock_with_sms().await;
    let dir = tempfile::tempdir().unwrap();
    let h = with_providers(Herald::on(engine), &mock, &dir).start();
    let api = h.api();
    // Both signers are right: one SMS through each, verified by the mock.
    let id = api.send(sms("+8613800000001", "your code is 1234")).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        m["recipients"][0]["attempts"][0]["provider"], "primary",
        "{m}"
    );
    let ali = mock.requests("aliyun").await;
    assert_eq!(ali[0]["verified"], true, "{}", ali[0]);
    assert_eq!(ali[0]["query"]["PhoneNumbers"], "+8613800000001");
    let param: Value =
        serde_json::from_str(ali[0]["query"]["TemplateParam"].as_str().unwrap()).unwrap();
    assert_eq!(param["content"], "your code is 1234");

    mock.script("aliyun", None, json!([{"status": 503, "body": {"Code": "ServiceUnavailable", "Message": "The request has failed due to a temporary failure of the server.", "RequestId": "r1"}}]))
        .await;
    let id = api.send(sms("+8613800000002", "second")).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("sms", "sent")]),
        "one attempt, no backoff"
    );
    let attempt = &m["recipients"][0]["attempts"][0];
    assert_eq!(attempt["provider"], "backup");
    assert!(
        attempt["detail"]
            .as_str()
            .unwrap()
            .contains("primary: ServiceUnavailable"),
        "{attempt}"
    );
    let tc = mock.requests("tencent").await;
    assert_eq!(tc.len(), 1, "the backup sends once");
    assert_eq!(tc[0]["verified"], true, "{}", tc[0]);
    assert_eq!(tc[0]["json"]["PhoneNumberSet"], json!(["+8613800000002"]));
    assert_eq!(tc[0]["json"]["TemplateParamSet"], json!(["second"]));
    // A number the provider refuses for good does not fail over.
    mock.script(
        "aliyun",
        None,
        json!([{"aliyun_code": "isv.MOBILE_NUMBER_ILLEGAL"}]),
    )
    .await;
    let id = api.send(sms("+8613800000003", "third")).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "failed", "{m}");
    assert_eq!(attempts(&m, 0), pairs(&[("sms", "permanent_error")]));
    assert_eq!(mock.requests("tencent").await.len(), 1);
    assert!(
        !h.log_text().contains("aliyun-access-key-secret")
            && !h.log_text().contains("tencent-secret-key")
    );
}

async fn an_open_circuit_skips_the_primary_then_it_recovers(engine: Engine) {
    let mock = mock_with_sms().await;
    let dir = tempfile::tempdir().unwrap();
    let h = with_providers(
        Herald::on(engine)
            .env("HERALD_CIRCUIT_FAILURES", "2")
            .env("HERALD_CIRCUIT_COOLDOWN_S", "2"),
        &mock,
        &dir,
    )
    .start();
    let api = h.api();
    let down = json!({"status": 503, "body": {"Code": "ServiceUnavailable", "Message": "down", "RequestId": "r"}});
    mock.script("aliyun", None, json!([down.clone(), down]))
        .await;
    for n in 0..2 {
        let id = api.send(sms(&format!("+861380000010{n}"), "x")).await;
        let m = api.wait_final(&id, WAIT).await;
        assert_eq!(
            m["recipients"][0]["attempts"][0]["provider"], "backup",
            "{m}"
        );
    }
    let circuit = |stats: &Value, name: &str| {
        stats["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["channel"] == "sms" && p["name"] == name)
            .map(|p| p["circuit"].clone())
    };
    let stats = api.get("/v1/stats").await.body;
    assert_eq!(circuit(&stats, "primary"), Some(json!("open")), "{stats}");
    // Open: the primary is not even asked.
    let id = api.send(sms("+8613800000110", "skips")).await;
    let m = api.wait_final(&id, WAIT).await;
    let attempt = &m["recipients"][0]["attempts"][0];
    assert_eq!(attempt["provider"], "backup");
    assert!(
        attempt["detail"]
            .as_str()
            .unwrap()
            .contains("primary: circuit open"),
        "{attempt}"
    );
    assert_eq!(mock.requests("aliyun").await.len(), 2);
    // After the cool-down one trial goes to the primary, which works again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let id = api.send(sms("+8613800000111", "recovers")).await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        m["recipients"][0]["attempts"][0]["provider"], "primary",
        "{m}"
    );
    let stats = api.get("/v1/stats").await.body;
    assert_eq!(circuit(&stats, "primary"), Some(json!("closed")), "{stats}");
    let primary = stats["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "primary")
        .unwrap();
    assert_eq!(
        (primary["sent"].as_u64(), primary["failed"].as_u64()),
        (Some(1), Some(2))
    );
}

async fn an_smtp_relay_that_is_down_fails_over_to_the_next(engine: Engine) {
    let smtp = Smtp::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!(
            "[[email.providers]]\nname = \"relay-a\"\nurl = \"smtp://127.0.0.1:{dead_port}\"\n\n[[email.providers]]\nname = \"relay-b\"\nurl = \"{}\"\nweight = 0\n",
            smtp.url()
        ),
    )
    .unwrap();
    let h = Herald::on(engine)
        .env("HERALD_SMTP_TIMEOUT_MS", "3000")
        .arg("--config")
        .arg(&file.display().to_string())
        .start();
    let api = h.api();
    let id = api
        .send(json!({"to": [{"user_id": "mia", "email": "mia@example.com"}], "title": "Receipt", "channels": ["email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    let attempt = &m["recipients"][0]["attempts"][0];
    assert_eq!(attempt["provider"], "relay-b");
    assert!(
        attempt["detail"]
            .as_str()
            .unwrap()
            .contains("relay-a: smtp"),
        "{attempt}"
    );
    let mail = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mail[0].header("Subject"), Some("Receipt"));
    assert_eq!(mail[0].header("To"), Some("mia@example.com"));
}

on_both_engines!(
    a_transient_failure_moves_to_the_backup_at_once,
    an_open_circuit_skips_the_primary_then_it_recovers,
    an_smtp_relay_that_is_down_fails_over_to_the_next,
);
