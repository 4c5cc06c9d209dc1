// Drives the inbox example (clients/js/examples/inbox/) in headless Chromium: the page is
// open in two browser contexts (two devices, nothing shared) as the same user; messages
// sent with the API key raise both bells; a click on one device lowers the other's; "mark
// all read" on the second clears the first. Neither page asks the server for its list
// again: every count after the first load comes over the WebSocket. Screenshots go to
// HERALD_SCREENSHOTS.
//   PAGE='http://…/examples/inbox/index.html#url=ws://…/ws&token=…' BASE=http://… API_KEY=… CHROMIUM=… node inbox.mjs
import { launch } from "./launch.mjs";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const page = process.env.PAGE;
const base = process.env.BASE;
const apiKey = process.env.API_KEY;
const user = process.env.USER_ID ?? "bob";
const shots = process.env.HERALD_SCREENSHOTS ?? "screenshots";
mkdirSync(shots, { recursive: true });

const { browser, fail } = await launch();
const T = { timeout: 15000 };

// One device: its own context (storage, cookies), the page loaded, live, its list in.
async function device(name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const p = await context.newPage();
  const lists = []; // every GET of the inbox this page made
  const problems = [];
  p.on("request", (r) => { if (r.method() === "GET" && new URL(r.url()).pathname === "/v1/me/inbox") lists.push(r.url()); });
  p.on("pageerror", (e) => problems.push(`${name}: ${e.message}`));
  p.on("console", (m) => { if (m.type() === "error") problems.push(`${name} console: ${m.text()}`); });
  await p.goto(page);
  try {
    await p.waitForSelector("#status[data-state=open]", T);
    await p.waitForSelector("body[data-loaded=true]", T);
    await p.waitForSelector('#count[data-count="0"]', T);
  } catch (e) {
    await p.screenshot({ path: join(shots, `inbox-${name}-failed.png`) });
    await fail(`${name} did not load (${e.message.split("\n")[0]}): status ${await p.textContent("#status")}, error "${await p.textContent("#error")}"\n${problems.join("\n")}`);
  }
  return { p, lists, problems, name };
}

async function count(d, n, why) {
  try {
    await d.p.waitForSelector(`#count[data-count="${n}"]`, T);
  } catch {
    await d.p.screenshot({ path: join(shots, `inbox-${d.name}-failed.png`) });
    await fail(`${why}: ${d.name}'s bell shows ${await d.p.getAttribute("#count", "data-count")}, not ${n}`);
  }
}

async function send(title, body) {
  const r = await fetch(`${base}/v1/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ to: [user], title, body, channels: ["in_app"] }),
  });
  if (r.status !== 202) await fail(`send answered ${r.status}: ${await r.text()}`);
  return (await r.json()).id;
}

try {
  const a = await device("a");
  const b = await device("b");

  const shipped = await send("Your order has shipped", "Order #1042 is on its way");
  const comment = await send("New comment", "Ada replied to your post");
  await count(a, 2, "two messages sent");
  await count(b, 2, "two messages sent");

  // On A: open the bell, both are there and unread; click one.
  await a.p.click("#bell");
  await a.p.waitForSelector("#panel:not([hidden])", T);
  for (const id of [shipped, comment]) await a.p.waitForSelector(`#list li[data-id="${id}"][data-read=false]`, T);
  const order = await a.p.$$eval("#list li", (lis) => lis.map((li) => li.dataset.id));
  if (order.join() !== [comment, shipped].join()) await fail(`the list is not newest first: ${order}`);
  await a.p.screenshot({ path: join(shots, "inbox-two-unread.png") });
  await a.p.click(`#list li[data-id="${shipped}"] button`);
  await a.p.waitForSelector(`#list li[data-id="${shipped}"][data-read=true]`, T);
  await count(a, 1, "A clicked one");
  // B hears of it: its bell and its list.
  await count(b, 1, "A read one (B is told over its socket)");
  await b.p.waitForSelector(`#list li[data-id="${shipped}"][data-read=true]`, { ...T, state: "attached" });
  if (await b.p.$(`#list li[data-id="${comment}"][data-read=true]`)) await fail("B shows the other message read");

  // On B: mark all read; A goes to 0.
  await b.p.click("#bell");
  await b.p.click("#mark-all");
  await count(b, 0, "B marked all read");
  await count(a, 0, "B marked all read (A is told over its socket)");
  await a.p.waitForSelector(`#list li[data-id="${comment}"][data-read=true]`, T);
  await a.p.screenshot({ path: join(shots, "inbox-all-read.png") });

  // Live, not polled: each page listed its inbox once, when it loaded.
  for (const d of [a, b]) {
    if (d.lists.length !== 1) await fail(`${d.name} asked for its inbox ${d.lists.length} times: ${d.lists.join(", ")}`);
  }
  const problems = [...a.problems, ...b.problems];
  if (problems.length) await fail(problems.join("\n"));
  // And the server agrees.
  const inbox = await (await fetch(`${base}/v1/users/${user}/inbox`, { headers: { authorization: `Bearer ${apiKey}` } })).json();
  if (inbox.unread !== 0 || inbox.messages.some((m) => !m.read_at)) await fail(`the server's inbox: ${JSON.stringify(inbox)}`);
  console.log(`OK ${shipped} ${comment}`);
  await browser.close();
} catch (e) {
  await fail(e.stack ?? String(e));
}
