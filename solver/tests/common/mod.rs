//! Shared helpers for the solver's integration tests: where the real traces are, and a minimal
//! reader of the two openb CSVs the fragmentation experiment needs.
#![allow(dead_code)]

use berth_solver::{
    ClusterSpec, GpuDemand, GpuModel, NodeAttributes, NodeGpus, NodeId, NodeSpec, Resources,
    TaskShape,
};
use std::path::PathBuf;

/// `$BERTH_TRACES_DIR`, else `<workspace root>/../shared/traces`.
pub fn traces_dir() -> PathBuf {
    if let Ok(d) = std::env::var("BERTH_TRACES_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

/// The openb folder, or `None` (with a printed reason) when it is absent.
pub fn openb_dir() -> Option<PathBuf> {
    let d = traces_dir().join("alibaba-cluster-trace-gpu-v2023");
    if d.join("openb_node_list_gpu_node.csv").is_file() {
        Some(d)
    } else {
        eprintln!(
            "SKIPPED: openb trace not found at {} (set BERTH_TRACES_DIR to the folder holding alibaba-cluster-trace-gpu-v2023)",
            d.display()
        );
        None
    }
}

fn columns(header: &str) -> Vec<String> {
    header
        .trim()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn col(cols: &[String], name: &str, file: &str) -> usize {
    cols.iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("{file}: no column {name}"))
}

/// `openb_node_list_*.csv`: `sn,cpu_milli,memory_mib,gpu,model`.
pub fn read_openb_nodes(path: &std::path::Path) -> ClusterSpec {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut lines = text.lines();
    let cols = columns(lines.next().expect("header"));
    let (sn, cpu, mem, gpu, model) = (
        col(&cols, "sn", &file),
        col(&cols, "cpu_milli", &file),
        col(&cols, "memory_mib", &file),
        col(&cols, "gpu", &file),
        col(&cols, "model", &file),
    );
    let nodes = lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            let num = |c: usize| -> u64 {
                f[c].trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{file}:{}: {e}", i + 2))
            };
            let count = num(gpu) as u8;
            NodeSpec {
                id: NodeId(0),
                name: f[sn].to_string(),
                capacity: Resources::new(num(cpu), num(mem), 0, 0),
                gpus: (count > 0).then(|| NodeGpus {
                    count,
                    model: GpuModel::new(f[model].trim()),
                }),
                attributes: NodeAttributes::default(),
            }
        });
    ClusterSpec::from_nodes(nodes)
}

/// `openb_pod_list_*.csv`: cpu, memory, GPU count and share, allowed models (`|`-separated).
pub fn read_openb_pods(path: &std::path::Path) -> Vec<TaskShape> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut lines = text.lines();
    let cols = columns(lines.next().expect("header"));
    let (cpu, mem, ngpu, milli, spec) = (
        col(&cols, "cpu_milli", &file),
        col(&cols, "memory_mib", &file),
        col(&cols, "num_gpu", &file),
        col(&cols, "gpu_milli", &file),
        col(&cols, "gpu_spec", &file),
    );
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            let num = |c: usize| -> u64 {
                f[c].trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{file}:{}: {e}", i + 2))
            };
            let gpu = GpuDemand::from_count_and_milli(num(ngpu) as u32, num(milli) as u32)
                .unwrap_or_else(|e| panic!("{file}:{}: {e}", i + 2));
            let models: Vec<GpuModel> = f[spec]
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(GpuModel::new)
                .collect();
            TaskShape::new(Resources::new(num(cpu), num(mem), 0, 0))
                .with_gpu(gpu)
                .with_gpu_models(models)
        })
        .collect()
}
