//! `berth sim …`: what-if simulation for capacity planners, and the gate for their CI.

use anyhow::{bail, Context, Result};
use berth_sim::gate::{compare, Baseline};
use berth_sim::{comparison_table, run_scenario, run_scenario_to, Progress, Scenario, SweepSpec};
use berth_solver::controller::QueuePolicy;
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum SimCmd {
    /// Run one scenario and print its summary: jobs, waits per tier, slowdown, allocation,
    /// pending queue, nodes, cost, faults. Without a file, runs the bundled default scenario
    /// (a synthetic mix on a small two-zone GPU + CPU cluster with autoscaled pools).
    #[command(after_help = "Examples:\n  \
        berth sim run\n  \
        berth sim run sim/scenarios/openb-replay.toml --out out/openb\n  \
        berth sim run sim/scenarios/wagap-2013-easy.toml --json > report.json\n  \
        berth sim run --out out/default --report out/default.html\n  \
        berth sim run --seed 7 --placement fgd")]
    Run(RunArgs),
    /// Run a grid of variants of one scenario in parallel and print one comparison table.
    #[command(after_help = "Examples:\n  \
        berth sim sweep --placements best_fit,fgd,berth --rate-scales 1,1.5,2\n  \
        berth sim sweep sim/scenarios/default.toml --pool-size-factors 0.5,1,2 --queues fcfs,berth\n  \
        berth sim sweep my.toml --grid grid.toml --json > sweep.json\n  \
        berth sim sweep --placements best_fit,fgd --pool-size-factors 0.5,1 --out out/sweep")]
    Sweep(SweepArgs),
    /// Run a scenario and compare its SLA figures with a baseline: exits 1 when a figure got
    /// worse than the tolerance allows, 0 otherwise, 2 on an error. Put it in your CI.
    #[command(after_help = "Examples:\n  \
        berth sim gate capacity.toml --baseline capacity.baseline.json --update-baseline\n  \
        berth sim gate capacity.toml --baseline capacity.baseline.json --tolerance 5%\n  \
        berth sim gate capacity.toml --baseline b.json --figures wait_ms_p99.critical,cost_usd_per_day\n\n\
        Figures: wait_ms_p99.<tier>, wait_ms_p50.<tier>, pending_tasks_max, cost_usd,\n  \
        cost_usd_per_day, gpu_alloc_mean, cpu_alloc_mean, bounded_slowdown_mean, jobs_failed,\n  \
        tasks_started.")]
    Gate(GateArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// The scenario file (TOML); the bundled default when absent.
    pub scenario: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the placement policy preset (e.g. best_fit, dot_product, fgd, berth).
    #[arg(long)]
    pub placement: Option<String>,
    /// Override the queue policy: fcfs, easy or berth.
    #[arg(long)]
    pub queue: Option<String>,
    /// Write series.csv, nodes.csv, pools.csv, tasks.csv and report.json to this folder, and
    /// the tables again as series.parquet, nodes.parquet, pools.parquet, tasks.parquet.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a self-contained HTML report (summary and plots as inline SVG) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct SweepArgs {
    /// The base scenario (TOML); the bundled default when absent.
    pub scenario: Option<PathBuf>,
    /// A grid file (TOML with placements, queues, pool_size_factors, rate_scales); the flags
    /// below add to it.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Comma-separated placement presets.
    #[arg(long, value_delimiter = ',')]
    pub placements: Vec<String>,
    /// Comma-separated queue policies (fcfs, easy, berth).
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Comma-separated factors on every pool's min and max size.
    #[arg(long, value_delimiter = ',')]
    pub pool_size_factors: Vec<f64>,
    /// Comma-separated factors on the arrival rate.
    #[arg(long, value_delimiter = ',')]
    pub rate_scales: Vec<f64>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print every report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write each variant's outputs (as `sim run --out`) to a subfolder of this folder, and a
    /// summary table of all variants as sweep.csv and sweep.parquet.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct GateArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// The baseline file (JSON), as `--update-baseline` writes it.
    #[arg(long)]
    pub baseline: PathBuf,
    /// How much worse a figure may get, relative to its baseline: `0.05` or `5%`.
    #[arg(long, default_value = "0")]
    pub tolerance: String,
    /// Comma-separated figures to record with `--update-baseline` (default: all).
    #[arg(long, value_delimiter = ',')]
    pub figures: Vec<String>,
    /// Write the run's figures as the new baseline instead of comparing.
    #[arg(long)]
    pub update_baseline: bool,
    /// Print the comparison as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: SimCmd) -> Result<ExitCode> {
    match cmd {
        SimCmd::Run(a) => run_one(a),
        SimCmd::Sweep(a) => sweep(a),
        SimCmd::Gate(a) => gate(a),
    }
}

fn load(path: Option<&Path>) -> Result<Scenario> {
    match path {
        Some(p) => Scenario::load(p).map_err(anyhow::Error::from),
        None => Ok(Scenario::default_scenario()),
    }
}

fn queue_policy(name: &str) -> Result<QueuePolicy> {
    Ok(match name {
        "fcfs" => QueuePolicy::Fcfs,
        "easy" => QueuePolicy::Easy,
        "berth" => QueuePolicy::Berth,
        other => bail!("unknown queue policy `{other}`: expected fcfs, easy or berth"),
    })
}

/// A progress line on stderr (only on a terminal): simulated time, events, pending tasks.
fn progress_line(quiet: bool) -> impl FnMut(&Progress) {
    let show = !quiet && std::io::stderr().is_terminal();
    move |p: &Progress| {
        if show {
            let pct = if p.horizon_ms > 0 {
                100.0 * p.now_ms as f64 / p.horizon_ms as f64
            } else {
                0.0
            };
            let mut e = std::io::stderr();
            let _ = write!(
                e,
                "\r  {pct:5.1} %  simulated {:.1} h  {} events  {} pending   ",
                p.now_ms as f64 / 3.6e6,
                p.events,
                p.pending_tasks
            );
            let _ = e.flush();
        }
    }
}

fn run_one(a: RunArgs) -> Result<ExitCode> {
    let mut s = load(a.scenario.as_deref())?;
    if let Some(seed) = a.seed {
        s.seed = seed;
    }
    if let Some(p) = a.placement {
        s.policy.placement = p;
        s.policy.custom = None;
        s.policy
            .placement_policy()
            .context("--placement is not a known policy preset")?;
    }
    if let Some(q) = a.queue {
        s.policy.queue = queue_policy(&q)?;
    }
    let mut progress = progress_line(a.quiet || a.json);
    // The HTML report is drawn from a run's folder: `--out`, or a temporary one.
    let temp_out = match (&a.out, &a.report) {
        (None, Some(_)) => {
            Some(std::env::temp_dir().join(format!("berth-sim-report-{}", std::process::id())))
        }
        _ => None,
    };
    let out = a.out.clone().or_else(|| temp_out.clone());
    let report = match &out {
        Some(dir) => run_scenario_to(&s, dir, &mut progress)?,
        None => run_scenario(&s, &mut progress)?,
    };
    if let (Some(path), Some(dir)) = (&a.report, &out) {
        let data = berth_sim::html::RunData::load(dir)?;
        std::fs::write(path, berth_sim::html::render(&report, &data))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &temp_out {
        std::fs::remove_dir_all(dir).ok();
    }
    if !a.quiet && !a.json && std::io::stderr().is_terminal() {
        eprintln!();
    }
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_table());
        if let Some(dir) = &a.out {
            println!(
                "\nwrote series, nodes, tasks (.csv{}), report.json to {}",
                if berth_sim::WRITES_PARQUET {
                    ", .parquet"
                } else {
                    ""
                },
                dir.display()
            );
        }
        if let Some(path) = &a.report {
            println!("wrote the HTML report to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sweep(a: SweepArgs) -> Result<ExitCode> {
    let base = load(a.scenario.as_deref())?;
    let mut spec = match &a.grid {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let de = toml::Deserializer::new(&text);
            serde_path_to_error::deserialize::<_, SweepSpec>(de)
                .map_err(|e| anyhow::anyhow!("{}: at `{}`: {}", p.display(), e.path(), e.inner()))?
        }
        None => SweepSpec::default(),
    };
    spec.placements.extend(a.placements);
    for q in &a.queues {
        spec.queues.push(queue_policy(q)?);
    }
    spec.pool_size_factors.extend(a.pool_size_factors);
    spec.rate_scales.extend(a.rate_scales);
    for p in &spec.placements {
        let mut s = base.clone();
        s.policy.placement = p.clone();
        s.policy.custom = None;
        s.policy
            .placement_policy()
            .with_context(|| format!("placement `{p}`"))?;
    }
    let run = || -> Result<_> {
        Ok(match &a.out {
            Some(dir) => berth_sim::sweep_to(&base, &spec, dir)?,
            None => berth_sim::sweep(&base, &spec),
        })
    };
    let results = match a.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .context("starting the worker threads")?
            .install(run)?,
        None => run()?,
    };
    let mut ok = Vec::new();
    let mut failed = 0;
    for (name, r) in results {
        match r {
            Ok(r) => ok.push((name, r)),
            Err(e) => {
                failed += 1;
                eprintln!("variant `{name}`: {e}");
            }
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = ok
            .iter()
            .map(|(n, r)| serde_json::json!({ "variant": n, "report": r }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", comparison_table(&ok));
        if let Some(dir) = &a.out {
            println!(
                "\nwrote one folder per variant and sweep.csv{} to {}",
                if berth_sim::WRITES_PARQUET {
                    ", sweep.parquet"
                } else {
                    ""
                },
                dir.display()
            );
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `0.05` or `5%`.
fn parse_tolerance(text: &str) -> Result<f64> {
    let t = text.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .with_context(|| format!("--tolerance `{text}`: expected a number like 0.05 or 5%"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("--tolerance `{text}`: must be 0 or more");
    }
    Ok(v)
}

fn gate(a: GateArgs) -> Result<ExitCode> {
    let tolerance = parse_tolerance(&a.tolerance)?;
    let s = load(Some(&a.scenario))?;
    let report = run_scenario(&s, &mut |_| {})?;
    if a.update_baseline {
        let b = Baseline::of(&report, &a.figures)?;
        std::fs::write(&a.baseline, b.to_json())
            .with_context(|| format!("writing {}", a.baseline.display()))?;
        println!(
            "wrote {} figures of `{}` to {}",
            b.figures.len(),
            b.scenario,
            a.baseline.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text = std::fs::read_to_string(&a.baseline).with_context(|| {
        format!(
            "reading {} (make one with --update-baseline)",
            a.baseline.display()
        )
    })?;
    let base =
        Baseline::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", a.baseline.display()))?;
    let g = compare(&base, &report, tolerance)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&g)?);
    } else {
        print!("{}", g.to_markdown());
    }
    Ok(if g.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
