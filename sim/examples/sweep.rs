//! Times the 16-variant sweep of the `sim` bench (the default scenario cut to a quarter of its
//! horizon, 4 placements × 2 pool sizes × 2 arrival rates) on every core and on one thread, and
//! prints the median of each and their ratio (the sweep's speed-up), without criterion:
//! `cargo run --release -p berth-sim --example sweep [-- <runs>]`.

use berth_sim::{Scenario, SweepSpec};
use std::time::Instant;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("runs: not a number: {a}"))
        })
        .unwrap_or(7);
    let mut small = Scenario::default_scenario();
    small.horizon_ms /= 4;
    let grid = SweepSpec::speed_reference();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let time = |f: &dyn Fn() -> usize| {
        let mut ms: Vec<f64> = (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                assert_eq!(f(), 16, "16 variants");
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    };
    let sweep = || {
        let out = berth_sim::sweep(&small, &grid);
        for (name, r) in &out {
            if let Err(e) = r {
                panic!("{name}: {e}");
            }
        }
        out.len()
    };
    let all = time(&sweep);
    let single = time(&|| one.install(sweep));
    println!(
        "sweep of 16, median of {runs}: {all:.1} ms on {} threads, {single:.1} ms on 1: speed-up {:.2}",
        rayon::current_num_threads(),
        single / all
    );
}
