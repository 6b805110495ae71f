//! Runs a scenario file (or the embedded default) and prints its report with the wall time:
//! `cargo run --release -p berth-sim --example run -- sim/scenarios/wagap-2013-easy.toml`.

use berth_sim::{run_scenario, Scenario};
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
    match run_scenario(&scenario, &mut |_| {}) {
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
