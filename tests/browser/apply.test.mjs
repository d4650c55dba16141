// rill.js's event logic in Node, no browser: how a message takes a chat's events, and how
// ChatStream connects. Deterministic stand-ins for the races of a real page (an event handed
// over twice, a replay that overlaps a snapshot, a reconnection while another is under way).
//
// `RILL_JS` points at another copy of rill.js (say, an older one) to check it against these.

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { ROOT } from "./lib.mjs";

const { applyToMessage, ChatStream } = await import(
  pathToFileURL(process.env.RILL_JS || path.join(ROOT, "crates/rill-server/assets/rill.js")).href
);

const S = "1bq4xkz9v0m3.2k7ac1"; // a chat stream's epoch and topic-set hash
const id = (offset, stream = S) => `${stream}.${offset}`;

/** An answer's events from offset `from`: a text part, then one delta per piece. */
function events(pieces, from = 2) {
  const out = [["message.part", { message_id: "m", part: 0, type: "text", text: "" }, id(from)]];
  pieces.forEach((text, i) => out.push(["message.delta", { message_id: "m", part: 0, text }, id(from + 1 + i)]));
  return out;
}

function placeholder(at = id(1)) {
  return { id: "m", role: "assistant", status: "streaming", content: "", parts: [], at };
}

const PIECES = ["> [go", "od](https", "://example.com/a)", "\n\nHi"];
const TEXT = PIECES.join("");

test("an event handed over twice is applied once", () => {
  const m = placeholder();
  for (const e of events(PIECES)) {
    assert.equal(applyToMessage(m, ...e), true);
    assert.equal(applyToMessage(m, ...e), true);
  }
  assert.equal(m.content, TEXT);
  assert.equal(m.parts[0].text, TEXT);
});

test("a replay from before what the message reflects adds only what is new", () => {
  const all = events(PIECES);
  const m = placeholder();
  for (const e of all.slice(0, 3)) applyToMessage(m, ...e);
  // A reconnection resumed from an older id: the stream hands every event over again.
  for (const e of all) applyToMessage(m, ...e);
  assert.equal(m.content, TEXT);
});

test("a snapshot's id covers the events it already holds", () => {
  const all = events(PIECES);
  // The state at offset 4 (the part and two deltas), as a `snapshot` carries it.
  const snap = { ...placeholder(id(4)), content: PIECES[0] + PIECES[1], parts: [{ type: "text", text: PIECES[0] + PIECES[1] }] };
  for (const e of all) applyToMessage(snap, ...e); // live events from before the snapshot too
  assert.equal(snap.content, TEXT);
});

test("ids of another stream (a new epoch) or none at all are applied", () => {
  const m = placeholder(id(9));
  applyToMessage(m, "message.part", { message_id: "m", part: 0, type: "text", text: "" }, id(2, "other.2k7ac1"));
  applyToMessage(m, "message.delta", { message_id: "m", part: 0, text: "a" }, id(3, "other.2k7ac1"));
  applyToMessage(m, "message.delta", { message_id: "m", part: 0, text: "b" });
  assert.equal(m.content, "ab");
  // Offsets compare as numbers, not as strings: 10 comes after 9.
  const n = placeholder(id(9));
  applyToMessage(n, "message.part", { message_id: "m", part: 0, type: "text", text: "" }, id(10));
  applyToMessage(n, "message.delta", { message_id: "m", part: 0, text: "c" }, id(11));
  assert.equal(n.content, "c");
});

test("ChatStream: a reconnection asked for while one is under way opens one EventSource", async () => {
  const opened = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.closed = false;
      opened.push(this);
    }
    addEventListener() {}
    close() {
      this.closed = true;
    }
  }
  const tickets = [];
  const client = {
    ticket: () => new Promise((resolve) => tickets.push(resolve)),
    eventsUrl: (chatId, { ticket }) => `/api/chats/${chatId}/events?ticket=${ticket}`,
  };
  const saved = globalThis.EventSource;
  globalThis.EventSource = FakeEventSource;
  try {
    const stream = new ChatStream(client, "c1", {});
    // Back online (or a restart) while the first connect still waits for its ticket.
    stream.retryNow();
    assert.equal(tickets.length, 2);
    tickets[1]({ ticket: "t2" });
    tickets[0]({ ticket: "t1" });
    for (let i = 0; i < 10; i++) await Promise.resolve();
    const open = opened.filter((es) => !es.closed);
    assert.equal(open.length, 1, `open EventSources: ${opened.map((es) => es.url).join(", ")}`);
    stream.close();
  } finally {
    globalThis.EventSource = saved;
  }
});
