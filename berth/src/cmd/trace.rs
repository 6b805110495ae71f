//! `berth trace …`: import and summarise traces.

use anyhow::{bail, Context, Result};
use berth_traces::{detect_format, import, ImportOptions, TraceFormat, TraceStats};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TraceCmd {
    /// Import a trace and print a summary: jobs, tasks, time span, resource totals,
    /// service vs batch, GPU mix, and the node list where the trace has one.
    #[command(after_help = "Examples:\n  \
        berth trace stats traces/samples/openb_pod_list_sample.csv\n  \
        berth trace stats ../shared/traces/alibaba-cluster-trace-v2017/batch_task.csv --json\n  \
        berth trace stats jobs.swf.gz --format swf --skip-bad")]
    Stats(StatsArgs),
}

#[derive(Args)]
pub struct StatsArgs {
    /// The trace file (plain or gzip-compressed).
    pub file: PathBuf,
    /// The trace format; `auto` detects it from the header.
    /// One of: auto, alibaba-gpu-2023, openb-pods, openb-nodes, alibaba-2017, swf.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Skip malformed lines (counting them) instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Memory of one Alibaba 2017 machine, MiB (its trace gives memory as a fraction of it).
    #[arg(long)]
    pub machine_mem_mib: Option<u64>,
}

pub fn run(cmd: TraceCmd) -> Result<ExitCode> {
    match cmd {
        TraceCmd::Stats(a) => stats(a),
    }
}

/// Parses `--format`: `auto` is `None`; `alibaba-gpu-2023` is the openb pod or node list, as
/// the header says.
pub fn parse_format(name: &str, file: &std::path::Path) -> Result<Option<TraceFormat>> {
    match name {
        "auto" => Ok(None),
        "alibaba-gpu-2023" => {
            let detected = detect_format(file)?;
            match detected {
                TraceFormat::AlibabaGpu2023Pods | TraceFormat::AlibabaGpu2023Nodes => {
                    Ok(Some(detected))
                }
                other => bail!(
                    "{}: --format alibaba-gpu-2023 given, but the header looks like {other}",
                    file.display()
                ),
            }
        }
        _ => match TraceFormat::from_name(name) {
            Some(f) => Ok(Some(f)),
            None => bail!(
                "unknown --format {name:?}; expected one of: auto, alibaba-gpu-2023, {}",
                TraceFormat::ALL.map(|f| f.name()).join(", ")
            ),
        },
    }
}

fn stats(a: StatsArgs) -> Result<ExitCode> {
    let format = parse_format(&a.format, &a.file)?;
    let mut opts = ImportOptions {
        skip_bad: a.skip_bad,
        ..ImportOptions::default()
    };
    if let Some(m) = a.machine_mem_mib {
        opts.machine_mem_mib = m;
    }
    let workload = import(&a.file, format, &opts)
        .with_context(|| format!("importing {}", a.file.display()))?;
    let stats = TraceStats::of(&workload);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{stats}");
    }
    Ok(ExitCode::SUCCESS)
}
