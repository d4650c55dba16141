//! The Redis broker: a Stream per topic for replay, Pub/Sub for live fan-out.
