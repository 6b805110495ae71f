//! The importers on the hand-written sample traces in `traces/samples/` (synthetic values in
//! the real formats). Counts are those written into the files.

use berth_solver::{GpuDemand, GpuModel, JobId, Resources, Tier};
use berth_traces::{
    alibaba_2017, alibaba_gpu, detect_format, import, samples_dir, swf, ImportOptions, TraceFormat,
    TraceOutcome, TraceStats, WorkKind,
};

fn sample(name: &str) -> std::path::PathBuf {
    samples_dir().join(name)
}

#[test]
fn formats_are_detected_from_content() {
    let cases = [
        ("openb_pod_list_sample.csv", TraceFormat::AlibabaGpu2023Pods),
        (
            "openb_node_list_sample.csv",
            TraceFormat::AlibabaGpu2023Nodes,
        ),
        ("batch_task_sample.csv", TraceFormat::Alibaba2017Batch),
        ("sample.swf", TraceFormat::Swf),
        ("sample.swf.gz", TraceFormat::Swf),
    ];
    for (file, want) in cases {
        assert_eq!(detect_format(&sample(file)).unwrap(), want, "{file}");
    }
    let e = detect_format(&sample("sample.swf.machines"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unrecognised trace format"), "{e}");
}

#[test]
fn openb_sample_pods_and_nodes() {
    let opts = ImportOptions::default();
    let w = alibaba_gpu::import_dir(
        &samples_dir(),
        "openb_pod_list_sample.csv",
        "openb_node_list_sample.csv",
        &opts,
    )
    .unwrap();
    assert_eq!(w.jobs.len(), 24);
    assert_eq!(w.instances(), 24);
    let count =
        |f: &dyn Fn(&berth_traces::TraceJob) -> bool| w.jobs.iter().filter(|j| f(j)).count();
    assert_eq!(
        count(&|j| j.kind == WorkKind::Service),
        14,
        "LS 9 + Guaranteed 2 + Burstable 3"
    );
    assert_eq!(
        count(&|j| j.tier == Tier::Critical),
        11,
        "LS 9 + Guaranteed 2"
    );
    assert_eq!(
        count(&|j| j.groups[0].outcome == TraceOutcome::NeverScheduled),
        3
    );
    assert_eq!(count(&|j| !j.groups[0].shape.gpu.is_none()), 19);
    assert_eq!(count(&|j| !j.groups[0].shape.gpu_models.is_empty()), 9);
    assert_eq!(
        count(&|j| matches!(j.groups[0].shape.gpu, GpuDemand::Milli(_))),
        9
    );

    let pod3 = w.jobs.iter().find(|j| j.name == "sample-pod-03").unwrap();
    assert_eq!(pod3.id, JobId(3));
    assert_eq!(pod3.groups[0].shape.gpu, GpuDemand::Whole(8));
    assert_eq!(pod3.groups[0].shape.gpu_models, vec![GpuModel::new("A100")]);
    assert_eq!(pod3.groups[0].duration_ms, Some((90_000 - 460) * 1000));

    let c = w.cluster.as_ref().unwrap();
    assert_eq!(c.len(), 10);
    assert_eq!(c.total_gpus(), 24);
    assert_eq!(c.nodes.iter().filter(|n| n.gpus.is_none()).count(), 3);

    // Raw rows, in file order.
    let raw = alibaba_gpu::pods(&sample("openb_pod_list_sample.csv"), &opts).unwrap();
    assert_eq!(raw.pods.len(), 24);
    assert!(raw
        .pods
        .iter()
        .enumerate()
        .all(|(i, p)| p.row == i as u64 && p.name == format!("sample-pod-{i:02}")));
    assert_eq!(raw.pods[7].scheduled_time_s, None);
    assert_eq!(raw.pods[7].gpu_spec, "V100M32|A100");

    // import() with detection picks up no sibling node list here (the sample's is not named
    // like the real ones), so the cluster is absent.
    let w2 = import(&sample("openb_pod_list_sample.csv"), None, &opts).unwrap();
    assert_eq!(w2.jobs, w.jobs);
    assert!(w2.cluster.is_none());
}

#[test]
fn alibaba_2017_sample() {
    let w =
        alibaba_2017::import(&sample("batch_task_sample.csv"), &ImportOptions::default()).unwrap();
    assert_eq!(w.jobs.len(), 10);
    assert_eq!(w.task_groups(), 24);
    assert_eq!(w.instances(), 4407);
    let s = TraceStats::of(&w);
    assert_eq!(s.unknown_request_groups, 4);
    assert_eq!(s.outcomes.get("never_scheduled"), Some(&4));
    assert_eq!(s.outcomes.get("unfinished"), Some(&3));
    assert_eq!(s.outcomes.get("failed"), Some(&3));
    assert_eq!(s.outcomes.get("completed"), Some(&14));
    assert_eq!(s.submit_first_ms, Some(-30_000));
    // Default machine memory 128 GiB: 0.0078125 of it is 1 GiB.
    let j101 = &w.jobs[0];
    assert_eq!(j101.id, JobId(101));
    assert_eq!(
        j101.groups[0].shape.resources,
        Resources::new(500, 1024, 0, 0)
    );
    assert_eq!(j101.groups[0].duration_ms, Some(70_000));
    // End before create: duration unknown.
    let t1015 = w
        .jobs
        .iter()
        .flat_map(|j| &j.groups)
        .find(|g| g.submit_ms == 305_000)
        .unwrap();
    assert_eq!(t1015.duration_ms, None);

    let skip = ImportOptions {
        missing_request: berth_traces::MissingRequest::Skip,
        ..ImportOptions::default()
    };
    let w = alibaba_2017::import(&sample("batch_task_sample.csv"), &skip).unwrap();
    assert_eq!(w.instances(), 4407 - 91);
    assert_eq!(w.skipped_lines, 4);
}

#[test]
fn swf_sample_plain_and_gzip_agree() {
    let opts = ImportOptions::default();
    let w = swf::import(&sample("sample.swf"), &opts).unwrap();
    assert_eq!(w.jobs.len(), 20);
    assert_eq!(w.instances(), 183);
    assert!(w.jobs.iter().all(|j| j.gang && j.groups.len() == 1));
    assert_eq!(w.epoch_unix_s, Some(1_700_000_000));
    let c = w
        .cluster
        .as_ref()
        .expect("sample.swf.machines is picked up");
    assert_eq!(c.len(), 6);
    assert_eq!(c.total_capacity().cpu_milli, 40_000);
    assert_eq!(c.nodes[0].capacity.mem_mib, 16_384);

    let j8 = w.jobs.iter().find(|j| j.id == JobId(8)).unwrap();
    assert_eq!(
        j8.groups[0].instances, 6,
        "requested processors when allocated is unknown"
    );
    let j9 = w.jobs.iter().find(|j| j.id == JobId(9)).unwrap();
    assert_eq!(
        j9.groups[0].instances, 3,
        "allocated processors when requested is unknown"
    );
    assert_eq!(j9.class, "");
    let j1 = w.jobs.iter().find(|j| j.id == JobId(1)).unwrap();
    assert_eq!(
        j1.groups[0].shape.resources,
        Resources::new(1000, 200, 0, 0)
    );
    assert_eq!(j1.groups[0].requested_runtime_ms, Some(7_200_000));
    assert_eq!(j1.class, "1");
    let s = TraceStats::of(&w);
    assert_eq!(
        s.outcomes.get("completed"),
        Some(&14),
        "status 1 (13) and 3 (1)"
    );
    assert_eq!(s.outcomes.get("failed"), Some(&3), "status 0 (2) and 4 (1)");
    assert_eq!(s.outcomes.get("killed"), Some(&2));
    assert_eq!(s.outcomes.get("unknown"), Some(&1));

    let wz = import(&sample("sample.swf.gz"), None, &opts).unwrap();
    assert_eq!(wz.jobs, w.jobs);
    assert_eq!(wz.cluster, w.cluster, "x.swf.gz finds x.swf.machines");
    assert_eq!(
        swf::read_header(&sample("sample.swf.gz"))
            .unwrap()
            .max_procs,
        Some(40)
    );
}

#[test]
fn stats_table_of_a_sample_reads_well() {
    let w = import(&sample("sample.swf"), None, &ImportOptions::default()).unwrap();
    let text = TraceStats::of(&w).to_string();
    assert!(text.contains("jobs                       20\n"), "{text}");
    assert!(text.contains("instances                  183\n"), "{text}");
    assert!(
        text.contains("nodes                      6 (0 GPU, 6 CPU-only)"),
        "{text}"
    );
}
