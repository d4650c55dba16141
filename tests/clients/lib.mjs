// Helpers of the client matrix: start `rill serve` (RILL_BIN) with a slow demo bot, run the
// Python clients from the matrix's venv and rill's own commands, launch Debian's chromium, read
// a chat back, and turn the events a client printed into the answer's text.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, "../..");
export const RILL_BIN = process.env.RILL_BIN || path.join(ROOT, "target/debug/rill");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const PYTHON = process.env.RILL_MATRIX_PYTHON || path.join(HERE, ".venv/bin/python");

/**
 * The server every case talks to: the demo bot waits 1.2 s before its first token (so
 * heartbeats fall between events that carry ids, the layout that once gave empty messages) and
 * then streams ~390 tokens at 120 a second (~3 s, long enough to be cut in the middle);
 * heartbeats every 250 ms of silence and a 250 ms retry hint keep the reconnects quick.
 */
export const SERVE_ARGS = [
  "--demo-first-token-delay", "1200ms",
  "--demo-tokens-per-second", "120",
  "--heartbeat", "250ms",
  "--retry", "250ms",
  "--checkpoint-interval", "50ms",
];

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
export function tempDir(prefix = "rill-clients-") {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Starts `rill serve` on 127.0.0.1 (`port` 0: a free one) with a SQLite file (`dbPath`, or a
 * fresh one) and `args`; resolves once it logs "rill is listening". Returns {base, host, port,
 * dbPath, child, logs(), kill(signal)}.
 */
export async function startRill({ args = SERVE_ARGS, port = 0, dbPath, timeoutMs = 30_000 } = {}) {
  dbPath ??= path.join(tempDir("rill-serve-"), "rill.db");
  const env = cleanEnv();
  delete env.OPENAI_API_KEY;
  delete env.ANTHROPIC_API_KEY;
  const child = spawn(
    RILL_BIN,
    ["serve", "--listen", `127.0.0.1:${port}`, "--database", `sqlite://${dbPath}?mode=rwc`, ...args],
    { env, stdio: ["ignore", "pipe", "pipe"] },
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
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    base: `http://${address}`,
    host: "127.0.0.1",
    port: Number(address.split(":").pop()),
    dbPath,
    child,
    logs: () => output,
    /** Sends `signal` (SIGKILL: a crash) and waits for the exit. */
    kill: async (signal = "SIGKILL") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      children.delete(child);
    },
  };
}

/**
 * Runs a program to its end; resolves {code, signal, stdout, stderr}. `onStdout(text so far)`
 * sees stdout as it comes (to act mid-run); the run is killed after `timeoutMs`.
 */
export function run(file, args, { env = {}, timeoutMs = 60_000, onStdout } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...cleanEnv(), ...env }, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk.toString("utf8");
      onStdout?.(stdout);
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk.toString("utf8");
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${path.basename(file)} ${args.join(" ")} did not end in ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs one of the Python clients (py/NAME.py) with the matrix's venv. */
export function runPython(name, args, options) {
  return run(PYTHON, [path.join(HERE, "py", `${name}.py`), ...args], options);
}

/** `rill ARGS`. */
export function runRill(args, options = {}) {
  return run(RILL_BIN, args, options);
}

/** This process's environment without RILL_* (a caller's RILL_SERVER must not leak in). */
function cleanEnv() {
  const env = { ...process.env, NO_COLOR: "1" };
  for (const name of Object.keys(env)) if (name.startsWith("RILL_")) delete env[name];
  return env;
}

/** Launches chromium with a fresh temporary profile (a playwright BrowserContext). */
export async function launchBrowser() {
  return chromium.launchPersistentContext(tempDir("rill-chromium-"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * Serves the ESM build of an npm package to the page under `${origin}/__lib/NAME/`, straight
 * from node_modules (the page imports `/__lib/NAME/index.js`; extensionless relative imports,
 * as TypeScript emits them, get `.js`).
 */
export async function servePackage(page, origin, name, dir) {
  const root = path.join(HERE, "node_modules", dir);
  await page.route(`${origin}/__lib/${name}/**`, (route) => {
    let file = new URL(route.request().url()).pathname.slice(`/__lib/${name}/`.length);
    if (!file.endsWith(".js")) file += ".js";
    route.fulfill({ status: 200, contentType: "text/javascript", body: readFileSync(path.join(root, file)) });
  });
}

/** JSON from rill, asserting the status. */
export async function api(base, method, url, { body, headers = {}, status } = {}) {
  const response = await fetch(`${base}${url}`, {
    method,
    headers: { ...(body ? { "content-type": "application/json" } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (status !== undefined) assert.equal(response.status, status, `${method} ${url}: ${text}`);
  else assert.ok(response.ok, `${method} ${url}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A new chat with the demo bot; its id. */
export async function newChat(base) {
  return (await api(base, "POST", "/api/chats", { body: { bot: "demo" }, status: 201 })).id;
}

/** The chat's whole history. */
export async function history(base, chatId) {
  return (await api(base, "GET", `/api/chats/${chatId}/messages?limit=100`)).messages;
}

/**
 * The answer a client saw, from the chat events it printed in order ({event, data} with `data`
 * parsed): `message.delta` appends to the answer's text, a `snapshot` of it replaces it (what
 * every client must do). Returns {text, answerId, userIds, completed (its data), events}.
 */
export function assemble(events, answerId = null) {
  let text = "";
  let completed = null;
  const userIds = [];
  for (const { event, data } of events) {
    if (event === "message.created" && data.role === "user") userIds.push(data.id);
    if (event === "message.created" && data.role === "assistant") answerId ??= data.id;
    if (data?.message_id !== undefined && answerId === null) answerId = data.message_id;
    if (event === "message.delta" && data.message_id === answerId) text += data.text;
    if (event === "snapshot" && data.id === answerId) text = data.content;
    if (event === "message.completed" && data.message_id === answerId) completed = data;
  }
  return { text, answerId, userIds, completed, events };
}

/** Parses JSON lines ({event, data, id}); `data` strings that hold JSON are parsed. */
export function eventLines(stdout) {
  return stdout
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line))
    .filter((line) => line.event !== undefined)
    .map((line) => ({ ...line, data: typeof line.data === "string" ? JSON.parse(line.data) : line.data }));
}

/**
 * The matrix's verdict on a chat: exactly one user message (`content`) and one assistant
 * message, with `status`, whose stored text is what the client streamed (`context`, e.g. the
 * proxy's log, goes into the failure message).
 */
export async function assertExchange(base, chatId, { content, text, status = "complete", minChars = 200, context = "" }) {
  const messages = await history(base, chatId);
  assert.equal(messages.length, 2, `exactly two messages: ${JSON.stringify(messages.map((m) => [m.role, m.status]))}`);
  const [user, answer] = messages;
  assert.equal(user.role, "user");
  assert.equal(user.content, content);
  assert.equal(answer.role, "assistant");
  assert.equal(answer.status, status, `the answer's status (error: ${answer.error})`);
  assert.ok(answer.content.length >= minChars, `a long enough answer was stored (${answer.content.length} chars)`);
  if (text !== answer.content) {
    let at = 0;
    while (at < text.length && text[at] === answer.content[at]) at += 1;
    assert.fail(
      `the streamed text (${text.length} chars) is not the stored text (${answer.content.length} chars); ` +
        `they differ from char ${at}:\nstreamed: ${JSON.stringify(text.slice(at, at + 80))}\n` +
        `stored:   ${JSON.stringify(answer.content.slice(at, at + 80))}${context ? `\n${context}` : ""}`,
    );
  }
  return { user, answer };
}

/** What a proxy saw, one line a request (for assertion messages). */
export function describeRequests(requests) {
  return requests
    .map((r) => `${r.method} ${r.path} last-event-id=${r.headers["last-event-id"] ?? "-"} -> ${r.status}${r.cut ? " (cut)" : ""}`)
    .join("\n");
}

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** execFile as a promise (for small helpers). */
export function exec(file, args, options = {}) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 10_000, ...options }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}
