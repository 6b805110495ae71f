//! The `berth` binary as a user runs it: trace stats, help texts, the users' SLA gate and the
//! pool planner. Expected figures are computed here from the sample files themselves, not
//! copied from an earlier run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the berth binary runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "berth failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Sum of one comma-separated column over the data lines of a CSV sample (header skipped).
fn csv_column_sum(path: &str, column: usize) -> u64 {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .nth(column)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn trace_stats_detects_each_sample_format_and_counts_what_the_file_holds() {
    // Alibaba 2017: one row is `number_of_instances` instances.
    let a = json(&berth(&[
        "trace",
        "stats",
        "traces/samples/batch_task_sample.csv",
        "--json",
    ]));
    assert_eq!(
        a["instances"].as_u64().unwrap(),
        csv_column_sum("traces/samples/batch_task_sample.csv", 4)
    );
    let rows = std::fs::read_to_string(repo().join("traces/samples/batch_task_sample.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .count() as u64;
    assert_eq!(a["task_groups"].as_u64().unwrap(), rows);

    // openb pods: one pod is one task; GPU milli of whole-GPU pods is num_gpu × 1000.
    let p = json(&berth(&[
        "trace",
        "stats",
        "traces/samples/openb_pod_list_sample.csv",
        "--json",
    ]));
    let text =
        std::fs::read_to_string(repo().join("traces/samples/openb_pod_list_sample.csv")).unwrap();
    let mut pods = 0;
    let mut gpu_milli = 0;
    for l in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        pods += 1;
        let num_gpu: u64 = f[3].parse().unwrap();
        let share: u64 = f[4].parse().unwrap();
        gpu_milli += if num_gpu == 1 { share } else { num_gpu * 1000 };
    }
    assert_eq!(p["instances"].as_u64().unwrap(), pods);
    assert_eq!(p["gpu_milli_requested"].as_u64().unwrap(), gpu_milli);

    // SWF, plain and gzip: the same jobs.
    let plain = json(&berth(&[
        "trace",
        "stats",
        "traces/samples/sample.swf",
        "--json",
    ]));
    let gz = json(&berth(&[
        "trace",
        "stats",
        "traces/samples/sample.swf.gz",
        "--format",
        "swf",
        "--json",
    ]));
    let swf_jobs = std::fs::read_to_string(repo().join("traces/samples/sample.swf"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with(';') && !l.trim().is_empty())
        .count() as u64;
    assert_eq!(plain["jobs"].as_u64().unwrap(), swf_jobs);
    assert_eq!(plain["instances"], gz["instances"]);
    assert_eq!(plain["requested"], gz["requested"]);
}

#[test]
fn trace_stats_prints_a_table_by_default() {
    let o = berth(&["trace", "stats", "traces/samples/sample.swf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for word in ["jobs", "instances"] {
        assert!(out.contains(word), "no `{word}` in the table:\n{out}");
    }
}

#[test]
fn a_malformed_line_stops_the_import_with_file_and_line_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.swf");
    let good = "     1      0      5   3600      8   3500 102400      8   7200 204800      1      1      1      1      1      1     -1     -1\n";
    std::fs::write(
        &path,
        format!("; a header comment\n{good}     2   zero-thirty\n{good}"),
    )
    .unwrap();
    let p = path.to_str().unwrap();

    let stop = berth(&["trace", "stats", p, "--format", "swf"]);
    assert!(!stop.status.success(), "a bad line must stop the import");
    let err = stderr(&stop);
    assert!(
        err.contains(&format!("{p}:3")),
        "the error names file:line: {err}"
    );

    let skip = json(&berth(&[
        "trace",
        "stats",
        p,
        "--format",
        "swf",
        "--skip-bad",
        "--json",
    ]));
    assert_eq!(skip["skipped_lines"].as_u64().unwrap(), 1);
    assert_eq!(skip["jobs"].as_u64().unwrap(), 2);
}

#[test]
fn an_unknown_format_is_refused_with_the_names_it_takes() {
    let o = berth(&[
        "trace",
        "stats",
        "traces/samples/sample.swf",
        "--format",
        "pbs",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("unknown --format") && err.contains("swf"),
        "{err}"
    );
}

#[test]
fn every_subcommand_has_help_with_examples() {
    let top = berth(&["--help"]);
    assert!(top.status.success());
    let mut leaves = vec![
        vec!["trace", "stats"],
        vec!["sim", "run"],
        vec!["sim", "sweep"],
        vec!["sim", "gate"],
        vec!["solve", "frag"],
        vec!["solve", "place"],
        vec!["pool", "plan"],
    ];
    if cfg!(feature = "runtime") {
        leaves.extend([vec!["serve"], vec!["agent"], vec!["job", "submit"]]);
    }
    for leaf in leaves {
        let mut args = leaf.clone();
        args.push("--help");
        let o = berth(&args);
        assert!(o.status.success(), "{leaf:?} --help: {}", stderr(&o));
        assert!(
            stdout(&o).contains("Examples:"),
            "{leaf:?} --help has no examples:\n{}",
            stdout(&o)
        );
    }
}

/// A small, fast scenario for the gate: a short synthetic workload on two fixed nodes.
const GATE_SCENARIO: &str = r#"
name = "capacity"
seed = 3
horizon_ms = 3_600_000

[cluster]
nodes = [
  { name = "a", zone = "z1", cpu_milli = 8000, mem_mib = 32768 },
  { name = "b", zone = "z2", cpu_milli = 8000, mem_mib = 32768 },
]

[workload.synthetic]
seed = 5
jobs = 40
arrivals = { kind = "poisson", rate_per_hour = 60 }
duration = { median_ms = 300_000, sigma = 0.5 }

[[workload.synthetic.shapes]]
weight = 1
cpu_milli = 1000
mem_mib = 2048
"#;

#[test]
fn sim_gate_passes_an_identical_run_and_fails_a_worse_one() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("capacity.toml");
    std::fs::write(&scenario, GATE_SCENARIO).unwrap();
    let baseline = dir.path().join("capacity.baseline.json");
    let (s, b) = (scenario.to_str().unwrap(), baseline.to_str().unwrap());

    let rec = berth(&[
        "sim",
        "gate",
        s,
        "--baseline",
        b,
        "--update-baseline",
        "--figures",
        "wait_ms_p99.flex,tasks_started,cpu_alloc_mean",
    ]);
    assert!(rec.status.success(), "{}", stderr(&rec));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    let text = written.to_string();
    for f in ["wait_ms_p99.flex", "tasks_started", "cpu_alloc_mean"] {
        assert!(text.contains(f), "baseline lacks {f}: {text}");
    }
    assert!(
        !text.contains("cost_usd_per_day"),
        "only the chosen figures: {text}"
    );

    let same = berth(&["sim", "gate", s, "--baseline", b]);
    assert_eq!(same.status.code(), Some(0), "{}", stdout(&same));
    assert!(stdout(&same).contains("| figure"), "{}", stdout(&same));

    // A baseline that started more tasks than this run does: the run is worse.
    let mut v = written.clone();
    let started = v["figures"]["tasks_started"].as_f64().unwrap();
    v["figures"]["tasks_started"] = serde_json::json!(started + 1000.0);
    std::fs::write(&baseline, v.to_string()).unwrap();
    let worse = berth(&["sim", "gate", s, "--baseline", b, "--tolerance", "5%"]);
    assert_eq!(worse.status.code(), Some(1), "{}", stdout(&worse));
    assert!(
        stdout(&worse).contains("tasks_started"),
        "{}",
        stdout(&worse)
    );

    // An unreadable tolerance is an error (exit 2), not a pass.
    let bad = berth(&["sim", "gate", s, "--baseline", b, "--tolerance", "five"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn pool_plan_buys_enough_for_the_demand_and_prices_it() {
    let dir = tempfile::tempdir().unwrap();
    let demand = dir.path().join("demand.toml");
    std::fs::write(
        &demand,
        "zones = [\"us-east-1a\", \"us-east-1b\"]\n\
         [[demand]]\ncount = 10\ntask = { cpu_milli = 1500, mem_mib = 6000 }\n",
    )
    .unwrap();
    let o = berth(&["pool", "plan", "--demand", demand.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("$/h"), "{out}");
    assert!(out.contains("instances,"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[demand]]\ncount = \"ten\"\n").unwrap();
    let o = berth(&["pool", "plan", "--demand", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("demand"), "{}", stderr(&o));
}

#[test]
fn solve_place_shows_where_tasks_go_why_others_cannot_and_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    // Four 8-core nodes over two zones, two of them with two T4 GPUs.
    let cluster = w(
        "cluster.toml",
        r#"
[[nodes]]
name = "cpu-a"
cpu_milli = 8000
mem_mib = 32768
zone = "a"
[[nodes]]
name = "cpu-b"
cpu_milli = 8000
mem_mib = 32768
zone = "b"
[[nodes]]
name = "gpu"
count = 2
cpu_milli = 8000
mem_mib = 32768
zone = "a"
gpus = { count = 2, model = "T4" }
"#,
    );
    // Six 3-core tasks: two per node, so three nodes at least (the CPU bound says 18/8 → 3).
    let web = w(
        "web.toml",
        "name = \"web\"\n[batch]\nsize = 6\n[task]\ncpu_milli = 3000\nmem_mib = 1024\n",
    );
    // Four GPUs each: no node has more than two.
    let big = w(
        "big.toml",
        "name = \"big\"\n[batch]\nsize = 1\n[task]\ncpu_milli = 1000\nmem_mib = 1024\ngpu = { whole = 4 }\n",
    );
    let o = berth(&[
        "solve",
        "place",
        "--cluster",
        &cluster,
        "--jobs",
        &format!("{web},{big}"),
        "--policy",
        "best_fit",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["tasks"], 7);
    assert_eq!(v["placed"], 6);
    assert_eq!(v["nodes_used"], 3, "best fit packs two per node: {v}");
    assert_eq!(v["nodes_lower_bound"], 3);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["placed"], 6);
    assert_eq!(jobs[1]["placed"], 0);
    let why = jobs[1]["unplaced_reasons"].as_str().unwrap();
    // The two CPU-only nodes have no GPU of any model; the two GPU nodes have two, not four.
    assert_eq!(why, "2 nodes: gpu model mismatch; 2: insufficient gpu");

    let table = berth(&["solve", "place", "--cluster", &cluster, "--jobs", &web]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(
        stdout(&table).contains("nodes used vs lower bound: "),
        "{}",
        stdout(&table)
    );

    // A wrong job spec names the file and the field.
    let bad = w(
        "bad.toml",
        "name = \"bad\"\n[batch]\nsize = \"six\"\n[task]\ncpu_milli = 1\nmem_mib = 1\n",
    );
    let o = berth(&["solve", "place", "--cluster", &cluster, "--jobs", &bad]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.toml") && err.contains("batch.size"),
        "{err}"
    );
}
