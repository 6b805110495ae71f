//! What a run leaves for planners: the Parquet copies of the CSVs (feature `parquet`), the HTML
//! report built from a run's folder, and a sweep's per-variant folders with its summary table.

use berth_sim::html::{render, RunData};
use berth_sim::tables::CsvTable;
use berth_sim::{run_scenario, run_scenario_to, Scenario, SweepSpec};
use std::path::PathBuf;

/// The bundled default, cut to one simulated hour.
fn short() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.horizon_ms = 3_600_000;
    s
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-sim-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

#[test]
fn writing_outputs_does_not_change_the_run() {
    let dir = temp("same-run");
    let a = run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    let b = run_scenario(&short(), &mut |_| {}).unwrap();
    assert_eq!(a.event_log_hash, b.event_log_hash);
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).ok();
}

/// Every pool at every sample, in the same order, and each figure of `series.csv` is the sum
/// of its pools' figures at that sample.
fn assert_pools_split_the_series(dir: &std::path::Path) -> Vec<String> {
    let series = CsvTable::read(&dir.join("series.csv")).unwrap();
    let pools = CsvTable::read(&dir.join("pools.csv")).unwrap();
    let names: Vec<&str> = berth_sim::tables::POOLS_COLUMNS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(pools.header, names);
    let (pt, pp) = (pools.col("t_ms").unwrap(), pools.col("pool").unwrap());
    let st = series.col("t_ms").unwrap();
    let n_pools = pools.rows.len() / series.rows.len();
    assert_eq!(pools.rows.len(), n_pools * series.rows.len());
    let order: Vec<String> = pools.rows[..n_pools]
        .iter()
        .map(|r| r[pp].clone())
        .collect();
    for (i, r) in pools.rows.iter().enumerate() {
        assert_eq!(r[pp], order[i % n_pools], "pool order, row {i}");
        assert_eq!(r[pt], series.rows[i / n_pools][st], "sample time, row {i}");
    }
    // (The last two samples can share a time: the horizon's sample and the closing one.)
    for col in &names[2..] {
        let (c, sc) = (pools.col(col).unwrap(), series.col(col).unwrap());
        for (i, r) in series.rows.iter().enumerate() {
            let sum: u64 = pools.rows[i * n_pools..(i + 1) * n_pools]
                .iter()
                .map(|p| p[c].parse::<u64>().unwrap())
                .sum();
            assert_eq!(sum.to_string(), r[sc], "{col} at sample {i}");
        }
    }
    order
}

#[test]
fn pools_split_the_series_at_every_sample() {
    let dir = temp("pools");
    run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    let order = assert_pools_split_the_series(&dir);
    assert_eq!(order, ["critical", "cpu", "gpu"]);
    // Something waited and ran in the hour, in more than one pool (the short run is busy
    // enough): the per-pool figures are not all in one row.
    let pools = CsvTable::read(&dir.join("pools.csv")).unwrap();
    let (pool, pending, used) = (
        pools.col("pool").unwrap(),
        pools.col("pending_tasks").unwrap(),
        pools.col("cpu_used_milli").unwrap(),
    );
    let busy = |c: usize| {
        let mut names: Vec<&str> = pools
            .rows
            .iter()
            .filter(|r| r[c] != "0")
            .map(|r| r[pool].as_str())
            .collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        names
    };
    assert!(busy(pending).len() >= 2, "pending in {:?}", busy(pending));
    assert_eq!(busy(used), ["cpu", "critical", "gpu"]);
    // The cpu pool has no GPU instance type.
    let (gcap, gpool) = (pools.col("gpu_capacity_milli").unwrap(), pool);
    assert!(pools
        .rows
        .iter()
        .filter(|r| r[gpool] == "cpu")
        .all(|r| r[gcap] == "0"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn static_nodes_outside_the_pools_have_their_own_row() {
    let dir = temp("pools-static");
    let mut s = short();
    // Two nodes without a pool attribute: no tier may use them (the tiers' pools are derived
    // from the configured pools), so they are capacity without allocation.
    s.cluster.node_groups.push(berth_solver::spec::NodeEntry {
        name: "spare".into(),
        count: 2,
        cpu_milli: 16_000,
        mem_mib: 65_536,
        disk_mib: 0,
        net_mbps: 0,
        gpus: None,
        zone: "us-east-1a".into(),
        instance_type: String::new(),
        pool: String::new(),
        labels: Default::default(),
    });
    run_scenario_to(&s, &dir, &mut |_| {}).unwrap();
    let order = assert_pools_split_the_series(&dir);
    assert_eq!(
        order,
        ["critical", "cpu", "gpu", berth_sim::metrics::NO_POOL]
    );
    let pools = CsvTable::read(&dir.join("pools.csv")).unwrap();
    let (pool, nodes, cap, alloc) = (
        pools.col("pool").unwrap(),
        pools.col("nodes").unwrap(),
        pools.col("cpu_capacity_milli").unwrap(),
        pools.col("cpu_alloc_milli").unwrap(),
    );
    for r in pools
        .rows
        .iter()
        .filter(|r| r[pool] == berth_sim::metrics::NO_POOL)
    {
        assert_eq!((r[nodes].as_str(), r[cap].as_str()), ("2", "32000"));
        assert_eq!(r[alloc], "0");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_summary_slowdowns_are_the_means_of_the_task_rows() {
    let dir = temp("slowdown");
    let r = run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    let tasks = CsvTable::read(&dir.join("tasks.csv")).unwrap();
    let mean = |col: &str| {
        let c = tasks.col(col).unwrap();
        let v: Vec<f64> = tasks
            .rows
            .iter()
            .filter(|r| !r[c].is_empty())
            .map(|r| r[c].parse().unwrap())
            .collect();
        assert!(!v.is_empty(), "{col}");
        v.iter().sum::<f64>() / v.len() as f64
    };
    // The rows print 4 decimals.
    assert!((r.slowdown_mean - mean("slowdown")).abs() < 1e-3);
    assert!((r.bounded_slowdown_mean - mean("bounded_slowdown")).abs() < 1e-3);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_html_report_draws_the_run_folder() {
    let dir = temp("html");
    let r = run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    let d = RunData::load(&dir).unwrap();
    let series = CsvTable::read(&dir.join("series.csv")).unwrap();
    assert_eq!(d.series.len(), series.rows.len());
    assert!(!d.nodes.is_empty());
    let pools = CsvTable::read(&dir.join("pools.csv")).unwrap();
    assert_eq!(d.pools.len(), pools.rows.len());
    assert_eq!(d.pools[0].pool, "critical");
    // The CDF is drawn from the same first-attempt waits as the report's percentiles.
    for (tier, f) in &r.tiers {
        let w = d.waits_ms.get(tier).map_or(&[][..], Vec::as_slice);
        assert_eq!(w.len() as u64, f.tasks_started, "tier {tier}");
        assert_eq!(w.last().copied(), f.wait_ms_max, "tier {tier}");
    }
    let html = render(&r, &d);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("Pending tasks per pool"));
    assert!(html.contains("gpu allocated"));
    assert!(html.contains(&r.event_log_hash));
    assert!(!html.contains("<script"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sweep_writes_one_folder_per_variant_and_a_summary() {
    let dir = temp("sweep-out");
    let spec = SweepSpec {
        placements: vec!["best_fit".into(), "fgd".into()],
        pool_size_factors: vec![0.5, 1.0],
        ..Default::default()
    };
    let out = berth_sim::sweep_to(&short(), &spec, &dir).unwrap();
    assert_eq!(out.len(), 4);
    let t = CsvTable::read(&dir.join("sweep.csv")).unwrap();
    assert_eq!(t.rows.len(), 4);
    let (vdir, place, factor, cost) = (
        t.col("dir").unwrap(),
        t.col("placement").unwrap(),
        t.col("pool_size_factor").unwrap(),
        t.col("cost_usd").unwrap(),
    );
    assert_eq!(t.rows[0][place], "best_fit");
    assert_eq!(t.rows[3][place], "fgd");
    assert_eq!(t.rows[1][factor], "1");
    assert!(!t.rows[0][cost].is_empty());
    for ((name, r), row) in out.iter().zip(&t.rows) {
        let r = r.as_ref().unwrap();
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(&row[vdir]).join("report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["event_log_hash"], r.event_log_hash, "{name}");
    }
    // The sweep's runs are the plain sweep's runs.
    let plain = berth_sim::sweep(&short(), &spec);
    for ((_, a), (_, b)) in out.iter().zip(&plain) {
        assert_eq!(
            a.as_ref().unwrap().event_log_hash,
            b.as_ref().unwrap().event_log_hash
        );
    }
    assert_eq!(
        berth_sim::sweep::variant_dir(7, "fgd / pools x0.5 / rate x2"),
        "007-fgd_pools_x0.5_rate_x2"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Same values in the Parquet file as in the CSV, column by column (integers exactly, doubles
/// to the CSV's printed precision, empty fields as nulls).
#[cfg(feature = "parquet")]
fn assert_same(csv: &CsvTable, pq: &CsvTable, what: &str) {
    assert_eq!(csv.header, pq.header, "{what}: columns");
    assert_eq!(csv.rows.len(), pq.rows.len(), "{what}: rows");
    for (n, (a, b)) in csv.rows.iter().zip(&pq.rows).enumerate() {
        assert_eq!(a.len(), b.len(), "{what} row {n}");
        for (x, y) in a.iter().zip(b) {
            if x == y {
                continue;
            }
            let (fx, fy) = (x.parse::<f64>(), y.parse::<f64>());
            assert!(
                matches!((fx, fy), (Ok(fx), Ok(fy)) if fx == fy),
                "{what} row {n}: csv `{x}` parquet `{y}`"
            );
        }
    }
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_files_hold_the_csv_tables() {
    let dir = temp("parquet");
    run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    for name in ["series", "nodes", "pools", "tasks"] {
        let csv = CsvTable::read(&dir.join(format!("{name}.csv"))).unwrap();
        let pq = berth_sim::tables::read_parquet(&dir.join(format!("{name}.parquet"))).unwrap();
        assert!(!csv.rows.is_empty(), "{name} is empty");
        assert_same(&csv, &pq, name);
    }
    // Open tasks (empty fields) come back as nulls.
    let tasks = berth_sim::tables::read_parquet(&dir.join("tasks.parquet")).unwrap();
    let reason = tasks.col("reason").unwrap();
    assert!(tasks.rows.iter().all(|r| !r[reason].is_empty()));
    let spec = SweepSpec {
        rate_scales: vec![1.0, 2.0],
        ..Default::default()
    };
    let sweep_dir = dir.join("sweep");
    berth_sim::sweep_to(&short(), &spec, &sweep_dir).unwrap();
    assert_same(
        &CsvTable::read(&sweep_dir.join("sweep.csv")).unwrap(),
        &berth_sim::tables::read_parquet(&sweep_dir.join("sweep.parquet")).unwrap(),
        "sweep",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(not(feature = "parquet"))]
#[test]
fn without_the_parquet_feature_only_csv_is_written() {
    const { assert!(!berth_sim::WRITES_PARQUET) };
    let dir = temp("no-parquet");
    run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    assert!(dir.join("series.csv").exists());
    assert!(!dir.join("series.parquet").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(feature = "parquet")]
#[test]
fn without_per_task_rows_there_is_no_tasks_table_and_the_run_still_writes() {
    let mut s = short();
    s.metrics.per_task = false;
    let dir = temp("no-tasks");
    run_scenario_to(&s, &dir, &mut |_| {}).expect("a run without per-task rows writes");
    assert!(!dir.join("tasks.csv").exists() && !dir.join("tasks.parquet").exists());
    for t in ["series", "nodes", "pools"] {
        assert!(dir.join(format!("{t}.parquet")).exists(), "{t}.parquet");
    }
    std::fs::remove_dir_all(&dir).ok();
}
