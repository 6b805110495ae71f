//! `berth serve`, `berth agent`, `berth job …`, `berth task …`: wiring of `berth-runtime`.

use anyhow::{bail, Context, Result};
use berth_runtime::agent::{self, AgentConfig, GpuOverride};
use berth_runtime::api_types::{DryRun, Explain, ScaleRequest, SubmitResponse};
use berth_runtime::client::Client;
use berth_runtime::control::ControlConfig;
use berth_runtime::docker::{Isolation, NetworkMode};
use berth_runtime::serve::{self, LocalAgent, ServeConfig};
use berth_runtime::server::Tokens;
use berth_runtime::store::{JobRow, TaskRow};
use berth_solver::spec::{job_from_str, SpecFormat};
use berth_solver::Resources;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    berth serve --local --data ./berth-data            # control plane + one local agent\n  \
    BERTH_USER_TOKEN=u BERTH_AGENT_TOKEN=a berth serve --listen 0.0.0.0:7070 --data /var/lib/berth")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Data directory (SQLite store, local agent's logs).
    #[arg(long, default_value = "berth-data")]
    data: PathBuf,
    /// Also run one agent on the local Docker engine.
    #[arg(long)]
    local: bool,
    /// Token of the user scope. Default with --local: generated and written to <data>/user-token.
    #[arg(long, env = "BERTH_USER_TOKEN", hide_env_values = true)]
    user_token: Option<String>,
    /// Token of the agent scope. Default with --local: generated and written to <data>/agent-token.
    #[arg(long, env = "BERTH_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
    /// An agent silent this long is declared lost.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_timeout_ms: u64,
    /// Grace period of kills (SIGTERM, then SIGKILL after it).
    #[arg(long, default_value_t = 10_000)]
    kill_grace_ms: u64,
    /// Name of the local agent (--local).
    #[arg(long, default_value = "local")]
    agent_name: String,
    /// Prefix of the local agent's per-job network names (--local); give each control plane
    /// sharing an engine its own.
    #[arg(long, default_value = "berth")]
    network_prefix: String,
    /// EC2 pools file: the controller provisions and terminates instances through EC2
    /// (credentials from the standard AWS chain).
    #[cfg(feature = "ec2")]
    #[arg(long)]
    pools: Option<PathBuf>,
    /// EC2 endpoint URL (overrides the pools file's `endpoint_url`; e.g. moto on loopback).
    #[cfg(feature = "ec2")]
    #[arg(long, env = "BERTH_EC2_ENDPOINT")]
    ec2_endpoint: Option<String>,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    berth agent --server http://10.0.0.5:7070 --token $AGENT_TOKEN --name host-a --zone us-east-1a\n  \
    berth agent --token a --name n2 --zone b --cpu-milli 4000 --mem-mib 8192 --data /var/lib/berth-agent\n  \
    berth agent --token a --name g1 --gpus 4 --gpu-model T4 --listen 0.0.0.0:7071 --advertise-url http://10.0.0.7:7071")]
pub struct AgentArgs {
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: String,
    /// Token of the agent scope.
    #[arg(long, env = "BERTH_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Unique per host, stable across restarts.
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "local")]
    zone: String,
    #[arg(long, default_value = "local")]
    instance_type: String,
    /// The cloud instance this host is (EC2 `i-…`; the pool's user data passes it).
    #[arg(long)]
    instance_id: Option<String>,
    /// CPU to offer, in milli-cores (default: the host's).
    #[arg(long, default_value_t = 0)]
    cpu_milli: u64,
    /// Memory to offer, in MiB (default: the host's).
    #[arg(long, default_value_t = 0)]
    mem_mib: u64,
    /// GPUs to offer (default: the /dev/nvidia<N> devices of the host; 0: none).
    #[arg(long)]
    gpus: Option<u8>,
    /// Their model as the catalogue names it: T4, A10G, V100M16 … (default: from nvidia-smi).
    #[arg(long)]
    gpu_model: Option<String>,
    /// Where the agent serves task logs to the control plane.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The URL the control plane reaches the agent at (default: http://<--listen>; required
    /// when listening on 0.0.0.0).
    #[arg(long)]
    advertise_url: Option<String>,
    /// Keep containers that failed to start (not started) for post-mortem until the agent
    /// restarts.
    #[arg(long)]
    keep_failed_containers: bool,
    /// Data directory (task logs).
    #[arg(long, default_value = "berth-agent-data")]
    data: PathBuf,
    /// Prefix of per-job network names; give each control plane sharing an engine its own.
    #[arg(long, default_value = "berth")]
    network_prefix: String,
    /// `job` (an internal network per job) or `none`.
    #[arg(long, default_value = "job")]
    network: String,
}

#[derive(Args)]
pub struct Conn {
    /// The control plane.
    #[arg(long, global = true, default_value = DEFAULT_SERVER, env = "BERTH_SERVER")]
    server: String,
    /// Token of the user scope.
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a job spec (TOML, or JSON when the file ends in .json).
    #[command(
        after_help = "Examples:\n  berth job submit job.toml\n  berth job submit job.json --dry-run"
    )]
    Submit {
        file: PathBuf,
        /// Show where the solver would place the tasks; launch nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List jobs.
    #[command(
        after_help = "Examples:\n  berth job ls\n  berth job ls --state accepted --tier critical"
    )]
    Ls {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        tier: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one job (JSON), and why its pending tasks wait.
    #[command(after_help = "Examples:\n  berth job get 7\n  berth job get job-7")]
    Get {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a service job's instance counts.
    #[command(
        after_help = "Examples:\n  berth job scale 7 --desired 5\n  berth job scale 7 --min 1 --desired 3 --max 10"
    )]
    Scale {
        id: String,
        #[arg(long)]
        desired: u32,
        #[arg(long)]
        min: Option<u32>,
        #[arg(long)]
        max: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Kill every task of a job.
    #[command(after_help = "Examples:\n  berth job kill 7")]
    Kill {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum TaskCmd {
    /// List tasks with their states and reasons.
    #[command(after_help = "Examples:\n  berth task ls\n  berth task ls --job 7 --state started")]
    Ls {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a task's log (stdout and stderr).
    #[command(after_help = "Examples:\n  berth task logs 12")]
    Logs {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Kill one task (a service task is replaced).
    #[command(after_help = "Examples:\n  berth task kill 12")]
    Kill {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// A token from the flag, else from `<data>/<file>`, else (with `--local`) a new one saved there.
fn token(given: Option<String>, data: &std::path::Path, file: &str, local: bool) -> Result<String> {
    if let Some(t) = given {
        return Ok(t);
    }
    let path = data.join(file);
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    if !local {
        bail!(
            "give --{} (or its env variable): tokens are required without --local",
            file
        );
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let t = serve::random_token()?;
    std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
    Ok(t)
}

pub fn serve(a: ServeArgs) -> Result<ExitCode> {
    init_tracing();
    let user = token(a.user_token, &a.data, "user-token", a.local)?;
    let agent = token(a.agent_token, &a.data, "agent-token", a.local)?;
    let mut control = ControlConfig {
        heartbeat_timeout_ms: a.heartbeat_timeout_ms,
        ..ControlConfig::default()
    };
    control.controller.kill_grace_ms = a.kill_grace_ms;
    #[cfg(feature = "ec2")]
    if let Some(path) = &a.pools {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut ec2 =
            berth_runtime::ec2::Ec2Config::from_toml(&text, berth_solver::catalog::Catalog::ec2())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Some(url) = &a.ec2_endpoint {
            ec2.endpoint_url = Some(url.clone());
        }
        control.ec2 = Some(ec2);
    }
    let config = ServeConfig {
        listen: a.listen,
        data_dir: a.data.clone(),
        tokens: Tokens { user, agent },
        control,
        local_agent: a.local.then(|| LocalAgent {
            name: a.agent_name.clone(),
            isolation: Isolation {
                network_prefix: a.network_prefix.clone(),
                ..Isolation::default()
            },
        }),
    };
    runtime()?.block_on(async move {
        let running = serve::start(config).await?;
        if a.local {
            eprintln!(
                "berth: serving on {} (user token in {})",
                running.url(),
                a.data.join("user-token").display()
            );
        }
        serve::shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown(Duration::from_secs(5)).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn agent(a: AgentArgs) -> Result<ExitCode> {
    init_tracing();
    let mut c = AgentConfig::new(&a.server, &a.token, &a.name, a.data);
    c.zone = a.zone;
    c.instance_type = a.instance_type;
    c.instance_id = a.instance_id;
    c.capacity = Resources::new(a.cpu_milli, a.mem_mib, 0, 0);
    c.listen = a.listen;
    c.advertise_url = a.advertise_url;
    c.gpus = GpuOverride {
        count: a.gpus,
        model: a.gpu_model,
    };
    c.keep_failed_containers = a.keep_failed_containers;
    c.isolation.network_prefix = a.network_prefix;
    c.isolation.network = match a.network.as_str() {
        "job" => NetworkMode::PerJob,
        "none" => NetworkMode::None,
        other => bail!("--network: expected job or none, got {other:?}"),
    };
    runtime()?.block_on(async move {
        let running = agent::start(c).await?;
        eprintln!("berth agent: logs served on {}", running.url());
        serve::shutdown_signal().await;
        running.stop();
        Ok(ExitCode::SUCCESS)
    })
}

fn client(c: &Conn) -> Client {
    Client::new(&c.server, c.token.clone())
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn job(cmd: JobCmd) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            JobCmd::Submit {
                file,
                dry_run,
                conn,
            } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let path = file.display().to_string();
                let spec = job_from_str(&text, SpecFormat::from_path(&path))
                    .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
                let c = client(&conn);
                if dry_run {
                    let plan: DryRun = c.post("/v1/jobs?dry_run=true", &spec).await?;
                    for p in &plan.placements {
                        println!("task {:>3} -> {} ({})", p.slot, p.node, p.zone);
                    }
                    for u in &plan.unplaced {
                        println!("task {:>3} unplaced: {}", u.slot, u.summary);
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                let r: SubmitResponse = c.post("/v1/jobs", &spec).await?;
                println!("job-{} {}", r.id.0, r.state);
            }
            JobCmd::Ls { state, tier, conn } => {
                let mut q = Vec::new();
                if let Some(s) = state {
                    q.push(format!("state={s}"));
                }
                if let Some(t) = tier {
                    q.push(format!("tier={t}"));
                }
                let jobs: Vec<JobRow> = client(&conn)
                    .get(&format!("/v1/jobs?{}", q.join("&")))
                    .await?;
                println!(
                    "{:<10} {:<24} {:<8} {:<9} {:<10} unplaced",
                    "ID", "NAME", "KIND", "TIER", "STATE"
                );
                for j in jobs {
                    println!(
                        "{:<10} {:<24} {:<8} {:<9} {:<10} {}",
                        format!("job-{}", j.id.0),
                        j.name,
                        j.kind,
                        j.tier,
                        j.state,
                        j.unplaced.unwrap_or_default()
                    );
                }
            }
            JobCmd::Get { id, conn } => {
                let c = client(&conn);
                let job: JobRow = c.get(&format!("/v1/jobs/{id}")).await?;
                print_json(&job)?;
                if job.state == "accepted" {
                    let e: Explain = c.get(&format!("/v1/explain/{id}")).await?;
                    if e.pending_tasks > 0 {
                        println!("pending tasks: {}", e.pending_tasks);
                        for u in e.dry_run.unplaced.iter().take(5) {
                            println!("  cannot place: {}", u.summary);
                        }
                    }
                }
            }
            JobCmd::Scale {
                id,
                desired,
                min,
                max,
                conn,
            } => {
                let c = client(&conn);
                let job: JobRow = c.get(&format!("/v1/jobs/{id}")).await?;
                let (cur_min, cur_max) = match job.spec.as_ref().map(|s| &s.kind) {
                    Some(berth_solver::JobKind::Service(s)) => (s.min, s.max),
                    _ => bail!("job-{} is not a service job", job.id.0),
                };
                let req = ScaleRequest {
                    min: min.unwrap_or(cur_min.min(desired)),
                    desired,
                    max: max.unwrap_or(cur_max.max(desired)),
                };
                c.post_empty(&format!("/v1/jobs/{id}/scale"), &req).await?;
                println!("job-{} scaling to {}", job.id.0, desired);
            }
            JobCmd::Kill { id, conn } => {
                client(&conn)
                    .post_empty(&format!("/v1/jobs/{id}/kill"), &serde_json::json!({}))
                    .await?;
                println!("{id}: kill requested");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn task(cmd: TaskCmd) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            TaskCmd::Ls { job, state, conn } => {
                let mut q = Vec::new();
                if let Some(j) = job {
                    q.push(format!("job={j}"));
                }
                if let Some(s) = state {
                    q.push(format!("state={s}"));
                }
                let tasks: Vec<TaskRow> = client(&conn)
                    .get(&format!("/v1/tasks?{}", q.join("&")))
                    .await?;
                println!(
                    "{:<10} {:<10} {:>4} {:>7} {:<15} {:<24} {:>6} {:>4}",
                    "ID", "JOB", "SLOT", "ATTEMPT", "STATE", "REASON", "NODE", "EXIT"
                );
                for t in tasks {
                    println!(
                        "{:<10} {:<10} {:>4} {:>7} {:<15} {:<24} {:>6} {:>4}",
                        format!("task-{}", t.id.0),
                        format!("job-{}", t.job.0),
                        t.slot,
                        t.attempt,
                        t.state,
                        t.reason.unwrap_or_default(),
                        t.node.map(|n| n.to_string()).unwrap_or_default(),
                        t.exit_code.map(|n| n.to_string()).unwrap_or_default()
                    );
                }
            }
            TaskCmd::Logs { id, conn } => {
                let text = client(&conn)
                    .get_text(&format!("/v1/tasks/{id}/logs"))
                    .await?;
                print!("{text}");
            }
            TaskCmd::Kill { id, conn } => {
                client(&conn)
                    .post_empty(&format!("/v1/tasks/{id}/kill"), &serde_json::json!({}))
                    .await?;
                println!("{id}: kill requested");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
