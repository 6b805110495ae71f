//! Simulator speed: the embedded default scenario, and the shipped trace replays (openb 149 days,
//! wagap-2013 under EASY, Alibaba 2017 with all 11.9 M instances) when the shared traces are
//! present (`$BERTH_TRACES_DIR` or `../shared/traces`; skipped with a message otherwise), and a
//! 16-variant sweep (which runs on every core).
//!
//! `cargo bench -p berth-benches --bench sim`

use berth_sim::{run_scenario, Scenario, SweepSpec};
use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;
use std::time::Duration;

fn scenario(file: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sim/scenarios")
        .join(file);
    Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn traces_present() -> bool {
    if berth_traces::shared_traces_dir().is_some() {
        return true;
    }
    eprintln!("SKIP: shared traces not found ($BERTH_TRACES_DIR or ../shared/traces): trace replays not measured");
    false
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let default = Scenario::default_scenario();
    g.bench_function("default scenario", |b| {
        b.iter(|| run_scenario(&default, &mut |_| {}).unwrap())
    });
    let mut small = default.clone();
    small.horizon_ms /= 4;
    let grid = SweepSpec {
        placements: vec![
            "berth".into(),
            "best_fit".into(),
            "worst_fit".into(),
            "first_fit".into(),
        ],
        pool_size_factors: vec![0.5, 1.0],
        rate_scales: vec![1.0, 2.0],
        ..SweepSpec::default()
    };
    g.bench_function("sweep of 16 (default, 1 h)", |b| {
        b.iter(|| berth_sim::sweep(&small, &grid))
    });
    if traces_present() {
        for file in ["openb-replay.toml", "wagap-2013-easy.toml"] {
            let s = scenario(file);
            g.bench_function(file, |b| b.iter(|| run_scenario(&s, &mut |_| {}).unwrap()));
        }
    }
    g.finish();
    if traces_present() {
        let mut g = c.benchmark_group("sim-large");
        g.sample_size(10).measurement_time(Duration::from_secs(60));
        let s = scenario("alibaba-2017-batch.toml");
        g.bench_function("alibaba-2017-batch.toml", |b| {
            b.iter(|| run_scenario(&s, &mut |_| {}).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
