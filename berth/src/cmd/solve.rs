//! `berth solve …`: the solver offline.

use anyhow::{bail, Context, Result};
use berth_solver::experiment::{self, Curve, ExperimentConfig};
use berth_solver::place::Policy;
use berth_solver::TaskShape;
use berth_traces::{alibaba_gpu, ImportOptions};
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The policies of the FGD paper's figure, in its order, then Berth's own.
pub const FRAG_POLICIES_DEFAULT: &str =
    "random,dot_product,gpu_clustering,gpu_packing,best_fit,fgd,berth";

#[derive(Subcommand)]
pub enum SolveCmd {
    /// The fragmentation experiment of Weng et al. (USENIX ATC '23) on the Alibaba openb data:
    /// pods arrive in a seeded random order (sampled with replacement up to 130 % of GPU
    /// capacity) onto the 1,213 GPU nodes; GPU allocation and fragmentation are sampled at every
    /// 1 % of arrived GPU request. Prints mean ± std per policy at 80/90/100/130 % arrived.
    #[command(after_help = "Examples:\n  \
        berth solve frag --trace ../shared/traces/alibaba-cluster-trace-gpu-v2023 --seeds 10 --out frag.csv\n  \
        berth solve frag --pods gpuspec33 --policies fgd,berth --seeds 3")]
    Frag(FragArgs),
}

#[derive(Args)]
pub struct FragArgs {
    /// The folder holding the openb CSVs (default: ../shared/traces/alibaba-cluster-trace-gpu-v2023
    /// or $BERTH_TRACES_DIR/alibaba-cluster-trace-gpu-v2023).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Which pod list: `default` (openb_pod_list_default.csv) or `gpuspec33`
    /// (openb_pod_list_gpuspec33.csv, a third of GPU pods pinned to GPU models).
    #[arg(long, default_value = "default")]
    pub pods: String,
    /// Number of seeds (0, 1, …, N-1).
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Comma-separated policy presets.
    #[arg(long, default_value = FRAG_POLICIES_DEFAULT)]
    pub policies: String,
    /// Write every curve (policy × seed × 1 % step) as CSV here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the summary table as CSV here.
    #[arg(long)]
    pub summary_csv: Option<PathBuf>,
    /// Print the summary table as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: SolveCmd) -> Result<ExitCode> {
    match cmd {
        SolveCmd::Frag(a) => frag(a),
    }
}

fn frag(a: FragArgs) -> Result<ExitCode> {
    let dir = a
        .trace
        .clone()
        .unwrap_or_else(|| super::default_traces_dir().join("alibaba-cluster-trace-gpu-v2023"));
    let pod_file = match a.pods.as_str() {
        "default" => "openb_pod_list_default.csv",
        "gpuspec33" => "openb_pod_list_gpuspec33.csv",
        other => bail!("unknown --pods {other:?}; expected default or gpuspec33"),
    };
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let opts = ImportOptions::default();
    let node_path = dir.join("openb_node_list_gpu_node.csv");
    let (nodes, _) = alibaba_gpu::import_nodes(&node_path, &opts)
        .with_context(|| format!("reading the GPU node list {}", node_path.display()))?;
    let pod_path = dir.join(pod_file);
    let list = alibaba_gpu::pods(&pod_path, &opts)
        .with_context(|| format!("reading the pod list {}", pod_path.display()))?;
    let pods: Vec<TaskShape> = list
        .pods
        .iter()
        .map(|p| p.to_job().map(|j| j.groups[0].shape.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", pod_path.display()))?;
    let policies: Vec<Policy> = a
        .policies
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| Policy::preset(name).with_context(|| format!("--policies: {name}")))
        .collect::<Result<_>>()?;
    let cfg = ExperimentConfig::default();
    eprintln!(
        "{} GPU nodes ({} GPUs), {} pods from {}; {} policies × {} seeds",
        nodes.len(),
        nodes.total_gpus(),
        pods.len(),
        pod_file,
        policies.len(),
        a.seeds
    );

    // Runs are independent and each is deterministic: spread them over the cores.
    let runs: Vec<(usize, u64)> = (0..policies.len())
        .flat_map(|p| (0..a.seeds).map(move |s| (p, s)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(runs.len());
    let mut curves: Vec<Option<Curve>> = vec![None; runs.len()];
    std::thread::scope(|scope| -> Result<()> {
        let chunk = runs.len().div_ceil(threads);
        let handles: Vec<_> = runs
            .chunks(chunk)
            .zip(curves.chunks_mut(chunk))
            .map(|(work, out)| {
                let (nodes, pods, policies, cfg) = (&nodes, &pods, &policies, &cfg);
                scope.spawn(move || -> Result<()> {
                    for (&(p, seed), slot) in work.iter().zip(out.iter_mut()) {
                        *slot = Some(experiment::run(nodes, pods, &policies[p], seed, cfg)?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an experiment thread panicked"))??;
        }
        Ok(())
    })?;
    let curves: Vec<Curve> = curves
        .into_iter()
        .map(|c| c.expect("every run filled"))
        .collect();

    let table = experiment::summarise(&curves, &cfg.checkpoints_pct);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&table)?);
    } else {
        print!("{table}");
    }
    if let Some(path) = &a.out {
        std::fs::write(path, curves_csv(&curves))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("curves written to {}", path.display());
    }
    if let Some(path) = &a.summary_csv {
        std::fs::write(path, table.to_csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every curve point as one CSV row.
fn curves_csv(curves: &[Curve]) -> String {
    let mut s = String::from(
        "policy,seed,arrived_pct,arrived_pods,arrived_gpu_milli,allocated_gpu_milli,gpu_alloc_ratio,frag_gpu_milli,frag_ratio,failed_pods,failed_gpu_milli\n",
    );
    for c in curves {
        for p in &c.points {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{:.6},{:.1},{:.6},{},{}",
                c.policy,
                c.seed,
                p.arrived_pct,
                p.arrived_pods,
                p.arrived_gpu_milli,
                p.allocated_gpu_milli,
                p.gpu_alloc_ratio,
                p.frag_gpu_milli,
                p.frag_ratio,
                p.failed_pods,
                p.failed_gpu_milli
            );
        }
    }
    s
}
