// rill.js: a small client for rill's chat API, with no dependencies. Copy it into any frontend.
//
//   import { RillClient, ChatStream } from "./rill.js";
//   const rill = new RillClient();                         // same origin; cookie auth if any
//   const chat = await rill.createChat("demo");
//   const stream = new ChatStream(rill, chat.id, {
//     onEvent: (type, data, id) => console.log(type, data),  // message.created, message.delta, ...
//     onState: (state) => console.log(state),                // connecting, live, reconnecting, offline
//     onOpen: (resumed) => {},                               // after every (re)connection
//   });
//   await rill.send(chat.id, "Hello!");                      // 202; the answer arrives on the stream
//
// fetch does the requests (cookies go along same-origin, so auth mode `jwt` with the
// `rill_token` cookie works unchanged); EventSource follows the chat's event stream. Nothing here
// touches the DOM, so it also runs in a worker.

/** An error answered by the API: `{"error":{"code","message"}}` plus the HTTP status. */
export class RillError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "RillError";
    this.status = status;
    this.code = code;
  }
}

/** The chat API over fetch. `base` is the server's origin ("" for the page's own). */
export class RillClient {
  constructor(base = "") {
    this.base = base;
  }

  async request(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.base + path, init);
    } catch (e) {
      throw new RillError(0, "network", "the server cannot be reached");
    }
    if (response.status === 204) return null;
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      const err = (json && json.error) || {};
      throw new RillError(response.status, err.code || "http_" + response.status, err.message || response.statusText);
    }
    return json;
  }

  bots() {
    return this.request("GET", "/api/bots").then((r) => r.bots);
  }
  createChat(bot) {
    return this.request("POST", "/api/chats", { bot });
  }
  /** `{chats: [...newest first], next_before}`. */
  listChats({ bot, before, limit } = {}) {
    return this.request("GET", "/api/chats" + query({ bot, before, limit }));
  }
  /** The chat plus `generating`: the id of the message being generated, or null. */
  chat(id) {
    return this.request("GET", `/api/chats/${enc(id)}`);
  }
  deleteChat(id) {
    return this.request("DELETE", `/api/chats/${enc(id)}`);
  }
  /** `{messages: [oldest → newest], next_before}`: pass `next_before` back as `before` for the page before. */
  messages(chatId, { before, limit } = {}) {
    return this.request("GET", `/api/chats/${enc(chatId)}/messages` + query({ before, limit }));
  }
  /** 202 `{user_message, assistant_message, events_url}`; the answer streams on the chat's events. */
  send(chatId, content) {
    return this.request("POST", `/api/chats/${enc(chatId)}/messages`, { content });
  }
  /** Answers the last user message again, as a new assistant message (same answer as `send`). */
  regenerate(chatId) {
    return this.request("POST", `/api/chats/${enc(chatId)}/regenerate`);
  }
  /** Stops the running generation: `{message}` with the text so far, status `stopped`. */
  stop(chatId) {
    return this.request("POST", `/api/chats/${enc(chatId)}/stop`);
  }
  /** A single-use ticket that opens one event stream, so no long-lived token sits in a URL. */
  ticket(chatId) {
    return this.request("POST", `/api/chats/${enc(chatId)}/ticket`);
  }
  eventsUrl(chatId, { ticket, lastEventId } = {}) {
    return `${this.base}/api/chats/${enc(chatId)}/events` + query({ ticket, last_event_id: lastEventId });
  }
}

/** The event names of a chat stream (docs/api.md has each one's data). */
export const CHAT_EVENTS = [
  "message.created",
  "message.part",
  "message.delta",
  "message.reasoning.delta",
  "message.tool_input.delta",
  "message.part.done",
  "message.tool_result",
  "message.completed",
  "snapshot",
  "error",
  "reset",
  "chat.deleted",
];

/**
 * Where event id `id` stands in its chat's stream: `{ stream, offset }`, or null for an id that is
 * not a chat stream's (none at all, or another server's). A chat stream has one topic, so its ids
 * are `<epoch>.<topics hash>.<offset>`; only ids of the same `stream` (epoch and topic set) can be
 * compared. The page is served with the server it talks to, so it may know this format.
 */
export function eventPosition(id) {
  if (typeof id !== "string") return null;
  const at = id.lastIndexOf(".");
  const offset = id.slice(at + 1);
  if (at <= 0 || !/^[1-9][0-9]{0,19}$/.test(offset)) return null;
  return { stream: id.slice(0, at), offset };
}

/** Whether event id `id` comes at or before id `seen` in the same stream (decimal offsets). */
export function seenAlready(seen, id) {
  const a = eventPosition(seen);
  const b = eventPosition(id);
  if (!a || !b || a.stream !== b.stream) return false;
  return b.offset.length < a.offset.length || (b.offset.length === a.offset.length && b.offset <= a.offset);
}

/**
 * Applies one chat event to a message `m` (`{content, parts, status, ...}`), as the server's
 * engine does: a part starts, grows by deltas, ends; text deltas also grow `content`.
 * Returns false when the event does not fit (a part that does not exist): reload the message.
 *
 * `id` is the event's id. A delta carries no offset into its part, so appending one twice would
 * double its text: `m.at` remembers the id of the last event the message reflects (set it to a
 * `snapshot`'s id when replacing the message), and an event at or before it is skipped. Events
 * reach a page by more than one road (a stream and its replay after a reconnection, a snapshot
 * and the live events after it, the shared worker's copy), so this holds whatever the order.
 */
export function applyToMessage(m, type, data, id) {
  if (id && m.at && seenAlready(m.at, id)) return true; // seen already
  const fits = applyEvent(m, type, data);
  if (fits && eventPosition(id)) m.at = id;
  return fits;
}

function applyEvent(m, type, data) {
  m.parts ||= m.content ? [{ type: "text", text: m.content }] : [];
  const part = m.parts[data.part];
  switch (type) {
    case "message.part": {
      if (data.part < m.parts.length) return true; // seen already
      if (data.part > m.parts.length) return false;
      const { message_id, part: _index, ...value } = data;
      m.parts.push(value);
      if (value.type === "text") m.content += value.text || "";
      return true;
    }
    case "message.delta":
      if (!part && m.parts.length === 0 && !data.part) {
        m.parts.push({ type: "text", text: "" }); // a server from before parts
        return applyEvent(m, type, data);
      }
      if (!part || part.type !== "text") return false;
      part.text += data.text;
      m.content += data.text;
      return true;
    case "message.reasoning.delta":
      if (!part || part.type !== "reasoning") return false;
      part.text += data.text;
      return true;
    case "message.tool_input.delta":
      if (!part || part.type !== "tool_call") return false;
      part.input_text += data.text;
      return true;
    case "message.part.done":
      if (!part) return false;
      part.done = true;
      if (data.signature) part.signature = data.signature;
      if ("input" in data) part.input = data.input;
      return true;
    case "message.tool_result":
      if (!part || part.type !== "tool_call") return false;
      if ("output" in data) part.output = data.output;
      if ("error" in data) part.error = data.error;
      return true;
    default:
      return true;
  }
}

/**
 * Follows one chat's event stream, resuming after every drop from the last event id it saw.
 *
 * The browser's own EventSource reconnection would reuse the URL, and a ticket opens one stream
 * only; so on any error this closes the EventSource and opens a new one with a fresh ticket and
 * `last_event_id` (the id the browser handed us), with a capped, jittered backoff.
 */
export class ChatStream {
  constructor(client, chatId, { onEvent, onState, onOpen } = {}) {
    this.client = client;
    this.chatId = chatId;
    this.onEvent = onEvent || (() => {});
    this.onState = onState || (() => {});
    this.onOpen = onOpen || (() => {});
    this.lastEventId = "";
    this.state = "";
    this.attempt = 0;
    this.opened = false;
    this.closed = false;
    this.es = null;
    this.timer = null;
    this.connects = 0; // connect() calls so far: the newest one wins
    this.online = () => this.retryNow();
    this.offline = () => this.setState("offline");
    globalThis.addEventListener?.("online", this.online);
    globalThis.addEventListener?.("offline", this.offline);
    this.connect();
  }

  setState(state, detail) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state, detail);
  }

  async connect() {
    if (this.closed) return;
    // Connecting waits for a ticket; a retryNow() or restart() meanwhile starts another connect().
    // Only the newest may open an EventSource: two open at once would hand every event over twice.
    const attempt = ++this.connects;
    this.setState(offline() ? "offline" : this.opened ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = (await this.client.ticket(this.chatId)).ticket;
    } catch (e) {
      if (this.closed || attempt !== this.connects) return;
      // 401/403/404 will not heal by retrying: the chat is gone or we are signed out.
      if (e.status === 401 || e.status === 403 || e.status === 404) {
        this.setState("failed", e);
        return;
      }
      return this.retryLater();
    }
    if (this.closed || attempt !== this.connects) return;
    if (this.es) this.es.close();
    const es = new EventSource(this.client.eventsUrl(this.chatId, { ticket, lastEventId: this.lastEventId }));
    this.es = es;
    es.onopen = () => {
      const resumed = this.opened && this.lastEventId !== "";
      this.opened = true;
      this.attempt = 0;
      this.setState("live");
      this.onOpen(resumed);
    };
    es.onerror = (e) => {
      // A server-sent `event: error` is a MessageEvent with data; anything else is the connection.
      if (e instanceof MessageEvent) return;
      es.close();
      if (this.es === es) this.retryLater();
    };
    for (const type of CHAT_EVENTS) {
      es.addEventListener(type, (e) => {
        if (!(e instanceof MessageEvent)) return;
        if (e.lastEventId) this.lastEventId = e.lastEventId;
        let data = null;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        if (type === "error" && data && data.reconnect && !data.message_id) {
          // The server ends the stream (shutdown, maximum duration) and asks us to come back:
          // reconnect without waiting for the drop.
          es.close();
          if (this.es === es) this.retryLater(true);
          return;
        }
        this.onEvent(type, data, e.lastEventId);
      });
    }
  }

  retryLater(soon = false) {
    if (this.closed) return;
    this.es = null;
    this.setState(offline() ? "offline" : this.opened ? "reconnecting" : "connecting");
    const base = soon ? 100 : Math.min(5000, 500 * 2 ** Math.min(this.attempt, 4));
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), base / 2 + Math.random() * base);
  }

  /** Back online: try at once rather than when the backoff ends. */
  retryNow() {
    if (this.closed || this.es) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  /** Starts over without a last event id: the server answers with a `snapshot` of a running generation. */
  restart() {
    this.lastEventId = "";
    if (this.es) this.es.close();
    this.es = null;
    clearTimeout(this.timer);
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    this.es = null;
    globalThis.removeEventListener?.("online", this.online);
    globalThis.removeEventListener?.("offline", this.offline);
  }
}

function offline() {
  return globalThis.navigator && navigator.onLine === false;
}

function enc(s) {
  return encodeURIComponent(s);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? "?" + s : "";
}
