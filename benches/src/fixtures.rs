//! Shared inputs: synthetic clusters and task mixes (seeded, no trace needed) and the openb
//! trace when `../shared/traces` has it.

use berth_solver::{
    Assignment, ClusterSpec, ClusterView, GpuDemand, GpuModel, GpuSlice, JobId, NodeAttributes,
    NodeGpus, NodeId, NodeSpec, Resources, TaskId, TaskRequest, TaskShape, TaskTypes, TypeKey,
};
use berth_traces::{alibaba_gpu, ImportOptions};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// A synthetic cluster: 3 zones; 8-GPU, 2-GPU, 4-GPU and CPU-only nodes in turn.
pub fn cluster(nodes: usize) -> ClusterSpec {
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
pub fn shapes() -> Vec<TaskShape> {
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

/// A view of `nodes` nodes filled to about half with the task mix, and the mix's typical task
/// types. Filled node by node with assignments built directly (not through a placer, whose
/// full scans would make this setup dominate an instruction count): node `i` takes the mix's
/// shapes in turn, starting at `i`, until half its GPU (or, without GPUs, half its CPU) is taken.
pub fn half_full(nodes: usize) -> (ClusterView, TaskTypes) {
    let spec = cluster(nodes);
    let mut view = ClusterView::new(&spec);
    let shapes = shapes();
    let types = TaskTypes::from_shapes(shapes.iter(), 0.95, TypeKey::CpuGpu);
    let mut task = 0u64;
    for i in 0..nodes {
        let node = NodeId(i as u32);
        let cap = spec.nodes[i].capacity;
        let gpu_total: u32 = 1000 * view.gpu_free(node).len() as u32;
        for k in 0..shapes.len() * 4 {
            let gpu_used: u32 = view
                .gpu_free(node)
                .iter()
                .map(|f| 1000 - u32::from(*f))
                .sum();
            let half = if gpu_total > 0 {
                gpu_used * 2 >= gpu_total
            } else {
                (cap.cpu_milli - view.free(node).cpu_milli) * 2 >= cap.cpu_milli
            };
            if half {
                break;
            }
            let shape = &shapes[(i + k) % shapes.len()];
            let free = view.gpu_free(node);
            let gpus: Option<Vec<GpuSlice>> = match shape.gpu {
                GpuDemand::None => Some(Vec::new()),
                GpuDemand::Milli(m) => free.iter().position(|f| *f >= m).map(|d| {
                    vec![GpuSlice {
                        device: d as u8,
                        milli: m,
                    }]
                }),
                GpuDemand::Whole(w) => {
                    let idle: Vec<GpuSlice> = free
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| **f == 1000)
                        .take(usize::from(w))
                        .map(|(d, _)| GpuSlice {
                            device: d as u8,
                            milli: 1000,
                        })
                        .collect();
                    (idle.len() == usize::from(w)).then_some(idle)
                }
            };
            let Some(gpus) = gpus else { continue };
            let a = Assignment {
                task: TaskId(task),
                job: JobId(task),
                node,
                resources: shape.resources,
                gpus,
                exclusive: false,
            };
            if view.try_apply(&a).is_ok() {
                task += 1;
            }
        }
    }
    (view, types)
}

/// `n` tasks drawn from `shapes` with a seeded RNG, as requests of one job each.
pub fn requests(shapes: &[TaskShape], n: usize, seed: u64) -> Vec<TaskRequest> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let s = shapes[rng.random_range(0..shapes.len())].clone();
            TaskRequest::new(TaskId(i as u64), JobId(i as u64), s)
        })
        .collect()
}

/// The openb folder under the shared traces, when present.
pub fn openb_dir() -> Option<PathBuf> {
    let d = berth_traces::shared_traces_dir()?.join("alibaba-cluster-trace-gpu-v2023");
    d.join("openb_pod_list_default.csv").is_file().then_some(d)
}

/// The pods of an openb pod list as task shapes.
pub fn openb_pods(file: &Path) -> Vec<TaskShape> {
    let list = alibaba_gpu::pods(file, &ImportOptions::default()).expect("openb pod list");
    list.pods
        .iter()
        .map(|p| {
            TaskShape::new(Resources::new(p.cpu_milli, p.memory_mib, 0, 0))
                .with_gpu(p.gpu().expect("a pod's GPU request"))
                .with_gpu_models(p.gpu_models())
        })
        .collect()
}

/// An openb node list.
pub fn openb_nodes(file: &Path) -> ClusterSpec {
    alibaba_gpu::import_nodes(file, &ImportOptions::default())
        .expect("openb node list")
        .0
}
