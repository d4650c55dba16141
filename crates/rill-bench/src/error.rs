//! The errors of the bench scenarios.

use std::net::SocketAddr;

/// Why a scenario could not run (not why a measurement was poor: that is in the report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The server URL is unusable.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Connecting or talking to the server failed.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server answered a subscribe or publish with something unexpected.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// An HTTP request (publish, chat) failed.
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A setting is out of range.
    #[error("invalid option: {0}")]
    Option(String),
    /// The server's processes could not be found or read (`/proc`): no memory to measure.
    #[error("cannot read the server's memory: pass --server-pid")]
    NoServerProcess,
    /// Too few subscribers could connect to run the scenario meaningfully.
    #[error("only {connected} of {wanted} subscribers connected (first error: {first_error})")]
    TooFewSubscribers {
        connected: usize,
        wanted: usize,
        first_error: String,
    },
}
