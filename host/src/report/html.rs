//! The report as one self-contained HTML page: run details, the summary tables, the three
//! plots inline, the error rows and a note on how to read it all.
//!
//! Self-contained means the page can be mailed or archived as one file and opens the same
//! offline years later: the CSS is inline, the plots are inline `<svg>` elements, and the page
//! names no URL, script or web font.

use super::svg::{self, Target, escape};
use super::table::{Summary, TextTable, compression_label};
use super::{FitCurves, RunInfo};
use crate::results::{ResultRow, Status};

/// The whole page for the run folder `name`.
pub fn page(name: &str, run: &RunInfo, summary: &Summary, rows: &[ResultRow], curves: &FitCurves) -> String {
    let name = escape(name);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>hyperprune report: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Bench report <span class=\"run\">{name}</span></h1>\n"
    );
    out.push_str(&facts(summary));
    out.push_str(&run_details(run));
    out.push_str(HOW_TO_READ);
    out.push_str("<h2>Summary</h2>\n");
    if summary.pruners.is_empty() {
        out.push_str("<p>No result rows.</p>\n");
    } else {
        for table in summary.tables() {
            out.push_str(&html_table(&table));
        }
    }
    out.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
    let plots = [
        (
            svg::retention(summary, Target::Inline),
            "Mean accuracy retention per pruner; the band is ±1 std over members; maskopt, the mask ceiling, is dashed.",
        ),
        (svg::prune_time(summary, Target::Inline), "Median wall time of one prune call per pruner (log scale)."),
        (
            svg::sparsity(summary, Target::Inline),
            "Achieved against requested sparsity of every ok row; each pruner's markers are shifted \
             sideways by a few pixels so that pruners on the same point stay visible.",
        ),
    ];
    for (plot, caption) in plots {
        out.push_str(&format!("<figure>\n{plot}<figcaption>{caption}</figcaption>\n</figure>\n"));
    }
    let fits = [
        (
            &curves.loss,
            "Fit: training loss",
            "loss",
            "Training loss of each fit in this run folder (state/*.fit.jsonl).",
        ),
        (
            &curves.val,
            "Fit: val retention",
            "val retention (%)",
            "Mean retention on the val members at each validation (the fit keeps the best state).",
        ),
    ];
    for (series, title, y_label, caption) in fits.into_iter().filter(|(s, ..)| !s.is_empty()) {
        let plot = svg::fit_curves(title, series, y_label, Target::Inline);
        out.push_str(&format!("<figure>\n{plot}<figcaption>{caption}</figcaption>\n</figure>\n"));
    }
    out.push_str("</div>\n");
    out.push_str(&errors(rows));
    out.push_str(&format!(
        "<footer>Written by <code>hyperprune report</code> {} from <code>results.jsonl</code>. \
         This page is self-contained: no scripts and no external resources.</footer>\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn facts(summary: &Summary) -> String {
    let items: String = summary.header_lines().iter().map(|l| format!("<li>{}</li>", escape(l))).collect();
    format!("<ul class=\"facts\">{items}</ul>\n")
}

fn run_details(run: &RunInfo) -> String {
    let fields = [
        ("command", &run.command),
        ("hyperprune", &run.hyperprune_version),
        ("seed", &run.seed),
        ("machine", &run.machine),
        ("date", &run.started),
        ("engine", &run.engine),
        ("zoo", &run.zoo),
        ("split", &run.split),
    ];
    let items: String = fields
        .iter()
        .filter_map(|(label, value)| {
            let value = escape(value.as_deref()?);
            let value = if *label == "command" { format!("<code>{value}</code>") } else { value };
            Some(format!("<dt>{label}</dt><dd>{value}</dd>"))
        })
        .collect();
    if items.is_empty() {
        return "<h2>Run</h2>\n<p class=\"note\">No <code>run.json</code> in this folder: the command, \
                version, seed, machine and date are unknown.</p>\n"
            .into();
    }
    format!("<h2>Run</h2>\n<dl class=\"meta\">{items}</dl>\n")
}

fn html_table(table: &TextTable) -> String {
    let head: String = table.header.iter().map(|h| format!("<th>{}</th>", escape(h))).collect();
    let body: String = table
        .rows
        .iter()
        .map(|row| {
            let cells: String = row
                .iter()
                .map(|c| {
                    let text = escape(&c.text);
                    if c.bold { format!("<td><strong>{text}</strong></td>") } else { format!("<td>{text}</td>") }
                })
                .collect();
            format!("<tr>{cells}</tr>\n")
        })
        .collect();
    let note = table.note.as_deref().map_or(String::new(), |n| format!("<p class=\"note\">{}</p>\n", escape(n)));
    format!(
        "<p class=\"caption\">{}</p>\n<div class=\"scroll\"><table>\n<thead><tr>{head}</tr></thead>\n\
         <tbody>\n{body}</tbody>\n</table></div>\n{note}",
        escape(&table.title)
    )
}

fn errors(rows: &[ResultRow]) -> String {
    let failed: Vec<&ResultRow> = rows.iter().filter(|r| r.status == Status::Error).collect();
    if failed.is_empty() {
        return "<h2>Errors</h2>\n<p>No error rows.</p>\n".into();
    }
    let body: String = failed
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{:.1} % ({})</td><td class=\"msg\">{}</td></tr>\n",
                escape(&r.member),
                escape(&r.pruner),
                100.0 * r.requested_sparsity,
                compression_label(r.compression),
                escape(r.error.as_deref().unwrap_or("(no message)"))
            )
        })
        .collect();
    format!(
        "<h2>Errors</h2>\n<p>{} rows failed and are left out of every mean and plot.</p>\n\
         <div class=\"scroll\"><table class=\"errors\">\n<thead><tr><th>member</th><th>pruner</th>\
         <th>sparsity</th><th>message</th></tr></thead>\n<tbody>\n{body}</tbody>\n</table></div>\n",
        failed.len()
    )
}

const HOW_TO_READ: &str = "<h2>How to read this</h2>\n<p>Every row of the bench prunes one trained \
member of the zoo once, with one pruner at one requested sparsity, and evaluates it on the test \
split with <em>no fine-tuning</em>. <strong>Retention</strong> is the pruned accuracy divided by the \
member's dense accuracy: 100&nbsp;% means pruning cost nothing. <strong>Compression</strong> is \
prunable weights divided by nonzero prunable weights, as in ShrinkBench: 4× means three quarters of \
the prunable weights are zero. Columns group rows by requested compression; a cell is the mean \
± sample standard deviation over members, and the best mean retention of each column is in bold. \
Prune time is the wall time of the pruner's own call, evaluation excluded. Error rows are listed at \
the end and left out of every mean.</p>\n";

const STYLE: &str = "
body { margin: 0; background: #f6f7f9; color: #222;
  font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 24px 64px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h1 .run { color: #667; font-weight: normal; }
h2 { font-size: 19px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 1px solid #dde0e5; }
ul.facts { list-style: none; padding: 0; margin: 0; color: #556; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0;
  background: #fff; border: 1px solid #e2e4e8; border-radius: 6px; padding: 12px 16px; }
dl.meta dt { color: #667; }
dl.meta dd { margin: 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  background: #eef0f3; padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e2e4e8;
  font-variant-numeric: tabular-nums; }
th, td { padding: 6px 14px; border-bottom: 1px solid #eceef1; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f2f5; font-weight: 600; }
tbody tr:hover { background: #f8f9fb; }
td strong { color: #0b4f8a; }
table.errors td { text-align: left; white-space: normal; vertical-align: top; }
table.errors td.msg { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.caption { color: #445; margin: 18px 0 6px; }
.note { color: #667; font-size: 13px; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #e2e4e8; border-radius: 6px; padding: 8px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: #556; font-size: 13px; padding: 4px 8px 2px; }
footer { margin-top: 48px; color: #889; font-size: 13px; }
";
