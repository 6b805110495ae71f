//! The FGD paper's fragmentation experiment on the real openb trace (skips when absent).

mod common;

use berth_solver::experiment::{run, summarise, ExperimentConfig};
use berth_solver::Policy;

/// Full table for the report: every policy, 10 seeds, both variants. Slow in debug.
#[test]
#[ignore = "full table: 7 policies x 10 seeds x 2 variants; run with --release -- --ignored --nocapture"]
fn full_table() {
    let Some(dir) = common::openb_dir() else {
        return;
    };
    let nodes = common::read_openb_nodes(&dir.join("openb_node_list_gpu_node.csv"));
    let policies = std::env::var("BERTH_POLICIES").unwrap_or_else(|_| {
        "random,dot_product,gpu_clustering,gpu_packing,best_fit,fgd,berth".to_string()
    });
    let seeds: u64 = std::env::var("BERTH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let variants =
        std::env::var("BERTH_VARIANTS").unwrap_or_else(|_| "default,gpuspec33".to_string());
    let cfg = ExperimentConfig::default();
    for variant in variants.split(',') {
        let mut pods = common::read_openb_pods(&dir.join(format!("openb_pod_list_{variant}.csv")));
        if std::env::var("BERTH_NOMEM").is_ok() {
            for p in &mut pods {
                p.resources.mem_mib = 0;
            }
        }
        let mut curves = Vec::new();
        for name in policies.split(',') {
            let mut p = Policy::preset(name).unwrap();
            if std::env::var("BERTH_RANDOM_TIES").is_ok() {
                p.tie_break = berth_solver::TieBreak::Random;
            }
            for seed in 0..seeds {
                curves.push(run(&nodes, &pods, &p, 42 + seed, &cfg).unwrap());
            }
        }
        let t = summarise(&curves, &cfg.checkpoints_pct);
        println!(
            "== openb {variant}: {} nodes, {} pods, {seeds} seeds ==\n{t}",
            nodes.len(),
            pods.len()
        );
        println!("{}", t.to_csv());
    }
}
