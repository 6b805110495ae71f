//! Placement speed: one decision on 1,000 and 10,000 nodes per policy (a half-full cluster of
//! mixed GPU and CPU nodes; on 10,000 also with each decision applied and released), one full
//! fragmentation-experiment run, and the whole openb batch (8,152 pods onto the 1,523 openb
//! nodes; skipped, saying so, when the trace is absent).
//!
//! `cargo bench -p berth-benches --bench place`

use berth_benches::fixtures::{half_full, openb_dir, openb_nodes, openb_pods, shapes};
use berth_solver::experiment::{self, ExperimentConfig};
use berth_solver::{ClusterView, JobId, Placer, Policy, TaskId, TaskRequest, TaskShape};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const POLICIES: [&str; 8] = [
    "first_fit",
    "best_fit",
    "dot_product",
    "gpu_packing",
    "gpu_clustering",
    "random",
    "fgd",
    "berth",
];

/// The `k`-th request of a decision bench: it cycles through the task mix so caches see the
/// realistic shape variety.
fn mix_request(shapes: &[TaskShape], k: usize) -> TaskRequest {
    TaskRequest::new(
        TaskId(1 << 40),
        JobId(1 << 40),
        shapes[k % shapes.len()].clone(),
    )
}

fn one_decision(c: &mut Criterion) {
    for nodes in [1_000usize, 10_000] {
        decisions(c, nodes, &POLICIES, false);
    }
    decisions(c, 10_000, &["best_fit", "fgd", "berth"], true);
}

/// One decision per iteration on the half-full cluster of `nodes`. `applied`: each decision is
/// applied and released again, so the placer's node index catches up with two changes per
/// decision (what a controller's long-lived placer sees); otherwise the view never changes.
fn decisions(c: &mut Criterion, nodes: usize, policies: &[&str], applied: bool) {
    let (mut view, types) = half_full(nodes);
    let shapes = shapes();
    let group = if applied {
        "place_one_applied"
    } else {
        "place_one"
    };
    let mut g = c.benchmark_group(format!("{group}/{nodes}_nodes"));
    for &name in policies {
        let mut placer = Placer::new(Policy::preset(name).unwrap())
            .unwrap()
            .with_typical_types(types.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut k = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                k += 1;
                let r = mix_request(&shapes, k);
                match placer.place_one(&view, &r, &mut rng) {
                    Ok(a) if applied => {
                        view.apply(&a);
                        view.release(&a).unwrap();
                        black_box(a);
                    }
                    other => {
                        black_box(other.ok());
                    }
                }
            })
        });
    }
    g.finish();
}

fn openb(c: &mut Criterion) {
    let Some(dir) = openb_dir() else {
        eprintln!("SKIPPED openb benchmarks: trace not found (set BERTH_TRACES_DIR)");
        return;
    };
    let pods = openb_pods(&dir.join("openb_pod_list_default.csv"));
    let all_nodes = openb_nodes(&dir.join("openb_node_list_all_node.csv"));
    let gpu_nodes = openb_nodes(&dir.join("openb_node_list_gpu_node.csv"));
    let requests: Vec<TaskRequest> = pods
        .iter()
        .enumerate()
        .map(|(i, s)| TaskRequest::new(TaskId(i as u64), JobId(i as u64), s.clone()))
        .collect();
    let mut g = c.benchmark_group("openb");
    g.sample_size(10);
    for name in ["best_fit", "fgd", "berth"] {
        let policy = Policy::preset(name).unwrap();
        g.bench_function(format!("batch_8152_pods_1523_nodes/{name}"), |b| {
            b.iter_batched(
                || ClusterView::new(&all_nodes),
                |mut view| {
                    black_box(
                        berth_solver::place(&mut view, &requests, &policy, &mut policy.rng())
                            .unwrap(),
                    )
                },
                BatchSize::LargeInput,
            )
        });
    }
    let cfg = ExperimentConfig::default();
    for name in ["best_fit", "fgd", "berth"] {
        let policy = Policy::preset(name).unwrap();
        g.bench_function(format!("frag_experiment_run/{name}"), |b| {
            b.iter(|| black_box(experiment::run(&gpu_nodes, &pods, &policy, 42, &cfg).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, one_decision, openb);
criterion_main!(benches);
