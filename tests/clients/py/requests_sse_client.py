"""requests-sse (0.5.3) posting a chat message and reading the stream *without a `break`*: the
library re-sends the POST (same body, `Last-Event-Id`) after a cut and also after a normal end.
A server that follows the spec answers the re-POST after the end with `204 No Content`, which
requests-sse raises as `InvalidStatusCodeError(204)`: that is where such a client stops.
`json.loads(event.data)` runs on every event. Prints one JSON line per event ({"event", "id",
"data"}) and {"end": ...} at the end.

Usage: python requests_sse_client.py URL CONTENT
"""

import json
import sys

from requests_sse import EventSource, InvalidStatusCodeError

url, content = sys.argv[1], sys.argv[2]
# requests has no read timeout by default; a generous one keeps a broken test from hanging.
with EventSource(url, method="POST", json={"content": content}, timeout=30) as source:
    try:
        for event in source:
            data = json.loads(event.data)  # raises on an empty message
            print(json.dumps({"event": event.type, "id": event.last_event_id, "data": data}), flush=True)
    except InvalidStatusCodeError as error:
        print(json.dumps({"end": "status", "status": error.status_code}), flush=True)
        sys.exit(0)
print(json.dumps({"end": "iteration"}), flush=True)
