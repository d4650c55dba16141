//! The [`Store`] implementation, written once and stamped out for SQLite and PostgreSQL.
//!
//! A macro rather than one generic `impl<DB: Database>`: sqlx's generic executor bounds
//! (higher-ranked `Executor` impls, `Encode`/`Decode` per type, `Send` futures through
//! `async_trait`) make a generic impl longer than the code itself, while the macro keeps one
//! text of the logic with concrete, fully checked types. The SQL is shared too (`crate::sql`).

use std::time::{SystemTime, UNIX_EPOCH};

use rill_core::StoreError;
use rill_core::chat::PageCursor;
use sqlx::error::ErrorKind;

/// The largest page a listing returns; larger requests are clamped (the HTTP layer rejects
/// bad limits itself, this only keeps one query's memory bounded).
pub const MAX_PAGE_LIMIT: u32 = 500;

/// How long a `streaming` message may go without a lease before another instance's reaper
/// takes it as orphaned: its process died between inserting it and the first `renew_lease`.
/// A generation that runs unleased (renewals failing) still checkpoints, which moves
/// `updated_at`, so it is not reaped while it makes progress.
pub(crate) const UNLEASED_GRACE_MS: i64 = 60_000;

/// A new id: UUIDv7, so ids sort roughly by creation time and index well.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The wall clock in Unix ms, the unit of every timestamp in the schema.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A limit of 0 would make a page that can never advance; treat it as 1.
pub(crate) fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE_LIMIT)
}

/// The exclusive upper seq bound of a page.
pub(crate) fn upper_bound(before: Option<PageCursor>) -> i64 {
    before.map_or(i64::MAX, |c| c.0)
}

/// Turns `limit + 1` rows fetched newest first into a page of at most `limit`: the extra row
/// only tells that older rows exist, and the cursor is the seq of the oldest row kept.
pub(crate) fn newest_first_page<R>(
    mut rows: Vec<R>,
    limit: u32,
    seq: impl Fn(&R) -> i64,
) -> (Vec<R>, Option<String>) {
    let limit = limit as usize;
    let next_before = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| PageCursor(seq(r)).to_string())
    } else {
        None
    };
    (rows, next_before)
}

/// Maps a sqlx error: the one-streaming-message index to [`StoreError::Busy`], a missing chat
/// behind a message insert to [`StoreError::NotFound`], the rest to [`StoreError::Backend`]
/// (for the log; sqlx's messages carry neither the SQL nor credentials).
pub(crate) fn db_error(op: &'static str, error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        match db.kind() {
            // PostgreSQL names the index; SQLite names the indexed columns.
            ErrorKind::UniqueViolation
                if db.constraint() == Some("messages_client_key")
                    || db.message().contains("messages.client_key")
                    || db.constraint() == Some("chats_id_key")
                    || db.message().contains("chats.id") =>
            {
                return StoreError::DuplicateKey;
            }
            ErrorKind::UniqueViolation
                if db.constraint() == Some("messages_one_streaming")
                    || db.message().contains("messages.chat_id") =>
            {
                return StoreError::Busy;
            }
            ErrorKind::ForeignKeyViolation => return StoreError::NotFound,
            _ => {}
        }
    }
    StoreError::Backend(format!("{op}: {error}"))
}

/// Implements [`Store`] for `$name`, a pool of database `$db`.
macro_rules! sql_store {
    ($(#[$doc:meta])* $name:ident, $db:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub(crate) struct $name {
            pool: sqlx::Pool<$db>,
        }

        impl $name {
            pub(crate) fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { pool }
            }

            /// Binds a message's values that come before `created_at` in a row of
            /// [`crate::sql::INSERT_MESSAGE`] / [`crate::sql::INSERT_EXCHANGE`].
            fn bind_message<'q>(
                query: sqlx::query::QueryAs<'q, $db, $crate::rows::MessageRow, <$db as sqlx::Database>::Arguments<'q>>,
                id: String,
                message: &'q rill_core::chat::NewMessage,
            ) -> sqlx::query::QueryAs<'q, $db, $crate::rows::MessageRow, <$db as sqlx::Database>::Arguments<'q>> {
                query
                    .bind(id)
                    .bind(&message.chat_id)
                    .bind(message.role.as_str())
                    .bind(&message.content)
                    .bind(message.status.as_str())
                    .bind(&message.bot_id)
                    .bind(&message.model)
            }

            /// Binds a message's values that come after `created_at` in such a row.
            fn bind_tail<'q>(
                query: sqlx::query::QueryAs<'q, $db, $crate::rows::MessageRow, <$db as sqlx::Database>::Arguments<'q>>,
                message: &'q rill_core::chat::NewMessage,
            ) -> sqlx::query::QueryAs<'q, $db, $crate::rows::MessageRow, <$db as sqlx::Database>::Arguments<'q>> {
                query
                    .bind(&message.client_key)
                    .bind(message.lease.as_ref().map(|l| l.owner.as_str()))
                    .bind(message.lease.as_ref().map(|l| l.until_ms))
            }
        }

        #[async_trait::async_trait]
        impl rill_core::Store for $name {
            async fn create_chat(
                &self,
                user_id: &str,
                bot_id: &str,
            ) -> Result<rill_core::chat::Chat, rill_core::StoreError> {
                self.create_chat_with_id(user_id, bot_id, &$crate::backend::new_id())
                    .await
            }

            async fn create_chat_with_id(
                &self,
                user_id: &str,
                bot_id: &str,
                id: &str,
            ) -> Result<rill_core::chat::Chat, rill_core::StoreError> {
                let row: $crate::rows::ChatRow = sqlx::query_as($crate::sql::INSERT_CHAT)
                    .bind(id)
                    .bind(user_id)
                    .bind(bot_id)
                    .bind($crate::backend::now_ms())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("create chat", e))?;
                Ok(row.into_chat())
            }

            async fn get_chat(
                &self,
                user_id: &str,
                chat_id: &str,
            ) -> Result<Option<rill_core::chat::Chat>, rill_core::StoreError> {
                let row: Option<$crate::rows::ChatRow> = sqlx::query_as($crate::sql::GET_CHAT)
                    .bind(chat_id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("get chat", e))?;
                Ok(row.map($crate::rows::ChatRow::into_chat))
            }

            async fn list_chats(
                &self,
                user_id: &str,
                bot_id: Option<&str>,
                before: Option<rill_core::chat::PageCursor>,
                limit: u32,
            ) -> Result<rill_core::chat::Page<rill_core::chat::Chat>, rill_core::StoreError> {
                let limit = $crate::backend::clamp_limit(limit);
                let sql = match bot_id {
                    Some(_) => $crate::sql::LIST_CHATS_OF_BOT,
                    None => $crate::sql::LIST_CHATS,
                };
                let mut query = sqlx::query_as(sql)
                    .bind(user_id)
                    .bind($crate::backend::upper_bound(before))
                    .bind(i64::from(limit) + 1);
                if let Some(bot_id) = bot_id {
                    query = query.bind(bot_id);
                }
                let rows: Vec<$crate::rows::ChatRow> = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("list chats", e))?;
                let (rows, next_before) =
                    $crate::backend::newest_first_page(rows, limit, |r| r.seq);
                Ok(rill_core::chat::Page {
                    items: rows.into_iter().map($crate::rows::ChatRow::into_chat).collect(),
                    next_before,
                })
            }

            async fn delete_chat(
                &self,
                user_id: &str,
                chat_id: &str,
            ) -> Result<bool, rill_core::StoreError> {
                // The messages go with it: ON DELETE CASCADE.
                let done = sqlx::query($crate::sql::DELETE_CHAT)
                    .bind(chat_id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("delete chat", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_title_if_empty(
                &self,
                chat_id: &str,
                title: &str,
            ) -> Result<(), rill_core::StoreError> {
                sqlx::query($crate::sql::SET_TITLE_IF_EMPTY)
                    .bind(chat_id)
                    .bind(title)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("set title", e))?;
                Ok(())
            }

            async fn insert_message(
                &self,
                message: rill_core::chat::NewMessage,
            ) -> Result<rill_core::chat::Message, rill_core::StoreError> {
                // One statement: the chat's `updated_at` follows by trigger.
                let query = sqlx::query_as($crate::sql::INSERT_MESSAGE);
                let query = Self::bind_message(query, $crate::backend::new_id(), &message)
                    .bind($crate::backend::now_ms());
                let row: $crate::rows::MessageRow = Self::bind_tail(query, &message)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("insert message", e))?;
                row.try_into()
            }

            async fn insert_exchange(
                &self,
                user: rill_core::chat::NewMessage,
                assistant: rill_core::chat::NewMessage,
            ) -> Result<(rill_core::chat::Message, rill_core::chat::Message), rill_core::StoreError>
            {
                // One statement, so both rows exist or neither, in one round trip (a
                // transaction would be four before the answer's first token).
                let (user_id, assistant_id) = ($crate::backend::new_id(), $crate::backend::new_id());
                let query = sqlx::query_as($crate::sql::INSERT_EXCHANGE);
                let query = Self::bind_message(query, user_id.clone(), &user)
                    .bind($crate::backend::now_ms());
                let query = Self::bind_tail(query, &user);
                let query = Self::bind_message(query, assistant_id.clone(), &assistant);
                let rows: Vec<$crate::rows::MessageRow> = Self::bind_tail(query, &assistant)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("insert exchange", e))?;
                let mut question = None;
                let mut answer = None;
                for row in rows {
                    let message: rill_core::chat::Message = row.try_into()?;
                    if message.id == user_id {
                        question = Some(message);
                    } else if message.id == assistant_id {
                        answer = Some(message);
                    }
                }
                match (question, answer) {
                    (Some(q), Some(a)) => Ok((q, a)),
                    _ => Err(rill_core::StoreError::Backend(
                        "insert exchange: the database did not return both rows".to_owned(),
                    )),
                }
            }

            async fn get_message(
                &self,
                message_id: &str,
            ) -> Result<Option<rill_core::chat::Message>, rill_core::StoreError> {
                let row: Option<$crate::rows::MessageRow> =
                    sqlx::query_as($crate::sql::GET_MESSAGE)
                        .bind(message_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| $crate::backend::db_error("get message", e))?;
                row.map(TryInto::try_into).transpose()
            }

            async fn find_by_client_key(
                &self,
                chat_id: &str,
                key: &str,
            ) -> Result<
                Option<(rill_core::chat::Message, Option<rill_core::chat::Message>)>,
                rill_core::StoreError,
            > {
                let row: Option<$crate::rows::MessageRow> =
                    sqlx::query_as($crate::sql::FIND_BY_CLIENT_KEY)
                        .bind(chat_id)
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| $crate::backend::db_error("find by client key", e))?;
                let Some(row) = row else { return Ok(None) };
                let answer: Option<$crate::rows::MessageRow> =
                    sqlx::query_as($crate::sql::ANSWER_AFTER)
                        .bind(chat_id)
                        .bind(row.seq)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| $crate::backend::db_error("answer after", e))?;
                Ok(Some((row.try_into()?, answer.map(TryInto::try_into).transpose()?)))
            }

            async fn set_exchange_start(
                &self,
                message_id: &str,
                epoch: &rill_core::Epoch,
                after: u64,
            ) -> Result<(), rill_core::StoreError> {
                sqlx::query($crate::sql::SET_EXCHANGE_START)
                    .bind(message_id)
                    .bind(epoch.as_str())
                    .bind($crate::rows::to_db_u64(after))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("set exchange start", e))?;
                Ok(())
            }

            async fn exchange_start(
                &self,
                message_id: &str,
            ) -> Result<Option<(rill_core::Epoch, u64)>, rill_core::StoreError> {
                let row: Option<(Option<String>, Option<i64>)> =
                    sqlx::query_as($crate::sql::EXCHANGE_START)
                        .bind(message_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| $crate::backend::db_error("exchange start", e))?;
                Ok(match row {
                    Some((Some(epoch), Some(after))) => rill_core::Epoch::new(&epoch)
                        .map(|epoch| (epoch, $crate::rows::from_db_u64(after))),
                    _ => None,
                })
            }

            async fn list_messages(
                &self,
                chat_id: &str,
                before: Option<rill_core::chat::PageCursor>,
                limit: u32,
            ) -> Result<rill_core::chat::Page<rill_core::chat::Message>, rill_core::StoreError>
            {
                let limit = $crate::backend::clamp_limit(limit);
                let rows: Vec<$crate::rows::MessageRow> =
                    sqlx::query_as($crate::sql::LIST_MESSAGES)
                        .bind(chat_id)
                        .bind($crate::backend::upper_bound(before))
                        .bind(i64::from(limit) + 1)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| $crate::backend::db_error("list messages", e))?;
                let (rows, next_before) =
                    $crate::backend::newest_first_page(rows, limit, |r| r.seq);
                // Fetched newest first to take the newest `limit`; a page reads oldest first.
                let items = rows
                    .into_iter()
                    .rev()
                    .map(TryInto::try_into)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rill_core::chat::Page { items, next_before })
            }

            async fn checkpoint(
                &self,
                message_id: &str,
                owner: &str,
                content: &str,
                parts: &[rill_core::chat::Part],
                offset: u64,
            ) -> Result<(), rill_core::StoreError> {
                sqlx::query($crate::sql::CHECKPOINT)
                    .bind(message_id)
                    .bind(content)
                    .bind($crate::rows::to_db_u64(offset))
                    .bind($crate::backend::now_ms())
                    .bind($crate::rows::parts_json(content, parts))
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("checkpoint", e))?;
                Ok(())
            }

            async fn finish(
                &self,
                message_id: &str,
                owner: Option<&str>,
                outcome: &rill_core::chat::Outcome,
            ) -> Result<bool, rill_core::StoreError> {
                if !outcome.status.is_final() {
                    // Programmer error, but not worth a panic in a server: nothing changes.
                    return Err(rill_core::StoreError::Backend(
                        "finish: the outcome's status must be final, not streaming".into(),
                    ));
                }
                let usage = outcome.usage;
                let done = sqlx::query($crate::sql::FINISH)
                    .bind(message_id)
                    .bind(outcome.status.as_str())
                    .bind(&outcome.content)
                    .bind(&outcome.finish_reason)
                    .bind(usage.map(|u| $crate::rows::to_db_u64(u.input_tokens)))
                    .bind(usage.map(|u| $crate::rows::to_db_u64(u.output_tokens)))
                    .bind(&outcome.error)
                    .bind($crate::backend::now_ms())
                    .bind($crate::rows::parts_json(&outcome.content, &outcome.parts))
                    .bind(usage.and_then(|u| u.reasoning_tokens).map($crate::rows::to_db_u64))
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("finish", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_parts(
                &self,
                message_id: &str,
                content: &str,
                parts: &[rill_core::chat::Part],
            ) -> Result<bool, rill_core::StoreError> {
                let done = sqlx::query($crate::sql::SET_PARTS)
                    .bind(message_id)
                    .bind(content)
                    .bind($crate::rows::parts_json(content, parts))
                    .bind($crate::backend::now_ms())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("set parts", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn checkpoint_offset(
                &self,
                message_id: &str,
            ) -> Result<Option<u64>, rill_core::StoreError> {
                let offset: Option<Option<i64>> =
                    sqlx::query_scalar($crate::sql::CHECKPOINT_OFFSET)
                        .bind(message_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| $crate::backend::db_error("checkpoint offset", e))?;
                Ok(offset.flatten().map($crate::rows::from_db_u64))
            }

            async fn renew_lease(
                &self,
                message_id: &str,
                owner: &str,
                until_ms: i64,
            ) -> Result<bool, rill_core::StoreError> {
                let done = sqlx::query($crate::sql::RENEW_LEASE)
                    .bind(message_id)
                    .bind(owner)
                    .bind(until_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("renew lease", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn take_over(
                &self,
                message_id: &str,
                owner: &str,
                until_ms: i64,
                now_ms: i64,
            ) -> Result<bool, rill_core::StoreError> {
                let done = sqlx::query($crate::sql::TAKE_OVER)
                    .bind(message_id)
                    .bind(owner)
                    .bind(until_ms)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("take over", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn release_lease(
                &self,
                message_id: &str,
                owner: &str,
            ) -> Result<(), rill_core::StoreError> {
                sqlx::query($crate::sql::RELEASE_LEASE)
                    .bind(message_id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("release lease", e))?;
                Ok(())
            }

            async fn orphaned(
                &self,
                now_ms: i64,
                owner: Option<&str>,
            ) -> Result<Vec<rill_core::chat::Message>, rill_core::StoreError> {
                let query = match owner {
                    None => sqlx::query_as($crate::sql::ORPHANED_ALL),
                    Some(owner) => sqlx::query_as($crate::sql::ORPHANED_OF_OWNER)
                        .bind(now_ms)
                        .bind(owner)
                        .bind(now_ms.saturating_sub($crate::backend::UNLEASED_GRACE_MS)),
                };
                let rows: Vec<$crate::rows::MessageRow> = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("orphaned", e))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn ping(&self) -> Result<(), rill_core::StoreError> {
                sqlx::query($crate::sql::PING)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::backend::db_error("ping", e))?;
                Ok(())
            }
        }
    };
}

sql_store!(
    /// The store on SQLite (the default: one file, WAL).
    SqliteStore,
    sqlx::Sqlite
);

sql_store!(
    /// The store on PostgreSQL (several instances sharing one database).
    PgStore,
    sqlx::Postgres
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_at_limit_and_point_at_the_oldest_kept_row() {
        let (rows, next) = newest_first_page(vec![9, 7, 5], 2, |r| *r);
        assert_eq!((rows, next.as_deref()), (vec![9, 7], Some("c7")));
        let (rows, next) = newest_first_page(vec![9, 7], 2, |r| *r);
        assert_eq!((rows, next), (vec![9, 7], None));
        let (rows, next) = newest_first_page(Vec::<i64>::new(), 2, |r| *r);
        assert_eq!((rows, next), (vec![], None));
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(clamp_limit(0), 1);
        assert_eq!(clamp_limit(20), 20);
        assert_eq!(clamp_limit(u32::MAX), MAX_PAGE_LIMIT);
    }
}
