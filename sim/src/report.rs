//! The summary of a run ([`SimReport`]): a terminal table, JSON, and the CSV files.

use crate::metrics::{FaultCounts, Metrics};
use crate::SimError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// SLA figures of one tier (first attempts only; wait = start - submission).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierFigures {
    pub tasks_started: u64,
    pub wait_ms_p50: Option<u64>,
    pub wait_ms_p99: Option<u64>,
    pub wait_ms_max: Option<u64>,
}

/// What a run gives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    pub scenario: String,
    pub workload: String,
    pub seed: u64,
    pub horizon_ms: u64,
    /// Events delivered to the controller.
    pub events: u64,
    /// FNV-1a over every (time, event kind, ids) delivered: equal runs have equal hashes.
    pub event_log_hash: String,
    pub jobs_submitted: u64,
    /// Jobs by final state (`completed`, `failed`, `killed`, `rejected`; `accepted` counts
    /// admissions).
    pub job_states: BTreeMap<String, u64>,
    pub last_job_end_ms: u64,
    pub tasks_started: u64,
    /// Finished tasks by reason.
    pub task_reasons: BTreeMap<String, u64>,
    pub retries: u64,
    pub tiers: BTreeMap<String, TierFigures>,
    /// Per task that finished normally (wait from its job's submission).
    pub slowdown_mean: f64,
    pub bounded_slowdown_mean: f64,
    /// Per completed job: response from submission to its last task's end, run from its first
    /// task's start (for rigid SWF jobs, the literature's figures).
    pub job_slowdown_mean: f64,
    pub job_bounded_slowdown_mean: f64,
    /// Time-averaged allocation (share of capacity held by placed tasks).
    pub cpu_alloc_mean: f64,
    pub mem_alloc_mean: f64,
    pub gpu_alloc_mean: f64,
    /// Time-averaged share of CPU held by running containers.
    pub cpu_used_mean: f64,
    pub pending_tasks_max: u64,
    pub pending_tasks_end: u64,
    pub nodes_max: u64,
    pub nodes_end: u64,
    pub instances_requested: u64,
    pub cost_usd: f64,
    pub faults: FaultCounts,
    pub unplaced_reports: u64,
}

fn opt_s(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
}

impl SimReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// Two columns, one figure per line.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.clone()),
            ("workload".into(), self.workload.clone()),
            ("seed".into(), self.seed.to_string()),
            (
                "horizon".into(),
                format!("{:.2} h", self.horizon_ms as f64 / 3.6e6),
            ),
            ("events".into(), self.events.to_string()),
            ("event log hash".into(), self.event_log_hash.clone()),
            ("jobs submitted".into(), self.jobs_submitted.to_string()),
        ];
        for (k, v) in &self.job_states {
            rows.push((format!("jobs {k}"), v.to_string()));
        }
        rows.push(("tasks started".into(), self.tasks_started.to_string()));
        for (k, v) in &self.task_reasons {
            rows.push((format!("tasks finished {k}"), v.to_string()));
        }
        rows.push(("retries".into(), self.retries.to_string()));
        for (t, f) in &self.tiers {
            rows.push((
                format!("{t} wait p50 / p99 / max"),
                format!(
                    "{} / {} / {}",
                    opt_s(f.wait_ms_p50),
                    opt_s(f.wait_ms_p99),
                    opt_s(f.wait_ms_max)
                ),
            ));
        }
        rows.push(("slowdown mean".into(), format!("{:.3}", self.slowdown_mean)));
        rows.push((
            "bounded slowdown mean (10 s)".into(),
            format!("{:.3}", self.bounded_slowdown_mean),
        ));
        rows.push((
            "per job: slowdown / bounded (10 s)".into(),
            format!(
                "{:.3} / {:.3}",
                self.job_slowdown_mean, self.job_bounded_slowdown_mean
            ),
        ));
        rows.push((
            "cpu / mem / gpu allocation".into(),
            format!(
                "{:.1} % / {:.1} % / {:.1} %",
                100.0 * self.cpu_alloc_mean,
                100.0 * self.mem_alloc_mean,
                100.0 * self.gpu_alloc_mean
            ),
        ));
        rows.push((
            "cpu utilisation".into(),
            format!("{:.1} %", 100.0 * self.cpu_used_mean),
        ));
        rows.push((
            "pending tasks max / end".into(),
            format!("{} / {}", self.pending_tasks_max, self.pending_tasks_end),
        ));
        rows.push((
            "nodes max / end".into(),
            format!("{} / {}", self.nodes_max, self.nodes_end),
        ));
        rows.push((
            "instances requested".into(),
            self.instances_requested.to_string(),
        ));
        rows.push(("cost".into(), format!("$ {:.2}", self.cost_usd)));
        let f = &self.faults;
        rows.push((
            "faults: nodes lost / spot / ICE".into(),
            format!(
                "{} / {} / {}",
                f.nodes_lost, f.spot_interruptions, f.insufficient_capacity
            ),
        ));
        rows.push((
            "faults: launch fail / instance fail / crash".into(),
            format!(
                "{} / {} / {}",
                f.container_launch_failures, f.instance_launch_failures, f.container_crashes
            ),
        ));
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<w$}  {v}");
        }
        out
    }
}

/// A comparison table of several runs (one row each).
pub fn comparison_table(rows: &[(String, SimReport)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>10} {:>10}",
        "run",
        "completed",
        "pending",
        "wait p50",
        "wait p99",
        "bsld",
        "cpu %",
        "nodes max",
        "cost $"
    );
    for (name, r) in rows {
        let flex = r.tiers.get("flex");
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:>10} {:>12} {:>12} {:>8.2} {:>8.1} {:>10} {:>10.2}",
            name,
            r.job_states.get("completed").copied().unwrap_or(0),
            r.pending_tasks_end,
            opt_s(flex.and_then(|f| f.wait_ms_p50)),
            opt_s(flex.and_then(|f| f.wait_ms_p99)),
            r.bounded_slowdown_mean,
            100.0 * r.cpu_alloc_mean,
            r.nodes_max,
            r.cost_usd
        );
    }
    out
}

/// Writes `series.csv`, `nodes.csv`, `pools.csv` and `report.json` into `dir` (`tasks.csv` is
/// streamed during the run).
pub(crate) fn write_outputs(dir: &Path, report: &SimReport, m: &Metrics) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
    let p = dir.join("series.csv");
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(&p).map_err(|e| SimError::io(&p, e))?);
    let mut text = String::from("t_ms,nodes,cpu_capacity_milli,cpu_alloc_milli,cpu_used_milli,mem_capacity_mib,mem_alloc_mib,mem_used_mib,gpu_capacity_milli,gpu_alloc_milli,gpu_used_milli,gpu_idle_on_partial_nodes_milli,pending_tasks,running_tasks,cost_usd\n");
    for s in &m.series {
        let _ = writeln!(text, "{},{},{:.6}", s.t_ms, s.figures.csv(), s.cost_usd);
    }
    w.write_all(text.as_bytes())
        .map_err(|e| SimError::io(&p, e))?;
    let p = dir.join("nodes.csv");
    let mut text = String::from("t_ms,pool,instance_type,zone,nodes\n");
    for (t, pool, it, zone, c) in &m.nodes_series {
        let _ = writeln!(text, "{t},{pool},{it},{zone},{c}");
    }
    std::fs::write(&p, text).map_err(|e| SimError::io(&p, e))?;
    // One row per (sample, pool), every pool in every sample (zeros where it had nothing).
    let p = dir.join("pools.csv");
    let mut text = crate::tables::header_line(crate::tables::POOLS_COLUMNS);
    let none = crate::metrics::PoolFigures::default();
    for (t, figures) in &m.pools_series {
        for (i, pool) in m.pool_names.iter().enumerate() {
            let f = figures.get(i).unwrap_or(&none);
            let _ = writeln!(text, "{t},{pool},{}", f.csv());
        }
    }
    std::fs::write(&p, text).map_err(|e| SimError::io(&p, e))?;
    let p = dir.join("report.json");
    std::fs::write(&p, report.to_json()).map_err(|e| SimError::io(&p, e))?;
    Ok(())
}
