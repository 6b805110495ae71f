//! A summary of a workload: what `berth trace stats` prints (as text through `Display`, or as
//! JSON through `Serialize`).

use crate::workload::{TraceOutcome, WorkKind, Workload};
use berth_solver::{ClusterSpec, GpuDemand, Resources, Tier};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Upper bounds (inclusive) of the fractional-GPU histogram buckets, milli-GPU.
pub const GPU_MILLI_BUCKET_BOUNDS: [u32; 4] = [250, 500, 750, 999];

/// The summary of one workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TraceStats {
    pub source: String,
    pub jobs: u64,
    pub task_groups: u64,
    pub instances: u64,
    /// Earliest and latest group arrival, ms from the trace start.
    pub submit_first_ms: Option<i64>,
    pub submit_last_ms: Option<i64>,
    pub span_ms: u64,
    pub epoch_unix_s: Option<i64>,
    /// Sum over all instances of their scalar requests.
    pub requested: Resources,
    /// Sum over all instances of their milli-GPU.
    pub gpu_milli_requested: u64,
    /// Instances whose duration is known, and the resource-time they account for.
    pub instances_with_duration: u64,
    pub cpu_core_hours: f64,
    pub gpu_hours: f64,
    pub service_jobs: u64,
    pub batch_jobs: u64,
    pub critical_jobs: u64,
    pub flex_jobs: u64,
    pub gang_jobs: u64,
    /// Task groups with no request at all (Alibaba 2017 rows with empty cells).
    pub unknown_request_groups: u64,
    /// Task groups by outcome (snake_case names).
    pub outcomes: BTreeMap<String, u64>,
    pub gpu: GpuMix,
    pub skipped_lines: u64,
    pub cluster: Option<ClusterStats>,
}

/// What GPUs the instances ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuMix {
    /// Instances asking for any GPU.
    pub gpu_instances: u64,
    /// Instances asking for whole GPUs, by count (1, 2, 4, 8, ...).
    pub whole: BTreeMap<u8, u64>,
    /// Instances asking for a share of one GPU.
    pub fractional_instances: u64,
    /// Fractional instances by share: `1-250`, `251-500`, `501-750`, `751-999` milli-GPU.
    pub milli_buckets: BTreeMap<String, u64>,
    /// GPU instances restricted to some models.
    pub model_constrained_instances: u64,
    /// Instances by accepted model set (models joined with `|`).
    pub model_sets: BTreeMap<String, u64>,
}

/// The node list's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterStats {
    pub nodes: u64,
    pub cpu_only_nodes: u64,
    pub gpu_nodes: u64,
    pub gpus: u64,
    /// GPU devices by model.
    pub gpus_by_model: BTreeMap<String, u64>,
    /// GPU nodes by model.
    pub gpu_nodes_by_model: BTreeMap<String, u64>,
    pub capacity: Resources,
}

/// The snake_case name of an outcome.
pub fn outcome_name(o: TraceOutcome) -> &'static str {
    match o {
        TraceOutcome::Completed => "completed",
        TraceOutcome::Failed => "failed",
        TraceOutcome::Killed => "killed",
        TraceOutcome::Unfinished => "unfinished",
        TraceOutcome::NeverScheduled => "never_scheduled",
        TraceOutcome::Unknown => "unknown",
    }
}

fn milli_bucket(m: u32) -> String {
    let mut low = 1;
    for high in GPU_MILLI_BUCKET_BOUNDS {
        if m <= high {
            return format!("{low}-{high}");
        }
        low = high + 1;
    }
    format!("{low}-")
}

impl ClusterStats {
    pub fn of(c: &ClusterSpec) -> ClusterStats {
        let mut s = ClusterStats {
            nodes: c.len() as u64,
            capacity: c.total_capacity(),
            ..ClusterStats::default()
        };
        for n in &c.nodes {
            match &n.gpus {
                Some(g) if g.count > 0 => {
                    s.gpu_nodes += 1;
                    s.gpus += g.count as u64;
                    *s.gpus_by_model.entry(g.model.to_string()).or_default() += g.count as u64;
                    *s.gpu_nodes_by_model.entry(g.model.to_string()).or_default() += 1;
                }
                _ => s.cpu_only_nodes += 1,
            }
        }
        s
    }
}

impl TraceStats {
    /// Computes the summary of `w`.
    pub fn of(w: &Workload) -> TraceStats {
        let mut s = TraceStats {
            source: w.source.clone(),
            jobs: w.jobs.len() as u64,
            epoch_unix_s: w.epoch_unix_s,
            skipped_lines: w.skipped_lines,
            cluster: w.cluster.as_ref().map(ClusterStats::of),
            ..TraceStats::default()
        };
        for j in &w.jobs {
            match j.kind {
                WorkKind::Service => s.service_jobs += 1,
                WorkKind::Batch => s.batch_jobs += 1,
            }
            match j.tier {
                Tier::Critical => s.critical_jobs += 1,
                Tier::Flex => s.flex_jobs += 1,
            }
            s.gang_jobs += j.gang as u64;
            for g in &j.groups {
                let n = g.instances as u64;
                s.task_groups += 1;
                s.instances += n;
                s.submit_first_ms = Some(
                    s.submit_first_ms
                        .map_or(g.submit_ms, |f| f.min(g.submit_ms)),
                );
                s.submit_last_ms =
                    Some(s.submit_last_ms.map_or(g.submit_ms, |l| l.max(g.submit_ms)));
                let r = &g.shape.resources;
                s.requested = s.requested.saturating_add(&r.saturating_mul(n));
                let gpu_milli = g.shape.gpu.total_milli() as u64;
                s.gpu_milli_requested = s
                    .gpu_milli_requested
                    .saturating_add(gpu_milli.saturating_mul(n));
                if r.is_zero() && g.shape.gpu.is_none() {
                    s.unknown_request_groups += 1;
                }
                *s.outcomes
                    .entry(outcome_name(g.outcome).to_string())
                    .or_default() += 1;
                if let Some(d) = g.duration_ms {
                    s.instances_with_duration += n;
                    let hours = d as f64 / MS_PER_HOUR * n as f64;
                    s.cpu_core_hours += r.cpu_milli as f64 / 1000.0 * hours;
                    s.gpu_hours += gpu_milli as f64 / 1000.0 * hours;
                }
                let mix = &mut s.gpu;
                match g.shape.gpu {
                    GpuDemand::None => continue,
                    GpuDemand::Whole(k) => *mix.whole.entry(k).or_default() += n,
                    GpuDemand::Milli(m) => {
                        mix.fractional_instances += n;
                        *mix.milli_buckets.entry(milli_bucket(m as u32)).or_default() += n;
                    }
                }
                mix.gpu_instances += n;
                if !g.shape.gpu_models.is_empty() {
                    mix.model_constrained_instances += n;
                    let set: Vec<&str> = g.shape.gpu_models.iter().map(|m| m.as_str()).collect();
                    *mix.model_sets.entry(set.join("|")).or_default() += n;
                }
            }
        }
        if let (Some(f), Some(l)) = (s.submit_first_ms, s.submit_last_ms) {
            s.span_ms = l.abs_diff(f);
        }
        s
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 2.0 * 86_400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// How many model sets the text table lists (most frequent first).
const MODEL_SETS_SHOWN: usize = 8;

impl fmt::Display for TraceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, label: &str, value: String| {
            writeln!(f, "{label:<26} {value}")
        };
        row(f, "source", self.source.clone())?;
        row(f, "jobs", thousands(self.jobs))?;
        row(
            f,
            "  service / batch",
            format!(
                "{} / {}",
                thousands(self.service_jobs),
                thousands(self.batch_jobs)
            ),
        )?;
        row(
            f,
            "  critical / flex",
            format!(
                "{} / {}",
                thousands(self.critical_jobs),
                thousands(self.flex_jobs)
            ),
        )?;
        row(f, "  gang", thousands(self.gang_jobs))?;
        row(f, "task groups", thousands(self.task_groups))?;
        row(f, "instances", thousands(self.instances))?;
        match (self.submit_first_ms, self.submit_last_ms) {
            (Some(a), Some(b)) => row(
                f,
                "submit first / last",
                format!(
                    "{:.0} s / {:.0} s (span {})",
                    a as f64 / 1000.0,
                    b as f64 / 1000.0,
                    duration_text(self.span_ms)
                ),
            )?,
            _ => row(f, "submit first / last", "-".into())?,
        }
        if let Some(e) = self.epoch_unix_s {
            row(f, "trace start (unix s)", e.to_string())?;
        }
        let r = &self.requested;
        row(
            f,
            "requested (all instances)",
            format!(
                "{} cores, {} GiB, {:.1} GPUs",
                thousands(r.cpu_milli / 1000),
                thousands(r.mem_mib / 1024),
                self.gpu_milli_requested as f64 / 1000.0
            ),
        )?;
        row(
            f,
            "known durations",
            format!(
                "{} instances ({})",
                thousands(self.instances_with_duration),
                pct(self.instances_with_duration, self.instances)
            ),
        )?;
        row(f, "  cpu core-hours", format!("{:.1}", self.cpu_core_hours))?;
        row(f, "  gpu-hours", format!("{:.1}", self.gpu_hours))?;
        if self.unknown_request_groups > 0 {
            row(
                f,
                "groups without request",
                thousands(self.unknown_request_groups),
            )?;
        }
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(*v)))
            .collect();
        row(f, "outcomes (task groups)", outcomes.join(", "))?;
        let g = &self.gpu;
        row(
            f,
            "gpu instances",
            format!(
                "{} ({})",
                thousands(g.gpu_instances),
                pct(g.gpu_instances, self.instances)
            ),
        )?;
        if g.gpu_instances > 0 {
            let whole: Vec<String> = g
                .whole
                .iter()
                .map(|(k, v)| format!("{k}: {}", thousands(*v)))
                .collect();
            row(f, "  whole GPUs", whole.join(", "))?;
            let buckets: Vec<String> = g
                .milli_buckets
                .iter()
                .map(|(k, v)| format!("{k}: {}", thousands(*v)))
                .collect();
            row(
                f,
                "  fractional",
                format!(
                    "{} ({})",
                    thousands(g.fractional_instances),
                    buckets.join(", ")
                ),
            )?;
            row(
                f,
                "  model-constrained",
                format!(
                    "{} ({} of GPU)",
                    thousands(g.model_constrained_instances),
                    pct(g.model_constrained_instances, g.gpu_instances)
                ),
            )?;
            let mut sets: Vec<(&String, &u64)> = g.model_sets.iter().collect();
            sets.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (set, n) in sets.iter().take(MODEL_SETS_SHOWN) {
                row(f, &format!("    {set}"), thousands(**n))?;
            }
            if sets.len() > MODEL_SETS_SHOWN {
                row(
                    f,
                    "    ...",
                    format!("{} more sets", sets.len() - MODEL_SETS_SHOWN),
                )?;
            }
        }
        row(f, "skipped lines", thousands(self.skipped_lines))?;
        if let Some(c) = &self.cluster {
            row(
                f,
                "nodes",
                format!(
                    "{} ({} GPU, {} CPU-only)",
                    thousands(c.nodes),
                    thousands(c.gpu_nodes),
                    thousands(c.cpu_only_nodes)
                ),
            )?;
            row(
                f,
                "  capacity",
                format!(
                    "{} cores, {} GiB",
                    thousands(c.capacity.cpu_milli / 1000),
                    thousands(c.capacity.mem_mib / 1024)
                ),
            )?;
            let by_model: Vec<String> = c
                .gpus_by_model
                .iter()
                .map(|(m, n)| {
                    format!(
                        "{m} {} on {}",
                        thousands(*n),
                        thousands(c.gpu_nodes_by_model[m])
                    )
                })
                .collect();
            row(
                f,
                "  gpus",
                format!("{} ({})", thousands(c.gpus), by_model.join(", ")),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{TaskGroup, TraceJob};
    use berth_solver::{GpuModel, JobId, NodeAttributes, NodeGpus, NodeId, NodeSpec, TaskShape};

    fn group(
        submit_ms: i64,
        instances: u32,
        shape: TaskShape,
        duration_ms: Option<u64>,
        outcome: TraceOutcome,
    ) -> TaskGroup {
        TaskGroup {
            submit_ms,
            instances,
            shape,
            duration_ms,
            requested_runtime_ms: None,
            outcome,
        }
    }

    #[test]
    fn sums_histograms_and_cluster() {
        let cpu = TaskShape::new(Resources::new(2000, 1024, 0, 0));
        let frac = TaskShape::new(Resources::new(1000, 0, 0, 0)).with_gpu(GpuDemand::Milli(300));
        let whole = TaskShape::new(Resources::new(1000, 0, 0, 0))
            .with_gpu(GpuDemand::Whole(2))
            .with_gpu_models(vec![GpuModel::new("T4"), GpuModel::new("A10")]);
        let jobs = vec![
            TraceJob {
                id: JobId(1),
                name: "a".into(),
                kind: WorkKind::Batch,
                tier: Tier::Flex,
                class: String::new(),
                gang: true,
                groups: vec![
                    group(-5000, 10, cpu, Some(3_600_000), TraceOutcome::Completed),
                    group(
                        1000,
                        3,
                        TaskShape::default(),
                        None,
                        TraceOutcome::NeverScheduled,
                    ),
                ],
            },
            TraceJob {
                id: JobId(2),
                name: "b".into(),
                kind: WorkKind::Service,
                tier: Tier::Critical,
                class: String::new(),
                gang: false,
                groups: vec![
                    group(7000, 2, frac, Some(1_800_000), TraceOutcome::Unfinished),
                    group(9000, 1, whole, Some(3_600_000), TraceOutcome::Completed),
                ],
            },
        ];
        let node = |gpus: Option<NodeGpus>| NodeSpec {
            id: NodeId(0),
            name: "n".into(),
            capacity: Resources::new(8000, 4096, 0, 0),
            gpus,
            attributes: NodeAttributes::default(),
        };
        let cluster = ClusterSpec::from_nodes([
            node(None),
            node(Some(NodeGpus {
                count: 4,
                model: GpuModel::new("T4"),
            })),
            node(Some(NodeGpus {
                count: 4,
                model: GpuModel::new("T4"),
            })),
        ]);
        let w = Workload {
            source: "t".into(),
            jobs,
            cluster: Some(cluster),
            skipped_lines: 2,
            ..Workload::default()
        };
        let s = TraceStats::of(&w);
        assert_eq!((s.jobs, s.task_groups, s.instances), (2, 4, 16));
        assert_eq!(
            (s.submit_first_ms, s.submit_last_ms, s.span_ms),
            (Some(-5000), Some(9000), 14_000)
        );
        assert_eq!(
            (
                s.service_jobs,
                s.batch_jobs,
                s.critical_jobs,
                s.flex_jobs,
                s.gang_jobs
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(
            s.requested,
            Resources::new(20_000 + 2000 + 1000, 10_240, 0, 0)
        );
        assert_eq!(s.gpu_milli_requested, 600 + 2000);
        assert_eq!(s.instances_with_duration, 13);
        // 10 × 2 cores × 1 h + 2 × 1 core × 0.5 h + 1 × 1 core × 1 h.
        assert!((s.cpu_core_hours - 22.0).abs() < 1e-9);
        // 2 × 0.3 GPU × 0.5 h + 2 GPUs × 1 h.
        assert!((s.gpu_hours - 2.3).abs() < 1e-9);
        assert_eq!(s.unknown_request_groups, 1);
        assert_eq!(s.outcomes.get("completed"), Some(&2));
        assert_eq!(s.outcomes.get("never_scheduled"), Some(&1));
        assert_eq!(s.gpu.gpu_instances, 3);
        assert_eq!(s.gpu.whole.get(&2), Some(&1));
        assert_eq!(s.gpu.fractional_instances, 2);
        assert_eq!(s.gpu.milli_buckets.get("251-500"), Some(&2));
        assert_eq!(s.gpu.model_sets.get("T4|A10"), Some(&1));
        let c = s.cluster.as_ref().unwrap();
        assert_eq!(
            (c.nodes, c.gpu_nodes, c.cpu_only_nodes, c.gpus),
            (3, 2, 1, 8)
        );
        assert_eq!(c.gpus_by_model.get("T4"), Some(&8));
        let text = s.to_string();
        assert!(text.contains("instances                  16\n"), "{text}");
        assert!(
            text.contains("  gpus                     8 (T4 8 on 2)"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["gpu"]["whole"]["2"], 1);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(11_909_321), "11,909,321");
    }

    #[test]
    fn milli_buckets_cover_1_to_999() {
        assert_eq!(milli_bucket(1), "1-250");
        assert_eq!(milli_bucket(250), "1-250");
        assert_eq!(milli_bucket(251), "251-500");
        assert_eq!(milli_bucket(999), "751-999");
    }
}
