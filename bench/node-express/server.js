// The Node.js peer of the side-by-side benchmark (scripts/bench-side-by-side), written the way
// the usual write-ups build SSE on Express: an in-memory Map of topic -> Set of `res` objects,
// one setInterval heartbeat per connection, and one `res.write` per event per subscriber.
// Nothing here is tuned beyond what those write-ups do; see docs/benchmarks.md.
'use strict';

const express = require('express');

const port = Number(process.env.PORT || 8083);
const heartbeatMs = Number(process.env.HEARTBEAT_MS || 15000);

const app = express();
app.use(express.json({ limit: '100kb' }));

// topic -> Set<res>
const topics = new Map();
let nextId = 0;

app.get('/events', (req, res) => {
  const topic = String(req.query.topic || '');
  if (!topic) {
    res.status(400).json({ error: 'topic is required' });
    return;
  }
  res.setHeader('Content-Type', 'text/event-stream');
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Connection', 'keep-alive');
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
  res.write('retry: 3000\n\n');

  let clients = topics.get(topic);
  if (!clients) {
    clients = new Set();
    topics.set(topic, clients);
  }
  clients.add(res);

  const heartbeat = setInterval(() => {
    res.write(': heartbeat\n\n');
  }, heartbeatMs);

  req.on('close', () => {
    clearInterval(heartbeat);
    clients.delete(res);
    if (clients.size === 0) topics.delete(topic);
  });
});

app.post('/publish/:topic', (req, res) => {
  const { event = 'message', data } = req.body || {};
  const id = ++nextId;
  const frame = `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  const clients = topics.get(req.params.topic);
  if (clients) {
    for (const client of clients) client.write(frame);
  }
  res.status(201).json({ id: String(id), subscribers: clients ? clients.size : 0 });
});

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`node-express SSE peer on 127.0.0.1:${port}`);
});
// Long-lived streams: no request or socket timeouts.
server.requestTimeout = 0;
server.headersTimeout = 60000;
server.timeout = 0;
server.keepAliveTimeout = 60000;

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
