//! The users' regression gate (`berth sim gate`): a run against its own baseline passes; a
//! worse configuration fails on the figures that got worse; bad baselines and unknown figures
//! are clear errors.

use berth_sim::gate::{compare, Baseline, GateError, Verdict};
use berth_sim::{run_scenario, Scenario, SimReport};
use std::path::Path;

fn scenario(max_nodes: u32) -> Scenario {
    let text = format!(
        r#"
name = "gate"
seed = 11
horizon_ms = 10_800_000
[workload.synthetic]
seed = 5
jobs = 120
arrivals = {{ kind = "poisson", rate_per_hour = 60 }}
duration = {{ median_ms = 900_000, sigma = 0.5 }}
tasks_per_job = {{ kind = "uniform", min = 1, max = 4 }}
[[workload.synthetic.shapes]]
weight = 1
cpu_milli = 2000
mem_mib = 4096
[[cluster.pools]]
name = "flex"
instance_types = ["m5.2xlarge"]
zones = ["us-east-1a", "us-east-1b"]
max_nodes = {max_nodes}
"#
    );
    Scenario::from_toml(&text, Path::new(".")).unwrap()
}

fn run(s: &Scenario) -> SimReport {
    run_scenario(s, &mut |_| {}).unwrap()
}

#[test]
fn a_run_passes_against_its_own_baseline() {
    let r = run(&scenario(8));
    let base = Baseline::of(&r, &[]).unwrap();
    // Round trip through the file format.
    let base = Baseline::from_json(&base.to_json()).unwrap();
    let g = compare(&base, &run(&scenario(8)), 0.0).unwrap();
    assert!(g.identical_run);
    assert!(g.passed(), "{}", g.to_markdown());
    assert!(g.rows.iter().all(|r| r.verdict == Verdict::Same));
    assert!(g.rows.iter().any(|r| r.figure == "wait_ms_p99.flex"));
}

#[test]
fn a_smaller_pool_fails_on_wait_and_passes_with_a_large_tolerance_only_if_within() {
    let base = Baseline::of(
        &run(&scenario(8)),
        &["wait_ms_p99.flex".into(), "pending_tasks_max".into()],
    )
    .unwrap();
    let small = run(&scenario(2));
    let g = compare(&base, &small, 0.05).unwrap();
    assert!(!g.identical_run);
    assert!(!g.passed(), "{}", g.to_markdown());
    let wait = g
        .rows
        .iter()
        .find(|r| r.figure == "wait_ms_p99.flex")
        .unwrap();
    assert_eq!(wait.verdict, Verdict::Worse);
    assert!(wait.current.unwrap() > wait.baseline);
    let md = g.to_markdown();
    assert!(md.contains("| wait_ms_p99.flex |") && md.contains("**WORSE**") && md.contains("FAIL"));
    // The reverse direction is an improvement.
    let base_small = Baseline::of(&small, &["wait_ms_p99.flex".into()]).unwrap();
    let g = compare(&base_small, &run(&scenario(8)), 0.0).unwrap();
    assert!(g.passed());
    assert_eq!(g.rows[0].verdict, Verdict::Better);
}

#[test]
fn bad_baselines_unknown_figures_and_tolerances_are_errors() {
    let r = run(&scenario(8));
    let e = Baseline::of(&r, &["wait_p99".into()]).unwrap_err();
    assert!(matches!(e, GateError::UnknownFigure { .. }), "{e}");
    assert!(e.to_string().contains("wait_ms_p99.flex"), "{e}");
    let e = Baseline::from_json(
        r#"{"scenario":"x","seed":1,"event_log_hash":"h","figures":{"cost_usd":"cheap"}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("figures.cost_usd"), "{e}");
    let base = Baseline::of(&r, &[]).unwrap();
    assert_eq!(
        compare(&base, &r, -0.1).unwrap_err(),
        GateError::Tolerance(-0.1)
    );
}
