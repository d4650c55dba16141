// The tab's side of the shared event stream: subscribe to a chat and get its events, whether
// they come through the SharedWorker (one stream for every tab of this browser) or, where
// SharedWorker is missing, through a stream of this tab's own.

import { ChatStream, RillClient } from "./rill.js";

const tabId = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
let worker = null;
/** chatId → Set of handler objects { onEvent, onState, onOpen } */
const handlers = new Map();

function startWorker() {
  if (worker !== null || typeof SharedWorker !== "function") return worker;
  try {
    const w = new SharedWorker("/assets/stream-worker.js", { type: "module", name: "rill-streams" });
    w.port.onmessage = ({ data }) => dispatch(data);
    // A worker that cannot start (blocked, or a script error): every chat gets a stream of its own.
    w.onerror = () => {
      if (worker !== w) return;
      worker = false;
      for (const [chatId, set] of handlers) {
        const own = ownStream(chatId, fanOut(set));
        for (const h of set) h.fallback = own;
      }
    };
    w.port.start();
    // Held until this tab closes: the worker learns that we are gone when it is granted the lock.
    navigator.locks?.request("rill-tab-" + tabId, () => new Promise(() => {}));
    w.port.postMessage({ op: "hello", tabId });
    // A page kept in the back/forward cache stays subscribed; one that is gone says so at once.
    addEventListener("pagehide", (e) => e.persisted || w.port.postMessage({ op: "bye" }));
    worker = w;
  } catch {
    worker = false;
  }
  return worker;
}

function dispatch(message) {
  const set = handlers.get(message.chatId);
  if (!set) return;
  for (const h of set) {
    if (message.kind === "event") h.onEvent(message.type, message.data, message.id);
    else if (message.kind === "state") h.onState(message.state, message.detail);
    else if (message.kind === "open") h.onOpen(message.resumed);
  }
}

/** How this tab gets its events: "shared" (SharedWorker) or "tab" (its own stream). */
export function streamMode() {
  return startWorker() ? "shared" : "tab";
}

/**
 * Follows chat `chatId`: `h.onEvent(type, data, id)`, `h.onState(state)`, `h.onOpen(resumed)`.
 * Returns `{ close, restart }`.
 */
export function followChat(chatId, h) {
  const w = startWorker();
  if (w) {
    let set = handlers.get(chatId);
    if (!set) handlers.set(chatId, (set = new Set()));
    set.add(h);
    w.port.postMessage({ op: "subscribe", chatId });
    return {
      close() {
        set.delete(h);
        h.fallback?.close();
        if (set.size === 0) {
          handlers.delete(chatId);
          w.port.postMessage({ op: "unsubscribe", chatId });
        }
      },
      restart: () => (h.fallback ? h.fallback.restart() : w.port.postMessage({ op: "restart", chatId })),
    };
  }
  const own = ownStream(chatId, h);
  return { close: () => own.close(), restart: () => own.restart() };
}

/** Calls every handler of `set`. */
function fanOut(set) {
  return {
    onEvent: (...a) => set.forEach((h) => h.onEvent(...a)),
    onState: (...a) => set.forEach((h) => h.onState(...a)),
    onOpen: (...a) => set.forEach((h) => h.onOpen(...a)),
  };
}

/** A stream of this tab's own, for browsers without SharedWorker. */
function ownStream(chatId, h) {
  const stream = new ChatStream(new RillClient(), chatId, {
    onEvent: (type, data, id) => {
      h.onEvent(type, data, id);
      if (type === "reset") stream.restart();
    },
    onState: (state, detail) => h.onState(state, detail ? String(detail.message || detail) : ""),
    onOpen: (resumed) => h.onOpen(resumed),
  });
  return stream;
}
