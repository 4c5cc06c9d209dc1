// Herald client for browsers and Node (>= 22, or 20 with --experimental-websocket).
// No dependencies. See README.md for the guide.
//
//   import { connect } from "@herald/client";
//   const herald = connect({ url: "wss://push.example.com/ws", getToken: fetchToken });
//   herald.addEventListener("message", (e) => console.log(e.detail.title));
//
// What it does for you: reconnects with jittered backoff; resumes personal messages from
// the last seq it saw (persisted in localStorage where there is one); recovers topics from
// their last seq; acks every message; drops repeats by id; refreshes the token before it
// expires; and reacts to Herald's close codes (1012 reconnect now, 4001 new token, 4008
// resume, 4003 drop that topic, 4009 back off). `client.inbox` is the notification centre:
// the user's messages with read state, marks, and an unread count kept live across devices.

const SUBPROTOCOL = "herald.v1";

const CLOSE = Object.freeze({
  NORMAL: 1000,
  RESTARTING: 1012,
  UNAUTHORIZED: 4001,
  FORBIDDEN_TOPIC: 4003,
  SLOW_CONSUMER: 4008,
  TOO_MANY_SESSIONS: 4009,
});

/**
 * The wait before reconnect attempt number `attempt` (0 = the first after a drop):
 * exponential from `minMs`, capped at `capMs`, with full jitter so a fleet of clients does
 * not reconnect in step.
 */
export function backoffDelay(attempt, minMs, capMs, random = Math.random) {
  return random() * Math.min(capMs, minMs * 2 ** Math.min(attempt, 30));
}

/** Storage that lives as long as the page or process. */
export class MemoryStorage {
  #map = new Map();
  getItem(k) { return this.#map.has(k) ? this.#map.get(k) : null; }
  setItem(k, v) { this.#map.set(k, String(v)); }
  removeItem(k) { this.#map.delete(k); }
}

function defaultStorage() {
  try {
    if (typeof localStorage !== "undefined" && localStorage) return localStorage;
  } catch { /* some browsers throw when storage is disabled */ }
  return new MemoryStorage();
}

/** Seconds since the epoch at which a JWT expires, or null. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function" ? atob(part) : Buffer.from(part, "base64").toString("utf8");
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

/** A bounded set: remembers the last `limit` ids. */
class RecentIds {
  #set = new Set();
  #limit;
  constructor(limit) { this.#limit = limit; }
  has(id) { return this.#set.has(id); }
  add(id) {
    this.#set.add(id);
    if (this.#set.size > this.#limit) this.#set.delete(this.#set.values().next().value);
  }
}

/**
 * An error answer from Herald's HTTP API. `status` is the HTTP status, `code` the server's
 * error code (`unauthorized`, `invalid_request`, …) and the message names the server's.
 */
export class HeraldApiError extends Error {
  constructor(method, path, status, code, serverMessage) {
    super(`herald: ${method} ${path}: HTTP ${status}${code ? ` ${code}` : ""}: ${serverMessage}`);
    this.name = "HeraldApiError";
    this.status = status;
    this.code = code;
    this.serverMessage = serverMessage;
  }
}

/**
 * One call of Herald's HTTP API at `api` (its base URL): JSON in and out, `token` as
 * `Authorization: Bearer`. Resolves with the answer's JSON (null when empty); a non-2xx
 * answer rejects with a HeraldApiError carrying the server's `{"error":{code,message}}`.
 */
async function apiCall(f, api, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let answer;
  try {
    answer = await f(`${api}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    // Unreachable, or (in a browser) refused by CORS: the page's origin must be in HERALD_CORS_ORIGINS.
    throw new Error(`herald: ${method} ${path}: ${e?.message ?? e}`, { cause: e });
  }
  const text = await answer.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below if it matters */ }
  if (!answer.ok) {
    const err = json && typeof json === "object" ? json.error : null;
    throw new HeraldApiError(method, path, answer.status, err?.code ?? null, err?.message ?? (text || answer.statusText));
  }
  return json;
}

/**
 * Herald's HTTP base for a WebSocket URL: `ws:` becomes `http:`, `wss:` `https:`, and the
 * trailing `/ws` path goes (`wss://push.example.com/ws` → `https://push.example.com`).
 */
export function httpBase(wsUrl) {
  const u = new URL(wsUrl, globalThis.location?.href);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  u.pathname = u.pathname.replace(/\/ws\/?$/, "");
  u.search = "";
  u.hash = "";
  return u.toString().replace(/\/$/, "");
}

export class HeraldClient extends EventTarget {
  #opts;
  #ws = null;
  #token;
  #userId = null;
  // Personal messages: every seq up to #lastSeq is had; seqs seen above it wait in #ahead
  // (on a cluster a user's messages may arrive out of seq order), so a resume starts at
  // the first gap, not past it.
  #lastSeq = 0;
  #ahead = new Set();
  #baseKnown = false;
  #topics = new Map(); // topic -> last seq seen
  #pendingTopic = null;
  #seen;
  #attempt = 0;
  // Set by a 1012 (the server restarts or drains) until the next welcome: a restart is
  // short, so retries stay small instead of growing to minutes.
  #restarting = false;
  #stopped = false;
  #reconnectTimer = null;
  #refreshTimer = null;
  #storage;
  #apiUrl;
  // The inbox's unread count (null until the server has told it). It counts every message
  // with a seq up to #countedThrough, plus the ids in #counted (above it, counted as they
  // arrived). #readIds: ids the server said are read, never counted again on arrival.
  #unread = null;
  #countedThrough = 0;
  #counted = new Map(); // id -> seq
  #readIds = new RecentIds(2000);
  #maxSeq = 0; // the highest personal seq received
  #watching = new Set(); // per inbox list in flight: the messages arriving meanwhile

  #inbox;

  /**
   * @param {object} opts see herald.d.ts
   */
  constructor(opts) {
    super();
    if (!opts || !opts.url) throw new Error("herald: 'url' is required");
    if (!opts.token && !opts.getToken) throw new Error("herald: 'token' or 'getToken' is required");
    this.#opts = {
      autoAck: true,
      minBackoffMs: 250,
      maxBackoffMs: 15000,
      restartBackoffMaxMs: 2000,
      refreshBeforeMs: 30000,
      dedupe: 2000,
      replayOnFirstConnect: false,
      ...opts,
    };
    this.#token = opts.token ?? null;
    this.#storage = opts.storage ?? defaultStorage();
    this.#seen = new RecentIds(this.#opts.dedupe);
    for (const t of opts.topics ?? []) this.#topics.set(t, 0);
    this.#apiUrl = (opts.apiUrl ? String(opts.apiUrl) : httpBase(opts.url)).replace(/\/$/, "");
    const client = this;
    const idList = (ids) => (typeof ids === "string" ? [ids] : [...ids]);
    this.#inbox = Object.freeze({
      list: (o) => this.#inboxList(o),
      markRead: (ids) => this.#inboxMark("read", { ids: idList(ids) }),
      markAllRead: () => this.#inboxMark("read", { all: true }),
      archive: (ids) => this.#inboxMark("archive", { ids: idList(ids) }),
      get unreadCount() { return client.#unread; },
    });
  }

  /** The notification centre: the user's messages, marks and the live unread count (herald.d.ts: `HeraldInbox`). */
  get inbox() { return this.#inbox; }
  /** The user this client is connected as (after the first `welcome`). */
  get userId() { return this.#userId; }
  /** The highest personal seq seen. */
  get lastSeq() { return this.#lastSeq; }

  // Records personal seq `seq` as had (and, with `upTo`, every seq up to it).
  #had(seq, upTo = 0) {
    if (!this.#baseKnown) {
      // Connected without a replay: what came before the first message is not wanted.
      this.#lastSeq = Math.max(this.#lastSeq, seq - 1);
      this.#baseKnown = true;
    }
    if (upTo > this.#lastSeq) this.#lastSeq = upTo;
    if (seq > this.#lastSeq) this.#ahead.add(seq);
    for (const s of this.#ahead) if (s <= this.#lastSeq) this.#ahead.delete(s);
    while (this.#ahead.delete(this.#lastSeq + 1)) this.#lastSeq += 1;
    if (this.#ahead.size > 10000) {
      // A gap that never fills while connected: give it up.
      this.#lastSeq = Math.max(...this.#ahead);
      this.#ahead.clear();
    }
    this.#storage.setItem(this.#key("seq"), this.#lastSeq);
  }
  get connected() { return this.#ws !== null && this.#ws.readyState === 1; }

  async connect() {
    this.#stopped = false;
    if (!this.#token && this.#opts.getToken) this.#token = await this.#opts.getToken();
    this.#open();
    return this;
  }

  /** Closes for good (no reconnect). */
  close() {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#refreshTimer);
    if (this.#ws) this.#ws.close(CLOSE.NORMAL);
  }

  subscribe(topic, { since } = {}) {
    if (!this.#topics.has(topic) || since !== undefined) this.#topics.set(topic, since ?? this.#topics.get(topic) ?? 0);
    this.#sendSubscribe(topic, since);
  }

  unsubscribe(topic) {
    this.#topics.delete(topic);
    this.#send({ type: "unsubscribe", topic });
  }

  ack(id) { this.#send({ type: "ack", id }); }
  read(id) { this.#send({ type: "read", id }); }

  /** Drops the connection and reconnects at once (resuming). */
  reconnectNow() { this.#renew(0); }

  /** Ends this session (its close is not handled as a drop) and opens a new one after `delay` ms. */
  #renew(delay) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.close(CLOSE.NORMAL, "reconnect");
    this.#schedule(delay);
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  #send(frame) {
    if (this.connected) this.#ws.send(JSON.stringify(frame));
  }

  #sendSubscribe(topic, since) {
    this.#pendingTopic = topic;
    const frame = { type: "subscribe", topic };
    const from = since ?? this.#topics.get(topic);
    if (from) frame.since = from;
    this.#send(frame);
  }

  #key(what) { return `herald:${this.#userId}:${what}`; }

  #open() {
    const Ws = this.#opts.WebSocket ?? globalThis.WebSocket;
    if (!Ws) throw new Error("herald: no WebSocket (Node 20: run with --experimental-websocket, or pass { WebSocket })");
    const sep = this.#opts.url.includes("?") ? "&" : "?";
    const ws = new Ws(`${this.#opts.url}${sep}token=${encodeURIComponent(this.#token)}`, [SUBPROTOCOL]);
    this.#ws = ws;
    ws.onmessage = (ev) => this.#onFrame(ws, ev.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code, ev.reason);
    // A failed connection is an error, then (in browsers) a close with 1006 — but Node 20's
    // WebSocket fires only the error and stays CONNECTING, so the error itself ends the
    // attempt (the close that may follow is ignored: this socket is no longer current).
    ws.onerror = () => {
      if (ws !== this.#ws) return;
      this.#onClose(ws, 1006, "connection failed"); // first: it makes this socket stale
      try { ws.close(); } catch { /* not open yet */ }
    };
  }

  #onFrame(ws, data) {
    if (ws !== this.#ws) return;
    let f;
    try { f = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data)); } catch { return; }
    switch (f.type) {
      case "welcome": {
        const first = this.#userId === null;
        this.#userId = f.user_id;
        this.#attempt = 0;
        this.#restarting = false;
        const stored = Number(this.#storage.getItem(this.#key("seq")) ?? 0);
        this.#lastSeq = Math.max(this.#lastSeq, stored);
        if (this.#lastSeq > 0 || (first && this.#opts.replayOnFirstConnect)) {
          this.#baseKnown = true;
          this.#send({ type: "resume", since: this.#lastSeq });
        }
        for (const topic of this.#topics.keys()) {
          const stored = Number(this.#storage.getItem(this.#key(`topic:${topic}`)) ?? 0);
          if (stored > (this.#topics.get(topic) ?? 0)) this.#topics.set(topic, stored);
          this.#sendSubscribe(topic);
        }
        this.#scheduleRefresh();
        this.#emit("open", f);
        // Back after a drop: reads made elsewhere meanwhile were not heard, and the resume
        // may replay messages the count already has. Ask the server again.
        if (!first && this.#unread !== null) {
          this.#inboxList({ limit: 1 }).catch((e) => this.#emit("error", { code: "inbox", message: String(e?.message ?? e) }));
        }
        break;
      }
      case "message": {
        if (f.topic !== undefined) {
          const last = this.#topics.get(f.topic) ?? 0;
          if (f.seq > last) {
            this.#topics.set(f.topic, f.seq);
            this.#storage.setItem(this.#key(`topic:${f.topic}`), f.seq);
          }
          if (this.#seen.has(f.id)) return;
          this.#seen.add(f.id);
          this.#emit("topic", f);
          return;
        }
        this.#had(f.seq);
        const repeat = this.#seen.has(f.id);
        if (this.#opts.autoAck) this.ack(f.id);
        if (repeat) return;
        this.#seen.add(f.id);
        const counted = this.#arrived(f);
        this.#emit("message", f);
        if (counted) this.#emitUnread();
        break;
      }
      case "read":
        // A read on any of the user's sessions or through the API: the new count.
        if (Array.isArray(f.ids)) for (const id of f.ids) this.#readIds.add(id);
        if (typeof f.unread === "number") this.#setUnread(f.unread);
        this.#emit("read", f);
        break;
      case "resumed":
        // A complete replay brought everything up to the head (or it expired).
        if (f.complete) this.#had(0, f.seq);
        this.#emit("resumed", f);
        break;
      case "subscribed":
        if (f.seq > (this.#topics.get(f.topic) ?? 0)) this.#topics.set(f.topic, f.seq);
        this.#emit("subscribed", f);
        break;
      case "unsubscribed": this.#emit("unsubscribed", f); break;
      case "error":
        this.#emit("error", f);
        // The server could not read history for a resume or a topic (its store is failing
        // over) and has already retried for a while: a new session after a pause resumes
        // and resubscribes from what this client has, so nothing stays unread.
        if (f.code === "unavailable" || f.code === "history_unavailable") this.#renew(this.#backoff());
        break;
      default: break;
    }
  }

  // ---- inbox -------------------------------------------------------------------------

  // A personal message not seen before: counted as unread unless the count already has it
  // (its seq is at or below what the server counted: a replay) or it is known read.
  // Returns whether the count changed.
  #arrived(f) {
    const seq = Number(f.seq) || 0;
    if (seq > this.#maxSeq) this.#maxSeq = seq;
    for (const w of this.#watching) w.push({ id: f.id, seq });
    if (this.#unread === null || seq <= this.#countedThrough) return false;
    if (this.#counted.has(f.id) || this.#readIds.has(f.id)) return false;
    this.#counted.set(f.id, seq);
    this.#unread += 1;
    return true;
  }

  #emitUnread() { this.#emit("unread", { unread: this.#unread }); }

  // A count the server computed just now, without saying up to which seq: it is taken to
  // include every message received so far.
  #setUnread(n) {
    this.#countedThrough = Math.max(this.#countedThrough, this.#maxSeq);
    this.#counted.clear();
    this.#changeUnread(n);
  }

  #changeUnread(n) {
    if (n === this.#unread) return;
    this.#unread = n;
    this.#emitUnread();
  }

  async #request(method, path, body) {
    const f = this.#opts.fetch ?? globalThis.fetch;
    if (!f) throw new Error("herald: no fetch (pass { fetch })");
    if (!this.#token && this.#opts.getToken) this.#token = await this.#opts.getToken();
    try {
      return await apiCall(f, this.#apiUrl, method, path, { token: this.#token, body });
    } catch (e) {
      // An expired token: with getToken, once more with a fresh one.
      if (!(e instanceof HeraldApiError) || e.status !== 401 || !this.#opts.getToken) throw e;
      this.#token = await this.#opts.getToken();
      return apiCall(f, this.#apiUrl, method, path, { token: this.#token, body });
    }
  }

  async #inboxList({ limit, before } = {}) {
    const q = new URLSearchParams();
    if (limit !== undefined) q.set("limit", String(limit));
    if (before !== undefined) q.set("before", String(before));
    const query = q.toString();
    const meanwhile = [];
    this.#watching.add(meanwhile);
    let page;
    try {
      page = await this.#request("GET", `/v1/me/inbox${query ? `?${query}` : ""}`);
    } finally {
      this.#watching.delete(meanwhile);
    }
    if (before === undefined) {
      // The first page starts at the inbox's newest seq: the count covers every seq up to
      // it. A message received meanwhile (or counted before) with a higher seq was not in
      // it: the request raced its delivery, or a lagging replica answered.
      const head = page.messages.reduce((m, x) => Math.max(m, Number(x.seq) || 0), 0);
      const late = new Map();
      for (const [id, seq] of [...this.#counted, ...meanwhile.map((m) => [m.id, m.seq])]) {
        if (seq > head && !this.#readIds.has(id)) late.set(id, seq);
      }
      this.#countedThrough = head;
      this.#counted = late;
      this.#changeUnread(page.unread + late.size);
    } else {
      this.#setUnread(page.unread);
    }
    return page;
  }

  async #inboxMark(what, body) {
    if (body.ids && body.ids.length === 0) throw new Error(`herald: inbox.${what === "read" ? "markRead" : "archive"} needs at least one id`);
    const answer = await this.#request("POST", `/v1/me/inbox/${what}`, body);
    for (const id of answer.ids ?? []) this.#readIds.add(id);
    if (body.ids) for (const id of body.ids) this.#readIds.add(id);
    this.#setUnread(answer.unread);
    return answer;
  }

  async #onClose(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#refreshTimer);
    let delay = null;
    if (this.#stopped || code === CLOSE.NORMAL && reason !== "reconnect") {
      delay = null;
    } else if (code === CLOSE.RESTARTING) {
      // Draining or restarting: reconnect elsewhere now; if it is down meanwhile, retry
      // with small waits (capped at restartBackoffMaxMs) until it is back.
      this.#restarting = true;
      this.#attempt = 0;
      delay = Math.random() * 250;
    } else if (code === CLOSE.UNAUTHORIZED) {
      if (this.#opts.getToken) {
        try { this.#token = await this.#opts.getToken(); delay = 0; } catch (e) { this.#emit("error", { code: "token", message: String(e) }); delay = this.#backoff(); }
      }
    } else if (code === CLOSE.FORBIDDEN_TOPIC) {
      if (this.#pendingTopic) this.#topics.delete(this.#pendingTopic);
      this.#emit("error", { code: "forbidden_topic", topic: this.#pendingTopic, message: reason });
      delay = 0;
    } else if (code === CLOSE.TOO_MANY_SESSIONS) {
      delay = this.#opts.maxBackoffMs;
    } else {
      delay = this.#backoff(); // 4008 and network trouble: resume after a pause
    }
    this.#emit("close", { code, reason, willReconnect: delay !== null, delayMs: delay });
    if (delay !== null) this.#schedule(delay);
  }

  #backoff() {
    const { minBackoffMs, maxBackoffMs, restartBackoffMaxMs } = this.#opts;
    const cap = this.#restarting ? Math.min(maxBackoffMs, restartBackoffMaxMs) : maxBackoffMs;
    return backoffDelay(this.#attempt++, minBackoffMs, cap);
  }

  #schedule(delay) {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => { if (!this.#stopped) this.#reconnect(); }, delay);
  }

  // A token that expired while the client was away (or expires before a session could
  // use it) would be refused at the upgrade, so every retry with it would fail too: get a
  // fresh one first, when there is a getToken.
  async #reconnect() {
    const exp = tokenExpiry(this.#token ?? "");
    if (this.#opts.getToken && exp && exp * 1000 - Date.now() < this.#opts.refreshBeforeMs) {
      try {
        this.#token = await this.#opts.getToken();
      } catch (e) {
        this.#emit("error", { code: "token", message: String(e) });
        this.#schedule(this.#backoff());
        return;
      }
    }
    if (!this.#stopped) this.#open();
  }

  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    const exp = tokenExpiry(this.#token ?? "");
    if (!exp || !this.#opts.getToken) return;
    const wait = Math.max(0, exp * 1000 - Date.now() - this.#opts.refreshBeforeMs);
    this.#refreshTimer = setTimeout(async () => {
      try {
        this.#token = await this.#opts.getToken();
        this.reconnectNow(); // a fresh session with the new token; resume covers the gap
      } catch (e) {
        this.#emit("error", { code: "token", message: String(e) });
      }
    }, wait);
  }
}

function base64UrlToBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** A device id that stays the same for one subscription: `web-` and 16 hex of its endpoint's SHA-256. */
async function endpointId(endpoint) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(endpoint));
  return "web-" + [...new Uint8Array(digest).slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Subscribes this browser to Web Push and registers the subscription with Herald for the
 * token's user: fetches the server's VAPID key (`GET /v1/webpush/key`), subscribes with the
 * service worker's `pushManager` (reusing a subscription it already has), and registers it
 * with `PUT /v1/me/devices/{deviceId}`. Resolves with `{ deviceId, subscription }`.
 *
 * @param {ServiceWorkerRegistration} registration
 * @param {{ api: string, token?: string, getToken?: () => Promise<string>|string, deviceId?: string, fetch?: typeof fetch }} opts
 *   `api`: Herald's HTTP base (e.g. `https://push.example.com`).
 */
export async function subscribeWebPush(registration, opts) {
  if (!opts || !opts.api) throw new Error("herald: subscribeWebPush needs { api }");
  const f = opts.fetch ?? globalThis.fetch;
  const token = opts.token ?? (opts.getToken ? await opts.getToken() : null);
  if (!token) throw new Error("herald: subscribeWebPush needs { token } or { getToken }");
  const api = opts.api.replace(/\/$/, "");
  const { public_key: publicKey } = await apiCall(f, api, "GET", "/v1/webpush/key");
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: base64UrlToBytes(publicKey),
    });
  }
  const json = typeof subscription.toJSON === "function" ? subscription.toJSON() : subscription;
  const deviceId = opts.deviceId ?? (await endpointId(json.endpoint));
  await apiCall(f, api, "PUT", `/v1/me/devices/${encodeURIComponent(deviceId)}`, {
    token,
    body: { platform: "webpush", subscription: json },
  });
  return { deviceId, subscription };
}

/** Creates a client and connects it. */
export function connect(opts) {
  const client = new HeraldClient(opts);
  client.connect().catch((e) => client.dispatchEvent(new CustomEvent("error", { detail: { code: "connect", message: String(e) } })));
  return client;
}

export { CLOSE };
