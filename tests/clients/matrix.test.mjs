// The client matrix: real SSE clients, unmodified and used the obvious way, against a live
// `rill serve` (demo bot, slowed down), most behind a proxy that cuts the answer's stream in the
// middle of an event. Every case ends with exactly one user message and one assistant message in
// the chat, and the text the client streamed is the stored text: a retried POST resumes its
// exchange (never a second question), a re-POST after the end gets 204, no client sees an empty
// message, axios gets the 202, and `rill chat` ends when a server restart interrupted its answer.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";

import {
  startRill,
  SERVE_ARGS,
  launchBrowser,
  servePackage,
  newChat,
  api,
  history,
  assemble,
  eventLines,
  assertExchange,
  describeRequests,
  runPython,
  runRill,
  run,
  PYTHON,
  HERE,
  sleep,
  tempDir,
} from "./lib.mjs";
import { startProxy } from "./proxy.mjs";

/**
 * Cuts after this many text deltas: the answer has ~330, the cut lands early in its text, inside
 * the event's `event:` line and after its `id:` line. A real cut lands anywhere; this is where
 * parsers differ: the spec (browsers, `eventsource`, `requests-sse`, rill's client) takes an id
 * as the last event id when its event is dispatched, `fetch-event-source` as soon as it reads
 * the `id:` line, so after this cut it asks to resume after an event it never delivered.
 */
const CUT_AFTER = 40;
const POST_MESSAGES = /^\/api\/chats\/[^/]+\/messages/;
const GET_EVENTS = /^\/api\/chats\/[^/]+\/events/;
const CUT_POST = { method: "POST", path: POST_MESSAGES, afterDeltas: CUT_AFTER };
const CUT_GET = { method: "GET", path: GET_EVENTS, afterDeltas: CUT_AFTER };
/** The chat events a listener-per-name client (EventSource) subscribes to. */
const NAMES = [
  "message.created",
  "message.part",
  "message.delta",
  "message.reasoning.delta",
  "message.part.done",
  "message.completed",
  "snapshot",
  "reset",
];
const LIMIT = 45_000;

let rill;
let context;
before(async () => {
  rill = await startRill();
  context = await launchBrowser();
});
after(async () => {
  await context?.close();
  await rill?.kill();
});

/** A proxy in front of the shared server, closed after `body`. */
async function throughProxy(cut, body) {
  const proxy = await startProxy({ target: rill, cut });
  try {
    return await body(proxy);
  } finally {
    await proxy.close();
  }
}

/** The requests a proxy saw to the chat's messages or events (not the library files). */
function apiRequests(proxy) {
  return proxy.requests.filter((r) => r.path.startsWith("/api/"));
}

/** The id of the answer's `message.completed` event, as the client saw it. */
function completedId(events, answerId) {
  return events.find((e) => e.event === "message.completed" && e.data.message_id === answerId)?.id;
}

test("Chromium EventSource: 202 POST, then the chat's stream, cut and resumed by the browser", { timeout: LIMIT }, async () => {
  const chatId = await newChat(rill.base);
  const content = "Chromium EventSource";
  await throughProxy(CUT_GET, async (proxy) => {
    const page = await context.newPage();
    await page.goto(`${proxy.base}/healthz`);
    const seen = await page.evaluate(
      async ({ chatId, content, names }) => {
        // What a page does: post (fetch's default Accept `*/*` gets the 202), then follow.
        const posted = await fetch(`/api/chats/${chatId}/messages`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ content }),
        });
        const accepted = await posted.json();
        const answerId = accepted.assistant_message.id;
        const events = [];
        let opens = 0;
        await new Promise((resolve, reject) => {
          const source = new EventSource(accepted.events_url);
          source.onopen = () => {
            opens += 1;
          };
          for (const name of names) {
            source.addEventListener(name, (ev) => {
              const data = JSON.parse(ev.data);
              events.push({ event: name, id: ev.lastEventId, data });
              if (name === "message.completed" && data.message_id === answerId) {
                source.close();
                resolve();
              }
            });
          }
          setTimeout(() => reject(new Error(`no completion: ${JSON.stringify(events.slice(-2))}`)), 30_000);
        });
        return { status: posted.status, answerId, events, opens };
      },
      { chatId, content, names: NAMES },
    );
    await page.close();
    assert.equal(seen.status, 202);
    const got = assemble(seen.events, seen.answerId);
    assert.equal(got.completed?.status, "complete");
    await assertExchange(rill.base, chatId, { content, text: got.text });
    const requests = apiRequests(proxy);
    assert.equal(proxy.cuts(), 1, describeRequests(requests));
    assert.equal(seen.opens, 2, "the browser reconnected once, by itself");
    const streams = requests.filter((r) => GET_EVENTS.test(r.path));
    assert.equal(streams.length, 2, describeRequests(requests));
    assert.ok(streams[1].headers["last-event-id"], "the browser resumed with Last-Event-ID");
  });
});

test("npm eventsource, POST through its fetch option, never closed: resumes after a cut, stops at 204 after the end", { timeout: LIMIT }, async () => {
  const { EventSource } = await import("eventsource");
  const chatId = await newChat(rill.base);
  const content = "npm eventsource";
  await throughProxy(CUT_POST, async (proxy) => {
    const events = [];
    const errors = [];
    // The library's README pattern for a POST; the app never closes the source, so the library
    // reconnects after every end, as a spec-following EventSource does, until a 204.
    await new Promise((resolve, reject) => {
      const source = new EventSource(`${proxy.base}/api/chats/${chatId}/messages`, {
        fetch: (input, init) =>
          fetch(input, {
            ...init,
            method: "POST",
            body: JSON.stringify({ content }),
            headers: { ...init.headers, "Content-Type": "application/json" },
          }),
      });
      for (const name of NAMES) {
        source.addEventListener(name, (ev) => events.push({ event: name, id: ev.lastEventId, data: JSON.parse(ev.data) }));
      }
      source.onerror = (error) => {
        errors.push({ code: error.code, message: error.message });
        if (source.readyState === EventSource.CLOSED) resolve();
      };
      setTimeout(() => {
        source.close();
        reject(new Error(`not closed by the server:\n${describeRequests(proxy.requests)}`));
      }, 30_000);
    });
    const got = assemble(events);
    assert.equal(got.completed?.status, "complete");
    await assertExchange(rill.base, chatId, { content, text: got.text });
    const requests = apiRequests(proxy);
    assert.equal(proxy.cuts(), 1, describeRequests(requests));
    assert.deepEqual(
      requests.map((r) => [r.method, r.status]),
      [
        ["POST", 200],
        ["POST", 200],
        ["POST", 204],
      ],
      describeRequests(requests),
    );
    assert.ok(requests[1].headers["last-event-id"], "the retry carried Last-Event-ID");
    assert.equal(requests[2].headers["last-event-id"], completedId(events, got.answerId), "the re-POST after the end names the completion");
    assert.equal(errors.at(-1).code, 204, JSON.stringify(errors));
  });
});

test("@microsoft/fetch-event-source in Chromium, default options, JSON.parse(ev.data), cut mid-answer: resumes, never a second question", { timeout: LIMIT }, async () => {
  const chatId = await newChat(rill.base);
  const content = "fetch-event-source";
  await throughProxy(CUT_POST, async (proxy) => {
    const page = await context.newPage();
    await servePackage(page, proxy.base, "fes", "@microsoft/fetch-event-source/lib/esm");
    await page.goto(`${proxy.base}/healthz`);
    const seen = await page.evaluate(
      async ({ chatId, content }) => {
        const { fetchEventSource } = await import("/__lib/fes/index.js");
        const events = [];
        let failures = 0;
        const done = fetchEventSource(`/api/chats/${chatId}/messages`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ content }),
          // The obvious handler: an empty message would throw here, and the library would
          // re-POST (its default onerror retries forever).
          onmessage(ev) {
            try {
              events.push({ event: ev.event, id: ev.id, data: JSON.parse(ev.data) });
            } catch (error) {
              failures += 1;
              throw error;
            }
          },
        });
        const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("fetchEventSource did not resolve")), 30_000));
        await Promise.race([done, timeout]);
        return { events, failures, visibility: document.visibilityState };
      },
      { chatId, content },
    );
    await page.close();
    assert.equal(seen.visibility, "visible");
    assert.equal(seen.failures, 0, "no empty message reached onmessage");
    const got = assemble(seen.events);
    assert.equal(got.completed?.status, "complete");
    const ids = seen.events.map((e) => `${e.event} ${e.id}`).join("\n");
    await assertExchange(rill.base, chatId, { content, text: got.text, context: `${describeRequests(proxy.requests)}\n${ids}` });
    const requests = apiRequests(proxy);
    assert.equal(proxy.cuts(), 1, describeRequests(requests));
    assert.deepEqual(
      requests.map((r) => [r.method, r.status]),
      [
        ["POST", 200],
        ["POST", 200],
      ],
      describeRequests(requests),
    );
    assert.ok(requests[1].headers["last-event-id"], "the retried POST carried last-event-id");
    assert.match(requests[0].headers.accept, /text\/event-stream/);
  });
});

test("httpx-sse, POST, json.loads(sse.data), cut mid-answer and posted again with Last-Event-ID", { timeout: LIMIT }, async () => {
  const chatId = await newChat(rill.base);
  const content = "httpx-sse";
  await throughProxy(CUT_POST, async (proxy) => {
    const out = await runPython("httpx_sse_client", [`${proxy.base}/api/chats/${chatId}/messages`, content], { timeoutMs: 40_000 });
    assert.equal(out.code, 0, `httpx-sse client failed:\n${out.stderr}\n${out.stdout.slice(-2000)}`);
    const lines = out.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.filter((l) => l.status !== undefined).map((l) => l.status),
      [200, 200],
    );
    assert.equal(lines.filter((l) => l.error).length, 1, "one cut");
    assert.deepEqual(lines.at(-1), { end: "normal" });
    const got = assemble(eventLines(out.stdout));
    assert.equal(got.completed?.status, "complete");
    await assertExchange(rill.base, chatId, { content, text: got.text });
    const requests = apiRequests(proxy);
    assert.equal(proxy.cuts(), 1, describeRequests(requests));
    assert.equal(requests.length, 2, describeRequests(requests));
  });
});

test("requests-sse, POST without a break: resumes after a cut, and its re-POST after the end gets 204, no new message", { timeout: LIMIT }, async () => {
  const chatId = await newChat(rill.base);
  const content = "requests-sse";
  await throughProxy(CUT_POST, async (proxy) => {
    const out = await runPython("requests_sse_client", [`${proxy.base}/api/chats/${chatId}/messages`, content], { timeoutMs: 40_000 });
    assert.equal(out.code, 0, `requests-sse client failed:\n${out.stderr}\n${out.stdout.slice(-2000)}`);
    const last = JSON.parse(out.stdout.trim().split("\n").at(-1));
    assert.deepEqual(last, { end: "status", status: 204 });
    const events = eventLines(out.stdout);
    const got = assemble(events);
    assert.equal(got.completed?.status, "complete");
    await assertExchange(rill.base, chatId, { content, text: got.text });
    const requests = apiRequests(proxy);
    assert.equal(proxy.cuts(), 1, describeRequests(requests));
    assert.deepEqual(
      requests.map((r) => [r.method, r.status]),
      [
        ["POST", 200],
        ["POST", 200],
        ["POST", 204],
      ],
      describeRequests(requests),
    );
    // requests-sse spells it Last-Event-Id; the proxy lower-cases header names.
    assert.ok(requests[1].headers["last-event-id"], "the retry carried Last-Event-Id");
    assert.equal(requests[2].headers["last-event-id"], completedId(events, got.answerId));
  });
});

test("axios with its default Accept gets the 202 JSON (an Idempotency-Key retry gets the same exchange), then follows the events", { timeout: LIMIT }, async () => {
  const { default: axios } = await import("axios");
  const { EventSource } = await import("eventsource");
  const chatId = await newChat(rill.base);
  const content = "axios";
  await throughProxy(CUT_GET, async (proxy) => {
    const url = `${proxy.base}/api/chats/${chatId}/messages`;
    const headers = { "Idempotency-Key": "axios-matrix-1" };
    const first = await axios.post(url, { content }, { headers });
    assert.equal(first.status, 202);
    assert.equal(first.headers["idempotent-replayed"], undefined);
    // What axios-retry does after a timeout: the same request again.
    const again = await axios.post(url, { content }, { headers });
    assert.equal(again.status, 202);
    assert.equal(again.headers["idempotent-replayed"], "true");
    assert.equal(again.data.assistant_message.id, first.data.assistant_message.id, "the same exchange");
    assert.equal(proxy.requests[0].headers.accept, "application/json, text/plain, */*");

    const answerId = first.data.assistant_message.id;
    const events = [];
    let opens = 0;
    await new Promise((resolve, reject) => {
      const source = new EventSource(`${proxy.base}${first.data.events_url}`);
      source.onopen = () => {
        opens += 1;
      };
      for (const name of NAMES) {
        source.addEventListener(name, (ev) => {
          const data = JSON.parse(ev.data);
          events.push({ event: name, id: ev.lastEventId, data });
          if (name === "message.completed" && data.message_id === answerId) {
            source.close();
            resolve();
          }
        });
      }
      setTimeout(() => {
        source.close();
        reject(new Error(`no completion:\n${describeRequests(proxy.requests)}`));
      }, 30_000);
    });
    const got = assemble(events, answerId);
    assert.equal(got.completed?.status, "complete");
    await assertExchange(rill.base, chatId, { content, text: got.text });
    assert.equal(proxy.cuts(), 1, describeRequests(proxy.requests));
    assert.equal(opens, 2);
  });
});

test("rill sub -d: a POST stream, cut and resumed with Last-Event-ID, and not re-sent after it ends", { timeout: LIMIT }, async () => {
  const chatId = await newChat(rill.base);
  const content = "rill sub";
  await throughProxy(CUT_POST, async (proxy) => {
    const out = await runRill(
      [
        "sub",
        "--json",
        "-H",
        "Content-Type: application/json",
        "-d",
        JSON.stringify({ content }),
        `${proxy.base}/api/chats/${chatId}/messages`,
      ],
      { timeoutMs: 40_000 },
    );
    assert.equal(out.code, 0, `rill sub failed:\n${out.stderr}`);
    const got = assemble(eventLines(out.stdout));
    assert.equal(got.completed?.status, "complete");
    await assertExchange(rill.base, chatId, { content, text: got.text });
    const requests = apiRequests(proxy);
    assert.equal(proxy.cuts(), 1, describeRequests(requests));
    assert.deepEqual(
      requests.map((r) => [r.method, r.status]),
      [
        ["POST", 200],
        ["POST", 200],
      ],
      describeRequests(requests),
    );
    assert.ok(requests[1].headers["last-event-id"]);
  });
});

/** The stored text of a message, read from the SQLite file (the server may be stopped). */
async function storedContent(dbPath, messageId) {
  const script = [
    "import sqlite3, sys, json",
    "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True, timeout=5)",
    "row = db.execute('SELECT content FROM messages WHERE id = ?', (sys.argv[2],)).fetchone()",
    "print(json.dumps(row[0] if row else None))",
  ].join("\n");
  const out = await run(PYTHON, ["-c", script, dbPath, messageId], { timeoutMs: 10_000 });
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout);
}

test("rill chat across a server restart: reset, the stored message, exit status 1 with a clear message", { timeout: 90_000 }, async () => {
  // A server of its own: slower tokens, frequent checkpoints, restarted on the same port and file.
  const args = [...SERVE_ARGS];
  args[args.indexOf("--demo-first-token-delay") + 1] = "200ms";
  args[args.indexOf("--demo-tokens-per-second") + 1] = "40";
  args[args.indexOf("--checkpoint-interval") + 1] = "20ms";
  const dbPath = path.join(tempDir("rill-restart-"), "rill.db");
  let server = await startRill({ args, dbPath });
  const { port } = server;
  const content = "rill chat across a restart";
  let stdout = "";
  const chat = runRill(["chat", "--server", server.base, content], {
    timeoutMs: 60_000,
    onStdout: (text) => {
      stdout = text;
    },
  });
  try {
    // Wait for text on stdout (after the demo's reasoning, which goes to stderr).
    for (let i = 0; i < 400 && stdout.length < 40; i++) await sleep(25);
    assert.ok(stdout.length >= 40, "rill chat printed part of the answer");
    // A crash loses what was streamed after the last checkpoint: the stored text may then be
    // shorter than what a client already showed. That loss is the server's, bounded by the
    // checkpoint interval, and not what this case is about; so freeze the server, and kill it
    // only at a moment when the stored text extends what rill chat printed.
    const chatId = (await api(server.base, "GET", "/api/chats")).chats[0].id;
    const answerId = (await history(server.base, chatId))[1].id;
    let killed = false;
    for (let attempt = 0; attempt < 50 && !killed; attempt++) {
      server.child.kill("SIGSTOP");
      await sleep(150); // what was on the wire reaches rill chat
      const stored = await storedContent(dbPath, answerId);
      if (stored !== null && stored.startsWith(stdout)) {
        await server.kill("SIGKILL");
        killed = true;
      } else {
        server.child.kill("SIGCONT");
        await sleep(30);
      }
    }
    assert.ok(killed, "found a moment where the checkpoint covered the printed text");
    const printedAtKill = stdout;
    server = await startRill({ args, dbPath, port });
    const out = await chat;
    assert.equal(out.code, 1, `rill chat exits with status 1:\n${out.stderr}`);
    assert.match(out.stderr, /interrupted/, out.stderr);
    const { answer } = await assertExchange(server.base, chatId, {
      content,
      text: out.stdout,
      status: "interrupted",
      minChars: 40,
    });
    assert.ok(answer.content.startsWith(printedAtKill));
  } finally {
    await server.kill();
  }
});
