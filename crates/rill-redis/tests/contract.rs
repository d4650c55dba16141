//! The broker contract (rill-test-support) run against the Redis broker.

mod common;

use rill_test_support::broker_contract as contract;

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if common::skip() {
                return;
            }
            let cleanup = common::Cleanup::default();
            contract::$name(&common::make(&cleanup)).await;
        }
    )*};
}

contract_tests!(
    offsets_start_at_one,
    topics_are_independent,
    read_returns_what_follows,
    retention_by_count,
    attach_gets_live_events_until_detach,
    concurrent_publishers,
    attach_while_publishing,
);
