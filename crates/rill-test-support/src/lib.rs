//! Test helpers: a fake LLM upstream with fault injection, a TestServer on port 0, private
//! Redis servers (TLS, Cluster).

pub mod broker_contract;
pub mod fake_upstream;
pub mod redis_servers;
pub mod upstream_streams;
