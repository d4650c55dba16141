//! Load and latency scenarios behind rill bench.
