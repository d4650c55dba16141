// Helpers of the AI SDK tests: start `rill serve` (from RILL_BIN) on a port it picks itself, mint
// tokens with `rill token`, load either major of the real `ai` package, drive its `Chat` machinery
// (AbstractChat + DefaultChatTransport: what `useChat` runs) from Node, and clean up at exit.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const RILL_BIN = process.env.RILL_BIN || path.join(ROOT, "target/debug/rill");

/** The two majors of `ai` under test, installed side by side as `ai6` and `ai7`. */
export const MAJORS = [6, 7];

/** The `ai` package of a major, and its test helpers (`ai/test`). */
export async function loadAi(major) {
  const ai = await import(`ai${major}`);
  const test = await import(`ai${major}/test`);
  const version = (await import(`ai${major}/package.json`, { with: { type: "json" } })).default.version;
  return { ...ai, test, version };
}

const children = new Set();
const tempDirs = new Set();

function cleanup() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}
process.on("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    cleanup();
    process.exit(130);
  });
}

/** A temporary directory removed when the process exits. */
export function tempDir(prefix = "rill-ai-sdk-") {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Starts `rill serve --listen 127.0.0.1:0` on a fresh SQLite file with `args` (and `env` added),
 * optionally with a TOML `config` text; resolves once it logs "rill is listening".
 */
export async function startRill({ args = [], env = {}, config, timeoutMs = 30_000 } = {}) {
  const dir = tempDir("rill-serve-");
  const dbPath = path.join(dir, "rill.db");
  const extra = [];
  if (config) {
    const configPath = path.join(dir, "rill.toml");
    writeFileSync(configPath, config);
    extra.push("--config", configPath);
  }
  const child = spawn(
    RILL_BIN,
    ["serve", "--listen", "127.0.0.1:0", "--database", `sqlite://${dbPath}?mode=rwc`, ...extra, ...args],
    { env: { ...process.env, NO_COLOR: "1", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.add(child);
  let output = "";
  const onData = (chunk) => {
    output += chunk.toString("utf8");
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rill did not start in ${timeoutMs} ms:\n${output}`)), timeoutMs);
    const check = () => {
      const line = output.replace(ANSI, "").split("\n").find((l) => l.includes("rill is listening"));
      const match = line && /address=(\S+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", check);
    child.stderr.on("data", check);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`rill exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  return {
    base: `http://${address}`,
    logs: () => output,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
      children.delete(child);
    },
  };
}

/** Mints a development token with `rill token` (the secret goes by environment, not argv). */
export async function mintToken({ secret, sub, ttl = "10m" }) {
  const { stdout } = await promisify(execFile)(RILL_BIN, ["token", "--sub", sub, "--ttl", ttl], {
    env: { ...process.env, RILL_JWT_SECRET: secret },
    timeout: 10_000,
  });
  return stdout.trim();
}

/** A JSON request to rill: { status, json, text, headers }. */
export async function api(base, method, p, { body, headers = {} } = {}) {
  const res = await fetch(base + p, {
    method,
    headers: { Accept: "application/json", ...(body ? { "Content-Type": "application/json" } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  return { status: res.status, json, text, headers: res.headers };
}

/** The stored history of a chat as UIMessages (GET /api/ai-sdk/chat/{id}/messages). */
export async function storedUiMessages(base, chatId, headers = {}) {
  const r = await api(base, "GET", `/api/ai-sdk/chat/${encodeURIComponent(chatId)}/messages`, { headers });
  if (r.status !== 200) throw new Error(`messages: ${r.status} ${r.text}`);
  return r.json.messages;
}

/** A UIMessage as JSON carries it (undefined fields dropped), for deep comparisons. */
export const plain = (value) => JSON.parse(JSON.stringify(value));

/**
 * `useChat` without React: the `ai` package's AbstractChat with a plain state holder (what
 * `@ai-sdk/react` adds is only the React store). Records onError / onFinish calls.
 */
export function makeChat(ai, { id, api: url, headers, body, messages = [] }) {
  class State {
    status = "ready";
    error = undefined;
    messages = messages;
    pushMessage = (m) => (this.messages = this.messages.concat(m));
    popMessage = () => (this.messages = this.messages.slice(0, -1));
    replaceMessage = (i, m) => (this.messages = [...this.messages.slice(0, i), structuredClone(m), ...this.messages.slice(i + 1)]);
    snapshot = (v) => (v == null ? v : structuredClone(v));
  }
  class NodeChat extends ai.AbstractChat {
    constructor(init) {
      super({ ...init, state: new State() });
    }
  }
  const errors = [];
  const finishes = [];
  const chat = new NodeChat({
    id,
    transport: new ai.DefaultChatTransport({ api: url, headers, body }),
    onError: (e) => errors.push(e),
    onFinish: (f) => finishes.push({ isAbort: f.isAbort, isError: f.isError, finishReason: f.finishReason, id: f.message.id }),
  });
  return { chat, errors, finishes };
}

/** Waits until `check()` is truthy (polling every 20 ms), or fails after `ms`. */
export async function until(check, ms = 15_000, what = "a condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Reads a ReadableStream of UI chunks into an array (what the transport validated). */
export async function readAll(stream) {
  const chunks = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    chunks.push(value);
  }
}

/** A user UIMessage as `sendMessage({ text })` makes it. */
export function userMessage(text, id = Math.random().toString(36).slice(2, 18)) {
  return { id, role: "user", parts: [{ type: "text", text }] };
}
