// Helpers of the OpenAI face tests: start `rill serve` (from RILL_BIN) on a port it picks itself
// with a temporary config, a fake OpenAI-compatible upstream replaying a recorded stream, the
// PostgreSQL schema and Redis prefix two instances share, and clean-up at exit.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, "../..");
export const RILL_BIN = process.env.RILL_BIN || path.join(ROOT, "target/debug/rill");
export const PYTHON = path.join(HERE, ".venv/bin/python");

const children = new Set();
const tempDirs = new Set();
const cleanups = [];

function cleanup() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
  for (const f of cleanups.splice(0)) {
    try {
      f();
    } catch {
      // best effort
    }
  }
}
process.on("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    cleanup();
    process.exit(130);
  });
}

export function tempDir(prefix = "rill-openai-") {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

const ANSI = /\x1b\[[0-9;]*m/g;

/** The bots every test server has: the demo, and an OpenAI-compatible bot at `upstream`. */
export function config(upstream) {
  return `
[[bots]]
id = "demo"
name = "Demo"
provider = "demo"
model = "demo"

[[bots]]
id = "tools"
name = "Tools"
provider = "openai"
base_url = "${upstream}"
model = "gpt-4o-mini"
`;
}

/**
 * Starts `rill serve --listen 127.0.0.1:0` with `config` and `args` (a fresh SQLite file unless
 * `args` name a database); resolves once it logs "rill is listening".
 */
export async function startRill({ config: text, args = [], timeoutMs = 30_000 } = {}) {
  const dir = tempDir("rill-serve-");
  const extra = [];
  if (!args.includes("--database")) extra.push("--database", `sqlite://${path.join(dir, "rill.db")}?mode=rwc`);
  if (text) {
    const configPath = path.join(dir, "rill.toml");
    writeFileSync(configPath, text);
    extra.push("--config", configPath);
  }
  const child = spawn(
    RILL_BIN,
    [
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--demo-first-token-delay",
      "0ms",
      "--demo-tokens-per-second",
      "150",
      ...extra,
      ...args,
    ],
    { env: { ...process.env, NO_COLOR: "1", RILL_CONFIG: "" }, stdio: ["ignore", "pipe", "pipe"] },
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

/**
 * A fake OpenAI-compatible upstream: every `POST .../chat/completions` gets the recorded stream of
 * two parallel tool calls (crates/rill-test-support/data/upstream/openai_parallel_tools.sse).
 */
export async function startFakeUpstream() {
  const body = readFileSync(path.join(ROOT, "crates/rill-test-support/data/upstream/openai_parallel_tools.sse"), "utf8");
  const requests = [];
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => (raw += c));
    req.on("end", () => {
      try {
        requests.push(JSON.parse(raw));
      } catch {
        requests.push(null);
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => server.close());
  return { url: `http://127.0.0.1:${server.address().port}/v1`, requests, close: () => server.close() };
}

/** A JSON request to rill's native API: { status, json }. */
export async function api(base, method, p, body) {
  const res = await fetch(base + p, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/** The demo's stored answer to `content` in a new chat (the native API), once complete. */
export async function nativeAnswer(base, content) {
  const chat = await api(base, "POST", "/api/chats", { bot: "demo" });
  const sent = await api(base, "POST", `/api/chats/${chat.json.id}/messages`, { content });
  const id = sent.json.assistant_message.id;
  return until(async () => {
    const page = await api(base, "GET", `/api/chats/${chat.json.id}/messages?limit=100`);
    const m = page.json.messages.find((x) => x.id === id);
    return m && m.status !== "streaming" ? m : null;
  }, 30_000, "the native answer");
}

/** How many chats the caller has. */
export async function chatCount(base) {
  const r = await api(base, "GET", "/api/chats?limit=100");
  return r.json.chats.length;
}

export async function until(check, ms = 15_000, what = "a condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function reachable(url, fallbackPort) {
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port: Number(u.port || fallbackPort) });
    socket.setTimeout(2000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * PostgreSQL and Redis for two instances: a fresh schema (dropped at exit) and Redis key prefix.
 * `null` when either is unreachable (outside CI: the caller skips; in CI it is an error).
 */
export async function sharedBackends() {
  const pg = process.env.RILL_TEST_POSTGRES || "postgres://postgres@127.0.0.1:5432/test";
  const redis = process.env.RILL_TEST_REDIS || "redis://127.0.0.1:6379";
  if (!(await reachable(pg, 5432)) || !(await reachable(redis, 6379))) {
    if (process.env.CI === "true") throw new Error("PostgreSQL and Redis are needed in CI");
    return null;
  }
  const tag = Math.random().toString(16).slice(2, 14);
  const schema = `rill_openai_${tag}`;
  const psql = (sql) => execFileSync("psql", [pg, "-q", "-c", sql], { stdio: "ignore" });
  psql(`CREATE SCHEMA ${schema}`);
  cleanups.push(() => psql(`DROP SCHEMA ${schema} CASCADE`));
  const separator = pg.includes("?") ? "&" : "?";
  return {
    args: (name) => [
      "--broker",
      redis,
      "--redis-key-prefix",
      `rill-openai-${tag}:`,
      "--database",
      `${pg}${separator}options=-c%20search_path%3D${schema}`,
      "--instance-id",
      name,
    ],
  };
}
