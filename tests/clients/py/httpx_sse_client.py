"""httpx-sse (0.4.3) posting a chat message, as its README shows: `connect_sse(client, "POST",
...)` and `json.loads(sse.data)` on every event. Prints one JSON line per event
({"event", "id", "data"}) and one per request ({"status"}) or cut ({"error"}).

httpx-sse never reconnects by itself: a cut raises `httpx.RemoteProtocolError`. What an
application does then, and what rill documents, is to post again with the id of the last event
it got as `Last-Event-ID`: the server continues the same exchange instead of sending the
message twice.

Usage: python httpx_sse_client.py URL CONTENT
"""

import json
import sys

import httpx
from httpx_sse import connect_sse

url, content = sys.argv[1], sys.argv[2]
last_id = ""
# httpx's default read timeout is 5 s; rill's heartbeat comes every 15 s of silence.
with httpx.Client(timeout=30.0) as client:
    for attempt in range(5):
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with connect_sse(client, "POST", url, json={"content": content}, headers=headers) as source:
                print(json.dumps({"status": source.response.status_code}), flush=True)
                if source.response.status_code == 204:
                    break  # the server says the exchange is already over: nothing is missing
                source.response.raise_for_status()
                for sse in source.iter_sse():
                    data = json.loads(sse.data)  # raises on an empty message
                    print(json.dumps({"event": sse.event, "id": sse.id, "data": data}), flush=True)
                    last_id = sse.id
            break  # the stream ended normally: the exchange is over
        except httpx.TransportError as error:
            print(json.dumps({"error": repr(error)}), flush=True)
    else:
        sys.exit("gave up after 5 attempts")
print(json.dumps({"end": "normal"}), flush=True)
