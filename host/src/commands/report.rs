//! `hyperprune report RUN`: the summary table, plots and HTML page of a bench run.

use crate::cli::ReportArgs;
use crate::report::{RESULTS_FILE, read_results, summary_table, write_report};

/// Writes the report files into the run folder, then prints the summary table and the paths.
/// `RUN` may also name the run's `results.jsonl` itself.
///
/// # Errors
/// Bad input when the folder has no readable `results.jsonl` or a line of it is not a result
/// row (the error names the line); a failure to write a report file.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let run_dir = match args.run.parent() {
        Some(parent) if args.run.is_file() && args.run.file_name().is_some_and(|n| n == RESULTS_FILE) => parent,
        _ => args.run.as_path(),
    };
    let paths = write_report(run_dir)?;
    let rows = read_results(&run_dir.join(RESULTS_FILE))?;
    print!("{}", summary_table(&rows));
    println!();
    for path in paths.all() {
        println!("wrote {}", path.display());
    }
    Ok(())
}
