//! `results.jsonl`, the one format every bench writes and `bench merge` and `report` read:
//! the row ([`ResultRow`]), reading it back (resume, merge, report), appending to it row by
//! row, and the lock that keeps one writer per run folder. Nothing else touches the file.

mod lock;
mod reader;
mod row;
mod writer;

pub use lock::RunLock;
pub use reader::{read_complete_rows, read_results, read_rows};
pub use row::{DataUse, ResultRow, RowError, Status};
pub use writer::ResultsWriter;

/// File name of the results inside a run folder.
pub const RESULTS_FILE: &str = "results.jsonl";
