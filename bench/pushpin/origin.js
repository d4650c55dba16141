// The origin behind Pushpin in rill's side-by-side benchmark: it answers GET /sub/<topic> with
// a GRIP stream hold on channel <topic> (Pushpin keeps the connection open and sends whatever
// is published to the channel) and a keep-alive comment every HEARTBEAT_S seconds.
// Plain `http`, no dependencies: it is hit once per subscriber, never per event.
'use strict';

const http = require('http');

const port = Number(process.env.PORT || 8090);
const heartbeatS = Number(process.env.HEARTBEAT_S || 15);

http
  .createServer((req, res) => {
    const match = /^\/sub\/([A-Za-z0-9_.:@-]+)$/.exec(req.url);
    if (!match) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      'Grip-Hold': 'stream',
      'Grip-Channel': match[1],
      'Grip-Keep-Alive': `: keep-alive\\n\\n; format=cstring; timeout=${heartbeatS}`,
    });
    res.end('retry: 3000\n\n');
  })
  .listen(port, '127.0.0.1');

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
