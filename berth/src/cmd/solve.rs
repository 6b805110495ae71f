//! `berth solve …`: the solver offline.

use anyhow::{bail, Context, Result};
use berth_solver::bounds::{nodes_lower_bound, LowerBound, NodeKind};
use berth_solver::experiment::{self, Curve, ExperimentConfig};
use berth_solver::place::Policy;
use berth_solver::spec::{self, SpecFormat};
use berth_solver::{
    Assignment, ClusterView, JobId, JobKind, ReasonCounts, TaskId, TaskRequest, TaskShape,
};
use berth_traces::{alibaba_gpu, ImportOptions};
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Place a batch of jobs on a cluster with a placement policy, offline: where each task
    /// goes, why the rest cannot be placed (per-reason node counts), and the nodes used
    /// against the lower bound (per dimension, GPU devices, L2; the LP bound with `milp`).
    #[command(after_help = "Examples:\n  \
        berth solve place --cluster cluster.toml --jobs train.toml,web.toml\n  \
        berth solve place --cluster cluster.toml --jobs jobs/*.toml --policy fgd --json\n\n\
        cluster.toml (the cluster file format; `count` makes a group of identical nodes):\n  \
        [[nodes]]\n  \
        name = \"gpu\"\n  \
        count = 4\n  \
        cpu_milli = 32000\n  \
        mem_mib = 131072\n  \
        zone = \"us-east-1a\"\n  \
        gpus = { count = 4, model = \"T4\" }\n\n\
        Job files are job specs as `berth job submit` takes them (TOML or JSON).")]
    Place(PlaceArgs),
}

#[derive(Args)]
pub struct PlaceArgs {
    /// The cluster file (TOML or JSON: `[[nodes]]` / `[[node_groups]]`).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Job spec files (TOML or JSON), comma-separated or repeated; placed in this order.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub jobs: Vec<PathBuf>,
    /// The placement policy preset.
    #[arg(long, default_value = "berth")]
    pub policy: String,
    /// Seed of the policy's tie-breaking and random choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
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
        SolveCmd::Place(a) => place(a),
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

/// What `solve place` prints with `--json`.
#[derive(serde::Serialize)]
struct PlaceOutput {
    policy: String,
    tasks: usize,
    placed: usize,
    nodes_used: u64,
    nodes_lower_bound: u64,
    bound: LowerBound,
    jobs: Vec<JobOutcome>,
    assignments: Vec<Assignment>,
}

#[derive(serde::Serialize)]
struct JobOutcome {
    job: String,
    file: String,
    tasks: u32,
    placed: u32,
    /// Why the rest cannot be placed: node counts per reason, over the job's unplaced tasks'
    /// last attempt.
    unplaced_reasons: String,
}

fn place(a: PlaceArgs) -> Result<ExitCode> {
    let read = |p: &PathBuf| -> Result<String> {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let format_of = |p: &PathBuf| SpecFormat::from_path(&p.to_string_lossy());
    let cluster = spec::cluster_from_str(&read(&a.cluster)?, format_of(&a.cluster))
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.cluster.display()))?;
    let mut policy = Policy::preset(&a.policy).with_context(|| format!("--policy {}", a.policy))?;
    if let Some(seed) = a.seed {
        policy.seed = seed;
    }

    // Every job's tasks, in file order: a batch job's `size`, a service's `desired`.
    let mut jobs: Vec<(String, String, u32)> = Vec::new();
    let mut tasks: Vec<TaskRequest> = Vec::new();
    for (j, path) in a.jobs.iter().enumerate() {
        let job = spec::job_from_str(&read(path)?, format_of(path))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let (count, gang) = match &job.kind {
            JobKind::Batch(b) => (b.size, b.gang),
            JobKind::Service(s) => (s.desired, false),
        };
        let constraints = Arc::new(job.constraints.clone());
        for _ in 0..count {
            tasks.push(
                TaskRequest::new(
                    TaskId(tasks.len() as u64),
                    JobId(j as u64),
                    job.task.clone(),
                )
                .with_tier(job.tier)
                .with_constraints(constraints.clone())
                .with_gang(gang),
            );
        }
        jobs.push((job.name.clone(), path.display().to_string(), count));
    }

    let mut view = ClusterView::new(&cluster);
    let mut rng = policy.rng();
    let plan = berth_solver::place(&mut view, &tasks, &policy, &mut rng)
        .map_err(|e| anyhow::anyhow!("--policy {}: {e}", a.policy))?;

    let nodes_used = plan
        .assignments
        .iter()
        .map(|x| x.node)
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let mut demand: Vec<(TaskShape, u64)> = Vec::new();
    for t in &tasks {
        match demand.iter_mut().find(|(s, _)| *s == t.shape) {
            Some((_, c)) => *c += 1,
            None => demand.push((t.shape.clone(), 1)),
        }
    }
    let bound = nodes_lower_bound(&demand, &NodeKind::kinds_of_cluster(&cluster));

    let outcomes: Vec<JobOutcome> = jobs
        .iter()
        .enumerate()
        .map(|(j, (name, file, count))| {
            let mut reasons = ReasonCounts::new();
            let mut unplaced = 0u32;
            for u in plan.unplaced.iter().filter(|u| u.job == JobId(j as u64)) {
                unplaced += 1;
                reasons = u.reasons.clone();
            }
            JobOutcome {
                job: name.clone(),
                file: file.clone(),
                tasks: *count,
                placed: count - unplaced,
                unplaced_reasons: if unplaced == 0 {
                    String::new()
                } else {
                    reasons.to_string()
                },
            }
        })
        .collect();

    if a.json {
        let out = PlaceOutput {
            policy: policy.name.clone(),
            tasks: tasks.len(),
            placed: plan.assignments.len(),
            nodes_used,
            nodes_lower_bound: bound.nodes_min,
            bound,
            jobs: outcomes,
            assignments: plan.assignments.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "policy {}: {} of {} tasks placed on {} nodes ({} in the cluster)",
        policy.name,
        plan.assignments.len(),
        tasks.len(),
        nodes_used,
        cluster.nodes.len()
    );
    println!(
        "nodes used vs lower bound: {nodes_used} vs {} (per dimension cpu/mem/disk/net/gpu {:?}, \
         GPU devices {}, L2 {}{})",
        bound.nodes_min,
        bound.per_dimension,
        bound.gpu_nodes_min,
        bound.l2,
        bound.lp.map(|lp| format!(", LP {lp}")).unwrap_or_default()
    );
    println!(
        "\n  {:<24} {:>6} {:>6}  cannot place because",
        "job", "tasks", "placed"
    );
    for o in &outcomes {
        println!(
            "  {:<24} {:>6} {:>6}  {}",
            o.job, o.tasks, o.placed, o.unplaced_reasons
        );
    }
    println!("\n  {:<8} {:<24} {:<12} gpus", "task", "node", "zone");
    for x in &plan.assignments {
        let n = view.node(x.node);
        let gpus: Vec<String> = x
            .gpus
            .iter()
            .map(|g| format!("#{}:{}", g.device, g.milli))
            .collect();
        println!(
            "  {:<8} {:<24} {:<12} {}",
            x.task.0,
            n.name,
            n.attributes.zone,
            gpus.join(" ")
        );
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
