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

#[test]
fn the_html_report_draws_the_run_folder() {
    let dir = temp("html");
    let r = run_scenario_to(&short(), &dir, &mut |_| {}).unwrap();
    let d = RunData::load(&dir).unwrap();
    let series = CsvTable::read(&dir.join("series.csv")).unwrap();
    assert_eq!(d.series.len(), series.rows.len());
    assert!(!d.nodes.is_empty());
    // The CDF is drawn from the same first-attempt waits as the report's percentiles.
    for (tier, f) in &r.tiers {
        let w = d.waits_ms.get(tier).map_or(&[][..], Vec::as_slice);
        assert_eq!(w.len() as u64, f.tasks_started, "tier {tier}");
        assert_eq!(w.last().copied(), f.wait_ms_max, "tier {tier}");
    }
    let html = render(&r, &d);
    assert!(html.starts_with("<!DOCTYPE html>"));
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
    for name in ["series", "nodes", "tasks"] {
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
