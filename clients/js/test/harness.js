// Test harness: a real `herald serve` on port 0, tokens signed like Herald's, an API helper.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "../src/herald.js";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const API_KEY = "sdk-test-key";
export const SECRET = "sdk-test-secret-0123456789";

export function heraldBin() {
  return process.env.HERALD_BIN ?? join(here, "../../../target/debug/herald");
}

// Said in one line, instead of a stack trace per test.
if (!existsSync(heraldBin())) {
  console.error(`herald SDK tests: no herald binary at ${heraldBin()}: build it first (cargo build) or set HERALD_BIN`);
  process.exit(1);
}

/** Starts `herald serve`; resolves with { base, ws, stop, restart }. */
export async function startHerald(env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "herald-sdk-"));
  const run = (listen) => new Promise((resolve, reject) => {
    const child = spawn(heraldBin(), ["serve", "--listen", listen], {
      env: { PATH: process.env.PATH, HERALD_API_KEYS: API_KEY, HERALD_JWT_SECRET: SECRET,
             HERALD_DATA_DIR: dataDir, HERALD_DRAIN_S: "0", ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    const timer = setTimeout(() => reject(new Error(`herald did not start:\n${log}`)), 30000);
    child.stderr.on("data", (d) => {
      log += d;
      const m = log.match(/listening on http:\/\/([0-9.:]+)/);
      if (m) { clearTimeout(timer); resolve({ child, addr: m[1] }); }
    });
    child.on("exit", (code) => { clearTimeout(timer); if (code !== null && code !== 0) reject(new Error(`herald exited ${code}:\n${log}`)); });
  });
  let { child, addr } = await run("127.0.0.1:0");
  const clients = [];
  const halt = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  };
  const h = {
    get base() { return `http://${addr}`; },
    get ws() { return `ws://${addr}/ws`; },
    /** An SDK client, closed by `stop` whatever the test did (a failed assertion must not
     * leave a client reconnecting forever, holding the test process open). */
    connect(opts) {
      const c = connect(opts);
      clients.push(c);
      return c;
    },
    /** Closes every client, SIGTERMs herald, then removes the data directory. */
    async stop() {
      for (const c of clients) c.close();
      await halt();
      rmSync(dataDir, { recursive: true, force: true });
    },
    /** SIGTERM (sessions get 1012), then (after `downMs`) start again on the same address and data. */
    async restart({ downMs = 0 } = {}) {
      await halt();
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      ({ child, addr } = await run(addr));
    },
    kill() { child.kill("SIGKILL"); },
  };
  return h;
}

function b64url(s) { return Buffer.from(s).toString("base64url"); }

export function token(user, { ttlS = 3600, topics } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub: user, exp: now + ttlS, iat: now, ...(topics ? { topics } : {}) }));
  const sig = createHmac("sha256", SECRET).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}

export async function api(h, method, path, body) {
  const r = await fetch(`${h.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

export async function send(h, body) {
  const r = await api(h, "POST", "/v1/messages", body);
  if (r.status !== 202) throw new Error(`send: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id;
}

export async function until(what, fn, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Collects a client's events of `type`. */
export function collect(client, type) {
  const out = [];
  client.addEventListener(type, (e) => out.push(e.detail));
  return out;
}
