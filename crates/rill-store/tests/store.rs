//! The storage suite: every test is written once against `Arc<dyn Store>` and run on SQLite and
//! on PostgreSQL (each in a fresh database or schema).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rill_core::chat::{Message, MessageStatus, Outcome, PageCursor, Part, Role, Usage};
use rill_core::{Store, StoreError};
use support::{Db, Step, streaming, user};

/// Declares each test twice: `sqlite::name` and `postgres::name`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::on_sqlite(crate::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::on_postgres(crate::$name).await;
                }
            )*
        }
    };
}

suite!(
    chats_belong_to_their_user,
    chat_listing_pages_newest_first,
    messages_round_trip_every_field,
    one_streaming_message_per_chat,
    exchange_is_atomic_under_a_race,
    checkpoint_then_finish_once,
    history_walk_has_no_gap_or_duplicate_while_messages_arrive,
    page_limits_are_clamped,
    crashed_streams_are_orphaned_for_the_next_process,
    leases_expire_and_filter_by_owner,
    deleting_a_chat_deletes_its_messages,
    migrations_run_again_on_an_existing_database,
    client_keys_find_the_first_exchange,
    checkpoints_keep_parts,
    a_lease_is_held_by_one_owner_and_taken_over_only_when_it_ended,
    an_exchange_is_stored_with_its_lease_and_moves_the_chat,
    the_history_revision_moves_with_every_change_a_model_would_see,
);

fn outcome(status: MessageStatus, content: &str) -> Outcome {
    Outcome {
        status,
        content: content.to_owned(),
        parts: vec![Part::text(content)],
        finish_reason: None,
        usage: None,
        error: None,
    }
}

async fn message(store: &Arc<dyn Store>, id: &str) -> Message {
    match store.get_message(id).await.step("get message") {
        Some(message) => message,
        None => panic!("message {id} is missing"),
    }
}

async fn all_messages(store: &Arc<dyn Store>, chat_id: &str) -> Vec<Message> {
    let page = store
        .list_messages(chat_id, None, rill_store::MAX_PAGE_LIMIT)
        .await
        .step("list messages");
    assert_eq!(
        page.next_before, None,
        "test chats stay under one full page"
    );
    page.items
}

async fn chats_belong_to_their_user(db: Db) {
    let store = db.store;
    let a1 = store.create_chat("alice", "demo").await.step("create");
    let a2 = store.create_chat("alice", "openai").await.step("create");
    let b1 = store.create_chat("bob", "demo").await.step("create");
    assert_ne!(a1.id, a2.id);
    assert_eq!((a1.user_id.as_str(), a1.bot_id.as_str()), ("alice", "demo"));
    assert_eq!(a1.title, None);
    assert!(a1.created_at_ms > 0 && a1.updated_at_ms >= a1.created_at_ms);

    assert_eq!(
        store.get_chat("alice", &a1.id).await.step("get"),
        Some(a1.clone())
    );
    // Another user's chat looks exactly like one that does not exist.
    assert_eq!(store.get_chat("bob", &a1.id).await.step("get"), None);
    assert_eq!(
        store.get_chat("alice", "no-such-chat").await.step("get"),
        None
    );
    assert!(!store.delete_chat("bob", &a1.id).await.step("delete"));
    assert!(store.get_chat("alice", &a1.id).await.step("get").is_some());

    let mine = store.list_chats("alice", None, None, 10).await.step("list");
    let ids: Vec<_> = mine.items.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [a2.id.as_str(), a1.id.as_str()],
        "newest first, bob's excluded"
    );
    assert_eq!(mine.next_before, None);
    let demo = store
        .list_chats("alice", Some("demo"), None, 10)
        .await
        .step("list");
    assert_eq!(demo.items, vec![a1.clone()]);
    let bobs = store.list_chats("bob", None, None, 10).await.step("list");
    assert_eq!(bobs.items, vec![b1.clone()]);

    store
        .set_title_if_empty(&a1.id, "first")
        .await
        .step("title");
    store
        .set_title_if_empty(&a1.id, "second")
        .await
        .step("title");
    let titled = store.get_chat("alice", &a1.id).await.step("get");
    assert_eq!(titled.and_then(|c| c.title).as_deref(), Some("first"));

    assert!(store.delete_chat("alice", &a1.id).await.step("delete"));
    assert!(
        !store
            .delete_chat("alice", &a1.id)
            .await
            .step("delete again")
    );
    assert_eq!(store.get_chat("alice", &a1.id).await.step("get"), None);
    let mine = store.list_chats("alice", None, None, 10).await.step("list");
    assert_eq!(mine.items, vec![a2]);
    assert_eq!(store.get_chat("bob", &b1.id).await.step("get"), Some(b1));
}

async fn chat_listing_pages_newest_first(db: Db) {
    let store = db.store;
    let mut created = Vec::new();
    for i in 0..7 {
        let bot = if i % 2 == 0 { "demo" } else { "other" };
        created.push(store.create_chat("alice", bot).await.step("create").id);
        store.create_chat("bob", bot).await.step("create");
    }
    created.reverse();
    for (bot, expected) in [
        (None, created.clone()),
        (
            Some("demo"),
            created.iter().step_by(2).cloned().collect::<Vec<_>>(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut before = None;
        for _ in 0..10 {
            let page = store.list_chats("alice", bot, before, 3).await.step("list");
            assert!(page.items.len() <= 3);
            seen.extend(page.items.into_iter().map(|c| c.id));
            match page.next_before {
                Some(cursor) => before = Some(PageCursor::parse(&cursor).step_some("cursor")),
                None => break,
            }
        }
        assert_eq!(seen, expected, "bot filter {bot:?}");
    }
}

async fn messages_round_trip_every_field(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");

    let question = store
        .insert_message(user(&chat.id, "Hi 안녕 👋"))
        .await
        .step("insert");
    assert_eq!(question.chat_id, chat.id);
    assert_eq!(question.role, Role::User);
    assert_eq!(question.content, "Hi 안녕 👋");
    assert_eq!(question.status, MessageStatus::Complete);
    assert_eq!(
        (question.bot_id.as_deref(), question.model.as_deref()),
        (None, None)
    );
    assert_eq!(
        (question.finish_reason.as_deref(), question.usage),
        (None, None)
    );
    assert_eq!(question.error, None);
    assert_eq!(
        question.parts,
        [Part::text("Hi 안녕 👋")],
        "text is its one part"
    );
    assert!(question.created_at_ms > 0);
    assert_eq!(message(&store, &question.id).await, question);

    let mut system = user(&chat.id, "be brief");
    system.role = Role::System;
    let system = store.insert_message(system).await.step("insert");
    assert_eq!(message(&store, &system.id).await.role, Role::System);

    let answer = store
        .insert_message(streaming(&chat.id))
        .await
        .step("insert");
    assert!(answer.seq > system.seq && system.seq > question.seq);
    assert_eq!(answer.status, MessageStatus::Streaming);
    assert_eq!(answer.bot_id.as_deref(), Some("demo"));
    assert_eq!(answer.model.as_deref(), Some("demo-1"));
    assert_eq!(message(&store, &answer.id).await, answer);
    let parts = vec![
        Part::Reasoning {
            text: "생각 중…".to_owned(),
            signature: Some("sig==".to_owned()),
            redacted: None,
        },
        Part::Reasoning {
            text: String::new(),
            signature: None,
            redacted: Some("opaque-blob".to_owned()),
        },
        Part::ToolCall {
            id: "call_1".to_owned(),
            name: "weather".to_owned(),
            input_text: r#"{"city":"Seoul"}"#.to_owned(),
            input: Some(serde_json::json!({"city": "Seoul"})),
            output: Some(serde_json::json!({"temp": 21, "unit": "C"})),
            error: None,
        },
        Part::Source {
            url: "https://example.com/seoul".to_owned(),
            title: Some("Seoul weather".to_owned()),
        },
        Part::text("Hello 세계 🌍"),
    ];
    let done = Outcome {
        status: MessageStatus::Complete,
        content: "Hello 세계 🌍".to_owned(),
        parts: parts.clone(),
        finish_reason: Some("stop".to_owned()),
        usage: Some(Usage {
            input_tokens: 12,
            output_tokens: 345,
            reasoning_tokens: Some(200),
        }),
        error: None,
    };
    assert!(store.finish(&answer.id, None, &done).await.step("finish"));
    let stored = message(&store, &answer.id).await;
    let expected = Message {
        status: MessageStatus::Complete,
        content: done.content.clone(),
        parts,
        finish_reason: done.finish_reason.clone(),
        usage: done.usage,
        updated_at_ms: stored.updated_at_ms,
        ..answer.clone()
    };
    assert_eq!(stored, expected);
    assert!(stored.updated_at_ms >= stored.created_at_ms);

    let failed = store
        .insert_message(streaming(&chat.id))
        .await
        .step("insert");
    let error = Outcome {
        status: MessageStatus::Error,
        content: "partial".to_owned(),
        parts: vec![Part::text("partial")],
        finish_reason: Some("error".to_owned()),
        usage: None,
        error: Some("the model provider failed".to_owned()),
    };
    assert!(store.finish(&failed.id, None, &error).await.step("finish"));
    let stored = message(&store, &failed.id).await;
    assert_eq!(stored.status, MessageStatus::Error);
    assert_eq!(stored.error, error.error);
    assert_eq!(stored.usage, None);

    let all = all_messages(&store, &chat.id).await;
    let ids: Vec<_> = all.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [&question.id, &system.id, &answer.id, &failed.id]);

    assert_eq!(store.get_message("no-such-message").await.step("get"), None);
    let orphan = store.insert_message(user("no-such-chat", "hello")).await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
}

async fn one_streaming_message_per_chat(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let other = store.create_chat("alice", "demo").await.step("create");
    let (_, answer) = store
        .insert_exchange(user(&chat.id, "one"), streaming(&chat.id))
        .await
        .step("first exchange");

    let second = store.insert_message(streaming(&chat.id)).await;
    assert!(matches!(second, Err(StoreError::Busy)), "{second:?}");
    let again = store
        .insert_exchange(user(&chat.id, "two"), streaming(&chat.id))
        .await;
    assert!(matches!(again, Err(StoreError::Busy)), "{again:?}");
    // Neither half of the refused exchange was kept.
    assert_eq!(all_messages(&store, &chat.id).await.len(), 2);
    // Other chats are independent.
    store
        .insert_exchange(user(&other.id, "x"), streaming(&other.id))
        .await
        .step("exchange in another chat");

    assert!(
        store
            .finish(&answer.id, None, &outcome(MessageStatus::Stopped, "o"))
            .await
            .step("finish")
    );
    store
        .insert_exchange(user(&chat.id, "three"), streaming(&chat.id))
        .await
        .step("exchange after finish");
    let all = all_messages(&store, &chat.id).await;
    let contents: Vec<_> = all.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["one", "o", "three", ""]);
}

async fn exchange_is_atomic_under_a_race(db: Db) {
    // Eight requests for one chat at once, over separate pool connections: the database lets
    // exactly one through, and the others leave nothing behind.
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let chat_id = chat.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_exchange(user(&chat_id, &format!("q{i}")), streaming(&chat_id))
                .await
        }));
    }
    let (mut won, mut busy) = (0, 0);
    for task in tasks {
        match task.await.step("join") {
            Ok(_) => won += 1,
            Err(StoreError::Busy) => busy += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((won, busy), (1, 7));
    let all = all_messages(&store, &chat.id).await;
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].role, all[1].status),
        (Role::User, MessageStatus::Streaming)
    );
}

async fn checkpoint_then_finish_once(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let (_, answer) = store
        .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
        .await
        .step("exchange");
    assert_eq!(
        store.checkpoint_offset(&answer.id).await.step("offset"),
        None
    );

    store
        .checkpoint(&answer.id, "test-owner", "Hel", &[Part::text("Hel")], 3)
        .await
        .step("checkpoint");
    let saved = message(&store, &answer.id).await;
    assert_eq!(
        (saved.content.as_str(), saved.status),
        ("Hel", MessageStatus::Streaming)
    );
    assert_eq!(
        store.checkpoint_offset(&answer.id).await.step("offset"),
        Some(3)
    );
    store
        .checkpoint(&answer.id, "test-owner", "Hello", &[Part::text("Hello")], 7)
        .await
        .step("checkpoint");
    assert_eq!(
        store.checkpoint_offset(&answer.id).await.step("offset"),
        Some(7)
    );

    // A non-final outcome is refused and changes nothing.
    let refused = store
        .finish(&answer.id, None, &outcome(MessageStatus::Streaming, "x"))
        .await;
    assert!(refused.is_err());
    assert_eq!(message(&store, &answer.id).await.content, "Hello");

    let done = outcome(MessageStatus::Complete, "Hello world");
    assert!(store.finish(&answer.id, None, &done).await.step("finish"));
    let finished = message(&store, &answer.id).await;
    assert_eq!(finished.status, MessageStatus::Complete);

    // Whoever comes second (a reaper, a late stop, a slow checkpoint) changes nothing.
    let late = outcome(MessageStatus::Interrupted, "other");
    assert!(
        !store
            .finish(&answer.id, None, &late)
            .await
            .step("finish again")
    );
    store
        .checkpoint(
            &answer.id,
            "test-owner",
            "garbage",
            &[Part::text("garbage")],
            99,
        )
        .await
        .step("late checkpoint");
    assert!(
        !store
            .renew_lease(&answer.id, "late", i64::MAX)
            .await
            .step("late lease"),
        "a finished message's lease cannot be renewed: its generation must stop"
    );
    assert_eq!(message(&store, &answer.id).await, finished);
    assert_eq!(
        store.checkpoint_offset(&answer.id).await.step("offset"),
        Some(7)
    );
    assert!(
        store
            .orphaned(i64::MAX, None)
            .await
            .step("orphaned")
            .is_empty()
    );

    assert!(
        !store
            .finish("no-such-message", None, &done)
            .await
            .step("finish unknown")
    );
    assert_eq!(
        store
            .checkpoint_offset("no-such-message")
            .await
            .step("offset"),
        None
    );
}

/// Walks the chat's history page by page with `limit` while another task keeps adding
/// messages, and returns the ids seen, oldest first, after checking the walk's shape.
async fn walk(store: &Arc<dyn Store>, chat_id: &str, limit: u32) -> (Vec<String>, i64) {
    let mut pages: Vec<Vec<Message>> = Vec::new();
    let mut before = None;
    for _ in 0..1000 {
        let page = store
            .list_messages(chat_id, before, limit)
            .await
            .step("page");
        assert!(
            page.items.windows(2).all(|w| w[0].seq < w[1].seq),
            "oldest first in a page"
        );
        let next = page.next_before.clone();
        match &next {
            Some(cursor) => {
                assert_eq!(
                    page.items.len(),
                    limit as usize,
                    "only the last page is short"
                );
                assert_eq!(cursor, &PageCursor(page.items[0].seq).to_string());
            }
            None => assert!(page.items.len() <= limit as usize),
        }
        pages.push(page.items);
        match next {
            Some(cursor) => before = Some(PageCursor::parse(&cursor).step_some("cursor")),
            None => break,
        }
        // Give the writer a turn between page reads.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let newest = pages.first().and_then(|p| p.last()).map_or(0, |m| m.seq);
    let ids: Vec<String> = pages.into_iter().rev().flatten().map(|m| m.id).collect();
    (ids, newest)
}

async fn history_walk_has_no_gap_or_duplicate_while_messages_arrive(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let noise = store.create_chat("bob", "demo").await.step("create");
    let mut original = Vec::new();
    for i in 0..250 {
        // Messages of another chat in between, so a chat's seqs have gaps as in real use.
        if i % 10 == 0 {
            store
                .insert_message(user(&noise.id, "noise"))
                .await
                .step("noise");
        }
        let role_message = store.insert_message(user(&chat.id, &format!("m{i}"))).await;
        original.push(role_message.step("insert").id);
    }

    for limit in [20, 7, 250, 251] {
        // One writer per chat, as in rill (one generation at a time), plus writes elsewhere.
        let writer = {
            let store = store.clone();
            let (chat_id, noise_id) = (chat.id.clone(), noise.id.clone());
            tokio::spawn(async move {
                for i in 0..60 {
                    store
                        .insert_message(user(&chat_id, &format!("new{i}")))
                        .await
                        .step("new");
                    store
                        .insert_message(user(&noise_id, "noise"))
                        .await
                        .step("noise");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let (seen, newest) = walk(&store, &chat.id, limit).await;
        writer.await.step("writer");

        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "limit {limit}: a message was seen twice"
        );
        // Exactly the messages that existed when the first page was read, in order.
        let expected: Vec<String> = all_messages(&store, &chat.id)
            .await
            .into_iter()
            .filter(|m| m.seq <= newest)
            .map(|m| m.id)
            .collect();
        assert_eq!(
            seen, expected,
            "limit {limit}: the walk has a gap or is out of order"
        );
        assert_eq!(
            seen[..250],
            original[..],
            "limit {limit}: the original 250 are all there"
        );
        if limit == 251 {
            // Every write of the four writers landed.
            assert_eq!(all_messages(&store, &chat.id).await.len(), 250 + 4 * 60);
        }
    }
}

async fn page_limits_are_clamped(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    for i in 0..3 {
        store
            .insert_message(user(&chat.id, &format!("m{i}")))
            .await
            .step("insert");
        store.create_chat("alice", "demo").await.step("create");
    }
    // Zero would be a page that never advances: it is read as one.
    let page = store.list_messages(&chat.id, None, 0).await.step("list");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].content, "m2");
    assert!(page.next_before.is_some());
    let page = store.list_chats("alice", None, None, 0).await.step("list");
    assert_eq!(page.items.len(), 1);
    assert!(page.next_before.is_some());
    let page = store
        .list_messages(&chat.id, None, u32::MAX)
        .await
        .step("list");
    assert_eq!((page.items.len(), page.next_before), (3, None));
    // A cursor before everything, or for a chat that does not exist: an empty last page.
    let page = store
        .list_messages(&chat.id, Some(PageCursor(0)), 20)
        .await
        .step("list");
    assert_eq!((page.items.len(), page.next_before), (0, None));
    let page = store
        .list_messages("no-such-chat", None, 20)
        .await
        .step("list");
    assert_eq!((page.items.len(), page.next_before), (0, None));
}

async fn crashed_streams_are_orphaned_for_the_next_process(db: Db) {
    let crashed = db.store.clone();
    let chat = crashed.create_chat("alice", "demo").await.step("create");
    let calm = crashed.create_chat("alice", "demo").await.step("create");
    let (question, answer) = crashed
        .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
        .await
        .step("exchange");
    crashed
        .checkpoint(
            &answer.id,
            "test-owner",
            "partial 답",
            &[Part::text("partial 답")],
            4,
        )
        .await
        .step("checkpoint");
    let (_, finished) = crashed
        .insert_exchange(user(&calm.id, "q"), streaming(&calm.id))
        .await
        .step("exchange");
    let done = outcome(MessageStatus::Complete, "done");
    assert!(
        crashed
            .finish(&finished.id, None, &done)
            .await
            .step("finish")
    );

    // The "crashed" process never finishes its message; a new one opens the same database.
    let restarted = db.reopen().await;
    let orphans = restarted.orphaned(rill_now(), None).await.step("orphaned");
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].id, answer.id);
    assert_eq!(orphans[0].content, "partial 답");
    assert_eq!(
        restarted.checkpoint_offset(&answer.id).await.step("offset"),
        Some(4)
    );

    let interrupted = Outcome {
        finish_reason: Some("interrupted".to_owned()),
        ..outcome(MessageStatus::Interrupted, &orphans[0].content)
    };
    assert!(
        restarted
            .finish(&answer.id, None, &interrupted)
            .await
            .step("finish")
    );
    assert!(
        restarted
            .orphaned(rill_now(), None)
            .await
            .step("orphaned")
            .is_empty()
    );
    // Had the old process survived after all, its late finish would change nothing.
    assert!(
        !crashed
            .finish(&answer.id, None, &done)
            .await
            .step("late finish")
    );

    let history = all_messages(&restarted, &chat.id).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0], question);
    assert_eq!(history[1].status, MessageStatus::Interrupted);
    assert_eq!(history[1].content, "partial 답");
    // The chat takes a new message.
    restarted
        .insert_exchange(user(&chat.id, "again"), streaming(&chat.id))
        .await
        .step("exchange after recovery");
}

async fn leases_expire_and_filter_by_owner(db: Db) {
    let store = db.store;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let chat = store.create_chat("alice", "demo").await.step("create");
        let (_, answer) = store
            .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
            .await
            .step("exchange");
        ids.push(answer.id);
    }
    let (a, b, unleased) = (&ids[0], &ids[1], &ids[2]);
    // Lease times are compared with the `now` passed in, not the wall clock.
    assert!(
        store
            .renew_lease(a, "instance-a", 2_000)
            .await
            .step("lease"),
        "a streaming message's lease is renewed"
    );
    store
        .renew_lease(b, "instance-b", 5_000)
        .await
        .step("lease");

    let orphaned = async |now: i64, owner: Option<&str>| -> Vec<String> {
        let found = store.orphaned(now, owner).await.step("orphaned");
        found.into_iter().map(|m| m.id).collect()
    };
    assert_eq!(
        orphaned(1_000, Some("instance-a")).await,
        Vec::<String>::new()
    );
    // A lease that ends exactly now has not ended before now.
    assert_eq!(
        orphaned(2_000, Some("instance-c")).await,
        Vec::<String>::new()
    );
    assert_eq!(orphaned(3_000, Some("instance-b")).await, vec![a.clone()]);
    assert_eq!(orphaned(3_000, Some("instance-a")).await, vec![a.clone()]);
    assert_eq!(
        orphaned(6_000, Some("instance-c")).await,
        vec![a.clone(), b.clone()]
    );
    // Without an owner (single-instance start-up): every streaming message, leased or not.
    assert_eq!(
        orphaned(0, None).await,
        vec![a.clone(), b.clone(), unleased.clone()]
    );

    // Renewing moves the end; another instance may take over an expired lease.
    store
        .renew_lease(a, "instance-a", 10_000)
        .await
        .step("renew");
    assert_eq!(orphaned(6_000, Some("instance-c")).await, vec![b.clone()]);
    assert!(
        store
            .take_over(b, "instance-c", 20_000, 6_000)
            .await
            .step("take over")
    );
    assert_eq!(orphaned(12_000, Some("instance-b")).await, vec![a.clone()]);

    // A message that never got a lease (its process died right after inserting it) is taken
    // by any instance once it has been silent for a minute, and not before.
    let soon = rill_now() + 30_000;
    assert_eq!(
        orphaned(soon, Some("instance-c")).await,
        vec![a.clone(), b.clone()]
    );
    let later = rill_now() + 61_000;
    assert_eq!(
        orphaned(later, Some("instance-c")).await,
        vec![a.clone(), b.clone(), unleased.clone()]
    );

    let done = outcome(MessageStatus::Interrupted, "");
    assert!(store.finish(a, None, &done).await.step("finish"));
    assert_eq!(
        orphaned(i64::MAX, Some("instance-c")).await,
        vec![b.clone(), unleased.clone()]
    );
}

async fn deleting_a_chat_deletes_its_messages(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let kept = store.create_chat("alice", "demo").await.step("create");
    let (question, answer) = store
        .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
        .await
        .step("exchange");
    let other = store
        .insert_message(user(&kept.id, "stay"))
        .await
        .step("insert");

    assert!(store.delete_chat("alice", &chat.id).await.step("delete"));
    assert_eq!(store.get_message(&question.id).await.step("get"), None);
    assert_eq!(store.get_message(&answer.id).await.step("get"), None);
    assert!(all_messages(&store, &chat.id).await.is_empty());
    assert!(store.orphaned(0, None).await.step("orphaned").is_empty());
    assert_eq!(store.get_message(&other.id).await.step("get"), Some(other));
    // A streaming message of a deleted chat can no longer be finished.
    let done = outcome(MessageStatus::Complete, "late");
    assert!(!store.finish(&answer.id, None, &done).await.step("finish"));
}

async fn migrations_run_again_on_an_existing_database(db: Db) {
    let chat = db.store.create_chat("alice", "demo").await.step("create");
    for _ in 0..2 {
        let again = db.reopen().await;
        again.ping().await.step("ping");
        assert_eq!(
            again.get_chat("alice", &chat.id).await.step("get"),
            Some(chat.clone())
        );
    }
}

fn rill_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unwraps an `Option`, naming what was missing.
trait StepSome<T> {
    fn step_some(self, what: &str) -> T;
}

impl<T> StepSome<T> for Option<T> {
    fn step_some(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("{what} is missing"),
        }
    }
}

async fn client_keys_find_the_first_exchange(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let other = store.create_chat("alice", "demo").await.step("create");
    let keyed = |chat_id: &str, content: &str| {
        let mut m = user(chat_id, content);
        m.client_key = Some("key-1".to_owned());
        m
    };
    assert_eq!(
        store
            .find_by_client_key(&chat.id, "key-1")
            .await
            .step("find"),
        None
    );
    let (question, answer) = store
        .insert_exchange(keyed(&chat.id, "hello"), streaming(&chat.id))
        .await
        .step("exchange");
    let found = store
        .find_by_client_key(&chat.id, "key-1")
        .await
        .step("find");
    assert_eq!(found, Some((question.clone(), Some(answer.clone()))));

    // The same key again in this chat: refused by the database, and nothing is stored (not
    // even the placeholder of the transaction).
    assert!(
        store
            .finish(&answer.id, None, &outcome(MessageStatus::Complete, "hi"))
            .await
            .step("finish")
    );
    let again = store
        .insert_exchange(keyed(&chat.id, "hello"), streaming(&chat.id))
        .await;
    assert!(matches!(again, Err(StoreError::DuplicateKey)), "{again:?}");
    assert_eq!(all_messages(&store, &chat.id).await.len(), 2);
    // Keys are per chat.
    store
        .insert_exchange(keyed(&other.id, "hello"), streaming(&other.id))
        .await
        .step("same key, other chat");

    // Where the exchange starts in the log.
    assert_eq!(store.exchange_start(&answer.id).await.step("start"), None);
    let epoch = rill_core::Epoch::new("ep1").expect("a valid epoch");
    store
        .set_exchange_start(&answer.id, &epoch, 41)
        .await
        .step("set start");
    assert_eq!(
        store.exchange_start(&answer.id).await.step("start"),
        Some((epoch, 41))
    );
}

async fn checkpoints_keep_parts(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let (_, answer) = store
        .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
        .await
        .step("exchange");
    let parts = vec![
        Part::Reasoning {
            text: "hmm".to_owned(),
            signature: None,
            redacted: None,
        },
        Part::ToolCall {
            id: "t1".to_owned(),
            name: "f".to_owned(),
            input_text: "{\"a\":".to_owned(),
            input: None,
            output: None,
            error: None,
        },
    ];
    store
        .checkpoint(&answer.id, "test-owner", "", &parts, 5)
        .await
        .step("checkpoint");
    let saved = message(&store, &answer.id).await;
    assert_eq!(saved.parts, parts);
    assert_eq!(saved.content, "");
    // A crash now: the orphan keeps the parts it had.
    let orphans = store.orphaned(i64::MAX, None).await.step("orphaned");
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].parts, parts);
}

async fn a_lease_is_held_by_one_owner_and_taken_over_only_when_it_ended(db: Db) {
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let (_, answer) = store
        .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
        .await
        .step("exchange");
    let now = rill_now();
    assert!(
        store
            .renew_lease(&answer.id, "a", now + 10_000)
            .await
            .step("renew")
    );
    // Another instance can neither renew it nor take it while it runs.
    assert!(
        !store
            .renew_lease(&answer.id, "b", now + 10_000)
            .await
            .step("renew b")
    );
    assert!(
        !store
            .take_over(&answer.id, "b", now + 10_000, now)
            .await
            .step("take")
    );
    // A lease that ended can be taken, by one instance only.
    assert!(
        store
            .take_over(&answer.id, "b", now + 20_000, now + 15_000)
            .await
            .step("take")
    );
    assert!(
        !store
            .take_over(&answer.id, "c", now + 20_000, now + 15_000)
            .await
            .step("take again")
    );
    // The old owner now loses: no renewal, no checkpoint, no finish.
    assert!(
        !store
            .renew_lease(&answer.id, "a", now + 30_000)
            .await
            .step("renew a")
    );
    store
        .checkpoint(&answer.id, "a", "stale", &[Part::text("stale")], 9)
        .await
        .step("stale checkpoint");
    assert_eq!(message(&store, &answer.id).await.content, "");
    let done = outcome(MessageStatus::Interrupted, "stale");
    assert!(
        !store
            .finish(&answer.id, Some("a"), &done)
            .await
            .step("stale finish")
    );
    store
        .checkpoint(&answer.id, "b", "fresh", &[Part::text("fresh")], 10)
        .await
        .step("checkpoint");
    assert_eq!(message(&store, &answer.id).await.content, "fresh");
    // Released by its owner: another instance takes it at once.
    store.release_lease(&answer.id, "b").await.step("release");
    assert!(
        store
            .take_over(&answer.id, "c", now + 40_000, now)
            .await
            .step("take released")
    );
    let done = outcome(MessageStatus::Complete, "fresh and done");
    assert!(
        store
            .finish(&answer.id, Some("c"), &done)
            .await
            .step("finish")
    );
    assert_eq!(
        message(&store, &answer.id).await.status,
        MessageStatus::Complete
    );
}

async fn an_exchange_is_stored_with_its_lease_and_moves_the_chat(db: Db) {
    // One statement stores both rows (question first), the placeholder's lease, and the chat's
    // new `updated_at` (by trigger).
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut placeholder = streaming(&chat.id);
    placeholder.lease = Some(rill_core::chat::Lease {
        owner: "instance-a".to_owned(),
        until_ms: 5_000,
    });
    let (question, answer) = store
        .insert_exchange(user(&chat.id, "q"), placeholder)
        .await
        .step("exchange");
    assert_eq!((question.role, answer.role), (Role::User, Role::Assistant));
    assert_eq!(
        (question.content.as_str(), answer.content.as_str()),
        ("q", "")
    );
    assert!(
        question.seq < answer.seq,
        "{} < {}",
        question.seq,
        answer.seq
    );
    let touched = store
        .get_chat("alice", &chat.id)
        .await
        .step("get chat")
        .expect("the chat");
    assert_eq!(touched.updated_at_ms, question.created_at_ms);
    assert!(touched.updated_at_ms > chat.updated_at_ms);

    // The lease came with the row: held by its owner until 5 000, taken by no one before.
    let orphaned = async |now: i64, owner: &str| -> Vec<String> {
        let found = store.orphaned(now, Some(owner)).await.step("orphaned");
        found.into_iter().map(|m| m.id).collect()
    };
    assert_eq!(orphaned(4_000, "instance-b").await, Vec::<String>::new());
    assert_eq!(orphaned(6_000, "instance-b").await, vec![answer.id.clone()]);
    assert!(
        !store
            .renew_lease(&answer.id, "instance-b", 9_000)
            .await
            .step("renew by another"),
        "another instance cannot renew a lease it does not hold"
    );

    // A plain insert moves the chat too.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .finish(&answer.id, None, &outcome(MessageStatus::Complete, "a"))
            .await
            .step("finish")
    );
    let more = store
        .insert_message(user(&chat.id, "later"))
        .await
        .step("insert");
    let touched = store
        .get_chat("alice", &chat.id)
        .await
        .step("get chat")
        .expect("the chat");
    assert_eq!(touched.updated_at_ms, more.created_at_ms);
}

async fn the_history_revision_moves_with_every_change_a_model_would_see(db: Db) {
    // The engine's history cache counts on these exact steps (an exchange is two changes, a
    // final state one, a checkpoint none): a step that moved the revision less than counted
    // could make another instance's change look like ours.
    let store = db.store;
    let chat = store.create_chat("alice", "demo").await.step("create");
    let revision = async || {
        store
            .get_chat("alice", &chat.id)
            .await
            .step("get chat")
            .expect("the chat")
            .history_revision
    };
    let start = revision().await;
    assert_eq!(start, chat.history_revision, "created as read");
    assert_eq!(start.changes, 0);

    let (_, answer) = store
        .insert_exchange(user(&chat.id, "q"), streaming(&chat.id))
        .await
        .step("exchange");
    assert_eq!(revision().await, start.after(2), "an exchange: two rows");

    // What an answer being written does, and bookkeeping: no change.
    let epoch = rill_core::Epoch::new("ep1").expect("a valid epoch");
    store
        .set_exchange_start(&answer.id, &epoch, 3)
        .await
        .step("exchange start");
    assert!(
        store
            .take_over(&answer.id, "a", 9_000, 1)
            .await
            .step("take over")
    );
    assert!(
        store
            .renew_lease(&answer.id, "a", 10_000)
            .await
            .step("renew")
    );
    store
        .checkpoint(&answer.id, "a", "partial", &[Part::text("partial")], 7)
        .await
        .step("checkpoint");
    store.release_lease(&answer.id, "a").await.step("release");
    assert!(
        !store
            .set_parts(&answer.id, "x", &[Part::text("x")])
            .await
            .step("set parts while streaming"),
        "refused while streaming"
    );
    assert_eq!(revision().await, start.after(2), "nothing a model is sent");

    assert!(
        store
            .finish(&answer.id, None, &outcome(MessageStatus::Complete, "a"))
            .await
            .step("finish")
    );
    assert_eq!(revision().await, start.after(3), "the final state: one");
    assert!(
        !store
            .finish(&answer.id, None, &outcome(MessageStatus::Error, "b"))
            .await
            .step("finish again"),
        "finished once"
    );
    assert_eq!(revision().await, start.after(3), "a refused write: none");

    assert!(
        store
            .set_parts(&answer.id, "a", &[Part::text("a")])
            .await
            .step("set parts")
    );
    assert_eq!(revision().await, start.after(4), "tool results: one");
    store
        .insert_message(user(&chat.id, "later"))
        .await
        .step("insert");
    assert_eq!(revision().await, start.after(5), "a message: one");

    // The same id again, after a delete: another chat, whatever its count.
    let mine = store
        .create_chat_with_id("alice", "demo", "reused-id")
        .await
        .step("create with id");
    assert!(store.delete_chat("alice", "reused-id").await.step("delete"));
    let again = store
        .create_chat_with_id("alice", "demo", "reused-id")
        .await
        .step("create again");
    assert_eq!(
        again.history_revision.changes,
        mine.history_revision.changes
    );
    assert_ne!(again.history_revision, mine.history_revision);
}
