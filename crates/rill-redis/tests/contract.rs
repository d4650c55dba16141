//! The broker contract (rill-test-support) run against the Redis broker: on the test Redis, on
//! a private Redis over TLS, and on a private three-primary Redis Cluster.

mod common;

use rill_test_support::broker_contract as contract;

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if common::skip() {
                    return;
                }
                let cleanup = common::Cleanup::default();
                contract::$name(&common::make(&cleanup)).await;
            }
        )*

        /// Over `rediss://`, trusting the private server's CA.
        mod tls {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if common::skip_private() {
                        return;
                    }
                    let server = common::tls_redis().await;
                    contract::$name(&common::make_with(common::tls_config(&server))).await;
                }
            )*
        }

        /// On a Redis Cluster: keys routed by slot, an epoch per slot, sharded Pub/Sub on each
        /// topic's primary.
        mod cluster {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if common::skip_private() {
                        return;
                    }
                    let cluster = common::redis_cluster().await;
                    contract::$name(&common::make_with(common::cluster_config(&cluster))).await;
                }
            )*
        }
    };
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
