//! A self-contained HTML report of one run (`berth sim run --report report.html`): the summary
//! table and the key views as inline SVG drawn here, with no script, no stylesheet and no
//! font from anywhere else, so the file can be mailed or attached to a ticket.
//!
//! [`render`] is pure (report + tables in, text out); [`RunData::load`] reads a run's output
//! folder. Views: allocation and utilisation per resource (cluster, then per pool), pending and
//! running tasks (cluster, then pending per pool), wait-time CDF per tier, GPU fragmentation,
//! nodes (total and per pool), cost.

use crate::metrics::{PoolFigures, Sample, NO_POOL};
use crate::report::SimReport;
use crate::tables::CsvTable;
use crate::SimError;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Width and height of a chart's viewBox.
pub const CHART_W: f64 = 720.0;
pub const CHART_H: f64 = 260.0;
/// The plot area inside the viewBox (left, top, right, bottom margins).
const MARGIN_L: f64 = 64.0;
const MARGIN_T: f64 = 28.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_B: f64 = 36.0;
/// Points drawn per polyline at most (a long run is thinned evenly; the last point is kept).
pub const POLYLINE_POINTS_MAX: usize = 1_500;

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];
/// The palette's grey (totals beside per-pool lines).
const GREY: usize = 8;

/// Nodes in service of one (sample, pool, instance type, zone).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub t_ms: u64,
    pub pool: String,
    pub instance_type: String,
    pub zone: String,
    pub nodes: u64,
}

/// One pool's figures at one sample (a row of `pools.csv`).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolRow {
    pub t_ms: u64,
    pub pool: String,
    pub figures: PoolFigures,
}

/// What the report draws, beside the [`SimReport`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunData {
    pub series: Vec<Sample>,
    pub nodes: Vec<NodeRow>,
    /// Every pool at every sample, in sample order.
    pub pools: Vec<PoolRow>,
    /// First-attempt waits per tier (the figures behind the report's p50/p99), in ms.
    pub waits_ms: BTreeMap<String, Vec<u64>>,
}

fn bad(path: &Path, line: usize, what: &str) -> SimError {
    SimError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line {line}: {what}"),
        ),
    )
}

impl RunData {
    /// Reads `series.csv`, `nodes.csv`, `pools.csv` and `tasks.csv` of a run's folder.
    pub fn load(dir: &Path) -> Result<RunData, SimError> {
        let mut d = RunData::default();
        let p = dir.join("series.csv");
        let t = CsvTable::read(&p)?;
        for (n, r) in t.rows.iter().enumerate() {
            let u = |i: usize| -> Result<u64, SimError> {
                r.get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(&p, n + 2, "expected an integer"))
            };
            d.series.push(Sample {
                t_ms: u(0)?,
                figures: PoolFigures::from_values(array_of(|i| u(1 + i))?),
                cost_usd: r
                    .get(14)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(&p, n + 2, "expected a number"))?,
            });
        }
        let p = dir.join("nodes.csv");
        let t = CsvTable::read(&p)?;
        for (n, r) in t.rows.iter().enumerate() {
            if r.len() < 5 {
                return Err(bad(&p, n + 2, "expected 5 fields"));
            }
            d.nodes.push(NodeRow {
                t_ms: r[0].parse().map_err(|_| bad(&p, n + 2, "t_ms"))?,
                pool: r[1].clone(),
                instance_type: r[2].clone(),
                zone: r[3].clone(),
                nodes: r[4].parse().map_err(|_| bad(&p, n + 2, "nodes"))?,
            });
        }
        let p = dir.join("pools.csv");
        let t = CsvTable::read(&p)?;
        let mut cols = Vec::with_capacity(crate::tables::POOLS_COLUMNS.len());
        for (name, _) in crate::tables::POOLS_COLUMNS {
            cols.push(
                t.col(name)
                    .ok_or_else(|| bad(&p, 1, &format!("no column {name}")))?,
            );
        }
        for (n, r) in t.rows.iter().enumerate() {
            let u = |c: usize| -> Result<u64, SimError> {
                r.get(cols[c])
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(&p, n + 2, "expected an integer"))
            };
            d.pools.push(PoolRow {
                t_ms: u(0)?,
                pool: r.get(cols[1]).cloned().unwrap_or_default(),
                figures: PoolFigures::from_values(array_of(|i| u(2 + i))?),
            });
        }
        let p = dir.join("tasks.csv");
        let t = CsvTable::read(&p)?;
        let (attempt, tier, wait) = (t.col("attempt"), t.col("tier"), t.col("wait_ms"));
        if let (Some(a), Some(ti), Some(w)) = (attempt, tier, wait) {
            for r in &t.rows {
                let (Some(a), Some(ti), Some(w)) = (r.get(a), r.get(ti), r.get(w)) else {
                    continue;
                };
                if a == "0" && !ti.is_empty() {
                    if let Ok(w) = w.parse::<u64>() {
                        d.waits_ms.entry(ti.clone()).or_default().push(w);
                    }
                }
            }
        }
        for v in d.waits_ms.values_mut() {
            v.sort_unstable();
        }
        Ok(d)
    }
}

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// One line of a chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Palette index; `None`: the line's position in the chart.
    pub color: Option<usize>,
    /// Drawn dashed (and so in the legend).
    pub dashed: bool,
}

/// A "nice" upper bound for an axis (1, 2, 2.5 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * p * (1.0 + 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Thins a line to at most [`POLYLINE_POINTS_MAX`] points, keeping the first and last.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= POLYLINE_POINTS_MAX {
        return points.to_vec();
    }
    let step = points.len() as f64 / (POLYLINE_POINTS_MAX - 1) as f64;
    let mut out: Vec<(f64, f64)> = (0..POLYLINE_POINTS_MAX - 1)
        .map(|i| points[(i as f64 * step) as usize])
        .collect();
    out.push(points[points.len() - 1]);
    out
}

/// An SVG line chart: axes from 0 to a nice maximum (or `y_max` when given), one `<polyline>`
/// per line in `lines`, a legend. The plot area is the viewBox less the margins; x and y scale
/// linearly into it.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    y_max: Option<f64>,
) -> String {
    let all = lines.iter().flat_map(|l| l.points.iter());
    let (mut x_max, mut y_hi) = (0f64, 0f64);
    for &(x, y) in all {
        if x.is_finite() {
            x_max = x_max.max(x);
        }
        if y.is_finite() {
            y_hi = y_hi.max(y);
        }
    }
    let x_max = nice_max(x_max);
    let y_max = y_max.unwrap_or_else(|| nice_max(y_hi));
    let (pw, ph) = (CHART_W - MARGIN_L - MARGIN_R, CHART_H - MARGIN_T - MARGIN_B);
    let sx = |x: f64| MARGIN_L + (x / x_max).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| MARGIN_T + ph - (y / y_max).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r#"<text x="{MARGIN_L}" y="16" class="ct">{}</text>"#,
        esc(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = sy(v);
        let _ = write!(
            s,
            r##"<line x1="{MARGIN_L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tk">{}</text>"##,
            MARGIN_L + pw,
            MARGIN_L - 4.0,
            y + 4.0,
            fmt_tick(v)
        );
        let xv = x_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tk">{}</text>"#,
            sx(xv),
            MARGIN_T + ph + 14.0,
            fmt_tick(xv)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle" class="tk">{}</text><text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle" class="tk">{}</text>"##,
        MARGIN_L + pw / 2.0,
        CHART_H - 4.0,
        esc(x_label),
        MARGIN_T + ph / 2.0,
        MARGIN_T + ph / 2.0,
        esc(y_label)
    );
    for (i, l) in lines.iter().enumerate() {
        let color = PALETTE[l.color.unwrap_or(i) % PALETTE.len()];
        let dash = if l.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let mut pts = String::new();
        for &(x, y) in thin(&l.points).iter() {
            if x.is_finite() && y.is_finite() {
                let _ = write!(pts, "{:.1},{:.1} ", sx(x), sy(y));
            }
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"><title>{}</title></polyline>"#,
            pts.trim_end(),
            esc(&l.name)
        );
        let lx = MARGIN_L + 8.0 + (i % 4) as f64 * 160.0;
        let ly = MARGIN_T + 12.0 + (i / 4) as f64 * 14.0;
        let y = ly - 3.0;
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}" class="lg">{}</text>"#,
            lx + 12.0,
            lx + 16.0,
            ly,
            esc(&l.name)
        );
    }
    s.push_str("</svg>");
    s
}

fn hours(t_ms: u64) -> f64 {
    t_ms as f64 / 3.6e6
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn series_line(name: &str, series: &[Sample], f: impl Fn(&Sample) -> f64) -> Line {
    Line {
        name: name.to_string(),
        points: series.iter().map(|s| (hours(s.t_ms), f(s))).collect(),
        ..Line::default()
    }
}

/// Pool rows grouped by pool, in the order pools first appear (the table's pool order).
fn pool_series(rows: &[PoolRow]) -> Vec<(&str, Vec<(u64, PoolFigures)>)> {
    let mut out: Vec<(&str, Vec<(u64, PoolFigures)>)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(p, _)| *p == r.pool) {
            Some((_, v)) => v.push((r.t_ms, r.figures)),
            None => out.push((r.pool.as_str(), vec![(r.t_ms, r.figures)])),
        }
    }
    out
}

fn pool_line(name: &str, rows: &[(u64, PoolFigures)], f: impl Fn(&PoolFigures) -> f64) -> Line {
    Line {
        name: name.to_string(),
        points: rows.iter().map(|(t, v)| (hours(*t), f(v))).collect(),
        ..Line::default()
    }
}

/// The empirical CDF of sorted waits, in minutes, as a step line.
pub fn cdf_line(name: &str, sorted_ms: &[u64]) -> Line {
    let n = sorted_ms.len() as f64;
    let mut points = Vec::with_capacity(sorted_ms.len() * 2 + 1);
    let mut prev = 0.0;
    for (i, &w) in sorted_ms.iter().enumerate() {
        let x = w as f64 / 60_000.0;
        points.push((x, prev));
        prev = (i + 1) as f64 / n;
        points.push((x, prev));
    }
    Line {
        name: format!("{name} ({} tasks)", sorted_ms.len()),
        points,
        ..Line::default()
    }
}

/// The whole page.
pub fn render(report: &SimReport, d: &RunData) -> String {
    let mut h = String::new();
    let title = format!("Berth simulation: {}", report.scenario);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:1500px;margin:1em auto;padding:0 1em;color:#222}}\
         .grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}}\
         svg.chart{{width:100%;height:auto;background:#fff;border:1px solid #eee}}\
         .ct{{font-size:13px;font-weight:600}} .tk{{font-size:10px;fill:#555}} .lg{{font-size:10px}}\
         table{{border-collapse:collapse}} td{{padding:2px 10px;border-bottom:1px solid #eee}}\
         td:first-child{{color:#555}} .note{{color:#666;font-size:90%}}\
         </style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        h,
        "<p class=\"note\">workload {}, seed {}, horizon {:.2} h, event-log hash <code>{}</code>. \
         Allocation is what placed tasks hold on nodes in service; utilisation what running \
         containers hold; both over the capacity in service.</p>",
        esc(&report.workload),
        report.seed,
        hours(report.horizon_ms),
        esc(&report.event_log_hash)
    );
    h.push_str("<h2>Summary</h2>\n<table>\n");
    for line in report.render_table().lines() {
        let (k, v) = line.split_once("  ").unwrap_or((line, ""));
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(k.trim()),
            esc(v.trim())
        );
    }
    h.push_str("</table>\n<h2>Over time</h2>\n<div class=\"grid\">\n");
    let s = &d.series;
    let x = "simulated time (h)";
    for (res, cap, alloc, used) in [
        (
            "CPU",
            (|s: &Sample| s.figures.cpu_capacity_milli) as fn(&Sample) -> u64,
            (|s: &Sample| s.figures.cpu_alloc_milli) as fn(&Sample) -> u64,
            (|s: &Sample| s.figures.cpu_used_milli) as fn(&Sample) -> u64,
        ),
        (
            "memory",
            |s: &Sample| s.figures.mem_capacity_mib,
            |s: &Sample| s.figures.mem_alloc_mib,
            |s: &Sample| s.figures.mem_used_mib,
        ),
        (
            "GPU",
            |s: &Sample| s.figures.gpu_capacity_milli,
            |s: &Sample| s.figures.gpu_alloc_milli,
            |s: &Sample| s.figures.gpu_used_milli,
        ),
    ] {
        h.push_str(&line_chart(
            &format!("{res} allocation and utilisation"),
            x,
            "% of capacity in service",
            &[
                series_line("allocated", s, |v| pct(alloc(v), cap(v))),
                series_line("used (running)", s, |v| pct(used(v), cap(v))),
            ],
            Some(100.0),
        ));
    }
    // Per pool: allocation and utilisation of each resource over the pool's own capacity in
    // service (pools that never had any of it are left out), then pending tasks.
    let pools = pool_series(&d.pools);
    for (res, cap, alloc, used) in [
        (
            "CPU",
            (|f: &PoolFigures| f.cpu_capacity_milli) as fn(&PoolFigures) -> u64,
            (|f: &PoolFigures| f.cpu_alloc_milli) as fn(&PoolFigures) -> u64,
            (|f: &PoolFigures| f.cpu_used_milli) as fn(&PoolFigures) -> u64,
        ),
        (
            "memory",
            |f: &PoolFigures| f.mem_capacity_mib,
            |f: &PoolFigures| f.mem_alloc_mib,
            |f: &PoolFigures| f.mem_used_mib,
        ),
        (
            "GPU",
            |f: &PoolFigures| f.gpu_capacity_milli,
            |f: &PoolFigures| f.gpu_alloc_milli,
            |f: &PoolFigures| f.gpu_used_milli,
        ),
    ] {
        // One colour per pool (the same in every per-pool view); used is dashed.
        let mut lines = Vec::new();
        for (k, (pool, rows)) in pools.iter().enumerate() {
            if rows.iter().all(|(_, f)| cap(f) == 0) {
                continue;
            }
            let allocated = pool_line(&format!("{pool} allocated"), rows, |f| {
                pct(alloc(f), cap(f))
            });
            let used_line = pool_line(&format!("{pool} used"), rows, |f| pct(used(f), cap(f)));
            lines.push(Line {
                color: Some(k),
                ..allocated
            });
            lines.push(Line {
                color: Some(k),
                dashed: true,
                ..used_line
            });
        }
        h.push_str(&line_chart(
            &format!("{res} per pool: allocated and used"),
            x,
            "% of the pool's capacity in service",
            &lines,
            Some(100.0),
        ));
    }
    h.push_str(&line_chart(
        "Tasks pending and running",
        x,
        "tasks",
        &[
            series_line("pending", s, |v| v.figures.pending_tasks as f64),
            series_line("running", s, |v| v.figures.running_tasks as f64),
        ],
        None,
    ));
    let pending: Vec<Line> = pools
        .iter()
        .enumerate()
        .map(|(k, (pool, rows))| Line {
            color: Some(k),
            ..pool_line(pool, rows, |f| f.pending_tasks as f64)
        })
        .collect();
    h.push_str(&line_chart(
        "Pending tasks per pool (by the first pool that could serve them)",
        x,
        "tasks",
        &pending,
        None,
    ));
    h.push_str(&line_chart(
        "GPU fragmentation",
        x,
        "GPUs",
        &[
            series_line("idle on partly allocated nodes", s, |v| {
                v.figures.gpu_idle_on_partial_nodes_milli as f64 / 1000.0
            }),
            series_line("free (all)", s, |v| {
                (v.figures.gpu_capacity_milli
                    - v.figures.gpu_alloc_milli.min(v.figures.gpu_capacity_milli))
                    as f64
                    / 1000.0
            }),
        ],
        None,
    ));
    // Nodes: the total, then one line per pool.
    let mut per_pool: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    for r in &d.nodes {
        *per_pool
            .entry(r.pool.as_str())
            .or_default()
            .entry(r.t_ms)
            .or_insert(0) += r.nodes;
    }
    // Each pool in its colour of the per-pool views; the total in grey.
    let mut node_lines = vec![Line {
        color: Some(GREY),
        ..series_line("all", s, |v| v.figures.nodes as f64)
    }];
    for (pool, counts) in &per_pool {
        let label = if pool.is_empty() { NO_POOL } else { pool };
        // A pool absent from a sample had no node in service then.
        let points = s
            .iter()
            .map(|v| {
                (
                    hours(v.t_ms),
                    counts.get(&v.t_ms).copied().unwrap_or(0) as f64,
                )
            })
            .collect();
        node_lines.push(Line {
            name: format!("pool {label}"),
            points,
            color: pools.iter().position(|(p, _)| *p == label),
            ..Line::default()
        });
    }
    h.push_str(&line_chart(
        "Nodes in service",
        x,
        "nodes",
        &node_lines,
        None,
    ));
    h.push_str(&line_chart(
        "Cost so far",
        x,
        "US $",
        &[series_line("cost", s, |v| v.cost_usd)],
        None,
    ));
    let cdf: Vec<Line> = d
        .waits_ms
        .iter()
        .map(|(tier, w)| cdf_line(tier, w))
        .collect();
    h.push_str(&line_chart(
        "Wait-time CDF per tier (first attempts)",
        "wait (min)",
        "share of tasks",
        &cdf,
        Some(1.0),
    ));
    h.push_str("</div>\n<p class=\"note\">Written by <code>berth sim run --report</code>. The same tables are in the run's <code>--out</code> folder (CSV, and Parquet) for the notebooks in <code>notebooks/</code>.</p>\n</body></html>\n");
    h
}

/// An array filled from a fallible function of the index.
fn array_of<const N: usize, E>(mut f: impl FnMut(usize) -> Result<u64, E>) -> Result<[u64; N], E> {
    let mut out = [0u64; N];
    for (i, x) in out.iter_mut().enumerate() {
        *x = f(i)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, pending: u64) -> Sample {
        Sample {
            t_ms,
            figures: PoolFigures {
                nodes: 2,
                cpu_capacity_milli: 4000,
                cpu_alloc_milli: 2000,
                cpu_used_milli: 1000,
                mem_capacity_mib: 100,
                mem_alloc_mib: 50,
                mem_used_mib: 25,
                gpu_capacity_milli: 2000,
                gpu_alloc_milli: 500,
                gpu_used_milli: 500,
                gpu_idle_on_partial_nodes_milli: 500,
                pending_tasks: pending,
                running_tasks: 3,
            },
            cost_usd: t_ms as f64 / 1e6,
        }
    }

    fn points_of(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("points=\"")
            .skip(1)
            .map(|rest| {
                let body = &rest[..rest.find('"').unwrap()];
                body.split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn one_polyline_per_line_and_values_inside_the_plot_area() {
        let lines = vec![
            Line {
                name: "a".into(),
                points: vec![(0.0, 0.0), (1.0, 50.0), (2.0, 100.0)],
                ..Line::default()
            },
            Line {
                name: "b".into(),
                points: vec![(0.0, 10.0), (2.0, 20.0)],
                ..Line::default()
            },
            Line {
                name: "c".into(),
                points: vec![],
                ..Line::default()
            },
        ];
        let svg = line_chart("t", "x", "y", &lines, None);
        assert_eq!(svg.matches("<polyline").count(), 3);
        let pts = points_of(&svg);
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[0].len(), 3);
        for p in pts.iter().flatten() {
            assert!(p.0 >= MARGIN_L && p.0 <= CHART_W - MARGIN_R, "{p:?}");
            assert!(p.1 >= MARGIN_T && p.1 <= CHART_H - MARGIN_B, "{p:?}");
        }
        // y = 0 at the bottom of the plot area, the maximum (100, a nice bound) at the top;
        // x = 2 (a nice bound) at the right edge.
        assert_eq!(pts[0][0], (MARGIN_L, CHART_H - MARGIN_B));
        assert_eq!(pts[0][2], (CHART_W - MARGIN_R, MARGIN_T));
        let mid = MARGIN_T + (CHART_H - MARGIN_T - MARGIN_B) / 2.0;
        assert!((pts[0][1].1 - mid).abs() < 0.06, "{:?}", pts[0][1]);
    }

    #[test]
    fn fixed_y_max_clamps_and_long_lines_are_thinned() {
        let points: Vec<(f64, f64)> = (0..=10_000).map(|i| (i as f64, 250.0)).collect();
        let svg = line_chart(
            "t",
            "x",
            "y",
            &[Line {
                name: "a".into(),
                points,
                ..Line::default()
            }],
            Some(100.0),
        );
        let pts = points_of(&svg);
        assert_eq!(pts[0].len(), POLYLINE_POINTS_MAX);
        assert!(pts[0].iter().all(|p| p.1 == MARGIN_T));
        assert_eq!(pts[0].last().unwrap().0, CHART_W - MARGIN_R);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let svg = line_chart(
            "<b>",
            "x",
            "y",
            &[Line {
                name: "pool <script>alert(1)</script>".into(),
                points: vec![(0.0, 1.0)],
                ..Line::default()
            }],
            None,
        );
        assert!(!svg.contains("<script"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("pool &lt;script&gt;"));
    }

    #[test]
    fn a_line_may_name_its_colour_and_be_dashed() {
        let line = |color, dashed| Line {
            name: "l".into(),
            points: vec![(0.0, 1.0), (1.0, 2.0)],
            color,
            dashed,
        };
        let svg = line_chart(
            "t",
            "x",
            "y",
            &[line(Some(2), true), line(None, false)],
            None,
        );
        let polylines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        assert!(polylines[0].contains(PALETTE[2]) && polylines[0].contains("stroke-dasharray"));
        // Without a colour, the line's position picks it.
        assert!(polylines[1].contains(PALETTE[1]) && !polylines[1].contains("stroke-dasharray"));
    }

    #[test]
    fn cdf_steps_up_to_one() {
        let l = cdf_line("flex", &[0, 60_000, 120_000, 120_000]);
        assert_eq!(l.points.first(), Some(&(0.0, 0.0)));
        assert_eq!(l.points.last(), Some(&(2.0, 1.0)));
        assert!(l.points.windows(2).all(|w| w[1].1 >= w[0].1));
    }

    #[test]
    fn the_page_is_self_contained_and_has_every_view() {
        let r = crate::run_scenario(&crate::Scenario::default_scenario(), &mut |_| {}).unwrap();
        let d = RunData {
            series: (0..50).map(|i| sample(i * 60_000, i % 7)).collect(),
            nodes: vec![NodeRow {
                t_ms: 0,
                pool: "gpu<&>".into(),
                instance_type: "g5.xlarge".into(),
                zone: "a".into(),
                nodes: 2,
            }],
            // Two pools, one without GPUs: it has no line in the GPU per-pool view.
            pools: (0..50)
                .flat_map(|i| {
                    let f = PoolFigures {
                        nodes: 1,
                        cpu_capacity_milli: 2000,
                        cpu_alloc_milli: 1000,
                        cpu_used_milli: 500,
                        mem_capacity_mib: 50,
                        mem_alloc_mib: 25,
                        pending_tasks: i % 3,
                        ..PoolFigures::default()
                    };
                    [
                        PoolRow {
                            t_ms: i * 60_000,
                            pool: "cpu".into(),
                            figures: f,
                        },
                        PoolRow {
                            t_ms: i * 60_000,
                            pool: "gpu".into(),
                            figures: PoolFigures {
                                gpu_capacity_milli: 2000,
                                gpu_alloc_milli: 500,
                                ..f
                            },
                        },
                    ]
                })
                .collect(),
            waits_ms: [
                ("critical".to_string(), vec![0, 1000]),
                ("flex".into(), vec![5]),
            ]
            .into_iter()
            .collect(),
        };
        let html = render(&r, &d);
        for view in [
            "CPU allocation",
            "memory allocation",
            "GPU allocation",
            "CPU per pool",
            "memory per pool",
            "GPU per pool",
            "Pending tasks per pool",
            "Tasks pending",
            "GPU fragmentation",
            "Nodes in service",
            "Cost so far",
            "Wait-time CDF",
            "event log hash",
        ] {
            assert!(html.contains(view), "missing {view}");
        }
        assert!(html.contains("pool gpu&lt;&amp;&gt;"));
        // Nothing loaded from elsewhere: the only URL is the SVG namespace.
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
        assert_eq!(
            html.matches("http").count(),
            html.matches("http://www.w3.org/2000/svg").count()
        );
        // 3 resources x 2 + per pool (cpu 2 x 2, mem 2 x 2, gpu 1 x 2) + pending 2 + pending
        // per pool 2 + frag 2 + nodes (all + 1 pool) + cost 1 + 2 tiers.
        assert_eq!(
            html.matches("<polyline").count(),
            6 + 10 + 2 + 2 + 2 + 2 + 1 + 2
        );
        // The used lines of the per-pool views are dashed, in the plot and the legend.
        assert_eq!(html.matches("stroke-dasharray").count(), 2 * 5);
    }
}
