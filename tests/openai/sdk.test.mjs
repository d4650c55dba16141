// The official `openai` npm package against rill's OpenAI face, unmodified, and the same checks
// with the official Python package (py/sdk_check.py, run from here): models, Chat Completions
// streamed and whole (the demo's text and reasoning, usage, tool-call fragments assembled by the
// SDK's stream helper), background Responses broken off and resumed with `starting_after` (on the
// same instance and on a second one sharing PostgreSQL and Redis), cancel, and bad input.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import path from "node:path";
import OpenAI from "openai";
import { HERE, PYTHON, chatCount, config, nativeAnswer, sharedBackends, startFakeUpstream, startRill } from "./lib.mjs";

let fake;
let rill;
let client;

before(async () => {
  fake = await startFakeUpstream();
  rill = await startRill({ config: config(fake.url) });
  // Auth mode `none`: any key is accepted (the SDK insists on one).
  client = new OpenAI({ baseURL: `${rill.base}/v1`, apiKey: "sk-anything", maxRetries: 0 });
});

after(async () => {
  await rill?.stop();
  fake?.close();
});

const QUESTION = "Tell me about rivers";

test("models.list() gives the bots", async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ["demo", "tools"]);
});

test("chat.completions.create: streamed and whole, the stored answer's text, reasoning, usage", async () => {
  const stored = await nativeAnswer(rill.base, QUESTION);
  const stream = await client.chat.completions.create({
    model: "demo",
    messages: [{ role: "user", content: QUESTION }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let reasoning = "";
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    text += choice.delta.content ?? "";
    reasoning += choice.delta.reasoning_content ?? "";
    finish = choice.finish_reason ?? finish;
  }
  assert.equal(text, stored.content);
  const storedReasoning = stored.parts.filter((p) => p.type === "reasoning").map((p) => p.text).join("");
  assert.ok(storedReasoning.length > 0);
  assert.equal(reasoning, storedReasoning);
  assert.equal(finish, "stop");
  assert.ok(usage && usage.total_tokens > 0 && usage.completion_tokens > 0, JSON.stringify(usage));

  const whole = await client.chat.completions.create({
    model: "demo",
    messages: [{ role: "user", content: QUESTION }],
  });
  assert.equal(whole.choices[0].message.content, stored.content);
  assert.equal(whole.choices[0].message.reasoning_content, storedReasoning);
});

test("tool calls from the upstream arrive as fragments the SDK's stream helper assembles", async () => {
  const runner = client.chat.completions.stream({
    model: "tools",
    messages: [{ role: "user", content: "Weather and time in Seoul?" }],
    tools: [
      { type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } },
      { type: "function", function: { name: "get_time", parameters: { type: "object", properties: { tz: { type: "string" } } } } },
    ],
  });
  const done = [];
  runner.on("tool_calls.function.arguments.done", (e) => done.push(e.name));
  const final = await runner.finalChatCompletion();
  const calls = final.choices[0].message.tool_calls.map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]);
  assert.deepEqual(calls, [
    ["call_aW3gHiqR", "get_weather", { city: "Seoul" }],
    ["call_Xk9pL2mT", "get_time", { tz: "Asia/Seoul" }],
  ]);
  assert.equal(final.choices[0].finish_reason, "tool_calls");
  assert.deepEqual(done, ["get_weather", "get_time"]);
  const sent = fake.requests.at(-1);
  assert.equal(sent.tools[1].function.name, "get_time");
});

/** Reads `stream` into `events`, stopping after `n` if given (the SDK aborts the request). */
async function read(stream, events, n = Infinity) {
  for await (const event of stream) {
    events.push(event);
    if (events.length >= n) break;
  }
  return events;
}

/** The checks of a resumed background response: no event twice, the text whole. */
async function checkResumed(events, retrieveFrom) {
  const numbers = events.map((e) => e.sequence_number);
  assert.equal(new Set(numbers).size, numbers.length, "no event twice");
  assert.deepEqual([...numbers].sort((a, b) => a - b), numbers, "in order");
  const last = events.at(-1);
  assert.equal(last.type, "response.completed");
  const text = events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("");
  const final = await retrieveFrom.responses.retrieve(last.response.id);
  assert.equal(final.status, "completed");
  assert.equal(text, final.output_text);
  assert.ok(text.includes(QUESTION));
}

test("responses.create(background, stream): break off, resume with starting_after", async () => {
  const events = await read(
    await client.responses.create({ model: "demo", input: QUESTION, background: true, stream: true }),
    [],
    6,
  );
  assert.equal(events[0].type, "response.created");
  const id = events[0].response.id;
  const rest = await client.responses.retrieve(id, { stream: true, starting_after: events.at(-1).sequence_number });
  await read(rest, events);
  await checkResumed(events, client);
});

test("the resume lands on a second instance (PostgreSQL + Redis)", async (t) => {
  const backends = await sharedBackends();
  if (!backends) {
    t.skip("PostgreSQL or Redis is not reachable");
    return;
  }
  const a = await startRill({ config: config(fake.url), args: backends.args("openai-a") });
  const b = await startRill({ config: config(fake.url), args: backends.args("openai-b") });
  try {
    const onA = new OpenAI({ baseURL: `${a.base}/v1`, apiKey: "sk-a", maxRetries: 0 });
    const onB = new OpenAI({ baseURL: `${b.base}/v1`, apiKey: "sk-b", maxRetries: 0 });
    const events = await read(
      await onA.responses.create({ model: "demo", input: QUESTION, background: true, stream: true }),
      [],
      6,
    );
    const id = events[0].response.id;
    const rest = await onB.responses.retrieve(id, { stream: true, starting_after: events.at(-1).sequence_number });
    await read(rest, events);
    await checkResumed(events, onB);

    // The Python SDK: the same, created on B and resumed on A.
    await python(t, "resume", b.base, a.base);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test("responses.cancel() ends a background response with its text kept", async () => {
  const created = await client.responses.create({ model: "demo", input: QUESTION, background: true });
  assert.ok(["queued", "in_progress"].includes(created.status));
  // Past the demo's reasoning, into its text.
  let deltas = 0;
  for await (const event of await client.responses.retrieve(created.id, { stream: true })) {
    if (event.type === "response.output_text.delta" && ++deltas >= 3) break;
  }
  assert.equal(deltas, 3);
  // (The JS SDK adds `output_text` to what `create` and `retrieve` return, not `cancel`.)
  const outputText = (r) =>
    r.output.filter((i) => i.type === "message").flatMap((i) => i.content.map((c) => c.text)).join("");
  const cancelled = await client.responses.cancel(created.id);
  assert.equal(cancelled.status, "cancelled");
  assert.ok(outputText(cancelled).length > 0, "the text is kept");
  const again = await client.responses.cancel(created.id);
  assert.equal(again.status, "cancelled");
  assert.equal(outputText(again), outputText(cancelled));
  const polled = await client.responses.retrieve(created.id);
  assert.equal(polled.status, "cancelled");
  assert.equal(polled.output_text, outputText(cancelled));
});

test("bad input: OpenAI-shaped errors the SDK raises as its classes, nothing stored", async () => {
  const before = await chatCount(rill.base);
  await assert.rejects(
    client.chat.completions.create({ model: "gpt-nope", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found" && e.param === "model",
  );
  await assert.rejects(
    client.chat.completions.create({ model: "demo", messages: "x" }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "messages" && e.type === "invalid_request_error",
  );
  await assert.rejects(
    client.responses.create({ model: "demo" }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "input" && e.code === "missing_required_parameter",
  );
  await assert.rejects(
    client.responses.create({ model: "gpt-nope", input: "x" }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found",
  );
  await assert.rejects(
    client.responses.create({ model: "demo", input: 42 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "input",
  );
  await assert.rejects(
    client.responses.retrieve("resp_nope"),
    (e) => e instanceof OpenAI.NotFoundError,
  );
  assert.equal(await chatCount(rill.base), before, "nothing stored");
});

/** Runs py/sdk_check.py `what` with the official Python package against `bases`. */
async function python(t, what, ...bases) {
  if (!existsSync(PYTHON)) {
    if (process.env.CI === "true") throw new Error("tests/openai/.venv is missing: scripts/test installs it");
    t.diagnostic("the Python SDK is not installed (tests/openai/.venv): skipped");
    return;
  }
  const { stdout } = await promisify(execFile)(PYTHON, [path.join(HERE, "py/sdk_check.py"), what, ...bases], {
    timeout: 120_000,
  });
  t.diagnostic(stdout.trim());
}

test("the official Python package: the same checks", async (t) => {
  await python(t, "all", rill.base);
});
