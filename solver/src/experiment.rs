//! The fragmentation experiment of Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing
//! Workloads with Fragmentation Gradient Descent" (USENIX ATC '23), Berth's quality yardstick.
//!
//! Protocol (as in the paper's artifact, `hkust-adsl/kubernetes-scheduler-simulator`):
//! - a fixed node list (the paper: openb's 1,213 GPU nodes, 6,212 GPUs), visited in an order
//!   shuffled per seed (the artifact renames nodes with a random prefix each run);
//! - the workload: every pod once in a seeded random order, then pods drawn with replacement
//!   (arriving in the order drawn) until the total GPU request reaches `tune_ratio` (1.3) times
//!   the GPU capacity (the last draw crosses it, so the last checkpoint is reached), as the
//!   artifact shuffles the trace's pods and appends its "tune up" draws after them;
//! - pods only arrive; a pod no node can take counts as failed and the run goes on;
//! - after every arrival, each time the arrived GPU request crosses another `sample_step_pct`
//!   (1 %) of the capacity, a [`CurvePoint`] records the GPU allocation ratio and the cluster's
//!   fragmentation against the workload's typical task types ([`crate::frag`]).
//!
//! [`run`] is pure and deterministic: same inputs and seed, same curve.

use crate::cluster::ClusterSpec;
use crate::frag::{FragModel, TaskTypes, TypeKey, TYPICAL_COVERAGE_DEFAULT};
use crate::ids::{JobId, NodeId, TaskId};
use crate::place::{PlaceError, Placer, Policy};
use crate::plan::TaskRequest;
use crate::resources::TaskShape;
use crate::view::ClusterView;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Knobs of the experiment; the defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Total GPU request of the arriving pods, as a multiple of the GPU capacity.
    pub tune_ratio: f64,
    /// Keep every pod once before drawing more (the artifact's "tune up"); `false` draws the
    /// whole workload with replacement.
    pub keep_originals: bool,
    /// Sample a point every this many percent of arrived GPU request.
    pub sample_step_pct: u32,
    /// Arrived percentages [`summarise`] reports.
    pub checkpoints_pct: Vec<u32>,
    /// Share of pods the typical task types cover.
    pub typical_coverage: f64,
    pub typical_key: TypeKey,
    /// Visit nodes in a seeded random order (ties then fall to a random node, as in the
    /// artifact); `false` keeps the spec's order.
    pub shuffle_nodes: bool,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            tune_ratio: 1.3,
            keep_originals: true,
            sample_step_pct: 1,
            checkpoints_pct: vec![80, 90, 100, 130],
            typical_coverage: TYPICAL_COVERAGE_DEFAULT,
            typical_key: TypeKey::CpuGpu,
            shuffle_nodes: true,
        }
    }
}

/// The cluster's state when the arrived GPU request crossed `arrived_pct` % of capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub arrived_pct: u32,
    pub arrived_pods: u32,
    pub arrived_gpu_milli: u64,
    pub allocated_gpu_milli: u64,
    /// Allocated milli-GPU / total milli-GPU.
    pub gpu_alloc_ratio: f64,
    /// Idle milli-GPU that is fragment (weighted over the typical types).
    pub frag_gpu_milli: f64,
    /// `frag_gpu_milli` / idle milli-GPU (0 when nothing is idle).
    pub frag_ratio: f64,
    pub failed_pods: u32,
    pub failed_gpu_milli: u64,
}

/// One run: one policy, one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub policy: String,
    pub seed: u64,
    pub total_gpu_milli: u64,
    pub pods: u32,
    pub points: Vec<CurvePoint>,
}

impl Curve {
    /// The point at `arrived_pct`, if the run got there.
    pub fn at(&self, arrived_pct: u32) -> Option<&CurvePoint> {
        self.points.iter().find(|p| p.arrived_pct == arrived_pct)
    }

    /// Final failed pods.
    pub fn failed_pods(&self) -> u32 {
        self.points.last().map_or(0, |p| p.failed_pods)
    }
}

/// The arriving workload for one seed: indexes into `pods`, in arrival order.
pub fn workload(
    pods: &[TaskShape],
    total_gpu_milli: u64,
    seed: u64,
    cfg: &ExperimentConfig,
) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let target = (cfg.tune_ratio * total_gpu_milli as f64).floor() as u64;
    let mut order: Vec<usize> = Vec::new();
    let mut sum = 0u64;
    if cfg.keep_originals {
        order.extend(0..pods.len());
        order.shuffle(&mut rng);
        sum = pods.iter().map(|p| p.gpu.total_milli() as u64).sum();
    }
    // The draws are independent and uniform, so they arrive in the order drawn.
    if !pods.is_empty() && pods.iter().any(|p| !p.gpu.is_none()) {
        while sum < target {
            let i = rng.random_range(0..pods.len());
            sum += pods[i].gpu.total_milli() as u64;
            order.push(i);
        }
    }
    order
}

/// Runs the experiment for one policy and seed. The typical task types are those of `pods`.
pub fn run(
    nodes: &ClusterSpec,
    pods: &[TaskShape],
    policy: &Policy,
    seed: u64,
    cfg: &ExperimentConfig,
) -> Result<Curve, PlaceError> {
    let types = TaskTypes::from_shapes(pods.iter(), cfg.typical_coverage, cfg.typical_key);
    // Node order: a seeded permutation (the artifact's random node-name prefixes).
    let spec = if cfg.shuffle_nodes {
        let mut list = nodes.nodes.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6465_7321);
        list.shuffle(&mut rng);
        ClusterSpec::from_nodes(list)
    } else {
        nodes.clone()
    };
    let mut view = ClusterView::new(&spec);
    let total = view.gpu_milli_total();
    let mut placer = Placer::new(policy.clone())?.with_typical_types(types.clone());
    let frag = FragModel::compile(&types, view.models());
    let mut node_frag: Vec<f64> = (0..view.len())
        .map(|n| {
            let node = NodeId(n as u32);
            let f = view.free(node);
            frag.node_frag(
                view.model_of(node),
                f.cpu_milli,
                f.mem_mib,
                view.gpu_free(node),
            )
        })
        .collect();
    let order = workload(pods, total, seed, cfg);
    let requests: Vec<TaskRequest> = order
        .iter()
        .enumerate()
        .map(|(i, &p)| TaskRequest::new(TaskId(i as u64), JobId(i as u64), pods[p].clone()))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x706c_6163_6521);
    let mut curve = Curve {
        policy: if policy.name.is_empty() {
            "custom".to_string()
        } else {
            policy.name.clone()
        },
        seed,
        total_gpu_milli: total,
        pods: requests.len() as u32,
        points: Vec::new(),
    };
    let step = cfg.sample_step_pct.max(1) as u64;
    let mut next_pct = step;
    let (mut arrived, mut failed, mut failed_gpu) = (0u64, 0u32, 0u64);
    for (i, req) in requests.iter().enumerate() {
        arrived += req.shape.gpu.total_milli() as u64;
        match placer.place_one(&view, req, &mut rng) {
            Ok(a) => {
                view.apply(&a);
                let node = a.node;
                let f = view.free(node);
                node_frag[node.0 as usize] = frag.node_frag(
                    view.model_of(node),
                    f.cpu_milli,
                    f.mem_mib,
                    view.gpu_free(node),
                );
            }
            Err(_) => {
                failed += 1;
                failed_gpu += req.shape.gpu.total_milli() as u64;
            }
        }
        // total * pct / 100 <= arrived, in integers.
        while total > 0 && total * next_pct <= arrived * 100 {
            let used = view.gpu_milli_used();
            let frag_sum: f64 = node_frag.iter().sum();
            let idle = total - used;
            curve.points.push(CurvePoint {
                arrived_pct: next_pct as u32,
                arrived_pods: i as u32 + 1,
                arrived_gpu_milli: arrived,
                allocated_gpu_milli: used,
                gpu_alloc_ratio: used as f64 / total as f64,
                frag_gpu_milli: frag_sum,
                frag_ratio: if idle == 0 {
                    0.0
                } else {
                    frag_sum / idle as f64
                },
                failed_pods: failed,
                failed_gpu_milli: failed_gpu,
            });
            next_pct += step;
        }
    }
    Ok(curve)
}

/// Mean and (sample) standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: u32,
}

impl MeanStd {
    pub fn of(xs: &[f64]) -> MeanStd {
        let n = xs.len();
        if n == 0 {
            return MeanStd {
                mean: f64::NAN,
                std: f64::NAN,
                n: 0,
            };
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        MeanStd {
            mean,
            std: var.sqrt(),
            n: n as u32,
        }
    }
}

/// One row of a [`Table`]: a policy at one checkpoint, over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    pub policy: String,
    pub arrived_pct: u32,
    /// GPU allocation ratio, percent.
    pub gpu_alloc_pct: MeanStd,
    /// Fragmentation ratio (fragment / idle), percent.
    pub frag_ratio_pct: MeanStd,
    /// Fragment, in GPUs.
    pub frag_gpus: MeanStd,
    pub failed_pods: MeanStd,
}

/// Mean ± std per policy and checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub rows: Vec<TableRow>,
}

/// Summarises curves (any mix of policies and seeds) at `checkpoints_pct`; policies keep their
/// first-appearance order.
pub fn summarise(curves: &[Curve], checkpoints_pct: &[u32]) -> Table {
    let mut policies: Vec<&str> = Vec::new();
    for c in curves {
        if !policies.contains(&c.policy.as_str()) {
            policies.push(&c.policy);
        }
    }
    let mut rows = Vec::new();
    for p in policies {
        for &pct in checkpoints_pct {
            let pts: Vec<&CurvePoint> = curves
                .iter()
                .filter(|c| c.policy == p)
                .filter_map(|c| c.at(pct))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&CurvePoint) -> f64| {
                MeanStd::of(&pts.iter().map(|x| f(x)).collect::<Vec<_>>())
            };
            rows.push(TableRow {
                policy: p.to_string(),
                arrived_pct: pct,
                gpu_alloc_pct: col(&|x| 100.0 * x.gpu_alloc_ratio),
                frag_ratio_pct: col(&|x| 100.0 * x.frag_ratio),
                frag_gpus: col(&|x| x.frag_gpu_milli / 1000.0),
                failed_pods: col(&|x| x.failed_pods as f64),
            });
        }
    }
    Table { rows }
}

impl Table {
    pub fn get(&self, policy: &str, arrived_pct: u32) -> Option<&TableRow> {
        self.rows
            .iter()
            .find(|r| r.policy == policy && r.arrived_pct == arrived_pct)
    }

    /// CSV with a header line.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "policy,arrived_pct,seeds,gpu_alloc_pct_mean,gpu_alloc_pct_std,frag_ratio_pct_mean,frag_ratio_pct_std,frag_gpus_mean,frag_gpus_std,failed_pods_mean,failed_pods_std\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{},{},{},{:.4},{:.4},{:.4},{:.4},{:.2},{:.2},{:.1},{:.1}\n",
                r.policy,
                r.arrived_pct,
                r.gpu_alloc_pct.n,
                r.gpu_alloc_pct.mean,
                r.gpu_alloc_pct.std,
                r.frag_ratio_pct.mean,
                r.frag_ratio_pct.std,
                r.frag_gpus.mean,
                r.frag_gpus.std,
                r.failed_pods.mean,
                r.failed_pods.std
            ));
        }
        s
    }
}

impl fmt::Display for Table {
    /// A policy x checkpoint grid of GPU allocation (mean ± std, percent).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pcts: Vec<u32> = self.rows.iter().map(|r| r.arrived_pct).collect();
        pcts.sort();
        pcts.dedup();
        let mut policies: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !policies.contains(&r.policy.as_str()) {
                policies.push(&r.policy);
            }
        }
        write!(f, "{:<16}", "GPU alloc %")?;
        for p in &pcts {
            write!(f, " {:>16}", format!("{p}% arrived"))?;
        }
        writeln!(f)?;
        for pol in policies {
            write!(f, "{pol:<16}")?;
            for &p in &pcts {
                match self.get(pol, p) {
                    Some(r) => write!(
                        f,
                        " {:>16}",
                        format!("{:.2} ± {:.2}", r.gpu_alloc_pct.mean, r.gpu_alloc_pct.std)
                    )?,
                    None => write!(f, " {:>16}", "-")?,
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeAttributes, NodeGpus, NodeSpec};
    use crate::resources::{GpuDemand, GpuModel, Resources};

    fn tiny() -> (ClusterSpec, Vec<TaskShape>) {
        let nodes = (0..4).map(|i| NodeSpec {
            id: NodeId(0),
            name: format!("n{i}"),
            capacity: Resources::new(32_000, 65_536, 0, 0),
            gpus: Some(NodeGpus {
                count: 2,
                model: GpuModel::new("T4"),
            }),
            attributes: NodeAttributes::default(),
        });
        let pods = vec![
            TaskShape::new(Resources::new(4000, 1024, 0, 0)).with_gpu(GpuDemand::Milli(500)),
            TaskShape::new(Resources::new(4000, 1024, 0, 0)).with_gpu(GpuDemand::Whole(1)),
            TaskShape::new(Resources::new(2000, 1024, 0, 0)),
        ];
        (ClusterSpec::from_nodes(nodes), pods)
    }

    #[test]
    fn workload_reaches_the_tune_ratio_and_stops_there() {
        let (spec, pods) = tiny();
        let cfg = ExperimentConfig::default();
        let total = spec.total_gpus() * 1000;
        let w = workload(&pods, total, 7, &cfg);
        let sum: u64 = w.iter().map(|&i| pods[i].gpu.total_milli() as u64).sum();
        let target = (1.3 * total as f64) as u64;
        assert!(sum >= target);
        let largest = pods
            .iter()
            .map(|p| p.gpu.total_milli() as u64)
            .max()
            .unwrap();
        assert!(
            sum < target + largest,
            "stops at the first pod that reaches the target"
        );
        let mut first: Vec<usize> = w[..pods.len()].to_vec();
        first.sort_unstable();
        assert_eq!(
            first,
            (0..pods.len()).collect::<Vec<_>>(),
            "every pod arrives once before the draws"
        );
        assert_eq!(w, workload(&pods, total, 7, &cfg));
        assert_ne!(w, workload(&pods, total, 8, &cfg));
    }

    #[test]
    fn curve_points_are_monotone_and_deterministic() {
        let (spec, pods) = tiny();
        let cfg = ExperimentConfig::default();
        let p = Policy::preset("fgd").unwrap();
        let a = run(&spec, &pods, &p, 3, &cfg).unwrap();
        assert_eq!(a, run(&spec, &pods, &p, 3, &cfg).unwrap());
        assert_eq!(a.points.first().unwrap().arrived_pct, 1);
        assert!(a.points.len() >= 129);
        for w in a.points.windows(2) {
            assert_eq!(w[1].arrived_pct, w[0].arrived_pct + 1);
            assert!(w[1].allocated_gpu_milli >= w[0].allocated_gpu_milli);
            assert!(w[1].failed_pods >= w[0].failed_pods);
        }
        let last = a.points.last().unwrap();
        assert!(last.gpu_alloc_ratio <= 1.0);
        // 130 % of capacity arrived: something must have failed.
        assert!(last.failed_pods > 0);
        let t = summarise(
            &[a.clone(), run(&spec, &pods, &p, 4, &cfg).unwrap()],
            &[100],
        );
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].gpu_alloc_pct.n, 2);
    }
}
