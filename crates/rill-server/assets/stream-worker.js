// The SharedWorker that holds ONE event stream per chat for every tab of this browser.
//
// Browsers allow six HTTP/1.1 connections per origin: a stream per tab would hang the seventh
// tab. Tabs connect here, subscribe to a chat, and get its events forwarded. A tab that joins a
// stream already running gets a `snapshot` of the generation in progress (the worker keeps it,
// every part), so it never appends deltas to a stale copy.
//
// Closed tabs are noticed through Web Locks: each tab holds a lock named after itself for its
// whole life; the worker asks for the same lock and is granted it when the tab is gone
// (MessagePorts have no close event).

import { ChatStream, RillClient, applyToMessage } from "./rill.js";

const client = new RillClient();
/** chatId → { stream, ports: Set, state, current: message being generated or null, linger } */
const chats = new Map();

self.onconnect = (event) => {
  const port = event.ports[0];
  const subscriptions = new Set();
  port.onmessage = ({ data }) => {
    if (data.op === "hello" && data.tabId && self.navigator.locks) {
      navigator.locks.request("rill-tab-" + data.tabId, () => drop());
    } else if (data.op === "subscribe") {
      subscriptions.add(data.chatId);
      subscribe(data.chatId, port);
    } else if (data.op === "unsubscribe") {
      subscriptions.delete(data.chatId);
      unsubscribe(data.chatId, port);
    } else if (data.op === "restart") {
      chats.get(data.chatId)?.stream.restart();
    } else if (data.op === "bye") {
      drop();
    }
  };
  function drop() {
    for (const chatId of subscriptions) unsubscribe(chatId, port);
    subscriptions.clear();
  }
  port.start();
};

function subscribe(chatId, port) {
  let chat = chats.get(chatId);
  if (!chat) {
    chat = { ports: new Set(), state: "connecting", current: null, linger: null, stream: null };
    chats.set(chatId, chat);
    chat.stream = new ChatStream(client, chatId, {
      onEvent: (type, data, id) => onEvent(chat, chatId, type, data, id),
      onState: (state, detail) => {
        chat.state = state;
        broadcast(chat, { chatId, kind: "state", state, detail: detail ? String(detail.message || detail) : "" });
      },
      onOpen: (resumed) => {
        if (chat.current) dropIfFinished(chat, chatId, chat.current);
        broadcast(chat, { chatId, kind: "open", resumed });
      },
    });
  }
  clearTimeout(chat.linger);
  // A stream that gave up (signed out, say) tries again for a tab that asks anew.
  if (chat.state === "failed") chat.stream.restart();
  chat.ports.add(port);
  port.postMessage({ chatId, kind: "state", state: chat.state });
  // With the id of the last event the copy reflects, so the tab skips anything up to it.
  if (chat.current) port.postMessage({ chatId, kind: "event", type: "snapshot", data: { ...chat.current }, id: chat.current.at });
}

function unsubscribe(chatId, port) {
  const chat = chats.get(chatId);
  if (!chat) return;
  chat.ports.delete(port);
  if (chat.ports.size === 0) {
    // Keep the stream a moment: a reload or a quick switch back should not reopen it.
    clearTimeout(chat.linger);
    chat.linger = setTimeout(() => {
      if (chat.ports.size) return;
      chat.stream.close();
      chats.delete(chatId);
    }, 3000);
  }
}

/** Tracks the running generation (one per chat at most) and forwards the event. */
function onEvent(chat, chatId, type, data, id) {
  const cur = chat.current;
  if (type === "message.created" && data.role === "assistant" && data.status === "streaming") {
    chat.current = { ...data, at: id || "" };
  } else if (type === "snapshot") {
    chat.current = data.status === "streaming" ? { ...data, at: id || "" } : null;
  } else if (type.startsWith("message.") && type !== "message.created" && type !== "message.completed" && cur && cur.id === data.message_id) {
    // Every part event keeps the held copy whole (reasoning, tool calls, text alike).
    if (!applyToMessage(cur, type, data, id)) chat.current = null;
  } else if (type === "message.completed" && cur && cur.id === data.message_id) {
    chat.current = null;
  } else if (type === "reset") {
    // Positions are lost: what we hold may have a gap. Start over; the server sends a snapshot.
    chat.current = null;
    broadcast(chat, { chatId, kind: "event", type, data, id });
    chat.stream.restart();
    return;
  }
  broadcast(chat, { chatId, kind: "event", type, data, id });
}

/**
 * After a reconnection the server may not have replayed exactly (after a restart it cannot): a
 * generation we were following may have ended unseen. Ask the server what runs now.
 */
async function dropIfFinished(chat, chatId, held) {
  try {
    const info = await client.chat(chatId);
    if (chat.current === held && info.generating !== held.id) chat.current = null;
  } catch {
    // Unknown: keep it; a snapshot or the next generation replaces it.
  }
}

function broadcast(chat, message) {
  for (const port of chat.ports) port.postMessage(message);
}
