//! Placement speed: one decision on 1,000 and 10,000 nodes per policy (a half-full cluster of
//! mixed GPU and CPU nodes), one full fragmentation-experiment run, and the whole openb batch
//! (8,152 pods onto the 1,523 openb nodes; skipped, saying so, when the trace is absent).
//!
//! `cargo bench -p berth-benches --bench place`

use berth_solver::experiment::{self, ExperimentConfig};
use berth_solver::{
    ClusterSpec, ClusterView, GpuDemand, GpuModel, JobId, NodeAttributes, NodeGpus, NodeId,
    NodeSpec, Placer, Policy, Resources, TaskId, TaskRequest, TaskShape, TaskTypes, TypeKey,
};
use berth_traces::{alibaba_gpu, ImportOptions};
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

/// A synthetic cluster: 3 zones; 8-GPU, 4-GPU, 2-GPU and CPU-only nodes.
fn cluster(nodes: usize) -> ClusterSpec {
    let kinds = [
        (96_000, 393_216, 8u8, "G2"),
        (104_000, 524_288, 2, "T4"),
        (32_000, 131_072, 4, "V100M16"),
        (64_000, 262_144, 0, ""),
    ];
    ClusterSpec::from_nodes((0..nodes).map(|i| {
        let (cpu, mem, gpus, model) = kinds[i % kinds.len()];
        NodeSpec {
            id: NodeId(0),
            name: format!("n{i}"),
            capacity: Resources::new(cpu, mem, 0, 0),
            gpus: (gpus > 0).then(|| NodeGpus {
                count: gpus,
                model: GpuModel::new(model),
            }),
            attributes: NodeAttributes {
                zone: ["a", "b", "c"][i % 3].to_string(),
                ..NodeAttributes::default()
            },
        }
    }))
}

/// An openb-like task mix.
fn shapes() -> Vec<TaskShape> {
    let s = |cpu, mem, gpu| TaskShape::new(Resources::new(cpu, mem, 0, 0)).with_gpu(gpu);
    vec![
        s(6000, 12_288, GpuDemand::Milli(460)),
        s(4000, 8192, GpuDemand::Milli(250)),
        s(8000, 30_000, GpuDemand::Milli(500)),
        s(12_000, 16_384, GpuDemand::Whole(1)),
        s(16_000, 65_536, GpuDemand::Whole(2)),
        s(2000, 4096, GpuDemand::None),
        s(32_000, 131_072, GpuDemand::Whole(8)),
    ]
}

/// A view of `nodes` nodes filled to about half with the task mix, and the typical types.
fn half_full(nodes: usize) -> (ClusterView, TaskTypes) {
    let spec = cluster(nodes);
    let mut view = ClusterView::new(&spec);
    let shapes = shapes();
    let types = TaskTypes::from_shapes(shapes.iter(), 0.95, TypeKey::CpuGpu);
    let mut placer = Placer::new(Policy::preset("random").unwrap()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut i = 0u64;
    while view.gpu_milli_used() * 2 < view.gpu_milli_total() {
        let r = TaskRequest::new(
            TaskId(i),
            JobId(i),
            shapes[i as usize % shapes.len()].clone(),
        );
        if let Ok(a) = placer.place_one(&view, &r, &mut rng) {
            view.apply(&a);
        }
        i += 1;
    }
    (view, types)
}

fn one_decision(c: &mut Criterion) {
    for nodes in [1_000usize, 10_000] {
        let (view, types) = half_full(nodes);
        let shapes = shapes();
        let mut g = c.benchmark_group(format!("place_one/{nodes}_nodes"));
        for name in POLICIES {
            let mut placer = Placer::new(Policy::preset(name).unwrap())
                .unwrap()
                .with_typical_types(types.clone());
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut k = 0usize;
            g.bench_function(name, |b| {
                b.iter(|| {
                    // Cycle through the task mix so caches see the realistic shape variety.
                    k += 1;
                    let r = TaskRequest::new(
                        TaskId(1 << 40),
                        JobId(1 << 40),
                        shapes[k % shapes.len()].clone(),
                    );
                    black_box(placer.place_one(&view, &r, &mut rng).ok())
                })
            });
        }
        g.finish();
    }
}

fn openb_dir() -> Option<std::path::PathBuf> {
    let d = berth_traces::shared_traces_dir()?.join("alibaba-cluster-trace-gpu-v2023");
    d.join("openb_pod_list_default.csv").is_file().then_some(d)
}

fn openb_pods(dir: &std::path::Path) -> Vec<TaskShape> {
    let list = alibaba_gpu::pods(
        &dir.join("openb_pod_list_default.csv"),
        &ImportOptions::default(),
    )
    .unwrap();
    list.pods
        .iter()
        .map(|p| {
            TaskShape::new(Resources::new(p.cpu_milli, p.memory_mib, 0, 0))
                .with_gpu(p.gpu().unwrap())
                .with_gpu_models(p.gpu_models())
        })
        .collect()
}

fn openb(c: &mut Criterion) {
    let Some(dir) = openb_dir() else {
        eprintln!("SKIPPED openb benchmarks: trace not found (set BERTH_TRACES_DIR)");
        return;
    };
    let pods = openb_pods(&dir);
    let all_nodes = alibaba_gpu::import_nodes(
        &dir.join("openb_node_list_all_node.csv"),
        &ImportOptions::default(),
    )
    .unwrap()
    .0;
    let gpu_nodes = alibaba_gpu::import_nodes(
        &dir.join("openb_node_list_gpu_node.csv"),
        &ImportOptions::default(),
    )
    .unwrap()
    .0;
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
