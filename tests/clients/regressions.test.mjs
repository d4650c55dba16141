// Client-side regressions of issue 10 that the matrix does not already show, each with the real
// client a user had: a page that opens the chat's stream right after its 202 sees only the new
// exchange, never the chat's earlier messages again (item 3); curl reading a `text/plain` answer
// that is stopped exits with an error, and one that completes exits 0 with the stored text
// (item 6).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { readFileSync } from "node:fs";

import { startRill, launchBrowser, newChat, api, history, assemble, assertExchange, run, sleep, tempDir } from "./lib.mjs";

const NAMES = ["message.created", "message.part", "message.delta", "message.part.done", "message.completed", "snapshot", "reset"];

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

/** Sends a message and waits for its answer to complete (text/plain, read to the end). */
async function completeExchange(chatId, content) {
  const response = await fetch(`${rill.base}/api/chats/${chatId}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/plain" },
    body: JSON.stringify({ content }),
    signal: AbortSignal.timeout(30_000),
  });
  assert.equal(response.status, 200);
  return response.text();
}

test("a page that opens the chat's stream right after the 202 sees only the new exchange, not the chat's history", { timeout: 60_000 }, async () => {
  const chatId = await newChat(rill.base);
  await completeExchange(chatId, "the first question");
  const earlier = new Set((await history(rill.base, chatId)).map((m) => m.id));
  assert.equal(earlier.size, 2);

  const page = await context.newPage();
  await page.goto(`${rill.base}/healthz`);
  const seen = await page.evaluate(
    async ({ chatId, names }) => {
      const posted = await fetch(`/api/chats/${chatId}/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ content: "the second question" }),
      });
      const accepted = await posted.json();
      const events = [];
      // At once, as the docs suggest: the stream opens while the answer is just starting.
      await new Promise((resolve, reject) => {
        const source = new EventSource(accepted.events_url);
        for (const name of names) {
          source.addEventListener(name, (ev) => {
            const data = JSON.parse(ev.data);
            events.push({ event: name, data });
            if (name === "message.completed" && data.message_id === accepted.assistant_message.id) {
              source.close();
              resolve();
            }
          });
        }
        setTimeout(() => reject(new Error("no completion")), 30_000);
      });
      return { status: posted.status, accepted, events };
    },
    { chatId, names: NAMES },
  );
  await page.close();
  assert.equal(seen.status, 202);
  const ours = new Set([seen.accepted.user_message.id, seen.accepted.assistant_message.id]);
  const about = (e) => e.data.message_id ?? e.data.id;
  const foreign = seen.events.filter((e) => !ours.has(about(e)));
  assert.deepEqual(
    foreign.map((e) => `${e.event} ${about(e)}${earlier.has(about(e)) ? " (an earlier message)" : ""}`),
    [],
    "every event is about the new exchange",
  );
  const got = assemble(seen.events, seen.accepted.assistant_message.id);
  const messages = await history(rill.base, chatId);
  assert.equal(messages.length, 4);
  assert.equal(messages[3].status, "complete");
  assert.equal(got.text, messages[3].content, "the streamed text is the stored text");
});

test("curl reading a text/plain answer: exit 0 with the stored text when it completes, an error when it is stopped", { timeout: 60_000 }, async () => {
  const dir = tempDir("rill-curl-");
  const curl = (chatId, file) =>
    run(
      "curl",
      [
        "--silent",
        "--show-error",
        "--no-buffer",
        "--output",
        file,
        "--header",
        "Accept: text/plain",
        "--header",
        "Content-Type: application/json",
        "--data",
        JSON.stringify({ content: "curl" }),
        `${rill.base}/api/chats/${chatId}/messages`,
      ],
      { timeoutMs: 30_000 },
    );

  // Completes: exit 0, and the file holds exactly the stored text.
  const complete = await newChat(rill.base);
  const completeFile = path.join(dir, "complete.txt");
  const done = await curl(complete, completeFile);
  assert.equal(done.code, 0, done.stderr);
  await assertExchange(rill.base, complete, { content: "curl", text: readFileSync(completeFile, "utf8") });

  // Stopped mid-answer: curl must not exit 0 as if the answer were whole.
  const stopped = await newChat(rill.base);
  const stoppedFile = path.join(dir, "stopped.txt");
  const running = curl(stopped, stoppedFile);
  // Into the answer's text (after the demo's reasoning, which text/plain does not carry).
  let sofar = "";
  for (let i = 0; i < 400 && sofar.length < 40; i++) {
    await sleep(25);
    sofar = (await history(rill.base, stopped))[1]?.content ?? "";
  }
  assert.ok(sofar.length >= 40, "the answer's text started");
  const { message } = await api(rill.base, "POST", `/api/chats/${stopped}/stop`, { headers: { "content-type": "application/json" } });
  assert.equal(message.status, "stopped");
  const out = await running;
  assert.notEqual(out.code, 0, `curl saw the end of a stopped answer as a complete one (stderr: ${out.stderr})`);
  // 18: "transfer closed with outstanding read data remaining" (no last chunk).
  assert.equal(out.code, 18, out.stderr);
  const messages = await history(rill.base, stopped);
  assert.equal(messages.length, 2);
  assert.equal(readFileSync(stoppedFile, "utf8"), messages[1].content, "what curl got is the stored text");
});
