//! Server-Sent Events wire format: a spec-exact incremental parser and an encoder. No I/O.
