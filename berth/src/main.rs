//! The `berth` command: argument parsing and wiring only. The logic lives in the library crates.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a container platform that packs batch and service containers onto EC2 capacity",
    long_about = "Berth packs batch and service containers onto EC2 capacity. One pure decision core \
                  (placement, optimisation, lifecycle) is driven by a deterministic simulator for \
                  what-if studies and by a runtime in production.",
    after_help = "Examples:\n  berth sim run\n  berth sim sweep --placements best_fit,fgd,berth\n  berth trace stats ../shared/traces/metacentrum-alea/wagap-2013.swf\n  \
                  berth solve frag --trace ../shared/traces/alibaba-cluster-trace-gpu-v2023 --seeds 10 --out frag.csv"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate: run a scenario, sweep a grid of variants, gate on SLA figures.
    #[command(subcommand)]
    Sim(cmd::sim::SimCmd),
    /// Import and inspect workload traces.
    #[command(subcommand)]
    Trace(cmd::trace::TraceCmd),
    /// Run the solver offline: fragmentation experiment, placement, bounds.
    #[command(subcommand)]
    Solve(cmd::solve::SolveCmd),
    /// EC2 pools: what the instance-mix optimiser would buy for a pending demand.
    #[command(subcommand)]
    Pool(cmd::pool::PoolCmd),
    /// Run the control plane (API, store, controller); `--local` adds an agent on local Docker.
    #[cfg(feature = "runtime")]
    Serve(cmd::runtime::ServeArgs),
    /// Run an agent: register with the control plane and run its tasks on the local Docker engine.
    #[cfg(feature = "runtime")]
    Agent(cmd::runtime::AgentArgs),
    /// Submit, list, scale and kill jobs on a control plane.
    #[command(subcommand)]
    #[cfg(feature = "runtime")]
    Job(cmd::runtime::JobCmd),
    /// List tasks, read their logs, kill one.
    #[command(subcommand)]
    #[cfg(feature = "runtime")]
    Task(cmd::runtime::TaskCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(c) => cmd::sim::run(c),
        Command::Trace(c) => cmd::trace::run(c),
        Command::Solve(c) => cmd::solve::run(c),
        Command::Pool(c) => cmd::pool::run(c),
        #[cfg(feature = "runtime")]
        Command::Serve(a) => cmd::runtime::serve(a),
        #[cfg(feature = "runtime")]
        Command::Agent(a) => cmd::runtime::agent(a),
        #[cfg(feature = "runtime")]
        Command::Job(c) => cmd::runtime::job(c),
        #[cfg(feature = "runtime")]
        Command::Task(c) => cmd::runtime::task(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
