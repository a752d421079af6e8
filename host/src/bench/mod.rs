//! The benchmark harness: tasks, execution, results and resuming.

pub mod plan;
pub mod results;
pub mod row;
pub mod run;

pub use row::{DataUse, ResultRow, Status};
