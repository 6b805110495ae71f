//! Parameter sweeps: a grid of scenario variants (placement policies x queue policies x pool
//! size factors x arrival-rate scales) run in parallel with rayon.

use crate::report::SimReport;
use crate::scenario::Scenario;
use crate::tables::ColumnKind;
use crate::SimError;
use berth_solver::controller::QueuePolicy;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// The grid. An empty list keeps the scenario's own value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default)]
    pub placements: Vec<String>,
    #[serde(default)]
    pub queues: Vec<QueuePolicy>,
    /// Factors applied to every pool's `max_nodes` (and `min_nodes`).
    #[serde(default)]
    pub pool_size_factors: Vec<f64>,
    #[serde(default)]
    pub rate_scales: Vec<f64>,
}

impl SweepSpec {
    /// The 16-variant grid whose speed is measured (the `sim` bench, `examples/sweep.rs`):
    /// 4 placements × 2 pool-size factors × 2 arrival-rate scales.
    pub fn speed_reference() -> SweepSpec {
        SweepSpec {
            placements: vec![
                "berth".into(),
                "best_fit".into(),
                "worst_fit".into(),
                "first_fit".into(),
            ],
            pool_size_factors: vec![0.5, 1.0],
            rate_scales: vec![1.0, 2.0],
            ..SweepSpec::default()
        }
    }

    /// The variants, each with a name, in grid order.
    pub fn variants(&self, base: &Scenario) -> Vec<(String, Scenario)> {
        self.grid(base)
            .into_iter()
            .map(|(name, _, s)| (name, s))
            .collect()
    }

    /// The variants with the grid values each one takes (the scenario's own where a dimension
    /// is not swept), in grid order.
    pub fn grid(&self, base: &Scenario) -> Vec<(String, VariantParams, Scenario)> {
        let placements: Vec<Option<&String>> = if self.placements.is_empty() {
            vec![None]
        } else {
            self.placements.iter().map(Some).collect()
        };
        let queues: Vec<Option<QueuePolicy>> = if self.queues.is_empty() {
            vec![None]
        } else {
            self.queues.iter().copied().map(Some).collect()
        };
        let factors: Vec<Option<f64>> = if self.pool_size_factors.is_empty() {
            vec![None]
        } else {
            self.pool_size_factors.iter().copied().map(Some).collect()
        };
        let rates: Vec<Option<f64>> = if self.rate_scales.is_empty() {
            vec![None]
        } else {
            self.rate_scales.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for p in &placements {
            for q in &queues {
                for f in &factors {
                    for r in &rates {
                        let mut s = base.clone();
                        let mut name = Vec::new();
                        if let Some(p) = p {
                            s.policy.placement = (*p).clone();
                            s.policy.custom = None;
                            name.push(p.to_string());
                        }
                        if let Some(q) = q {
                            s.policy.queue = *q;
                            name.push(q.name().to_string());
                        }
                        if let Some(f) = f {
                            for pool in &mut s.cluster.pools {
                                pool.max_nodes =
                                    ((pool.max_nodes as f64 * f).round() as u32).max(1);
                                pool.min_nodes = ((pool.min_nodes as f64 * f).round() as u32)
                                    .min(pool.max_nodes);
                            }
                            name.push(format!("pools x{f}"));
                        }
                        if let Some(r) = r {
                            s.workload.rate_scale *= r;
                            name.push(format!("rate x{r}"));
                        }
                        let name = if name.is_empty() {
                            "base".to_string()
                        } else {
                            name.join(" / ")
                        };
                        s.name = format!("{} [{name}]", base.name);
                        let params = VariantParams {
                            placement: s.policy.placement.clone(),
                            queue: s.policy.queue.name().to_string(),
                            pool_size_factor: f.unwrap_or(1.0),
                            rate_scale: r.unwrap_or(1.0),
                        };
                        out.push((name, params, s));
                    }
                }
            }
        }
        out
    }
}

/// Where a variant sits in the grid.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantParams {
    pub placement: String,
    pub queue: String,
    pub pool_size_factor: f64,
    pub rate_scale: f64,
}

/// The columns of `sweep.csv` (one row per variant that ran).
pub const SWEEP_COLUMNS: &[(&str, ColumnKind)] = &[
    ("variant", ColumnKind::Utf8),
    ("dir", ColumnKind::Utf8),
    ("placement", ColumnKind::Utf8),
    ("queue", ColumnKind::Utf8),
    ("pool_size_factor", ColumnKind::Float64),
    ("rate_scale", ColumnKind::Float64),
    ("horizon_ms", ColumnKind::Int64),
    ("jobs_submitted", ColumnKind::Int64),
    ("jobs_completed", ColumnKind::Int64),
    ("tasks_started", ColumnKind::Int64),
    ("critical_wait_ms_p50", ColumnKind::Int64),
    ("critical_wait_ms_p99", ColumnKind::Int64),
    ("flex_wait_ms_p50", ColumnKind::Int64),
    ("flex_wait_ms_p99", ColumnKind::Int64),
    ("bounded_slowdown_mean", ColumnKind::Float64),
    ("cpu_alloc_mean", ColumnKind::Float64),
    ("gpu_alloc_mean", ColumnKind::Float64),
    ("pending_tasks_max", ColumnKind::Int64),
    ("pending_tasks_end", ColumnKind::Int64),
    ("nodes_max", ColumnKind::Int64),
    ("cost_usd", ColumnKind::Float64),
];

/// A variant's folder name: its name with every run of other characters than ASCII letters,
/// digits, `.` and `-` turned into one `_` (`fgd / pools x0.5` → `fgd_pools_x0.5`), prefixed
/// with its grid index so names never collide.
pub fn variant_dir(index: usize, name: &str) -> String {
    let mut out = format!("{index:03}-");
    let mut gap = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            if gap && !out.ends_with('-') {
                out.push('_');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out
}

/// A variant's name and how its run went.
pub type VariantResult = (String, Result<SimReport, SimError>);

/// Runs every variant in parallel, writing each one's outputs to `out_dir/<variant_dir>/`
/// (as [`crate::run_scenario_to`]), then `out_dir/sweep.csv` (columns [`SWEEP_COLUMNS`]) and,
/// with the feature `parquet`, `sweep.parquet`. Results in grid order.
pub fn sweep_to(
    base: &Scenario,
    spec: &SweepSpec,
    out_dir: &Path,
) -> Result<Vec<VariantResult>, SimError> {
    std::fs::create_dir_all(out_dir).map_err(|e| SimError::io(out_dir, e))?;
    let grid: Vec<_> = spec
        .grid(base)
        .into_iter()
        .enumerate()
        .map(|(i, (name, p, s))| (variant_dir(i, &name), name, p, s))
        .collect();
    let results: Vec<_> = grid
        .par_iter()
        .map(|(dir, _, _, s)| crate::run_scenario_to(s, &out_dir.join(dir), &mut |_| {}))
        .collect();
    let mut text = SWEEP_COLUMNS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for ((dir, name, p, _), r) in grid.iter().zip(&results) {
        let Ok(r) = r else { continue };
        let tier = |t: &str| r.tiers.get(t);
        let _ = writeln!(
            text,
            "{},{dir},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{},{},{},{:.6}",
            name.replace(',', ";"),
            p.placement,
            p.queue,
            p.pool_size_factor,
            p.rate_scale,
            r.horizon_ms,
            r.jobs_submitted,
            r.job_states.get("completed").copied().unwrap_or(0),
            r.tasks_started,
            opt(tier("critical").and_then(|f| f.wait_ms_p50)),
            opt(tier("critical").and_then(|f| f.wait_ms_p99)),
            opt(tier("flex").and_then(|f| f.wait_ms_p50)),
            opt(tier("flex").and_then(|f| f.wait_ms_p99)),
            r.bounded_slowdown_mean,
            r.cpu_alloc_mean,
            r.gpu_alloc_mean,
            r.pending_tasks_max,
            r.pending_tasks_end,
            r.nodes_max,
            r.cost_usd
        );
    }
    let p = out_dir.join("sweep.csv");
    std::fs::write(&p, &text).map_err(|e| SimError::io(&p, e))?;
    #[cfg(feature = "parquet")]
    crate::tables::write_parquet(
        &out_dir.join("sweep.parquet"),
        SWEEP_COLUMNS,
        &crate::tables::CsvTable::parse(&text),
    )?;
    Ok(grid
        .into_iter()
        .zip(results)
        .map(|((_, name, _, _), r)| (name, r))
        .collect())
}

/// Runs every variant of the grid in parallel; results in grid order.
pub fn sweep(base: &Scenario, spec: &SweepSpec) -> Vec<(String, Result<SimReport, SimError>)> {
    let variants = spec.variants(base);
    variants
        .into_par_iter()
        .map(|(name, s)| {
            let r = crate::run_scenario(&s, &mut |_| {});
            (name, r)
        })
        .collect()
}
