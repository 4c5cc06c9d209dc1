// The inbox (notification centre) against a real `herald serve`: two clients of one user
// keep one live unread count; and, with a fake socket and fetch, the count's rules.
import { test } from "node:test";
import assert from "node:assert/strict";
import { HeraldApiError, HeraldClient, MemoryStorage, httpBase } from "../src/herald.js";
import { api, collect, send, startHerald, token, until } from "./harness.js";

const inApp = (title) => ({ to: ["ivy"], title, channels: ["in_app"] });

test("two clients of one user: list, a read on one reaches the other, mark all, archive", async () => {
  const h = await startHerald();
  try {
    const a = h.connect({ url: h.ws, token: token("ivy") });
    const b = h.connect({ url: h.ws, token: token("ivy") });
    const gotA = collect(a, "message");
    const gotB = collect(b, "message");
    const unreadB = collect(b, "unread");
    const readsB = collect(b, "read");
    await until("both open", () => a.connected && b.connected);
    assert.equal(a.inbox.unreadCount, null, "unknown before the server tells");

    const m1 = await send(h, inApp("First"));
    const m2 = await send(h, inApp("Second"));
    const m3 = await send(h, inApp("Third"));
    await until("three on each", () => gotA.length === 3 && gotB.length === 3);

    // The list is the server's: newest first (seq order), unread, with what was sent.
    const page = await a.inbox.list();
    assert.deepEqual(page.messages.map((m) => m.id).sort(), [m1, m2, m3].sort());
    assert.deepEqual(page.messages.map((m) => m.seq), [3, 2, 1], "newest first");
    assert.equal(page.messages.find((m) => m.id === m2).title, "Second");
    assert.ok(page.messages.every((m) => m.read_at === null && m.archived === false), JSON.stringify(page));
    assert.equal(page.unread, 3);
    assert.equal(a.inbox.unreadCount, 3);
    // Paging by seq.
    const older = await a.inbox.list({ limit: 1, before: 2 });
    assert.deepEqual(older.messages.map((m) => m.seq), [1]);
    assert.equal((await b.inbox.list({ limit: 1 })).messages.length, 1);
    assert.equal(b.inbox.unreadCount, 3);

    // A new message is one more on both, without asking the server.
    const m4 = await send(h, inApp("Fourth"));
    await until("4 on both", () => a.inbox.unreadCount === 4 && b.inbox.unreadCount === 4);

    // A reads one: B hears of it over its socket (B makes no request).
    const marked = await a.inbox.markRead([m1]);
    assert.deepEqual(marked, { ids: [m1], unread: 3 });
    assert.equal(a.inbox.unreadCount, 3);
    await until("B at 3", () => b.inbox.unreadCount === 3);
    await until("B's read event", () => readsB.some((r) => r.ids.includes(m1)));
    assert.equal(readsB.find((r) => r.ids.includes(m1)).unread, 3);
    const listed = await b.inbox.list();
    assert.ok(listed.messages.find((m) => m.id === m1).read_at, "the server has it read");
    assert.deepEqual(unreadB.map((e) => e.unread), [3, 4, 3], "B's unread events, each change once");

    // Marking an already read one changes nothing.
    assert.deepEqual(await b.inbox.markRead(m1), { ids: [], unread: 3 });

    // A read over the socket (`read(id)`) counts too.
    b.read(m2);
    await until("A at 2", () => a.inbox.unreadCount === 2);

    // B marks all: 0 on both.
    const all = await b.inbox.markAllRead();
    assert.deepEqual(all.ids.sort(), [m3, m4].sort());
    assert.equal(all.unread, 0);
    await until("A at 0", () => a.inbox.unreadCount === 0);
    assert.equal(b.inbox.unreadCount, 0);

    // Archive: a new message counts, archiving it on B brings A back to 0.
    const m5 = await send(h, inApp("Fifth"));
    await until("1 on both", () => a.inbox.unreadCount === 1 && b.inbox.unreadCount === 1);
    assert.deepEqual(await b.inbox.archive([m5]), { ids: [m5], unread: 0 });
    await until("A at 0 again", () => a.inbox.unreadCount === 0);
    assert.equal((await a.inbox.list()).messages.find((m) => m.id === m5).archived, true);
  } finally {
    await h.stop();
  }
});

test("a replay on reconnect is not counted twice, and reads made while away are heard", async () => {
  const h = await startHerald();
  try {
    const storage = new MemoryStorage();
    const c = h.connect({ url: h.ws, token: token("ivy"), storage });
    const got = collect(c, "message");
    const closes = collect(c, "close");
    const resumed = collect(c, "resumed");
    await until("open", () => c.connected);
    const m1 = await send(h, inApp("one"));
    await until("m1", () => got.length === 1);
    assert.equal((await c.inbox.list()).unread, 1);

    c.close();
    await until("closed", () => closes.length === 1);
    // While it is away: two more arrive, one of them is read elsewhere.
    const m2 = await send(h, inApp("two"));
    const m3 = await send(h, inApp("three"));
    for (const id of [m2, m3]) {
      await until("in the inbox (no session: offline)", async () => (await api(h, "GET", `/v1/messages/${id}`)).body.status === "failed");
    }
    const r = await api(h, "POST", "/v1/users/ivy/inbox/read", { ids: [m2] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.unread, 2);

    await c.connect(); // resumes: m2 and m3 are replayed
    await until("the replay", () => resumed.length === 1 && got.length === 3);
    // Counting each replayed message would say 3; not hearing the read, 3 as well.
    await until("the count asked again", () => c.inbox.unreadCount === 2);
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(c.inbox.unreadCount, 2, "stays right");
    assert.deepEqual(got.map((m) => m.id), [m1, m2, m3]);
  } finally {
    await h.stop();
  }
});

test("errors reject naming the server's message; getToken is asked again on a 401", async () => {
  const h = await startHerald();
  try {
    // No socket is needed for the inbox: a client that never connects.
    const bad = new HeraldClient({ url: h.ws, token: "not-a-token" });
    await assert.rejects(bad.inbox.list(), (e) => {
      assert.ok(e instanceof HeraldApiError, String(e));
      assert.equal(e.status, 401);
      assert.equal(e.code, "unauthorized");
      assert.match(e.serverMessage, /client token/);
      assert.match(e.message, /HTTP 401 unauthorized: client token/);
      return true;
    });
    await assert.rejects(bad.inbox.markAllRead(), /HTTP 401/);
    assert.equal(bad.inbox.unreadCount, null);

    const good = new HeraldClient({ url: h.ws, token: token("ivy") });
    await assert.rejects(good.inbox.markRead(["not an id!"]), (e) => e.status === 400 && /ids: 'not an id!' is not a message id/.test(e.message));
    await assert.rejects(good.inbox.list({ limit: 500 }), /HTTP 400 .*limit/);
    await assert.rejects(good.inbox.markRead([]), /at least one id/);

    // An expired token: with getToken it is replaced and the call goes through.
    let issued = 0;
    const refreshing = new HeraldClient({ url: h.ws, token: token("ivy", { ttlS: -60 }), getToken: () => { issued += 1; return token("ivy"); } });
    const hello = await send(h, inApp("hello"));
    await until("in the inbox", async () => (await api(h, "GET", `/v1/messages/${hello}`)).body.status === "failed");
    const page = await refreshing.inbox.list();
    assert.equal(issued, 1);
    assert.equal(page.unread, 1);
    assert.equal(refreshing.inbox.unreadCount, 1);

    // A server that cannot be reached.
    const down = new HeraldClient({ url: "ws://127.0.0.1:1/ws", token: token("ivy") });
    await assert.rejects(down.inbox.list(), /herald: GET \/v1\/me\/inbox: /);
  } finally {
    await h.stop();
  }
});

test("the HTTP base comes from the ws URL, or apiUrl", async () => {
  assert.equal(httpBase("wss://push.example.com/ws"), "https://push.example.com");
  assert.equal(httpBase("ws://127.0.0.1:8080/ws?x=1"), "http://127.0.0.1:8080");
  assert.equal(httpBase("wss://example.com/herald/ws/"), "https://example.com/herald");
  const urls = [];
  const fetch = async (url, init) => {
    urls.push([init.method, url, init.headers.authorization]);
    return new Response(JSON.stringify({ messages: [], unread: 0 }), { status: 200 });
  };
  await new HeraldClient({ url: "wss://push.example.com/herald/ws", token: "t1", fetch }).inbox.list({ limit: 5, before: 9 });
  await new HeraldClient({ url: "wss://push.example.com/ws", apiUrl: "https://api.example.com/", token: "t2", fetch }).inbox.list();
  assert.deepEqual(urls, [
    ["GET", "https://push.example.com/herald/v1/me/inbox?limit=5&before=9", "Bearer t1"],
    ["GET", "https://api.example.com/v1/me/inbox", "Bearer t2"],
  ]);
});

// The count's rules, deterministically: a fake socket the test feeds frames to, and a fake
// fetch the test answers when it chooses.
function fakes() {
  const sockets = [];
  class FakeSocket {
    constructor() {
      this.readyState = 1;
      sockets.push(this);
      queueMicrotask(() => this.frame({ type: "welcome", session_id: "s", user_id: "u", heartbeat_s: 25 }));
    }
    frame(f) { this.onmessage({ data: JSON.stringify(f) }); }
    send() {}
    close() { this.readyState = 3; }
  }
  const pending = [];
  const fetch = (url, init) => new Promise((resolve) => pending.push({ url, init, answer: (body) => resolve(new Response(JSON.stringify(body), { status: 200 })) }));
  return { FakeSocket, sockets, pending, fetch };
}
const msg = (id, seq) => ({ type: "message", id, seq, title: id, created_at: "now" });
const tick = () => new Promise((r) => setTimeout(r, 5));

test("the count: a list racing a delivery, replays, repeats and reads", async () => {
  const { FakeSocket, sockets, pending, fetch } = fakes();
  const c = new HeraldClient({ url: "ws://fake/ws", token: "t", WebSocket: FakeSocket, fetch, storage: new MemoryStorage() });
  const unread = collect(c, "unread");
  await c.connect();
  await tick();
  const ws = sockets[0];
  ws.frame(msg("m1", 1)); // before any list: the count is not known, nothing to add to
  assert.equal(c.inbox.unreadCount, null);

  // A list is in flight while m4 arrives (newer than the page) and m2 (in the page).
  const listing = c.inbox.list();
  await tick();
  ws.frame(msg("m4", 4));
  ws.frame(msg("m2", 2));
  assert.equal(c.inbox.unreadCount, null);
  pending.shift().answer({ messages: [3, 2, 1].map((s) => ({ id: `m${s}`, seq: s, created_at: "now", read_at: null, archived: false })), unread: 3 });
  await listing;
  assert.equal(c.inbox.unreadCount, 4, "the page's 3 and m4, which it did not have");

  ws.frame(msg("m3", 3)); // a late delivery of one the page had: already counted
  ws.frame(msg("m4", 4)); // a repeat
  assert.equal(c.inbox.unreadCount, 4);
  ws.frame(msg("m5", 5));
  assert.equal(c.inbox.unreadCount, 5);

  // A read frame sets the count; a message it names is not counted when it comes later.
  ws.frame({ type: "read", ids: ["m7"], unread: 4 });
  assert.equal(c.inbox.unreadCount, 4);
  ws.frame(msg("m7", 7));
  assert.equal(c.inbox.unreadCount, 4, "m7 is read already");
  ws.frame(msg("m6", 6));
  assert.equal(c.inbox.unreadCount, 5);

  // A mark's answer sets it too.
  const marking = c.inbox.markAllRead();
  await tick();
  const post = pending.shift();
  assert.equal(post.init.method, "POST");
  assert.ok(post.url.endsWith("/v1/me/inbox/read"), post.url);
  assert.deepEqual(JSON.parse(post.init.body), { all: true });
  post.answer({ ids: ["m1", "m2", "m3", "m4", "m5", "m6"], unread: 0 });
  assert.deepEqual(await marking, { ids: ["m1", "m2", "m3", "m4", "m5", "m6"], unread: 0 });
  assert.equal(c.inbox.unreadCount, 0);
  ws.frame({ type: "read", ids: ["m1", "m2", "m3", "m4", "m5", "m6"], unread: 0 }); // the same news over the socket
  assert.deepEqual(unread.map((e) => e.unread), [4, 5, 4, 5, 0], "an event per change, none for no change");
  c.close();
});
