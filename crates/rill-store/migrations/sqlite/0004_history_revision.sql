-- Where a chat's history stands (SQLite). Keep in step with migrations/postgres.
--
-- `history_changes` counts the changes of the chat's history: one per message inserted, one
-- per write to a message that is not `streaming` (its final state; tool results recorded on it
-- later). Checkpoints of an answer being written do not count. With the chat's `seq` (never
-- reused) it lets an instance keep a chat's recent history in memory and know, from the chat
-- row it reads anyway, whether another instance changed it. Messages are deleted only with
-- their chat, whose `seq` is then gone.
ALTER TABLE chats ADD COLUMN history_changes INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER messages_touch_chat;

CREATE TRIGGER messages_touch_chat AFTER INSERT ON messages
BEGIN
    UPDATE chats SET updated_at = NEW.created_at, history_changes = history_changes + 1
        WHERE id = NEW.chat_id;
END;

CREATE TRIGGER messages_history_changed AFTER UPDATE OF status, content, parts ON messages
    WHEN NEW.status <> 'streaming'
BEGIN
    UPDATE chats SET history_changes = history_changes + 1 WHERE id = NEW.chat_id;
END;
