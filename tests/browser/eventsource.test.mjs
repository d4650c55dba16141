// A native EventSource in headless chromium against `rill serve` in auth mode jwt: the token
// travels as `?access_token=`, the server ends every stream after a short maximum duration, the
// browser reconnects by itself with Last-Event-ID, and the page ends with every published event
// exactly once, in order (what was published while it was away comes back by replay).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { startRill, mintToken, launchBrowser, postJson } from "./lib.mjs";

const EVENTS = 40;
const PUBLISH_EVERY_MS = 75;

let context;
before(async () => {
  context = await launchBrowser();
});
after(async () => {
  await context?.close();
});

async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : NaN;
}

test("EventSource with a query token reconnects by itself and gets every event once, in order", { timeout: 60_000 }, async () => {
  const secret = randomBytes(32).toString("hex");
  const rill = await startRill({
    // Streams end every 1.2 s; the browser waits the 300 ms retry hint, then resumes.
    args: ["--auth", "jwt", "--max-stream-duration", "1200ms", "--retry", "300ms", "--log", "info"],
    env: { RILL_JWT_SECRET: secret },
  });
  try {
    const token = await mintToken({ secret, sub: "browser", publish: ["es/*"], subscribe: ["es/*"] });
    const page = await context.newPage();
    // A page on the rill origin, so the EventSource is same-origin.
    await page.goto(`${rill.base}/healthz`);
    await page.evaluate((token) => {
      window.got = [];
      window.ids = [];
      window.opens = 0;
      window.endings = [];
      const source = new EventSource(`/api/events?topic=es/a&access_token=${encodeURIComponent(token)}`);
      source.onopen = () => {
        window.opens += 1;
      };
      source.onmessage = (event) => {
        const envelope = JSON.parse(event.data);
        window.got.push(envelope.data.n);
        window.ids.push(event.lastEventId);
      };
      // The server's final `event: error` before it ends a stream ({"code": "stream_duration"}).
      source.addEventListener("error", (event) => {
        if (event.data) window.endings.push(JSON.parse(event.data).code);
      });
      window.source = source;
    }, token);
    await page.waitForFunction(() => window.opens >= 1, null, { timeout: 15_000 });

    const auth = { authorization: `Bearer ${token}` };
    for (let n = 0; n < EVENTS; n++) {
      await postJson(`${rill.base}/api/topics/es/a/events`, { data: { n } }, auth);
      await new Promise((resolve) => setTimeout(resolve, PUBLISH_EVERY_MS));
    }

    await page.waitForFunction((count) => window.got.length >= count, EVENTS, { timeout: 30_000 });
    // A moment for any duplicate to show up before judging.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const { got, ids, opens, endings } = await page.evaluate(() => ({
      got: window.got,
      ids: window.ids,
      opens: window.opens,
      endings: window.endings,
    }));
    await page.evaluate(() => window.source.close());
    await page.close();

    assert.deepEqual(got, Array.from({ length: EVENTS }, (_, n) => n), "every event exactly once, in order");
    assert.equal(new Set(ids).size, EVENTS, "distinct event ids");
    assert.ok(opens >= 2, `the browser reconnected by itself (opens: ${opens})`);
    assert.ok(endings.includes("stream_duration"), `the server ended streams (${endings})`);
    // Events published while the browser was away came back by Last-Event-ID replay.
    assert.ok((await metric(rill.base, "rill_events_replayed_total")) > 0, "some events were replayed");
    // The token never reached a log line, though it was in every stream URL.
    assert.ok(!rill.logs().includes(token.split(".")[2]), "no token in the server log");
  } finally {
    await rill.stop();
  }
});
