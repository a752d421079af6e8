//! The benchmark harness: tasks and their execution. The rows it writes, and resuming from
//! them, are [`crate::results`]'.

pub mod plan;
pub mod run;
