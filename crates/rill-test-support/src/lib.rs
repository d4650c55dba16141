//! Test helpers: a fake LLM upstream with fault injection, a TestServer on port 0.

pub mod broker_contract;
pub mod fake_upstream;
