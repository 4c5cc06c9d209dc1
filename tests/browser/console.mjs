// Drives the Herald console in headless Chromium: sign in with the API key, connect a test
// client as a user in one page, send that user a message from another page, watch it
// arrive in the first and its status become "delivered" in the second. Screenshots go to
// HERALD_SCREENSHOTS.
//   BASE=http://127.0.0.1:8080 API_KEY=… CHROMIUM=… node console.mjs
import { launch } from "./launch.mjs";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const base = process.env.BASE;
const apiKey = process.env.API_KEY;
const shots = process.env.HERALD_SCREENSHOTS ?? "screenshots";
mkdirSync(shots, { recursive: true });

const { browser, fail } = await launch();

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });

  // Page 1: sign in, open the test client, connect as "browser-user".
  const receiver = await context.newPage();
  await receiver.goto(`${base}/console`);
  await receiver.fill("#api-key", "wrong-key");
  await receiver.click("#login");
  await receiver.waitForSelector("#login-error:has-text('not accepted')", { timeout: 10000 });
  await receiver.fill("#api-key", apiKey);
  await receiver.click("#login");
  await receiver.waitForSelector("#tabs:not(.hidden)", { timeout: 10000 });
  await receiver.click("#tab-client");
  await receiver.fill("#client-user", "browser-user");
  await receiver.fill("#client-topics", "news");
  await receiver.click("#client-connect");
  await receiver.waitForSelector("#client-status[data-state=open]", { timeout: 10000 });
  await receiver.fill("#client-sub", "news");
  await receiver.click("#client-subscribe");

  // Page 2: sign in (the key lives only in each tab's session storage) and send.
  const sender = await context.newPage();
  await sender.goto(`${base}/console`);
  await sender.fill("#api-key", apiKey);
  await sender.click("#login");
  await sender.waitForSelector("#tabs:not(.hidden)", { timeout: 10000 });
  await sender.click("#tab-send");
  await sender.fill("#send-to", "browser-user");
  await sender.fill("#send-title", "From the console");
  await sender.fill("#send-body", "Sent in one page, received in another");
  await sender.click("#send-submit");
  await sender.waitForSelector("#sent-id", { timeout: 10000 });
  const id = (await sender.textContent("#sent-id")).trim();

  // It arrives in the receiving page (the SDK acks it).
  const arrived = receiver.locator(`.client-message[data-id="${id}"]`);
  await arrived.waitFor({ timeout: 15000 });
  if (!(await arrived.textContent()).includes("From the console")) await fail("the message text did not arrive");
  await receiver.screenshot({ path: join(shots, "console-test-client.png"), fullPage: true });

  // Its status becomes "delivered" in the sending page's timeline.
  await sender.click("#sent-id");
  const deadline = Date.now() + 15000;
  for (;;) {
    await sender.waitForSelector(`.msg[data-id="${id}"] [data-role=message-status]`, { timeout: 10000 });
    const status = (await sender.textContent(`.msg[data-id="${id}"] [data-role=message-status]`)).trim();
    if (status === "delivered") break;
    if (Date.now() > deadline) await fail(`status stayed ${status}`);
    await sender.waitForTimeout(300);
    await sender.click("#search-go");
  }
  const timeline = await sender.textContent(`.msg[data-id="${id}"]`);
  if (!timeline.includes("in_app: acked")) await fail(`timeline lacks the ack: ${timeline}`);
  await sender.screenshot({ path: join(shots, "console-message.png"), fullPage: true });

  // The overview shows the live session and the delivery.
  await sender.click("#tab-overview");
  await sender.waitForFunction(() => Number(document.getElementById("t-delivered").textContent) >= 1 && Number(document.getElementById("t-sessions").textContent) >= 1, null, { timeout: 10000 });
  // Provider health: each channel's providers with their circuit.
  await sender.waitForSelector('#providers tr[data-provider="smtp"] .status.closed', { timeout: 10000 });
  await sender.screenshot({ path: join(shots, "console-overview.png"), fullPage: true });

  // The template editor: a live preview in the chosen locale as the template is typed,
  // a syntax error shown with its line, then saved as version 1.
  await sender.click("#tab-templates");
  await sender.fill("#tpl-name", "welcome");
  await sender.fill("#tpl-vars", JSON.stringify({ name: "Ada" }));
  await sender.fill("#tpl-locale", "zh-CN");
  await sender.fill("#tpl-spec", JSON.stringify({ default_locale: "en", locales: { en: { title: "Hello {{ name }}" }, zh: { title: "你好 {{ name }}", sms: { text: "你好 {{ name }}" } } } }));
  await sender.waitForSelector('#tpl-preview [data-part="title"]:has-text("你好 Ada")', { timeout: 10000 });
  await sender.waitForSelector('[data-role=sms-length]:has-text("ucs2")', { timeout: 10000 });
  await sender.fill("#tpl-spec", JSON.stringify({ default_locale: "en", locales: { en: { title: "Hello {{ name " } } }));
  await sender.waitForSelector('#tpl-error:has-text("line 1")', { timeout: 10000 });
  if (await sender.$('#tpl-preview [data-part="title"]')) await fail("a broken template still shows a preview");
  await sender.fill("#tpl-spec", JSON.stringify({ default_locale: "en", locales: { en: { title: "Hello {{ name }}" }, zh: { title: "你好 {{ name }}" } } }, null, 2));
  await sender.waitForSelector('#tpl-preview [data-part="title"]:has-text("你好 Ada")', { timeout: 10000 });
  if (await sender.$('#tpl-preview [data-part="sms.text"]')) await fail("the preview shows a part the template no longer has");
  await sender.click("#tpl-save");
  await sender.waitForSelector('#tpl-saved:has-text("version 1")', { timeout: 10000 });
  await sender.waitForSelector('#tpl-list a[data-name="welcome"]', { timeout: 10000 });
  await sender.screenshot({ path: join(shots, "console-templates.png"), fullPage: true });

  // Messages by sender: the test key is unnamed, so its messages say key-1.
  await sender.click("#tab-messages");
  await sender.fill("#search-sender", "key-1");
  await sender.fill("#search", "browser-user");
  await sender.click("#search-go");
  await sender.waitForSelector(`.msg[data-id="${id}"] [data-role=sender]:has-text("key-1")`, { timeout: 10000 });
  await sender.fill("#search-sender", "billing");
  await sender.click("#search-go");
  await sender.waitForSelector('#search-result:has-text("No messages")', { timeout: 10000 });

  // Webhooks: add one whose endpoint refuses connections; its log shows the retry and why.
  await sender.click("#tab-webhooks");
  await sender.fill("#wh-url", "http://127.0.0.1:9/herald-events");
  await sender.fill("#wh-events", "*");
  await sender.click("#wh-create");
  await sender.waitForSelector('#wh-secret:has-text("whsec_")', { timeout: 10000 });
  const status = await sender.evaluate(async () => {
    const key = sessionStorage.getItem("herald.key");
    const r = await fetch("/v1/messages", { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ to: ["nobody-here"], title: "for the webhook", channels: ["email"] }) });
    return r.status;
  });
  if (status !== 202) await fail(`send for the webhook: HTTP ${status}`);
  const row = sender.locator("#wh-rows a[data-log]").first();
  await row.waitFor({ timeout: 10000 });
  let logged = false;
  for (let i = 0; i < 30 && !logged; i++) {
    await row.click();
    logged = await sender.locator('#wh-log [data-role=wh-outcome]:has-text("retrying")').count() > 0;
    if (!logged) await sender.waitForTimeout(300);
  }
  if (!logged) await fail("the webhook's delivery log never showed the retry");
  await sender.waitForSelector('#wh-log:has-text("cannot connect")', { timeout: 10000 });
  await sender.click("#tab-webhooks");
  const listed = await sender.textContent("#wh-rows");
  if (listed.includes("whsec_")) await fail("the webhook list shows a secret");
  await sender.screenshot({ path: join(shots, "console-webhooks.png"), fullPage: true });
  console.log(`OK ${id}`);
  await browser.close();
} catch (e) {
  await fail(e.stack ?? String(e));
}
