//! MILP placement: time to a proven gap of at most 1 % on a small (20 tasks, 8 nodes) and a
//! medium (150 tasks, 50 nodes) batch, with the gap reached, the bound and the heuristic's
//! objective printed once per instance (the time limit caps a run that does not get there).
//!
//! Run: `cargo bench -p berth-benches --bench milp --features milp`.

use berth_solver::milp::{place_milp, MilpConfig, MilpResult};
use berth_solver::{
    ClusterSpec, ClusterView, Constraint, Constraints, GpuDemand, GpuModel, JobId, NodeAttributes,
    NodeGpus, NodeId, NodeSpec, Policy, Resources, TaskId, TaskRequest, TaskShape,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;

/// A small deterministic generator (splitmix64), so the instances are the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `nodes` nodes over 3 zones: a quarter CPU-only (32 cores), the rest 8-GPU or 4-GPU hosts
/// (openb-like); `tasks` tasks in jobs of 1-6, shapes drawn from CPU-only, shares of 0.25-0.75
/// GPU and 1-2 whole GPUs; a third of the jobs zone-balanced.
fn instance(nodes: usize, tasks: usize, seed: u64) -> (ClusterView, Vec<TaskRequest>) {
    let mut g = Gen(seed);
    let zones = ["a", "b", "c"];
    let specs: Vec<NodeSpec> = (0..nodes)
        .map(|k| {
            let (cpu, gpus) = match k % 4 {
                0 => (32, 0),
                1 | 2 => (64, 8),
                _ => (32, 4),
            };
            NodeSpec {
                id: NodeId(0),
                name: format!("n{k}"),
                capacity: Resources::new(cpu * 1000, cpu * 4096, 0, 0),
                gpus: (gpus > 0).then(|| NodeGpus {
                    count: gpus,
                    model: GpuModel::new("V100M16"),
                }),
                attributes: NodeAttributes {
                    zone: zones[k % 3].into(),
                    ..NodeAttributes::default()
                },
            }
        })
        .collect();
    let view = ClusterView::new(&ClusterSpec::from_nodes(specs));
    let mut out = Vec::new();
    let mut job = 0u64;
    while out.len() < tasks {
        let size = (1 + g.below(6) as usize).min(tasks - out.len());
        let gpu = match g.below(6) {
            0 | 1 => GpuDemand::None,
            2 => GpuDemand::Milli(250),
            3 => GpuDemand::Milli(500),
            4 => GpuDemand::Milli(750),
            _ => GpuDemand::Whole(1 + g.below(2) as u8),
        };
        let cpu = [1000, 2000, 4000, 8000][g.below(4) as usize];
        let shape = TaskShape::new(Resources::new(cpu, cpu * 3, 0, 0)).with_gpu(gpu);
        let hard = if g.below(3) == 0 {
            vec![Constraint::ZoneBalance { max_skew: 1 }]
        } else {
            vec![]
        };
        let c = Arc::new(Constraints { hard, soft: vec![] });
        for _ in 0..size {
            out.push(
                TaskRequest::new(TaskId(out.len() as u64), JobId(job), shape.clone())
                    .with_constraints(c.clone()),
            );
        }
        job += 1;
    }
    (view, out)
}

fn solve(view: &ClusterView, tasks: &[TaskRequest], cfg: &MilpConfig) -> MilpResult {
    let policy = Policy::berth();
    let mut v = view.clone();
    place_milp(&mut v, tasks, &policy, &mut policy.rng(), cfg).expect("valid instance")
}

fn report(name: &str, r: &MilpResult) {
    eprintln!(
        "{name}: status {:?}, objective {:.3} (heuristic {:.3}), bound {:?}, gap {:?}, unplaced {}, nodes opened {}, \
         parts {}, {} variables, {} rows{}",
        r.status,
        r.objective,
        r.heuristic_objective,
        r.best_bound,
        r.gap,
        r.unplaced,
        r.nodes_opened,
        r.parts,
        r.variables,
        r.rows,
        if r.message.is_empty() { String::new() } else { format!(" ({})", r.message) },
    );
}

fn bench(c: &mut Criterion) {
    let cfg = MilpConfig {
        mip_gap: 0.01,
        time_limit_ms: 60_000,
        ..MilpConfig::default()
    };
    let mut group = c.benchmark_group("milp");
    group.sample_size(10);
    for (name, nodes, tasks) in [("small_20x8", 8, 20), ("medium_150x50", 50, 150)] {
        let (view, batch) = instance(nodes, tasks, 42);
        report(name, &solve(&view, &batch, &cfg));
        group.bench_function(name, |b| b.iter(|| solve(&view, &batch, &cfg)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
