//! The chat engine: bots, detached generations, checkpoints, stop, history budget.
