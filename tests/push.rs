//! The `push` channel (SPEC §7) end to end, on both engines: devices registered through the
//! API (and by an app with its own token), notifications to FCM, APNs and Web Push mocks
//! that verify what the real services verify — the OAuth2 assertion and bearer token, the
//! ES256 provider token, VAPID, and the payload decrypted with the browser's key.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use reqwest::Method;
use serde_json::{Value, json};
use support::apns::Apns;
use support::providers::Mock;
use support::{Api, Engine, Herald, attempts, pairs};

const WAIT: Duration = Duration::from_secs(30);
const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const TOPIC: &str = "com.example.app";

/// Everything a push test needs: the mocks, the keys, and a herald pointed at them.
struct Rig {
    h: Herald,
    mock: Mock,
    apns: Apns,
    vapid_public: String,
    _keys: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn p256_key() -> p256::SecretKey {
    p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn rig(engine: Engine, extra: &[(&str, &str)]) -> Rig {
    let mock = Mock::start();
    let keys = tempfile::tempdir().unwrap();
    // FCM: Google's service-account file, its token_uri pointing at the mock.
    let mut account: Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("tests/fixtures/fcm-service-account.json"))
            .unwrap(),
    )
    .unwrap();
    account["token_uri"] = json!(mock.url("/fcm/token"));
    let account_file = write(keys.path(), "fcm.json", &account.to_string());
    mock.config(json!({"fcm": {
        "project_id": "herald-test",
        "client_email": account["client_email"],
        "public_key_pem": std::fs::read_to_string(support::root().join("tests/fixtures/fcm-service-account.pub.pem")).unwrap(),
    }}))
    .await;
    // APNs: a fresh .p8 key; the mock verifies with its public half.
    let apns_key = p256_key();
    let p8 = write(
        keys.path(),
        "AuthKey.p8",
        &apns_key.to_pkcs8_pem(LineEnding::LF).unwrap(),
    );
    let apns = Apns::start(
        &apns_key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
        KEY_ID,
        TEAM_ID,
    )
    .await;
    // Web Push: a fresh VAPID key pair (in the older SEC1 form: both are accepted).
    let vapid = p256_key();
    let vapid_file = write(
        keys.path(),
        "vapid.pem",
        &vapid.to_sec1_pem(LineEnding::LF).unwrap(),
    );
    let vapid_public = b64(vapid.public_key().to_encoded_point(false).as_bytes());
    mock.config(json!({"webpush": {"subscriptions": {}, "vapid_public_key": vapid_public}}))
        .await;
    let mut b = Herald::on(engine)
        .env("HERALD_FCM_CREDENTIALS_FILE", account_file)
        .env("HERALD_FCM_URL", mock.base.clone())
        .env("HERALD_APNS_KEY_FILE", p8)
        .env("HERALD_APNS_KEY_ID", KEY_ID)
        .env("HERALD_APNS_TEAM_ID", TEAM_ID)
        .env("HERALD_APNS_TOPIC", TOPIC)
        .env("HERALD_APNS_URL", apns.url())
        .env("HERALD_VAPID_PRIVATE_KEY_FILE", vapid_file)
        .env("HERALD_VAPID_SUBJECT", "mailto:ops@example.com");
    for (k, v) in extra {
        b = b.env(k, *v);
    }
    Rig {
        h: b.start(),
        mock,
        apns,
        vapid_public,
        _keys: keys,
    }
}

async fn put_device(api: &Api, user: &str, device: &str, body: Value) -> Value {
    let a = api
        .request(
            Method::PUT,
            &format!("/v1/users/{user}/devices/{device}"),
            Some(body),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
}

async fn devices(api: &Api, user: &str) -> Vec<Value> {
    let a = api.get(&format!("/v1/users/{user}/devices")).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["devices"].as_array().cloned().unwrap_or_default()
}

fn device<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|d| d["device_id"] == id)
        .unwrap_or_else(|| panic!("no device {id} in {list:?}"))
}

/// The push attempt's per-device outcomes, by device id.
fn device_outcomes(message: &Value, i: usize, attempt: usize) -> Vec<(String, String)> {
    let a = &message["recipients"][i]["attempts"][attempt];
    assert_eq!(a["channel"], "push", "{message}");
    let mut out: Vec<(String, String)> = a["devices"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap_or("").to_string(),
                d["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn fcm_reaches_devices_and_a_gone_one_is_deactivated(engine: Engine) {
    let r = rig(engine, &[]).await;
    let api = r.h.api();
    put_device(
        &api,
        "ann",
        "phone",
        json!({"platform": "fcm", "token": "tok-phone"}),
    )
    .await;
    put_device(
        &api,
        "ann",
        "tablet",
        json!({"platform": "fcm", "token": "tok-tablet"}),
    )
    .await;
    r.mock
        .script(
            "fcm.send",
            Some("tok-tablet"),
            json!([{"fcm_error": "UNREGISTERED"}]),
        )
        .await;
    let id = api
        .send(
            json!({"to": ["ann"], "title": "Order shipped", "body": "Your order #42 is on its way",
            "data": {"order_id": 42}, "priority": "high",
            "push": {"collapse_key": "order-42", "badge": 3},
            "channels": ["in_app", "push", "email"]}),
        )
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    assert_eq!(m["recipients"][0]["channel"], "push");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("in_app", "offline"), ("push", "sent")])
    );
    assert_eq!(
        device_outcomes(&m, 0, 1),
        pairs(&[("phone", "sent"), ("tablet", "permanent_error")])
    );
    assert_eq!(m["recipients"][0]["attempts"][1]["provider"], "fcm");
    // The gone device is deactivated at once, with its reason.
    let list = devices(&api, "ann").await;
    assert_eq!(device(&list, "phone")["active"], true);
    assert_eq!(device(&list, "tablet")["active"], false);
    assert!(
        device(&list, "tablet")["deactivated_reason"]
            .as_str()
            .unwrap_or("")
            .contains("UNREGISTERED"),
        "{list:?}"
    );
    // What FCM got: verified (bearer token, shape), the mapping of SPEC §7.
    let sends = r.mock.requests("fcm.send").await;
    assert_eq!(sends.len(), 2, "{sends:?}");
    for s in &sends {
        assert_eq!(s["verified"], true, "{s}");
    }
    let phone = sends
        .iter()
        .find(|s| s["json"]["message"]["token"] == "tok-phone")
        .unwrap();
    let msg = &phone["json"]["message"];
    assert_eq!(msg["notification"]["title"], "Order shipped");
    assert_eq!(msg["data"]["order_id"], "42", "FCM data values are strings");
    assert_eq!(msg["android"]["priority"], "HIGH");
    assert_eq!(msg["android"]["collapse_key"], "order-42");
    assert_eq!(msg["apns"]["headers"]["apns-priority"], "10");
    // More sends reuse the token: one mint in all, its assertion verified by the mock.
    for n in 0..5 {
        let id = api
            .send(json!({"to": ["ann"], "title": format!("again {n}"), "channels": ["push"]}))
            .await;
        assert_eq!(
            api.wait_final(&id, WAIT).await["recipients"][0]["status"],
            "sent"
        );
    }
    let mints = r.mock.requests("fcm.token").await;
    assert_eq!(mints.len(), 1, "one token for many sends: {mints:?}");
    assert_eq!(mints[0]["verified"], true, "{}", mints[0]);
    assert_eq!(
        r.mock.requests("fcm.send").await.len(),
        7,
        "the deactivated tablet gets nothing more"
    );
}

async fn a_transient_failure_retries_only_the_devices_that_did_not_get_it(engine: Engine) {
    let r = rig(engine, &[]).await;
    let api = r.h.api();
    put_device(
        &api,
        "bo",
        "phone",
        json!({"platform": "fcm", "token": "tok-bo-phone"}),
    )
    .await;
    put_device(
        &api,
        "bo",
        "watch",
        json!({"platform": "fcm", "token": "tok-bo-watch"}),
    )
    .await;
    put_device(
        &api,
        "bo",
        "old",
        json!({"platform": "fcm", "token": "tok-bo-old"}),
    )
    .await;
    r.mock
        .script(
            "fcm.send",
            Some("tok-bo-phone"),
            json!([{"fcm_error": "UNAVAILABLE"}]),
        )
        .await;
    r.mock
        .script(
            "fcm.send",
            Some("tok-bo-watch"),
            json!([{"fcm_error": "UNAVAILABLE"}]),
        )
        .await;
    r.mock
        .script(
            "fcm.send",
            Some("tok-bo-old"),
            json!([{"fcm_error": "INVALID_ARGUMENT"}]),
        )
        .await;
    let id = api
        .send(json!({"to": ["bo"], "title": "Retry me", "channels": ["push"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("push", "transient_error"), ("push", "sent")])
    );
    assert_eq!(
        device_outcomes(&m, 0, 1),
        pairs(&[("phone", "sent"), ("watch", "sent")]),
        "the retry skips the device refused for good"
    );
    let sends = r.mock.requests("fcm.send").await;
    let to = |t: &str| {
        sends
            .iter()
            .filter(|s| s["json"]["message"]["token"] == t)
            .count()
    };
    assert_eq!(
        (to("tok-bo-phone"), to("tok-bo-watch"), to("tok-bo-old")),
        (2, 2, 1)
    );
    // A user with no active device: push is skipped and the next channel goes.
    let id = api
        .send(json!({"to": [{"user_id": "nodevice", "email": "nd@example.com"}], "title": "x", "channels": ["push", "email"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("push", "skipped"), ("email", "sent")])
    );
}

async fn apns_gets_a_verified_provider_token_and_410_deactivates(engine: Engine) {
    let r = rig(engine, &[]).await;
    let api = r.h.api();
    let iphone = "a1".repeat(32);
    let ipad = "b2".repeat(32);
    put_device(
        &api,
        "cy",
        "iphone",
        json!({"platform": "apns", "token": iphone, "topic": TOPIC}),
    )
    .await;
    put_device(
        &api,
        "cy",
        "ipad",
        json!({"platform": "apns", "token": ipad}),
    )
    .await;
    r.apns.script(&ipad, &[(410, "Unregistered")]);
    r.apns.script(&iphone, &[(429, "TooManyRequests")]);
    let id = api
        .send(
            json!({"to": ["cy"], "title": "Hello iOS", "body": "b", "priority": "high",
            "data": {"k": "v"}, "push": {"sound": "default"}, "channels": ["push"]}),
        )
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    assert_eq!(
        attempts(&m, 0),
        pairs(&[("push", "transient_error"), ("push", "sent")]),
        "429 is retried"
    );
    let list = devices(&api, "cy").await;
    assert_eq!(device(&list, "ipad")["active"], false);
    assert!(
        device(&list, "ipad")["deactivated_reason"]
            .as_str()
            .unwrap()
            .contains("Unregistered")
    );
    let seen = r.apns.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for s in &seen {
        assert_eq!(s.error, None, "APNs would refuse: {s:?}");
        assert_eq!(s.topic.as_deref(), Some(TOPIC));
        assert_eq!(s.push_type.as_deref(), Some("alert"));
        assert_eq!(s.priority.as_deref(), Some("10"));
        assert_eq!(s.body["aps"]["alert"]["title"], "Hello iOS");
        assert_eq!(s.body["aps"]["sound"], "default");
        assert_eq!(s.body["k"], "v");
    }
    // More sends: one provider token and one connection carry them all.
    for n in 0..5 {
        let id = api
            .send(json!({"to": ["cy"], "title": format!("n{n}"), "channels": ["push"]}))
            .await;
        api.wait_final(&id, WAIT).await;
    }
    let seen = r.apns.seen();
    let jwts: std::collections::BTreeSet<&str> = seen.iter().map(|s| s.jwt.as_str()).collect();
    assert_eq!(jwts.len(), 1, "the provider token is reused");
    assert_eq!(
        r.apns.connections(),
        1,
        "many streams on one HTTP/2 connection"
    );
    assert_eq!(
        seen.last().unwrap().priority.as_deref(),
        Some("5"),
        "normal priority is 5"
    );
}

/// A browser's subscription: its key pair and auth secret, as `PushManager` makes them.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Browser {
        Browser {
            secret: p256_key(),
            auth: rand::random(),
        }
    }

    fn subscription(&self, endpoint: &str) -> Value {
        json!({"endpoint": endpoint, "expirationTime": null, "keys": {
            "p256dh": b64(self.secret.public_key().to_encoded_point(false).as_bytes()),
            "auth": b64(&self.auth)}})
    }

    fn mock_entry(&self) -> Value {
        json!({"private_key": b64(&self.secret.to_bytes()), "auth": b64(&self.auth)})
    }
}

async fn web_push_decrypts_to_the_title_with_the_browsers_key(engine: Engine) {
    let r = rig(engine, &[]).await;
    let api = r.h.api();
    // The page asks for the key it subscribes with: no API key needed.
    let key = Api::answer(api.http.get(api.url("/v1/webpush/key"))).await;
    assert_eq!(key.status, 200, "{key:?}");
    assert_eq!(key.body["public_key"], r.vapid_public.as_str());
    let (laptop, gone) = (Browser::new(), Browser::new());
    r.mock
        .config(json!({"webpush": {"subscriptions": {"laptop": laptop.mock_entry(), "gone": gone.mock_entry()},
            "vapid_public_key": r.vapid_public}}))
        .await;
    // The app registers itself with its own client token.
    let token = r.h.token("dee", &[], Duration::from_secs(600));
    let register = |device: &'static str, sub: Value, bearer: Option<String>| {
        let api = api.clone();
        async move {
            let mut rb = api
                .http
                .put(api.url(&format!("/v1/me/devices/{device}")))
                .json(&json!({"platform": "webpush", "subscription": sub}));
            if let Some(b) = bearer {
                rb = rb.bearer_auth(b);
            }
            Api::answer(rb).await
        }
    };
    let a = register(
        "laptop",
        laptop.subscription(&r.mock.url("/push/laptop")),
        Some(token.clone()),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = register(
        "old-browser",
        gone.subscription(&r.mock.url("/push/gone")),
        Some(token.clone()),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    // No token, or an API key instead of a client token: refused.
    let a = register("x", laptop.subscription(&r.mock.url("/push/x")), None).await;
    assert_eq!(a.status, 401, "{a:?}");
    let a = register(
        "x",
        laptop.subscription(&r.mock.url("/push/x")),
        Some(support::API_KEY.into()),
    )
    .await;
    assert_eq!(a.status, 401, "{a:?}");
    let mine = Api::answer(api.http.get(api.url("/v1/me/devices")).bearer_auth(&token)).await;
    assert_eq!(
        mine.body["devices"].as_array().map(Vec::len),
        Some(2),
        "{mine:?}"
    );
    r.mock
        .script("webpush", Some("gone"), json!([{"status": 410, "body": {"code": 410, "errno": 106, "error": "Gone", "message": "Request did not validate: subscription expired"}}]))
        .await;
    let id = api
        .send(json!({"to": ["dee"], "title": "Your order shipped", "body": "Track it",
            "data": {"order": "42"}, "priority": "high", "push": {"collapse_key": "order-42"}, "channels": ["push"]}))
        .await;
    let m = api.wait_final(&id, WAIT).await;
    assert_eq!(m["recipients"][0]["status"], "sent", "{m}");
    let sent = r.mock.requests("webpush").await;
    let to_laptop = sent
        .iter()
        .find(|s| s["target"] == "laptop")
        .expect("a push to the laptop");
    assert_eq!(to_laptop["verified"], true, "{to_laptop}");
    let plain: Value =
        serde_json::from_str(to_laptop["decrypted"].as_str().expect("decrypted")).unwrap();
    assert_eq!(plain["title"], "Your order shipped");
    assert_eq!(plain["id"], id.as_str());
    assert_eq!(plain["data"]["order"], "42");
    assert_eq!(to_laptop["headers"]["urgency"], "high");
    assert_eq!(to_laptop["headers"]["topic"], "order-42");
    let list = devices(&api, "dee").await;
    assert_eq!(device(&list, "old-browser")["active"], false, "{list:?}");
}

async fn bad_registrations_and_oversized_pushes_are_400s_naming_the_field(engine: Engine) {
    let r = rig(engine, &[]).await;
    let api = r.h.api();
    let sub = |endpoint: &str, p256dh: &str| json!({"platform": "webpush", "subscription": {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}});
    let good_key = b64(p256_key().public_key().to_encoded_point(false).as_bytes());
    for (body, names) in [
        (json!({"platform": "pager", "token": "x"}), "platform"),
        (json!({"platform": "fcm", "token": "has spaces!"}), "token"),
        (json!({"platform": "fcm"}), "token"),
        (json!({"platform": "apns", "token": "not-hex"}), "token"),
        (
            sub("ftp://push.example/1", &good_key),
            "subscription.endpoint",
        ),
        (sub("https://push.example/1", "AAAA"), "p256dh"),
        (json!({"platform": "webpush", "token": "x"}), "token"),
    ] {
        let a = api
            .request(Method::PUT, "/v1/users/eve/devices/d1", Some(body.clone()))
            .await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(names), "{body}: '{message}' names {names}");
    }
    let a = api
        .request(
            Method::PUT,
            "/v1/users/eve/devices/bad%2Fid",
            Some(json!({"platform": "fcm", "token": "t"})),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(devices(&api, "eve").await.is_empty(), "nothing stored");
    // A push payload over 4 KB is refused at accept, naming the part that is too big.
    let a = api
        .post("/v1/messages", json!({"to": ["eve"], "title": "t", "data": {"blob": "x".repeat(5000)}, "channels": ["push"]}))
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data is"),
        "{a:?}"
    );
    let a = api
        .post(
            "/v1/messages",
            json!({"to": ["eve"], "title": "t", "push": {"collapse_key": "no spaces allowed"}}),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("collapse_key")
    );
    // The same token registered twice is one device; past the limit the oldest goes.
    put_device(
        &api,
        "fay",
        "a",
        json!({"platform": "fcm", "token": "same"}),
    )
    .await;
    put_device(
        &api,
        "fay",
        "b",
        json!({"platform": "fcm", "token": "same"}),
    )
    .await;
    let list = devices(&api, "fay").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["device_id"], "b");
    assert!(
        list[0]["hint"].as_str().unwrap().ends_with("same"),
        "a hint, not the token: {list:?}"
    );
    let a = api
        .request(Method::DELETE, "/v1/users/fay/devices/b", None)
        .await;
    assert_eq!(a.status, 204);
    assert!(devices(&api, "fay").await.is_empty());
}

async fn the_device_limit_drops_the_least_recently_registered(engine: Engine) {
    let r = rig(engine, &[("HERALD_MAX_DEVICES_PER_USER", "2")]).await;
    let api = r.h.api();
    for d in ["one", "two", "three"] {
        put_device(
            &api,
            "gil",
            d,
            json!({"platform": "fcm", "token": format!("tok-{d}")}),
        )
        .await;
    }
    let ids: Vec<String> = devices(&api, "gil")
        .await
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["two", "three"]);
}

on_both_engines!(
    fcm_reaches_devices_and_a_gone_one_is_deactivated,
    a_transient_failure_retries_only_the_devices_that_did_not_get_it,
    apns_gets_a_verified_provider_token_and_410_deactivates,
    web_push_decrypts_to_the_title_with_the_browsers_key,
    bad_registrations_and_oversized_pushes_are_400s_naming_the_field,
    the_device_limit_drops_the_least_recently_registered,
);
