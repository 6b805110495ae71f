//! Alibaba GPU cluster trace 2023 ("openb", Weng et al., USENIX ATC '23), published at
//! github.com/alibaba/clusterdata, `cluster-trace-gpu-v2023/csv/`.
//!
//! # Pod lists (`openb_pod_list_*.csv`)
//! Columns (matched by header name):
//! `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time`.
//!
//! One pod is one [`TraceJob`] with one [`TaskGroup`] of one instance:
//! - shape: `cpu_milli`, `memory_mib`, GPUs from [`GpuDemand::from_count_and_milli`]
//!   (`num_gpu` whole devices, or `gpu_milli` of one device when `num_gpu == 1`), and
//!   `gpu_spec` split on `|` into the accepted GPU models (empty = any model);
//! - `qos` decides kind and tier:
//!
//!   | qos | kind | tier | why |
//!   |---|---|---|---|
//!   | `LS` (latency-sensitive) | service | critical | |
//!   | `Guaranteed` | service | critical | Kubernetes: requests = limits, never throttled |
//!   | `Burstable` | service | flex | Kubernetes: has requests, limits above them; long-running but may be squeezed, so not guaranteed capacity |
//!   | `BE` (best effort) | batch | flex | |
//!
//!   the raw value is kept in [`TraceJob::class`];
//! - times are seconds from the trace start, turned into ms: `submit_ms = creation_time`,
//!   `duration_ms = deletion_time - scheduled_time`, or `deletion_time - creation_time` for a
//!   pod never scheduled (empty `scheduled_time`); empty `deletion_time` = unknown duration;
//! - outcome: empty `scheduled_time` → [`TraceOutcome::NeverScheduled`] (the pod is kept);
//!   else by `pod_phase`: `Succeeded` → completed, `Failed` → failed, `Running` → unfinished
//!   (its duration runs to the trace's last deletion time, a lower bound), `Pending` or
//!   `Unknown` → unknown.
//!
//! # Row order
//! The FGD experiment needs the pod list in file order. A pod's [`JobId`] is its 0-based data
//! row as in the file (line number − 2), so `jobs.sort_by_key(|j| j.id)` restores the file
//! order after [`Workload::sort`]; [`pods`] gives the raw rows ([`OpenbPod`]) in file order.
//!
//! # Node lists (`openb_node_list_*.csv`)
//! Columns `sn,cpu_milli,memory_mib,gpu,model` → a [`ClusterSpec`] in file order; a node with
//! `gpu > 0` gets `NodeGpus { count: gpu, model }`, `gpu == 0` is CPU-only (empty model).
//! `openb_node_list_gpu_node.csv` has the 1,213 GPU nodes, `openb_node_list_all_node.csv`
//! adds the 310 CPU-only ones (1,523 nodes).

use crate::error::{ImportOptions, Skipped, TraceError};
use crate::fields::{column_positions, i64_cell, secs_to_ms, u64_cell};
use crate::reader::{for_each_record, LineReader};
use crate::workload::{TaskGroup, TraceJob, TraceOutcome, WorkKind, Workload};
use berth_solver::{
    ClusterSpec, GpuDemand, GpuModel, JobId, NodeAttributes, NodeGpus, NodeId, NodeSpec, Resources,
    TaskShape, Tier,
};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The node list [`crate::import`] loads next to a pod list, in order of preference: the full
/// list first, as the original cluster had it (the pod lists have CPU-only pods, 1,088 in
/// `default`, and the full list has the 310 CPU-only nodes they ran on), else the GPU nodes.
pub const SIBLING_NODE_LISTS: [&str; 2] = [
    "openb_node_list_all_node.csv",
    "openb_node_list_gpu_node.csv",
];

/// One row of a pod list, fields as in the file (times in seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpenbPod {
    /// 0-based data row (line number − 2); also the pod's [`JobId`].
    pub row: u64,
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub num_gpu: u32,
    pub gpu_milli: u32,
    /// Accepted GPU models, `|`-separated; empty = any.
    pub gpu_spec: String,
    pub qos: String,
    pub pod_phase: String,
    pub creation_time_s: i64,
    pub deletion_time_s: Option<i64>,
    /// `None` for pods that never ran.
    pub scheduled_time_s: Option<i64>,
}

impl OpenbPod {
    /// The pod's GPU demand.
    pub fn gpu(&self) -> Result<GpuDemand, String> {
        GpuDemand::from_count_and_milli(self.num_gpu, self.gpu_milli)
    }

    /// The accepted GPU models (empty = any).
    pub fn gpu_models(&self) -> Vec<GpuModel> {
        self.gpu_spec
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(GpuModel::new)
            .collect()
    }

    /// The pod as a one-instance job (see the module doc for the mapping).
    pub fn to_job(&self) -> Result<TraceJob, String> {
        let (kind, tier) = qos_kind_tier(&self.qos)?;
        let shape = TaskShape::new(Resources::new(self.cpu_milli, self.memory_mib, 0, 0))
            .with_gpu(self.gpu()?)
            .with_gpu_models(self.gpu_models());
        let start_s = self.scheduled_time_s.unwrap_or(self.creation_time_s);
        let duration_ms = match self.deletion_time_s {
            None => None,
            Some(d) if d < start_s => {
                let what = if self.scheduled_time_s.is_some() {
                    "scheduled_time"
                } else {
                    "creation_time"
                };
                return Err(format!("deletion_time {d} is before {what} {start_s}"));
            }
            Some(d) => Some(secs_to_ms(d - start_s, "deletion_time")? as u64),
        };
        let outcome = match (self.scheduled_time_s, self.pod_phase.as_str()) {
            (None, _) => TraceOutcome::NeverScheduled,
            (Some(_), "Succeeded") => TraceOutcome::Completed,
            (Some(_), "Failed") => TraceOutcome::Failed,
            (Some(_), "Running") => TraceOutcome::Unfinished,
            (Some(_), _) => TraceOutcome::Unknown,
        };
        Ok(TraceJob {
            id: JobId(self.row),
            name: self.name.clone(),
            kind,
            tier,
            class: self.qos.clone(),
            gang: false,
            groups: vec![TaskGroup {
                submit_ms: secs_to_ms(self.creation_time_s, "creation_time")?,
                instances: 1,
                shape,
                duration_ms,
                requested_runtime_ms: None,
                outcome,
            }],
        })
    }
}

/// Kind and tier for an openb `qos` value.
pub fn qos_kind_tier(qos: &str) -> Result<(WorkKind, Tier), String> {
    match qos {
        "LS" | "Guaranteed" => Ok((WorkKind::Service, Tier::Critical)),
        "Burstable" => Ok((WorkKind::Service, Tier::Flex)),
        "BE" => Ok((WorkKind::Batch, Tier::Flex)),
        other => Err(format!(
            "qos: unknown value {other:?} (expected LS, Guaranteed, Burstable or BE)"
        )),
    }
}

const POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// Raw pods of a pod list, in file order, with what was skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodList {
    pub pods: Vec<OpenbPod>,
    pub skipped: Skipped,
}

/// Reads the raw pods of a pod list (plain or gzip).
pub fn pods(path: &Path, opts: &ImportOptions) -> Result<PodList, TraceError> {
    read_pods(&mut LineReader::open(path)?, opts)
}

/// [`pods`] from any byte source; `name` names it in errors.
pub fn pods_from(
    reader: impl Read + 'static,
    name: &str,
    opts: &ImportOptions,
) -> Result<PodList, TraceError> {
    read_pods(&mut LineReader::new(reader, name)?, opts)
}

fn read_pods(lines: &mut LineReader, opts: &ImportOptions) -> Result<PodList, TraceError> {
    let cols = pod_columns(lines)?;
    let mut out = PodList::default();
    let PodList { pods, skipped } = &mut out;
    for_each_record(lines, opts, skipped, |line_no, line| {
        let pod = parse_pod(line_no, line, &cols)?;
        pods.push(pod);
        Ok(())
    })?;
    Ok(out)
}

/// Imports a pod list as a workload (no node list), sorted by (submit, id).
pub fn import_pods(path: &Path, opts: &ImportOptions) -> Result<Workload, TraceError> {
    let mut w = import_pod_lines(&mut LineReader::open(path)?, opts)?;
    w.source = path.display().to_string();
    Ok(w)
}

/// [`import_pods`] from any byte source; `name` names it in errors and in `source`.
pub fn import_pods_from(
    reader: impl Read + 'static,
    name: &str,
    opts: &ImportOptions,
) -> Result<Workload, TraceError> {
    let mut w = import_pod_lines(&mut LineReader::new(reader, name)?, opts)?;
    w.source = name.to_string();
    Ok(w)
}

fn import_pod_lines(lines: &mut LineReader, opts: &ImportOptions) -> Result<Workload, TraceError> {
    let cols = pod_columns(lines)?;
    let mut jobs = Vec::new();
    let mut skipped = Skipped::default();
    for_each_record(lines, opts, &mut skipped, |line_no, line| {
        jobs.push(parse_pod(line_no, line, &cols)?.to_job()?);
        Ok(())
    })?;
    let mut w = Workload {
        jobs,
        ..Workload::default()
    };
    w.set_skipped(skipped);
    w.sort();
    Ok(w)
}

/// Imports a node list (plain or gzip) as a cluster, nodes in file order.
pub fn import_nodes(
    path: &Path,
    opts: &ImportOptions,
) -> Result<(ClusterSpec, Skipped), TraceError> {
    read_nodes(&mut LineReader::open(path)?, opts)
}

/// [`import_nodes`] from any byte source; `name` names it in errors.
pub fn import_nodes_from(
    reader: impl Read + 'static,
    name: &str,
    opts: &ImportOptions,
) -> Result<(ClusterSpec, Skipped), TraceError> {
    read_nodes(&mut LineReader::new(reader, name)?, opts)
}

fn read_nodes(
    lines: &mut LineReader,
    opts: &ImportOptions,
) -> Result<(ClusterSpec, Skipped), TraceError> {
    let header = first_line(lines)?;
    let cols = column_positions(
        &header,
        [
            ("sn", &["sn"][..]),
            ("cpu_milli", &["cpu_milli"][..]),
            ("memory_mib", &["memory_mib"][..]),
            ("gpu", &["gpu"][..]),
            ("model", &["model"][..]),
        ],
    )
    .map_err(|m| TraceError::line(lines.file(), 1, m))?;
    let mut nodes = Vec::new();
    let mut skipped = Skipped::default();
    for_each_record(lines, opts, &mut skipped, |_, line| {
        nodes.push(parse_node(line, &cols)?);
        Ok(())
    })?;
    Ok((ClusterSpec::from_nodes(nodes), skipped))
}

/// Imports `dir/pod_file_name` with the node list `dir/node_file_name`.
pub fn import_dir(
    dir: &Path,
    pod_file_name: &str,
    node_file_name: &str,
    opts: &ImportOptions,
) -> Result<Workload, TraceError> {
    import_pods_with_nodes(&dir.join(pod_file_name), &dir.join(node_file_name), opts)
}

/// Imports a pod list together with a node list.
pub fn import_pods_with_nodes(
    pods: &Path,
    nodes: &Path,
    opts: &ImportOptions,
) -> Result<Workload, TraceError> {
    let mut w = import_pods(pods, opts)?;
    let (cluster, skipped) = import_nodes(nodes, opts)?;
    let mut all = w.take_skipped();
    all.merge(skipped, opts);
    w.set_skipped(all);
    w.cluster = Some(cluster);
    w.source = format!("{} + {}", pods.display(), nodes.display());
    Ok(w)
}

/// The node list in the same folder as `pod_list`, if one of [`SIBLING_NODE_LISTS`] is there.
pub fn sibling_node_list(pod_list: &Path) -> Option<PathBuf> {
    let dir = pod_list.parent().unwrap_or(Path::new("."));
    SIBLING_NODE_LISTS
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Column positions in a pod list, in the order of the struct fields.
struct PodColumns([usize; 11]);

fn first_line(lines: &mut LineReader) -> Result<String, TraceError> {
    loop {
        match lines.next_line()? {
            None => return Err(TraceError::file(lines.file(), "empty file: no header line")),
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => return Ok(l.to_string()),
        }
    }
}

fn pod_columns(lines: &mut LineReader) -> Result<PodColumns, TraceError> {
    let header = first_line(lines)?;
    let line = lines.line_no();
    column_positions(
        &header,
        [
            ("name", &["name"][..]),
            ("cpu_milli", &["cpu_milli"][..]),
            ("memory_mib", &["memory_mib"][..]),
            ("num_gpu", &["num_gpu"][..]),
            ("gpu_milli", &["gpu_milli"][..]),
            ("gpu_spec", &["gpu_spec"][..]),
            ("qos", &["qos"][..]),
            ("pod_phase", &["pod_phase"][..]),
            ("creation_time", &["creation_time"][..]),
            ("deletion_time", &["deletion_time"][..]),
            ("scheduled_time", &["scheduled_time"][..]),
        ],
    )
    .map(PodColumns)
    .map_err(|m| TraceError::line(lines.file(), line, m))
}

fn cells<'a, const N: usize>(line: &'a str, cols: &[usize; N]) -> Result<[&'a str; N], String> {
    let all: Vec<&str> = line.split(',').collect();
    let mut out = [""; N];
    for (slot, &i) in out.iter_mut().zip(cols.iter()) {
        *slot = all.get(i).copied().ok_or_else(|| {
            format!(
                "{} field(s), expected at least {}",
                all.len(),
                cols.iter().max().map_or(0, |m| m + 1)
            )
        })?;
    }
    Ok(out)
}

fn optional_time(v: &str, column: &str) -> Result<Option<i64>, String> {
    if v.trim().is_empty() {
        Ok(None)
    } else {
        i64_cell(v, column).map(Some)
    }
}

fn u32_cell(v: &str, column: &str) -> Result<u32, String> {
    let x = u64_cell(v, column)?;
    u32::try_from(x).map_err(|_| format!("{column}: {x} is out of range"))
}

fn parse_pod(line_no: u64, line: &str, cols: &PodColumns) -> Result<OpenbPod, String> {
    let [name, cpu, mem, num_gpu, gpu_milli, gpu_spec, qos, phase, creation, deletion, scheduled] =
        cells(line, &cols.0)?;
    let name = name.trim();
    if name.is_empty() {
        return Err("name: empty".into());
    }
    let qos = qos.trim();
    qos_kind_tier(qos)?;
    let phase = phase.trim();
    if !POD_PHASES.contains(&phase) {
        return Err(format!(
            "pod_phase: unknown value {phase:?} (expected one of {})",
            POD_PHASES.join(", ")
        ));
    }
    let pod = OpenbPod {
        row: line_no.saturating_sub(2),
        name: name.to_string(),
        cpu_milli: u64_cell(cpu, "cpu_milli")?,
        memory_mib: u64_cell(mem, "memory_mib")?,
        num_gpu: u32_cell(num_gpu, "num_gpu")?,
        gpu_milli: u32_cell(gpu_milli, "gpu_milli")?,
        gpu_spec: gpu_spec.trim().to_string(),
        qos: qos.to_string(),
        pod_phase: phase.to_string(),
        creation_time_s: i64_cell(creation, "creation_time")?,
        deletion_time_s: optional_time(deletion, "deletion_time")?,
        scheduled_time_s: optional_time(scheduled, "scheduled_time")?,
    };
    pod.gpu()?;
    Ok(pod)
}

fn parse_node(line: &str, cols: &[usize; 5]) -> Result<NodeSpec, String> {
    let [sn, cpu, mem, gpu, model] = cells(line, cols)?;
    let sn = sn.trim();
    if sn.is_empty() {
        return Err("sn: empty".into());
    }
    let gpu = u64_cell(gpu, "gpu")?;
    let model = model.trim();
    let gpus = match (gpu, model.is_empty()) {
        (0, true) => None,
        (0, false) => return Err(format!("model {model:?} given for a node with 0 GPUs")),
        (_, true) => return Err(format!("gpu: {gpu} GPUs but no model")),
        (n, false) => Some(NodeGpus {
            count: u8::try_from(n)
                .map_err(|_| format!("gpu: {n} GPUs on one node is out of range (max 255)"))?,
            model: GpuModel::new(model),
        }),
    };
    Ok(NodeSpec {
        id: NodeId(0),
        name: sn.to_string(),
        capacity: Resources::new(
            u64_cell(cpu, "cpu_milli")?,
            u64_cell(mem, "memory_mib")?,
            0,
            0,
        ),
        gpus,
        attributes: NodeAttributes::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const HEADER: &str =
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n";

    fn import(text: &str) -> Result<Workload, TraceError> {
        import_pods_from(
            Cursor::new(text.as_bytes().to_vec()),
            "pods.csv",
            &ImportOptions::default(),
        )
    }

    #[test]
    fn one_pod_maps_to_one_job_of_one_instance() {
        let w = import(&format!(
            "{HEADER}p0,6000,12288,1,460,T4|P100,LS,Running,10,100,12\n"
        ))
        .unwrap();
        assert_eq!(w.jobs.len(), 1);
        let j = &w.jobs[0];
        assert_eq!(
            (j.id, j.name.as_str(), j.kind, j.tier, j.class.as_str()),
            (JobId(0), "p0", WorkKind::Service, Tier::Critical, "LS")
        );
        let g = &j.groups[0];
        assert_eq!(g.instances, 1);
        assert_eq!(g.submit_ms, 10_000);
        assert_eq!(g.duration_ms, Some(88_000));
        assert_eq!(g.outcome, TraceOutcome::Unfinished);
        assert_eq!(g.shape.resources, Resources::new(6000, 12288, 0, 0));
        assert_eq!(g.shape.gpu, GpuDemand::Milli(460));
        assert_eq!(
            g.shape.gpu_models,
            vec![GpuModel::new("T4"), GpuModel::new("P100")]
        );
    }

    #[test]
    fn qos_and_phase_mapping() {
        let text = format!(
            "{HEADER}a,1,1,0,0,,BE,Succeeded,0,5,1\nb,1,1,8,1000,,Burstable,Failed,0,5,1\nc,1,1,2,1000,,Guaranteed,Pending,3,9,\n"
        );
        let w = import(&text).unwrap();
        let by_name = |n: &str| w.jobs.iter().find(|j| j.name == n).unwrap();
        let a = by_name("a");
        assert_eq!(
            (a.kind, a.tier, a.groups[0].outcome),
            (WorkKind::Batch, Tier::Flex, TraceOutcome::Completed)
        );
        assert_eq!(a.groups[0].shape.gpu, GpuDemand::None);
        let b = by_name("b");
        assert_eq!(
            (b.kind, b.tier, b.groups[0].outcome),
            (WorkKind::Service, Tier::Flex, TraceOutcome::Failed)
        );
        assert_eq!(b.groups[0].shape.gpu, GpuDemand::Whole(8));
        let c = by_name("c");
        assert_eq!(
            (c.kind, c.tier, c.groups[0].outcome),
            (
                WorkKind::Service,
                Tier::Critical,
                TraceOutcome::NeverScheduled
            )
        );
        // Never scheduled: duration counted from creation.
        assert_eq!(c.groups[0].duration_ms, Some(6_000));
    }

    #[test]
    fn file_order_is_recoverable_from_ids() {
        let text = format!(
            "{HEADER}late,1,1,0,0,,BE,Running,50,60,50\nearly,1,1,0,0,,BE,Running,5,60,5\n"
        );
        let mut w = import(&text).unwrap();
        assert_eq!(
            w.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["early", "late"]
        );
        w.jobs.sort_by_key(|j| j.id);
        assert_eq!(
            w.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["late", "early"]
        );
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let text = format!("{HEADER}a,1,1,0,0,,BE,Running,0,5,1\nb,x,1,0,0,,BE,Running,0,5,1\n");
        let e = import(&text).unwrap_err().to_string();
        assert_eq!(e, "pods.csv:3: cpu_milli: not a whole number >= 0: \"x\"");
        let e = import(&format!("{HEADER}a,1,1,1,1500,,BE,Running,0,5,1\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "pods.csv:2: gpu_milli 1500 out of range 0..=1000 for one GPU"
        );
        let e = import(&format!("{HEADER}a,1,1,0,0,,XX,Running,0,5,1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("pods.csv:2: qos: unknown value \"XX\""),
            "{e}"
        );
        let e = import(&format!("{HEADER}a,1,1,0,0,,BE,Running,0,5,9\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "pods.csv:2: deletion_time 5 is before scheduled_time 9");
        let e = import(&format!("{HEADER}a,1,1\n")).unwrap_err().to_string();
        assert_eq!(e, "pods.csv:2: 3 field(s), expected at least 11");
        let e = import("name,cpu_milli\n").unwrap_err().to_string();
        assert!(
            e.starts_with("pods.csv:1: header lacks column(s) memory_mib, num_gpu"),
            "{e}"
        );
        let e = import("").unwrap_err().to_string();
        assert_eq!(e, "pods.csv: empty file: no header line");
    }

    #[test]
    fn skip_bad_counts_and_keeps_going() {
        let text = format!("{HEADER}a,1,1,0,0,,BE,Running,0,5,1\nb,x,1,0,0,,BE,Running,0,5,1\n\nc,1,1,0,0,,??,Running,0,5,1\nd,1,1,0,0,,LS,Running,0,5,1\n");
        let w = import_pods_from(
            Cursor::new(text.into_bytes()),
            "pods.csv",
            &ImportOptions::skipping_bad_lines(),
        )
        .unwrap();
        assert_eq!(w.jobs.len(), 2);
        assert_eq!(w.skipped_lines, 2);
        assert_eq!(w.first_errors.len(), 2);
        assert!(w.first_errors[0].starts_with("pods.csv:3: "));
        assert!(w.first_errors[1].starts_with("pods.csv:5: "));
        // Ids stay row positions even with skipped and blank lines.
        assert_eq!(
            w.jobs.iter().map(|j| j.id.0).collect::<Vec<_>>(),
            vec![0, 4]
        );
    }

    #[test]
    fn nodes_become_a_cluster() {
        let text = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,0,\nn1,96000,786432,8,G2\n";
        let (c, skipped) = import_nodes_from(
            Cursor::new(text.as_bytes().to_vec()),
            "nodes.csv",
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(skipped.lines, 0);
        assert_eq!(c.len(), 2);
        assert!(c.check_ids().is_ok());
        assert_eq!(c.nodes[0].gpus, None);
        assert_eq!(
            c.nodes[1].gpus,
            Some(NodeGpus {
                count: 8,
                model: GpuModel::new("G2")
            })
        );
        assert_eq!(c.total_gpus(), 8);
        assert_eq!(c.total_capacity().cpu_milli, 128_000);
        for bad in ["n,1,1,2,\n", "n,1,1,0,T4\n", "n,1,1,300,T4\n"] {
            let text = format!("sn,cpu_milli,memory_mib,gpu,model\n{bad}");
            let e = import_nodes_from(
                Cursor::new(text.into_bytes()),
                "nodes.csv",
                &ImportOptions::default(),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with("nodes.csv:2: "), "{e}");
        }
    }
}
