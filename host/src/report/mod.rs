//! `hyperprune report`: a bench run folder's `results.jsonl` as a summary table, three SVG
//! plots and one self-contained HTML page.
//!
//! A report is a pure function of `results.jsonl` and, when present, `run.json`: it can be
//! written again at any time, mid-run included, and two reports of the same rows are the
//! same bytes. It summarises (mean ± std over members, medians, error counts); it does not
//! test hypotheses or fit curves.
//!
//! The plots are written by hand rather than with a plotting crate so that the page needs
//! nothing at all to open: no fonts, no scripts, no network.

mod html;
mod svg;
pub(crate) mod table;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyperprune_core::model::write_atomic;

pub use table::summary_table;

use crate::results::ResultRow;
pub use crate::results::{RESULTS_FILE, read_results};
/// The bench's description of the run: command, version, seed, machine, date.
pub const RUN_FILE: &str = "run.json";

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// `summary.md`: the summary tables as markdown.
    pub summary: PathBuf,
    /// `retention.svg`: accuracy retention against compression.
    pub retention: PathBuf,
    /// `prune_time.svg`: median prune time per pruner.
    pub prune_time: PathBuf,
    /// `sparsity.svg`: achieved against requested sparsity.
    pub sparsity: PathBuf,
    /// `report.html`: everything on one self-contained page.
    pub html: PathBuf,
}

impl ReportPaths {
    fn in_dir(dir: &Path) -> ReportPaths {
        ReportPaths {
            summary: dir.join("summary.md"),
            retention: dir.join("retention.svg"),
            prune_time: dir.join("prune_time.svg"),
            sparsity: dir.join("sparsity.svg"),
            html: dir.join("report.html"),
        }
    }

    /// Every path, in the order written.
    pub fn all(&self) -> [&Path; 5] {
        [&self.summary, &self.retention, &self.prune_time, &self.sparsity, &self.html]
    }
}

/// What `run.json` says about the run. Every field is optional: older or newer benches may
/// write fewer or more fields, and a report must not fail over a description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInfo {
    /// The exact command line of the bench.
    pub command: Option<String>,
    /// The hyperprune version that ran the bench.
    pub hyperprune_version: Option<String>,
    /// The bench seed.
    pub seed: Option<String>,
    /// The machine it ran on.
    pub machine: Option<String>,
    /// When it started.
    pub started: Option<String>,
    /// The execution engine.
    pub engine: Option<String>,
    /// The zoo.
    pub zoo: Option<String>,
    /// The zoo split benched.
    pub split: Option<String>,
}

impl RunInfo {
    /// Reads the fields it knows from a `run.json` value; strings as they are, any other
    /// non-null value as compact JSON.
    pub fn from_json(value: &serde_json::Value) -> RunInfo {
        let field = |name: &str| match value.get(name)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        RunInfo {
            command: field("command"),
            hyperprune_version: field("hyperprune_version"),
            seed: field("seed"),
            machine: field("machine"),
            started: field("started"),
            engine: field("engine"),
            zoo: field("zoo"),
            split: field("split"),
        }
    }
}

/// Reads `run.json` if there is one. A missing or unreadable file gives an empty
/// description (with a warning for an unreadable one): the rows alone make a report.
fn read_run_info(path: &Path) -> RunInfo {
    let Ok(text) = std::fs::read_to_string(path) else {
        return RunInfo::default();
    };
    match serde_json::from_str(&text) {
        Ok(value) => RunInfo::from_json(&value),
        Err(e) => {
            tracing::warn!("ignoring {}: not JSON ({e})", path.display());
            RunInfo::default()
        }
    }
}

/// Reads `results.jsonl` (and `run.json` when present) in `run_dir` and writes there
/// `summary.md`, `retention.svg`, `prune_time.svg`, `sparsity.svg` and `report.html`.
///
/// # Errors
/// As [`read_results`]; and when a file cannot be written.
pub fn write_report(run_dir: &Path) -> anyhow::Result<ReportPaths> {
    let rows = read_results(&run_dir.join(RESULTS_FILE))?;
    let run = read_run_info(&run_dir.join(RUN_FILE));
    let summary = table::Summary::of(&rows);
    let name = run_name(run_dir);
    let paths = ReportPaths::in_dir(run_dir);
    let curves = fit_curves(run_dir);
    let files = [
        (&paths.summary, summary_markdown(&name, &run, &rows)),
        (&paths.retention, svg::retention(&summary, svg::Target::File)),
        (&paths.prune_time, svg::prune_time(&summary, svg::Target::File)),
        (&paths.sparsity, svg::sparsity(&summary, svg::Target::File)),
        (&paths.html, html::page(&name, &run, &summary, &rows, &curves)),
    ];
    for (path, text) in files {
        write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    if !curves.loss.is_empty() || !curves.val.is_empty() {
        let fit = run_dir.join(FIT_PLOT);
        let svg = svg::fit_curves("Fit: training loss", &curves.loss, "loss", svg::Target::File);
        write_atomic(&fit, svg.as_bytes()).with_context(|| format!("writing {}", fit.display()))?;
    }
    Ok(paths)
}

/// `fit.svg`: written when the run folder holds fit curves (`state/*.fit.jsonl`, from a
/// bench's in-run fit).
pub const FIT_PLOT: &str = "fit.svg";

/// The fit curves of a run: training loss and val retention (%) against step, one curve
/// per `state/*.fit.jsonl`.
#[derive(Debug, Default)]
pub struct FitCurves {
    /// `loss` of every curve row that has one.
    pub loss: Vec<svg::Curve>,
    /// `val_retention` × 100 of every curve row that has one.
    pub val: Vec<svg::Curve>,
}

/// Reads `run_dir/state/*.fit.jsonl` (sorted by name); unreadable lines are skipped.
fn fit_curves(run_dir: &Path) -> FitCurves {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run_dir.join("state"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(".fit.jsonl"));
    files.sort();
    let mut curves = FitCurves::default();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().trim_end_matches(".fit.jsonl").to_string());
        let name = name.unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let series = |key: &str, scale: f64| -> Vec<(f64, f64)> {
            rows.iter().filter_map(|r| Some((r["step"].as_f64()?, scale * r[key].as_f64()?))).collect()
        };
        let (loss, val) = (series("loss", 1.0), series("val_retention", 100.0));
        if !loss.is_empty() {
            curves.loss.push((name.clone(), loss));
        }
        if !val.is_empty() {
            curves.val.push((name, val));
        }
    }
    curves
}

/// `summary.md`: a title, the command when known, then [`summary_table`].
fn summary_markdown(name: &str, run: &RunInfo, rows: &[ResultRow]) -> String {
    let mut out = format!("# Bench report: {name}\n\n");
    if let Some(command) = &run.command {
        out.push_str(&format!("`{command}`\n\n"));
    }
    let details: Vec<String> = [
        run.hyperprune_version.as_ref().map(|v| format!("hyperprune {v}")),
        run.seed.as_ref().map(|s| format!("seed {s}")),
        run.machine.clone(),
        run.started.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !details.is_empty() {
        out.push_str(&format!("{}\n\n", details.join(" · ")));
    }
    out.push_str(&summary_table(rows));
    out
}

/// The run folder's own name (`runs/NAME` gives `NAME`), even for `.`.
fn run_name(run_dir: &Path) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(run_dir)
        .or_else(|| run_dir.canonicalize().ok().as_deref().and_then(named))
        .unwrap_or_else(|| run_dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::table::tests::rows;
    use super::*;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("hyperprune-report-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_rows(dir: &Path, rows: &[ResultRow]) {
        let lines: String =
            rows.iter().map(|r| format!("{}\n", serde_json::to_string(r).expect("row to JSON"))).collect();
        std::fs::write(dir.join(RESULTS_FILE), lines).expect("write results.jsonl");
    }

    #[test]
    fn write_report_writes_five_files_and_a_self_contained_page() {
        let tmp = TempDir::new("five-files");
        write_rows(&tmp.0, &rows());
        let run = r#"{"command": "hyperprune bench --zoo zoos/d --pruners magnitude,random <all>",
            "hyperprune_version": "0.1.0", "seed": 7, "machine": "test box", "started": "2025-01-02T03:04:05Z"}"#;
        std::fs::write(tmp.0.join(RUN_FILE), run).expect("write run.json");

        let paths = write_report(&tmp.0).expect("report");
        for path in paths.all() {
            assert!(path.is_file(), "{} missing", path.display());
        }
        let html = std::fs::read_to_string(&paths.html).expect("read report.html");
        assert_eq!(html.matches("<svg").count(), 3);
        for forbidden in ["http://", "https://", "src=", "<script", "@import", "url("] {
            assert!(!html.contains(forbidden), "report.html contains {forbidden}");
        }
        for expected in [
            "<td><strong>98.0 ± 1.0</strong></td>",
            "<td><strong>95.0 ± 4.2 †</strong></td>",
            "<td>87.3 ± 1.6</td>",
            "<td>3.50 ms</td>",
            "hyperprune bench --zoo zoos/d --pruners magnitude,random &lt;all&gt;",
            "<dt>seed</dt><dd>7</dd>",
            "<dt>date</dt><dd>2025-01-02T03:04:05Z</dd>",
            "<td>m2</td><td>random</td><td>75.0 % (4×)</td>",
            "plugin panicked: index &lt;out of bounds&gt; &amp; &quot;more&quot;",
            "How to read this",
        ] {
            assert!(html.contains(expected), "report.html lacks {expected}:\n{html}");
        }
        for svg_path in [&paths.retention, &paths.prune_time, &paths.sparsity] {
            let svg = std::fs::read_to_string(svg_path).expect("read svg");
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", svg_path.display());
        }
        let retention = std::fs::read_to_string(&paths.retention).expect("read retention.svg");
        assert_eq!(retention.matches("<path").count(), 2, "one line per pruner with results");
        let summary = std::fs::read_to_string(&paths.summary).expect("read summary.md");
        assert!(summary.starts_with("# Bench report: hyperprune-report-"), "{summary}");
        assert!(summary.contains("hyperprune 0.1.0 · seed 7 · test box"), "{summary}");
        assert!(summary.contains(&summary_table(&rows())), "{summary}");
    }

    #[test]
    fn a_report_without_run_json_says_so_and_is_the_same_twice() {
        let tmp = TempDir::new("no-run-json");
        write_rows(&tmp.0, &rows());
        let paths = write_report(&tmp.0).expect("report");
        let first = std::fs::read_to_string(&paths.html).expect("read report.html");
        assert!(first.contains("No <code>run.json</code> in this folder"), "{first}");
        write_report(&tmp.0).expect("report again");
        assert_eq!(first, std::fs::read_to_string(&paths.html).expect("read report.html"));
    }

    #[test]
    fn a_malformed_line_names_the_file_and_line_number() {
        let tmp = TempDir::new("malformed");
        let good = serde_json::to_string(&rows()[0]).expect("row to JSON");
        std::fs::write(tmp.0.join(RESULTS_FILE), format!("{good}\n\n{good}\n{{\"zoo\": \"digits\"\n")).expect("write");
        let err = write_report(&tmp.0).expect_err("line 4 is broken");
        let message = format!("{err:#}");
        let expected = format!("{}:4: not a result row", tmp.0.join(RESULTS_FILE).display());
        assert!(message.contains(&expected), "{message}");
        assert!(crate::failure::is_bad_input(&err));
    }

    #[test]
    fn a_missing_results_file_is_bad_input_naming_it() {
        let tmp = TempDir::new("missing");
        let err = write_report(&tmp.0).expect_err("no results.jsonl");
        assert!(format!("{err:#}").contains(RESULTS_FILE), "{err:#}");
        assert!(crate::failure::is_bad_input(&err));
    }

    #[test]
    fn run_json_fields_are_all_optional_and_any_type() {
        let info = RunInfo::from_json(&serde_json::json!({ "seed": 3, "machine": { "cpu": "x" }, "zoo": null }));
        assert_eq!(info.seed.as_deref(), Some("3"));
        assert_eq!(info.machine.as_deref(), Some(r#"{"cpu":"x"}"#));
        assert_eq!((info.zoo, info.command), (None, None));
    }
}
