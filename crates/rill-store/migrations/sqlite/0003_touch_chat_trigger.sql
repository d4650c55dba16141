-- A chat's `updated_at` follows its messages (SQLite). Keep in step with migrations/postgres.
--
-- The database writes it with each message insert, in the insert's own statement: storing a
-- question with its answer's placeholder is then one statement, not a transaction of four
-- round trips before the answer's first token.
CREATE TRIGGER messages_touch_chat AFTER INSERT ON messages
BEGIN
    UPDATE chats SET updated_at = NEW.created_at WHERE id = NEW.chat_id;
END;
