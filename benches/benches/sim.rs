//! Simulator speed: the embedded default scenario, and the shipped trace replays (openb 149 days,
//! wagap-2013 under EASY, Alibaba 2017 with all 11.9 M instances) when the shared traces are
//! present (`$BERTH_TRACES_DIR` or `../shared/traces`; skipped with a message otherwise), and a
//! 16-variant sweep on every core and on one thread (the speed-up is the ratio of the two).
//!
//! Every figure is reported as simulated events per second: the events the engine stepped the
//! controller with (`SimReport::events`), counted in one run before the timing (a run is
//! deterministic, so every iteration steps the same events).
//!
//! `cargo bench -p berth-benches --bench sim`

use berth_sim::{run_scenario, Scenario, SimReport, SweepSpec};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

/// One run of `s`, for its event count.
fn events_of(s: &Scenario) -> u64 {
    let r: SimReport = run_scenario(s, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    r.events
}

fn sweep_events(s: &Scenario, grid: &SweepSpec) -> u64 {
    berth_sim::sweep(s, grid)
        .into_iter()
        .map(|(name, r)| r.unwrap_or_else(|e| panic!("{name}: {e}")).events)
        .sum()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    // Runs take 0.1-1 s: 10 samples, and the measurement time from the command line.
    g.sample_size(10);
    let default = Scenario::default_scenario();
    g.throughput(Throughput::Elements(events_of(&default)));
    g.bench_function("default scenario", |b| {
        b.iter(|| run_scenario(&default, &mut |_| {}).unwrap())
    });
    let mut small = default.clone();
    small.horizon_ms /= 4;
    let grid = SweepSpec::speed_reference();
    g.throughput(Throughput::Elements(sweep_events(&small, &grid)));
    g.bench_function("sweep of 16 (default, 1 h)", |b| {
        b.iter(|| berth_sim::sweep(&small, &grid))
    });
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    g.bench_function("sweep of 16 (default, 1 h), 1 thread", |b| {
        b.iter(|| one.install(|| berth_sim::sweep(&small, &grid)))
    });
    if traces_present() {
        for file in ["openb-replay.toml", "wagap-2013-easy.toml"] {
            let s = scenario(file);
            g.throughput(Throughput::Elements(events_of(&s)));
            g.bench_function(file, |b| b.iter(|| run_scenario(&s, &mut |_| {}).unwrap()));
        }
    }
    g.finish();
    if traces_present() {
        let mut g = c.benchmark_group("sim-large");
        g.sample_size(10).measurement_time(Duration::from_secs(60));
        let s = scenario("alibaba-2017-batch.toml");
        g.throughput(Throughput::Elements(events_of(&s)));
        g.bench_function("alibaba-2017-batch.toml", |b| {
            b.iter(|| run_scenario(&s, &mut |_| {}).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
