// Helpers of the browser tests: start `rill serve` (from RILL_BIN) on a port it picks itself,
// mint tokens with `rill token`, launch Debian's chromium through playwright-core with a fresh
// profile, and clean all of it up, even when a test fails or the runner exits early.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const RILL_BIN = process.env.RILL_BIN || path.join(ROOT, "target/debug/rill");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** The flags every browser of these tests runs with (no network of its own, no GPU, no QUIC). */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
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
export function tempDir(prefix = "rill-browser-") {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

// Log lines of `rill serve` may be coloured; the address is read from the plain text.
const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Starts `rill serve --listen 127.0.0.1:0` with `args` (and `env` added to the environment), on a
 * fresh SQLite file (or `port` / `dbPath` when given), and resolves once it logs "rill is listening"
 * with its address. Returns { base, port, dbPath, child, logs(), stop(), kill() }.
 */
export async function startRill({ args = [], env = {}, timeoutMs = 30_000, port = 0, dbPath } = {}) {
  // A given `port` and `dbPath` start a server again where a stopped one was (restart tests).
  dbPath ??= path.join(tempDir("rill-serve-"), "rill.db");
  const child = spawn(
    RILL_BIN,
    ["serve", "--listen", `127.0.0.1:${port}`, "--database", `sqlite://${dbPath}?mode=rwc`, ...args],
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
    port: Number(address.split(":").pop()),
    dbPath,
    child,
    logs: () => output,
    /** SIGTERM (graceful), then SIGKILL if it is still there after `graceMs`. */
    stop: async (graceMs = 15_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
      children.delete(child);
    },
    /** SIGKILL: an abrupt end, as a crash would. */
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
      children.delete(child);
    },
  };
}

/** Mints a development token with `rill token` (the secret goes by environment, not argv). */
export async function mintToken({ secret, sub, publish = [], subscribe = [], ttl = "10m" }) {
  const args = ["token", "--sub", sub, "--ttl", ttl];
  for (const p of publish) args.push("--publish", p);
  for (const s of subscribe) args.push("--subscribe", s);
  const { stdout } = await promisify(execFile)(RILL_BIN, args, {
    env: { ...process.env, RILL_JWT_SECRET: secret },
    timeout: 10_000,
  });
  return stdout.trim();
}

/**
 * Launches chromium with a fresh temporary profile. Returns a playwright BrowserContext; close it
 * with `context.close()` (the profile directory is removed at exit).
 */
export async function launchBrowser(options = {}) {
  const userDataDir = tempDir("rill-chromium-");
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    ...options, // e.g. viewport, colorScheme
  });
}

/** POSTs JSON to the rill server, asserting a 2xx answer; returns the parsed body. */
export async function postJson(url, body, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST ${url}: ${response.status} ${text}`);
  return JSON.parse(text);
}
