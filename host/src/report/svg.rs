//! The report's three plots, written as SVG by hand: accuracy retention against compression,
//! median prune time per pruner, and achieved against requested sparsity.
//!
//! The output is deterministic (coordinates printed with one decimal, nothing taken from the
//! clock or the environment), needs no fonts (`<text>` in the generic `sans-serif` family)
//! and no scripts, and reads at its native 640×400. Each pruner keeps one colour and one
//! marker shape in every plot, so the plots can be read side by side and without colour.

use super::table::{MeanStd, PrunerSummary, Summary, format_seconds};

/// `text` with `& < > " '` escaped, safe in HTML and SVG text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Width of every plot, pixels.
pub const WIDTH: f64 = 640.0;
/// Height of every plot, pixels.
pub const HEIGHT: f64 = 400.0;

/// Where a plot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A standalone `.svg` file, which needs the SVG namespace declaration to open in a
    /// browser.
    File,
    /// Inline in the HTML page, which needs no namespace; leaving it out keeps the page free
    /// of any URL.
    Inline,
}

/// The Okabe–Ito colours without the yellow, which is unreadable on white; readable with the
/// common colour-vision deficiencies.
const PALETTE: [&str; 7] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];
/// Marker shapes; with 7 colours, the first 28 pruners all look different.
const SHAPES: usize = 4;
const INK: &str = "#222222";
const MUTED: &str = "#888888";
const GRID: &str = "#e6e6e6";

fn colour(pruner: usize) -> &'static str {
    PALETTE[pruner % PALETTE.len()]
}

/// Plot 1: accuracy retention (%) against requested compression on a log2 axis; per pruner a
/// line through the means, a marker per compression and a ±1 std band.
pub fn retention(summary: &Summary, target: Target) -> String {
    let mut canvas = Canvas::new(target, "Accuracy retention vs compression");
    let area = Area::WITH_LEGEND;
    let log_ratios: Vec<Option<f64>> =
        summary.compressions.iter().map(|c| Some(c.ratio.log2()).filter(|x| x.is_finite())).collect();
    let (x_min, x_max) = extent(log_ratios.iter().flatten().copied()).unwrap_or((0.0, 1.0));
    let pad = if x_max > x_min { 0.4 } else { 1.0 };
    let x = Scale::new(x_min - pad, x_max + pad, area.left, area.right);
    let stats = summary.pruners.iter().flat_map(|p| &p.groups).filter_map(|g| g.retention);
    let bounds = stats.flat_map(|s| [100.0 * (s.mean - s.std), 100.0 * (s.mean + s.std)]);
    let (y_min, y_max) =
        extent(bounds.chain([100.0])).map_or((0.0, 100.0), |(lo, hi)| ((lo - 0.03 * (hi - lo)).max(0.0), hi));
    let (y_lo, y_hi, step) = nice_range(y_min, y_max);
    let y = Scale::new(y_lo, y_hi, area.bottom, area.top);
    // A label per compression level, skipping those that would overprint their left neighbour.
    let mut x_ticks: Vec<(f64, String)> = Vec::new();
    for (lx, c) in log_ratios.iter().zip(&summary.compressions) {
        let Some(lx) = *lx else { continue };
        if x_ticks.last().is_none_or(|(last, _)| x.at(lx) - x.at(*last) >= 34.0) {
            x_ticks.push((lx, c.label.clone()));
        }
    }
    canvas.axes(&area, (&x, &x_ticks), (&y, &linear_ticks(y_lo, y_hi, step)));
    canvas.axis_labels(&area, "requested compression (log scale)", "accuracy retention (%)");
    if (y_lo..=y_hi).contains(&100.0) {
        canvas.line((area.left, y.at(100.0)), (area.right, y.at(100.0)), MUTED, 1.0, Some("4 3"));
    }
    for (i, pruner) in summary.pruners.iter().enumerate().filter(|(_, p)| p.has_results()) {
        let points: Vec<Option<(f64, MeanStd)>> =
            log_ratios.iter().zip(&pruner.groups).map(|(lx, g)| Some((x.at((*lx)?), g.retention?))).collect();
        let runs: Vec<&[Option<(f64, MeanStd)>]> = points.split(Option::is_none).filter(|r| !r.is_empty()).collect();
        for run in &runs {
            let run: Vec<(f64, MeanStd)> = run.iter().flatten().copied().collect();
            canvas.band(&run, &y, colour(i));
        }
        let d: Vec<String> = runs
            .iter()
            .map(|run| {
                let coords: Vec<String> =
                    run.iter().flatten().map(|(px, s)| format!("{},{}", num(*px), num(y.at(100.0 * s.mean)))).collect();
                format!("M{}", coords.join(" L"))
            })
            .collect();
        // The mask ceiling is a reference, not a contender: dashed.
        let dash = if is_ceiling(&pruner.name) { r#" stroke-dasharray="7 4""# } else { "" };
        canvas.push(format!(
            r#"<path class="series" d="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{dash}/>"#,
            d.join(" "),
            colour(i)
        ));
        for ((px, s), c) in points.iter().zip(&summary.compressions).filter_map(|(p, c)| Some(((*p)?, c))) {
            let tip =
                format!("{} at {}: {:.1} ± {:.1} % (n = {})", pruner.name, c.label, 100.0 * s.mean, 100.0 * s.std, s.n);
            canvas.marker(i, (px, y.at(100.0 * s.mean)), 4.5, true, &tip);
        }
    }
    canvas.legend(&area, summary, PrunerSummary::has_results);
    canvas.finish()
}

/// The pruner the retention plot draws dashed: `maskopt`, which optimises each model's mask
/// on data, is the ceiling a mask-only method can reach (docs/HYPERNET.md).
pub const CEILING_PRUNER: &str = "maskopt";

fn is_ceiling(name: &str) -> bool {
    name == CEILING_PRUNER || name.starts_with(&format!("{CEILING_PRUNER} "))
}

/// One curve of a fit (a `*.fit.jsonl` file): its name and `(step, value)` points.
pub type Curve = (String, Vec<(f64, f64)>);

/// Plot 4 (when the run fitted a pruner): fit curves, value against step, one line per
/// curve; `y_label` names the value.
pub fn fit_curves(title: &str, curves: &[Curve], y_label: &str, target: Target) -> String {
    let mut canvas = Canvas::new(target, title);
    let area = Area::WITH_LEGEND;
    let points = || curves.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max) = extent(points().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let (y_min, y_max) = extent(points().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let (x_lo, x_hi, x_step) = nice_range(x_min, x_max);
    let (y_lo, y_hi, y_step) = nice_range(y_min, y_max);
    let x = Scale::new(x_lo, x_hi, area.left, area.right);
    let y = Scale::new(y_lo, y_hi, area.bottom, area.top);
    canvas.axes(&area, (&x, &linear_ticks(x_lo, x_hi, x_step)), (&y, &linear_ticks(y_lo, y_hi, y_step)));
    canvas.axis_labels(&area, "fit step", y_label);
    let mut legend_y = area.top + 8.0;
    for (i, (name, curve)) in curves.iter().enumerate() {
        let coords: Vec<String> = curve
            .iter()
            .filter(|(sx, sy)| sx.is_finite() && sy.is_finite())
            .map(|&(sx, sy)| format!("{},{}", num(x.at(sx)), num(y.at(sy))))
            .collect();
        if !coords.is_empty() {
            canvas.push(format!(
                r#"<path class="series" d="M{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"/>"#,
                coords.join(" L"),
                colour(i)
            ));
        }
        let lx = area.right + 14.0;
        canvas.line((lx, legend_y), (lx + 22.0, legend_y), colour(i), 2.0, None);
        canvas.text((lx + 28.0, legend_y + 4.0), &truncate(name, 19), 11.0, "start", INK);
        legend_y += 18.0;
    }
    canvas.finish()
}

/// Plot 2: the median prune time of each pruner on a log-scale y axis, as a lollipop (a stem
/// and a dot) labelled with its value.
pub fn prune_time(summary: &Summary, target: Target) -> String {
    let mut canvas = Canvas::new(target, "Median prune time per pruner");
    let area = Area { left: 72.0, top: 44.0, right: WIDTH - 24.0, bottom: HEIGHT - 72.0 };
    let medians: Vec<Option<f64>> =
        summary.pruners.iter().map(|p| p.median_prune_seconds.filter(|s| *s > 0.0 && s.is_finite())).collect();
    let (lo, hi) = extent(medians.iter().flatten().map(|s| s.log10()))
        .map_or((-3, 0), |(lo, hi)| ((lo - 0.2).floor() as i32, (hi + 0.2).ceil() as i32));
    let y = Scale::new(f64::from(lo), f64::from(hi), area.bottom, area.top);
    let y_ticks: Vec<(f64, String)> = (lo..=hi).map(|k| (f64::from(k), decade_label(k))).collect();
    canvas.axes(&area, (&Scale::new(0.0, 1.0, area.left, area.right), &[]), (&y, &y_ticks));
    canvas.axis_labels(&area, "", "median prune time (log scale)");
    let n = summary.pruners.len();
    if n == 0 {
        canvas.text((area.centre_x(), area.centre_y()), "no results", 13.0, "middle", MUTED);
        return canvas.finish();
    }
    let band = (area.right - area.left) / n as f64;
    let fits = summary.pruners.iter().all(|p| 6.5 * p.name.chars().count() as f64 <= band - 6.0);
    for (i, (pruner, median)) in summary.pruners.iter().zip(&medians).enumerate() {
        let cx = area.left + band * (i as f64 + 0.5);
        match median {
            Some(seconds) => {
                let cy = y.at(seconds.log10());
                canvas.line((cx, area.bottom), (cx, cy), colour(i), 3.0, None);
                let tip = format!("{}: median {} over {} ok rows", pruner.name, format_seconds(*seconds), pruner.ok);
                canvas.marker(i, (cx, cy), 6.0, true, &tip);
                canvas.text((cx, cy - 11.0), &format_seconds(*seconds), 11.0, "middle", INK);
            }
            None => canvas.text((cx, area.bottom - 10.0), "no results", 11.0, "middle", MUTED),
        }
        let name = escape(&truncate(&pruner.name, if fits { 20 } else { 16 }));
        if fits {
            canvas.push(format!(
                r#"<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="{INK}">{name}</text>"#,
                num(cx),
                num(area.bottom + 18.0)
            ));
        } else {
            let (tx, ty) = (num(cx + 4.0), num(area.bottom + 14.0));
            canvas.push(format!(
                r#"<text x="{tx}" y="{ty}" font-size="11" text-anchor="end" fill="{INK}" transform="rotate(-30 {tx} {ty})">{name}</text>"#
            ));
        }
    }
    canvas.finish()
}

/// Plot 3: achieved against requested sparsity (%) of every ok row, with the y = x diagonal
/// that a pruner hitting its target lies on.
pub fn sparsity(summary: &Summary, target: Target) -> String {
    let mut canvas = Canvas::new(target, "Achieved vs requested sparsity");
    let area = Area::WITH_LEGEND;
    let all = summary.pruners.iter().flat_map(|p| &p.sparsity).flat_map(|(r, a)| [100.0 * r, 100.0 * a]);
    let (min, max) = extent(all).unwrap_or((0.0, 100.0));
    // At least 10 points wide: a zoom onto hundredths of a percent would make a pruner that
    // is on target by any practical measure look far off the diagonal.
    let (min, max) = if max - min < 10.0 { ((min + max) / 2.0 - 5.0, (min + max) / 2.0 + 5.0) } else { (min, max) };
    // A little room below the lowest point keeps it off the axis line.
    let (lo, hi, step) = nice_range(min - 0.02 * (max - min), max);
    let (lo, hi) = (lo.max(0.0), hi.min(100.0).max(lo.max(0.0) + step));
    let x = Scale::new(lo, hi, area.left, area.right);
    let y = Scale::new(lo, hi, area.bottom, area.top);
    let ticks = linear_ticks(lo, hi, step);
    canvas.axes(&area, (&x, &ticks), (&y, &ticks));
    canvas.axis_labels(&area, "requested sparsity (%)", "achieved sparsity (%)");
    canvas.line((x.at(lo), y.at(lo)), (x.at(hi), y.at(hi)), MUTED, 1.0, Some("4 3"));
    // Pruners that hit their targets all land on the same points of the diagonal; each is
    // shifted sideways by a few pixels, in legend order, so that none hides another.
    let with_points = summary.pruners.iter().filter(|p| !p.sparsity.is_empty()).count();
    let dodge = if with_points > 6 { 30.0 / with_points as f64 } else { 5.0 };
    let mut k = 0.0;
    for (i, pruner) in summary.pruners.iter().enumerate().filter(|(_, p)| !p.sparsity.is_empty()) {
        let shift = (k - (with_points as f64 - 1.0) / 2.0) * dodge;
        k += 1.0;
        // Members at the same sparsity often land on the same pixel; one marker each is enough.
        let mut drawn = std::collections::BTreeSet::new();
        for (requested, achieved) in &pruner.sparsity {
            let (px, py) = (x.at(100.0 * requested) + shift, y.at(100.0 * achieved));
            if drawn.insert((num(px), num(py))) {
                let tip = format!(
                    "{}: requested {:.2} %, achieved {:.2} %",
                    pruner.name,
                    100.0 * requested,
                    100.0 * achieved
                );
                canvas.marker(i, (px, py), 4.5, false, &tip);
            }
        }
    }
    let below = canvas.legend(&area, summary, |p| !p.sparsity.is_empty());
    let lx = area.right + 14.0;
    canvas.line((lx, below + 6.0), (lx + 22.0, below + 6.0), MUTED, 1.0, Some("4 3"));
    canvas.text((lx + 28.0, below + 10.0), "y = x: on target", 11.0, "start", MUTED);
    canvas.finish()
}

/// The plot area inside the 640×400 canvas, pixels.
#[derive(Debug, Clone, Copy)]
struct Area {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl Area {
    /// Room on the right for a legend of pruner names.
    const WITH_LEGEND: Area = Area { left: 64.0, top: 44.0, right: WIDTH - 176.0, bottom: HEIGHT - 56.0 };

    fn centre_x(&self) -> f64 {
        (self.left + self.right) / 2.0
    }

    fn centre_y(&self) -> f64 {
        (self.top + self.bottom) / 2.0
    }
}

/// A linear map from data values to pixels.
#[derive(Debug, Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Scale {
    fn new(lo: f64, hi: f64, px_lo: f64, px_hi: f64) -> Scale {
        Scale { lo, hi, px_lo, px_hi }
    }

    fn at(&self, value: f64) -> f64 {
        let span = if self.hi > self.lo { self.hi - self.lo } else { 1.0 };
        self.px_lo + (value - self.lo) / span * (self.px_hi - self.px_lo)
    }
}

/// An SVG document being written.
struct Canvas {
    out: String,
}

impl Canvas {
    fn new(target: Target, title: &str) -> Canvas {
        let namespace = match target {
            Target::File => r#" xmlns="http://www.w3.org/2000/svg""#,
            Target::Inline => "",
        };
        let title = escape(title);
        let mut out = format!(
            r#"<svg{namespace} viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" role="img" aria-label="{title}">"#
        );
        out.push('\n');
        out.push_str(&format!("<title>{title}</title>\n"));
        out.push_str(&format!(r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##));
        out.push('\n');
        out.push_str(&format!(
            r#"<text x="{}" y="26" font-size="15" font-weight="bold" text-anchor="middle" fill="{INK}">{title}</text>"#,
            WIDTH / 2.0
        ));
        out.push('\n');
        Canvas { out }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }

    fn push(&mut self, element: String) {
        self.out.push_str(&element);
        self.out.push('\n');
    }

    fn line(&mut self, from: (f64, f64), to: (f64, f64), stroke: &str, width: f64, dash: Option<&str>) {
        let dash = dash.map_or(String::new(), |d| format!(r#" stroke-dasharray="{d}""#));
        self.push(format!(
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{stroke}" stroke-width="{width}"{dash}/>"#,
            num(from.0),
            num(from.1),
            num(to.0),
            num(to.1)
        ));
    }

    fn text(&mut self, at: (f64, f64), text: &str, size: f64, anchor: &str, fill: &str) {
        self.push(format!(
            r#"<text x="{}" y="{}" font-size="{size}" text-anchor="{anchor}" fill="{fill}">{}</text>"#,
            num(at.0),
            num(at.1),
            escape(text)
        ));
    }

    /// Grid lines, axis lines, ticks and tick labels. A tick is `(data value, label)`.
    fn axes(&mut self, area: &Area, x: (&Scale, &[(f64, String)]), y: (&Scale, &[(f64, String)])) {
        for (value, label) in y.1 {
            let py = y.0.at(*value);
            self.line((area.left, py), (area.right, py), GRID, 1.0, None);
            self.line((area.left - 4.0, py), (area.left, py), INK, 1.0, None);
            self.text((area.left - 7.0, py + 4.0), label, 11.0, "end", INK);
        }
        for (value, label) in x.1 {
            let px = x.0.at(*value);
            self.line((px, area.top), (px, area.bottom), GRID, 1.0, None);
            self.line((px, area.bottom), (px, area.bottom + 4.0), INK, 1.0, None);
            self.text((px, area.bottom + 17.0), label, 11.0, "middle", INK);
        }
        self.line((area.left, area.top), (area.left, area.bottom), INK, 1.0, None);
        self.line((area.left, area.bottom), (area.right, area.bottom), INK, 1.0, None);
    }

    fn axis_labels(&mut self, area: &Area, x_label: &str, y_label: &str) {
        if !x_label.is_empty() {
            self.text((area.centre_x(), area.bottom + 38.0), x_label, 12.0, "middle", INK);
        }
        let (tx, ty) = (num(18.0), num(area.centre_y()));
        self.push(format!(
            r#"<text x="{tx}" y="{ty}" font-size="12" text-anchor="middle" fill="{INK}" transform="rotate(-90 {tx} {ty})">{}</text>"#,
            escape(y_label)
        ));
    }

    /// The ±1 std band of a run of consecutive points `(x pixel, retention)`; an error bar
    /// when the run is a single point, which has no area to shade.
    fn band(&mut self, run: &[(f64, MeanStd)], y: &Scale, colour: &str) {
        let upper = |s: &MeanStd| y.at(100.0 * (s.mean + s.std));
        let lower = |s: &MeanStd| y.at(100.0 * (s.mean - s.std));
        match run {
            [] => {}
            [(px, s)] => {
                self.line((*px, upper(s)), (*px, lower(s)), colour, 1.5, None);
                for py in [upper(s), lower(s)] {
                    self.line((px - 4.0, py), (px + 4.0, py), colour, 1.5, None);
                }
            }
            _ => {
                let top = run.iter().map(|(px, s)| format!("{},{}", num(*px), num(upper(s))));
                let bottom = run.iter().rev().map(|(px, s)| format!("{},{}", num(*px), num(lower(s))));
                let points: Vec<String> = top.chain(bottom).collect();
                self.push(format!(
                    r#"<polygon class="band" points="{}" fill="{colour}" fill-opacity="0.15" stroke="none"/>"#,
                    points.join(" ")
                ));
            }
        }
    }

    /// Pruner `pruner`'s marker shape centred at `at`, with a hover tooltip.
    fn marker(&mut self, pruner: usize, at: (f64, f64), r: f64, filled: bool, tooltip: &str) {
        let colour = colour(pruner);
        let (x, y) = at;
        let fill = if filled { colour } else { "none" };
        let style = format!(r#"fill="{fill}" stroke="{}" stroke-width="1.5""#, if filled { "#ffffff" } else { colour });
        let polygon = |corners: &[(f64, f64)]| {
            let points: Vec<String> =
                corners.iter().map(|(dx, dy)| format!("{},{}", num(x + dx), num(y + dy))).collect();
            format!(r#"points="{}""#, points.join(" "))
        };
        let (tag, shape) = match pruner % SHAPES {
            0 => ("circle", format!(r#"cx="{}" cy="{}" r="{}""#, num(x), num(y), num(r))),
            1 => (
                "rect",
                format!(
                    r#"x="{}" y="{}" width="{}" height="{}""#,
                    num(x - 0.9 * r),
                    num(y - 0.9 * r),
                    num(1.8 * r),
                    num(1.8 * r)
                ),
            ),
            2 => ("polygon", polygon(&[(0.0, -1.25 * r), (1.25 * r, 0.0), (0.0, 1.25 * r), (-1.25 * r, 0.0)])),
            _ => ("polygon", polygon(&[(0.0, -1.25 * r), (1.15 * r, 0.85 * r), (-1.15 * r, 0.85 * r)])),
        };
        self.push(format!("<{tag} {shape} {style}><title>{}</title></{tag}>", escape(tooltip)));
    }

    /// One entry per pruner right of the plot area: its line and marker and its name, or
    /// "no results" under the name of a pruner with nothing `shown` in this plot. Returns the
    /// y below the last entry.
    fn legend(&mut self, area: &Area, summary: &Summary, shown: fn(&PrunerSummary) -> bool) -> f64 {
        let x = area.right + 14.0;
        let mut y = area.top + 8.0;
        for (i, pruner) in summary.pruners.iter().enumerate() {
            let name = truncate(&pruner.name, 19);
            if shown(pruner) {
                self.line((x, y), (x + 22.0, y), colour(i), 2.0, None);
                self.marker(i, (x + 11.0, y), 4.0, true, &pruner.name);
                self.text((x + 28.0, y + 4.0), &name, 11.0, "start", INK);
                y += 18.0;
            } else {
                self.text((x + 28.0, y + 4.0), &name, 11.0, "start", MUTED);
                self.text((x + 28.0, y + 17.0), "no results", 10.0, "start", MUTED);
                y += 30.0;
            }
        }
        y
    }
}

/// Smallest and largest finite value.
fn extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A range covering `[min, max]` that starts and ends on a round step of 1, 2, 2.5 or 5
/// times a power of ten, about five steps long: `(lo, hi, step)`.
fn nice_range(min: f64, max: f64) -> (f64, f64, f64) {
    let (min, max) = if max - min < 1e-9 { (min - 1.0, max + 1.0) } else { (min, max) };
    let raw = (max - min) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    ((min / step).floor() * step, (max / step).ceil() * step, step)
}

/// Ticks every `step` from `lo` to `hi`, labelled with as few decimals as the step needs.
fn linear_ticks(lo: f64, hi: f64, step: f64) -> Vec<(f64, String)> {
    let decimals = (0..6).find(|d| {
        let scaled = step * 10f64.powi(*d);
        (scaled - scaled.round()).abs() < 1e-6
    });
    let decimals = decimals.unwrap_or(6) as usize;
    let count = ((hi - lo) / step).round() as usize;
    (0..=count)
        .map(|i| {
            let value = lo + i as f64 * step;
            // Adding 0.0 turns a -0.0 into 0.0, so no tick reads "-0".
            (value, format!("{:.decimals$}", value + 0.0))
        })
        .collect()
}

/// `1 µs`, `10 ms`, `1 s`, `100 s`: the label of the tick at 10^k seconds.
fn decade_label(k: i32) -> String {
    let (unit, exponent) = match k {
        k if k < -6 => ("ns", k + 9),
        k if k < -3 => ("µs", k + 6),
        k if k < 0 => ("ms", k + 3),
        k => ("s", k),
    };
    format!("{} {unit}", 10u64.pow(exponent.clamp(0, 18) as u32))
}

/// A name cut to `max` characters, ending in `…` when cut.
fn truncate(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let kept: String = name.chars().take(max - 1).collect();
        format!("{kept}…")
    }
}

/// A coordinate with one decimal: enough at this size, and the same on every machine.
fn num(value: f64) -> String {
    format!("{:.1}", value + 0.0)
}

#[cfg(test)]
mod tests {
    use super::super::table::tests::{row, rows};
    use super::*;

    fn check_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<title>").count(), svg.matches("</title>").count());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn every_plot_is_well_formed_and_deterministic() {
        let summary = Summary::of(&rows());
        for plot in [retention, prune_time, sparsity] {
            let svg = plot(&summary, Target::File);
            check_well_formed(&svg);
            assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
            assert_eq!(svg, plot(&summary, Target::File));
            let inline = plot(&summary, Target::Inline);
            check_well_formed(&inline);
            assert!(!inline.contains("http"), "{inline}");
        }
    }

    #[test]
    fn retention_has_one_line_and_one_band_per_pruner_with_results() {
        let svg = retention(&Summary::of(&rows()), Target::File);
        assert_eq!(svg.matches(r#"<path class="series""#).count(), 2, "{svg}");
        assert_eq!(svg.matches(r#"<polygon class="band""#).count(), 2, "{svg}");
        assert!(svg.contains(">2×</text>") && svg.contains(">4×</text>"), "{svg}");
        assert!(svg.contains("magnitude at 2×: 98.0 ± 1.0 % (n = 3)"), "{svg}");
    }

    #[test]
    fn edge_cases_draw_without_nan_one_level_one_pruner_and_all_errors() {
        // One compression level, one pruner with results, one with only errors, one NaN.
        let rows = vec![
            row("m0", "magnitude", 0.5, Some(0.99), 0.001),
            row("m1", "magnitude", 0.5, Some(f64::NAN), 0.002),
            row("m0", "broken", 0.5, None, 0.0),
        ];
        let summary = Summary::of(&rows);
        for plot in [retention, prune_time, sparsity] {
            check_well_formed(&plot(&summary, Target::Inline));
        }
        let svg = retention(&summary, Target::Inline);
        assert_eq!(svg.matches(r#"<path class="series""#).count(), 1, "{svg}");
        assert!(svg.contains(">broken</text>") && svg.contains(">no results</text>"), "{svg}");
        assert!(prune_time(&summary, Target::Inline).contains(">no results</text>"));
        // No rows at all.
        let empty = Summary::of(&[]);
        for plot in [retention, prune_time, sparsity] {
            check_well_formed(&plot(&empty, Target::Inline));
        }
    }

    #[test]
    fn the_ceiling_is_dashed_and_fit_curves_draw_one_line_each() {
        let mut all = rows();
        for r in all.iter_mut().filter(|r| r.pruner == "random") {
            r.pruner = "maskopt".into();
        }
        let svg = retention(&Summary::of(&all), Target::File);
        check_well_formed(&svg);
        assert_eq!(svg.matches("stroke-dasharray=\"7 4\"").count(), 1, "only maskopt is dashed: {svg}");
        let curves = vec![("a".to_string(), vec![(0.0, 1.0), (10.0, 0.5)]), ("b".to_string(), vec![(0.0, 2.0)])];
        let svg = fit_curves("Fit loss", &curves, "loss", Target::File);
        check_well_formed(&svg);
        assert_eq!(svg.matches(r#"<path class="series""#).count(), 2, "{svg}");
        assert!(!svg.contains("NaN"), "{svg}");
    }

    #[test]
    fn ranges_and_ticks_are_round() {
        assert_eq!(nice_range(93.0, 100.0), (92.0, 100.0, 2.0));
        assert_eq!(nice_range(0.0, 100.0), (0.0, 100.0, 20.0));
        assert_eq!(nice_range(50.0, 50.0), (49.0, 51.0, 0.5));
        let ticks: Vec<String> = linear_ticks(90.0, 100.0, 2.5).into_iter().map(|t| t.1).collect();
        assert_eq!(ticks, ["90.0", "92.5", "95.0", "97.5", "100.0"]);
        assert_eq!(decade_label(-4), "100 µs");
        assert_eq!(decade_label(-3), "1 ms");
        assert_eq!(decade_label(2), "100 s");
    }
}
