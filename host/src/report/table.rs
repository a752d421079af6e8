//! The summary of a bench: per pruner and requested compression, the mean ± std over members
//! of accuracy retention and of pruned accuracy, the median prune time per pruner, the data
//! it pruned with (`none` or `train`) and the error counts; and the markdown that shows it.
//!
//! The statistics ([`Summary`]) are computed once and rendered twice: as markdown here and as
//! HTML in `html.rs`, both from the same [`TextTable`]s so the two never disagree.

use std::collections::{BTreeMap, BTreeSet};

use crate::pruning::{FIT_DATA_OPTION, SPARSITY_CHECK_OPTION, STATE_OPTION};
use crate::results::{ResultRow, Status};

/// Mean and sample standard deviation (n − 1) of a group; the std of one value is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// Number of finite values.
    pub n: usize,
}

impl MeanStd {
    /// The mean ± std of the finite values; `None` when there are none (a NaN from a broken
    /// row must not poison the whole group).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<MeanStd> {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std =
            if n == 1 { 0.0 } else { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() };
        Some(MeanStd { mean, std, n })
    }

    /// `97.1 ± 0.8`, in percent of a fraction.
    fn percent(&self) -> String {
        format!("{:.1} ± {:.1}", 100.0 * self.mean, 100.0 * self.std)
    }
}

/// The median of the finite values; `None` when there are none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A requested compression ratio, one column of the tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Compression {
    /// `4×`, `1.33×`; rows whose ratios print alike share a column.
    pub label: String,
    /// The ratio of the first row seen with this label.
    pub ratio: f64,
}

/// `2×`, `16×`, `1.33×`, `2.5×`: integers without decimals, other ratios with up to two.
pub fn compression_label(ratio: f64) -> String {
    if ratio.is_nan() {
        return "?×".into();
    }
    if ratio.is_infinite() {
        return "∞×".into();
    }
    if (ratio - ratio.round()).abs() < 0.005 {
        return format!("{:.0}×", ratio.round());
    }
    let text = format!("{ratio:.2}");
    format!("{}×", text.trim_end_matches('0').trim_end_matches('.'))
}

/// One pruner at one requested compression.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Accuracy retention (pruned / dense) of the ok rows.
    pub retention: Option<MeanStd>,
    /// Pruned test accuracy of the ok rows.
    pub accuracy: Option<MeanStd>,
    /// Error rows.
    pub errors: usize,
}

/// One pruner across the compressions.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunerSummary {
    /// The pruner's name, with its options when the bench ran it with several.
    pub name: String,
    /// One group per [`Summary::compressions`] entry.
    pub groups: Vec<Group>,
    /// Median wall time of `prune` over the ok rows, seconds.
    pub median_prune_seconds: Option<f64>,
    /// What data it pruned with: `none`, `train`, or both joined if its rows differ.
    pub data: String,
    /// Ok rows.
    pub ok: usize,
    /// Error rows.
    pub errors: usize,
    /// `(requested, achieved)` sparsity of every ok row that has both.
    pub sparsity: Vec<(f64, f64)>,
    /// Whether the host enforced the requested sparsity on every ok row (none has the option
    /// `sparsity_check: report`).
    pub sparsity_verified: bool,
}

impl PrunerSummary {
    /// Whether any group has a retention to show.
    pub fn has_results(&self) -> bool {
        self.groups.iter().any(|g| g.retention.is_some())
    }
}

/// Everything the report shows, computed from the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Distinct zoo names.
    pub zoos: Vec<String>,
    /// Distinct architecture names.
    pub archs: Vec<String>,
    /// Distinct dataset names.
    pub datasets: Vec<String>,
    /// Distinct members.
    pub members: usize,
    /// Ok rows.
    pub ok: usize,
    /// Error rows.
    pub errors: usize,
    /// Dense test accuracy over members (each member counted once).
    pub dense_accuracy: Option<MeanStd>,
    /// The columns, by increasing ratio.
    pub compressions: Vec<Compression>,
    /// The pruners, by name.
    pub pruners: Vec<PrunerSummary>,
}

impl Summary {
    /// Groups the rows by pruner and requested compression.
    pub fn of(rows: &[ResultRow]) -> Summary {
        let distinct = |f: fn(&ResultRow) -> &str| -> Vec<String> {
            rows.iter().map(f).collect::<BTreeSet<_>>().into_iter().map(str::to_owned).collect()
        };
        let mut dense = BTreeMap::new();
        for row in rows {
            dense.entry(row.member.as_str()).or_insert(row.dense_accuracy);
        }
        let compressions = compressions(rows);
        let name = pruner_names(rows);
        let mut by_pruner: BTreeMap<String, Vec<&ResultRow>> = BTreeMap::new();
        for row in rows {
            by_pruner.entry(name(row)).or_default().push(row);
        }
        let pruners = by_pruner.into_iter().map(|(name, rows)| pruner_summary(name, &rows, &compressions)).collect();
        let ok = rows.iter().filter(|r| r.status == Status::Ok).count();
        Summary {
            zoos: distinct(|r| &r.zoo),
            archs: distinct(|r| &r.arch),
            datasets: distinct(|r| &r.dataset),
            members: dense.len(),
            ok,
            errors: rows.len() - ok,
            dense_accuracy: MeanStd::of(dense.into_values()),
            compressions,
            pruners,
        }
    }

    /// The highest mean retention in a column.
    pub fn best_retention(&self, column: usize) -> Option<f64> {
        self.pruners.iter().filter_map(|p| p.groups.get(column)?.retention.map(|r| r.mean)).max_by(f64::total_cmp)
    }

    /// One line each: zoo/arch/dataset, the counts, the dense accuracy.
    pub fn header_lines(&self) -> Vec<String> {
        let names = |v: &[String]| if v.is_empty() { "—".to_owned() } else { v.join(", ") };
        let mut lines = vec![
            format!("zoo {} · arch {} · dataset {}", names(&self.zoos), names(&self.archs), names(&self.datasets)),
            format!(
                "{} · {} ok · {}",
                plural(self.members, "member"),
                plural(self.ok, "row"),
                plural(self.errors, "error row")
            ),
        ];
        if let Some(dense) = self.dense_accuracy {
            lines.push(format!("dense test accuracy {} % (mean ± std over members)", dense.percent()));
        }
        lines
    }

    /// The retention table (with prune times and error counts) and the accuracy table.
    pub fn tables(&self) -> [TextTable; 2] {
        [self.retention_table(), self.accuracy_table()]
    }

    fn retention_table(&self) -> TextTable {
        let mut table = self.table_skeleton(
            "Accuracy retention, % of dense (mean ± std over members; best per column in bold)",
            &["median prune time", "data", "max Δ sparsity", "errors"],
        );
        let best: Vec<Option<f64>> = (0..self.compressions.len()).map(|c| self.best_retention(c)).collect();
        for pruner in &self.pruners {
            let mut row = vec![TextCell::plain(&pruner.name)];
            for (group, best) in pruner.groups.iter().zip(&best) {
                let is_best = matches!((group.retention, best), (Some(r), Some(b)) if r.mean == *b);
                row.push(TextCell { text: group_text(group, group.retention), bold: is_best });
            }
            row.push(TextCell::plain(&pruner.median_prune_seconds.map_or("—".into(), format_seconds)));
            row.push(TextCell::plain(&pruner.data));
            row.push(TextCell::plain(&sparsity_error_text(pruner)));
            row.push(TextCell::plain(&pruner.errors.to_string()));
            table.rows.push(row);
        }
        table
    }

    fn accuracy_table(&self) -> TextTable {
        let mut table = self.table_skeleton("Pruned test accuracy, % (mean ± std over members)", &[]);
        for pruner in &self.pruners {
            let mut row = vec![TextCell::plain(&pruner.name)];
            row.extend(pruner.groups.iter().map(|g| TextCell::plain(&group_text(g, g.accuracy))));
            table.rows.push(row);
        }
        table
    }

    fn table_skeleton(&self, title: &str, extra: &[&str]) -> TextTable {
        let mut header = vec!["pruner".to_owned()];
        header.extend(self.compressions.iter().map(|c| c.label.clone()));
        header.extend(extra.iter().map(|e| (*e).to_owned()));
        let any_partial = self.pruners.iter().flat_map(|p| &p.groups).any(|g| g.errors > 0 && g.retention.is_some());
        TextTable {
            title: title.to_owned(),
            header,
            rows: Vec::new(),
            note: any_partial.then(|| "† some rows of this cell failed; the mean is over the ok rows.".to_owned()),
        }
    }
}

/// How the achieved sparsity relates to the request: `exact` when the host verified it on
/// every ok row (its `sparsity_check` was not `report`), else the largest gap between
/// achieved and requested, in percentage points; `—` without ok rows.
fn sparsity_error_text(pruner: &PrunerSummary) -> String {
    if pruner.sparsity.is_empty() {
        return "—".into();
    }
    if pruner.sparsity_verified {
        return "exact".into();
    }
    let worst = pruner.sparsity.iter().map(|(requested, achieved)| (achieved - requested).abs()).fold(0.0, f64::max);
    format!("{:.2} pp", 100.0 * worst)
}

/// `97.1 ± 0.8`, `97.1 ± 0.8 †` when some rows failed, `failed` when all did, `—` when the
/// bench did not run this cell.
fn group_text(group: &Group, stat: Option<MeanStd>) -> String {
    match (stat, group.errors) {
        (Some(s), 0) => s.percent(),
        (Some(s), _) => format!("{} †", s.percent()),
        (None, 0) => "—".into(),
        (None, _) => "failed".into(),
    }
}

/// The columns: one per distinct compression label, by increasing ratio.
fn compressions(rows: &[ResultRow]) -> Vec<Compression> {
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    for row in rows {
        seen.entry(compression_label(row.compression)).or_insert(row.compression);
    }
    let mut columns: Vec<Compression> = seen.into_iter().map(|(label, ratio)| Compression { label, ratio }).collect();
    columns.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    columns
}

/// A row's pruner name; `name (k=v, ...)` for a pruner the bench ran with several option
/// sets, so that those do not merge into one line. Only the options whose values differ
/// between those sets are named (a state's fingerprint among them).
fn pruner_names(rows: &[ResultRow]) -> impl Fn(&ResultRow) -> String {
    let mut options: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        options.entry(&row.pruner).or_default().insert(row.options.to_string());
    }
    let mut differing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, sets) in options.into_iter().filter(|(_, o)| o.len() > 1) {
        let parsed: Vec<serde_json::Value> = sets.iter().filter_map(|s| serde_json::from_str(s).ok()).collect();
        let keys: BTreeSet<String> =
            parsed.iter().filter_map(|v| v.as_object()).flat_map(|m| m.keys().cloned()).collect();
        // A plugin option missing from some rows was added by a later plugin version (the host
        // fills in every default), so it says nothing about them; host-level options appear
        // only when set, so their absence does.
        let host_level = [STATE_OPTION, SPARSITY_CHECK_OPTION, FIT_DATA_OPTION];
        let differ = keys
            .into_iter()
            .filter(|k| host_level.contains(&k.as_str()) || parsed.iter().all(|v| v.get(k).is_some()))
            .filter(|k| parsed.iter().any(|v| v.get(k) != parsed[0].get(k)))
            .collect();
        differing.insert(name.to_owned(), differ);
    }
    // Several states of one pruner: name them by how they were fitted, not by fingerprint.
    let mut fits: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for row in rows {
        if let Some(fit) = &row.fit {
            fits.entry(&row.pruner).or_default().insert(fit);
        }
    }
    for (name, keys) in differing.iter_mut() {
        if fits.get(name.as_str()).is_some_and(|f| f.len() > 1) {
            keys.remove(STATE_OPTION);
            if keys.is_empty() {
                keys.insert(String::new()); // nothing else differs: no option list at all
            }
        }
    }
    // Of the fit labels of one pruner (`zoo, N train, k=v, ...`), keep the zoo and the parts
    // that are not common to all of them.
    let shared: BTreeMap<String, BTreeSet<String>> = fits
        .iter()
        .map(|(name, labels)| {
            let parts = |l: &str| l.split(", ").skip(1).map(str::to_owned).collect::<BTreeSet<String>>();
            let mut common = labels.first().map(|l| parts(l)).unwrap_or_default();
            for label in labels {
                common = common.intersection(&parts(label)).cloned().collect();
            }
            ((*name).to_owned(), common)
        })
        .collect();
    move |row| {
        let several = fits.get(row.pruner.as_str()).is_some_and(|f| f.len() > 1);
        let short = |fit: &str| -> String {
            let common = shared.get(&row.pruner);
            let mut parts = fit.split(", ");
            let mut kept: Vec<&str> = parts.next().into_iter().collect();
            kept.extend(parts.filter(|p| common.is_none_or(|c| !c.contains(*p))));
            kept.join(", ")
        };
        let fitted = match (&row.fit, &row.fit_zoo) {
            (Some(fit), _) if several => format!(" [fitted on {}]", short(fit)),
            (_, Some(zoo)) if *zoo != row.zoo => format!(" [fitted on {zoo}]"),
            _ => String::new(),
        };
        let Some(keys) = differing.get(&row.pruner) else {
            return format!("{}{fitted}", row.pruner);
        };
        let options = match &row.options {
            serde_json::Value::Object(map) => map
                .iter()
                .filter(|(k, _)| keys.is_empty() || keys.contains(*k))
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        if options.is_empty() && keys.contains("") {
            return format!("{}{fitted}", row.pruner);
        }
        let options = if options.is_empty() { "defaults".to_owned() } else { options };
        format!("{} ({options}){fitted}", row.pruner)
    }
}

fn pruner_summary(name: String, rows: &[&ResultRow], compressions: &[Compression]) -> PrunerSummary {
    let ok: Vec<&ResultRow> = rows.iter().copied().filter(|r| r.status == Status::Ok).collect();
    let groups = compressions
        .iter()
        .map(|c| {
            let in_column = |r: &&&ResultRow| compression_label(r.compression) == c.label;
            let members: Vec<&&ResultRow> = ok.iter().filter(in_column).collect();
            Group {
                retention: MeanStd::of(members.iter().filter_map(|r| r.retention)),
                accuracy: MeanStd::of(members.iter().filter_map(|r| r.pruned_accuracy)),
                errors: rows.iter().filter(in_column).filter(|r| r.status == Status::Error).count(),
            }
        })
        .collect();
    PrunerSummary {
        name,
        groups,
        median_prune_seconds: median(ok.iter().filter_map(|r| r.prune_seconds)),
        data: rows.iter().map(|r| r.data.as_str()).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", "),
        ok: ok.len(),
        errors: rows.len() - ok.len(),
        sparsity_verified: ok.iter().all(|r| r.options.get(SPARSITY_CHECK_OPTION).is_none()),
        sparsity: ok
            .iter()
            .filter_map(|r| Some((r.requested_sparsity, r.achieved_sparsity?)))
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .collect(),
    }
}

/// `350 µs`, `12.3 ms`, `1.24 s`, `2.5 min`: three significant digits.
pub fn format_seconds(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".into();
    }
    let (value, unit) = match seconds {
        0.0 => return "0 s".into(),
        s if s < 1e-3 => (s * 1e6, "µs"),
        s if s < 1.0 => (s * 1e3, "ms"),
        s if s < 600.0 => (s, "s"),
        s => (s / 60.0, "min"),
    };
    let decimals = (2 - value.log10().floor() as i32).clamp(0, 2) as usize;
    format!("{value:.decimals$} {unit}")
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A table as text cells, rendered as markdown here and as HTML in `html.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    /// A line above the table.
    pub title: String,
    /// Column names; the first column is left-aligned, the others right-aligned.
    pub header: Vec<String>,
    /// The cells, row by row.
    pub rows: Vec<Vec<TextCell>>,
    /// A footnote below the table.
    pub note: Option<String>,
}

/// One cell of a [`TextTable`].
#[derive(Debug, Clone, PartialEq)]
pub struct TextCell {
    /// The text.
    pub text: String,
    /// Shown in bold (the best value of its column).
    pub bold: bool,
}

impl TextCell {
    fn plain(text: &str) -> TextCell {
        TextCell { text: text.to_owned(), bold: false }
    }
}

impl TextTable {
    /// A GitHub markdown table, padded so that it also lines up in a terminal.
    pub fn markdown(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|c| {
                        let text = c.text.replace('|', "\\|");
                        if c.bold { format!("**{text}**") } else { text }
                    })
                    .collect()
            })
            .collect();
        let width = |col: usize| {
            let body = cells.iter().filter_map(|r| r.get(col)).map(|c| c.chars().count());
            body.chain([self.header[col].chars().count(), 3]).max().unwrap_or(3)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let line = |row: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(col, &w)| {
                    let text = row.get(col).map_or("", String::as_str);
                    if col == 0 { format!("{text:<w$}") } else { format!("{text:>w$}") }
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(
                |(col, &w)| {
                    if col == 0 { format!(":{}", "-".repeat(w - 1)) } else { format!("{}:", "-".repeat(w - 1)) }
                },
            )
            .collect();
        let mut out = format!("{}\n\n", self.title);
        out.push_str(&line(&self.header));
        out.push_str(&format!("| {} |\n", rule.join(" | ")));
        for row in &cells {
            out.push_str(&line(row));
        }
        if let Some(note) = &self.note {
            out.push_str(&format!("\n{note}\n"));
        }
        out
    }
}

/// The summary as markdown: a short header, the retention table (with the median prune time
/// and error counts per pruner) and the pruned-accuracy table. Printed by `bench` and
/// `report`, and the body of `summary.md`.
pub fn summary_table(rows: &[ResultRow]) -> String {
    let summary = Summary::of(rows);
    let mut out: String = summary.header_lines().iter().map(|l| format!("- {l}\n")).collect();
    if summary.pruners.is_empty() {
        out.push_str("\nno result rows\n");
        return out;
    }
    for table in summary.tables() {
        out.push('\n');
        out.push_str(&table.markdown());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One row; `retention` None makes an error row. Every member's dense accuracy is 0.9,
    /// so the pruned accuracy is 0.9 × retention.
    pub(crate) fn row(member: &str, pruner: &str, sparsity: f64, retention: Option<f64>, seconds: f64) -> ResultRow {
        let ok = retention.is_some();
        ResultRow {
            zoo: "digits-small".into(),
            member: member.into(),
            arch: "cnn-digits".into(),
            dataset: "digits".into(),
            pruner: pruner.into(),
            pruner_version: "0.1.0".into(),
            options: serde_json::json!({}),
            fit_zoo: None,
            fit: None,
            seed: 0,
            requested_sparsity: sparsity,
            compression: 1.0 / (1.0 - sparsity),
            achieved_sparsity: ok.then_some(sparsity + 0.001),
            achieved_compression: ok.then(|| 1.0 / (1.0 - sparsity - 0.001)),
            model_compression: ok.then(|| 0.9 / (1.0 - sparsity)),
            flops_speedup: ok.then(|| 1.0 / (1.0 - sparsity)),
            dense_accuracy: 0.9,
            dense_loss: 0.3,
            pruned_accuracy: retention.map(|r| 0.9 * r),
            pruned_loss: retention.map(|r| 0.3 / r),
            retention,
            prune_seconds: ok.then_some(seconds),
            calib_samples: 0,
            data: if pruner == "magnitude" || pruner == "random" {
                crate::results::DataUse::None
            } else {
                crate::results::DataUse::Train
            },
            status: if ok { Status::Ok } else { Status::Error },
            error: (!ok).then(|| "plugin panicked: index <out of bounds> & \"more\"".into()),
        }
    }

    /// 2 pruners × 2 compressions (2×, 4×) × 3 members; `random` at 4× lost member m2 to an
    /// error, so 11 ok rows and 1 error row.
    pub(crate) fn rows() -> Vec<ResultRow> {
        vec![
            row("m0", "magnitude", 0.5, Some(0.99), 0.001),
            row("m1", "magnitude", 0.5, Some(0.98), 0.002),
            row("m2", "magnitude", 0.5, Some(0.97), 0.003),
            row("m0", "magnitude", 0.75, Some(0.95), 0.004),
            row("m1", "magnitude", 0.75, Some(0.93), 0.005),
            row("m2", "magnitude", 0.75, Some(0.94), 0.006),
            row("m0", "random", 0.5, Some(0.96), 0.010),
            row("m1", "random", 0.5, Some(0.99), 0.020),
            row("m2", "random", 0.5, Some(0.96), 0.030),
            row("m0", "random", 0.75, Some(0.92), 0.040),
            row("m1", "random", 0.75, Some(0.98), 0.050),
            row("m2", "random", 0.75, None, 0.0),
        ]
    }

    #[test]
    fn summary_table_shows_mean_std_medians_errors_and_bolds_the_best_per_column() {
        let table = summary_table(&rows());
        println!("{table}");
        // Retention, % (sample std, n − 1):
        // magnitude 2×: 99, 98, 97 → mean 98, deviations 1, 0, −1 → std √(2/2) = 1.0
        // magnitude 4×: 95, 93, 94 → mean 94, std √(2/2) = 1.0
        // random 2×: 96, 99, 96 → mean 97, deviations −1, 2, −1 → std √(6/2) = √3 ≈ 1.7
        // random 4×: 92, 98 (m2 failed) → mean 95, deviations ∓3 → std √(18/1) ≈ 4.2
        // Best: magnitude at 2× (98 > 97), random at 4× (95 > 94).
        // Median prune time: magnitude 1..6 ms → (3 + 4) / 2 = 3.5 ms; random 10..50 ms (the
        // error row has no time) → 30 ms. Errors: magnitude 0, random 1.
        assert!(
            table.contains("| magnitude | **98.0 ± 1.0** |       94.0 ± 1.0 |           3.50 ms | none |          exact |      0 |\n"),
            "{table}"
        );
        assert!(
            table.contains("| random    |     97.0 ± 1.7 | **95.0 ± 4.2 †** |           30.0 ms | none |          exact |      1 |\n"),
            "{table}"
        );
        // Pruned accuracy = 0.9 × retention, std scales alike:
        // magnitude 88.2 ± 0.9, 84.6 ± 0.9; random 87.3 ± 1.6 (0.9√3), 85.5 ± 3.8 (0.9·√18).
        assert!(table.contains("| magnitude | 88.2 ± 0.9 |   84.6 ± 0.9 |\n"), "{table}");
        assert!(table.contains("| random    | 87.3 ± 1.6 | 85.5 ± 3.8 † |\n"), "{table}");
        assert!(
            table.contains(
                "| pruner    |             2× |               4× | median prune time | data | max Δ sparsity | errors |"
            ),
            "{table}"
        );
        assert!(table.contains("3 members · 11 rows ok · 1 error row"), "{table}");
        assert!(table.contains("zoo digits-small · arch cnn-digits · dataset digits"), "{table}");
        assert!(table.contains("dense test accuracy 90.0 ± 0.0 %"), "{table}");
        assert!(table.contains("† some rows of this cell failed"), "{table}");
    }

    #[test]
    fn mean_std_is_the_sample_std_and_zero_for_one_value_and_skips_nan() {
        let s = MeanStd::of([1.0, 2.0, 3.0, 4.0]).expect("four values");
        // mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5 → √(5/3).
        assert_eq!((s.mean, s.n), (2.5, 4));
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12, "{s:?}");
        assert_eq!(MeanStd::of([0.7]), Some(MeanStd { mean: 0.7, std: 0.0, n: 1 }));
        assert_eq!(MeanStd::of([f64::NAN, 0.5]), Some(MeanStd { mean: 0.5, std: 0.0, n: 1 }));
        assert_eq!(MeanStd::of([f64::NAN]), None);
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([]), None);
    }

    #[test]
    fn compression_labels_round_to_integers_or_two_decimals() {
        assert_eq!(compression_label(1.0 / (1.0 - 0.875)), "8×");
        assert_eq!(compression_label(1.999_999_9), "2×");
        assert_eq!(compression_label(32.0), "32×");
        assert_eq!(compression_label(4.0 / 3.0), "1.33×");
        assert_eq!(compression_label(2.5), "2.5×");
        assert_eq!(compression_label(f64::NAN), "?×");
    }

    #[test]
    fn seconds_print_with_three_significant_digits() {
        assert_eq!(format_seconds(0.000_352), "352 µs");
        assert_eq!(format_seconds(0.0123), "12.3 ms");
        assert_eq!(format_seconds(1.2345), "1.23 s");
        assert_eq!(format_seconds(150.0), "150 s");
        assert_eq!(format_seconds(900.0), "15.0 min");
    }

    #[test]
    fn an_all_error_pruner_shows_failed_cells_and_no_results() {
        let mut rows = rows();
        rows.push(row("m0", "broken", 0.5, None, 0.0));
        let summary = Summary::of(&rows);
        let broken = summary.pruners.iter().find(|p| p.name == "broken").expect("broken pruner");
        assert!(!broken.has_results());
        assert_eq!((broken.ok, broken.errors, broken.median_prune_seconds), (0, 1, None));
        let table = summary_table(&rows);
        assert!(table.contains("| broken    |         failed |"), "{table}");
    }

    #[test]
    fn achieved_sparsity_is_exact_when_checked_and_the_gap_when_only_reported() {
        let mut emerged = row("m1", "hypernet", 0.5, Some(0.9), 0.01);
        emerged.options = serde_json::json!({ "mask": "threshold", "sparsity_check": "report" });
        emerged.achieved_sparsity = Some(0.4875);
        let mut fitted_elsewhere = row("m1", "learner", 0.5, Some(0.9), 0.01);
        fitted_elsewhere.fit_zoo = Some("other-zoo".into());
        let summary = Summary::of(&[row("m1", "magnitude", 0.5, Some(0.9), 0.01), emerged, fitted_elsewhere]);
        let text = |name: &str| sparsity_error_text(summary.pruners.iter().find(|p| p.name == name).unwrap());
        assert_eq!((text("magnitude").as_str(), text("hypernet").as_str()), ("exact", "1.25 pp"));
        assert!(summary.pruners.iter().any(|p| p.name == "learner [fitted on other-zoo]"), "{summary:?}");

        // Two states of one pruner differ by fingerprint only: named by how they were fitted.
        let state = |fingerprint: &str, fit: &str| {
            let mut r = row("m1", "hypernet", 0.5, Some(0.9), 0.01);
            r.options = serde_json::json!({ "mask": "topk", "state": fingerprint });
            (r.fit_zoo, r.fit) = (Some("digits-small".into()), Some(fit.into()));
            r
        };
        let two = Summary::of(&[
            state("aa", "digits-small, 8 train"),
            state("bb", "digits-small, 8 train, arch=equivariant"),
        ]);
        let names: Vec<&str> = two.pruners.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["hypernet [fitted on digits-small, arch=equivariant]", "hypernet [fitted on digits-small]"]);
        // A row of a later plugin version carries an option the earlier rows lack: not a
        // difference; a host-level option that only one row has is one.
        let mut newer = state("cc", "digits-small, 8 train, rescale=true");
        newer.options["rescale"] = false.into();
        let mut report = state("dd", "digits-small, 8 train");
        report.options["sparsity_check"] = "report".into();
        let four = Summary::of(&[state("aa", "digits-small, 8 train, arch=equivariant"), newer, report]);
        let names: Vec<&str> = four.pruners.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hypernet (defaults) [fitted on digits-small, arch=equivariant]",
                "hypernet (defaults) [fitted on digits-small, rescale=true]",
                "hypernet (sparsity_check=report) [fitted on digits-small]"
            ]
        );
    }

    #[test]
    fn a_pruner_run_with_two_option_sets_gives_two_lines() {
        let mut rows = rows();
        for r in rows.iter_mut().filter(|r| r.member == "m0") {
            r.options = serde_json::json!({ "scope": "layer" });
        }
        let names: Vec<String> = Summary::of(&rows).pruners.into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["magnitude (defaults)", "magnitude (scope=layer)", "random (defaults)", "random (scope=layer)"]
        );
    }

    #[test]
    fn only_the_options_that_differ_name_the_lines() {
        let mut rows = rows();
        for r in rows.iter_mut() {
            let arch = if r.member == "m0" { "pointwise" } else { "equivariant" };
            r.options = serde_json::json!({ "arch": arch, "hidden": 16, "steps": 400 });
        }
        let names: Vec<String> = Summary::of(&rows).pruners.into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "magnitude (arch=equivariant)",
                "magnitude (arch=pointwise)",
                "random (arch=equivariant)",
                "random (arch=pointwise)"
            ]
        );
    }
}
