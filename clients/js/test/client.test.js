// The SDK against a real `herald serve`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, HeraldClient, MemoryStorage, subscribeWebPush, tokenExpiry } from "../src/herald.js";
import { createECDH, generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { api, collect, send, startHerald, token, until } from "./harness.js";

test("receives, acks (so the message is delivered) and exposes seq", async () => {
  const h = await startHerald();
  try {
    const c = h.connect({ url: h.ws, token: token("ann") });
    const messages = collect(c, "message");
    await until("open", () => c.connected && c.userId === "ann");
    const id = await send(h, { to: ["ann"], title: "Hello", data: { n: 1 } });
    await until("the message", () => messages.length === 1);
    assert.equal(messages[0].id, id);
    assert.deepEqual(messages[0].data, { n: 1 });
    assert.equal(c.lastSeq, 1);
    await until("delivered", async () => (await api(h, "GET", `/v1/messages/${id}`)).body.status === "delivered");
    c.close();
  } finally {
    await h.stop();
  }
});

test("resumes what was missed from the stored seq, in order, each once", async () => {
  const h = await startHerald();
  try {
    const storage = new MemoryStorage();
    const first = h.connect({ url: h.ws, token: token("bo"), storage });
    const seen = collect(first, "message");
    await until("open", () => first.connected);
    await send(h, { to: ["bo"], title: "m0" });
    await until("m0", () => seen.length === 1);
    first.close();
    const missed = [];
    for (let i = 1; i <= 3; i++) missed.push(await send(h, { to: ["bo"], title: `m${i}`, channels: ["in_app"] }));
    for (const id of missed) {
      await until("offline", async () => (await api(h, "GET", `/v1/messages/${id}`)).body.status === "failed");
    }
    const second = h.connect({ url: h.ws, token: token("bo"), storage });
    const got = collect(second, "message");
    const resumed = collect(second, "resumed");
    await until("resume", () => resumed.length === 1);
    // Replayed in seq order, each once (messages accepted within the same instant may be
    // numbered in either order).
    assert.deepEqual(got.map((m) => m.id).sort(), [...missed].sort());
    assert.deepEqual(got.map((m) => m.seq), [2, 3, 4]);
    assert.equal(resumed[0].complete, true);
    second.close();
  } finally {
    await h.stop();
  }
});

test("recovers topics after a reconnect and reconnects on 1012", async () => {
  const h = await startHerald();
  try {
    const c = h.connect({ url: h.ws, token: token("cy", { topics: ["news"] }), topics: ["news"], minBackoffMs: 50 });
    const topics = collect(c, "topic");
    const closes = collect(c, "close");
    const opens = collect(c, "open");
    const subscribed = collect(c, "subscribed");
    await until("subscribed", () => subscribed.length === 1);
    assert.equal((await api(h, "POST", "/v1/topics/news/messages", { title: "t1" })).status, 202);
    await until("t1", () => topics.length === 1);
    await h.restart(); // SIGTERM: the session is closed 1012, the client comes back by itself
    await until("reconnected and re-subscribed", () => opens.length === 2 && subscribed.length === 2, 20000);
    assert.equal(closes[0].code, 1012);
    assert.equal(closes[0].willReconnect, true);
    await api(h, "POST", "/v1/topics/news/messages", { title: "t2" });
    await until("t2", () => topics.length === 2);
    assert.deepEqual(topics.map((t) => t.title), ["t1", "t2"]);
    c.close();
  } finally {
    await h.stop();
  }
});

test("after a 1012 a server that stays down is retried with small waits until it is back", async () => {
  const h = await startHerald();
  try {
    // The defaults: a real app's backoff, not the fast one of the other tests.
    const c = h.connect({ url: h.ws, token: token("dee") });
    const closes = collect(c, "close");
    const opens = collect(c, "open");
    await until("open", () => opens.length === 1);
    await h.restart({ downMs: 6000 }); // down for longer than the plain backoff's early steps
    await until("reconnected", () => opens.length === 2, 20000);
    assert.equal(closes[0].code, 1012);
    assert.ok(closes.length >= 2, `the client retried while the server was down: ${closes.length}`);
    for (const cl of closes) {
      assert.ok(cl.willReconnect && cl.delayMs <= 2000, `after 1012 every retry waits at most 2 s: ${JSON.stringify(cl)}`);
    }
    c.close();
  } finally {
    await h.stop();
  }
});

test("backoff grows exponentially, is capped and jittered", () => {
  assert.equal(backoffDelay(0, 250, 15000, () => 1), 250);
  assert.equal(backoffDelay(3, 250, 15000, () => 1), 2000);
  assert.equal(backoffDelay(10, 250, 15000, () => 1), 15000);
  assert.equal(backoffDelay(100, 250, 2000, () => 1), 2000);
  assert.equal(backoffDelay(5, 250, 15000, () => 0), 0);
});

test("refreshes the token before it expires and never sees 4001", async () => {
  const h = await startHerald();
  try {
    let issued = 0;
    const c = h.connect({ url: h.ws, getToken: () => { issued += 1; return token("di", { ttlS: 3 }); }, refreshBeforeMs: 1500 });
    const closes = collect(c, "close");
    const messages = collect(c, "message");
    await until("open", () => c.connected);
    await new Promise((r) => setTimeout(r, 4500));
    await until("connected", () => c.connected);
    const id = await send(h, { to: ["di"], title: "after expiry" });
    await until("message", () => messages.some((m) => m.id === id));
    assert.ok(issued >= 2, `tokens issued: ${issued}`);
    assert.ok(!closes.some((e) => e.code === 4001), JSON.stringify(closes));
    c.close();
  } finally {
    await h.stop();
  }
});

test("without getToken an expired token ends the client with 4001", async () => {
  const h = await startHerald();
  try {
    const c = h.connect({ url: h.ws, token: token("ed", { ttlS: 2 }) });
    const closes = collect(c, "close");
    await until("4001", () => closes.length === 1, 10000);
    assert.deepEqual([closes[0].code, closes[0].willReconnect], [4001, false]);
  } finally {
    await h.stop();
  }
});

test("a forbidden topic is dropped, the rest stays", async () => {
  const h = await startHerald();
  try {
    const c = h.connect({ url: h.ws, token: token("fi", { topics: ["ok"] }), topics: ["ok"], minBackoffMs: 20 });
    const errors = collect(c, "error");
    const topics = collect(c, "topic");
    const opens = collect(c, "open");
    const subscribed = collect(c, "subscribed");
    await until("open", () => opens.length === 1 && subscribed.length === 1);
    c.subscribe("secret");
    await until("forbidden", () => errors.some((e) => e.code === "forbidden_topic"));
    assert.equal(errors.find((e) => e.code === "forbidden_topic").topic, "secret");
    await until("back, subscribed to ok only", () => opens.length === 2 && subscribed.length === 2);
    assert.equal(subscribed[1].topic, "ok");
    await api(h, "POST", "/v1/topics/ok/messages", { title: "fine" });
    await until("ok", () => topics.length === 1);
    c.close();
  } finally {
    await h.stop();
  }
});

// De-duplication, without a server: a fake socket that repeats a message.
test("resumes from the first gap when seqs arrive out of order", async () => {
  // On a cluster a user's messages can reach a session out of seq order: 5 and 7 came,
  // 6 did not (its in-app attempt met the gateway going down). The resume must ask from 5.
  const sent = [];
  const scripts = [
    [{ type: "message", id: "m5", seq: 5 }, { type: "message", id: "m7", seq: 7 }],
    [{ type: "message", id: "m6", seq: 6 }, { type: "resumed", seq: 9, replayed: 1, complete: true }],
  ];
  let n = 0;
  class FakeSocket {
    constructor() {
      this.readyState = 1;
      const script = scripts[n++] ?? [];
      queueMicrotask(() => {
        const frame = (f) => this.onmessage({ data: JSON.stringify(f) });
        frame({ type: "welcome", session_id: `s${n}`, user_id: "u", heartbeat_s: 25 });
        for (const f of script) frame({ title: "x", created_at: "now", ...f });
      });
    }
    send(t) { sent.push(JSON.parse(t)); }
    close() { this.readyState = 3; this.onclose?.({ code: 1000, reason: "" }); }
  }
  const c = new HeraldClient({ url: "ws://fake/ws", token: "t", WebSocket: FakeSocket, storage: new MemoryStorage() });
  const got = collect(c, "message");
  await c.connect();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(c.lastSeq, 5, "7 is ahead of a gap");
  c.reconnectNow();
  await until("the second session", () => n === 2 && sent.some((f) => f.type === "resume"));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(sent.filter((f) => f.type === "resume").map((f) => f.since), [5]);
  assert.deepEqual(got.map((m) => m.id), ["m5", "m7", "m6"]);
  assert.equal(c.lastSeq, 9, "a complete resume covers up to its head");
  c.close();
});

test("drops a repeated id but still acks it", async () => {
  const sent = [];
  class FakeSocket {
    constructor() {
      this.readyState = 1;
      queueMicrotask(() => {
        const frame = (f) => this.onmessage({ data: JSON.stringify(f) });
        frame({ type: "welcome", session_id: "s", user_id: "u", heartbeat_s: 25 });
        const m = { type: "message", id: "01A", seq: 1, title: "x", created_at: "now" };
        frame(m);
        frame(m);
      });
    }
    send(t) { sent.push(JSON.parse(t)); }
    close() {}
  }
  const c = new HeraldClient({ url: "ws://fake/ws", token: "t", WebSocket: FakeSocket });
  const got = collect(c, "message");
  await c.connect();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(got.length, 1);
  assert.equal(sent.filter((f) => f.type === "ack").length, 2);
});

test("reads a token's expiry", () => {
  assert.equal(tokenExpiry(token("x", { ttlS: 100 })) > Date.now() / 1000, true);
  assert.equal(tokenExpiry("garbage"), null);
});

// Web Push registration, as a page does it. A real browser subscribes through its vendor's
// push service (not reachable here), so the ServiceWorkerRegistration is a stand-in that
// makes the subscription's keys as a browser would; Herald and its API are real.
test("subscribeWebPush registers the browser's subscription for the token's user", async () => {
  const dir = mkdtempSync(join(tmpdir(), "herald-vapid-"));
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1", privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
  writeFileSync(join(dir, "vapid.pem"), privateKey);
  const h = await startHerald({ HERALD_VAPID_PRIVATE_KEY_FILE: join(dir, "vapid.pem"), HERALD_VAPID_SUBJECT: "mailto:ops@example.com" });
  try {
    const ua = createECDH("prime256v1");
    ua.generateKeys();
    let current = null;
    const subscribedWith = [];
    const registration = {
      pushManager: {
        async getSubscription() { return current; },
        async subscribe(opts) {
          subscribedWith.push(opts);
          const json = { endpoint: "https://push.example.net/send/abc123", expirationTime: null,
            keys: { p256dh: ua.getPublicKey().toString("base64url"), auth: randomBytes(16).toString("base64url") } };
          current = { toJSON: () => json };
          return current;
        },
      },
    };
    const first = await subscribeWebPush(registration, { api: h.base, token: token("web") });
    const key = (await api(h, "GET", "/v1/webpush/key")).body.public_key;
    assert.equal(subscribedWith.length, 1);
    assert.equal(subscribedWith[0].userVisibleOnly, true);
    assert.equal(Buffer.from(subscribedWith[0].applicationServerKey).toString("base64url"), key);
    const again = await subscribeWebPush(registration, { api: h.base, getToken: () => token("web") });
    assert.equal(again.deviceId, first.deviceId, "the same subscription is the same device");
    assert.equal(subscribedWith.length, 1, "an existing subscription is reused");
    const devices = (await api(h, "GET", "/v1/users/web/devices")).body.devices;
    assert.equal(devices.length, 1);
    assert.deepEqual([devices[0].device_id, devices[0].platform, devices[0].hint, devices[0].active], [first.deviceId, "webpush", "push.example.net", true]);
    await assert.rejects(subscribeWebPush(registration, { api: h.base, token: "not-a-token" }), /HTTP 401/);
  } finally {
    await h.stop();
  }
});
