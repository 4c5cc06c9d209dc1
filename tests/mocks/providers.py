#!/usr/bin/env python3
"""Mock push, chat-bot and SMS providers for Herald's integration tests.

One HTTP/1.1 server on 127.0.0.1 with the real API shape of: FCM HTTP v1 and its OAuth2
token endpoint, Web Push (RFC 8030 + RFC 8291 aes128gcm + RFC 8292 VAPID), the DingTalk,
Feishu and WeCom group robots, Slack incoming webhooks, Standard Webhooks receivers,
Aliyun SMS (ACS3-HMAC-SHA256) and Tencent Cloud SMS (TC3-HMAC-SHA256). Each route VERIFIES
what the real service would (signatures, tokens, encryption, field shapes, size and rate
limits) and refuses with that service's real error body. Facts: shared/reference/channels.md.

    python tests/mocks/providers.py [--port 0]

prints one line, `listening on http://127.0.0.1:PORT`, then serves until killed.

Tests drive it over HTTP (all JSON):
    POST   /_config               credentials, subscriptions, robots, limits (see CONFIG_PARSERS)
    POST   /_script               queue canned answers for a route (see Script)
    DELETE /_script               drop every queued answer
    GET    /_requests[?route=R]   every request seen, oldest first, with the verdict
    DELETE /_requests[?route=R]   forget them
    GET    /_stats                {"fcm_tokens_minted": N, "<route>": requests seen, ...}

A record's `verified` is false when the real service would refuse the request for what it
contains (bad signature, unknown credential, wrong shape, over a size limit); `error` then
says precisely why. A rate-limited or scripted answer leaves `verified` as the request
deserves. Time checks use the real clock unless `fixed_now_s` is configured.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import http.server
import json
import re
import secrets
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from standardwebhooks.webhooks import Webhook

ROUTES = ("fcm.token", "fcm.send", "webpush", "dingtalk", "feishu", "wecom", "slack", "webhook", "aliyun", "tencent")

# Far above every provider's own limit; a body past it is refused before it is buffered.
MAX_BODY = 8 * 1024 * 1024


# ---------------------------------------------------------------- requests and answers


@dataclass
class Request:
    method: str
    path: str
    raw_query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def __post_init__(self) -> None:
        self.query: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True):
            self.query.setdefault(name, value)
        try:
            self.json: Any = json.loads(self.body) if self.body else None
        except ValueError:
            self.json = None

    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(status: int, value: Any, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps(value, ensure_ascii=False).encode()
    return Answer(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


def text_answer(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Answer:
    return Answer(status, text.encode(), {"Content-Type": content_type})


class Rejected(Exception):
    """A request the real provider would refuse: `reason` (recorded) says precisely why,
    `answer` is the provider's real reply."""

    def __init__(self, reason: str, answer: Answer):
        super().__init__(reason)
        self.reason = reason
        self.answer = answer


def require_post(req: Request) -> None:
    if req.method != "POST":
        raise Rejected(
            f"method {req.method}: the provider only accepts POST here", text_answer(405, "Method Not Allowed")
        )


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def hmac_sha256(key: bytes, msg: bytes | str) -> bytes:
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).digest()


def parse_jws(token: str) -> tuple[dict, dict, bytes, bytes]:
    """A compact JWS as (header, claims, signing input, signature); ValueError says what is wrong."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"a JWT has 3 dot-separated parts, this one has {len(parts)}")
    if any("=" in part for part in parts):
        raise ValueError("JWT parts must be unpadded base64url (RFC 7515 §2)")
    try:
        header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError as e:
        raise ValueError(f"JWT parts are not base64url JSON: {e}") from e
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def is_digits(text: str | None) -> bool:
    """ASCII digits only (str.isdigit also takes "²", which int() refuses)."""
    return text is not None and re.fullmatch(r"[0-9]+", text) is not None


def int_claim(claims: dict, name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"claim {name!r} must be an integer (NumericDate), got {value!r}")
    return value


# ---------------------------------------------------------------- state

DEFAULT_RATE_LIMITS = {"dingtalk_per_min": 20, "wecom_per_min": 20, "feishu_per_min": 100, "feishu_per_s": 5}


class State:
    """Everything the mock remembers. One lock guards it; config values are replaced whole,
    never mutated, so a handler can read one without the lock."""

    def __init__(self, origin: str):
        self.origin = origin
        self.lock = threading.Lock()
        self.config: dict[str, Any] = {"rate_limits": dict(DEFAULT_RATE_LIMITS), "fixed_now_s": None}
        self.records: list[dict] = []
        self.scripts: dict[str, list[Script]] = {route: [] for route in ROUTES}
        self.access_tokens: dict[str, float] = {}  # minted FCM token -> expiry (mock clock)
        self.nonces: set[str] = set()  # Aliyun x-acs-signature-nonce values already used
        self.windows: dict[tuple, collections.deque] = collections.defaultdict(collections.deque)
        self.push_seq: collections.Counter = collections.Counter()
        self.stats: collections.Counter = collections.Counter()

    def now(self) -> float:
        fixed = self.config["fixed_now_s"]
        return time.time() if fixed is None else fixed

    def take_script(self, route: str, targets: list[str]) -> Script | None:
        with self.lock:
            queue = self.scripts[route]
            for i, script in enumerate(queue):
                if script.match is None or script.match in targets:
                    return queue.pop(i)
        return None

    def admit(self, route: str, target: str, limits: list[tuple[int, float]]) -> bool:
        """Sliding-window rate limit per robot. Uses the monotonic clock (real elapsed time),
        not `fixed_now_s`, so a frozen clock never freezes a window."""
        now = time.monotonic()
        with self.lock:
            windows = [(limit, self.windows[(route, target, span)], span) for limit, span in limits]
            for limit, window, span in windows:
                while window and window[0] <= now - span:
                    window.popleft()
                if len(window) >= limit:
                    return False
            for _, window, _ in windows:
                window.append(now)
            return True

    def mint_token(self, lifetime_s: int, now: float) -> str:
        token = "ya29.mock-" + secrets.token_urlsafe(24)
        with self.lock:
            self.access_tokens[token] = now + lifetime_s
            self.stats["fcm_tokens_minted"] += 1
        return token

    def token_expiry(self, token: str) -> float | None:
        with self.lock:
            return self.access_tokens.get(token)

    def use_nonce(self, nonce: str) -> bool:
        with self.lock:
            if nonce in self.nonces:
                return False
            self.nonces.add(nonce)
            return True

    def next_push(self, subscription: str) -> int:
        with self.lock:
            self.push_seq[subscription] += 1
            return self.push_seq[subscription]


# ---------------------------------------------------------------- configuration


def check_fields(value: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    missing, unknown = required - value.keys(), value.keys() - required - optional
    if missing or unknown:
        raise ValueError(f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return value


def check_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string")
    return value


def check_str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be a list of non-empty strings")
    return value


def parse_fcm(v: Any) -> dict:
    check_fields(v, "fcm", {"project_id", "client_email", "public_key_pem"}, {"token_lifetime_s"})
    key = serialization.load_pem_public_key(check_str(v["public_key_pem"], "fcm.public_key_pem").encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("fcm.public_key_pem must be the service account's RSA public key")
    lifetime = v.get("token_lifetime_s", 3600)
    if not isinstance(lifetime, int) or lifetime <= 0:
        raise ValueError("fcm.token_lifetime_s must be a positive integer")
    return {
        "project_id": check_str(v["project_id"], "fcm.project_id"),
        "client_email": check_str(v["client_email"], "fcm.client_email"),
        "public_key": key,
        "token_lifetime_s": lifetime,
    }


def parse_webpush(v: Any) -> dict:
    check_fields(v, "webpush", {"subscriptions"}, {"vapid_public_key"})
    if not isinstance(v["subscriptions"], dict):
        raise ValueError("webpush.subscriptions must be an object")
    subscriptions = {}
    for sid, sub in v["subscriptions"].items():
        where = f"webpush.subscriptions.{sid}"
        check_fields(sub, where, {"private_key", "auth"})
        scalar = b64url_decode(check_str(sub["private_key"], where + ".private_key"))
        auth = b64url_decode(check_str(sub["auth"], where + ".auth"))
        if len(scalar) != 32 or len(auth) != 16:
            raise ValueError(f"{where}: private_key must be 32 bytes and auth 16 (base64url)")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
        subscriptions[sid] = {"key": key, "auth": auth}
    vapid = v.get("vapid_public_key")
    if vapid is not None:
        vapid = b64url_decode(check_str(vapid, "webpush.vapid_public_key"))
        if len(vapid) != 65 or vapid[0] != 4:
            raise ValueError("webpush.vapid_public_key must be a 65-byte uncompressed P-256 point")
    return {"subscriptions": subscriptions, "vapid_public_key": vapid}


def parse_signed_bots(v: Any, provider: str, collection: str) -> dict:
    check_fields(v, provider, {collection})
    if not isinstance(v[collection], dict):
        raise ValueError(f"{provider}.{collection} must be an object")
    bots = {}
    for token, bot in v[collection].items():
        where = f"{provider}.{collection}.{token}"
        check_fields(bot, where, set(), {"secret", "keywords"})
        secret = bot.get("secret")
        bots[token] = {
            "secret": None if secret is None else check_str(secret, where + ".secret"),
            "keywords": check_str_list(bot.get("keywords", []), where + ".keywords"),
        }
    return bots


def parse_webhook(v: Any) -> dict:
    check_fields(v, "webhook", {"endpoints"})
    if not isinstance(v["endpoints"], dict):
        raise ValueError("webhook.endpoints must be an object")
    endpoints = {}
    for name, endpoint in v["endpoints"].items():
        check_fields(endpoint, f"webhook.endpoints.{name}", {"secret"})
        endpoints[name] = Webhook(check_str(endpoint["secret"], f"webhook.endpoints.{name}.secret"))
    return endpoints


def parse_pair(v: Any, provider: str, id_key: str, secret_key: str) -> dict:
    check_fields(v, provider, {id_key, secret_key})
    return {
        id_key: check_str(v[id_key], f"{provider}.{id_key}"),
        secret_key: check_str(v[secret_key], f"{provider}.{secret_key}"),
    }


def parse_rate_limits(v: Any) -> dict:
    check_fields(v, "rate_limits", set(), set(DEFAULT_RATE_LIMITS))
    for name, limit in v.items():
        if not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"rate_limits.{name} must be a positive integer")
    return {**DEFAULT_RATE_LIMITS, **v}


def parse_fixed_now(v: Any) -> float | None:
    if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
        raise ValueError("fixed_now_s must be unix seconds or null (the real clock)")
    return v


CONFIG_PARSERS: dict[str, Callable[[Any], Any]] = {
    "fcm": parse_fcm,
    "webpush": parse_webpush,
    "dingtalk": lambda v: parse_signed_bots(v, "dingtalk", "robots"),
    "feishu": lambda v: parse_signed_bots(v, "feishu", "hooks"),
    "wecom": lambda v: set(check_str_list(check_fields(v, "wecom", {"keys"})["keys"], "wecom.keys")),
    "slack": lambda v: set(check_str_list(check_fields(v, "slack", {"hooks"})["hooks"], "slack.hooks")),
    "webhook": parse_webhook,
    "aliyun": lambda v: parse_pair(v, "aliyun", "access_key_id", "access_key_secret"),
    "tencent": lambda v: parse_pair(v, "tencent", "secret_id", "secret_key"),
    "rate_limits": parse_rate_limits,
    "fixed_now_s": parse_fixed_now,  # freeze the clock every time check uses (e.g. published vectors)
}


# ---------------------------------------------------------------- one exchange


@dataclass
class Exchange:
    state: State
    req: Request
    params: tuple[str, ...]  # groups of the route's path pattern
    # False while a script supplies the answer: verify and record, but change nothing that only
    # a real answer would (mint tokens, fill rate windows, number push messages).
    live: bool
    now: float
    decrypted: str | None = None

    def config(self, name: str) -> Any:
        return self.state.config.get(name)


# ---------------------------------------------------------------- FCM HTTP v1 + OAuth2

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

# errorCode -> (HTTP status, google.rpc status, message), as FCM v1 answers them.
FCM_ERRORS = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}


def google_error(code: int, status: str, message: str, details: list | None = None) -> Answer:
    error = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return json_answer(code, {"error": error})


def fcm_error_answer(error_code: str, message: str | None = None, violations: list | None = None) -> Answer:
    """FCM's error with its FcmError detail; `violations` (even empty) adds a BadRequest detail."""
    status, rpc_status, default_message = FCM_ERRORS[error_code]
    details = []
    if violations is not None:
        details.append({"@type": BAD_REQUEST_TYPE, **({"fieldViolations": violations} if violations else {})})
    details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    return google_error(status, rpc_status, message or default_message, details)


def fcm_bad_request(field_path: str, description: str) -> Answer:
    """What Google's JSON parser says about a field FCM cannot read: a BadRequest detail only."""
    violation = {"field": field_path, "description": description} if field_path else {"description": description}
    return google_error(
        400, "INVALID_ARGUMENT", description, [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]}]
    )


def token_error(error: str, description: str) -> Answer:
    return json_answer(400, {"error": error, "error_description": description})


def handle_fcm_token(x: Exchange) -> Answer:
    """OAuth2 JWT-bearer grant (Google service accounts): check the assertion, mint a token."""
    req, cfg = x.req, x.config("fcm")
    require_post(req)
    if req.media_type() != "application/x-www-form-urlencoded":
        raise Rejected(
            f"content-type is {req.media_type()!r}, the token endpoint takes a form",
            token_error("invalid_request", "Invalid request: form body expected."),
        )
    form = dict(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
    if form.get("grant_type") != JWT_BEARER:
        raise Rejected(
            f"grant_type is {form.get('grant_type')!r}, want {JWT_BEARER}",
            token_error("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}"),
        )
    if not form.get("assertion"):
        raise Rejected("form has no assertion", token_error("invalid_request", "Missing required parameter: assertion"))
    if cfg is None:
        raise Rejected("fcm is not configured", token_error("invalid_grant", "Invalid grant: account not found"))
    try:
        header, claims, signing_input, signature = parse_jws(form["assertion"])
    except ValueError as e:
        raise Rejected(f"assertion: {e}", token_error("invalid_grant", "Invalid JWT: malformed.")) from e
    if header.get("alg") != "RS256":
        raise Rejected(
            f"assertion alg is {header.get('alg')!r}, want RS256",
            token_error("invalid_grant", "Invalid JWT Signature."),
        )
    try:
        cfg["public_key"].verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as e:
        raise Rejected(
            "assertion signature does not verify with the configured public key",
            token_error("invalid_grant", "Invalid JWT Signature."),
        ) from e
    if claims.get("iss") != cfg["client_email"]:
        raise Rejected(
            f"iss is {claims.get('iss')!r}, want {cfg['client_email']!r}",
            token_error("invalid_grant", "Invalid grant: account not found"),
        )
    token_uri = x.state.origin + "/fcm/token"
    if claims.get("aud") != token_uri:
        raise Rejected(
            f"aud is {claims.get('aud')!r}, want the token_uri {token_uri!r}",
            token_error("invalid_grant", f"Invalid JWT: Failed audience check. The right audience is {token_uri}"),
        )
    scopes = claims.get("scope", "").split() if isinstance(claims.get("scope"), str) else []
    if FCM_SCOPE not in scopes:
        raise Rejected(
            f"scope {claims.get('scope')!r} lacks {FCM_SCOPE}",
            token_error("invalid_scope", "Invalid OAuth scope or ID token audience provided."),
        )
    short_lived = (
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
        "timeframe. Check your iat and exp values in the JWT claim."
    )
    try:
        iat, exp = int_claim(claims, "iat"), int_claim(claims, "exp")
    except ValueError as e:
        raise Rejected(str(e), token_error("invalid_grant", short_lived)) from e
    # Google allows a few minutes of clock skew on iat; exp must be ahead and at most 1 h after iat.
    if exp <= x.now or exp - iat > 3600 or iat > x.now + 300 or exp <= iat:
        raise Rejected(
            f"iat={iat} exp={exp} now={int(x.now)}: need exp > now, exp - iat <= 3600, iat not in the future",
            token_error("invalid_grant", short_lived),
        )
    lifetime = cfg["token_lifetime_s"]
    token = x.state.mint_token(lifetime, x.now) if x.live else "ya29.mock-scripted"
    return json_answer(200, {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})


# Field names FCM v1 knows (protobuf JSON also accepts lowerCamelCase; names are compared in
# snake_case). An unknown name is a 400, as from Google's parser: it catches typos.
FCM_FIELDS = {
    "message": {
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
        "condition",
    },
    "message.notification": {"title", "body", "image"},
    "message.android": {
        "collapse_key",
        "priority",
        "ttl",
        "restricted_package_name",
        "data",
        "notification",
        "fcm_options",
        "direct_boot_ok",
    },
    "message.apns": {"headers", "payload", "fcm_options", "live_activity_token"},
    "message.webpush": {"headers", "data", "notification", "fcm_options"},
}
FCM_STRING_MAPS = {
    "message.data",
    "message.android.data",
    "message.apns.headers",
    "message.webpush.headers",
    "message.webpush.data",
}
FCM_OBJECTS = {
    "message.fcm_options",
    "message.android.notification",
    "message.android.fcm_options",
    "message.apns.payload",
    "message.apns.fcm_options",
    "message.webpush.notification",
    "message.webpush.fcm_options",
}
FCM_BOOLS = {"message.android.direct_boot_ok"}
FCM_MAX_TTL_S = 2_419_200  # 4 weeks


def snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


def check_fcm_object(path: str, obj: Any) -> None:
    if not isinstance(obj, dict):
        raise Rejected(
            f"{path} is not an object",
            fcm_bad_request(path, f"Invalid value at '{path}' (TYPE_MESSAGE), {json.dumps(obj)}"),
        )
    for key, value in obj.items():
        sub = f"{path}.{snake(key)}"
        if snake(key) not in FCM_FIELDS[path]:
            description = f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
            raise Rejected(f"unknown field {sub}", fcm_bad_request(path, description))
        if sub in FCM_STRING_MAPS:
            if not isinstance(value, dict):
                raise Rejected(
                    f"{sub} is not an object",
                    fcm_bad_request(sub, f"Invalid value at '{sub}' (TYPE_MESSAGE), {json.dumps(value)}"),
                )
            for i, (name, item) in enumerate(value.items()):
                if not isinstance(item, str):
                    # FCM requires every data value (and header) to be a string.
                    where = f"{sub}[{i}].value"
                    raise Rejected(
                        f"{sub}[{name!r}] is {json.dumps(item)}, not a string",
                        fcm_bad_request(where, f"Invalid value at '{where}' (TYPE_STRING), {json.dumps(item)}"),
                    )
        elif sub in FCM_FIELDS:
            check_fcm_object(sub, value)
        elif sub in FCM_OBJECTS:
            if not isinstance(value, dict):
                raise Rejected(
                    f"{sub} is not an object",
                    fcm_bad_request(sub, f"Invalid value at '{sub}' (TYPE_MESSAGE), {json.dumps(value)}"),
                )
        elif sub in FCM_BOOLS:
            if not isinstance(value, bool):
                raise Rejected(
                    f"{sub} is not a boolean",
                    fcm_bad_request(sub, f"Invalid value at '{sub}' (TYPE_BOOL), {json.dumps(value)}"),
                )
        elif not isinstance(value, str):
            raise Rejected(
                f"{sub} is {json.dumps(value)}, not a string",
                fcm_bad_request(sub, f"Invalid value at '{sub}' (TYPE_STRING), {json.dumps(value)}"),
            )


def fcm_get(message: dict, path: str) -> Any:
    """A field by its snake_case path below `message`, whichever JSON spelling was sent."""
    node: Any = message
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = next((v for k, v in node.items() if snake(k) == part), None)
    return node


def check_fcm_message(message: dict) -> str:
    """The field rules FCM enforces beyond types; returns the target kind."""
    targets = [t for t in ("token", "topic", "condition") if fcm_get(message, t) is not None]
    if not targets:
        description = "Recipient of the message is not set."
        raise Rejected(
            "message has none of token/topic/condition",
            fcm_error_answer("INVALID_ARGUMENT", description, [{"field": "message", "description": description}]),
        )
    if len(targets) > 1:
        raise Rejected(
            f"message sets {targets}: exactly one target is allowed",
            fcm_bad_request(
                "message",
                f"Invalid value at 'message' (oneof), oneof field 'target' is already set. Cannot set '{targets[1]}'",
            ),
        )
    token = fcm_get(message, "token")
    if token is not None and (not token or re.search(r"\s", token)):
        raise Rejected(f"token {token!r} is not a registration token", fcm_error_answer("INVALID_ARGUMENT"))
    topic = fcm_get(message, "topic")
    if topic is not None and not re.fullmatch(r"[a-zA-Z0-9\-_.~%]{1,900}", topic):
        raise Rejected(
            f"topic {topic!r} has characters FCM does not allow",
            fcm_error_answer(
                "INVALID_ARGUMENT",
                "Invalid topic name",
                [{"field": "message.topic", "description": "Invalid topic name"}],
            ),
        )
    priority = fcm_get(message, "android.priority")
    if priority is not None and priority not in ("NORMAL", "HIGH"):
        raise Rejected(
            f"android.priority {priority!r} is not NORMAL or HIGH",
            fcm_bad_request(
                "message.android.priority",
                f"Invalid value at 'message.android.priority' "
                f'(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "{priority}"',
            ),
        )
    ttl = fcm_get(message, "android.ttl")
    if ttl is not None:
        # A protobuf Duration in JSON: decimal seconds with an "s" suffix, e.g. "3600s" or "3.5s".
        if not re.fullmatch(r"\d+(\.\d{1,9})?s", ttl):
            raise Rejected(
                f'android.ttl {ttl!r} is not a Duration like "3600s"',
                fcm_bad_request(
                    "message.android.ttl",
                    f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), \"{ttl}\"",
                ),
            )
        if float(ttl[:-1]) > FCM_MAX_TTL_S:
            raise Rejected(
                f"android.ttl {ttl} exceeds 4 weeks",
                fcm_error_answer(
                    "INVALID_ARGUMENT",
                    "The TTL must not exceed 4 weeks (2419200s)",
                    [{"field": "message.android.ttl", "description": "TTL out of range"}],
                ),
            )
    apns_priority = (fcm_get(message, "apns.headers") or {}).get("apns-priority")
    if apns_priority is not None and apns_priority not in ("1", "5", "10"):
        raise Rejected(
            f"apns-priority {apns_priority!r} is not 1, 5 or 10",
            fcm_error_answer("INVALID_ARGUMENT", "Invalid APNs headers"),
        )
    for key in fcm_get(message, "data") or {}:
        # Keys FCM reserves for itself.
        if key in ("from", "message_type") or key.startswith(("google.", "gcm.")):
            raise Rejected(
                f"data key {key!r} is reserved",
                fcm_error_answer(
                    "INVALID_ARGUMENT",
                    f"Invalid data payload key: {key}",
                    [{"field": "message.data", "description": f"Invalid data payload key: {key}"}],
                ),
            )
    return targets[0]


def handle_fcm_send(x: Exchange) -> Answer:
    req, cfg = x.req, x.config("fcm")
    require_post(req)
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Rejected(
            "no Authorization: Bearer header",
            google_error(
                401,
                "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected OAuth 2 "
                "access token, login cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            ),
        )
    expiry = x.state.token_expiry(token)
    if expiry is None or expiry <= x.now:
        reason = (
            "bearer token was never minted here"
            if expiry is None
            else f"bearer token expired {x.now - expiry:.0f} s ago"
        )
        raise Rejected(
            reason,
            google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            ),
        )
    project = x.params[0]
    if cfg is None or project != cfg["project_id"]:
        raise Rejected(
            f"project {project!r} is not the configured one",
            google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).",
            ),
        )
    body = req.json
    if not isinstance(body, dict):
        raise Rejected(
            "body is not a JSON object",
            google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token."),
        )
    for key in body:
        if snake(key) not in ("message", "validate_only"):
            description = f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
            raise Rejected(f"unknown top-level field {key!r}", fcm_bad_request("", description))
    message = fcm_get(body, "message")
    if message is None:
        raise Rejected(
            "body has no message",
            fcm_error_answer(
                "INVALID_ARGUMENT",
                "Message must be set.",
                [{"field": "message", "description": "Message must be set."}],
            ),
        )
    check_fcm_object("message", message)
    target = check_fcm_message(message)
    # FCM's payload limit counts what the app receives: data plus notification.
    payload = {k: v for k, v in message.items() if snake(k) in ("data", "notification")}
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    limit = 2048 if target == "topic" else 4096
    if size > limit:
        raise Rejected(
            f"payload (data + notification) is {size} bytes, over FCM's {limit}",
            fcm_error_answer("INVALID_ARGUMENT", "Android message is too big", violations=[]),
        )
    if fcm_get(body, "validate_only") is True:
        return json_answer(200, {"name": f"projects/{project}/messages/fake_message_id"})
    return json_answer(200, {"name": f"projects/{project}/messages/0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"})


def fcm_send_targets(req: Request, _params: tuple) -> list[str]:
    message = fcm_get(req.json, "message") if isinstance(req.json, dict) else None
    if not isinstance(message, dict):
        return []
    return [v for v in (fcm_get(message, t) for t in ("token", "topic", "condition")) if isinstance(v, str)]


# ---------------------------------------------------------------- Web Push (RFC 8030/8291/8292)

WEBPUSH_MAX_BODY = 4096  # RFC 8030 §7.2: services must accept at least this; the mock accepts exactly this
URGENCIES = ("very-low", "low", "normal", "high")


def push_error(status: int, errno: int, message: str) -> Answer:
    """Mozilla autopush's error body (the shape browsers' push services answer with)."""
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 410: "Gone", 413: "Payload Too Large"}[status]
    return json_answer(
        status,
        {
            "code": status,
            "errno": errno,
            "error": reason,
            "message": message,
            "more_info": "https://mozilla-services.github.io/autopush-rs/errors.html",
        },
    )


def verify_vapid(x: Exchange, cfg: dict) -> None:
    """RFC 8292: `Authorization: vapid t=<ES256 JWT>, k=<sender public key>`."""
    auth = x.req.headers.get("authorization", "")
    scheme, _, rest = auth.partition(" ")
    if scheme.lower() != "vapid":
        # §4.2: absent authentication may be answered 401, invalid authentication 403.
        raise Rejected(
            f"Authorization is {auth[:40]!r}, want `vapid t=…, k=…`",
            push_error(401, 109, "Missing or non-VAPID Authorization header"),
        )
    params = dict(p.strip().partition("=")[::2] for p in rest.split(","))

    def forbidden(why: str) -> Rejected:
        return Rejected(why, push_error(403, 109, "Request did not validate: invalid VAPID authorization"))

    if not params.get("t") or not params.get("k"):
        raise forbidden(f"vapid parameters {sorted(params)}: need t and k")
    try:
        k = b64url_decode(params["k"])
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), k)
    except ValueError as e:
        raise forbidden(f"k is not a base64url uncompressed P-256 point: {e}") from e
    if cfg["vapid_public_key"] is not None and k != cfg["vapid_public_key"]:
        raise forbidden("k is not the VAPID public key this subscription was made with")
    try:
        header, claims, signing_input, signature = parse_jws(params["t"])
    except ValueError as e:
        raise forbidden(f"t: {e}") from e
    if header.get("alg") != "ES256" or len(signature) != 64:
        raise forbidden(
            f"JWT alg {header.get('alg')!r} with a {len(signature)}-byte signature: want ES256, 64 bytes (r||s)"
        )
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        sender.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise forbidden("JWT signature does not verify with k") from e
    if claims.get("aud") != x.state.origin:
        raise forbidden(f"aud is {claims.get('aud')!r}, want the push service origin {x.state.origin!r}")
    try:
        exp = int_claim(claims, "exp")
    except ValueError as e:
        raise forbidden(str(e)) from e
    if not x.now < exp <= x.now + 86400:
        raise forbidden(f"exp is {exp - x.now:.0f} s from now: must be in the future and at most 24 h ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise forbidden(f"sub {sub!r} must be a mailto: or https: contact")


def handle_webpush(x: Exchange) -> Answer:
    req, cfg = x.req, x.config("webpush")
    require_post(req)
    sid = x.params[0]
    sub = cfg["subscriptions"].get(sid) if cfg else None
    if sub is None:
        raise Rejected(
            f"no subscription {sid!r}", push_error(410, 103, "Request did not validate No Subscription found")
        )
    verify_vapid(x, cfg)
    ttl = req.headers.get("ttl")
    if not is_digits(ttl):
        raise Rejected(
            f"TTL header is {ttl!r}: RFC 8030 §5.2 requires non-negative integer seconds",
            push_error(400, 111 if ttl is None else 112, "Missing TTL header" if ttl is None else "Invalid TTL header"),
        )
    urgency = req.headers.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        raise Rejected(f"Urgency {urgency!r} is not one of {URGENCIES}", push_error(400, 111, "Invalid Urgency header"))
    topic = req.headers.get("topic")
    if topic is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic):
        raise Rejected(
            f"Topic {topic!r}: at most 32 base64url characters (RFC 8030 §5.4)",
            push_error(400, 113, "Invalid Topic header"),
        )
    if len(req.body) > WEBPUSH_MAX_BODY:
        raise Rejected(
            f"body is {len(req.body)} bytes, over {WEBPUSH_MAX_BODY}",
            push_error(413, 104, f"Message data too large ({len(req.body)} bytes)"),
        )
    if req.body:  # a push without payload (RFC 8030 §5) has no body and no encoding
        x.decrypted = decrypt_push(req, sub)
    n = x.state.next_push(sid) if x.live else 0
    return Answer(201, b"", {"Location": f"/push/{sid}/msg/{n}", "TTL": ttl})


def decrypt_push(req: Request, sub: dict) -> str:
    encoding = req.headers.get("content-encoding")
    if encoding != "aes128gcm":
        raise Rejected(
            f"Content-Encoding is {encoding!r}, want aes128gcm (RFC 8291)",
            push_error(400, 110, "Unknown Content-Encoding"),
        )

    def bad(why: str) -> Rejected:
        return Rejected(why, push_error(400, 110, "Could not decrypt the message"))

    # RFC 8188 header: salt(16) rs(4) idlen(1) keyid(idlen); RFC 8291 §4 puts the sender's
    # 65-byte public key in keyid and requires exactly one record.
    if len(req.body) < 21 + 65:
        raise bad(f"body is {len(req.body)} bytes, shorter than the aes128gcm header with a 65-byte keyid")
    rs, idlen = int.from_bytes(req.body[16:20], "big"), req.body[20]
    if idlen != 65:
        raise bad(f"keyid is {idlen} bytes: RFC 8291 §4 wants the 65-byte sender public key")
    if len(req.body) - 86 > rs:
        raise bad(f"{len(req.body) - 86} bytes of records with rs={rs}: RFC 8291 §4 allows one record only")
    try:
        plaintext = http_ece.decrypt(req.body, private_key=sub["key"], auth_secret=sub["auth"], version="aes128gcm")
    except (http_ece.ECEException, ValueError) as e:
        raise bad(f"aes128gcm decryption with the subscription's keys failed: {e}") from e
    return plaintext.decode("utf-8", "replace")


# ---------------------------------------------------------------- chat robots


def strings_in(value: Any) -> list[str]:
    """Every string inside a JSON value: what a robot scans for its keywords."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


DING_MORE = "more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
# msgtype -> fields its object requires (DingTalk custom robot).
DING_REQUIRED = {
    "text": ("content",),
    "markdown": ("title", "text"),
    "link": ("title", "text", "messageUrl"),
    "actionCard": ("title", "text"),
    "feedCard": ("links",),
}


def ding(errcode: int, errmsg: str) -> Answer:
    return json_answer(200, {"errcode": errcode, "errmsg": errmsg})  # always HTTP 200: read the body


def handle_dingtalk(x: Exchange) -> Answer:
    req, robots = x.req, x.config("dingtalk") or {}
    require_post(req)
    token = req.query.get("access_token", "")
    robot = robots.get(token)
    if robot is None:
        raise Rejected(f"unknown access_token {token!r}", ding(300001, "token is not exist"))
    if req.media_type() != "application/json":
        raise Rejected(
            f"content-type {req.media_type()!r}, want application/json", ding(43004, "无效的HTTP HEADER Content-Type")
        )
    if robot["secret"]:
        verify_ding_sign(x, robot["secret"])
    body = req.json
    if not isinstance(body, dict):
        raise Rejected("body is not a JSON object", ding(40035, "缺少参数 json"))
    msgtype = body.get("msgtype")
    if msgtype not in DING_REQUIRED:
        raise Rejected(f"msgtype {msgtype!r} is not one of {sorted(DING_REQUIRED)}", ding(40008, "不合法的消息类型"))
    content = body.get(msgtype)
    if not isinstance(content, dict):
        raise Rejected(f"no {msgtype} object", ding(40035, f"缺少参数 {msgtype}"))
    for name in DING_REQUIRED[msgtype]:
        if not content.get(name):
            raise Rejected(f"{msgtype}.{name} is missing or empty", ding(40035, f"缺少参数 {name}"))
    check_ding_shape(msgtype, content, body.get("at"))
    keywords = robot["keywords"]
    if keywords and not any(k in s for k in keywords for s in strings_in(content)):
        raise Rejected(
            f"none of the keywords {keywords} is in the {msgtype} content",
            ding(310000, f"keywords not in content, {DING_MORE}"),
        )
    limit = x.config("rate_limits")["dingtalk_per_min"]
    if x.live and not x.state.admit("dingtalk", token, [(limit, 60)]):
        return ding(130101, f"send too fast, exceed {limit} times per minute")
    return ding(0, "ok")


def verify_ding_sign(x: Exchange, secret: str) -> None:
    """加签: sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp_ms}\\n{secret}")))."""
    timestamp, sign = x.req.query.get("timestamp"), x.req.query.get("sign")
    if not timestamp or not sign:
        raise Rejected(
            "the robot has a secret but the URL has no timestamp/sign", ding(310000, f"sign not match, {DING_MORE}")
        )
    if not is_digits(timestamp) or abs(x.now * 1000 - int(timestamp)) > 3600_000:
        raise Rejected(
            f"timestamp {timestamp!r} is not milliseconds within 1 h of now ({int(x.now * 1000)})",
            ding(310000, "invalid timestamp"),
        )
    expected = base64.b64encode(hmac_sha256(secret.encode(), f"{timestamp}\n{secret}")).decode()
    if not hmac.compare_digest(sign, expected):
        hint = " ('+' arrived as a space: the sign was not URL-encoded)" if sign.replace(" ", "+") == expected else ""
        raise Rejected(f"sign {sign!r} != expected {expected!r}{hint}", ding(310000, f"sign not match, {DING_MORE}"))


def check_ding_shape(msgtype: str, content: dict, at: Any) -> None:
    if msgtype == "actionCard":
        single = content.get("singleTitle") and content.get("singleURL")
        buttons = content.get("btns")
        if not single and not (
            isinstance(buttons, list)
            and buttons
            and all(isinstance(b, dict) and b.get("title") and b.get("actionURL") for b in buttons)
        ):
            raise Rejected(
                "actionCard needs singleTitle+singleURL or btns[{title, actionURL}]", ding(40035, "缺少参数 btns")
            )
    if msgtype == "feedCard":
        links = content["links"]
        if not isinstance(links, list) or not all(
            isinstance(link, dict) and link.get("title") and link.get("messageURL") and link.get("picURL")
            for link in links
        ):
            raise Rejected("feedCard.links must be [{title, messageURL, picURL}]", ding(40035, "缺少参数 links"))
    if at is not None:
        ok = (
            isinstance(at, dict)
            and all(
                isinstance(at.get(k, []), list) and all(isinstance(v, str) for v in at.get(k, []))
                for k in ("atMobiles", "atUserIds")
            )
            and isinstance(at.get("isAtAll", False), bool)
        )
        if not ok:
            raise Rejected(
                f"at {json.dumps(at)} must be {{atMobiles: [str], atUserIds: [str], isAtAll: bool}}",
                ding(40035, "缺少参数 at"),
            )


FEISHU_MAX_BODY = 20 * 1024


def feishu(code: int, msg: str) -> Answer:
    return json_answer(200, {"code": code, "msg": msg, "data": {}})


def handle_feishu(x: Exchange) -> Answer:
    req, hooks = x.req, x.config("feishu") or {}
    require_post(req)
    token = x.params[0]
    hook = hooks.get(token)
    if hook is None:
        raise Rejected(
            f"unknown hook token {token!r}", feishu(19001, "param invalid: incoming webhook access token invalid")
        )
    if len(req.body) > FEISHU_MAX_BODY:
        raise Rejected(f"body is {len(req.body)} bytes, over Feishu's 20 KB", feishu(9499, "Bad Request"))
    body = req.json
    if not isinstance(body, dict):
        raise Rejected("body is not a JSON object", feishu(9499, "Bad Request"))
    if hook["secret"]:
        verify_feishu_sign(x, body, hook["secret"])
    msg_type = body.get("msg_type")
    if not msg_type:
        raise Rejected("no msg_type", feishu(19002, "params error, msg_type need"))
    check_feishu_content(msg_type, body)
    if hook["keywords"] and not any(
        k in s for k in hook["keywords"] for s in strings_in(body.get("content") or body.get("card"))
    ):
        raise Rejected(
            f"none of the keywords {hook['keywords']} is in the message", feishu(19024, "Key Words Not Found")
        )
    limits = x.config("rate_limits")
    if x.live and not x.state.admit("feishu", token, [(limits["feishu_per_min"], 60), (limits["feishu_per_s"], 1)]):
        return feishu(11232, "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]")
    return feishu(0, "success")


def verify_feishu_sign(x: Exchange, body: dict, secret: str) -> None:
    """Feishu signs an empty message with key = f"{timestamp_s}\\n{secret}"; both go in the body."""
    failed = feishu(19021, "sign match fail or timestamp is not within one hour from current time")
    timestamp, sign = body.get("timestamp"), body.get("sign")
    if not isinstance(timestamp, str) or not is_digits(timestamp) or not isinstance(sign, str):
        raise Rejected(f"timestamp {timestamp!r} / sign {sign!r}: want a string of seconds and a base64 sign", failed)
    if abs(x.now - int(timestamp)) > 3600:
        raise Rejected(f"timestamp {timestamp} is {x.now - int(timestamp):.0f} s from now, over 1 h", failed)
    expected = base64.b64encode(hmac_sha256(f"{timestamp}\n{secret}".encode(), b"")).decode()
    if not hmac.compare_digest(sign, expected):
        raise Rejected(f"sign {sign!r} != expected {expected!r}", failed)


def check_feishu_content(msg_type: str, body: dict) -> None:

    def bad(why: str) -> Rejected:
        return Rejected(why, feishu(9499, "Bad Request"))

    content = body.get("content")
    if msg_type == "interactive":
        if not isinstance(body.get("card"), dict):
            raise bad("interactive needs a card object at the top level")
        return
    if not isinstance(content, dict):
        raise bad(f"{msg_type} needs a content object")
    if msg_type == "text":
        if not isinstance(content.get("text"), str) or not content["text"]:
            raise bad("text needs content.text")
    elif msg_type == "post":
        post = content.get("post")
        if (
            not isinstance(post, dict)
            or not post
            or not all(
                isinstance(lang, dict)
                and isinstance(lang.get("content"), list)
                and all(isinstance(line, list) for line in lang["content"])
                for lang in post.values()
            )
        ):
            raise bad("post needs content.post.<lang>.content as a list of lists")
    elif msg_type == "image":
        if not isinstance(content.get("image_key"), str):
            raise bad("image needs content.image_key")
    elif msg_type == "share_chat":
        if not isinstance(content.get("share_chat_id"), str):
            raise bad("share_chat needs content.share_chat_id")
    else:
        raise Rejected(
            f"msg_type {msg_type!r} is not text/post/image/share_chat/interactive",
            feishu(19002, "params error, msg_type invalid"),
        )


# msgtype -> byte limit of its `content` (WeCom group robot).
WECOM_LIMITS = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}


def wecom(errcode: int, errmsg: str) -> Answer:
    if errcode:  # WeCom appends a hint and the caller's address to every error
        errmsg += (
            f", hint: [{int(time.time())}{secrets.randbelow(10**12):012d}], from ip: 127.0.0.1, "
            f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
        )
    return json_answer(200, {"errcode": errcode, "errmsg": errmsg})


def handle_wecom(x: Exchange) -> Answer:
    req, keys = x.req, x.config("wecom") or set()
    require_post(req)
    key = req.query.get("key", "")
    if key not in keys:
        raise Rejected(f"unknown key {key!r}", wecom(93000, "invalid webhook url"))
    if not req.body:
        raise Rejected("empty body", wecom(44002, "empty post data"))
    body = req.json
    if not isinstance(body, dict):
        raise Rejected("body is not a JSON object", wecom(40035, "Warning: wrong json format."))
    msgtype = body.get("msgtype")
    content = body.get(msgtype) if isinstance(msgtype, str) else None
    if msgtype not in ("text", "markdown", "markdown_v2", "image", "news", "file", "template_card") or not isinstance(
        content, dict
    ):
        raise Rejected(f"msgtype {msgtype!r} with no {msgtype} object", wecom(40008, "invalid message type"))
    check_wecom_content(msgtype, content)
    limit = x.config("rate_limits")["wecom_per_min"]
    if x.live and not x.state.admit("wecom", key, [(limit, 60)]):
        return wecom(45009, "api freq out of limit")
    return wecom(0, "ok")


def check_wecom_content(msgtype: str, content: dict) -> None:
    if msgtype in WECOM_LIMITS:
        text = content.get("content")
        if not isinstance(text, str) or not text:
            raise Rejected(f"{msgtype}.content is missing or empty", wecom(44004, "empty content"))
        size, limit = len(text.encode()), WECOM_LIMITS[msgtype]
        if size > limit:
            raise Rejected(
                f"{msgtype}.content is {size} bytes, over {limit}",
                wecom(40058, f"{msgtype}.content exceed max length {limit}. invalid Request Parameter"),
            )
        for name in ("mentioned_list", "mentioned_mobile_list"):
            if name in content and (msgtype != "text" or not isinstance(content[name], list)):
                raise Rejected(
                    f"{msgtype}.{name}: only text takes mentions, as a list", wecom(40058, "invalid Request Parameter")
                )
    elif msgtype == "image":
        try:
            data = base64.b64decode(content.get("base64", ""), validate=True)
        except ValueError as e:
            raise Rejected(f"image.base64 is not base64: {e}", wecom(40058, "invalid Request Parameter")) from e
        if len(data) > 2 * 1024 * 1024 or hashlib.md5(data).hexdigest() != content.get("md5"):
            raise Rejected("image must be ≤ 2 MB with md5 = md5(decoded base64)", wecom(40009, "invalid image size"))
    elif msgtype == "news":
        articles = content.get("articles")
        if (
            not isinstance(articles, list)
            or not 1 <= len(articles) <= 8
            or not all(isinstance(a, dict) and a.get("title") and a.get("url") for a in articles)
        ):
            raise Rejected("news.articles must be 1-8 {title, url}", wecom(40058, "invalid Request Parameter"))
    elif msgtype == "file":
        if not content.get("media_id"):
            raise Rejected("file.media_id is missing", wecom(40058, "invalid Request Parameter"))
    elif not content.get("card_type"):
        raise Rejected("template_card.card_type is missing", wecom(40058, "invalid Request Parameter"))


def handle_slack(x: Exchange) -> Answer:
    """Slack answers in plain text (text/html), not JSON."""
    req, hooks = x.req, x.config("slack") or set()
    require_post(req)
    if x.params[0] not in hooks:
        raise Rejected(f"unknown hook {x.params[0]!r}", text_answer(404, "no_service", "text/html"))
    body = req.json
    if req.media_type() != "application/json" or not isinstance(body, dict):
        raise Rejected(
            f"content-type {req.media_type()!r} with a body that is not a JSON object",
            text_answer(400, "invalid_payload", "text/html"),
        )
    blocks = body.get("blocks")
    if blocks is not None and not (
        isinstance(blocks, list) and all(isinstance(b, dict) and b.get("type") for b in blocks)
    ):
        raise Rejected("blocks must be a list of objects with a type", text_answer(400, "invalid_blocks", "text/html"))
    if not body.get("text") and not blocks:
        raise Rejected("neither text nor blocks", text_answer(400, "no_text", "text/html"))
    return text_answer(200, "ok", "text/html")


# ---------------------------------------------------------------- Standard Webhooks

WEBHOOK_TOLERANCE_S = 300


def verify_standard_webhook(webhook: Webhook, body: bytes, headers: dict[str, str], now: float) -> None:
    """Standard Webhooks receiver rules; ValueError says what failed.

    The HMAC comes from the `standardwebhooks` package (Webhook.sign: v1 = base64 HMAC-SHA256
    over "id.timestamp.body" with the secret's decoded bytes). Its verify() reads the wall
    clock, so the ±5 min check is done here against `now`, which may be a fixed clock."""
    names = ("webhook-id", "webhook-timestamp", "webhook-signature")
    missing = [name for name in names if not headers.get(name)]
    if missing:
        raise ValueError(f"missing header(s) {missing}")
    msg_id, timestamp, signatures = (headers[name] for name in names)
    if not is_digits(timestamp):
        raise ValueError(f"webhook-timestamp {timestamp!r} is not integer unix seconds")
    if abs(now - int(timestamp)) > WEBHOOK_TOLERANCE_S:
        raise ValueError(f"webhook-timestamp is {now - int(timestamp):.0f} s from now, beyond ±{WEBHOOK_TOLERANCE_S} s")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("body is not UTF-8") from e
    signed = webhook.sign(msg_id, datetime.fromtimestamp(int(timestamp), tz=timezone.utc), text)
    expected = base64.b64decode(signed.split(",", 1)[1])
    entries = [e.partition(",") for e in signatures.split(" ")]
    v1 = [value for version, _, value in entries if version == "v1"]
    if not v1:
        raise ValueError(f"webhook-signature {signatures!r} has no v1 entry")
    for value in v1:
        try:
            if hmac.compare_digest(base64.b64decode(value, validate=True), expected):
                return
        except ValueError as e:
            raise ValueError(f"signature entry {value!r} is not base64") from e
    raise ValueError(f"no v1 signature matches (expected {signed})")


def handle_webhook(x: Exchange) -> Answer:
    req, endpoints = x.req, x.config("webhook") or {}
    require_post(req)
    webhook = endpoints.get(x.params[0])
    if webhook is None:
        raise Rejected(f"no endpoint {x.params[0]!r}", text_answer(404, "Not Found"))
    try:
        verify_standard_webhook(webhook, req.body, req.headers, x.now)
    except ValueError as e:
        raise Rejected(str(e), json_answer(401, {"error": "invalid signature"})) from e
    return Answer(200)


# ---------------------------------------------------------------- Aliyun SMS (ACS3-HMAC-SHA256)

ALIYUN_HOST = "dysmsapi.aliyuncs.com"
ALIYUN_MESSAGES = {
    "OK": "OK",
    "isv.MOBILE_NUMBER_ILLEGAL": "非法手机号",
    "isv.MOBILE_COUNT_OVER_LIMIT": "手机号码数量超过限制",
    "isv.INVALID_JSON_PARAM": "JSON参数不合法，只接受字符串值",
    "isv.BUSINESS_LIMIT_CONTROL": "触发号码天级流控Permits:10",
    "isv.AMOUNT_NOT_ENOUGH": "账户余额不足",
    "isv.OUT_OF_SERVICE": "业务停机",
    "isv.DAY_LIMIT_CONTROL": "触发日发送限额",
    "isv.SMS_SIGNATURE_ILLEGAL": "签名不合法",
    "isv.SMS_TEMPLATE_ILLEGAL": "模板不合法",
}


def rfc3986(text: str) -> str:
    """The percent-encoding both ACS3 and TC3 canonicalise with: only A-Z a-z 0-9 - _ . ~ stay."""
    return urllib.parse.quote(text, safe="-_.~")


def acs3_signature(
    secret: str,
    method: str,
    canonical_uri: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    signed_headers: list[str],
    payload_sha256: str,
) -> tuple[str, str]:
    """Aliyun V3 (ACS3-HMAC-SHA256): (hex signature, string to sign).

    CanonicalRequest = method \\n uri \\n sorted RFC 3986 query \\n "name:trimmed value\\n" per
    signed header \\n signed header list \\n hex SHA-256 of the body; the string to sign is
    "ACS3-HMAC-SHA256\\n" + its hex SHA-256, signed with HMAC-SHA256(AccessKeySecret)."""
    canonical_query = "&".join(f"{rfc3986(k)}={rfc3986(v)}" for k, v in sorted(query))
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, ";".join(signed_headers), payload_sha256]
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + sha256_hex(canonical_request)
    return hmac_sha256(secret.encode(), string_to_sign).hex(), string_to_sign


def aliyun(status: int, code: str, message: str | None = None, **extra: str) -> Answer:
    body = {
        "RequestId": str(uuid.uuid4()).upper(),
        "Code": code,
        "Message": message or ALIYUN_MESSAGES.get(code, code),
        **extra,
    }
    if code != "OK":  # errors also name the host and link the troubleshooter
        body.update(HostId=ALIYUN_HOST, Recommend=f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi")
    return json_answer(status, body)


def verify_acs3(x: Exchange, cfg: dict) -> None:
    req, h = x.req, x.req.headers

    def incomplete(why: str) -> Rejected:
        return Rejected(
            why, aliyun(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
        )

    m = re.fullmatch(
        r"ACS3-HMAC-SHA256 Credential=([^,]+),\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})",
        h.get("authorization", ""),
    )
    if m is None:
        raise incomplete(
            f"Authorization {h.get('authorization', '')[:60]!r} is not "
            "`ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b>,Signature=<hex>`"
        )
    key_id, signed, signature = m.group(1), m.group(2).split(";"), m.group(3)
    if key_id != cfg["access_key_id"]:
        raise Rejected(
            f"unknown AccessKeyId {key_id!r}",
            aliyun(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."),
        )
    if h.get("x-acs-action") != "SendSms":
        raise Rejected(
            f"x-acs-action is {h.get('x-acs-action')!r}, want SendSms",
            aliyun(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."),
        )
    if h.get("x-acs-version") != "2017-05-25":
        raise Rejected(
            f"x-acs-version is {h.get('x-acs-version')!r}, want 2017-05-25",
            aliyun(400, "InvalidVersion", "Specified parameter Version is not valid."),
        )
    try:
        date = datetime.strptime(h.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError as e:
        raise Rejected(
            f"x-acs-date {h.get('x-acs-date')!r} is not yyyy-MM-ddTHH:mm:ssZ (UTC)",
            aliyun(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."),
        ) from e
    if abs(x.now - date.timestamp()) > 900:
        raise Rejected(
            f"x-acs-date is {x.now - date.timestamp():.0f} s from now, beyond 15 min",
            aliyun(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."),
        )
    nonce = h.get("x-acs-signature-nonce")
    if not nonce:
        raise Rejected(
            "no x-acs-signature-nonce",
            aliyun(400, "MissingSignatureNonce", "SignatureNonce is mandatory for this action."),
        )
    # V3: host, content-type (if sent) and every x-acs-* header must be signed, names lower-case and sorted.
    must = {"host"} | {n for n in h if n.startswith("x-acs-")} | ({"content-type"} if "content-type" in h else set())
    if signed != sorted(signed) or not must <= set(signed) or not set(signed) <= h.keys():
        raise incomplete(
            f"SignedHeaders {';'.join(signed)}: must be sorted, name only headers sent, "
            f"and include {';'.join(sorted(must))}"
        )
    body_hash = sha256_hex(req.body)

    def mismatch(why: str, string_to_sign: str) -> Rejected:
        # Aliyun's own message shows its string to sign: the quickest way to find the difference.
        return Rejected(
            why,
            aliyun(
                400,
                "SignatureDoesNotMatch",
                f"Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}",
            ),
        )

    if h.get("x-acs-content-sha256") != body_hash:
        raise mismatch(f"x-acs-content-sha256 is {h.get('x-acs-content-sha256')!r}, the body hashes to {body_hash}", "")
    # RPC-style APIs sign "/" as the URI: the path the real host sees, below this mock's /aliyun mount.
    query = urllib.parse.parse_qsl(req.raw_query, keep_blank_values=True)
    expected, string_to_sign = acs3_signature(cfg["access_key_secret"], req.method, "/", query, h, signed, body_hash)
    if not hmac.compare_digest(signature, expected):
        raise mismatch(
            f"Signature {signature} != expected {expected}; string to sign {string_to_sign!r}", string_to_sign
        )
    if not x.state.use_nonce(nonce):  # even under a script: the real service saw this nonce
        raise Rejected(
            f"x-acs-signature-nonce {nonce!r} was used before",
            aliyun(400, "SignatureNonceUsed", "Specified signature nonce was used already."),
        )


def aliyun_params(req: Request) -> dict[str, str]:
    """SendSms parameters: in the query string or, as V3 allows for RPC APIs, a form body."""
    params = dict(req.query)
    if req.media_type() == "application/x-www-form-urlencoded":
        params.update(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def handle_aliyun(x: Exchange) -> Answer:
    req, cfg = x.req, x.config("aliyun")
    require_post(req)
    if cfg is None:
        raise Rejected(
            "aliyun is not configured", aliyun(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        )
    verify_acs3(x, cfg)
    params = aliyun_params(req)
    for name in ("PhoneNumbers", "SignName", "TemplateCode"):
        if not params.get(name):
            raise Rejected(f"no {name}", aliyun(400, f"Missing{name}", f"{name} is mandatory for this action."))
    numbers = params["PhoneNumbers"].split(",")
    if len(numbers) > 1000:
        raise Rejected(f"{len(numbers)} numbers, over 1000", aliyun(200, "isv.MOBILE_COUNT_OVER_LIMIT"))
    for number in numbers:
        # Mainland numbers bare or with +86/0086; others as country code + number, digits only.
        if not re.fullmatch(r"(\+|00)?\d{7,20}", number):
            raise Rejected(f"phone number {number!r} is not valid", aliyun(200, "isv.MOBILE_NUMBER_ILLEGAL"))
    if "TemplateParam" in params:
        try:
            template = json.loads(params["TemplateParam"])
        except ValueError:
            template = None
        if not isinstance(template, dict) or not all(isinstance(v, str) for v in template.values()):
            raise Rejected(
                f"TemplateParam {params['TemplateParam'][:80]!r} must be a JSON object of strings",
                aliyun(200, "isv.INVALID_JSON_PARAM"),
            )
    return aliyun(200, "OK", BizId=f"{secrets.randbelow(10**18):018d}^0")


def aliyun_targets(req: Request, _params: tuple) -> list[str]:
    numbers = aliyun_params(req).get("PhoneNumbers")
    return numbers.split(",") if numbers else []


# ---------------------------------------------------------------- Tencent Cloud SMS (TC3-HMAC-SHA256)

TENCENT_MESSAGES = {
    "Ok": "send success",
    "LimitExceeded.PhoneNumberThirtySecondLimit": "the number of SMS messages sent to one number within 30 seconds "
    "exceeds the upper limit",
    "LimitExceeded.PhoneNumberOneHourLimit": "the number of SMS messages sent to one number within 1 hour exceeds the "
    "upper limit",
    "LimitExceeded.PhoneNumberDailyLimit": "the number of SMS messages sent to one number in a day exceeds the "
    "upper limit",
    "LimitExceeded.DeliveryFrequencyLimit": "delivery frequency limit exceeded",
    "InvalidParameterValue.IncorrectPhoneNumber": "incorrect number format",
    "FailedOperation.PhoneNumberInBlacklist": "the mobile number is in the blacklist",
    "FailedOperation.InsufficientBalanceInSmsPackage": "insufficient balance in SMS package",
    "RequestLimitExceeded": "Your current request times exceed the limit.",
}
ISO_CODES = {"+86": "CN", "+852": "HK", "+853": "MO", "+886": "TW", "+1": "US", "+44": "GB", "+65": "SG", "+81": "JP"}
# E.164, or a mainland mobile number without +86 (Tencent accepts both).
TENCENT_NUMBER = re.compile(r"\+[1-9]\d{6,14}|1\d{10}")


def tc3_signature(
    secret_key: str,
    service: str,
    timestamp: int,
    method: str,
    canonical_uri: str,
    canonical_query: str,
    headers: dict[str, str],
    signed_headers: list[str],
    body: bytes,
) -> str:
    """Tencent Cloud API 3.0 (TC3-HMAC-SHA256), hex.

    CanonicalRequest = method \\n uri \\n query \\n "name:value\\n" per signed header (value
    lower-cased and trimmed) \\n signed header list \\n hex SHA-256 of the body. StringToSign =
    "TC3-HMAC-SHA256\\n<ts>\\n<date>/<service>/tc3_request\\n" + hex SHA-256 of it, signed with
    the key derived as HMAC("TC3"+SecretKey, date) -> service -> "tc3_request"."""
    date = datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d")
    canonical_headers = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed_headers)
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, ";".join(signed_headers), sha256_hex(body)]
    )
    string_to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{sha256_hex(canonical_request)}"
    key = hmac_sha256(hmac_sha256(hmac_sha256(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac_sha256(key, string_to_sign).hex()


def tencent_error(code: str, message: str | None = None) -> Answer:
    # Tencent Cloud API 3.0 answers every error with HTTP 200 and Response.Error.
    return json_answer(
        200,
        {
            "Response": {
                "Error": {"Code": code, "Message": message or TENCENT_MESSAGES.get(code, code)},
                "RequestId": str(uuid.uuid4()),
            }
        },
    )


def tencent_sent(results: list[tuple[str, str]]) -> Answer:
    """The SendSms answer: one SendStatusSet entry per (number as sent, per-number code)."""
    entries = []
    for number, code in results:
        e164 = number if number.startswith("+") else "+86" + number  # mainland numbers may omit +86
        iso = next((ISO_CODES[e164[:n]] for n in (4, 3, 2) if e164[:n] in ISO_CODES), "")  # longest prefix first
        entries.append(
            {
                "SerialNo": f"{secrets.randbelow(10000):04d}:{secrets.token_hex(16)}" if code == "Ok" else "",
                "PhoneNumber": e164,
                "Fee": 1 if code == "Ok" else 0,
                "SessionContext": "",
                "Code": code,
                "Message": TENCENT_MESSAGES.get(code, code),
                "IsoCode": iso,
            }
        )
    return json_answer(200, {"Response": {"SendStatusSet": entries, "RequestId": str(uuid.uuid4())}})


def verify_tc3(x: Exchange, cfg: dict) -> None:
    req, h = x.req, x.req.headers

    def failure(why: str) -> Rejected:
        return Rejected(
            why,
            tencent_error(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            ),
        )

    m = re.fullmatch(
        r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([^/]+)/tc3_request,\s*"
        r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})",
        h.get("authorization", ""),
    )
    if m is None:
        raise Rejected(
            f"Authorization {h.get('authorization', '')[:60]!r} is not `TC3-HMAC-SHA256 Credential=<id>/<date>/sms/"
            "tc3_request, SignedHeaders=<a;b>, Signature=<hex>`",
            tencent_error(
                "AuthFailure.InvalidAuthorization", "The Authorization header is not in the TC3-HMAC-SHA256 format."
            ),
        )
    secret_id, date, service, signed, signature = m.group(1), m.group(2), m.group(3), m.group(4).split(";"), m.group(5)
    if h.get("x-tc-action") != "SendSms":
        raise Rejected(
            f"X-TC-Action is {h.get('x-tc-action')!r}, want SendSms",
            tencent_error("InvalidAction", f"The requested action `{h.get('x-tc-action')}` does not exist."),
        )
    if h.get("x-tc-version") != "2021-01-11":
        raise Rejected(
            f"X-TC-Version is {h.get('x-tc-version')!r}, want 2021-01-11",
            tencent_error(
                "NoSuchVersion", f"The requested version `{h.get('x-tc-version')}` of API `SendSms` does not exist."
            ),
        )
    if not h.get("x-tc-region"):
        raise Rejected(
            "no X-TC-Region", tencent_error("MissingParameter", "The request is missing a required parameter `Region`.")
        )
    timestamp = h.get("x-tc-timestamp", "")
    if not is_digits(timestamp):
        raise Rejected(
            f"X-TC-Timestamp {timestamp!r} is not unix seconds",
            tencent_error("InvalidParameter", "The parameter `X-TC-Timestamp` is invalid."),
        )
    if abs(x.now - int(timestamp)) > 300:
        raise Rejected(
            f"X-TC-Timestamp is {x.now - int(timestamp):.0f} s from now, beyond 5 min",
            tencent_error(
                "AuthFailure.SignatureExpire",
                "Signature expired. Timestamp and server time cannot differ by more than five minutes.",
            ),
        )
    if secret_id != cfg["secret_id"]:
        raise Rejected(
            f"unknown SecretId {secret_id!r}",
            tencent_error(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
            ),
        )
    utc_date = datetime.fromtimestamp(int(timestamp), tz=timezone.utc).strftime("%Y-%m-%d")
    if date != utc_date or service != "sms":
        raise failure(f"credential scope {date}/{service}: want {utc_date} (the UTC date of X-TC-Timestamp)/sms")
    if signed != sorted(signed) or not {"content-type", "host"} <= set(signed) or not set(signed) <= h.keys():
        raise failure(
            f"SignedHeaders {';'.join(signed)}: must be sorted, include content-type and host, name only headers sent"
        )
    expected = tc3_signature(
        cfg["secret_key"], "sms", int(timestamp), req.method, "/", req.raw_query, h, signed, req.body
    )
    if not hmac.compare_digest(signature, expected):
        raise failure(f"Signature {signature} != expected {expected}")


def handle_tencent(x: Exchange) -> Answer:
    req, cfg = x.req, x.config("tencent")
    require_post(req)
    if cfg is None:
        raise Rejected("tencent is not configured", tencent_error("AuthFailure.SecretIdNotFound"))
    verify_tc3(x, cfg)
    body = req.json
    if not isinstance(body, dict):
        raise Rejected(
            "body is not a JSON object", tencent_error("InvalidParameter", "The request body is not valid JSON.")
        )
    for name in ("PhoneNumberSet", "SmsSdkAppId", "TemplateId"):
        if name not in body:
            raise Rejected(
                f"no {name}",
                tencent_error("MissingParameter", f"The request is missing a required parameter `{name}`."),
            )
    shapes = {
        "PhoneNumberSet": list,
        "SmsSdkAppId": str,
        "TemplateId": str,
        "SignName": str,
        "TemplateParamSet": list,
        "SessionContext": str,
        "ExtendCode": str,
        "SenderId": str,
    }
    for name, value in body.items():
        kind = shapes.get(name)
        if kind is None or not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            want = f"a {kind.__name__} (of strings)" if kind else "a SendSms field"
            raise Rejected(
                f"{name} = {json.dumps(value)[:80]}: not {want}",
                tencent_error("InvalidParameter", f"The parameter `{name}` is invalid."),
            )
    numbers = body["PhoneNumberSet"]
    if not 1 <= len(numbers) <= 200:
        raise Rejected(
            f"PhoneNumberSet has {len(numbers)} numbers: 1 to 200",
            tencent_error(
                "LimitExceeded.PhoneNumberCountLimit", "The number of phone numbers exceeds the limit of 200."
            ),
        )
    return tencent_sent(
        [(n, "Ok" if TENCENT_NUMBER.fullmatch(n) else "InvalidParameterValue.IncorrectPhoneNumber") for n in numbers]
    )


def tencent_targets(req: Request, _params: tuple) -> list[str]:
    numbers = req.json.get("PhoneNumberSet") if isinstance(req.json, dict) else None
    return [n for n in numbers if isinstance(n, str)] if isinstance(numbers, list) else []


# ---------------------------------------------------------------- scripts

ANSWER_SHORTCUTS = {
    "fcm_error": "fcm.send",
    "tencent_code": "tencent",
    "tencent_error": "tencent",
    "aliyun_code": "aliyun",
}
SCRIPT_KEYS = {"status", "headers", "body", "delay_ms", *ANSWER_SHORTCUTS}


@dataclass
class Script:
    """One queued answer: `{"status", "headers", "body" (JSON value or text), "delay_ms"}`, or a
    shortcut that builds the provider's real error: `fcm_error` (an FCM errorCode),
    `tencent_code` (a per-number code: the matched number gets it, or every number when the
    script has no match), `tencent_error` (a Response.Error code) or `aliyun_code`.
    With none of status/body/shortcut it passes through: the request is handled normally,
    answered after delay_ms, with `headers` added."""

    match: str | None
    response: dict

    @staticmethod
    def parse(route: str, match: Any, response: Any) -> Script:
        if not isinstance(response, dict) or not response.keys() <= SCRIPT_KEYS:
            raise ValueError(f"a response is an object with keys from {sorted(SCRIPT_KEYS)}")
        if match is not None and not isinstance(match, str):
            raise ValueError("match must be a string")
        answers = [k for k in ("body", *ANSWER_SHORTCUTS) if k in response]
        if len(answers) > 1:
            raise ValueError(f"a response takes one of body/{'/'.join(ANSWER_SHORTCUTS)}, not {answers}")
        for shortcut, for_route in ANSWER_SHORTCUTS.items():
            if shortcut in response and route != for_route:
                raise ValueError(f"{shortcut} is for route {for_route}")
        if "fcm_error" in response and response["fcm_error"] not in FCM_ERRORS:
            raise ValueError(f"fcm_error must be one of {sorted(FCM_ERRORS)}")
        status = response.get("status", 200)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        headers = response.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("headers must map names to strings")
        delay = response.get("delay_ms", 0)
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("delay_ms must be a non-negative number")
        return Script(match, response)

    @property
    def passthrough(self) -> bool:
        return not ({"status", "body", *ANSWER_SHORTCUTS} & self.response.keys())

    @property
    def delay_s(self) -> float:
        return self.response.get("delay_ms", 0) / 1000

    def apply(self, normal: Answer, targets: list[str]) -> Answer:
        """The answer to send, given the one normal handling produced."""
        r = self.response
        if self.passthrough:
            answer = normal
        elif "fcm_error" in r:
            answer = fcm_error_answer(r["fcm_error"])
        elif "tencent_code" in r:
            answer = tencent_sent([(n, r["tencent_code"] if self.match in (None, n) else "Ok") for n in targets])
        elif "tencent_error" in r:
            answer = tencent_error(r["tencent_error"])
        elif "aliyun_code" in r:
            answer = aliyun(200, r["aliyun_code"])
        elif isinstance(r.get("body"), str):
            answer = text_answer(r.get("status", 200), r["body"])
        elif "body" in r:
            answer = json_answer(r.get("status", 200), r["body"])
        else:
            answer = Answer(r["status"])
        if "status" in r:
            answer.status = r["status"]
        answer.headers.update(r.get("headers", {}))
        return answer


# ---------------------------------------------------------------- routing and the control API


@dataclass
class Route:
    name: str
    pattern: re.Pattern
    handle: Callable[[Exchange], Answer]
    # What a script's `match` is compared with: token, subscription id, robot, phone numbers…
    targets: Callable[[Request, tuple], list[str]] = lambda req, params: list(params[:1])


PROVIDER_ROUTES = [
    Route("fcm.token", re.compile(r"/fcm/token"), handle_fcm_token, lambda req, params: []),
    Route("fcm.send", re.compile(r"/v1/projects/([^/]+)/messages:send"), handle_fcm_send, fcm_send_targets),
    Route("webpush", re.compile(r"/push/([^/]+)"), handle_webpush),
    Route(
        "dingtalk",
        re.compile(r"/dingtalk/robot/send"),
        handle_dingtalk,
        lambda req, params: [req.query.get("access_token", "")],
    ),
    Route("feishu", re.compile(r"/feishu/open-apis/bot/v2/hook/([^/]+)"), handle_feishu),
    Route(
        "wecom",
        re.compile(r"/wecom/cgi-bin/webhook/send"),
        handle_wecom,
        lambda req, params: [req.query.get("key", "")],
    ),
    Route("slack", re.compile(r"/slack/services/(.+)"), handle_slack),
    Route("webhook", re.compile(r"/hook/([^/]+)"), handle_webhook),
    Route("aliyun", re.compile(r"/aliyun/?"), handle_aliyun, aliyun_targets),
    Route("tencent", re.compile(r"/tencent/?"), handle_tencent, tencent_targets),
]


def decode_reply(answer: Answer) -> Any:
    try:
        return json.loads(answer.body) if answer.body else None
    except ValueError:
        return answer.body.decode("utf-8", "replace")


class Mock:
    def __init__(self, state: State):
        self.state = state

    def handle(self, req: Request) -> tuple[Answer, float]:
        """The answer to send and how long to wait before sending it."""
        if req.path.startswith("/_"):
            try:
                return self.control(req), 0
            except ValueError as e:
                return json_answer(400, {"error": str(e)}), 0
        for route in PROVIDER_ROUTES:
            m = route.pattern.fullmatch(req.path)
            if m:
                return self.serve(route, req, m.groups())
        return json_answer(404, {"error": f"no mock route for {req.method} {req.path}"}), 0

    def serve(self, route: Route, req: Request, params: tuple) -> tuple[Answer, float]:
        arrived_ms = int(time.time() * 1000)  # the real clock: records stay in arrival order
        targets = route.targets(req, params)
        script = self.state.take_script(route.name, targets)
        x = Exchange(self.state, req, params, live=script is None or script.passthrough, now=self.state.now())
        verified, error = True, None
        try:
            answer = route.handle(x)
        except Rejected as r:
            verified, error, answer = False, r.reason, r.answer
        except Exception:  # a bug in the mock, never a verdict on Herald: answer 500 and say so loudly
            trace = traceback.format_exc()
            print(trace, file=sys.stderr, flush=True)
            verified, error, answer = (
                False,
                "mock bug: " + trace.strip().splitlines()[-1],
                json_answer(500, {"mock_bug": trace}),
            )
        if script is not None:
            answer = script.apply(answer, targets)
        record = {
            "route": route.name,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "raw_query": req.raw_query,
            "headers": req.headers,
            "body": req.body.decode("utf-8", "replace"),
            "body_b64": base64.b64encode(req.body).decode(),
            "json": req.json,
            "verified": verified,
            "error": error,
            "answered": answer.status,
            "reply": decode_reply(answer),
            "scripted": script is not None,
            "target": ",".join(targets) or None,
            "decrypted": x.decrypted,
            "at": arrived_ms,
        }
        with self.state.lock:
            self.state.records.append(record)
            self.state.stats[route.name] += 1
        return answer, script.delay_s if script else 0

    def control(self, req: Request) -> Answer:
        state, path, body = self.state, req.path, req.json
        if (req.method, path) == ("POST", "/_config"):
            if not isinstance(body, dict):
                raise ValueError("POST /_config takes a JSON object")
            unknown = body.keys() - CONFIG_PARSERS.keys()
            if unknown:
                raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(CONFIG_PARSERS)}")
            parsed = {key: CONFIG_PARSERS[key](value) for key, value in body.items()}  # all or nothing
            with state.lock:
                state.config.update(parsed)
            return json_answer(200, {"ok": True})
        if (req.method, path) == ("POST", "/_script"):
            if (
                not isinstance(body, dict)
                or body.get("route") not in ROUTES
                or not body.keys() <= {"route", "match", "responses"}
            ):
                raise ValueError(f"POST /_script takes {{route: one of {list(ROUTES)}, match?, responses: [...]}}")
            responses = body.get("responses")
            if not isinstance(responses, list) or not responses:
                raise ValueError("responses must be a non-empty list")
            scripts = [Script.parse(body["route"], body.get("match"), r) for r in responses]
            with state.lock:
                state.scripts[body["route"]].extend(scripts)
            return json_answer(200, {"queued": len(scripts)})
        if (req.method, path) == ("DELETE", "/_script"):
            with state.lock:
                for queue in state.scripts.values():
                    queue.clear()
            return json_answer(200, {"ok": True})
        if path == "/_requests" and req.method in ("GET", "DELETE"):
            route = req.query.get("route")
            if route is not None and route not in ROUTES:
                raise ValueError(f"route must be one of {list(ROUTES)}")
            with state.lock:
                if req.method == "GET":
                    return json_answer(200, [r for r in state.records if route in (None, r["route"])])
                state.records = [r for r in state.records if route not in (None, r["route"])]
            return json_answer(200, {"ok": True})
        if (req.method, path) == ("GET", "/_stats"):
            with state.lock:
                return json_answer(
                    200,
                    {
                        "fcm_tokens_minted": state.stats["fcm_tokens_minted"],
                        **{route: state.stats[route] for route in ROUTES},
                    },
                )
        return json_answer(404, {"error": f"no control route {req.method} {path}"})


# ---------------------------------------------------------------- HTTP server


class BadFraming(Exception):
    def __init__(self, answer: Answer):
        super().__init__(answer.status)
        self.answer = answer


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Herald's pooled clients expect of real services
    server_version = "herald-provider-mock"

    def do_request(self) -> None:
        try:
            body = self.read_body()
        except BadFraming as e:
            self.close_connection = True  # the rest of the stream cannot be trusted
            self.send(e.answer)
            return
        split = urllib.parse.urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        answer, delay_s = self.server.mock.handle(Request(self.command, split.path, split.query, headers, body))
        time.sleep(delay_s)
        try:
            self.send(answer)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up first (what a timeout test wants)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_request

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                try:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                except ValueError as e:
                    raise BadFraming(text_answer(400, "bad chunk size")) from e
                if size == 0:
                    break
                total += size
                if total > MAX_BODY:
                    raise BadFraming(text_answer(413, "body too large for the mock"))
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                continue  # trailers carry nothing the providers read
            return b"".join(chunks)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as e:
            raise BadFraming(text_answer(400, "bad Content-Length")) from e
        if length > MAX_BODY:
            raise BadFraming(text_answer(413, "body too large for the mock"))
        return self.rfile.read(length)

    def send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: /_requests has every request. Protocol errors still go to stderr."""


class MockServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), Handler)
        self.mock = Mock(State(f"http://127.0.0.1:{self.server_address[1]}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    server = MockServer(parser.parse_args().port)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
