-- A chat's `updated_at` follows its messages (PostgreSQL). Keep in step with migrations/sqlite.
--
-- The database writes it with each message insert, in the insert's own statement: storing a
-- question with its answer's placeholder is then one statement, not a transaction of four
-- round trips before the answer's first token.
CREATE FUNCTION messages_touch_chat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chats SET updated_at = NEW.created_at WHERE id = NEW.chat_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_touch_chat AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_touch_chat();
