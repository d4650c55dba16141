//! The broker contract (rill-test-support) run against the in-process broker, so both brokers
//! are held to the same checks.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rill_core::Broker;
use rill_hub::{MemoryBroker, Retention};
use rill_test_support::broker_contract::{self as contract, MakeBroker, Options};

fn make() -> MakeBroker {
    Box::new(|options: Options| {
        async move {
            let retention = Retention {
                max_events: usize::try_from(options.retention_count).unwrap_or(usize::MAX),
                max_age: Duration::from_secs(3600),
            };
            let broker: Arc<dyn Broker> = MemoryBroker::new(retention);
            broker
        }
        .boxed()
    })
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            contract::$name(&make()).await;
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
