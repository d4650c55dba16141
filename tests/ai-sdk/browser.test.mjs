// The example app (examples/ai-sdk-react: @ai-sdk/react `useChat({ resume: true })`, built with
// Vite) in real headless Chromium (Debian's, through playwright-core) against a live `rill
// serve`: send, reload mid-answer (the answer completes, each part once), a second tab following
// the same answer, and stop.
//
// The built app (`npm run build` in the example's folder; scripts/test does it) is served by a
// small static server here that sends /api to rill, as the example's Vite config does.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";

import { ROOT, api, startRill, until } from "./lib.mjs";

const DIST = path.join(ROOT, "examples/ai-sdk-react/dist");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
/** A demo that takes several seconds per answer: time to act mid-answer. */
const SLOW = ["--demo-first-token-delay", "100ms", "--demo-tokens-per-second", "60"];

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };

/** Serves the built app, and /api/* from rill (streamed through, both ways). */
async function startSite(rillBase) {
  const target = new URL(rillBase);
  const server = http.createServer((req, res) => {
    if (req.url.startsWith("/api/")) {
      const upstream = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
        (answer) => {
          res.writeHead(answer.statusCode, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on("error", () => res.destroy());
      res.on("close", () => upstream.destroy());
      req.pipe(upstream);
      return;
    }
    const pathname = new URL(req.url, "http://x").pathname;
    let file = path.join(DIST, path.normalize(pathname === "/" ? "index.html" : pathname));
    if (!file.startsWith(DIST) || !existsSync(file)) file = path.join(DIST, "index.html");
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}

let rill;
let site;
let browser;

before(async () => {
  assert.ok(existsSync(path.join(DIST, "index.html")), "build the example first: cd examples/ai-sdk-react && npm ci && npm run build");
  rill = await startRill({ args: SLOW });
  site = await startSite(rill.base);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
});

after(async () => {
  await browser?.close();
  await site?.stop();
  await rill?.stop();
});

/** A new tab that records which resume requests (GET .../stream) got a stream (200) or none (204). */
async function newTab(context) {
  const page = await context.newPage();
  page.resumes = [];
  page.on("response", (r) => {
    if (/\/api\/ai-sdk\/chat\/[^/]+\/stream$/.test(new URL(r.url()).pathname)) page.resumes.push(r.status());
  });
  page.on("pageerror", (e) => {
    throw e;
  });
  return page;
}

async function send(page, text) {
  await page.fill("#input", text);
  await page.click("#send");
}

const chatIdOf = (page) => new URL(page.url()).searchParams.get("chat");

/** The chat as rill stores it. */
async function stored(chatId) {
  const r = await api(rill.base, "GET", `/api/chats/${chatId}/messages?limit=100`);
  assert.equal(r.status, 200, r.text);
  return r.json.messages;
}

/** What a tab shows of its last assistant message: how many of each part, and its text. */
async function shown(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('#messages li[data-role="assistant"]');
    const li = all[all.length - 1];
    const count = (sel) => (li ? li.querySelectorAll(sel).length : 0);
    return {
      assistants: all.length,
      users: document.querySelectorAll('#messages li[data-role="user"]').length,
      texts: count(".part.text"),
      reasonings: count(".part.reasoning"),
      tools: count(".part.tool"),
      sources: count(".part.source"),
      text: li ? [...li.querySelectorAll(".part.text")].map((p) => p.textContent).join("") : "",
      reasoning: li ? [...li.querySelectorAll(".part.reasoning p")].map((p) => p.textContent).join("") : "",
      status: document.querySelector("#status")?.dataset.status,
      error: document.querySelector("#error")?.textContent ?? null,
    };
  });
}

/**
 * Waits until answer number `n` (1-based) of the chat is over in rill with `status`, and the tab
 * shows exactly its stored text.
 */
async function settled(page, chatId, { n = 1, status = "complete" } = {}) {
  const answer = await until(async () => {
    const messages = await stored(chatId);
    const last = messages.at(-1);
    return messages.length === 2 * n && last.role === "assistant" && last.status === status ? last : null;
  }, 30_000, `answer ${n} to be ${status}`);
  let last;
  try {
    await until(async () => {
      last = await shown(page);
      return last.status === "ready" && last.text === answer.content;
    }, 15_000, "the tab to show the stored answer");
  } catch (error) {
    error.message += `: the tab shows ${JSON.stringify(last)}, rill has ${JSON.stringify(answer.content)}`;
    throw error;
  }
  return answer;
}

test("send: the answer streams in with its reasoning, tool call and source, each once", async () => {
  const context = await browser.newContext();
  const page = await newTab(context);
  await page.goto(site.base + "/");
  await page.waitForSelector("#input");
  const chatId = chatIdOf(page);
  assert.ok(chatId, "the page put its chat id in the URL");
  await until(() => page.resumes.length > 0, 10_000, "the resume request of useChat({ resume: true })");
  assert.deepEqual(page.resumes, [204], "useChat({ resume: true }) asked on mount; nothing ran");

  await send(page, "Hello from the browser");
  await until(async () => (await shown(page)).status === "streaming", 10_000, "streaming");
  const first = await settled(page, chatId);
  let s = await shown(page);
  assert.deepEqual([s.users, s.assistants, s.reasonings, s.texts], [1, 1, 1, 1]);
  assert.equal(s.reasoning, first.parts[0].text);
  assert.equal(s.error, null);

  await send(page, "And the weather in Seoul?");
  const second = await settled(page, chatId, { n: 2 });
  s = await shown(page);
  assert.deepEqual([s.users, s.assistants, s.reasonings, s.tools, s.sources, s.texts], [2, 2, 1, 1, 1, 1]);
  assert.equal(second.parts[1].type, "tool_call");
  await context.close();
});

test("reload mid-answer: the answer completes after the reload, each part once", async () => {
  const context = await browser.newContext();
  const page = await newTab(context);
  await page.goto(site.base + "/");
  await page.waitForSelector("#input");
  const chatId = chatIdOf(page);
  await send(page, "Tell me everything about rivers");
  await until(async () => (await shown(page)).text.length > 20, 15_000, "some text");
  await page.reload();
  await page.waitForSelector("#input");
  const answer = await settled(page, chatId);
  assert.deepEqual(page.resumes.slice(1), [200], "after the reload, the running answer was resumed");
  const s = await shown(page);
  assert.deepEqual([s.users, s.assistants, s.reasonings, s.texts], [1, 1, 1, 1]);
  assert.equal(s.reasoning, answer.parts[0].text);
  assert.equal(s.error, null);
  await context.close();
});

test("a second tab opened mid-answer follows the same answer", async () => {
  const context = await browser.newContext();
  const first = await newTab(context);
  await first.goto(site.base + "/");
  await first.waitForSelector("#input");
  const chatId = chatIdOf(first);
  await send(first, "Two tabs, one answer");
  await until(async () => (await shown(first)).text.length > 20, 15_000, "some text");
  const second = await newTab(context);
  await second.goto(first.url());
  await second.waitForSelector("#input");
  const answer = await settled(second, chatId);
  await settled(first, chatId);
  assert.deepEqual(second.resumes, [200]);
  for (const page of [first, second]) {
    const s = await shown(page);
    assert.deepEqual([s.users, s.assistants, s.reasonings, s.texts], [1, 1, 1, 1]);
    assert.equal(s.text, answer.content);
  }
  await context.close();
});

test("stop stops the answer in rill; the tab keeps what came", async () => {
  const context = await browser.newContext();
  const page = await newTab(context);
  await page.goto(site.base + "/");
  await page.waitForSelector("#input");
  const chatId = chatIdOf(page);
  await send(page, "A long answer I will stop");
  await until(async () => (await shown(page)).text.length > 20, 15_000, "some text");
  await page.click("#stop");
  const answer = await settled(page, chatId, { status: "stopped" });
  const s = await shown(page);
  assert.deepEqual([s.assistants, s.texts], [1, 1]);
  assert.equal(s.text, answer.content);
  assert.equal(s.error, null);
  // The answer really stopped: nothing runs any more.
  assert.equal((await api(rill.base, "GET", `/api/ai-sdk/chat/${chatId}/stream`)).status, 204);
  await context.close();
});
