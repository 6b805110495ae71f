//! Runs a scenario file (or the embedded default) and prints its report with the wall time:
//! `cargo run --release -p berth-sim --example run -- sim/scenarios/wagap-2013-easy.toml [OUT_DIR]`
//! (with `OUT_DIR`, the run's CSV files are written there, as `berth sim run --out` does).

use berth_sim::{run_scenario, run_scenario_to, Scenario};
use std::time::Instant;

fn main() {
    let scenario = match std::env::args().nth(1) {
        Some(p) => match Scenario::load(std::path::Path::new(&p)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        None => Scenario::default_scenario(),
    };
    let t0 = Instant::now();
    let result = match std::env::args().nth(2) {
        Some(dir) => {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                eprintln!("{dir}: {e}");
                std::process::exit(2);
            }
            run_scenario_to(&scenario, std::path::Path::new(&dir), &mut |_| {})
        }
        None => run_scenario(&scenario, &mut |_| {}),
    };
    match result {
        Ok(r) => {
            print!("{}", r.render_table());
            println!("wall time: {:.3} s", t0.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
