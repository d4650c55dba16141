// The chat page: bots, chats, a streaming message list, the composer. Talks to rill through
// rill.js (fetch) and streams.js (the chat's event stream, shared by every tab).
//
// How history and live events meet without gaps or duplicates: every message lives once in
// `view.messages`, keyed by id. A message with a final status (complete, stopped, error,
// interrupted) never changes again. A streaming message's text is "synced" once it comes from
// the event stream (`message.created`, `snapshot`, then deltas appended); history pages only
// fill in what the stream has not told us, because a stored checkpoint may be older than the
// stream. After every (re)connection the newest page is merged again, which catches anything
// that ended while we were away. A message also keeps the id of the last event it reflects
// (`at`), so an event handed over again (a replay overlapping what we have) is not applied twice.

import { RillClient, RillError, applyToMessage } from "./rill.js";
import { renderMarkdown } from "./markdown.js";
import { followChat, streamMode } from "./streams.js";

const rill = new RillClient();
const FINAL = new Set(["complete", "stopped", "error", "interrupted"]);
const PART_EVENTS = new Set(["message.part", "message.delta", "message.reasoning.delta", "message.tool_input.delta", "message.part.done", "message.tool_result"]);
const PAGE = 20;
const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  botSelect: $("bot-select"),
  botInfo: $("bot-info"),
  conn: $("conn"),
  connText: $("conn-text"),
  theme: $("theme-toggle"),
  menu: $("menu-toggle"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  newChat: $("new-chat"),
  chatList: $("chat-list"),
  moreChats: $("more-chats"),
  scroller: $("messages"),
  edge: $("history-edge"),
  loading: $("loading"),
  historyStart: $("history-start"),
  log: $("log"),
  empty: $("empty"),
  emptyBot: $("empty-bot"),
  notice: $("notice"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send"),
  stop: $("stop"),
  generating: $("generating"),
};

const app = {
  bots: [],
  botId: "",
  chats: [],
  chatsNext: null,
  view: null, // the open chat, see openChat()
};
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("rill-chats") : null;

// ---- theme -------------------------------------------------------------------------------------

function effectiveTheme() {
  return document.documentElement.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}
function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const next = effectiveTheme() === "dark" ? "light" : "dark";
  ui.theme.setAttribute("aria-label", `Switch to ${next} theme`);
  ui.theme.title = `Switch to ${next} theme`;
}
applyTheme(localStorage.getItem("rill-theme") || "");
ui.theme.addEventListener("click", () => {
  const next = effectiveTheme() === "dark" ? "light" : "dark";
  localStorage.setItem("rill-theme", next);
  applyTheme(next);
});

// ---- small helpers -----------------------------------------------------------------------------

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

function describe(error) {
  if (!(error instanceof RillError)) return String(error);
  if (error.status === 401) return "Sign-in required: this server needs a token in the rill_token cookie.";
  if (error.code === "network") return "The server cannot be reached.";
  return error.message;
}

function setConn(state) {
  const text = { connecting: "connecting", live: "live", reconnecting: "reconnecting", offline: "offline", failed: "disconnected", idle: "ready" };
  ui.conn.dataset.state = state;
  ui.connText.textContent = text[state] || state;
}

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { bot: p.get("bot") || "", chat: p.get("chat") || "" };
}
function writeHash() {
  const p = new URLSearchParams();
  if (app.botId) p.set("bot", app.botId);
  if (app.view?.chatId) p.set("chat", app.view.chatId);
  const hash = "#" + p.toString();
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

/** "today", "yesterday" or the date: enough to find a chat, and calm in a list. */
function day(ms) {
  const date = new Date(ms);
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  if (date >= midnight) return "today";
  if (date >= new Date(midnight.getTime() - 86_400_000)) return "yesterday";
  return date.toLocaleDateString([], { dateStyle: "medium" });
}

function botName(id) {
  return app.bots.find((b) => b.id === id)?.name || id || "Bot";
}

// ---- bots and the chat list ------------------------------------------------------------------

async function loadBots() {
  app.bots = await rill.bots();
  ui.botSelect.replaceChildren(
    ...app.bots.map((b) => {
      const o = document.createElement("option");
      o.value = b.id;
      o.textContent = b.name || b.id;
      return o;
    }),
  );
}

function selectBot(id) {
  app.botId = app.bots.some((b) => b.id === id) ? id : app.bots[0]?.id || "";
  ui.botSelect.value = app.botId;
  const bot = app.bots.find((b) => b.id === app.botId);
  ui.botInfo.textContent = bot ? `${bot.provider} · ${bot.model}` : "";
  ui.emptyBot.textContent = bot ? bot.description || `${bot.name} (${bot.model})` : "No bot is configured.";
}

async function loadChats(more = false) {
  const bot = app.botId;
  const page = await rill.listChats({ bot, before: more ? app.chatsNext : undefined, limit: 30 });
  if (bot !== app.botId) return;
  app.chats = more ? app.chats.concat(page.chats.filter((c) => !app.chats.some((x) => x.id === c.id))) : page.chats;
  app.chatsNext = page.next_before;
  renderChats();
}

function renderChats() {
  const items = app.chats.map((chat) => {
    const li = document.createElement("li");
    li.className = "chat-item";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "chat-link";
    open.dataset.chatId = chat.id;
    const title = document.createElement("span");
    title.className = "chat-title";
    title.textContent = chat.title || "New chat";
    const when = document.createElement("span");
    when.className = "chat-when";
    when.textContent = day(chat.updated_at_ms);
    when.title = new Date(chat.updated_at_ms).toLocaleString();
    open.append(title, when);
    if (app.view?.chatId === chat.id) open.setAttribute("aria-current", "page");
    open.addEventListener("click", () => {
      closeMenu();
      openChat(chat.id);
    });
    const del = document.createElement("button");
    del.type = "button";
    del.className = "chat-delete";
    del.textContent = "✕";
    del.setAttribute("aria-label", `Delete chat ${chat.title || "New chat"}`);
    del.addEventListener("click", () => deleteChat(chat, del));
    li.append(open, del);
    return li;
  });
  ui.chatList.replaceChildren(...items);
  ui.moreChats.hidden = !app.chatsNext;
}

async function deleteChat(chat, button) {
  // Two clicks: no blocking confirm() dialog, and nothing is lost to a stray click.
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Delete?";
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = "✕";
    }, 3000);
    return;
  }
  try {
    await rill.deleteChat(chat.id);
  } catch (e) {
    if (!(e instanceof RillError && e.status === 404)) return showNotice(describe(e));
  }
  app.chats = app.chats.filter((c) => c.id !== chat.id);
  renderChats();
  channel?.postMessage({ type: "chats", bot: app.botId });
  if (app.view?.chatId === chat.id) openChat(app.chats[0]?.id || "");
}

// ---- the open chat -----------------------------------------------------------------------------

/** Opens chat `chatId` ("" for a new, not yet created chat). */
async function openChat(chatId) {
  app.view?.follow?.close();
  const view = {
    chatId,
    messages: new Map(), // id → message (plus `synced`)
    order: [], // ids, oldest first
    nodes: new Map(), // id → <article>
    dirty: new Set(),
    nextBefore: null,
    loadingOlder: false,
    ready: false,
    buffer: [], // live events that arrived before the first page
    follow: null,
    retryId: null, // the message that shows the Retry button
    reorder: false, // `order` needs sorting before the next render
  };
  app.view = view;
  ui.log.replaceChildren();
  ui.historyStart.hidden = true;
  showNotice("");
  writeHash();
  renderChats();
  updateComposer();
  if (!chatId) {
    ui.empty.hidden = false;
    setConn("idle");
    ui.input.focus();
    return;
  }
  ui.empty.hidden = true;
  // Follow first, then read history: nothing published in between can be missed.
  view.follow = followChat(chatId, {
    onEvent: (type, data, id) => {
      if (app.view !== view) return;
      if (view.ready) apply(view, type, data, id);
      else view.buffer.push([type, data, id]);
    },
    onState: (state, detail) => {
      if (app.view !== view) return;
      view.conn = state;
      setConn(navigator.onLine === false ? "offline" : state);
      if (state === "failed") showNotice(detail || "This chat cannot be followed.");
    },
    onOpen: () => {
      if (app.view === view && view.ready) reloadTail(view);
    },
  });
  ui.loading.hidden = false;
  try {
    const page = await rill.messages(chatId, { limit: PAGE });
    if (app.view !== view) return;
    mergePage(view, page.messages);
    view.nextBefore = page.next_before;
  } catch (e) {
    if (app.view !== view) return;
    ui.loading.hidden = true;
    showNotice(describe(e));
    return;
  }
  ui.loading.hidden = true;
  view.ready = true;
  for (const [type, data, id] of view.buffer.splice(0)) apply(view, type, data, id);
  ui.historyStart.hidden = view.nextBefore !== null;
  flush(view, true);
  updateComposer();
  maybeLoadOlder();
}

async function reloadTail(view) {
  try {
    const page = await rill.messages(view.chatId, { limit: PAGE });
    if (app.view === view) mergePage(view, page.messages);
  } catch {
    // The stream's next (re)connection tries again.
  }
}

async function loadOlder() {
  const view = app.view;
  if (!view || !view.ready || view.loadingOlder || !view.nextBefore) return;
  view.loadingOlder = true;
  ui.loading.hidden = false;
  try {
    const page = await rill.messages(view.chatId, { before: view.nextBefore, limit: PAGE });
    if (app.view !== view) return;
    // Keep what the reader sees in place while a page lands above it.
    const { scrollHeight, scrollTop } = ui.scroller;
    mergePage(view, page.messages);
    flush(view, false);
    ui.scroller.scrollTop = scrollTop + (ui.scroller.scrollHeight - scrollHeight);
    view.nextBefore = page.next_before;
    ui.historyStart.hidden = view.nextBefore !== null;
  } catch (e) {
    showNotice(describe(e));
  } finally {
    view.loadingOlder = false;
    ui.loading.hidden = true;
  }
  maybeLoadOlder();
}

/** Loads another page while the top of the history is in sight (a short page cannot scroll). */
function maybeLoadOlder() {
  const view = app.view;
  if (view && view.ready && view.nextBefore && ui.scroller.scrollTop < 120) loadOlder();
}
new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && loadOlder(), {
  root: ui.scroller,
  rootMargin: "120px 0px 0px 0px",
}).observe(ui.edge);

// ---- merging messages --------------------------------------------------------------------------

/** Merges a page of history (or a message from an API answer) into the view. */
function mergePage(view, messages) {
  const fresh = [];
  for (const m of messages) {
    const have = view.messages.get(m.id);
    if (!have) {
      view.messages.set(m.id, { ...m, synced: false });
      fresh.push(m.id);
    } else if (FINAL.has(m.status) && !FINAL.has(have.status)) {
      if (have.created_at_ms !== m.created_at_ms) view.reorder = true;
      Object.assign(have, m);
    } else if (!FINAL.has(have.status) && !have.synced && progress(m) > progress(have)) {
      // A newer checkpoint of a message the stream has not synced yet.
      have.content = m.content;
      have.parts = m.parts;
    } else if (have.created_at_ms === Number.MAX_SAFE_INTEGER) {
      have.created_at_ms = m.created_at_ms; // a placeholder learns its place
      view.reorder = true;
    } else continue;
    view.dirty.add(m.id);
  }
  if (fresh.length) {
    view.order.push(...fresh);
    view.reorder = true;
  }
  if (view.dirty.size || fresh.length) schedule(view);
}

/** How far a message has come: its characters in every part (for picking the newer copy). */
function progress(m) {
  let n = m.content.length;
  for (const p of m.parts || []) n += (p.text || "").length + (p.input_text || "").length + (p.url ? 1 : 0);
  return n;
}

/**
 * The order of messages: by creation time, a user message before the answer created in the same
 * millisecond. Sources interleave (pages, 202 answers, events, a delta for a message not yet
 * seen), so the list is sorted rather than trusted to arrive in order.
 */
function byCreation(view) {
  const key = (id) => view.messages.get(id);
  return (x, y) => {
    const a = key(x);
    const b = key(y);
    return a.created_at_ms - b.created_at_ms || (a.role === "user" ? 0 : 1) - (b.role === "user" ? 0 : 1);
  };
}

/**
 * Adds a message the stream (or a 202 answer) reports, or brings ours in line with it. `id` is
 * the event's id: the message reflects the stream up to there (see `applyToMessage`).
 */
function upsertLive(view, m, replace, id) {
  const have = view.messages.get(m.id);
  if (!have) {
    view.messages.set(m.id, { ...m, synced: true, at: id || "" });
    view.order.push(m.id);
    view.reorder = true;
  } else if (FINAL.has(have.status)) {
    return; // final is final
  } else if (replace || !have.synced) {
    if (have.created_at_ms !== m.created_at_ms) view.reorder = true;
    Object.assign(have, m, { synced: true, at: id || "" });
  } else {
    return;
  }
  view.dirty.add(m.id);
  schedule(view);
}

function apply(view, type, data, id) {
  if (type === "message.created") {
    upsertLive(view, data, false, id);
  } else if (type === "snapshot") {
    upsertLive(view, data, true, id); // the whole text so far: replace, never append
  } else if (PART_EVENTS.has(type)) {
    let m = view.messages.get(data.message_id);
    if (!m) {
      // Not seen yet: it is the newest message; `message.created` or a page fills in the rest.
      m = { id: data.message_id, chat_id: view.chatId, role: "assistant", content: "", parts: [], status: "streaming", created_at_ms: Number.MAX_SAFE_INTEGER, synced: true };
      view.messages.set(m.id, m);
      view.order.push(m.id);
      view.reorder = true;
    }
    if (FINAL.has(m.status)) return;
    const before = (m.parts || []).length;
    if (!applyToMessage(m, type, data, id)) return reloadTail(view);
    // When each part began and ended, for "Thought for 3 s".
    if (m.parts.length > before) m.parts[m.parts.length - 1].startedAt = Date.now();
    if (type === "message.part.done" && m.parts[data.part]) m.parts[data.part].endedAt = Date.now();
    view.dirty.add(m.id);
    schedule(view);
  } else if (type === "chat.deleted") {
    if (app.view === view) {
      app.chats = app.chats.filter((c) => c.id !== view.chatId);
      renderChats();
      openChat(app.chats[0]?.id || "");
    }
  } else if (type === "message.completed") {
    const m = view.messages.get(data.message_id);
    if (!m) return reloadTail(view);
    if (FINAL.has(m.status)) return;
    Object.assign(m, {
      status: data.status,
      finish_reason: data.finish_reason ?? null,
      usage: data.usage ?? null,
      error: data.error ?? m.error ?? null,
    });
    view.dirty.add(m.id);
    schedule(view);
    loadChats().catch(() => {}); // the title and the order may have changed
    channel?.postMessage({ type: "chats", bot: app.botId });
  } else if (type === "error") {
    const m = data.message_id && view.messages.get(data.message_id);
    if (m && !FINAL.has(m.status)) {
      m.error = data.message;
      view.dirty.add(m.id);
      schedule(view);
    } else if (!m) showNotice(data.message || "The stream reported an error.");
  } else if (type === "reset") {
    reloadTail(view);
  }
}

// ---- rendering ---------------------------------------------------------------------------------

let scheduled = false;
function schedule(view) {
  if (scheduled) return;
  scheduled = true;
  // rAF for smooth painting; the timer keeps tabs in the background up to date too.
  const run = () => {
    if (!scheduled) return;
    scheduled = false;
    if (app.view === view) flush(view, null);
  };
  requestAnimationFrame(run);
  setTimeout(run, 50);
}

/** Renders dirty messages; `stick`: true scrolls to the end, null keeps the end in view if it was. */
function flush(view, stick) {
  const s = ui.scroller;
  const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  if (view.reorder) {
    view.order.sort(byCreation(view));
    view.reorder = false;
  }
  // Place nodes in order (new ones are inserted where `order` says).
  let prev = null;
  for (const id of view.order) {
    let node = view.nodes.get(id);
    if (!node) {
      node = document.createElement("article");
      node.className = "msg";
      node.dataset.id = id;
      view.nodes.set(id, node);
      view.dirty.add(id);
    }
    const want = prev ? prev.nextSibling : ui.log.firstChild;
    if (want !== node) ui.log.insertBefore(node, want);
    prev = node;
  }
  // Only the last answer offers Retry: the one that showed it re-renders once a newer one exists.
  if (view.retryId && view.retryId !== lastAssistantId(view)) view.dirty.add(view.retryId);
  for (let round = 0; round < 3 && view.dirty.size; round++) {
    const ids = [...view.dirty];
    view.dirty.clear();
    for (const id of ids) renderMessage(view, id);
  }
  ui.empty.hidden = view.order.length > 0 || !view.ready;
  updateComposer();
  if (stick === true || (stick === null && atBottom)) s.scrollTop = s.scrollHeight;
}

function lastAssistantId(view) {
  for (let i = view.order.length - 1; i >= 0; i--) {
    const m = view.messages.get(view.order[i]);
    if (m.role === "assistant") return m.id;
  }
  return null;
}

function renderMessage(view, id) {
  const m = view.messages.get(id);
  const node = view.nodes.get(id);
  if (!m || !node) return;
  node.dataset.role = m.role;
  node.rillText = m.content; // the raw text, for tests and tools (a property: never parsed as HTML)
  node.rillParts = m.parts || []; // every part, likewise
  node.dataset.status = m.status;
  node.setAttribute("aria-busy", m.status === "streaming" ? "true" : "false");
  node.setAttribute("aria-label", m.role === "user" ? "You" : botName(m.bot_id || app.botId));
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = m.role === "user" ? "You" : botName(m.bot_id || app.botId);
  const body = document.createElement("div");
  body.className = "body";
  if (m.role === "assistant") {
    renderParts(body, m);
    if (m.status === "streaming") {
      const caret = document.createElement("span");
      caret.className = "caret";
      caret.setAttribute("aria-hidden", "true");
      const last = body.lastElementChild;
      const into = last?.classList.contains("text") ? last.lastElementChild || last : body;
      (into.nodeName === "P" ? into : body).append(caret);
    }
  } else {
    body.classList.add("plain");
    body.textContent = m.content;
  }
  const parts = [who, body];
  if (m.role === "assistant" && m.status !== "streaming" && m.status !== "complete") {
    const foot = document.createElement("div");
    foot.className = "status-line";
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = { stopped: "Stopped", error: "Error", interrupted: "Interrupted" }[m.status] || m.status;
    foot.append(badge);
    const why = m.error || { stopped: "Generation was stopped.", interrupted: "The server restarted before this answer was finished." }[m.status];
    if (why) {
      const t = document.createElement("span");
      t.className = "why";
      t.textContent = why;
      foot.append(t);
    }
    if (id === lastAssistantId(view)) {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "retry";
      retry.textContent = "Retry";
      retry.addEventListener("click", () => regenerate(view));
      foot.append(retry);
    }
    parts.push(foot);
  }
  node.replaceChildren(...parts);
  if (node.querySelector(".retry")) view.retryId = id;
  else if (view.retryId === id) view.retryId = null;
}

/**
 * An answer's parts, in order: reasoning as a collapsible "Thinking" section (open while it
 * streams, with the time it took), tool calls as compact cards (name, arguments, result),
 * sources as links, text as Markdown. Everything is built as DOM nodes, never from HTML.
 */
function renderParts(body, m) {
  const parts = m.parts && m.parts.length ? m.parts : m.content ? [{ type: "text", text: m.content }] : [];
  const streaming = m.status === "streaming";
  let sources = null;
  parts.forEach((part, i) => {
    const open = streaming && i === parts.length - 1 && !part.done;
    if (part.type !== "source") sources = null;
    if (part.type === "text") {
      const div = document.createElement("div");
      div.className = "text";
      div.append(renderMarkdown(part.text));
      body.append(div);
    } else if (part.type === "reasoning") {
      const details = document.createElement("details");
      details.className = "thinking";
      details.dataset.part = String(i);
      // Open while it streams, closed once done, unless the reader opened or closed it.
      details.open = part.pinned ?? open;
      const summary = document.createElement("summary");
      summary.addEventListener("click", () => {
        part.pinned = !details.open; // the state the click toggles to
      });
      const secs = part.startedAt && (part.endedAt || Date.now()) - part.startedAt;
      summary.textContent = part.redacted
        ? "Thinking (hidden by the provider)"
        : open
          ? `Thinking${secs ? ` · ${Math.round(secs / 1000)} s` : "…"}`
          : secs
            ? `Thought for ${Math.max(1, Math.round(secs / 1000))} s`
            : "Thoughts";
      const text = document.createElement("div");
      text.className = "reasoning-text";
      text.textContent = part.text || "";
      details.append(summary, text);
      body.append(details);
    } else if (part.type === "tool_call") {
      const card = document.createElement("div");
      card.className = "tool-card";
      card.dataset.state = part.error ? "error" : part.output !== undefined ? "done" : "running";
      const head = document.createElement("div");
      head.className = "tool-head";
      const name = document.createElement("code");
      name.textContent = part.name;
      head.append("Tool ", name);
      const args = document.createElement("pre");
      args.className = "tool-args";
      args.textContent = part.input !== undefined ? JSON.stringify(part.input) : part.input_text || "";
      card.append(head, args);
      if (part.output !== undefined || part.error) {
        const result = document.createElement("pre");
        result.className = "tool-result";
        result.textContent = part.error ? `error: ${part.error}` : typeof part.output === "string" ? part.output : JSON.stringify(part.output);
        card.append(result);
      }
      body.append(card);
    } else if (part.type === "source") {
      if (!sources) {
        sources = document.createElement("div");
        sources.className = "sources";
        body.append(sources);
      }
      const safe = /^https?:\/\//i.test(part.url || "");
      const link = document.createElement(safe ? "a" : "span");
      if (safe) {
        link.href = part.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
      }
      link.className = "source";
      link.textContent = part.title || part.url;
      sources.append(link);
    }
  });
}

// ---- composing ---------------------------------------------------------------------------------

function generating(view) {
  if (!view) return false;
  for (let i = view.order.length - 1; i >= Math.max(0, view.order.length - 4); i--) {
    if (view.messages.get(view.order[i]).status === "streaming") return true;
  }
  return false;
}

function updateComposer() {
  const busy = generating(app.view);
  const hadFocus = document.activeElement === ui.input;
  ui.input.disabled = busy;
  ui.send.disabled = busy || !app.botId;
  ui.stop.hidden = !busy;
  ui.generating.hidden = !busy;
  ui.app.dataset.generating = busy ? "true" : "false";
  if (!busy && ui.input.dataset.wantFocus === "1") {
    ui.input.dataset.wantFocus = "";
    ui.input.focus();
  }
  if (busy && hadFocus) ui.input.dataset.wantFocus = "1";
}

async function send() {
  const content = ui.input.value;
  if (!content.trim() || !app.botId) return;
  showNotice("");
  let view = app.view;
  try {
    if (!view?.chatId) {
      const chat = await rill.createChat(app.botId);
      app.chats.unshift(chat);
      channel?.postMessage({ type: "chats", bot: app.botId });
      await openChat(chat.id);
      view = app.view;
    }
    ui.input.dataset.wantFocus = "1";
    const sent = await rill.send(view.chatId, content);
    ui.input.value = "";
    autosize();
    if (app.view === view) {
      upsertLive(view, sent.user_message, false);
      upsertLive(view, sent.assistant_message, false);
      flush(view, true);
    }
  } catch (e) {
    if (e instanceof RillError && e.code === "generation_running") {
      showNotice("An answer is still being written. Wait for it, or press Stop.");
    } else showNotice(describe(e));
  }
}

async function regenerate(view) {
  showNotice("");
  try {
    const sent = await rill.regenerate(view.chatId);
    if (app.view === view) {
      upsertLive(view, sent.assistant_message, false);
      flush(view, true);
    }
  } catch (e) {
    showNotice(e instanceof RillError && e.code === "generation_running" ? "An answer is already being written." : describe(e));
  }
}

async function stop() {
  const view = app.view;
  if (!view?.chatId) return;
  try {
    const { message } = await rill.stop(view.chatId);
    if (app.view === view && message) mergePage(view, [message]);
  } catch (e) {
    if (!(e instanceof RillError && e.status === 409)) showNotice(describe(e)); // 409: it had already ended
  }
}

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = Math.min(ui.input.scrollHeight, 200) + "px";
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
ui.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.input.addEventListener("input", autosize);
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", () => {
  closeMenu();
  openChat("");
});
ui.moreChats.addEventListener("click", () => loadChats(true).catch((e) => showNotice(describe(e))));
ui.botSelect.addEventListener("change", async () => {
  selectBot(ui.botSelect.value);
  await loadChats().catch((e) => showNotice(describe(e)));
  openChat(app.chats[0]?.id || "");
});
ui.scroller.addEventListener("scroll", () => {
  if (ui.scroller.scrollTop < 120) loadOlder();
});

// The phone layout's chat drawer.
function closeMenu() {
  ui.app.dataset.menu = "closed";
  ui.menu.setAttribute("aria-expanded", "false");
  ui.scrim.hidden = true;
}
ui.menu.addEventListener("click", () => {
  const open = ui.app.dataset.menu !== "open";
  ui.app.dataset.menu = open ? "open" : "closed";
  ui.menu.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
  if (open) ui.newChat.focus();
});
ui.scrim.addEventListener("click", closeMenu);
addEventListener("keydown", (e) => e.key === "Escape" && ui.app.dataset.menu === "open" && (closeMenu(), ui.menu.focus()));

addEventListener("offline", () => app.view?.chatId && setConn("offline"));
addEventListener("online", () => app.view?.chatId && setConn(app.view.conn || "connecting"));
channel?.addEventListener("message", ({ data }) => {
  if (data.type === "chats" && data.bot === app.botId) loadChats().catch(() => {});
});

// ---- start -------------------------------------------------------------------------------------

async function start() {
  ui.app.dataset.streams = streamMode();
  setConn("idle");
  try {
    await loadBots();
    const want = readHash();
    selectBot(want.bot);
    await loadChats();
    // Someone quick may have sent a first message (and so opened its new chat) meanwhile.
    if (!app.view) await openChat(want.chat || app.chats[0]?.id || "");
  } catch (e) {
    showNotice(describe(e));
    setConn("failed");
  }
}
start();
