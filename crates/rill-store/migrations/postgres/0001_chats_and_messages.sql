-- Chats and their messages (PostgreSQL). Keep in step with migrations/sqlite: the queries in
-- src/sql.rs run unchanged on both.

-- `seq` orders listings and is the key of page cursors; `id` (a UUIDv7 string) is what clients see.
CREATE TABLE chats (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT   NOT NULL UNIQUE,
    user_id    TEXT   NOT NULL,
    bot_id     TEXT   NOT NULL,
    title      TEXT,
    created_at BIGINT NOT NULL, -- Unix ms
    updated_at BIGINT NOT NULL  -- Unix ms
);
CREATE INDEX chats_user_seq ON chats (user_id, seq);
CREATE INDEX chats_user_bot_seq ON chats (user_id, bot_id, seq);

CREATE TABLE messages (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT   NOT NULL UNIQUE,
    chat_id           TEXT   NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role              TEXT   NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content           TEXT   NOT NULL,
    status            TEXT   NOT NULL
        CHECK (status IN ('streaming', 'complete', 'stopped', 'error', 'interrupted')),
    finish_reason     TEXT,
    input_tokens      BIGINT,
    output_tokens     BIGINT,
    error             TEXT,
    bot_id            TEXT,
    model             TEXT,
    checkpoint_offset BIGINT,
    lease_owner       TEXT,
    lease_until       BIGINT, -- Unix ms
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX messages_chat_seq ON messages (chat_id, seq);
-- One generation per chat, held by the database so it holds across instances.
CREATE UNIQUE INDEX messages_one_streaming ON messages (chat_id) WHERE status = 'streaming';
