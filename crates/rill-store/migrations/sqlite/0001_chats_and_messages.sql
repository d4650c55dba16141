-- Chats and their messages (SQLite). Keep in step with migrations/postgres: the queries in
-- src/sql.rs run unchanged on both.

-- `seq` orders listings and is the key of page cursors; `id` (a UUIDv7 string) is what clients see.
CREATE TABLE chats (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    user_id    TEXT    NOT NULL,
    bot_id     TEXT    NOT NULL,
    title      TEXT,
    created_at INTEGER NOT NULL, -- Unix ms
    updated_at INTEGER NOT NULL  -- Unix ms
);
CREATE INDEX chats_user_seq ON chats (user_id, seq);
CREATE INDEX chats_user_bot_seq ON chats (user_id, bot_id, seq);

-- AUTOINCREMENT: a seq is never reused, even after the newest message is deleted, so a cursor
-- handed out earlier can never point at a different message.
CREATE TABLE messages (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    chat_id           TEXT    NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content           TEXT    NOT NULL,
    status            TEXT    NOT NULL
        CHECK (status IN ('streaming', 'complete', 'stopped', 'error', 'interrupted')),
    finish_reason     TEXT,
    input_tokens      INTEGER,
    output_tokens     INTEGER,
    error             TEXT,
    bot_id            TEXT,
    model             TEXT,
    checkpoint_offset INTEGER,
    lease_owner       TEXT,
    lease_until       INTEGER, -- Unix ms
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX messages_chat_seq ON messages (chat_id, seq);
-- One generation per chat, held by the database so it holds across instances.
CREATE UNIQUE INDEX messages_one_streaming ON messages (chat_id) WHERE status = 'streaming';
