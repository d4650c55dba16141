//! The SQL of the store, one text for both backends.
//!
//! SQLite accepts PostgreSQL's `$1` placeholders and both speak `RETURNING`, so every statement
//! here runs unchanged on either; only the migrations differ (column types, identity columns).

/// The columns of a chat, in the order of [`crate::rows::ChatRow`].
macro_rules! chat_cols {
    () => {
        "seq, id, user_id, bot_id, title, created_at, updated_at, history_changes"
    };
}

/// The columns of a message, in the order of [`crate::rows::MessageRow`].
macro_rules! message_cols {
    () => {
        "seq, id, chat_id, role, content, parts, status, finish_reason, input_tokens, \
         output_tokens, reasoning_tokens, error, bot_id, model, created_at, updated_at"
    };
}

pub(crate) const INSERT_CHAT: &str = concat!(
    "INSERT INTO chats (id, user_id, bot_id, title, created_at, updated_at) \
     VALUES ($1, $2, $3, NULL, $4, $4) RETURNING ",
    chat_cols!()
);

pub(crate) const GET_CHAT: &str = concat!(
    "SELECT ",
    chat_cols!(),
    " FROM chats WHERE id = $1 AND user_id = $2"
);

/// `$2` is the exclusive upper seq bound, `$3` the row count.
pub(crate) const LIST_CHATS: &str = concat!(
    "SELECT ",
    chat_cols!(),
    " FROM chats WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);

/// A separate statement rather than `($4 IS NULL OR bot_id = $4)`, so each can use its index.
pub(crate) const LIST_CHATS_OF_BOT: &str = concat!(
    "SELECT ",
    chat_cols!(),
    " FROM chats WHERE user_id = $1 AND seq < $2 AND bot_id = $4 ORDER BY seq DESC LIMIT $3"
);

pub(crate) const DELETE_CHAT: &str = "DELETE FROM chats WHERE id = $1 AND user_id = $2";

pub(crate) const SET_TITLE_IF_EMPTY: &str =
    "UPDATE chats SET title = $2 WHERE id = $1 AND title IS NULL";

/// The columns an insert sets, in the order of [`INSERT_MESSAGE`]'s values. The chat's
/// `updated_at` follows by trigger (migration 0003), in the same statement.
macro_rules! insert_cols {
    () => {
        "INSERT INTO messages (id, chat_id, role, content, status, bot_id, model, created_at, \
         updated_at, client_key, lease_owner, lease_until) VALUES "
    };
}

pub(crate) const INSERT_MESSAGE: &str = concat!(
    insert_cols!(),
    "($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11) RETURNING ",
    message_cols!()
);

/// A question and its answer's placeholder in one statement (so both exist or neither, without
/// a transaction's extra round trips). Rows are inserted in order, so the question's `seq` is
/// the lower; `RETURNING` order is not guaranteed, the caller matches rows by id.
pub(crate) const INSERT_EXCHANGE: &str = concat!(
    insert_cols!(),
    "($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11), \
     ($12, $13, $14, $15, $16, $17, $18, $8, $8, $19, $20, $21) RETURNING ",
    message_cols!()
);

pub(crate) const GET_MESSAGE: &str =
    concat!("SELECT ", message_cols!(), " FROM messages WHERE id = $1");

/// `$2` is the exclusive upper seq bound, `$3` the row count; newest first.
pub(crate) const LIST_MESSAGES: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE chat_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);

pub(crate) const CHECKPOINT: &str = "UPDATE messages SET content = $2, checkpoint_offset = $3, \
     updated_at = $4, parts = $5 WHERE id = $1 AND status = 'streaming' \
     AND (lease_owner IS NULL OR lease_owner = $6)";

/// The lease ends with the generation, so a finished message never looks leased.
pub(crate) const FINISH: &str = "UPDATE messages SET status = $2, content = $3, \
     finish_reason = $4, input_tokens = $5, output_tokens = $6, error = $7, updated_at = $8, \
     parts = $9, reasoning_tokens = $10, lease_owner = NULL, lease_until = NULL \
     WHERE id = $1 AND status = 'streaming' AND ($11 IS NULL OR lease_owner = $11)";

/// The message with a client key, and the first assistant message after it (its answer).
pub(crate) const FIND_BY_CLIENT_KEY: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE chat_id = $1 AND client_key = $2"
);

pub(crate) const ANSWER_AFTER: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE chat_id = $1 AND seq > $2 AND role = 'assistant' ORDER BY seq LIMIT 1"
);

pub(crate) const SET_EXCHANGE_START: &str =
    "UPDATE messages SET exchange_epoch = $2, exchange_after = $3 WHERE id = $1";

pub(crate) const EXCHANGE_START: &str =
    "SELECT exchange_epoch, exchange_after FROM messages WHERE id = $1";

pub(crate) const SET_PARTS: &str = "UPDATE messages SET content = $2, parts = $3, \
     updated_at = $4 WHERE id = $1 AND status <> 'streaming'";

pub(crate) const CHECKPOINT_OFFSET: &str = "SELECT checkpoint_offset FROM messages WHERE id = $1";

pub(crate) const RENEW_LEASE: &str = "UPDATE messages SET lease_owner = $2, lease_until = $3 \
     WHERE id = $1 AND status = 'streaming' AND (lease_owner IS NULL OR lease_owner = $2)";

/// `$4` is now: only an ended lease (or none) can be taken.
pub(crate) const TAKE_OVER: &str = "UPDATE messages SET lease_owner = $2, lease_until = $3 \
     WHERE id = $1 AND status = 'streaming' AND (lease_until IS NULL OR lease_until < $4)";

pub(crate) const RELEASE_LEASE: &str = "UPDATE messages SET lease_until = 0 \
     WHERE id = $1 AND status = 'streaming' AND lease_owner = $2";

/// Oldest first, so recovery finishes messages in the order they were started.
pub(crate) const ORPHANED_ALL: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE status = 'streaming' ORDER BY seq"
);

/// `$1` is now, `$2` the owner, `$3` the cut-off for messages that never got a lease.
pub(crate) const ORPHANED_OF_OWNER: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM messages WHERE status = 'streaming' AND (lease_until < $1 \
     OR (lease_until IS NULL AND (lease_owner = $2 OR updated_at < $3))) ORDER BY seq"
);

pub(crate) const PING: &str = "SELECT 1";
