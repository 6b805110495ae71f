//! Scenario files refused before any run, with the field path (pools and the names taken from
//! the instance catalogue, fault and timing names, node indexes, missing files), and the
//! workload transforms (time window, arrival-rate scale, sampling, inflation) by their effect
//! on the arrivals of a hand-written SWF log.

use berth_sim::workload::prepare;
use berth_sim::{run_scenario, Scenario};
use berth_solver::spec::SpecError;
use std::path::{Path, PathBuf};

// ----- scenario errors ------------------------------------------------------------------------

/// A valid scenario: a synthetic workload, two inline nodes and one pool; `pool` lines
/// (`key = value`) replace or add to the pool's fields, `extra` is appended to the file.
fn scenario_text(pool: &str, extra: &str) -> String {
    let mut fields: Vec<String> = [
        "instance_types = [\"m5.xlarge\"]",
        "zones = [\"us-east-1a\", \"us-east-1b\"]",
        "max_nodes = 4",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    for line in pool.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap().trim();
        fields.retain(|f| f.split('=').next().unwrap().trim() != key);
        fields.push(line.to_string());
    }
    let pool = fields.join("\n");
    format!(
        r#"
name = "checks"
horizon_ms = 3_600_000
[workload.synthetic]
seed = 1
jobs = 5
arrivals = {{ kind = "poisson", rate_per_hour = 10 }}
duration = {{ median_ms = 60_000, sigma = 0.0 }}
[[workload.synthetic.shapes]]
weight = 1
cpu_milli = 1000
mem_mib = 1024
[[cluster.node_groups]]
name = "static"
count = 2
cpu_milli = 4000
mem_mib = 16384
zone = "us-east-1a"
[[cluster.pools]]
name = "flex"
{pool}
{extra}
"#
    )
}

fn refused(pool: &str, extra: &str) -> SpecError {
    Scenario::from_toml(&scenario_text(pool, extra), Path::new("."))
        .expect_err("the scenario must be refused")
}

#[test]
fn the_base_scenario_is_valid() {
    Scenario::from_toml(&scenario_text("", ""), Path::new(".")).unwrap();
}

#[test]
fn pool_errors_name_the_cluster_pools_path() {
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "instance_types = [\"m5.xlarge\", \"m5.huge\"]",
            "",
            "cluster.pools[0].instance_types[1]",
            "m5.huge",
        ),
        (
            "zones = [\"us-east-1a\", \"eu-west-1b\"]",
            "",
            "cluster.pools[0].zones[1]",
            "eu-west-1b",
        ),
        ("min_nodes = 5", "", "cluster.pools[0].max_nodes", "5 / 4"),
        (
            "idle_nodes_min = 2",
            "",
            "cluster.pools[0].idle_nodes_max",
            "idle_nodes_min (2)",
        ),
        ("zone_max_skew = 0", "", "cluster.pools[0].zone_max_skew", ""),
        (
            "",
            "[[cluster.pools]]\nname = \"flex\"\ninstance_types = [\"m5.large\"]\nzones = [\"us-east-1a\"]\nmax_nodes = 1",
            "cluster.pools[1].name",
            "duplicate",
        ),
        (
            "",
            "[policy.autoscale]\ninterval_ms = 0",
            "policy.autoscale.interval_ms",
            "",
        ),
    ];
    for (pool, extra, path, words) in cases {
        let e = refused(pool, extra);
        assert_eq!(e.path, path, "{pool} {extra}: {e}");
        assert!(e.message.contains(words), "{e}");
    }
}

#[test]
fn pool_errors_come_before_any_file_is_read() {
    // The trace does not exist: the pool error is the one reported, at load time.
    let text = r#"
horizon_ms = 3_600_000
[workload.trace]
path = "no/such/trace.swf"
[cluster]
from_workload = true
[[cluster.pools]]
name = "flex"
instance_types = ["m5.huge"]
zones = ["us-east-1a"]
max_nodes = 4
"#;
    let e = Scenario::from_toml(text, Path::new(".")).unwrap_err();
    assert_eq!(e.path, "cluster.pools[0].instance_types[0]", "{e}");
}

#[test]
fn fault_and_timing_names_are_checked_against_the_catalogue() {
    let outage = |t: &str, z: &str| {
        format!(
            "[[faults.insufficient_capacity]]\ninstance_type = \"{t}\"\nzone = \"{z}\"\nfrom_ms = 0\nto_ms = 1000"
        )
    };
    let e = refused("", &outage("m5.huge", "us-east-1a"));
    assert_eq!(
        e.path, "faults.insufficient_capacity[0].instance_type",
        "{e}"
    );
    let e = refused("", &outage("m5.xlarge", "us-east-9"));
    assert_eq!(e.path, "faults.insufficient_capacity[0].zone", "{e}");
    // Known type, but no pool launches it there: the outage could not happen.
    let e = refused("", &outage("m5.2xlarge", "us-east-1a"));
    assert_eq!(e.path, "faults.insufficient_capacity[0]", "{e}");
    assert!(e.message.contains("no pool"), "{e}");
    let e = refused("", &outage("m5.xlarge", "us-east-1c"));
    assert_eq!(e.path, "faults.insufficient_capacity[0]", "{e}");
    Scenario::from_toml(
        &scenario_text("", &outage("m5.xlarge", "us-east-1b")),
        Path::new("."),
    )
    .unwrap();

    let e = refused(
        "",
        "[timing.provisioning_by_type]\n\"m5.huge\" = { median_ms = 1000 }",
    );
    assert_eq!(e.path, "timing.provisioning_by_type.m5.huge", "{e}");
    // A negative sigma used to reach the engine and panic there.
    let e = refused(
        "",
        "[timing]\nprovisioning = { median_ms = 1000, sigma = -0.5 }",
    );
    assert_eq!(e.path, "timing.provisioning.sigma", "{e}");
    let e = refused(
        "",
        "[timing.provisioning_by_type]\n\"m5.xlarge\" = { median_ms = 1000, sigma = -1.0 }",
    );
    assert_eq!(e.path, "timing.provisioning_by_type.m5.xlarge.sigma", "{e}");
}

#[test]
fn node_loss_at_names_an_existing_static_node() {
    let loss = |n: u32| format!("[[faults.node_loss_at]]\nat_ms = 1000\nnode = {n}");
    // Two inline nodes: 0 and 1.
    Scenario::from_toml(&scenario_text("", &loss(1)), Path::new(".")).unwrap();
    let e = refused("", &loss(2));
    assert_eq!(e.path, "faults.node_loss_at[0].node", "{e}");
    assert!(e.message.contains("has 2"), "{e}");

    // Nodes from the workload's machines file (4 nodes) are known when the run reads it: the
    // run refuses at its start instead of dropping the fault.
    let dir = swf_dir("node-loss", &[(0, 10)], 4);
    let text = |n: u32| format!("{}\n{}", swf_scenario(""), loss(n));
    let ok = Scenario::from_toml(&text(3), &dir).unwrap();
    let r = run_scenario(&ok, &mut |_| {}).unwrap();
    assert_eq!(r.faults.nodes_lost, 1);
    let s = Scenario::from_toml(&text(4), &dir).unwrap();
    match run_scenario(&s, &mut |_| {}) {
        Err(berth_sim::SimError::Scenario(e)) => {
            assert_eq!(e.path, "faults.node_loss_at[0].node", "{e}");
            assert!(e.message.contains("has 4"), "{e}");
        }
        other => panic!("expected a scenario error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_files_are_named_with_their_field() {
    let dir = swf_dir("missing", &[(0, 10)], 1);
    let run_err = |text: &str| {
        let s = Scenario::from_toml(text, &dir).unwrap();
        assert!(s.check_files().is_err());
        match run_scenario(&s, &mut |_| {}) {
            Err(berth_sim::SimError::Scenario(e)) => e,
            other => panic!("expected a scenario error, got {other:?}"),
        }
    };
    let text = swf_scenario("").replace("tiny.swf", "absent.swf");
    let e = run_err(&text);
    assert_eq!(e.path, "workload.trace.path", "{e}");
    assert!(
        e.message
            .contains(&dir.join("absent.swf").display().to_string()),
        "{e}"
    );
    // The trace exists, the node list does not: refused before the trace is read.
    let text = swf_scenario("").replace("from_workload = true", "nodes_file = \"absent.machines\"");
    let e = run_err(&text);
    assert_eq!(e.path, "cluster.nodes_file", "{e}");
    assert!(e.message.contains("absent.machines"), "{e}");
    let text = swf_scenario("").replace("tiny.swf", "$BERTH_TRACES_DIR/no-such/trace.swf");
    let e = run_err(&text);
    assert_eq!(e.path, "workload.trace.path", "{e}");
    assert!(e.message.contains("BERTH_TRACES_DIR"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ----- workload transforms ----------------------------------------------------------------------

/// A folder with `tiny.swf` (one 1-processor job per `(submit_s, run_s)`) and its machines
/// file of `machines` 4-processor nodes.
fn swf_dir(name: &str, jobs: &[(u64, u64)], machines: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-sim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut swf = String::from("; hand-written log\n");
    for (i, (submit, run)) in jobs.iter().enumerate() {
        swf.push_str(&format!(
            "{} {submit} -1 {run} 1 -1 -1 1 {run} -1 1 1 1 1 1 1 -1 -1\n",
            i + 1
        ));
    }
    std::fs::write(dir.join("tiny.swf"), swf).unwrap();
    std::fs::write(
        dir.join("tiny.swf.machines"),
        format!("0 m {machines} 4 1 8388608\n"),
    )
    .unwrap();
    dir
}

fn swf_scenario(workload: &str) -> String {
    format!(
        r#"
name = "transforms"
horizon_ms = 100_000_000
[workload.trace]
path = "tiny.swf"
format = "swf"
[workload]
{workload}
[cluster]
from_workload = true
"#
    )
}

/// The submission times (ms) of the prepared arrivals.
fn arrivals(dir: &Path, workload: &str) -> Vec<u64> {
    let s = Scenario::from_toml(&swf_scenario(workload), dir).unwrap();
    let p = prepare(&s).unwrap();
    let t: Vec<u64> = p.jobs.iter().map(|j| j.submit_ms).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "sorted by submission");
    t
}

/// One job every 10 s from 0 to 9,990 s.
fn every_ten_seconds(name: &str) -> PathBuf {
    let jobs: Vec<(u64, u64)> = (0..1000).map(|i| (10 * i, 30)).collect();
    swf_dir(name, &jobs, 2)
}

#[test]
fn time_window_keeps_only_arrivals_inside_shifted_to_zero() {
    let dir = every_ten_seconds("window");
    let all = arrivals(&dir, "");
    assert_eq!(all.len(), 1000);
    // [200 s, 500 s): submissions 200, 210, ..., 490 s, shifted to 0, ..., 290 s.
    let w = arrivals(&dir, "window = { from_ms = 200_000, to_ms = 500_000 }");
    let expected: Vec<u64> = (0..30).map(|i| i * 10_000).collect();
    assert_eq!(w, expected);
    // A window between two arrivals keeps nothing.
    assert!(arrivals(&dir, "window = { from_ms = 1_000, to_ms = 9_000 }").is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rate_scale_two_halves_inter_arrival_times_and_doubles_arrivals_per_hour() {
    let dir = every_ten_seconds("rate");
    let base = arrivals(&dir, "");
    let fast = arrivals(&dir, "rate_scale = 2.0");
    assert_eq!(fast.len(), base.len(), "the same jobs");
    for (b, f) in base.iter().zip(&fast) {
        assert_eq!(*f, b / 2, "every submission at half the time");
    }
    let in_first_hour = |t: &[u64]| t.iter().filter(|&&x| x < 3_600_000).count();
    assert_eq!(in_first_hour(&base), 360);
    assert_eq!(in_first_hour(&fast), 720);
    let slow = arrivals(&dir, "rate_scale = 0.5");
    assert_eq!(slow[1] - slow[0], 20_000, "half the rate: twice the gap");
    // Window first (trace time), then the scale.
    let wf = arrivals(
        &dir,
        "rate_scale = 2.0\nwindow = { from_ms = 200_000, to_ms = 500_000 }",
    );
    let expected: Vec<u64> = (0..30).map(|i| i * 5_000).collect();
    assert_eq!(wf, expected);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sampling_keeps_roughly_the_fraction_and_is_seeded() {
    let dir = every_ten_seconds("sample");
    let base = arrivals(&dir, "");
    let kept = arrivals(&dir, "sample = 0.3");
    // Binomial(1000, 0.3): mean 300, standard deviation 14.5; 250..350 is beyond 3 sd.
    assert!((250..=350).contains(&kept.len()), "{}", kept.len());
    assert!(
        kept.iter().all(|t| base.contains(t)),
        "sampling drops jobs, it does not move them"
    );
    assert_eq!(kept, arrivals(&dir, "sample = 0.3"), "same seed, same jobs");
    let s = |seed: u64| {
        let mut s = Scenario::from_toml(&swf_scenario("sample = 0.3"), &dir).unwrap();
        s.seed = seed;
        prepare(&s)
            .unwrap()
            .jobs
            .iter()
            .map(|j| j.submit_ms)
            .collect::<Vec<_>>()
    };
    assert_ne!(s(1), s(2), "another seed keeps other jobs");
    assert_eq!(arrivals(&dir, "sample = 1.0").len(), 1000);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inflation_adds_offset_copies_of_every_job() {
    let dir = swf_dir("inflation", &[(0, 10), (100, 10), (250, 10)], 1);
    let t = arrivals(&dir, "inflation = 3\ninflation_offset_ms = 1_000");
    assert_eq!(
        t,
        vec![0, 1_000, 2_000, 100_000, 101_000, 102_000, 250_000, 251_000, 252_000]
    );
    let s = Scenario::from_toml(&swf_scenario("inflation = 3"), &dir).unwrap();
    let p = prepare(&s).unwrap();
    assert_eq!(
        p.jobs.len(),
        9,
        "three copies, offset 0: all at the original times"
    );
    let mut ids: Vec<u64> = p.jobs.iter().map(|j| j.id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 9, "each copy is its own job");
    // The copies run: three times the tasks of one copy.
    let one = run_scenario(
        &Scenario::from_toml(&swf_scenario(""), &dir).unwrap(),
        &mut |_| {},
    )
    .unwrap();
    let three = run_scenario(&s, &mut |_| {}).unwrap();
    assert_eq!(three.tasks_started, 3 * one.tasks_started);
    std::fs::remove_dir_all(&dir).ok();
}
