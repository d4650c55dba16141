-- Rich answers and client retries (SQLite). Keep in step with migrations/postgres.
--
-- `parts`: the message's parts as a JSON array (text, reasoning, tool calls, sources); NULL for
-- messages written before parts existed, which read as one text part holding `content`.
-- `client_key`: the key a client chose for the message (Idempotency-Key), unique per chat, so a
-- repeated request finds the first one's exchange on any instance.
-- `exchange_epoch` / `exchange_after`: on an assistant message, where its exchange's events start
-- in the chat's log (replaying after that offset, in that epoch, yields the exchange).
ALTER TABLE messages ADD COLUMN parts TEXT;
ALTER TABLE messages ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE messages ADD COLUMN client_key TEXT;
ALTER TABLE messages ADD COLUMN exchange_epoch TEXT;
ALTER TABLE messages ADD COLUMN exchange_after INTEGER;
CREATE UNIQUE INDEX messages_client_key ON messages (chat_id, client_key)
    WHERE client_key IS NOT NULL;
