//! The importers on the real shared traces (`<workspace>/../shared/traces`, or
//! `$BERTH_TRACES_DIR`). Each test prints a message and passes without checking anything when
//! the traces are absent (a user's machine does not have them; CI does).
//!
//! The expected figures are the traces' published ones (see the traces' README) or, where
//! noted, counted independently with awk on the files.

use berth_solver::GpuDemand;
use berth_traces::{
    alibaba_2017, alibaba_gpu, detect_format, import, shared_traces_dir, swf, ImportOptions,
    TraceFormat, TraceOutcome, TraceStats, WorkKind,
};
use std::path::PathBuf;

fn trace(rel: &str) -> Option<PathBuf> {
    let Some(dir) = shared_traces_dir() else {
        eprintln!("SKIPPED: shared traces not found (set BERTH_TRACES_DIR or put them in ../shared/traces)");
        return None;
    };
    let p = dir.join(rel);
    if !p.is_file() {
        eprintln!("SKIPPED: {} not found", p.display());
        return None;
    }
    Some(p)
}

const GPU: &str = "alibaba-cluster-trace-gpu-v2023";

#[test]
fn openb_default_pods_with_node_lists() {
    let Some(pods) = trace(&format!("{GPU}/openb_pod_list_default.csv")) else {
        return;
    };
    let opts = ImportOptions::default();
    assert_eq!(
        detect_format(&pods).unwrap(),
        TraceFormat::AlibabaGpu2023Pods
    );
    let w = import(&pods, None, &opts).unwrap();
    assert_eq!(w.jobs.len(), 8152);
    assert_eq!(w.instances(), 8152);
    assert_eq!(w.skipped_lines, 0);
    // import() loads the full node list from the same folder.
    let c = w.cluster.as_ref().expect("sibling node list");
    assert_eq!(c.len(), 1523);
    assert_eq!(c.total_gpus(), 6212);
    assert_eq!(c.nodes.iter().filter(|n| n.gpus.is_none()).count(), 310);

    let s = TraceStats::of(&w);
    // Counted with awk: 897 pods have no scheduled_time; qos LS 4647, BE 3398, Burstable 100,
    // Guaranteed 7; num_gpu 0: 1088, 1: 6989 (3078 of them fractional), 2: 16, 4: 15, 8: 44.
    assert_eq!(s.outcomes.get("never_scheduled"), Some(&897));
    assert_eq!(s.outcomes.get("completed"), Some(&192));
    assert_eq!(s.outcomes.get("failed"), Some(&1870));
    assert_eq!(s.outcomes.get("unfinished"), Some(&5193));
    assert_eq!((s.service_jobs, s.batch_jobs), (4647 + 100 + 7, 3398));
    assert_eq!(s.critical_jobs, 4647 + 7);
    assert_eq!(s.gpu.gpu_instances, 7064);
    assert_eq!(s.gpu.fractional_instances, 3078);
    assert_eq!(s.gpu.whole.get(&1), Some(&(6989 - 3078)));
    assert_eq!(
        (
            s.gpu.whole.get(&2),
            s.gpu.whole.get(&4),
            s.gpu.whole.get(&8)
        ),
        (Some(&16), Some(&15), Some(&44))
    );
    assert_eq!(s.gpu.model_constrained_instances, 0);

    let dir = pods.parent().unwrap();
    let w = alibaba_gpu::import_dir(
        dir,
        "openb_pod_list_default.csv",
        "openb_node_list_gpu_node.csv",
        &opts,
    )
    .unwrap();
    let c = w.cluster.as_ref().unwrap();
    assert_eq!(c.len(), 1213);
    assert_eq!(c.total_gpus(), 6212);
    assert!(c.nodes.iter().all(|n| n.gpu_count() > 0));

    // The raw rows keep the file order; ids map to rows.
    let raw = alibaba_gpu::pods(&pods, &opts).unwrap();
    assert_eq!(raw.pods.len(), 8152);
    assert_eq!(raw.pods[61].name, "openb-pod-0061");
    assert_eq!(raw.pods[61].scheduled_time_s, None);
    let mut by_id = w.jobs.clone();
    by_id.sort_by_key(|j| j.id);
    assert!(by_id.iter().zip(&raw.pods).all(|(j, p)| j.name == p.name));
}

#[test]
fn openb_gpuspec33_constrains_a_third_of_gpu_pods() {
    let Some(pods) = trace(&format!("{GPU}/openb_pod_list_gpuspec33.csv")) else {
        return;
    };
    let w = alibaba_gpu::import_pods(&pods, &ImportOptions::default()).unwrap();
    assert_eq!(w.jobs.len(), 8152);
    let s = TraceStats::of(&w);
    // Counted with awk: 2,388 of the 7,064 GPU pods have a gpu_spec (33.8 %).
    assert_eq!(s.gpu.model_constrained_instances, 2388);
    let share = s.gpu.model_constrained_instances as f64 / s.gpu.gpu_instances as f64;
    assert!((0.30..0.37).contains(&share), "{share}");
    assert_eq!(s.gpu.model_sets.get("T4"), Some(&1291));
    assert_eq!(s.gpu.model_sets.get("V100M16|V100M32"), Some(&141));
}

#[test]
fn alibaba_2017_batch_tasks() {
    let Some(path) = trace("alibaba-cluster-trace-v2017/batch_task.csv") else {
        return;
    };
    assert_eq!(detect_format(&path).unwrap(), TraceFormat::Alibaba2017Batch);
    let w = alibaba_2017::import(&path, &ImportOptions::default()).unwrap();
    assert_eq!(w.task_groups(), 80_553);
    assert_eq!(w.jobs.len(), 12_951);
    // Counted with awk (sum of number_of_instances): 11,909,321, the "11.9 M" of the README.
    assert_eq!(w.instances(), 11_909_321);
    assert_eq!(w.skipped_lines, 0);
    assert!(w.jobs.iter().all(|j| j.kind == WorkKind::Batch && !j.gang));
    let s = TraceStats::of(&w);
    // Counted with awk: 9,017 rows with empty CPU and memory cells; statuses Terminated
    // 67,013, Waiting 8,847, Failed 1,126, Running 3,567; earliest create time -1,078 s.
    assert_eq!(s.unknown_request_groups, 9017);
    assert_eq!(s.outcomes.get("completed"), Some(&67_013));
    assert_eq!(s.outcomes.get("never_scheduled"), Some(&8847));
    assert_eq!(s.outcomes.get("failed"), Some(&1126));
    assert_eq!(s.outcomes.get("unfinished"), Some(&3567));
    assert_eq!(s.submit_first_ms, Some(-1_078_000));
    assert_eq!(s.gpu.gpu_instances, 0);

    let skip = ImportOptions {
        missing_request: berth_traces::MissingRequest::Skip,
        ..ImportOptions::default()
    };
    let w = alibaba_2017::import(&path, &skip).unwrap();
    assert_eq!(w.instances(), 11_909_321 - 849_617);
    assert_eq!(w.skipped_lines, 9017);
}

#[test]
fn wagap_2013_swf() {
    let Some(path) = trace("metacentrum-alea/wagap-2013.swf") else {
        return;
    };
    assert_eq!(detect_format(&path).unwrap(), TraceFormat::Swf);
    let w = swf::import(&path, &ImportOptions::default()).unwrap();
    assert_eq!(w.jobs.len(), 17_900);
    assert_eq!(w.skipped_lines, 0);
    assert_eq!(w.epoch_unix_s, Some(1_356_996_147));
    let c = w.cluster.as_ref().expect("wagap-2013.swf.machines");
    assert_eq!(c.total_capacity().cpu_milli, 2176 * 1000);
    assert_eq!(c.len(), 20 + 48);
    // The two jobs whose run time is minus their submit time have an unknown duration.
    let unknown = w
        .jobs
        .iter()
        .filter(|j| j.groups[0].duration_ms.is_none())
        .count();
    assert_eq!(unknown, 2);
    // Queue names from MetaCentrum's extra fields (awk: 5,301 jobs in q_1d).
    assert_eq!(w.jobs.iter().filter(|j| j.class == "q_1d").count(), 5301);
    // Memory: bytes per node over ppn. The first job asks 64 GiB for 64 processors on one node.
    let j0 = w.jobs.iter().find(|j| j.id.0 == 0).unwrap();
    assert_eq!(j0.groups[0].instances, 64);
    assert_eq!(j0.groups[0].shape.resources.mem_mib, 1024);
    // No processor asks for more memory than the largest node has.
    let node_mem_max = c.nodes.iter().map(|n| n.capacity.mem_mib).max().unwrap();
    assert!(w
        .jobs
        .iter()
        .all(|j| j.groups[0].shape.resources.mem_mib <= node_mem_max));
    assert!(w
        .jobs
        .iter()
        .all(|j| j.groups[0].outcome == TraceOutcome::Completed));
}

#[test]
fn hpc2n_swf() {
    let Some(path) = trace("metacentrum-alea/hpc2n.swf") else {
        return;
    };
    let w = swf::import(&path, &ImportOptions::default()).unwrap();
    assert_eq!(w.jobs.len(), 3170);
    assert_eq!(w.skipped_lines, 0);
    let h = swf::read_header(&path).unwrap();
    assert_eq!(
        (h.max_nodes, h.max_procs, h.unix_start_time_s),
        (Some(240), Some(240), Some(1_027_839_845))
    );
    assert_eq!(w.epoch_unix_s, Some(1_027_839_845));
    let c = w.cluster.as_ref().expect("hpc2n.swf.machines");
    assert_eq!(c.len(), 120);
    assert!(c.nodes.iter().all(|n| n.capacity.cpu_milli == 2000));
    let s = TraceStats::of(&w);
    // awk: status 1 for 3,145 jobs, -1 for 25.
    assert_eq!(s.outcomes.get("completed"), Some(&3145));
    assert_eq!(s.outcomes.get("unknown"), Some(&25));
    assert!(w
        .jobs
        .iter()
        .all(|j| j.groups[0].shape.gpu == GpuDemand::None));
}
