// A cutting proxy for the client matrix: a TCP relay in front of `rill serve` that reads the
// HTTP/1.1 framing of both directions, so it can log every request with its response status and
// cut a response in the middle of an event, exactly once, as a dropped network would.
//
// It must frame HTTP rather than count raw bytes: clients keep connections alive (Chromium's
// fetch and EventSource, Python's sessions), so one socket carries several requests, and a cut
// must hit the answer stream, not a 202 or a history read on the same connection.

import net from "node:net";

const DELTA = "event: message.delta\n";

/**
 * Starts a proxy to `target` ({host, port}) on 127.0.0.1, on a free port.
 *
 * `cut`: {method, path (RegExp), afterDeltas, times = 1}: the response to a matching request
 * is cut once it has carried `afterDeltas` `message.delta` events: the bytes of that event's
 * `event:` line are forwarded but its last character, then the client connection ends (FIN
 * mid-chunk) and the upstream one is destroyed. The client thus holds half an event and an
 * unfinished chunked body, as after a dropped connection.
 *
 * Returns {base, port, requests, cuts(), close()}; `requests` lists {method, path, headers,
 * status, cut} in the order the requests arrived.
 */
export async function startProxy({ target, cut = null }) {
  const requests = [];
  let cutsLeft = cut ? (cut.times ?? 1) : 0;
  let cutsDone = 0;
  const sockets = new Set();

  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const pending = []; // this connection's requests still waiting for a response head
    const requestParser = requestFramer((record) => {
      requests.push(record);
      pending.push(record);
    });
    const responseParser = responseFramer(pending);
    let closed = false;
    const closeBoth = () => {
      if (closed) return;
      closed = true;
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };

    client.on("data", (chunk) => {
      requestParser(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      const cutAt = responseParser(chunk, (record, deltas) => {
        if (cutsLeft <= 0 || record.cut) return false;
        if (cut.method && record.method !== cut.method) return false;
        if (cut.path && !cut.path.test(record.path)) return false;
        return deltas >= cut.afterDeltas;
      });
      if (cutAt === null) {
        client.write(chunk);
        return;
      }
      cutsLeft -= 1;
      cutsDone += 1;
      upstream.destroy();
      client.end(chunk.subarray(0, cutAt));
      // A client that does not close its side within a second is closed for it.
      setTimeout(closeBoth, 1000).unref();
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    client.on("error", closeBoth);
    upstream.on("error", closeBoth);
    client.on("close", closeBoth);
    upstream.on("close", () => {
      if (!client.writableEnded) client.end();
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    requests,
    cuts: () => cutsDone,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Parses a request head (latin1 text up to the blank line). */
function parseHead(text) {
  const [first, ...lines] = text.split("\r\n");
  const headers = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { first, headers };
}

/**
 * The client→server direction: calls `onRequest(record)` for each request head. Bodies are
 * skipped by Content-Length (every client of the matrix sends one); a chunked request body
 * stops the parsing of that connection (nothing of the matrix sends one).
 */
function requestFramer(onRequest) {
  let head = Buffer.alloc(0);
  let bodyLeft = 0;
  let lost = false;
  return (chunk) => {
    let data = chunk;
    while (data.length > 0 && !lost) {
      if (bodyLeft > 0) {
        const n = Math.min(bodyLeft, data.length);
        bodyLeft -= n;
        data = data.subarray(n);
        continue;
      }
      head = Buffer.concat([head, data]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const { first, headers } = parseHead(head.subarray(0, end).toString("latin1"));
      const [method, path] = first.split(" ");
      onRequest({ method, path, headers, status: null, cut: false });
      data = head.subarray(end + 4);
      head = Buffer.alloc(0);
      if ((headers["transfer-encoding"] || "").includes("chunked")) lost = true;
      bodyLeft = Number(headers["content-length"] || 0);
    }
  };
}

/**
 * The server→client direction: sets each request's `status` from its response head, follows
 * the body's framing (chunked, Content-Length, none, or until close) and counts `message.delta`
 * events in the body. `shouldCut(record, deltas)` is asked after every counted delta; when it
 * says yes, the parser returns the offset in `chunk` to cut at (else null).
 */
function responseFramer(pending) {
  let state = "head";
  let head = Buffer.alloc(0);
  let line = "";
  let left = 0; // bytes left in the current chunk or fixed-length body
  let record = null;
  let deltas = 0;
  let tail = ""; // the end of the previous body bytes, to find a delta line split across reads

  return (chunk, shouldCut) => {
    let i = 0;
    // Scans body bytes chunk[from, to) for delta events; returns a cut offset or null.
    const scan = (from, to) => {
      const text = tail + chunk.subarray(from, to).toString("latin1");
      let at = text.indexOf(DELTA);
      while (at >= 0) {
        const endInChunk = from + (at + DELTA.length - tail.length);
        deltas += 1;
        if (record && shouldCut(record, deltas)) {
          record.cut = true;
          // Mid-event: everything up to the last character of its `event:` line.
          return Math.max(0, endInChunk - 2);
        }
        at = text.indexOf(DELTA, at + 1);
      }
      tail = text.slice(-(DELTA.length - 1)); // a whole match is never kept: no double count
      return null;
    };
    while (i < chunk.length) {
      if (state === "head") {
        head = Buffer.concat([head, chunk.subarray(i)]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return null;
        const consumed = end + 4 - (head.length - (chunk.length - i));
        i += consumed;
        const { first, headers } = parseHead(head.subarray(0, end).toString("latin1"));
        head = Buffer.alloc(0);
        const status = Number(first.split(" ")[1]);
        if (status >= 100 && status < 200) continue; // 100 Continue: the real head follows
        record = pending.shift() ?? null;
        if (record) record.status = status;
        deltas = 0;
        tail = "";
        const noBody = status === 204 || status === 304 || record?.method === "HEAD";
        if (noBody) state = "head";
        else if ((headers["transfer-encoding"] || "").includes("chunked")) state = "size";
        else if (headers["content-length"] !== undefined) {
          left = Number(headers["content-length"]);
          state = left > 0 ? "fixed" : "head";
        } else state = "close";
      } else if (state === "size" || state === "trailer") {
        const nl = chunk.indexOf("\n", i);
        const end = nl < 0 ? chunk.length : nl + 1;
        line += chunk.subarray(i, end).toString("latin1");
        i = end;
        if (nl < 0) continue;
        const text = line.trim();
        line = "";
        if (state === "trailer") {
          if (text === "") state = "head";
        } else {
          left = parseInt(text.split(";")[0], 16);
          state = left === 0 ? "trailer" : "data";
        }
      } else if (state === "data" || state === "fixed" || state === "close") {
        const n = state === "close" ? chunk.length - i : Math.min(left, chunk.length - i);
        const cutAt = scan(i, i + n);
        if (cutAt !== null) return cutAt;
        i += n;
        if (state !== "close") {
          left -= n;
          if (left === 0) state = state === "data" ? "crlf" : "head";
        }
      } else if (state === "crlf") {
        const nl = chunk.indexOf("\n", i);
        if (nl < 0) return null;
        i = nl + 1;
        state = "size";
      }
    }
    return null;
  };
}
