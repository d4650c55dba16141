//! A reconnecting SSE client (GET and POST) and typed clients for rill's chats and topics.
