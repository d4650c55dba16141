// An app's own AI SDK route, as a team would have it in front of rill: a plain node:http server
// whose POST handler is `streamText(...).toUIMessageStreamResponse()` with the mock model of the
// `ai` package (`ai/test`), one route per major: POST /v6/api/chat and /v7/api/chat.
//
// The model reasons, writes text, calls a `weather` tool (which streamText runs), then answers
// with text in a second step. `?mode=slow` spaces the model's chunks 150 ms apart. Every request
// must carry rill's signed identity (x-rill-user / x-rill-timestamp / x-rill-signature), checked
// as docs/ai-sdk.md shows; each one is recorded, with whether its client went away early.

import http from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { Readable } from "node:stream";

import { loadAi } from "./lib.mjs";

/** The user id of a request signed with `secret`, or null (docs/ai-sdk.md). */
export function verifiedUser(headers, secret, maxAgeSeconds = 300) {
  const user = headers["x-rill-user"];
  const timestamp = headers["x-rill-timestamp"];
  const signature = headers["x-rill-signature"];
  if (!user || !timestamp || !signature) return null;
  if (!(Math.abs(Date.now() / 1000 - Number(timestamp)) <= maxAgeSeconds)) return null;
  const expected = "v1=" + createHmac("sha256", secret).update(`${timestamp}.${user}`).digest("hex");
  const a = Buffer.from(signature);
  const b = Buffer.from(expected);
  if (a.length !== b.length || !timingSafeEqual(a, b)) return null;
  return decodeURIComponent(user);
}

/** The identity headers rill sends, made here for a client that talks to the route directly. */
export function signedHeaders(secret, user) {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const value = encodeURIComponent(user);
  const signature = "v1=" + createHmac("sha256", secret).update(`${timestamp}.${value}`).digest("hex");
  return { "x-rill-user": value, "x-rill-timestamp": timestamp, "x-rill-signature": signature };
}

const usage = {
  inputTokens: { total: 10, noCache: 10, cacheRead: undefined, cacheWrite: undefined },
  outputTokens: { total: 20, text: 15, reasoning: 5 },
};

function step1() {
  return [
    { type: "stream-start", warnings: [] },
    { type: "response-metadata", id: "resp-1", modelId: "mock-model-id", timestamp: new Date(0) },
    { type: "reasoning-start", id: "r1" },
    { type: "reasoning-delta", id: "r1", delta: "The user wants the weather. " },
    { type: "reasoning-delta", id: "r1", delta: "I will call the tool." },
    { type: "reasoning-end", id: "r1" },
    { type: "text-start", id: "t1" },
    { type: "text-delta", id: "t1", delta: "Let me check " },
    { type: "text-delta", id: "t1", delta: "the weather." },
    { type: "text-end", id: "t1" },
    { type: "tool-input-start", id: "call-1", toolName: "weather" },
    { type: "tool-input-delta", id: "call-1", delta: '{"city":' },
    { type: "tool-input-delta", id: "call-1", delta: '"Paris"}' },
    { type: "tool-input-end", id: "call-1" },
    { type: "tool-call", toolCallId: "call-1", toolName: "weather", input: '{"city":"Paris"}' },
    { type: "finish", finishReason: { unified: "tool-calls", raw: "tool_use" }, usage },
  ];
}

function step2() {
  return [
    { type: "stream-start", warnings: [] },
    { type: "response-metadata", id: "resp-2", modelId: "mock-model-id", timestamp: new Date(0) },
    { type: "text-start", id: "t2" },
    { type: "text-delta", id: "t2", delta: "It is sunny " },
    { type: "text-delta", id: "t2", delta: "in Paris." },
    { type: "text-end", id: "t2" },
    { type: "finish", finishReason: { unified: "stop", raw: "end_turn" }, usage },
  ];
}

function route(ai, slow) {
  const Mock = ai.test.MockLanguageModelV4 ?? ai.test.MockLanguageModelV3;
  const stepCount = ai.isStepCount ?? ai.stepCountIs;
  const delay = slow ? 150 : null;
  return async (body) => {
    let call = 0;
    const model = new Mock({
      doStream: async () => {
        call++;
        const chunks = call === 1 ? step1() : step2();
        return { stream: ai.test.simulateReadableStream({ chunks, initialDelayInMs: delay, chunkDelayInMs: delay }) };
      },
    });
    const result = ai.streamText({
      model,
      messages: await ai.convertToModelMessages(body.messages),
      tools: {
        weather: ai.tool({
          description: "Get the weather for a city",
          inputSchema: ai.jsonSchema({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
          execute: async ({ city }) => ({ city, forecast: "sunny", tempC: 21 }),
        }),
      },
      stopWhen: stepCount(5),
    });
    return result.toUIMessageStreamResponse();
  };
}

/**
 * Starts the app on a free port. Returns { url, requests, stop() }: `requests` lists each POST as
 * { path, user, headers, body, wentAway } (wentAway: the client closed before the answer's end).
 */
export async function startAppRoute({ secret }) {
  const ais = { 6: await loadAi(6), 7: await loadAi(7) };
  const requests = [];
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://x");
      const match = /^\/v(6|7)\/api\/chat$/.exec(url.pathname);
      if (req.method !== "POST" || !match) {
        res.writeHead(404, { "content-type": "application/json" });
        return res.end(JSON.stringify({ error: "no such route" }));
      }
      const bufs = [];
      for await (const b of req) bufs.push(b);
      const body = JSON.parse(Buffer.concat(bufs).toString("utf8"));
      const user = verifiedUser(req.headers, secret);
      const record = { path: req.url, user, headers: req.headers, body, wentAway: false };
      requests.push(record);
      if (user === null) {
        res.writeHead(401, { "content-type": "application/json" });
        return res.end(JSON.stringify({ error: "the rill signature does not verify" }));
      }
      const response = await route(ais[match[1]], url.searchParams.get("mode") === "slow")(body);
      res.on("close", () => {
        if (!res.writableFinished) record.wentAway = true;
      });
      const headers = {};
      response.headers.forEach((v, k) => (headers[k] = v));
      res.writeHead(response.status, headers);
      Readable.fromWeb(response.body).on("error", () => {}).pipe(res);
    } catch (error) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: String(error?.stack ?? error) }));
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}
