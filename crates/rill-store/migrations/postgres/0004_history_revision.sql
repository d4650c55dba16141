-- Where a chat's history stands (PostgreSQL). Keep in step with migrations/sqlite.
--
-- `history_changes` counts the changes of the chat's history: one per message inserted, one
-- per write to a message that is not `streaming` (its final state; tool results recorded on it
-- later). Checkpoints of an answer being written do not count. With the chat's `seq` (never
-- reused) it lets an instance keep a chat's recent history in memory and know, from the chat
-- row it reads anyway, whether another instance changed it. Messages are deleted only with
-- their chat, whose `seq` is then gone.
ALTER TABLE chats ADD COLUMN history_changes BIGINT NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION messages_touch_chat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chats SET updated_at = NEW.created_at, history_changes = history_changes + 1
        WHERE id = NEW.chat_id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION messages_history_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chats SET history_changes = history_changes + 1 WHERE id = NEW.chat_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_history_changed AFTER UPDATE OF status, content, parts ON messages
    FOR EACH ROW WHEN (NEW.status <> 'streaming') EXECUTE FUNCTION messages_history_changed();
