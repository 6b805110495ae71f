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
            // A preset name, or a policy TOML file (for trying variants without rebuilding).
            let mut p = if name.ends_with(".toml") {
                let text = std::fs::read_to_string(name).unwrap();
                let mut p = Policy::from_toml(&text).unwrap();
                if p.name.is_empty() {
                    p.name = name.to_string();
                }
                p
            } else {
                Policy::preset(name).unwrap()
            };
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

/// The paper's FGD figure at 100 % arrived (GPU allocation, percent, mean of 10 seeds).
const PAPER_FGD_ALLOC_PCT: f64 = 95.23;

/// One run of `policy` on seed 42 of the real trace: GPU allocation (percent) at 100 % arrived.
fn alloc_at_100(policy: &str) -> Option<f64> {
    let dir = common::openb_dir()?;
    let nodes = common::read_openb_nodes(&dir.join("openb_node_list_gpu_node.csv"));
    let pods = common::read_openb_pods(&dir.join("openb_pod_list_default.csv"));
    let cfg = ExperimentConfig {
        checkpoints_pct: vec![100],
        ..ExperimentConfig::default()
    };
    let c = run(&nodes, &pods, &Policy::preset(policy).unwrap(), 42, &cfg).unwrap();
    Some(
        100.0
            * c.at(100)
                .expect("the run reaches 100 % arrived")
                .gpu_alloc_ratio,
    )
}

/// Berth's policy is within 1 pp of the paper's FGD figure, on one seed of the real trace
/// (deterministic: same seed, same figure; ~4 s in debug).
#[test]
fn berth_is_within_1pp_of_the_paper() {
    let Some(berth) = alloc_at_100("berth") else {
        return;
    };
    eprintln!("openb default, seed 42, 100 % arrived: berth {berth:.2} %");
    assert!(
        berth >= PAPER_FGD_ALLOC_PCT - 1.0,
        "berth {berth:.2} % is more than 1 pp under the paper's FGD {PAPER_FGD_ALLOC_PCT} %"
    );
}

/// Berth's policy is at least as good as FGD on one seed of the real trace (~8 s in debug).
/// Seed 42: fgd 95.35 %, berth 95.67 %; over 10 seeds berth 95.71 ± 0.04 % against FGD's
/// 95.31 ± 0.10 % (`full_table`): FGD's ties go to the CPU-aware fragmentation measure
/// ([`Policy::berth`]).
#[test]
fn berth_beats_fgd_on_openb() {
    let (Some(fgd), Some(berth)) = (alloc_at_100("fgd"), alloc_at_100("berth")) else {
        return;
    };
    eprintln!("openb default, seed 42, 100 % arrived: fgd {fgd:.2} %, berth {berth:.2} %");
    assert!(berth >= fgd, "berth {berth:.2} % < fgd {fgd:.2} %");
}

/// FGD reproduces the paper within 1 pp at 100 % arrived on one seed (~4 s in debug). Seed 42
/// gives 95.35 % (the artifact's own seed-42 run: 95.14 %); over 10 seeds 95.31 ± 0.10 %
/// against the paper's 95.23 ± 0.11 % (`full_table`). What closed the former 1.1 pp gap: FGD's
/// score is an integer, as a Kubernetes score plugin's, so near-equal fragmentation growths tie
/// and go to the node order instead of to the strictly smallest growth.
#[test]
fn fgd_matches_the_paper() {
    let Some(fgd) = alloc_at_100("fgd") else {
        return;
    };
    eprintln!("openb default, seed 42, 100 % arrived: fgd {fgd:.2} %");
    assert!(
        (fgd - PAPER_FGD_ALLOC_PCT).abs() <= 1.0,
        "fgd {fgd:.2} % is not within 1 pp of the paper's {PAPER_FGD_ALLOC_PCT} %"
    );
}
