//! Load and latency scenarios behind `rill bench`: idle `connections`, topic `fanout`,
//! demo-bot `chat` and memory after `stalled` readers, against rill or (for the side-by-side comparison) nchan, Pushpin and a
//! hand-rolled Node.js server.
//!
//! The load generator is meant never to be the bottleneck: subscribers are raw tokio TCP
//! streams (see [`wire`]) reading in batches into one small buffer each, events are parsed in
//! place with `rill_sse::Parser`, and latencies are recorded once per read, not per event.
//! Every scenario reports the generator's own CPU use so a reader can check that claim.

mod chat;
mod connections;
mod error;
mod fanout;
mod proc;
mod progress;
mod report;
mod stalled;
mod target;
mod wire;

pub use chat::{ChatFigures, ChatOptions, ChatReport, run_chat};
pub use connections::{ConnectionsOptions, ConnectionsReport, run_connections};
pub use error::BenchError;
pub use fanout::{FanoutOptions, FanoutReport, FanoutStep, FindMax, run_fanout};
pub use proc::{CpuUse, MemoryUse, discover_server_pids, raise_open_files_limit};
pub use report::Table;
pub use stalled::{StalledOptions, StalledReport, StalledRound, run_stalled};
pub use target::{Flavor, Target};
