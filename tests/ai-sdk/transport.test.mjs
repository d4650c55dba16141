// The AI SDK face (`/api/ai-sdk/chat`) against the real `ai` package, majors 6 and 7: the `Chat`
// machinery `useChat` runs (AbstractChat + DefaultChatTransport) and the raw transport, against a
// live `rill serve` with the demo bot (which reasons first, and with "weather" in the prompt calls
// a tool and cites a source).
//
// One server answers at once (whole answers); a second one paces the demo so a test can act in
// the middle of an answer (cut, resume, stop).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { MAJORS, api, loadAi, makeChat, plain, readAll, startRill, storedUiMessages, until, userMessage } from "./lib.mjs";

const FAST = ["--demo-first-token-delay", "0s", "--demo-tokens-per-second", "0"];
const SLOW = ["--demo-first-token-delay", "50ms", "--demo-tokens-per-second", "100"];

let fast;
let slow;
/** Streams end after one second (`max_stream_duration`); answers take several. */
let capped;
before(async () => {
  [fast, slow, capped] = await Promise.all([
    startRill({ args: FAST }),
    startRill({ args: SLOW }),
    startRill({ args: [...SLOW, "--max-stream-duration", "1s"] }),
  ]);
});
after(async () => {
  await Promise.all([fast?.stop(), slow?.stop(), capped?.stop()]);
});

let chats = 0;
const newChatId = (major) => `ai${major}-chat-${process.pid}-${++chats}`;
const textOf = (message) => (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");

/** A stream of the given chunks, for readUIMessageStream. */
const streamOf = (chunks) =>
  new ReadableStream({
    start(c) {
      for (const chunk of chunks) c.enqueue(chunk);
      c.close();
    },
  });

/** Checks a chunk sequence is one whole answer, each part started once and never a delta before its start. */
function assertOneAnswer(chunks, messageId) {
  assert.equal(chunks[0].type, "start");
  if (messageId) assert.equal(chunks[0].messageId, messageId);
  assert.equal(chunks.filter((c) => c.type === "start").length, 1, "one start");
  const started = new Set();
  for (const c of chunks) {
    const id = c.id ?? c.toolCallId;
    if (/-start$/.test(c.type) && c.type !== "start-step") {
      assert.ok(!started.has(`${c.type}:${id}`), `${c.type} ${id} twice`);
      started.add(`${c.type}:${id}`);
    }
    if (c.type === "text-delta") assert.ok(started.has(`text-start:${id}`), `delta before start: ${id}`);
    if (c.type === "reasoning-delta") assert.ok(started.has(`reasoning-start:${id}`), `delta before start: ${id}`);
  }
  assert.equal(chunks.at(-1).type, "finish");
}

for (const major of MAJORS) {
  describe(`ai@${major}`, () => {
    let ai;
    before(async () => {
      ai = await loadAi(major);
    });

    test("sends; the demo reasons, then answers; the assembled message is the stored one", async () => {
      const id = newChatId(major);
      const { chat, errors, finishes } = makeChat(ai, { id, api: `${fast.base}/api/ai-sdk/chat` });
      await chat.sendMessage({ text: "Hello rill" });
      assert.deepEqual(errors, []);
      assert.equal(chat.status, "ready");
      assert.equal(chat.messages.length, 2);
      const answer = plain(chat.messages[1]);
      assert.deepEqual(answer.parts.map((p) => p.type), ["step-start", "reasoning", "text"]);
      assert.match(answer.parts[1].text, /Hello rill/);
      assert.match(textOf(answer), /Hello rill/);
      assert.ok(answer.parts.every((p) => p.state === undefined || p.state === "done"));
      assert.equal(answer.metadata.status, "complete");
      assert.equal(answer.metadata.bot, "demo");
      assert.ok(answer.metadata.usage.outputTokens > 0);
      assert.deepEqual(finishes, [{ isAbort: false, isError: false, finishReason: "stop", id: answer.id }]);

      const stored = await storedUiMessages(fast.base, id);
      assert.equal(stored.length, 2);
      assert.deepEqual(stored[1], answer);
      assert.deepEqual(stored[0].parts, [{ type: "text", text: "Hello rill" }]);
      // The same chat, as rill's own API has it.
      const native = await api(fast.base, "GET", `/api/chats/${id}/messages`);
      assert.equal(native.json.messages[1].id, answer.id);
      assert.equal(native.json.messages[1].content, textOf(answer));

      // A second turn, and a regeneration: the stored history keeps every answer.
      await chat.sendMessage({ text: "And again" });
      await chat.regenerate();
      assert.deepEqual(errors, []);
      assert.equal(chat.messages.length, 4);
      const regenerated = plain(chat.messages[3]);
      const history = await storedUiMessages(fast.base, id);
      assert.equal(history.length, 5);
      assert.deepEqual(history[4], regenerated);
      assert.notEqual(history[3].id, regenerated.id);
    });

    test("a tool call with its output and a cited source, as stored", async () => {
      const id = newChatId(major);
      const { chat, errors } = makeChat(ai, { id, api: `${fast.base}/api/ai-sdk/chat` });
      await chat.sendMessage({ text: "What is the weather in Paris?" });
      assert.deepEqual(errors, []);
      const answer = plain(chat.messages[1]);
      assert.deepEqual(answer.parts.map((p) => p.type), [
        "step-start", "reasoning", "tool-get_weather", "step-start", "source-url", "text",
      ]);
      const tool = answer.parts[2];
      assert.equal(tool.state, "output-available");
      assert.deepEqual(tool.input, { city: "Paris", unit: "celsius" });
      assert.equal(tool.output.city, "Paris");
      assert.equal(answer.parts[4].url, "https://example.com/weather/paris");
      const stored = await storedUiMessages(fast.base, id);
      assert.deepEqual(stored[1], answer);
    });

    test("a retried POST (same message id) gets the first one's exchange", async () => {
      const id = newChatId(major);
      const transport = new ai.DefaultChatTransport({ api: `${fast.base}/api/ai-sdk/chat` });
      const question = userMessage("Once only, please");
      const send = async () => {
        const stream = await transport.sendMessages({
          chatId: id, trigger: "submit-message", messageId: undefined, messages: [question], abortSignal: undefined,
        });
        const chunks = await readAll(stream);
        assertOneAnswer(chunks);
        let last;
        for await (const m of ai.readUIMessageStream({ stream: streamOf(chunks) })) last = m;
        return plain(last);
      };
      const first = await send();
      const second = await send();
      assert.deepEqual(second, first);
      const raw = await fetch(`${fast.base}/api/ai-sdk/chat`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ id, messages: [question], trigger: "submit-message" }),
      });
      assert.equal(raw.headers.get("idempotent-replayed"), "true");
      assert.equal(raw.headers.get("x-vercel-ai-ui-message-stream"), "v1");
      await raw.text();
      const stored = await storedUiMessages(fast.base, id);
      assert.equal(stored.length, 2);
      assert.deepEqual(stored[1], first);
    });

    test("reconnecting when nothing runs is 204: no stream, no error", async () => {
      const transport = new ai.DefaultChatTransport({ api: `${fast.base}/api/ai-sdk/chat` });
      // A chat nobody created yet (a new page's first load), and a finished one.
      assert.equal(await transport.reconnectToStream({ chatId: newChatId(major) }), null);
      const id = newChatId(major);
      const { chat, errors } = makeChat(ai, { id, api: `${fast.base}/api/ai-sdk/chat` });
      await chat.sendMessage({ text: "Short one" });
      assert.equal(await transport.reconnectToStream({ chatId: id }), null);
      await chat.resumeStream();
      assert.equal(chat.status, "ready");
      assert.deepEqual(errors, []);
      assert.equal(chat.messages.length, 2);
    });

    test("a cut mid-answer, then reconnectToStream: the whole answer, once", async () => {
      const id = newChatId(major);
      const transport = new ai.DefaultChatTransport({ api: `${slow.base}/api/ai-sdk/chat` });
      const cut = new AbortController();
      const stream = await transport.sendMessages({
        chatId: id, trigger: "submit-message", messageId: undefined,
        messages: [userMessage("Tell me about streams")], abortSignal: cut.signal,
      });
      const reader = stream.getReader();
      const before = [];
      for (;;) {
        const { value } = await reader.read();
        before.push(value);
        if (value.type === "text-delta") break;
      }
      cut.abort();
      await reader.cancel().catch(() => {});

      const resumed = await transport.reconnectToStream({ chatId: id });
      assert.ok(resumed, "the answer is still running: a stream, not 204");
      const chunks = await readAll(resumed);
      assertOneAnswer(chunks, before[0].messageId);
      // It starts from the start: everything the cut stream had is in it again.
      assert.deepEqual(chunks.slice(0, 4).map((c) => c.type), before.slice(0, 4).map((c) => c.type));
      let last;
      for await (const m of ai.readUIMessageStream({ stream: streamOf(chunks) })) last = m;
      const stored = await storedUiMessages(slow.base, id);
      assert.deepEqual(plain(last), stored[1]);
      assert.equal(stored[1].metadata.status, "complete");
    });

    test("Chat.resumeStream after a lost stream rebuilds the same message, once", async () => {
      const id = newChatId(major);
      const { chat, errors } = makeChat(ai, { id, api: `${slow.base}/api/ai-sdk/chat` });
      const sending = chat.sendMessage({ text: "Resume me" });
      await until(() => textOf(chat.messages[1]).length > 10, 15_000, "some text");
      // `stop()` of useChat only aborts the fetch: the answer goes on in rill.
      await chat.stop();
      await sending;
      const partial = textOf(chat.messages[1]);
      await chat.resumeStream();
      assert.deepEqual(errors, []);
      assert.equal(chat.status, "ready");
      assert.equal(chat.messages.length, 2);
      const answer = plain(chat.messages[1]);
      assert.ok(textOf(answer).startsWith(partial));
      const stored = await storedUiMessages(slow.base, id);
      assert.deepEqual(answer, stored[1]);
      assert.equal(answer.metadata.status, "complete");
    });

    test("POST /stop ends the answer: the client keeps its text, rill stores it stopped", async () => {
      const id = newChatId(major);
      const { chat, errors, finishes } = makeChat(ai, { id, api: `${slow.base}/api/ai-sdk/chat` });
      const sending = chat.sendMessage({ text: "Please stop me" });
      await until(() => textOf(chat.messages[1]).length > 10, 15_000, "some text");
      const stopped = await api(slow.base, "POST", `/api/ai-sdk/chat/${id}/stop`);
      assert.equal(stopped.status, 200, stopped.text);
      await sending;
      assert.deepEqual(errors, []);
      assert.equal(chat.status, "ready");
      const answer = plain(chat.messages[1]);
      assert.equal(answer.metadata.status, "stopped");
      assert.deepEqual(finishes.map((f) => [f.isAbort, f.isError]), [[false, false]]);
      const stored = await storedUiMessages(slow.base, id);
      assert.deepEqual(stored[1], answer);
      assert.deepEqual(stopped.json.message, answer);
      const native = await api(slow.base, "GET", `/api/chats/${id}/messages`);
      assert.equal(native.json.messages[1].status, "stopped");
      assert.ok(native.json.messages[1].content.length < 300, "the answer did not run to its end");
      // Nothing runs any more: stop again is a conflict, resume is 204.
      assert.equal((await api(slow.base, "POST", `/api/ai-sdk/chat/${id}/stop`)).status, 409);
      const transport = new ai.DefaultChatTransport({ api: `${slow.base}/api/ai-sdk/chat` });
      assert.equal(await transport.reconnectToStream({ chatId: id }), null);
    });

    test("a stream the server ends tells the client why; the answer goes on in rill", async () => {
      const id = newChatId(major);
      const { chat, errors } = makeChat(ai, { id, api: `${capped.base}/api/ai-sdk/chat` });
      await chat.sendMessage({ text: "Longer than the stream may last" });
      assert.equal(chat.status, "error");
      assert.match(errors[0].message, /maximum duration; reconnect to resume/);
      assert.ok(textOf(chat.messages[1]).length > 0);
      const answer = await until(async () => {
        const stored = await storedUiMessages(capped.base, id);
        return stored[1]?.metadata.status === "complete" && stored[1];
      }, 20_000, "the answer to complete");
      assert.ok(textOf(answer).startsWith(textOf(chat.messages[1])));
    });

    test("errors reach the client as the SDK reports them", async () => {
      const { chat, errors } = makeChat(ai, {
        id: newChatId(major), api: `${fast.base}/api/ai-sdk/chat`, body: { bot: "no-such-bot" },
      });
      await chat.sendMessage({ text: "Hi" });
      assert.equal(chat.status, "error");
      assert.match(errors[0].message, /unknown_bot/);
      // A bad chat id (the engine's rule) is refused before anything is stored.
      const bad = makeChat(ai, { id: "bad id!", api: `${fast.base}/api/ai-sdk/chat` });
      await bad.chat.sendMessage({ text: "Hi" });
      assert.match(bad.errors[0].message, /invalid_chat_id/);
      // A regeneration needs a chat to regenerate in: none is created for it.
      const nowhere = newChatId(major);
      const regen = await api(fast.base, "POST", "/api/ai-sdk/chat", { body: { id: nowhere, messages: [], trigger: "regenerate-message" } });
      assert.equal(regen.status, 404, regen.text);
      assert.equal((await api(fast.base, "GET", `/api/chats/${nowhere}`)).status, 404);
      // A message id that cannot be a key (it is one) is refused before the chat exists.
      const badKey = await api(fast.base, "POST", "/api/ai-sdk/chat", {
        body: { id: nowhere, messages: [userMessage("Hi", "not a key")], trigger: "submit-message" },
      });
      assert.equal(badKey.status, 400, badKey.text);
      assert.equal(badKey.json.error.code, "invalid_idempotency_key");
      assert.equal((await api(fast.base, "GET", `/api/chats/${nowhere}`)).status, 404);
      // Editing a sent message sends its id again with other text: refused, history unchanged.
      const id = newChatId(major);
      const edit = makeChat(ai, { id, api: `${fast.base}/api/ai-sdk/chat` });
      await edit.chat.sendMessage({ text: "First words" });
      await edit.chat.sendMessage({ text: "Other words", messageId: edit.chat.messages[0].id });
      assert.equal(edit.chat.status, "error");
      assert.match(edit.errors[0].message, /idempotency_key_reused/);
      const stored = await storedUiMessages(fast.base, id);
      assert.equal(stored.length, 2);
      assert.deepEqual(stored[0].parts, [{ type: "text", text: "First words" }]);
    });
  });
}
