// The chat page at `/` in a real browser (Debian chromium through playwright-core): streaming,
// reload and restart resume, tabs sharing one event stream, stop, history scroll-back, safe
// Markdown, auth by cookie, and the screenshots in docs/screenshots/.
//
// Every test starts its own `rill serve` (port 0 → a free port, a temp SQLite file). The demo
// model's pace is set per server: slow where a test acts mid-stream, unthrottled for seeding.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { createHmac } from "node:crypto";

import { ROOT, launchBrowser, startRill, tempDir } from "./lib.mjs";

// The committed screenshots are refreshed only on request (RILL_UPDATE_SCREENSHOTS=1), so a test
// run leaves the work tree clean; otherwise they go to an ignored folder.
const SHOTS = process.env.RILL_UPDATE_SCREENSHOTS === "1"
  ? path.join(ROOT, "docs/screenshots")
  : path.join(ROOT, "tests/browser/screenshots-tmp");

/** A demo that streams for a few seconds: time enough to act mid-stream. */
const SLOW = ["--demo-first-token-delay", "200ms", "--demo-tokens-per-second", "60"];
/** A demo with no pacing, to seed history quickly. */
const FAST = ["--demo-first-token-delay", "0s", "--demo-tokens-per-second", "0"];

// ---- helpers -------------------------------------------------------------------------------------

async function api(base, method, p, body, headers = {}) {
  const res = await fetch(base + p, {
    method,
    headers: { Accept: "application/json", ...(body ? { "Content-Type": "application/json" } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null, text };
}

/** Every stored message of a chat, oldest first, walking the `before` cursor. */
async function storedMessages(base, chatId, headers) {
  const all = [];
  let before = "";
  for (let i = 0; i < 100; i++) {
    const r = await api(base, "GET", `/api/chats/${chatId}/messages?limit=100${before ? "&before=" + before : ""}`, null, headers);
    assert.equal(r.status, 200, r.text);
    all.unshift(...r.json.messages);
    if (!r.json.next_before) return all;
    before = r.json.next_before;
  }
  throw new Error("too many pages");
}

/** Sends `text` through a fresh chat page and returns the chat id. */
async function newChatAndSend(page, base, text) {
  await page.goto(base + "/");
  await page.waitForSelector("#bot-select option", { state: "attached" });
  await page.fill("#composer-input", text);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => new URLSearchParams(location.hash.slice(1)).get("chat"));
  return page.evaluate(() => new URLSearchParams(location.hash.slice(1)).get("chat"));
}

/** The raw text and status of every message the page shows, in order. */
function shown(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll("#log article")].map((a) => ({ id: a.dataset.id, role: a.dataset.role, status: a.dataset.status, text: a.rillText })),
  );
}

async function lastAssistant(page) {
  const all = await shown(page);
  return all.filter((m) => m.role === "assistant").at(-1);
}

function waitAssistantDone(page, count = 1, timeout = 30_000) {
  return page.waitForFunction(
    (n) => [...document.querySelectorAll('#log article[data-role="assistant"]')].filter((a) => a.dataset.status !== "streaming").length >= n,
    count,
    { timeout },
  );
}

/** Waits until the answer being written shows at least `chars` characters. */
function waitStreamingText(page, chars) {
  return page.waitForFunction(
    (n) => {
      const a = document.querySelector('#log article[data-role="assistant"][data-status="streaming"]');
      return a && a.rillText.length >= n;
    },
    chars,
    { timeout: 20_000 },
  );
}

async function openStreams(base) {
  const text = await (await fetch(base + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith("rill_open_streams"));
  return Number(line?.split(/\s+/)[1]);
}

function pageErrors(page) {
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  return errors;
}

// ---- tests ---------------------------------------------------------------------------------------

test("a message to the demo bot streams, and the final text equals the stored message", async () => {
  const rill = await startRill({ args: SLOW });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const errors = pageErrors(page);
    const chatId = await newChatAndSend(page, rill.base, "Hello rill, how are you?");
    await page.waitForSelector("#conn[data-state=live]");
    // Watch it stream: the text grows while the message is still streaming.
    await waitStreamingText(page, 20);
    const early = (await lastAssistant(page)).text.length;
    await waitStreamingText(page, early + 40);
    assert.equal(await page.isDisabled("#composer-input"), true, "input disabled while generating");
    assert.equal(await page.isVisible("#stop"), true);
    await waitAssistantDone(page);
    const stored = await storedMessages(rill.base, chatId);
    assert.deepEqual(
      (await shown(page)).map(({ id, role, status, text }) => ({ id, role, status, text })),
      stored.map(({ id, role, status, content }) => ({ id, role, status, text: content })),
    );
    assert.equal(stored[1].status, "complete");
    // Rendered as Markdown: the demo answer has a list, a table and a code block.
    const art = page.locator(`#log article[data-id="${stored[1].id}"]`);
    assert.equal(await art.locator("table").count(), 1);
    assert.equal(await art.locator("pre code").count(), 1);
    assert.ok((await art.locator("li").count()) >= 4);
    assert.equal(await page.isDisabled("#composer-input"), false);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("reload mid-stream: the answer resumes and ends with exactly the stored text", async () => {
  const rill = await startRill({ args: SLOW });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const chatId = await newChatAndSend(page, rill.base, "Tell me about reloads");
    await waitStreamingText(page, 30);
    await page.reload();
    // After the reload the same message is still being written, from where it was.
    await page.waitForSelector('#log article[data-role="assistant"][data-status="streaming"]', { timeout: 10_000 });
    await waitAssistantDone(page);
    const stored = await storedMessages(rill.base, chatId);
    const last = await lastAssistant(page);
    assert.equal(last.status, "complete");
    assert.equal(last.text, stored.at(-1).content);
    assert.equal((await shown(page)).length, 2, "no message doubled");
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("rich answers: reasoning, a tool card and a source; a reload mid-reasoning shows each exactly once", async () => {
  const rill = await startRill({ args: SLOW });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const errors = pageErrors(page);
    const chatId = await newChatAndSend(page, rill.base, "What is the weather in Seoul?");
    // The demo reasons first: the Thinking section is open while it streams.
    await page.waitForFunction(
      () => {
        const d = document.querySelector('#log article[data-status="streaming"] details.thinking');
        return d && d.open && d.querySelector(".reasoning-text").textContent.length > 15;
      },
      null,
      { timeout: 20_000 },
    );
    await page.reload();
    await page.waitForSelector('#log article[data-role="assistant"][data-status="streaming"]', { timeout: 10_000 });
    await waitAssistantDone(page);
    const stored = await storedMessages(rill.base, chatId);
    const answer = stored[1];
    assert.deepEqual(
      answer.parts.map((p) => p.type),
      ["reasoning", "tool_call", "source", "text"],
    );
    const art = page.locator(`#log article[data-id="${answer.id}"]`);
    // Each part exactly once, equal to what is stored.
    const parts = await art.evaluate((a) => a.rillParts.map(({ startedAt, endedAt, done, ...p }) => p));
    assert.deepEqual(parts, answer.parts);
    assert.equal(await art.locator("details.thinking").count(), 1);
    assert.equal(await art.locator("details.thinking .reasoning-text").textContent(), answer.parts[0].text);
    assert.equal(await art.locator("details.thinking").evaluate((d) => d.open), false, "closed once done");
    assert.match(await art.locator("details.thinking summary").textContent(), /^(Thought for \d+ s|Thoughts)$/);
    assert.equal(await art.locator(".tool-card").count(), 1);
    assert.equal(await art.locator(".tool-card .tool-head code").textContent(), "get_weather");
    assert.deepEqual(JSON.parse(await art.locator(".tool-card .tool-args").textContent()), answer.parts[1].input);
    assert.deepEqual(JSON.parse(await art.locator(".tool-card .tool-result").textContent()), answer.parts[1].output);
    assert.equal(await art.locator(".sources a.source").count(), 1);
    assert.equal(await art.locator(".sources a.source").getAttribute("href"), "https://example.com/weather/seoul");
    assert.equal((await lastAssistant(page)).text, answer.content);
    assert.equal((await shown(page)).length, 2, "no message doubled");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("two tabs show the same streamed answer; eight tabs share one event stream", async () => {
  const rill = await startRill({ args: ["--demo-first-token-delay", "200ms", "--demo-tokens-per-second", "150"] });
  const context = await launchBrowser();
  try {
    const first = await context.newPage();
    const chatId = await newChatAndSend(first, rill.base, "first question");
    await waitAssistantDone(first);
    const url = `${rill.base}/#bot=demo&chat=${chatId}`;
    const pages = [first];
    for (let i = 1; i < 8; i++) {
      const p = await context.newPage();
      await p.goto(url);
      pages.push(p);
    }
    for (const p of pages) await p.waitForSelector("#conn[data-state=live]");
    assert.equal(await openStreams(rill.base), 1, "one event stream for the eight tabs of one browser");

    // Ask in the second tab; every tab sees the answer stream.
    await pages[1].fill("#composer-input", "second question, asked in another tab");
    await pages[1].keyboard.press("Enter");
    for (const p of [pages[0], pages[7]]) await waitStreamingText(p, 10);
    assert.equal(await openStreams(rill.base), 1);
    for (const p of pages) await waitAssistantDone(p, 2);
    const stored = await storedMessages(rill.base, chatId);
    const want = stored.map((m) => `${m.id}:${m.status}:${m.content}`);
    for (const p of pages) assert.deepEqual((await shown(p)).map((m) => `${m.id}:${m.status}:${m.text}`), want);

    // Closed tabs leave the stream to the others: the last one still follows the chat live.
    for (const p of pages.slice(1)) await p.close();
    await first.fill("#composer-input", "third question, the other tabs closed");
    await first.keyboard.press("Enter");
    await waitAssistantDone(first, 3);
    assert.equal(await openStreams(rill.base), 1);
    const last = await storedMessages(rill.base, chatId);
    assert.equal((await lastAssistant(first)).text, last.at(-1).content);
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("stop mid-stream shows stopped, the server stored stopped, and Retry answers again", async () => {
  const rill = await startRill({ args: SLOW });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const chatId = await newChatAndSend(page, rill.base, "Please stop me");
    await waitStreamingText(page, 20);
    await page.click("#stop");
    await page.waitForSelector('#log article[data-role="assistant"][data-status="stopped"]');
    const stored = await storedMessages(rill.base, chatId);
    assert.equal(stored.at(-1).status, "stopped");
    assert.equal((await lastAssistant(page)).text, stored.at(-1).content);
    assert.match(await page.textContent('#log article[data-status="stopped"] .status-line'), /Stopped/);
    // Retry regenerates the answer as a new message.
    await page.click('#log article[data-status="stopped"] .retry');
    await waitAssistantDone(page, 2);
    const again = await storedMessages(rill.base, chatId);
    assert.equal(again.length, 3);
    assert.equal(again.at(-1).status, "complete");
    assert.equal((await lastAssistant(page)).text, again.at(-1).content);
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("kill and restart the server: the page shows reconnecting, then live again", async () => {
  let rill = await startRill({ args: SLOW });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const chatId = await newChatAndSend(page, rill.base, "before the restart");
    await waitAssistantDone(page);
    await page.waitForSelector("#conn[data-state=live]");
    const { port, dbPath } = rill;
    await rill.kill();
    await page.waitForSelector("#conn[data-state=reconnecting]", { timeout: 10_000 });
    rill = await startRill({ args: SLOW, port, dbPath });
    await page.waitForSelector("#conn[data-state=live]", { timeout: 30_000 });
    // The chat goes on against the new process.
    await page.fill("#composer-input", "after the restart");
    await page.keyboard.press("Enter");
    await waitAssistantDone(page, 2);
    const stored = await storedMessages(rill.base, chatId);
    assert.deepEqual((await shown(page)).map((m) => m.text), stored.map((m) => m.content));
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("scrolling up pages back through 100+ messages with no gap or duplicate", async () => {
  const rill = await startRill({ args: FAST });
  const context = await launchBrowser({ viewport: { width: 1100, height: 700 } });
  try {
    const chat = (await api(rill.base, "POST", "/api/chats", { bot: "demo" })).json;
    for (let i = 1; i <= 52; i++) {
      // text/plain answers when the generation has ended, so the next send is never a 409.
      const res = await fetch(`${rill.base}/api/chats/${chat.id}/messages`, {
        method: "POST",
        headers: { Accept: "text/plain", "Content-Type": "application/json" },
        body: JSON.stringify({ content: `question number ${i}` }),
      });
      assert.equal(res.status, 200);
      await res.text();
    }
    const stored = await storedMessages(rill.base, chat.id);
    assert.equal(stored.length, 104);
    const page = await context.newPage();
    await page.goto(`${rill.base}/#bot=demo&chat=${chat.id}`);
    await page.waitForSelector("#log article");
    // What is shown now: each round waits for more than that (starting from 0, the first round
    // could measure before its page was even asked for, on a slow machine).
    await page.waitForSelector("#loading", { state: "hidden" });
    let previous = (await shown(page)).length;
    for (let i = 0; i < 20; i++) {
      if (await page.isVisible("#history-start")) break;
      // The reader's place is kept: the message at the top stays where it was.
      const top = await page.evaluate(() => document.querySelector("#log article").dataset.id);
      await page.evaluate(() => (document.getElementById("messages").scrollTop = 0));
      await page.waitForFunction((n) => document.querySelectorAll("#log article").length > n || !document.getElementById("history-start").hidden, previous, { timeout: 10_000 });
      await page.waitForSelector("#loading", { state: "hidden" });
      const [kept, scrollTop] = await page.evaluate((id) => {
        const el = document.querySelector(`#log article[data-id="${id}"]`);
        const scroller = document.getElementById("messages");
        return [el.getBoundingClientRect().top - scroller.getBoundingClientRect().top, scroller.scrollTop];
      }, top);
      if (!(await page.isVisible("#history-start")) || scrollTop > 0) {
        // The page landed above, yet the message the reader saw at the top is still in view there.
        assert.ok(kept >= 0 && kept < 200 && scrollTop > 300, `reader's place kept (top ${kept}px, scrollTop ${scrollTop})`);
      }
      previous = (await shown(page)).length;
    }
    assert.equal(await page.isVisible("#history-start"), true);
    const ids = (await shown(page)).map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, "no duplicate");
    assert.deepEqual(ids, stored.map((m) => m.id), "every message, in order");
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("Markdown with <script> and <img onerror> in model output renders as text", async () => {
  const rill = await startRill({ args: FAST });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const errors = pageErrors(page);
    const dialogs = [];
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      d.dismiss();
    });
    // The demo model quotes the user's message in its answer: model output we control.
    const evil =
      '<script>window.__pwned = 1; alert(1)</script> <img src=x onerror="window.__pwned = 2; alert(2)"> ' +
      "**bold** `<b>code</b>` [bad](javascript:alert(3)) [good](https://example.com/a)";
    await newChatAndSend(page, rill.base, evil);
    await waitAssistantDone(page);
    const answer = page.locator('#log article[data-role="assistant"]');
    const quote = await answer.locator("blockquote").textContent();
    assert.ok(quote.includes("<script>window.__pwned = 1; alert(1)</script>"), quote);
    assert.ok(quote.includes('<img src=x onerror="window.__pwned = 2; alert(2)">'), quote);
    assert.equal(await page.locator("#log script, #log img, #log [onerror]").count(), 0);
    assert.equal(await answer.locator("blockquote strong").textContent(), "bold");
    assert.equal(await answer.locator("blockquote code").textContent(), "<b>code</b>");
    const hrefs = await answer.locator("a").evaluateAll((as) => as.map((a) => a.href));
    assert.deepEqual(hrefs, ["https://example.com/a"]);
    await page.waitForTimeout(200);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.deepEqual(dialogs, []);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await rill.stop();
  }
});

/**
 * An HTTP proxy in front of rill that answers the chat event streams itself: `events(lastEventId,
 * n)` gives the n-th stream's events (`[type, data, id]`), written at once, then the connection
 * ends (and the page's stream reconnects with the last id it got). Everything else goes to rill.
 * A proxy, not `route.fulfill`: the SharedWorker's EventSource is not routed by playwright.
 */
async function fakeEventsProxy(rill, events) {
  let n = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (/^\/api\/chats\/[^/]+\/events$/.test(url.pathname)) {
      n += 1;
      const list = events(req.headers["last-event-id"] || url.searchParams.get("last_event_id") || "", n);
      if (!list) return res.writeHead(503).end();
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.end("retry: 3000\n" + list.map(([type, data, id]) => `event: ${type}\ndata: ${JSON.stringify(data)}\nid: ${id}\n\n`).join(""));
      return;
    }
    const up = http.request({ host: "127.0.0.1", port: rill.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}

test("events handed over again (a replay that overlaps what the page has) do not double the text", async () => {
  const rill = await startRill({ args: FAST });
  const chat = (await api(rill.base, "POST", "/api/chats", { bot: "demo" })).json;
  // The chat's stream comes from the test: the exchange up to the answer's fourth delta, then the
  // connection ends; the reconnection (after that id) is answered from further back, so it hands
  // over again what the page has. Ids are the server's kind (`<epoch>.<topics hash>.<offset>`).
  const pre = "1bq4xkz9v0m3.2k7ac1";
  const now = Date.now();
  const message = (id, role, content, status) => ({
    id, chat_id: chat.id, role, content, parts: content ? [{ type: "text", text: content }] : [], status,
    finish_reason: null, usage: null, error: null, bot_id: "demo", model: "demo", created_at_ms: now, updated_at_ms: now,
  });
  const pieces = ["Read ", "[good](ht", "tps://exa", "mple.com/a)", " and", " more", "."];
  const head = [
    ["message.created", message("u1", "user", "hi", "complete"), `${pre}.1`],
    ["message.created", message("a1", "assistant", "", "streaming"), `${pre}.2`],
    ["message.part", { message_id: "a1", part: 0, type: "text", text: "" }, `${pre}.3`],
  ];
  const deltas = pieces.map((t, i) => ["message.delta", { message_id: "a1", part: 0, text: t }, `${pre}.${4 + i}`]);
  const end = 4 + pieces.length;
  const tail = [
    ["message.part.done", { message_id: "a1", part: 0 }, `${pre}.${end}`],
    ["message.completed", { message_id: "a1", status: "complete", finish_reason: "stop", usage: null }, `${pre}.${end + 1}`],
  ];
  const asked = [];
  const proxy = await fakeEventsProxy(rill, (lastEventId, n) => {
    asked.push(lastEventId);
    if (n === 1) return [...head, ...deltas.slice(0, 4)];
    if (n === 2) return [...deltas, ...tail];
    return null; // no third stream: the answer is complete
  });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const errors = pageErrors(page);
    await page.goto(`${proxy.base}/#bot=demo&chat=${chat.id}`);
    await waitAssistantDone(page);
    assert.deepEqual(asked.slice(0, 2), ["", `${pre}.7`], "resumed after the last id it got");
    assert.equal((await lastAssistant(page)).text, pieces.join(""));
    const answer = page.locator('#log article[data-role="assistant"]');
    assert.deepEqual(await answer.locator("a").evaluateAll((as) => as.map((a) => a.href)), ["https://example.com/a"]);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await proxy.close();
    await rill.stop();
  }
});

/** An HS256 JWT, as an identity provider would mint it. */
function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

test("auth mode jwt: the page works with the token in the rill_token cookie, and says so without", async () => {
  const secret = "a-test-secret-that-is-long-enough-for-hs256";
  const rill = await startRill({ args: [...SLOW, "--auth", "jwt", "--jwt-secret", secret] });
  const context = await launchBrowser();
  try {
    const anonymous = await context.newPage();
    await anonymous.goto(rill.base + "/");
    await anonymous.waitForSelector("#notice:not([hidden])");
    assert.match(await anonymous.textContent("#notice"), /Sign-in required/);
    await anonymous.close();

    const token = jwt(secret, { sub: "alice", exp: Math.floor(Date.now() / 1000) + 3600 });
    await context.addCookies([{ name: "rill_token", value: token, url: rill.base }]);
    const page = await context.newPage();
    const chatId = await newChatAndSend(page, rill.base, "hello from alice");
    await page.waitForSelector("#conn[data-state=live]");
    await waitAssistantDone(page);
    const stored = await storedMessages(rill.base, chatId, { Authorization: `Bearer ${token}` });
    assert.equal((await lastAssistant(page)).text, stored.at(-1).content);
  } finally {
    await context.close();
    await rill.stop();
  }
});

test("screenshots: desktop and phone width, light and dark; the theme toggle", async () => {
  const rill = await startRill({ args: FAST });
  const context = await launchBrowser({ deviceScaleFactor: 1 });
  try {
    mkdirSync(SHOTS, { recursive: true });
    const chat = (await api(rill.base, "POST", "/api/chats", { bot: "demo" })).json;
    for (const q of ["How does rill stream answers to my browser?", "Can you show a table and some code?"]) {
      const res = await fetch(`${rill.base}/api/chats/${chat.id}/messages`, {
        method: "POST",
        headers: { Accept: "text/plain", "Content-Type": "application/json" },
        body: JSON.stringify({ content: q }),
      });
      await res.text();
    }
    const page = await context.newPage();
    const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const DARK = "rgb(21, 22, 26)";
    for (const [name, viewport] of [
      ["desktop", { width: 1280, height: 860 }],
      ["phone", { width: 390, height: 844 }],
      ["small-phone", { width: 320, height: 640 }],
    ]) {
      for (const scheme of ["light", "dark"]) {
        await page.setViewportSize(viewport);
        await page.emulateMedia({ colorScheme: scheme });
        await page.goto(`${rill.base}/#bot=demo&chat=${chat.id}`);
        await page.reload();
        await waitAssistantDone(page, 2);
        await page.waitForSelector("#conn[data-state=live]");
        const file = path.join(name === "small-phone" ? tempDir() : SHOTS, `chat-${name}-${scheme}.png`);
        await page.screenshot({ path: file, animations: "disabled", caret: "hide" });
        const width = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(width <= viewport.width, `no sideways scrolling at ${viewport.width}px (${width})`);
        const bg = await background();
        assert.equal(bg === DARK, scheme === "dark", `${scheme} theme applied (${bg})`);
      }
    }
    // The toggle overrides the system theme, and the choice survives a reload.
    await page.emulateMedia({ colorScheme: "light" });
    await page.click("#theme-toggle");
    assert.equal(await background(), DARK);
    await page.reload();
    await page.waitForSelector("#log article");
    assert.equal(await background(), DARK);
  } finally {
    await context.close();
    await rill.stop();
  }
});

/** A TCP proxy in front of rill that can cut every connection and refuse new ones: a network drop. */
async function cuttableProxy(target) {
  const sockets = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) return client.destroy();
    const upstream = net.connect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      down = false;
    },
    close: () => new Promise((r) => (sockets.forEach((s) => s.destroy()), server.close(r))),
  };
}

for (const [what, extra] of [
  ["replayed exactly from the last event id", []],
  ["from a snapshot when the missed events are no longer kept", ["--retention-events", "3"]],
]) {
  test(`network drop mid-stream: the page shows reconnecting, then resumes ${what}, no text lost or doubled`, async () => {
    const rill = await startRill({ args: [...SLOW, ...extra] });
    const proxy = await cuttableProxy(rill.port);
    const context = await launchBrowser();
    try {
      const page = await context.newPage();
      const chatId = await newChatAndSend(page, proxy.base, "What happens when the network drops?");
      await waitStreamingText(page, 20);
      const before = await openStreams(rill.base);
      proxy.cut();
      await page.waitForSelector("#conn[data-state=reconnecting]", { timeout: 10_000 });
      await page.waitForTimeout(700); // the answer goes on on the server meanwhile
      proxy.restore();
      await page.waitForSelector("#conn[data-state=live]", { timeout: 20_000 });
      await waitAssistantDone(page);
      const stored = await storedMessages(rill.base, chatId);
      assert.deepEqual((await shown(page)).map((m) => m.text), stored.map((m) => m.content));
      assert.equal(stored.at(-1).status, "complete");
      assert.equal(before, 1);

      // The browser saying it is offline shows as such, and live again when it is back.
      await context.setOffline(true);
      await page.waitForSelector("#conn[data-state=offline]", { timeout: 10_000 });
      await context.setOffline(false);
      await page.waitForSelector("#conn[data-state=live]", { timeout: 20_000 });
    } finally {
      await context.close();
      await rill.stop();
      await proxy.close();
    }
  });
}

/**
 * A fake OpenAI-compatible upstream: the first answer breaks off after two tokens (the socket
 * is destroyed), later ones complete.
 */
async function flakyUpstream() {
  let calls = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      calls += 1;
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      const chunk = (content, finish = null) =>
        res.write(`data: ${JSON.stringify({ id: "x", object: "chat.completion.chunk", choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finish }] })}\n\n`);
      chunk("Partial ");
      chunk("answer");
      if (calls === 1) {
        setTimeout(() => res.destroy(), 100);
        return;
      }
      chunk(" and the rest, this time complete.");
      chunk(null, "stop");
      res.end("data: [DONE]\n\n");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/v1`, close: () => new Promise((r) => server.close(r)) };
}

test("bot switcher: each bot has its own chats; an upstream failure shows on the message, and Retry answers", async () => {
  const upstream = await flakyUpstream();
  const config = path.join(tempDir(), "rill.toml");
  writeFileSync(
    config,
    `[[bots]]\nid = "demo"\nname = "Demo"\nprovider = "demo"\nmodel = "demo"\n\n` +
      `[[bots]]\nid = "flaky"\nname = "Flaky"\ndescription = "A model that breaks off once"\nprovider = "openai"\nbase_url = "${upstream.url}"\nmodel = "fake"\n`,
  );
  const rill = await startRill({ args: [...FAST, "--config", config] });
  const context = await launchBrowser();
  try {
    const page = await context.newPage();
    const demoChat = await newChatAndSend(page, rill.base, "hello demo");
    await waitAssistantDone(page);

    await page.selectOption("#bot-select", "flaky");
    await page.waitForSelector("#empty:not([hidden])");
    assert.equal(await page.locator("#chat-list li").count(), 0, "the flaky bot has no chats yet");
    await page.fill("#composer-input", "hello flaky");
    await page.keyboard.press("Enter");
    const failed = page.locator('#log article[data-role="assistant"][data-status="error"]');
    await failed.waitFor({ timeout: 20_000 });
    assert.match(await failed.locator(".status-line").textContent(), /Error/);
    const flakyChat = await page.evaluate(() => new URLSearchParams(location.hash.slice(1)).get("chat"));
    assert.notEqual(flakyChat, demoChat);

    await page.selectOption("#bot-select", "demo");
    await page.waitForSelector(`#chat-list [data-chat-id="${demoChat}"]`);
    assert.equal(await page.locator("#chat-list li").count(), 1);
    await page.selectOption("#bot-select", "flaky");
    await page.waitForSelector(`#chat-list [data-chat-id="${flakyChat}"][aria-current="page"]`);

    // Delete the demo chat (two clicks): gone from the list and from the server.
    await page.selectOption("#bot-select", "demo");
    await page.waitForSelector(`#chat-list [data-chat-id="${demoChat}"][aria-current="page"]`);
    await page.click("#chat-list .chat-delete");
    await page.click('#chat-list .chat-delete[data-armed="1"]');
    await page.waitForSelector("#empty:not([hidden])");
    assert.equal(await page.locator("#chat-list li").count(), 0);
    assert.equal((await api(rill.base, "GET", `/api/chats/${demoChat}`)).status, 404);
    await page.selectOption("#bot-select", "flaky");
    await page.waitForSelector(`#chat-list [data-chat-id="${flakyChat}"][aria-current="page"]`);

    await failed.locator(".retry").click();
    await page.waitForSelector('#log article[data-role="assistant"][data-status="complete"]', { timeout: 20_000 });
    const stored = await storedMessages(rill.base, flakyChat);
    assert.deepEqual(stored.map((m) => m.status), ["complete", "error", "complete"]);
    assert.equal(stored.at(-1).content, "Partial answer and the rest, this time complete.");
    assert.deepEqual((await shown(page)).map((m) => m.text), stored.map((m) => m.content));
    assert.equal(await page.locator("#log .retry").count(), 0, "Retry only on a failed last answer");
  } finally {
    await context.close();
    await rill.stop();
    await upstream.close();
  }
});

test("without SharedWorker each tab follows the chat on a stream of its own, still in sync", async () => {
  const rill = await startRill({ args: SLOW });
  const context = await launchBrowser();
  await context.addInitScript(() => {
    delete window.SharedWorker;
  });
  try {
    const a = await context.newPage();
    const chatId = await newChatAndSend(a, rill.base, "no shared worker here");
    assert.equal(await a.evaluate(() => document.getElementById("app").dataset.streams), "tab");
    const b = await context.newPage();
    await b.goto(`${rill.base}/#bot=demo&chat=${chatId}`);
    await b.waitForSelector("#conn[data-state=live]");
    assert.equal(await openStreams(rill.base), 2);
    for (const p of [a, b]) await waitAssistantDone(p);
    const stored = await storedMessages(rill.base, chatId);
    for (const p of [a, b]) assert.deepEqual((await shown(p)).map((m) => m.text), stored.map((m) => m.content));
  } finally {
    await context.close();
    await rill.stop();
  }
});
