"""Self-test of the provider mock (tests/mocks/providers.py).

    .venv/bin/python -m unittest tests/mocks/test_providers.py

Starts the mock on port 0 in a subprocess and sends each route a correct request and
wrong ones. Everything here is signed, encrypted and canonicalised by code of its own,
not the mock's, and checked against published vectors where a provider publishes one:
RFC 8291 Appendix A (Web Push), the Standard Webhooks test vector, Aliyun's and Tencent's
worked signature examples. Two SendSms-shaped signatures are pinned as well, so a later
change to either signer is caught.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import importlib.util
import json
import pathlib
import socket
import subprocess
import sys
import time
import unittest
import urllib.parse
import uuid
from datetime import datetime, timezone

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PROVIDERS = pathlib.Path(__file__).resolve().parent / "providers.py"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


def load_mock_module():
    spec = importlib.util.spec_from_file_location("providers", PROVIDERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["providers"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_rs256(key: rsa.RSAPrivateKey, claims: dict) -> str:
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64url(json.dumps(claims).encode())
    return head + "." + b64url(key.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256()))


def jwt_es256(key: ec.EllipticCurvePrivateKey, claims: dict) -> str:
    head = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}).encode()) + "." + b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(head.encode(), ec.ECDSA(hashes.SHA256())))
    return head + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def scalar(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def aliyun_v3(secret: str, query: str, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """Aliyun V3 from the doc's steps: (SignedHeaders, Signature). `query` is name=value&… raw."""
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(urllib.parse.quote(k, safe="") + "=" + urllib.parse.quote(v, safe="") for k, v in pairs)
    names = sorted(headers)
    canonical = (
        "POST\n/\n"
        + canonical_query
        + "\n"
        + "".join(f"{n}:{headers[n].strip()}\n" for n in names)
        + "\n"
        + ";".join(names)
        + "\n"
        + hashlib.sha256(body).hexdigest()
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return ";".join(names), hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def tencent_tc3(
    secret_key: str, host: str, content_type: str, timestamp: int, body: bytes, service: str = "sms"
) -> str:
    """TC3-HMAC-SHA256 from Tencent's worked example, step by step (header values lower-cased)."""
    canonical = (
        f"POST\n/\n\ncontent-type:{content_type.lower()}\nhost:{host.lower()}\n\ncontent-type;host\n"
        f"{hashlib.sha256(body).hexdigest()}"
    )
    date = datetime.fromtimestamp(timestamp, timezone.utc).date().isoformat()  # the UTC date, not local
    string_to_sign = (
        f"TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    )
    k_date = hmac.new(("TC3" + secret_key).encode(), date.encode(), hashlib.sha256).digest()
    k_service = hmac.new(k_date, service.encode(), hashlib.sha256).digest()
    k_signing = hmac.new(k_service, b"tc3_request", hashlib.sha256).digest()
    return hmac.new(k_signing, string_to_sign.encode(), hashlib.sha256).hexdigest()


# Aliyun's worked example (V3 signature doc): RunInstances on ecs.cn-shanghai, empty body.
ALIYUN_DOC = {
    "query": "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai",
    "headers": {
        "host": "ecs.cn-shanghai.aliyuncs.com",
        "x-acs-action": "RunInstances",
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
        "x-acs-version": "2014-05-26",
    },
    "secret": "YourAccessKeySecret",
    "signature": "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0",
}
# A SendSms request with fixed inputs (Chinese SignName and a JSON TemplateParam exercise the
# RFC 3986 encoding); signature computed by hand with aliyun_v3 above and pinned.
ALIYUN_SMS = {
    "query": urllib.parse.urlencode(
        {
            "PhoneNumbers": "13800000000",
            "SignName": "阿里云短信测试",
            "TemplateCode": "SMS_154950909",
            "TemplateParam": '{"code":"1234"}',
        },
        quote_via=urllib.parse.quote,
    ),
    "headers": {
        "host": "dysmsapi.aliyuncs.com",
        "x-acs-action": "SendSms",
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        "x-acs-date": "2024-01-01T00:00:00Z",
        "x-acs-signature-nonce": "0123456789abcdef0123456789abcdef",
        "x-acs-version": "2017-05-25",
    },
    "secret": "testAccessKeySecret",
    "signature": "b71ff3f3410f74bed37ab9ef553a3cd56a1e8474981cb23321b9c6dbe0b6b613",
}
# Tencent's worked example (Signature v3 doc): DescribeInstances on cvm.
TENCENT_DOC = {
    "secret_key": "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
    "service": "cvm",
    "host": "cvm.tencentcloudapi.com",
    "timestamp": 1551113065,
    "content_type": "application/json; charset=utf-8",
    "body": b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}',
    "signature": "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168",
}
# A SendSms request with fixed inputs; signature computed by hand with tencent_tc3 above and pinned.
TENCENT_SMS = {
    "secret_key": "testSecretKey",
    "service": "sms",
    "host": "sms.tencentcloudapi.com",
    "timestamp": 1704067200,
    "content_type": "application/json; charset=utf-8",
    "body": json.dumps(
        {
            "PhoneNumberSet": ["+8613800000000"],
            "SmsSdkAppId": "1400000000",
            "SignName": "腾讯云",
            "TemplateId": "1000000",
            "TemplateParamSet": ["1234"],
        },
        ensure_ascii=False,
    ).encode(),
    "signature": "d9ed08e0bfb3d31cdad59b5b8c23855855d2adb7de2f508f6c203e7526ad2a63",
}
# RFC 8291 Appendix A.
RFC8291 = {
    "ua_private": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    "body": "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8"
    "wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
    "plaintext": "When I grow up, I want to be a watermelon",
}
# Standard Webhooks' published test vector.
SW_VECTOR = {
    "secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "id": "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
    "timestamp": 1649367553,
    "body": b'{"email":"test@example.com","username":"test_user"}',
    "signature": "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
}


class ProviderMockTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = load_mock_module()
        cls.proc = subprocess.Popen([sys.executable, str(PROVIDERS), "--port", "0"], stdout=subprocess.PIPE, text=True)
        cls.addClassCleanup(cls.stop_mock)  # runs even if the rest of setUpClass fails
        line = cls.proc.stdout.readline()
        if not line.startswith("listening on http://127.0.0.1:"):
            raise RuntimeError(f"mock did not start: {line!r}")
        cls.port = int(line.rsplit(":", 1)[1])
        cls.origin = f"http://127.0.0.1:{cls.port}"

    @classmethod
    def stop_mock(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.proc.stdout.close()

    def setUp(self):
        self.call("DELETE", "/_requests")
        self.call("DELETE", "/_script")
        self.configure(fixed_now_s=None, rate_limits={})

    def tearDown(self):
        status, _, data = self.call("GET", "/_requests")
        bugs = [r["error"] for r in json.loads(data) if (r["error"] or "").startswith("mock bug")]
        self.assertEqual(bugs, [], "the mock itself failed")

    # -- plumbing

    def call(self, method, path, body=b"", headers=None, timeout=10):
        headers = dict(headers or {})
        if not isinstance(body, bytes):
            body = json.dumps(body, ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def post(self, path, body, headers=None):
        """(status, JSON reply or text)."""
        status, _, data = self.call("POST", path, body, headers)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode()

    def configure(self, **config):
        status, _, data = self.call("POST", "/_config", config)
        self.assertEqual(status, 200, data)

    def script(self, route, responses, match=None):
        body = {"route": route, "responses": responses, **({"match": match} if match is not None else {})}
        status, _, data = self.call("POST", "/_script", body)
        self.assertEqual(status, 200, data)

    def records(self, route):
        status, _, data = self.call("GET", f"/_requests?route={route}")
        self.assertEqual(status, 200)
        return json.loads(data)

    def last(self, route):
        return self.records(route)[-1]

    def assert_rejected(self, route, fragment):
        rec = self.last(route)
        self.assertFalse(rec["verified"], rec)
        self.assertIn(fragment, rec["error"])

    # -- control API

    def test_control_api_validates_its_input(self):
        cases = [
            ("/_config", {"fcmm": {}}),
            ("/_config", {"fcm": {"project_id": "p", "client_email": "e", "public_key_pem": "not a pem"}}),
            ("/_config", {"webpush": {"subscriptions": {"x": {"private_key": "AAAA", "auth": "AAAA"}}}}),
            ("/_script", {"route": "nope", "responses": [{"status": 500}]}),
            ("/_script", {"route": "slack", "responses": [{"fcm_error": "UNREGISTERED"}]}),
            ("/_script", {"route": "fcm.send", "responses": [{"fcm_error": "NOT_A_CODE"}]}),
            ("/_script", {"route": "slack", "responses": []}),
        ]
        for path, body in cases:
            with self.subTest(path=path, body=body):
                status, reply = self.post(path, body)
                self.assertEqual(status, 400, reply)
                self.assertIn("error", reply)
        self.assertEqual(self.call("GET", "/_requests?route=nope")[0], 400)
        stats = json.loads(self.call("GET", "/_stats")[2])
        self.assertEqual(
            set(stats),
            {
                "fcm_tokens_minted",
                "fcm.token",
                "fcm.send",
                "webpush",
                "dingtalk",
                "feishu",
                "wecom",
                "slack",
                "webhook",
                "aliyun",
                "tencent",
            },
        )

    def test_requests_are_listed_per_route_and_cleared(self):
        self.configure(slack={"hooks": ["T/B/X"]})
        self.post("/slack/services/T/B/X", {"text": "one"})
        self.post("/slack/services/T/B/Y", {"text": "two"})
        self.post("/wecom/cgi-bin/webhook/send?key=none", {"msgtype": "text", "text": {"content": "x"}})
        slack = self.records("slack")
        self.assertEqual([r["json"]["text"] for r in slack], ["one", "two"])
        self.assertEqual([r["target"] for r in slack], ["T/B/X", "T/B/Y"])
        self.assertLessEqual(slack[0]["at"], slack[1]["at"])
        self.call("DELETE", "/_requests?route=slack")
        self.assertEqual(self.records("slack"), [])
        self.assertEqual(len(self.records("wecom")), 1)

    def test_delay_then_normal_answer_and_timeouts(self):
        self.configure(slack={"hooks": ["T/B/X"]})
        self.script("slack", [{"delay_ms": 400, "headers": {"Retry-After": "3"}}])
        started = time.monotonic()
        status, headers, data = self.call("POST", "/slack/services/T/B/X", {"text": "slow"})
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertEqual((status, data, headers["retry-after"]), (200, b"ok", "3"))
        self.script("slack", [{"delay_ms": 2000, "status": 500, "body": "late"}])
        with self.assertRaises((socket.timeout, TimeoutError)):
            self.call("POST", "/slack/services/T/B/X", {"text": "gives up"}, timeout=0.3)
        self.assertEqual(self.post("/slack/services/T/B/X", {"text": "after"}), (200, "ok"))
        self.assertEqual([r["answered"] for r in self.records("slack")], [200, 500, 200])

    # -- FCM

    def fcm_setup(self, lifetime=3600):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.configure(
            fcm={
                "project_id": "herald-test",
                "client_email": "herald@herald-test.iam.gserviceaccount.com",
                "public_key_pem": pem.decode(),
                "token_lifetime_s": lifetime,
            }
        )
        return key

    def assertion(self, key, **overrides):
        now = int(time.time())
        claims = {
            "iss": "herald@herald-test.iam.gserviceaccount.com",
            "scope": FCM_SCOPE,
            "aud": self.origin + "/fcm/token",
            "iat": now,
            "exp": now + 3600,
            **overrides,
        }
        return jwt_rs256(key, claims)

    def fcm_token(self, key):
        status, reply = self.post(
            "/fcm/token",
            urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": self.assertion(key)}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(status, 200, reply)
        return reply["access_token"]

    def fcm_send(self, token, message, project="herald-test"):
        return self.post(
            f"/v1/projects/{project}/messages:send", {"message": message}, {"Authorization": f"Bearer {token}"}
        )

    def test_fcm_token_then_send(self):
        key = self.fcm_setup()
        minted = json.loads(self.call("GET", "/_stats")[2])["fcm_tokens_minted"]
        status, reply = self.post(
            "/fcm/token",
            urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": self.assertion(key)}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(status, 200, reply)
        self.assertTrue(reply["access_token"].startswith("ya29.mock-"))
        self.assertEqual((reply["expires_in"], reply["token_type"]), (3600, "Bearer"))
        message = {
            "token": "device-token-1",
            "notification": {"title": "Hi", "body": "there"},
            "data": {"order": "42"},
            "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "orders"},
            "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 1}}},
        }
        status, reply = self.fcm_send(reply["access_token"], message)
        self.assertEqual(status, 200, reply)
        self.assertTrue(reply["name"].startswith("projects/herald-test/messages/"))
        rec = self.last("fcm.send")
        self.assertTrue(rec["verified"], rec)
        self.assertEqual(rec["target"], "device-token-1")
        self.assertEqual(
            rec["json"]["message"]["android"], {"priority": "HIGH", "ttl": "3600s", "collapse_key": "orders"}
        )
        self.assertEqual(json.loads(self.call("GET", "/_stats")[2])["fcm_tokens_minted"], minted + 1)

    def test_fcm_token_endpoint_rejects_bad_assertions(self):
        key = self.fcm_setup()
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        cases = [
            ("signature", self.assertion(other), "invalid_grant", "signature"),
            ("aud", self.assertion(key, aud="https://oauth2.googleapis.com/token"), "invalid_grant", "aud"),
            ("iss", self.assertion(key, iss="someone@else.iam.gserviceaccount.com"), "invalid_grant", "iss"),
            (
                "scope",
                self.assertion(key, scope="https://www.googleapis.com/auth/userinfo.email"),
                "invalid_scope",
                "scope",
            ),
            ("too long", self.assertion(key, exp=now + 7200), "invalid_grant", "exp - iat"),
            ("expired", self.assertion(key, iat=now - 4000, exp=now - 400), "invalid_grant", "exp > now"),
        ]
        for name, assertion, error, fragment in cases:
            with self.subTest(name):
                status, reply = self.post(
                    "/fcm/token",
                    urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": assertion}).encode(),
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )
                self.assertEqual((status, reply["error"]), (400, error), reply)
                self.assert_rejected("fcm.token", fragment)
        status, reply = self.post(
            "/fcm/token",
            urllib.parse.urlencode({"grant_type": "client_credentials", "assertion": self.assertion(key)}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual((status, reply["error"]), (400, "unsupported_grant_type"))

    def test_fcm_send_rejects_like_fcm(self):
        key = self.fcm_setup()
        token = self.fcm_token(key)
        big = {"token": "t", "data": {"blob": "x" * 5000}}
        cases = [
            ("data value not a string", {"token": "t", "data": {"count": 3}}, 400, "message.data[0].value"),
            ("two targets", {"token": "t", "topic": "news"}, 400, "message"),
            ("no target", {"data": {"a": "b"}}, 400, "message"),
            ("ttl as a number", {"token": "t", "android": {"ttl": 3600}}, 400, "message.android.ttl"),
            ("priority", {"token": "t", "android": {"priority": "high"}}, 400, "message.android.priority"),
            ("unknown field", {"token": "t", "andriod": {}}, 400, "message"),
        ]
        for name, message, status_want, field in cases:
            with self.subTest(name):
                status, reply = self.fcm_send(token, message)
                self.assertEqual(status, status_want, reply)
                self.assertEqual(reply["error"]["status"], "INVALID_ARGUMENT")
                violations = [v for d in reply["error"]["details"] for v in d.get("fieldViolations", [])]
                self.assertEqual(violations[0]["field"], field, reply)
                self.assertFalse(self.last("fcm.send")["verified"])
        status, reply = self.fcm_send(token, big)
        self.assertEqual((status, reply["error"]["message"]), (400, "Android message is too big"))
        self.assertIn(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
            reply["error"]["details"],
        )
        status, reply = self.post("/v1/projects/herald-test/messages:send", {"message": {"token": "t"}})
        self.assertEqual((status, reply["error"]["status"]), (401, "UNAUTHENTICATED"))
        status, reply = self.fcm_send("ya29.never-minted", {"token": "t"})
        self.assertEqual(status, 401)
        self.assertTrue(reply["error"]["message"].startswith("Request had invalid authentication credentials"))
        status, reply = self.fcm_send(token, {"token": "t"}, project="someone-else")
        self.assertEqual((status, reply["error"]["status"]), (403, "PERMISSION_DENIED"))

    def test_fcm_access_token_expires_on_the_mock_clock(self):
        key = self.fcm_setup(lifetime=60)
        now = int(time.time())
        self.configure(fixed_now_s=now)
        token = self.fcm_token(key)
        self.assertEqual(self.fcm_send(token, {"token": "t"})[0], 200)
        self.configure(fixed_now_s=now + 61)
        status, _ = self.fcm_send(token, {"token": "t"})
        self.assertEqual(status, 401)
        self.assert_rejected("fcm.send", "expired")

    def test_fcm_scripted_errors(self):
        key = self.fcm_setup()
        token = self.fcm_token(key)
        self.script("fcm.send", [{"fcm_error": "UNREGISTERED"}], match="gone-token")
        self.assertEqual(self.fcm_send(token, {"token": "live-token"})[0], 200)  # match leaves it queued
        status, reply = self.fcm_send(token, {"token": "gone-token"})
        self.assertEqual((status, reply["error"]["status"]), (404, "NOT_FOUND"))
        self.assertEqual(
            reply["error"]["details"],
            [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}],
        )
        rec = self.last("fcm.send")
        self.assertTrue(rec["scripted"] and rec["verified"], rec)
        self.assertEqual(self.fcm_send(token, {"token": "gone-token"})[0], 200)  # consumed
        expected = {
            "UNAVAILABLE": 503,
            "QUOTA_EXCEEDED": 429,
            "INVALID_ARGUMENT": 400,
            "SENDER_ID_MISMATCH": 403,
            "THIRD_PARTY_AUTH_ERROR": 401,
            "INTERNAL": 500,
        }
        self.script("fcm.send", [{"fcm_error": code, "headers": {"Retry-After": "7"}} for code in expected])
        for code, want in expected.items():
            with self.subTest(code):
                status, headers, data = self.call(
                    "POST",
                    "/v1/projects/herald-test/messages:send",
                    {"message": {"token": "t"}},
                    {"Authorization": f"Bearer {token}"},
                )
                self.assertEqual(status, want)
                self.assertEqual(headers["retry-after"], "7")
                self.assertEqual(json.loads(data)["error"]["details"][-1]["errorCode"], code)
        self.script("fcm.send", [{"status": 502, "body": "<html>502 Bad Gateway</html>"}])
        status, reply = self.fcm_send(token, {"token": "t"})
        self.assertEqual((status, reply), (502, "<html>502 Bad Gateway</html>"))

    # -- Web Push

    def vapid_headers(self, key=None, k=None, **claims):
        key = key or self.vapid
        claims = {"aud": self.origin, "exp": int(time.time()) + 3600, "sub": "mailto:ops@example.com", **claims}
        return {
            "Authorization": f"vapid t={jwt_es256(key, claims)}, k={b64url(k or point(key))}",
            "TTL": "60",
            "Content-Encoding": "aes128gcm",
            "Urgency": "high",
            "Topic": "orders",
        }

    def webpush_setup(self):
        self.vapid = ec.generate_private_key(ec.SECP256R1())
        self.ua = ec.generate_private_key(ec.SECP256R1())
        self.auth = b"0123456789abcdef"
        self.configure(
            webpush={
                "subscriptions": {
                    "rfc": {"private_key": RFC8291["ua_private"], "auth": RFC8291["auth"]},
                    "fresh": {"private_key": scalar(self.ua), "auth": b64url(self.auth)},
                }
            }
        )

    def encrypt(self, plaintext: bytes) -> bytes:
        sender = ec.generate_private_key(ec.SECP256R1())
        return http_ece.encrypt(
            plaintext, private_key=sender, dh=point(self.ua), auth_secret=self.auth, version="aes128gcm"
        )

    def test_webpush_rfc8291_vector(self):
        self.webpush_setup()
        status, headers, _ = self.call("POST", "/push/rfc", unb64url(RFC8291["body"]), self.vapid_headers())
        self.assertEqual(status, 201)
        self.assertEqual((headers["location"], headers["ttl"]), ("/push/rfc/msg/1", "60"))
        rec = self.last("webpush")
        self.assertTrue(rec["verified"], rec)
        self.assertEqual(rec["decrypted"], RFC8291["plaintext"])
        self.assertEqual((rec["headers"]["urgency"], rec["headers"]["topic"]), ("high", "orders"))

    def test_webpush_decrypts_what_http_ece_encrypts(self):
        self.webpush_setup()
        payload = json.dumps({"title": "Hi", "body": "ünïcode"}).encode()
        for n in (1, 2):
            status, headers, _ = self.call("POST", "/push/fresh", self.encrypt(payload), self.vapid_headers())
            self.assertEqual((status, headers["location"]), (201, f"/push/fresh/msg/{n}"))
        self.assertEqual(self.last("webpush")["decrypted"], payload.decode())

    def test_webpush_rejects_like_a_push_service(self):
        self.webpush_setup()
        other = ec.generate_private_key(ec.SECP256R1())
        body = self.encrypt(b"hello")
        tampered = body[:-1] + bytes([body[-1] ^ 1])
        good = self.vapid_headers()
        no_ttl = {k: v for k, v in good.items() if k != "TTL"}
        cases = [
            ("unknown subscription", "/push/nobody", body, good, 410, "no subscription"),
            (
                "no authorization",
                "/push/fresh",
                body,
                {k: v for k, v in good.items() if k != "Authorization"},
                401,
                "vapid",
            ),
            ("aud", "/push/fresh", body, self.vapid_headers(aud="https://push.example.net"), 403, "aud"),
            ("exp over 24 h", "/push/fresh", body, self.vapid_headers(exp=int(time.time()) + 90000), 403, "24 h"),
            ("sub", "/push/fresh", body, self.vapid_headers(sub="ops@example.com"), 403, "sub"),
            ("k is not the signer", "/push/fresh", body, self.vapid_headers(k=point(other)), 403, "does not verify"),
            ("no TTL", "/push/fresh", body, no_ttl, 400, "TTL"),
            ("encoding", "/push/fresh", body, {**good, "Content-Encoding": "aesgcm"}, 400, "aes128gcm"),
            ("tampered", "/push/fresh", tampered, good, 400, "decryption"),
            ("too large", "/push/fresh", b"\0" * 4097, good, 413, "4096"),
        ]
        for name, path, payload, headers, status_want, fragment in cases:
            with self.subTest(name):
                status, _, _ = self.call("POST", path, payload, headers)
                self.assertEqual(status, status_want)
                self.assert_rejected("webpush", fragment)
        self.configure(
            webpush={
                "subscriptions": {"fresh": {"private_key": scalar(self.ua), "auth": b64url(self.auth)}},
                "vapid_public_key": b64url(point(other)),
            }
        )
        self.assertEqual(self.call("POST", "/push/fresh", body, good)[0], 403)
        self.assert_rejected("webpush", "VAPID public key")

    # -- DingTalk

    def ding_path(self, token, secret=None, timestamp_ms=None, encode=True):
        query = {"access_token": token}
        if secret:
            ts = str(timestamp_ms or int(time.time() * 1000))
            sign = base64.b64encode(
                hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
            ).decode()
            query.update(timestamp=ts, sign=sign)
        if encode:
            return "/dingtalk/robot/send?" + urllib.parse.urlencode(query)
        return "/dingtalk/robot/send?" + "&".join(f"{k}={v}" for k, v in query.items())

    def test_dingtalk(self):
        self.configure(
            dingtalk={
                "robots": {
                    "signed": {"secret": "SECdeadbeef"},
                    "plain": {"secret": None},
                    "kw": {"keywords": ["Herald"]},
                    "busy": {},
                }
            },
            rate_limits={"dingtalk_per_min": 2},
        )
        text = {"msgtype": "text", "text": {"content": "Herald: deploy done"}, "at": {"atMobiles": ["13800000000"]}}
        ok = {"errcode": 0, "errmsg": "ok"}
        self.assertEqual(self.post(self.ding_path("signed", "SECdeadbeef"), text), (200, ok))
        self.assertEqual(
            self.post(self.ding_path("plain"), {"msgtype": "markdown", "markdown": {"title": "t", "text": "# hi"}}),
            (200, ok),
        )
        stale = int(time.time() * 1000) - 2 * 3600 * 1000
        cases = [
            ("bad sign", self.ding_path("signed", "SECwrong"), text, 310000, "sign not match", "sign"),
            ("no sign", self.ding_path("signed"), text, 310000, "sign not match", "no timestamp/sign"),
            ("stale", self.ding_path("signed", "SECdeadbeef", stale), text, 310000, "invalid timestamp", "within 1 h"),
            ("unknown token", self.ding_path("nobody"), text, 300001, "token is not exist", "unknown access_token"),
            (
                "keywords",
                self.ding_path("kw"),
                {"msgtype": "text", "text": {"content": "no key word"}},
                310000,
                "keywords not in content",
                "keywords",
            ),
            ("msgtype", self.ding_path("plain"), {"msgtype": "video", "video": {}}, 40008, "", "msgtype"),
            (
                "markdown title",
                self.ding_path("plain"),
                {"msgtype": "markdown", "markdown": {"text": "x"}},
                40035,
                "",
                "markdown.title",
            ),
        ]
        for name, path, body, errcode, errmsg, fragment in cases:
            with self.subTest(name):
                status, reply = self.post(path, body)
                self.assertEqual((status, reply["errcode"]), (200, errcode), reply)
                self.assertTrue(reply["errmsg"].startswith(errmsg), reply)
                self.assert_rejected("dingtalk", fragment)
        # DingTalk wants the sign URL-encoded: a raw '+' arrives as a space.
        for _ in range(20):
            path = self.ding_path("signed", "SECdeadbeef", encode=False)
            if "+" in path:
                self.assertEqual(self.post(path, text)[1]["errcode"], 310000)
                self.assert_rejected("dingtalk", "not URL-encoded")
                break
        self.assertEqual(self.post(self.ding_path("kw"), text), (200, ok))
        replies = [self.post(self.ding_path("busy"), text)[1] for _ in range(3)]
        self.assertEqual(replies[2], {"errcode": 130101, "errmsg": "send too fast, exceed 2 times per minute"})
        self.assertTrue(self.last("dingtalk")["verified"])

    # -- Feishu

    def feishu_body(self, message, secret=None, timestamp=None):
        if secret is None:
            return message
        ts = str(timestamp or int(time.time()))
        sign = base64.b64encode(hmac.new(f"{ts}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()
        return {"timestamp": ts, "sign": sign, **message}

    def test_feishu(self):
        self.configure(
            feishu={"hooks": {"signed": {"secret": "fsecret"}, "plain": {}, "busy": {}}},
            rate_limits={"feishu_per_s": 1},
        )
        path = "/feishu/open-apis/bot/v2/hook/"
        text = {"msg_type": "text", "content": {"text": "deploy done"}}
        ok = {"code": 0, "msg": "success", "data": {}}
        self.assertEqual(self.post(path + "signed", self.feishu_body(text, "fsecret")), (200, ok))
        post = {
            "msg_type": "post",
            "content": {"post": {"zh_cn": {"title": "t", "content": [[{"tag": "text", "text": "x"}]]}}},
        }
        self.assertEqual(self.post(path + "plain", post), (200, ok))
        cases = [
            ("bad sign", "signed", self.feishu_body(text, "wrong"), 19021, "sign"),
            ("stale", "signed", self.feishu_body(text, "fsecret", int(time.time()) - 7200), 19021, "over 1 h"),
            ("unsigned", "signed", text, 19021, "timestamp"),
            ("unknown token", "nobody", text, 19001, "unknown hook"),
            ("no msg_type", "plain", {"content": {"text": "x"}}, 19002, "msg_type"),
            ("too big", "plain", {"msg_type": "text", "content": {"text": "x" * 21000}}, 9499, "20 KB"),
            ("card", "plain", {"msg_type": "interactive", "content": {}}, 9499, "card"),
        ]
        for name, hook, body, code, fragment in cases:
            with self.subTest(name):
                status, reply = self.post(path + hook, body)
                self.assertEqual((status, reply["code"]), (200, code), reply)
                self.assert_rejected("feishu", fragment)
        self.assertEqual(self.post(path + "busy", text), (200, ok))
        status, reply = self.post(path + "busy", text)  # a second one within the second
        self.assertEqual((status, reply["code"]), (200, 11232))
        self.assertTrue(self.last("feishu")["verified"])

    # -- WeCom and Slack

    def test_wecom(self):
        self.configure(wecom={"keys": ["k1"]}, rate_limits={"wecom_per_min": 3})
        path = "/wecom/cgi-bin/webhook/send?key="
        self.assertEqual(
            self.post(path + "k1", {"msgtype": "text", "text": {"content": "hi", "mentioned_list": ["@all"]}}),
            (200, {"errcode": 0, "errmsg": "ok"}),
        )
        self.assertEqual(
            self.post(path + "k1", {"msgtype": "markdown", "markdown": {"content": "**hi**"}})[1]["errcode"], 0
        )
        cases = [
            ("unknown key", "nope", {"msgtype": "text", "text": {"content": "hi"}}, 93000, "invalid webhook url"),
            ("text too long", "k1", {"msgtype": "text", "text": {"content": "字" * 683}}, 40058, "text.content exceed"),
            ("msgtype", "k1", {"msgtype": "voice", "voice": {}}, 40008, "invalid message type"),
        ]
        for name, key, body, errcode, errmsg in cases:
            with self.subTest(name):
                status, reply = self.post(path + key, body)
                self.assertEqual((status, reply["errcode"]), (200, errcode), reply)
                self.assertTrue(reply["errmsg"].startswith(errmsg), reply)
                self.assertIn("more info at https://open.work.weixin.qq.com/devtool/query?e=", reply["errmsg"])
                self.assertFalse(self.last("wecom")["verified"])
        self.assertEqual(self.post(path + "k1", {"msgtype": "text", "text": {"content": "3rd"}})[1]["errcode"], 0)
        self.assertEqual(self.post(path + "k1", {"msgtype": "text", "text": {"content": "4th"}})[1]["errcode"], 45009)

    def test_slack(self):
        self.configure(slack={"hooks": ["T000/B000/XXXX"]})
        status, headers, data = self.call("POST", "/slack/services/T000/B000/XXXX", {"text": "hello"})
        self.assertEqual((status, data, headers["content-type"]), (200, b"ok", "text/html"))
        self.assertEqual(self.post("/slack/services/T000/B000/XXXX", {"blocks": [{"type": "section"}]}), (200, "ok"))
        self.assertEqual(self.post("/slack/services/T000/B000/XXXX", {"username": "x"}), (400, "no_text"))
        self.assertEqual(self.post("/slack/services/T000/B000/YYYY", {"text": "x"}), (404, "no_service"))
        self.assertEqual(
            self.post(
                "/slack/services/T000/B000/XXXX", b"text=x", {"Content-Type": "application/x-www-form-urlencoded"}
            ),
            (400, "invalid_payload"),
        )
        self.assert_rejected("slack", "content-type")

    # -- Standard Webhooks

    def test_webhook_published_vector_on_a_fixed_clock(self):
        self.configure(
            webhook={"endpoints": {"vec": {"secret": SW_VECTOR["secret"]}}}, fixed_now_s=SW_VECTOR["timestamp"]
        )
        headers = {
            "webhook-id": SW_VECTOR["id"],
            "webhook-timestamp": str(SW_VECTOR["timestamp"]),
            "webhook-signature": SW_VECTOR["signature"],
            "Content-Type": "application/json",
        }
        self.assertEqual(self.call("POST", "/hook/vec", SW_VECTOR["body"], headers)[0], 200)
        rec = self.last("webhook")
        self.assertTrue(rec["verified"], rec)
        self.assertEqual(rec["headers"]["webhook-id"], SW_VECTOR["id"])
        rotated = {**headers, "webhook-signature": "v1,Zm9yZ2Vk " + SW_VECTOR["signature"]}
        self.assertEqual(self.call("POST", "/hook/vec", SW_VECTOR["body"], rotated)[0], 200)
        self.assertEqual(
            self.call("POST", "/hook/vec", SW_VECTOR["body"].replace(b"test_user", b"evil"), headers)[0], 401
        )
        self.assert_rejected("webhook", "no v1 signature matches")

    def test_webhook_on_the_real_clock(self):
        secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
        self.configure(webhook={"endpoints": {"live": {"secret": secret}}})
        body = b'{"type":"message.sent","id":"m1"}'

        def headers(ts):
            mac = hmac.new(b"k" * 32, f"msg_1.{ts}.".encode() + body, hashlib.sha256).digest()
            return {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(ts),
                "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            }

        self.assertEqual(self.call("POST", "/hook/live", body, headers(int(time.time())))[0], 200)
        self.assertEqual(self.call("POST", "/hook/live", body, headers(int(time.time()) - 600))[0], 401)
        self.assert_rejected("webhook", "±300 s")
        self.assertEqual(self.call("POST", "/hook/live", body, {"webhook-id": "msg_1"})[0], 401)
        self.assert_rejected("webhook", "missing header")
        self.assertEqual(self.call("POST", "/hook/nobody", body, headers(int(time.time())))[0], 404)

    # -- Aliyun SMS

    def test_acs3_signer_matches_aliyun_worked_example_and_pinned_sendsms(self):
        for vector in (ALIYUN_DOC, ALIYUN_SMS):
            with self.subTest(vector["headers"]["x-acs-action"]):
                names, own = aliyun_v3(vector["secret"], vector["query"], vector["headers"], b"")
                mine, _ = self.mock.acs3_signature(
                    vector["secret"],
                    "POST",
                    "/",
                    urllib.parse.parse_qsl(vector["query"]),
                    vector["headers"],
                    names.split(";"),
                    hashlib.sha256(b"").hexdigest(),
                )
                self.assertEqual(own, vector["signature"])
                self.assertEqual(mine, vector["signature"])

    def aliyun_send(self, params, secret="ali-secret", in_body=False, nonce=None, date=None):
        encoded = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        body = encoded.encode() if in_body else b""
        query = "" if in_body else encoded
        headers = {
            "host": f"127.0.0.1:{self.port}",
            "x-acs-action": "SendSms",
            "x-acs-version": "2017-05-25",
            "x-acs-date": date or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        }
        if in_body:
            headers["content-type"] = "application/x-www-form-urlencoded"
        names, signature = aliyun_v3(secret, query, headers, body)
        headers["authorization"] = f"ACS3-HMAC-SHA256 Credential=ali-id,SignedHeaders={names},Signature={signature}"
        return self.post("/aliyun/" + ("?" + query if query else ""), body, headers)

    def test_aliyun_sendsms(self):
        self.configure(aliyun={"access_key_id": "ali-id", "access_key_secret": "ali-secret"})
        params = {
            "PhoneNumbers": "13800000000",
            "SignName": "阿里云短信测试",
            "TemplateCode": "SMS_154950909",
            "TemplateParam": json.dumps({"code": "1234"}),
        }
        status, reply = self.aliyun_send(params)
        self.assertEqual((status, reply["Code"], reply["Message"]), (200, "OK", "OK"), reply)
        self.assertTrue(reply["BizId"].endswith("^0") and reply["RequestId"])
        rec = self.last("aliyun")
        self.assertTrue(rec["verified"], rec)
        self.assertEqual(rec["target"], "13800000000")
        status, reply = self.aliyun_send(params, in_body=True)
        self.assertEqual((status, reply["Code"]), (200, "OK"), reply)
        stale = datetime.fromtimestamp(time.time() - 1800, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        cases = [
            ("wrong secret", dict(params), {"secret": "other"}, 400, "SignatureDoesNotMatch", "expected"),
            ("stale date", dict(params), {"date": stale}, 400, "InvalidTimeStamp.Expired", "15 min"),
            ("bad phone", {**params, "PhoneNumbers": "13800000000,12ab"}, {}, 200, "isv.MOBILE_NUMBER_ILLEGAL", "12ab"),
            (
                "template param",
                {**params, "TemplateParam": '{"code":1234}'},
                {},
                200,
                "isv.INVALID_JSON_PARAM",
                "strings",
            ),
            (
                "no sign name",
                {k: v for k, v in params.items() if k != "SignName"},
                {},
                400,
                "MissingSignName",
                "SignName",
            ),
        ]
        for name, p, options, status_want, code, fragment in cases:
            with self.subTest(name):
                status, reply = self.aliyun_send(p, **options)
                self.assertEqual((status, reply["Code"]), (status_want, code), reply)
                self.assert_rejected("aliyun", fragment)
        status, reply = self.aliyun_send(params, secret="other")
        self.assertIn("server string to sign is:ACS3-HMAC-SHA256\n", reply["Message"])
        self.assertEqual(self.aliyun_send(params, nonce="once")[1]["Code"], "OK")
        status, reply = self.aliyun_send(params, nonce="once")
        self.assertEqual((status, reply["Code"]), (400, "SignatureNonceUsed"))
        self.script("aliyun", [{"aliyun_code": "isv.BUSINESS_LIMIT_CONTROL"}], match="13900000000")
        self.assertEqual(self.aliyun_send(params)[1]["Code"], "OK")
        status, reply = self.aliyun_send({**params, "PhoneNumbers": "13800000000,13900000000"})
        self.assertEqual((status, reply["Code"]), (200, "isv.BUSINESS_LIMIT_CONTROL"))

    # -- Tencent SMS

    def test_tc3_signer_matches_tencent_worked_example_and_pinned_sendsms(self):
        for vector in (TENCENT_DOC, TENCENT_SMS):
            with self.subTest(vector["service"]):
                own = tencent_tc3(
                    vector["secret_key"],
                    vector["host"],
                    vector["content_type"],
                    vector["timestamp"],
                    vector["body"],
                    vector["service"],
                )
                headers = {"content-type": vector["content_type"], "host": vector["host"]}
                mine = self.mock.tc3_signature(
                    vector["secret_key"],
                    vector["service"],
                    vector["timestamp"],
                    "POST",
                    "/",
                    "",
                    headers,
                    ["content-type", "host"],
                    vector["body"],
                )
                self.assertEqual(own, vector["signature"])
                self.assertEqual(mine, vector["signature"])

    def tencent_send(
        self,
        body,
        secret_key="tc-key",
        secret_id="tc-id",
        timestamp=None,
        content_type="application/json; charset=utf-8",
    ):
        ts = timestamp or int(time.time())
        raw = json.dumps(body, ensure_ascii=False).encode()
        host = f"127.0.0.1:{self.port}"
        date = datetime.fromtimestamp(ts, timezone.utc).date().isoformat()
        signature = tencent_tc3(secret_key, host, content_type, ts, raw)
        headers = {
            "Host": host,
            "Content-Type": content_type,
            "X-TC-Action": "SendSms",
            "X-TC-Version": "2021-01-11",
            "X-TC-Region": "ap-guangzhou",
            "X-TC-Timestamp": str(ts),
            "Authorization": f"TC3-HMAC-SHA256 Credential={secret_id}/{date}/sms/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={signature}",
        }
        return self.post("/tencent/", raw, headers)

    def test_tencent_sendsms(self):
        self.configure(tencent={"secret_id": "tc-id", "secret_key": "tc-key"})
        body = {
            "PhoneNumberSet": ["+8613800000000", "13900000000"],
            "SmsSdkAppId": "1400000000",
            "SignName": "腾讯云",
            "TemplateId": "1000000",
            "TemplateParamSet": ["1234"],
        }
        status, reply = self.tencent_send(body)
        self.assertEqual(status, 200, reply)
        entries = reply["Response"]["SendStatusSet"]
        self.assertEqual(
            [(e["PhoneNumber"], e["Code"], e["Message"], e["IsoCode"], e["Fee"]) for e in entries],
            [("+8613800000000", "Ok", "send success", "CN", 1), ("+8613900000000", "Ok", "send success", "CN", 1)],
        )
        self.assertTrue(all(e["SerialNo"] for e in entries) and reply["Response"]["RequestId"])
        self.assertTrue(self.last("tencent")["verified"])
        status, reply = self.tencent_send(body, content_type="application/json; charset=UTF-8")
        self.assertEqual(reply["Response"]["SendStatusSet"][0]["Code"], "Ok", reply)  # values sign lower-cased
        status, reply = self.tencent_send({**body, "PhoneNumberSet": ["12345"]})
        self.assertEqual(reply["Response"]["SendStatusSet"][0]["Code"], "InvalidParameterValue.IncorrectPhoneNumber")
        cases = [
            ("wrong key", {"secret_key": "other"}, "AuthFailure.SignatureFailure", "expected"),
            ("stale", {"timestamp": int(time.time()) - 600}, "AuthFailure.SignatureExpire", "5 min"),
            ("unknown id", {"secret_id": "who"}, "AuthFailure.SecretIdNotFound", "SecretId"),
        ]
        for name, options, code, fragment in cases:
            with self.subTest(name):
                status, reply = self.tencent_send(body, **options)
                self.assertEqual((status, reply["Response"]["Error"]["Code"]), (200, code), reply)
                self.assert_rejected("tencent", fragment)
        self.assertEqual(
            self.tencent_send({"PhoneNumberSet": ["+8613800000000"]})[1]["Response"]["Error"]["Code"],
            "MissingParameter",
        )
        self.script("tencent", [{"tencent_code": "LimitExceeded.PhoneNumberThirtySecondLimit"}], match="13900000000")
        status, reply = self.tencent_send(body)
        self.assertEqual(
            [e["Code"] for e in reply["Response"]["SendStatusSet"]],
            ["Ok", "LimitExceeded.PhoneNumberThirtySecondLimit"],
        )
        self.script("tencent", [{"tencent_code": "FailedOperation.InsufficientBalanceInSmsPackage"}])
        codes = [e["Code"] for e in self.tencent_send(body)[1]["Response"]["SendStatusSet"]]
        self.assertEqual(codes, ["FailedOperation.InsufficientBalanceInSmsPackage"] * 2)
        self.script("tencent", [{"tencent_error": "RequestLimitExceeded"}])
        self.assertEqual(self.tencent_send(body)[1]["Response"]["Error"]["Code"], "RequestLimitExceeded")


if __name__ == "__main__":
    unittest.main()
