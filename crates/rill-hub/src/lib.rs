//! The in-process broker and the per-connection stream sessions (replay, live, reset, heartbeats, slow consumers).
