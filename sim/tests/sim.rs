//! The simulator end to end: determinism, faults with observable effects, EASY and FCFS on a
//! hand-checked SWF log, the shipped scenarios, and the embedded default.

use berth_sim::{run_scenario, run_scenario_to, Scenario, SimReport};
use std::path::{Path, PathBuf};

fn run(s: &Scenario) -> SimReport {
    run_scenario(s, &mut |_| {}).unwrap()
}

/// A small scenario: one static 8-core node per zone plus an autoscaled pool (optionally spot),
/// 80 batch jobs over 2 hours.
fn small(extra: &str) -> Scenario {
    let text = format!(
        r#"
name = "small"
seed = 3
horizon_ms = 10_800_000
[workload.synthetic]
seed = 5
jobs = 80
arrivals = {{ kind = "poisson", rate_per_hour = 40 }}
duration = {{ median_ms = 900_000, sigma = 0.5 }}
tasks_per_job = {{ kind = "uniform", min = 1, max = 4 }}
[[workload.synthetic.shapes]]
weight = 1
cpu_milli = 2000
mem_mib = 4096
[workload]
retry = {{ kind = "immediate", max_retries = 5 }}
[[cluster.node_groups]]
name = "static"
count = 2
cpu_milli = 8000
mem_mib = 32768
zone = "us-east-1a"
pool = "flex"
[[cluster.pools]]
name = "flex"
instance_types = ["m5.2xlarge"]
zones = ["us-east-1a", "us-east-1b"]
max_nodes = 6
{extra}
"#
    );
    Scenario::from_toml(&text, Path::new(".")).unwrap()
}

#[test]
fn same_seed_same_hash_and_different_seeds_differ() {
    let s = Scenario::default_scenario();
    let a = run(&s);
    let b = run(&s);
    assert_eq!(a.event_log_hash, b.event_log_hash);
    assert_eq!(a, b, "the whole report is reproduced");
    let mut s2 = s.clone();
    s2.seed += 1;
    let c = run(&s2);
    assert_ne!(a.event_log_hash, c.event_log_hash);
}

#[test]
fn the_default_scenario_runs_with_sane_figures() {
    let r = run(&Scenario::default_scenario());
    assert_eq!(r.jobs_submitted, 300);
    let completed = r.job_states.get("completed").copied().unwrap_or(0);
    assert!(completed > 200, "{}", r.render_table());
    assert!(r.tasks_started > 500);
    assert!(
        r.cpu_alloc_mean > 0.05 && r.cpu_alloc_mean <= 1.0,
        "{}",
        r.cpu_alloc_mean
    );
    assert!(r.gpu_alloc_mean > 0.0 && r.gpu_alloc_mean <= 1.0);
    assert!(r.cost_usd > 1.0 && r.cost_usd < 500.0, "{}", r.cost_usd);
    assert!(r.nodes_max >= 6, "the pools start at 4 + 2 nodes and grow");
    assert!(r.instances_requested >= 6);
    let crit = &r.tiers["critical"];
    let flex = &r.tiers["flex"];
    assert!(crit.tasks_started > 0 && flex.tasks_started > 0);
    assert!(crit.wait_ms_p50.unwrap() <= crit.wait_ms_p99.unwrap());
    assert!(r.bounded_slowdown_mean >= 1.0);
    let table = r.render_table();
    assert!(table.contains("event log hash"));
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["jobs_submitted"], 300);
}

#[test]
fn every_fault_kind_has_an_observable_effect() {
    let base = run(&small(""));
    assert_eq!(base.faults.nodes_lost, 0);
    assert_eq!(base.task_reasons.get("lost"), None);
    assert_eq!(base.task_reasons.get("failed"), None);

    let r = run(&small("[faults]\nnode_loss_per_node_hour = 0.5"));
    assert!(r.faults.nodes_lost > 0);
    assert!(
        r.task_reasons.get("lost").copied().unwrap_or(0) > 0,
        "{:?}",
        r.task_reasons
    );

    let text = small("").cluster.pools[0].clone();
    assert_eq!(text.name, "flex");
    let r = run(&small(
        "capacity_type = \"spot\"\n[faults]\nspot_interruption_per_node_hour = 1.0",
    ));
    assert!(r.faults.spot_interruptions > 0);
    assert!(
        r.task_reasons.get("lost").copied().unwrap_or(0) > 0,
        "{:?}",
        r.task_reasons
    );

    let r = run(&small("[faults]\nlaunch_failure_probability = 0.2"));
    assert!(r.faults.container_launch_failures > 0);
    assert!(r.task_reasons.get("launch_failed").copied().unwrap_or(0) > 0);
    assert!(r.retries > base.retries);

    let r = run(&small(
        "[[faults.insufficient_capacity]]\ninstance_type = \"m5.2xlarge\"\nzone = \"us-east-1a\"\nfrom_ms = 0\nto_ms = 10_800_000",
    ));
    assert!(r.faults.insufficient_capacity > 0);
    assert!(
        r.instances_requested > r.faults.insufficient_capacity,
        "the other zone is used"
    );

    let r = run(&small("[faults]\ncontainer_crash_per_task_hour = 1.0"));
    assert!(r.faults.container_crashes > 0);
    assert!(r.task_reasons.get("failed").copied().unwrap_or(0) > 0);
    assert!(r.retries > base.retries);

    let r = run(&small(
        "[faults]\ninstance_launch_failure_probability = 0.5",
    ));
    assert!(r.faults.instance_launch_failures > 0);
}

/// Four rigid jobs on one 4-processor machine (SWF: submit, run time, processors, requested
/// time):
/// A 0 s, 10 s, 2, 10 s; B 1 s, 10 s, 4, 10 s; C 2 s, 5 s, 2, 5 s; D 3 s, 20 s, 2, 20 s.
/// EASY: A at 0; B (all 4) is reserved for 10 s; C ends by 7 s so it backfills at 2 s; D would
/// hold 2 processors past 10 s so it waits; B at 10 s; D at 20 s.
/// FCFS: A 0, B 10, then C and D together at 20 s.
#[test]
fn easy_and_fcfs_start_times_match_the_hand_computed_ones() {
    let dir = std::env::temp_dir().join(format!("berth-sim-easy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let line = |id: u32, submit: u32, run: u32, procs: u32, req: u32| {
        format!("{id} {submit} -1 {run} {procs} -1 -1 {procs} {req} -1 1 1 1 1 1 1 -1 -1\n")
    };
    let swf = [
        line(1, 0, 10, 2, 10),
        line(2, 1, 10, 4, 10),
        line(3, 2, 5, 2, 5),
        line(4, 3, 20, 2, 20),
    ]
    .concat();
    std::fs::write(
        dir.join("tiny.swf"),
        format!("; tiny hand-checked log\n{swf}"),
    )
    .unwrap();
    std::fs::write(dir.join("tiny.swf.machines"), "1 m 1 4 1 8388608\n").unwrap();
    for (queue, expected) in [("easy", [0, 10, 2, 20]), ("fcfs", [0, 10, 20, 20])] {
        let text = format!(
            r#"
name = "tiny"
horizon_ms = 100_000
[workload.trace]
path = "tiny.swf"
format = "swf"
[cluster]
from_workload = true
[policy]
placement = "first_fit"
queue = "{queue}"
[timing]
container_launch = {{ median_ms = 0, sigma = 0.0 }}
"#
        );
        let s = Scenario::from_toml(&text, &dir).unwrap();
        let out = dir.join(queue);
        let r = run_scenario_to(&s, &out, &mut |_| {}).unwrap();
        assert_eq!(r.job_states.get("completed"), Some(&4), "{queue}");
        let csv = std::fs::read_to_string(out.join("tasks.csv")).unwrap();
        let mut starts = [u64::MAX; 4];
        for row in csv.lines().skip(1) {
            let f: Vec<&str> = row.split(',').collect();
            let job: usize = f[1].parse().unwrap();
            let start: u64 = f[6].parse().unwrap();
            starts[job] = starts[job].min(start);
        }
        let expected_ms = expected.map(|s| s * 1000);
        assert_eq!(starts, expected_ms, "{queue}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[test]
fn shipped_scenarios_parse() {
    let mut n = 0;
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4);
}

#[test]
fn scenario_errors_name_the_file_field_and_line() {
    let bad = berth_sim::DEFAULT_SCENARIO_TOML.replace(
        "horizon_ms = 14_400_000",
        "horizon_ms = 14_400_000\ncolour = 3",
    );
    let e = Scenario::from_toml(&bad, Path::new(".")).unwrap_err();
    assert!(
        e.message.contains("colour") && e.message.contains("line"),
        "{e}"
    );
    let bad = berth_sim::DEFAULT_SCENARIO_TOML.replace("max_nodes = 16", "max_nodes = \"lots\"");
    let e = Scenario::from_toml(&bad, Path::new(".")).unwrap_err();
    assert_eq!(e.path, "cluster.pools[1].max_nodes", "{e}");
    let bad = berth_sim::DEFAULT_SCENARIO_TOML.replace(
        "node_loss_per_node_hour = 0.01",
        "node_loss_per_node_hour = -1.0",
    );
    let e = Scenario::from_toml(&bad, Path::new(".")).unwrap_err();
    assert_eq!(e.path, "faults.node_loss_per_node_hour");
    let bad =
        berth_sim::DEFAULT_SCENARIO_TOML.replace("placement = \"berth\"", "placement = \"bogus\"");
    let e = Scenario::from_toml(&bad, Path::new(".")).unwrap_err();
    assert_eq!(e.path, "policy.placement");
}

#[test]
fn outputs_are_written_as_csv_and_json() {
    let dir = std::env::temp_dir().join(format!("berth-sim-out-{}", std::process::id()));
    let r = run_scenario_to(&small(""), &dir, &mut |_| {}).unwrap();
    let series = std::fs::read_to_string(dir.join("series.csv")).unwrap();
    assert!(series.lines().count() > 100);
    let tasks = std::fs::read_to_string(dir.join("tasks.csv")).unwrap();
    assert_eq!(
        tasks
            .lines()
            .skip(1)
            .filter(|l| l.contains(",normal,"))
            .count() as u64,
        r.task_reasons.get("normal").copied().unwrap_or(0)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["event_log_hash"], r.event_log_hash);
    assert!(std::fs::read_to_string(dir.join("nodes.csv"))
        .unwrap()
        .contains("flex"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sweep_runs_every_variant() {
    let spec = berth_sim::SweepSpec {
        placements: vec!["best_fit".into(), "worst_fit".into()],
        rate_scales: vec![1.0, 2.0],
        ..Default::default()
    };
    let out = berth_sim::sweep(&small(""), &spec);
    assert_eq!(out.len(), 4);
    let rows: Vec<(String, SimReport)> = out.into_iter().map(|(n, r)| (n, r.unwrap())).collect();
    assert_ne!(
        rows[0].1.event_log_hash, rows[2].1.event_log_hash,
        "the policy changes the run"
    );
    let table = berth_sim::comparison_table(&rows);
    assert_eq!(table.lines().count(), 5);
}
