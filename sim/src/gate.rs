//! The users' regression gate: compare a run's SLA figures with a committed baseline.
//!
//! `berth sim gate scenario.toml --baseline baseline.json` runs the scenario, takes the figures
//! named here from its [`SimReport`], and fails when one got worse than the baseline by more
//! than the tolerance. A simulation is deterministic for a seed, so on an unchanged scenario and
//! Berth version the figures are equal, and any change is a change of the model, the policy or
//! Berth itself.
//!
//! A figure is worse when it moves in its bad direction by more than
//! `max(tolerance × |baseline|, floor)`; the floor (one second of wait, one task, one cent, a
//! tenth of a percentage point of allocation) keeps a figure near zero from failing on noise
//! that is no regression at all.

use crate::report::SimReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Which way is better for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

/// One figure a gate can check.
#[derive(Clone, Debug, PartialEq)]
pub struct FigureDef {
    pub name: String,
    pub better: Better,
    /// Differences up to this much (in the figure's unit) never fail.
    pub floor: f64,
}

/// The figures of a report a gate can check, by name, in a stable order: per-tier
/// `wait_ms_p99.<tier>` and `wait_ms_p50.<tier>`, `pending_tasks_max`, `cost_usd`,
/// `cost_usd_per_day`, `gpu_alloc_mean`, `cpu_alloc_mean`, `bounded_slowdown_mean`,
/// `jobs_failed`, `tasks_started`.
pub fn figures_of(r: &SimReport) -> BTreeMap<String, (f64, FigureDef)> {
    let mut out = BTreeMap::new();
    let mut add = |name: String, v: f64, better: Better, floor: f64| {
        out.insert(
            name.clone(),
            (
                v,
                FigureDef {
                    name,
                    better,
                    floor,
                },
            ),
        );
    };
    for (tier, f) in &r.tiers {
        if let Some(v) = f.wait_ms_p99 {
            add(
                format!("wait_ms_p99.{tier}"),
                v as f64,
                Better::Lower,
                1000.0,
            );
        }
        if let Some(v) = f.wait_ms_p50 {
            add(
                format!("wait_ms_p50.{tier}"),
                v as f64,
                Better::Lower,
                1000.0,
            );
        }
    }
    add(
        "pending_tasks_max".into(),
        r.pending_tasks_max as f64,
        Better::Lower,
        1.0,
    );
    add("cost_usd".into(), r.cost_usd, Better::Lower, 0.01);
    let days = r.horizon_ms as f64 / 86_400_000.0;
    if days > 0.0 {
        add(
            "cost_usd_per_day".into(),
            r.cost_usd / days,
            Better::Lower,
            0.01,
        );
    }
    add(
        "gpu_alloc_mean".into(),
        r.gpu_alloc_mean,
        Better::Higher,
        0.001,
    );
    add(
        "cpu_alloc_mean".into(),
        r.cpu_alloc_mean,
        Better::Higher,
        0.001,
    );
    add(
        "bounded_slowdown_mean".into(),
        r.bounded_slowdown_mean,
        Better::Lower,
        0.001,
    );
    add(
        "jobs_failed".into(),
        r.job_states.get("failed").copied().unwrap_or(0) as f64,
        Better::Lower,
        0.0,
    );
    add(
        "tasks_started".into(),
        r.tasks_started as f64,
        Better::Higher,
        0.0,
    );
    out
}

/// What a baseline file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub scenario: String,
    pub seed: u64,
    /// The event-log hash of the baseline run: equal hashes mean an identical run.
    pub event_log_hash: String,
    pub figures: BTreeMap<String, f64>,
}

impl Baseline {
    /// The baseline a run makes: every figure, or only `chosen` when given.
    pub fn of(r: &SimReport, chosen: &[String]) -> Result<Baseline, GateError> {
        let all = figures_of(r);
        let mut figures = BTreeMap::new();
        if chosen.is_empty() {
            for (k, (v, _)) in all {
                figures.insert(k, v);
            }
        } else {
            for name in chosen {
                let (v, _) = all.get(name).ok_or_else(|| unknown(name, &all))?;
                figures.insert(name.clone(), *v);
            }
        }
        Ok(Baseline {
            scenario: r.scenario.clone(),
            seed: r.seed,
            event_log_hash: r.event_log_hash.clone(),
            figures,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a baseline serialises") + "\n"
    }

    /// Parses a baseline file's text; errors name the field path.
    pub fn from_json(text: &str) -> Result<Baseline, GateError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| GateError::Baseline {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GateError {
    #[error("unknown figure `{name}`; the run has: {known}")]
    UnknownFigure { name: String, known: String },
    #[error("baseline: at `{path}`: {message}")]
    Baseline { path: String, message: String },
    #[error("tolerance must be a finite number >= 0, got {0}")]
    Tolerance(f64),
}

fn unknown(name: &str, all: &BTreeMap<String, (f64, FigureDef)>) -> GateError {
    GateError::UnknownFigure {
        name: name.to_string(),
        known: all.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// Verdict on one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Same,
    Better,
    /// Worse, within the tolerance.
    Within,
    Worse,
    /// The baseline has it, the run does not (e.g. a tier without started tasks).
    Missing,
}

/// One row of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateRow {
    pub figure: String,
    pub baseline: f64,
    pub current: Option<f64>,
    pub delta: Option<f64>,
    /// Relative change, when the baseline is not zero.
    pub delta_rel: Option<f64>,
    pub allowed: f64,
    pub verdict: Verdict,
}

/// The gate's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateReport {
    pub scenario: String,
    pub tolerance: f64,
    /// The run is the baseline's run exactly (same event-log hash).
    pub identical_run: bool,
    pub rows: Vec<GateRow>,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.rows
            .iter()
            .all(|r| !matches!(r.verdict, Verdict::Worse | Verdict::Missing))
    }

    /// A markdown table: figure, baseline, current, delta, verdict.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Gate for `{}` (tolerance {:.1} %){}\n",
            self.scenario,
            self.tolerance * 100.0,
            if self.identical_run {
                ": identical run (same event-log hash)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "| figure | baseline | current | delta | allowed | verdict |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let cur = r.current.map_or("-".to_string(), num);
            let delta = match (r.delta, r.delta_rel) {
                (Some(d), Some(p)) => format!("{} ({:+.1} %)", signed(d), p * 100.0),
                (Some(d), None) => signed(d),
                _ => "-".to_string(),
            };
            let verdict = match r.verdict {
                Verdict::Same => "same",
                Verdict::Better => "better",
                Verdict::Within => "worse, within tolerance",
                Verdict::Worse => "**WORSE**",
                Verdict::Missing => "**MISSING**",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.figure,
                num(r.baseline),
                cur,
                delta,
                num(r.allowed),
                verdict
            );
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.passed() {
                "PASS: no figure got worse than the tolerance allows."
            } else {
                "FAIL: at least one figure got worse than the tolerance allows."
            }
        );
        out
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", num(v))
    } else {
        num(v)
    }
}

/// Compares a run with a baseline: every figure of the baseline is checked.
pub fn compare(base: &Baseline, run: &SimReport, tolerance: f64) -> Result<GateReport, GateError> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(GateError::Tolerance(tolerance));
    }
    let now = figures_of(run);
    let mut rows = Vec::new();
    for (name, &b) in &base.figures {
        let def = match now.get(name) {
            Some((_, d)) => d.clone(),
            None => match known_def(name) {
                Some(d) => d,
                None => return Err(unknown(name, &now)),
            },
        };
        let allowed = (tolerance * b.abs()).max(def.floor);
        let Some(&(c, _)) = now.get(name) else {
            rows.push(GateRow {
                figure: name.clone(),
                baseline: b,
                current: None,
                delta: None,
                delta_rel: None,
                allowed,
                verdict: Verdict::Missing,
            });
            continue;
        };
        let delta = c - b;
        // Positive `worse_by` is a move in the bad direction.
        let worse_by = match def.better {
            Better::Lower => delta,
            Better::Higher => -delta,
        };
        // JSON keeps a float to its last bit or one unit off: that is no change.
        let verdict = if delta.abs() <= 1e-12 * b.abs().max(1.0) {
            Verdict::Same
        } else if worse_by < 0.0 {
            Verdict::Better
        } else if worse_by <= allowed {
            Verdict::Within
        } else {
            Verdict::Worse
        };
        rows.push(GateRow {
            figure: name.clone(),
            baseline: b,
            current: Some(c),
            delta: Some(delta),
            delta_rel: (b != 0.0).then(|| delta / b.abs()),
            allowed,
            verdict,
        });
    }
    Ok(GateReport {
        scenario: run.scenario.clone(),
        tolerance,
        identical_run: run.event_log_hash == base.event_log_hash,
        rows,
    })
}

/// The definition of a figure a run may lack (a per-tier wait when the tier started nothing).
fn known_def(name: &str) -> Option<FigureDef> {
    let per_tier = name.starts_with("wait_ms_p99.") || name.starts_with("wait_ms_p50.");
    per_tier.then(|| FigureDef {
        name: name.to_string(),
        better: Better::Lower,
        floor: 1000.0,
    })
}
