//! The agent (`berth agent`): one per host. Registers with the control plane, heartbeats,
//! long-polls for launch/kill commands, runs containers through the local Docker engine, and
//! reports state changes and exit codes in order.
//!
//! Why long-poll: commands need at-least-once delivery that survives either side restarting.
//! A poll carries the agent's acknowledgement (`after` = the last command carried out) and the
//! server keeps unacknowledged commands, so nothing is lost between a send and a crash; it is
//! plain request/response over the same bearer-token HTTP API, with no connection state to
//! rebuild (SSE or websockets would need their own ack channel on top).
//!
//! Restarts: containers carry labels (`berth.task`, `berth.job`, `berth.agent`); a restarted
//! agent lists its containers, watches the running ones again and reports the exits it missed,
//! and registers with the tasks it has, so the controller reconciles instead of relaunching.
//! Launches are idempotent per task id. An exited container is removed only after its exit
//! report was acknowledged (its log is copied to the data dir first). A container that was
//! created but never started (the agent stopped in between, or a failed start kept for
//! post-mortem) is removed when the agent starts: a launch the control plane still owes is
//! re-sent when the agent registers, and creates it again.
//!
//! Capacity: CPUs and memory from the host, disk from the data dir's filesystem, GPUs from
//! `/dev/nvidia<N>` and `nvidia-smi` (or `--gpus N --gpu-model M`); each can be given instead.
//!
//! The URL the agent registers (where the control plane fetches task logs) is `--advertise-url`,
//! else the address it listens on; listening on every address (`0.0.0.0`) without an advertise
//! URL is refused, since `http://0.0.0.0:7071` is no address to fetch from.

use crate::api_types::{
    AgentCommand, ApiError, CommandBatch, HeartbeatRequest, RegisterRequest, RegisterResponse,
    Report, ReportRequest,
};
use crate::docker::{self, Isolation, LABEL_AGENT, LABEL_TASK};
use crate::extract::ApiPath;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_solver::resources::GPU_WHOLE_COUNT_MAX;
use berth_solver::{ContainerSpec, GpuModel, JobId, NodeGpus, Resources, TaskId};
use bollard::container::{
    InspectContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use bollard::system::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Bytes of a task's log kept after its container is gone.
pub const LOG_KEEP_BYTES_MAX: usize = 1 << 20;
/// Reports waiting to be sent, at most.
pub const REPORT_QUEUE_MAX: usize = 65_536;
/// How long `nvidia-smi` may take to name the GPUs.
pub const NVIDIA_SMI_TIMEOUT_MS: u64 = 10_000;
/// A container killed by SIGKILL exits with this code, the OOM killer's among others.
const OOM_EXIT_CODE: i32 = 137;
/// How long an exit with [`OOM_EXIT_CODE`] waits for the engine's `oom` event that may follow
/// the exit (see `Shared::oom_event_seen`).
pub const OOM_EVENT_WAIT_MS: u64 = 2_000;

/// The GPUs to offer where they are given (`--gpus`, `--gpu-model`); what is not given is
/// detected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuOverride {
    /// Devices to offer (`Some(0)`: none, whatever the host has).
    pub count: Option<u8>,
    /// Their model, named as in the catalogue (`T4`, `A10G`, `V100M16`).
    pub model: Option<String>,
}

/// What the host shows of its GPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuProbe {
    /// `/dev/nvidia<N>` device files.
    pub devices: u8,
    /// One name per device as `nvidia-smi --query-gpu=name --format=csv,noheader` prints them;
    /// `None` when nvidia-smi is missing or fails.
    pub smi_names: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The control plane, `http://127.0.0.1:7070`.
    pub server: String,
    /// A token of the agent scope.
    pub token: String,
    /// Unique per host, stable across restarts (container names and labels use it).
    pub name: String,
    pub zone: String,
    pub instance_type: String,
    /// The cloud instance this host is (`--instance-id`, EC2 user data passes it).
    pub instance_id: Option<String>,
    /// Zero fields are taken from the host.
    pub capacity: Resources,
    /// Where the log endpoint listens (port 0: any).
    pub listen: SocketAddr,
    /// Task logs kept after their containers are removed.
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub isolation: Isolation,
    /// GPUs given instead of detected.
    pub gpus: GpuOverride,
    /// The URL the control plane reaches the log endpoint at (`http://10.0.0.7:7071`); default:
    /// the address it listens on, which must then be a specific one.
    pub advertise_url: Option<String>,
    /// Keep a container whose start failed (state `created`) for post-mortem, until the agent
    /// restarts; by default it is removed at once.
    pub keep_failed_containers: bool,
}

impl AgentConfig {
    pub fn new(server: &str, token: &str, name: &str, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            name: name.to_string(),
            zone: "local".into(),
            instance_type: "local".into(),
            instance_id: None,
            capacity: Resources::ZERO,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            heartbeat_ms: 1_000,
            isolation: Isolation::default(),
            gpus: GpuOverride::default(),
            advertise_url: None,
            keep_failed_containers: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("agent name {0:?}: use letters, digits, '-' and '_' only")]
    BadName(String),
    #[error("{0}")]
    Config(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Running, and this agent was told to stop it: a SIGKILL exit is its doing.
    Stopping,
    /// Exited; the report is not acknowledged yet.
    Exited,
}

struct Shared {
    docker: Docker,
    config: AgentConfig,
    capacity: Resources,
    gpus: Option<NodeGpus>,
    http: reqwest::Client,
    url: String,
    tasks: Mutex<BTreeMap<TaskId, Phase>>,
    /// Held while a job network is created and a container joins it, and while a network is
    /// removed, so a removal never races a launch into the same network.
    net_lock: tokio::sync::Mutex<()>,
    /// The job of each task this agent runs (for the job network's clean-up).
    jobs: Mutex<BTreeMap<TaskId, JobId>>,
    reports: mpsc::Sender<Report>,
    /// False when the control plane does not know this agent (first start, or it restarted).
    registered: watch::Sender<bool>,
}

/// A running agent. Dropping it does not stop the containers (that is the point).
pub struct Agent {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// The log endpoint's URL.
    pub fn url(&self) -> &str {
        &self.shared.url
    }
    pub fn capacity(&self) -> Resources {
        self.shared.capacity
    }
    /// The GPUs it offers (registered with the control plane).
    pub fn gpus(&self) -> Option<&NodeGpus> {
        self.shared.gpus.as_ref()
    }
    /// Stops the agent's loops (its containers keep running).
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn host_capacity() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    Resources::new(cpus * 1000, mem_kib / 1024, 0, HOST_NET_MBPS_DEFAULT)
}

/// Network bandwidth offered when the configuration gives none (nothing enforces it yet; it is
/// a placement dimension only).
pub const HOST_NET_MBPS_DEFAULT: u64 = 10_000;

/// Free MiB of the filesystem holding `dir` (`df -Pm`), the disk a node offers by default.
fn disk_free_mib(dir: &std::path::Path) -> u64 {
    std::process::Command::new("df")
        .arg("-Pm")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(0)
}

/// What the host shows of its GPUs: `/dev/nvidia<N>` files, and the model names from
/// `nvidia-smi` when it is installed.
pub async fn probe_gpus() -> GpuProbe {
    let devices = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("nvidia"))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0);
    let smi = tokio::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .kill_on_drop(true)
        .output();
    let smi_names =
        match tokio::time::timeout(Duration::from_millis(NVIDIA_SMI_TIMEOUT_MS), smi).await {
            Ok(Ok(o)) if o.status.success() => Some(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        };
    GpuProbe {
        devices: devices.min(usize::from(u8::MAX)) as u8,
        smi_names,
    }
}

/// A catalogue model name from an `nvidia-smi` name: the vendor and brand words go, the board
/// variant goes, the memory size stays where the name has one (`Tesla T4` → `T4`, `NVIDIA
/// A10G` → `A10G`, `Tesla V100-SXM2-16GB` → `V100M16`, `NVIDIA H100 80GB HBM3` → `H100M80`).
pub fn gpu_model_name(smi_name: &str) -> String {
    let tokens: Vec<&str> = smi_name
        .split([' ', '-'])
        .filter(|t| !t.is_empty() && !matches!(*t, "NVIDIA" | "Tesla" | "GeForce" | "Quadro"))
        .collect();
    let gib = |t: &str| {
        t.strip_suffix("GB")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
    };
    let variant = |t: &str| {
        let u = t.to_ascii_uppercase();
        gib(t).is_some() || u.starts_with("SXM") || u.starts_with("PCIE") || u.starts_with("HBM")
    };
    let family: String = tokens.iter().take_while(|t| !variant(t)).copied().collect();
    if family.is_empty() {
        return smi_name.trim().to_string();
    }
    match tokens.iter().find_map(|t| gib(t)) {
        Some(g) => format!("{family}M{g}"),
        None => family,
    }
}

/// The GPUs an agent offers: what is given, the rest from the probe. Refused when there are
/// devices but no model (nvidia-smi missing and no `--gpu-model`).
pub fn resolve_gpus(given: &GpuOverride, probe: &GpuProbe) -> Result<Option<NodeGpus>, String> {
    let count = given.count.unwrap_or(probe.devices);
    if count == 0 {
        return Ok(None);
    }
    if count > GPU_WHOLE_COUNT_MAX {
        return Err(format!(
            "--gpus {count}: a node has at most {GPU_WHOLE_COUNT_MAX} GPUs"
        ));
    }
    let names = probe.smi_names.as_deref().unwrap_or_default();
    let model = match (&given.model, names.first()) {
        (Some(m), _) if !m.trim().is_empty() => m.trim().to_string(),
        (Some(_), _) => return Err("--gpu-model must not be empty".into()),
        (None, Some(first)) => {
            if names.iter().any(|n| n != first) {
                tracing::warn!(
                    ?names,
                    "GPUs of several models; offering them all as the first"
                );
            }
            gpu_model_name(first)
        }
        (None, None) => {
            return Err(format!(
                "{count} GPU devices (/dev/nvidia*) but no model: nvidia-smi is not available; \
                 give --gpu-model (e.g. T4), or --gpus 0 to offer none"
            ))
        }
    };
    Ok(Some(NodeGpus {
        count,
        model: GpuModel::new(model),
    }))
}

/// The URL to register: `--advertise-url` when given (checked), else `http://<bound address>`,
/// which must not be an unspecified one.
fn advertise_url(given: Option<&str>, bound: SocketAddr) -> Result<String, AgentError> {
    match given {
        Some(u) => {
            let u = u.trim_end_matches('/');
            match crate::api_types::agent_url_problem(u) {
                Some(why) => Err(AgentError::Config(format!("--advertise-url {u}: {why}"))),
                None => Ok(u.to_string()),
            }
        }
        None if bound.ip().is_unspecified() => Err(AgentError::Config(format!(
            "the agent listens on {bound} (every address), and the control plane cannot fetch \
             task logs from {ip}: give --advertise-url with the address it can reach, e.g. \
             --advertise-url http://10.0.0.7:{port}",
            ip = bound.ip(),
            port = bound.port()
        ))),
        None => Ok(format!("http://{bound}")),
    }
}

/// Connects to the local Docker engine (negotiating the API version).
pub async fn connect_docker() -> Result<Docker, AgentError> {
    let d = Docker::connect_with_local_defaults()?;
    let d = d.negotiate_version().await?;
    d.ping().await?;
    Ok(d)
}

/// Starts an agent: adopts its containers, serves logs, and runs its loops in the background.
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    if config.name.is_empty()
        || !config
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AgentError::BadName(config.name));
    }
    if config.advertise_url.is_none() {
        // Refused before anything starts (the port is not known yet, only the address).
        advertise_url(None, config.listen)?;
    }
    let gpus = resolve_gpus(&config.gpus, &probe_gpus().await).map_err(AgentError::Config)?;
    let docker = connect_docker().await?;
    std::fs::create_dir_all(config.data_dir.join("logs"))?;
    let host = host_capacity();
    let c = config.capacity;
    let capacity = Resources::new(
        if c.cpu_milli > 0 {
            c.cpu_milli
        } else {
            host.cpu_milli
        },
        if c.mem_mib > 0 {
            c.mem_mib
        } else {
            host.mem_mib
        },
        if c.disk_mib > 0 {
            c.disk_mib
        } else {
            disk_free_mib(&config.data_dir)
        },
        if c.net_mbps > 0 {
            c.net_mbps
        } else {
            host.net_mbps
        },
    );
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let url = advertise_url(config.advertise_url.as_deref(), listener.local_addr()?)?;
    let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE_MAX);
    let (registered, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        docker,
        config,
        capacity,
        gpus,
        http: reqwest::Client::new(),
        url,
        tasks: Mutex::new(BTreeMap::new()),
        jobs: Mutex::new(BTreeMap::new()),
        net_lock: tokio::sync::Mutex::new(()),
        reports: reports_tx,
        registered,
    });
    shared.adopt().await?;
    let app = Router::new()
        .route("/logs/{task}", get(logs_handler))
        .route_layer(middleware::from_fn_with_state(shared.clone(), agent_auth))
        .with_state(shared.clone());
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "agent log endpoint stopped");
        }
    })];
    tasks.push(tokio::spawn(shared.clone().poll_loop()));
    tasks.push(tokio::spawn(shared.clone().heartbeat_loop()));
    tasks.push(tokio::spawn(shared.clone().report_loop(reports_rx)));
    tracing::info!(
        agent = %shared.config.name,
        url = %shared.url,
        gpus = ?shared.gpus,
        "agent started"
    );
    Ok(Agent { shared, tasks })
}

async fn agent_auth(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == s.config.token);
    if ok {
        next.run(req).await
    } else {
        ApiError::new(401, "unauthenticated", "agent token required").into_response()
    }
}

async fn logs_handler(
    State(s): State<Arc<Shared>>,
    ApiPath(task): ApiPath<u64>,
) -> Result<Response, ApiError> {
    let task = TaskId(task);
    let name = docker::container_name(&s.config.name, task);
    let bytes = match s.container_logs(&name).await {
        Some(b) => b,
        None => tokio::fs::read(s.log_path(task))
            .await
            .map_err(|_| ApiError::not_found(format!("log of {task}")))?,
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}

/// Where a launch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Network,
    Create,
    Start,
}

/// The task's reason message for a failed launch: what failed, the engine's words, and for a
/// GPU task on an engine without the NVIDIA runtime, what to do about it.
fn launch_failure(stage: Stage, e: &bollard::errors::Error, gpu_devices: &[u8]) -> String {
    let what = match stage {
        Stage::Network => "creating the job network",
        Stage::Create => "creating the container",
        Stage::Start => "starting the container",
    };
    let mut m = format!("{what} failed: {e}");
    let text = e.to_string();
    if !gpu_devices.is_empty() && (text.contains("device driver") || text.contains("nvidia")) {
        m.push_str(&format!(
            "; the task was given GPU devices {gpu_devices:?} and this Docker engine cannot pass \
             GPUs (install the NVIDIA Container Toolkit, or start the agent with --gpus 0)"
        ));
    }
    m
}

/// Keeps the last `max` bytes of a log, from the start of a line (unless one line is longer).
fn keep_tail(log: &mut Vec<u8>, max: usize) {
    if log.len() <= max {
        return;
    }
    let cut = log.len() - max;
    let start = log[cut..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(cut, |i| cut + i + 1);
    log.drain(..start);
}

fn task_of_labels(labels: &Option<HashMap<String, String>>) -> Option<TaskId> {
    labels.as_ref()?.get(LABEL_TASK)?.parse().ok().map(TaskId)
}

impl Shared {
    fn log_path(&self, task: TaskId) -> PathBuf {
        self.config
            .data_dir
            .join("logs")
            .join(format!("task-{}.log", task.0))
    }

    fn known_tasks(&self) -> Vec<TaskId> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn set_phase(&self, task: TaskId, phase: Option<Phase>) {
        let mut t = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Some(p) => {
                t.insert(task, p);
            }
            None => {
                t.remove(&task);
            }
        }
    }

    /// Containers of this agent left by a previous run: running ones are watched again, exited
    /// ones have their exit reported.
    async fn adopt(self: &Arc<Self>) -> Result<(), AgentError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_AGENT}={}", self.config.name)],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await?;
        for c in list {
            let Some(task) = task_of_labels(&c.labels) else {
                continue;
            };
            let name = docker::container_name(&self.config.name, task);
            if c.state.as_deref() == Some("created") {
                // Never started: not a launch. One the control plane still owes is re-sent
                // when the agent registers, and creates the container again.
                tracing::info!(task = task.0, "removing a container that never started");
                self.remove(&name).await;
                continue;
            }
            let running = c.state.as_deref() == Some("running");
            if let Some(job) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::docker::LABEL_JOB)?.parse().ok())
            {
                self.note_job(task, JobId(job));
            }
            tracing::info!(task = task.0, running, "adopting container");
            self.set_phase(task, Some(Phase::Running));
            let me = self.clone();
            tokio::spawn(async move { me.watch(task).await });
        }
        Ok(())
    }

    async fn remove(&self, name: &str) {
        let _ = self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }

    async fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, String> {
        self.http
            .post(format!("{}{path}", self.config.server))
            .bearer_auth(&self.config.token)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| e.to_string())
    }

    async fn register(&self) -> Result<u32, String> {
        let req = RegisterRequest {
            name: self.config.name.clone(),
            capacity: self.capacity,
            zone: self.config.zone.clone(),
            instance_type: self.config.instance_type.clone(),
            url: self.url.clone(),
            tasks: self.known_tasks(),
            instance_id: self.config.instance_id.clone(),
            gpus: self.gpus.clone(),
        };
        let resp = self.post("/v1/agent/register", &req).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(format!(
                "{status}: {}",
                resp.text().await.unwrap_or_default()
            ));
        }
        let r: RegisterResponse = resp.json().await.map_err(|e| e.to_string())?;
        Ok(r.node)
    }

    async fn poll_loop(self: Arc<Self>) {
        let mut after = 0u64;
        loop {
            if !*self.registered.borrow() {
                match self.register().await {
                    Ok(node) => {
                        tracing::info!(agent = %self.config.name, node, "registered");
                        after = 0;
                        self.registered.send_replace(true);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registration failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let resp = self
                .http
                .get(format!("{}/v1/agent/commands", self.config.server))
                .query(&[
                    ("node", self.config.name.clone()),
                    ("after", after.to_string()),
                ])
                .bearer_auth(&self.config.token)
                .timeout(Duration::from_millis(crate::server::POLL_HOLD_MS + 10_000))
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            if resp.status().as_u16() == 409 {
                self.registered.send_replace(false);
                continue;
            }
            if !resp.status().is_success() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let Ok(batch) = resp.json::<CommandBatch>().await else {
                continue;
            };
            for (seq, cmd) in batch.commands {
                if seq <= after {
                    continue;
                }
                self.execute(cmd).await;
                after = seq;
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let period = Duration::from_millis(self.config.heartbeat_ms.max(50));
        loop {
            tokio::time::sleep(period).await;
            if !*self.registered.borrow() {
                continue;
            }
            let body = HeartbeatRequest {
                node: self.config.name.clone(),
            };
            match self.post("/v1/agent/heartbeat", &body).await {
                Ok(r) if r.status().as_u16() == 409 => {
                    self.registered.send_replace(false);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Sends reports one at a time, in order, each until the control plane acknowledged it.
    async fn report_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Report>) {
        let mut registered = self.registered.subscribe();
        while let Some(report) = rx.recv().await {
            loop {
                if !*registered.borrow_and_update() {
                    let _ = registered.changed().await;
                    continue;
                }
                let body = ReportRequest {
                    node: self.config.name.clone(),
                    reports: vec![report.clone()],
                };
                match self.post("/v1/agent/report", &body).await {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) if r.status().as_u16() == 409 => {
                        self.registered.send_replace(false);
                    }
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), "report refused; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "report failed; retrying");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
            if let Report::Exited { task, .. } = report {
                // Acknowledged: the container may go (its log is in the data dir).
                self.set_phase(task, None);
                let name = docker::container_name(&self.config.name, task);
                self.remove(&name).await;
                let job = self
                    .jobs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task);
                if let (Some(job), docker::NetworkMode::PerJob) =
                    (job, self.config.isolation.network)
                {
                    // Refused while other tasks of the job still use it: fine.
                    let net = docker::network_name(&self.config.isolation.network_prefix, job);
                    let _guard = self.net_lock.lock().await;
                    let _ = self.docker.remove_network(&net).await;
                }
            }
        }
    }

    fn note_job(&self, task: TaskId, job: JobId) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task, job);
    }

    async fn report(&self, r: Report) {
        if self.reports.send(r).await.is_err() {
            tracing::error!("report queue closed");
        }
    }

    async fn execute(self: &Arc<Self>, cmd: AgentCommand) {
        match cmd {
            AgentCommand::Launch {
                task,
                job,
                resources,
                gpu_devices,
                container,
            } => {
                if self
                    .tasks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&task)
                {
                    return; // already launched: a re-sent command
                }
                match self
                    .launch(task, job, &resources, &gpu_devices, &container)
                    .await
                {
                    Ok(()) => {
                        self.set_phase(task, Some(Phase::Running));
                        self.note_job(task, job);
                        self.report(Report::Started { task }).await;
                        let me = self.clone();
                        tokio::spawn(async move { me.watch(task).await });
                    }
                    Err(message) => {
                        tracing::warn!(task = task.0, error = %message, "launch failed");
                        self.report(Report::LaunchFailed { task, message }).await;
                    }
                }
            }
            AgentCommand::Kill { task, grace_ms } => {
                let name = docker::container_name(&self.config.name, task);
                let docker = self.docker.clone();
                let known = {
                    let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
                    match tasks.get_mut(&task) {
                        Some(p) => {
                            if *p == Phase::Running {
                                *p = Phase::Stopping;
                            }
                            true
                        }
                        None => false,
                    }
                };
                tokio::spawn(async move {
                    let t = grace_ms.div_ceil(1000) as i64;
                    let _ = docker
                        .stop_container(&name, Some(StopContainerOptions { t }))
                        .await;
                    if !known {
                        // A stray the controller does not know: nobody watches it.
                        let _ = docker
                            .remove_container(
                                &name,
                                Some(RemoveContainerOptions {
                                    force: true,
                                    ..Default::default()
                                }),
                            )
                            .await;
                    }
                });
            }
        }
    }

    /// Creates and starts the task's container. On failure the container is removed (or kept,
    /// not started, with `keep_failed_containers`) and the answer is the task's reason message.
    async fn launch(
        &self,
        task: TaskId,
        job: JobId,
        resources: &Resources,
        gpu_devices: &[u8],
        spec: &ContainerSpec,
    ) -> Result<(), String> {
        let _guard = self.net_lock.lock().await;
        let name = docker::container_name(&self.config.name, task);
        let mut tries = 0;
        loop {
            tries += 1;
            let Err((stage, e)) = self
                .try_launch(task, job, resources, gpu_devices, spec)
                .await
            else {
                return Ok(());
            };
            // Another agent on the same engine may remove the job's network between our check
            // and our start (its last task of the job ended): one retry re-creates it.
            let network_trouble = e.to_string().to_ascii_lowercase().contains("network");
            let retry = tries < 2
                && stage != Stage::Network
                && (network_trouble || self.job_network_gone(job).await);
            if retry || !self.config.keep_failed_containers || stage != Stage::Start {
                self.remove(&name).await;
            }
            if !retry {
                return Err(launch_failure(stage, &e, gpu_devices));
            }
        }
    }

    async fn job_network_gone(&self, job: JobId) -> bool {
        let iso = &self.config.isolation;
        if iso.network != docker::NetworkMode::PerJob {
            return false;
        }
        let net = docker::network_name(&iso.network_prefix, job);
        self.docker
            .inspect_network::<String>(&net, None)
            .await
            .is_err()
    }

    async fn try_launch(
        &self,
        task: TaskId,
        job: JobId,
        resources: &Resources,
        gpu_devices: &[u8],
        spec: &ContainerSpec,
    ) -> Result<(), (Stage, bollard::errors::Error)> {
        let iso = &self.config.isolation;
        let network_id = if iso.network == docker::NetworkMode::PerJob {
            let id = docker::ensure_network(&self.docker, &iso.network_prefix, job)
                .await
                .map_err(|e| (Stage::Network, e))?;
            Some(id)
        } else {
            None
        };
        let launch = docker::LaunchSpec {
            task,
            job,
            resources,
            gpu_devices,
            container: spec,
        };
        let (opts, config) =
            docker::container_config(iso, &self.config.name, &launch, network_id.as_deref());
        let name = opts.name.clone();
        match self
            .docker
            .create_container(Some(opts.clone()), config.clone())
            .await
        {
            Ok(_) => {}
            // The task's container exists already (not in this agent's books): running means
            // launched, which a launch must be idempotent about; anything else is replaced.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let running = self
                    .docker
                    .inspect_container(&name, None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|i| i.state?.running)
                    .unwrap_or(false);
                if running {
                    tracing::info!(task = task.0, "container already running: launched");
                    return Ok(());
                }
                self.remove(&name).await;
                self.docker
                    .create_container(Some(opts), config)
                    .await
                    .map_err(|e| (Stage::Create, e))?;
            }
            Err(e) => return Err((Stage::Create, e)),
        }
        self.docker
            .start_container::<String>(&name, None)
            .await
            .map_err(|e| (Stage::Start, e))?;
        Ok(())
    }

    /// Waits for the task's container to exit, keeps its log, reports the exit.
    async fn watch(self: Arc<Self>, task: TaskId) {
        let name = docker::container_name(&self.config.name, task);
        let mut wait = self.docker.wait_container(
            &name,
            Some(WaitContainerOptions {
                condition: "not-running".to_string(),
            }),
        );
        // The stream ends (or errs, for a non-zero exit) when the container stops.
        while let Some(r) = wait.next().await {
            if r.is_err() {
                break;
            }
        }
        let inspect = self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await;
        let (exit_code, mut oom, started_at) = match &inspect {
            Ok(i) => {
                let st = i.state.clone().unwrap_or_default();
                (
                    st.exit_code.unwrap_or(-1) as i32,
                    st.oom_killed.unwrap_or(false),
                    st.started_at,
                )
            }
            // Removed behind our back: report a failure rather than nothing.
            Err(_) => (-1, false, None),
        };
        let stopped_here = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task)
            == Some(&Phase::Stopping);
        if !oom && exit_code == OOM_EXIT_CODE && !stopped_here {
            if let Some(since) = started_at {
                oom = self.oom_event_seen(&name, &since).await;
                if oom {
                    tracing::info!(
                        task = task.0,
                        "OOM kill known from the engine's oom event (its state said otherwise)"
                    );
                }
            }
        }
        if let Some(bytes) = self.container_logs(&name).await {
            let _ = tokio::fs::write(self.log_path(task), bytes).await;
        }
        self.set_phase(task, Some(Phase::Exited));
        tracing::info!(task = task.0, exit_code, oom, "container exited");
        self.report(Report::Exited {
            task,
            exit_code,
            oom,
        })
        .await;
    }

    /// Whether the engine logged an `oom` event for the container since `since` (its start,
    /// RFC 3339), waiting up to [`OOM_EVENT_WAIT_MS`] for one still on its way.
    ///
    /// Why: on cgroup v1 with containerd before 2.2 the shim may send the task's OOM event
    /// after its exit event; the engine then records the exit with `OOMKilled: false` and
    /// never corrects it, though it still logs the `oom` event (containerd PR 12714 fixed the
    /// order). Asked only for a SIGKILL exit (137), so other exits are reported at once.
    async fn oom_event_seen(&self, name: &str, since: &str) -> bool {
        let until_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() + u128::from(OOM_EVENT_WAIT_MS))
            .unwrap_or(0);
        let until = format!("{}.{:03}", until_s / 1000, until_s % 1000);
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("container".to_string(), vec![name.to_string()]),
            ("event".to_string(), vec!["oom".to_string()]),
        ]);
        let mut events = self.docker.events(Some(EventsOptions::<String> {
            since: Some(since.to_string()),
            until: Some(until),
            filters,
        }));
        let bound = Duration::from_millis(OOM_EVENT_WAIT_MS + 1_000);
        matches!(
            tokio::time::timeout(bound, events.next()).await,
            Ok(Some(Ok(_)))
        )
    }

    /// The container's stdout and stderr (interleaved), the last [`LOG_KEEP_BYTES_MAX`] bytes;
    /// `None` when the container is gone.
    async fn container_logs(&self, name: &str) -> Option<Vec<u8>> {
        let mut stream = self.docker.logs(
            name,
            Some(LogsOptions::<String> {
                stdout: true,
                stderr: true,
                tail: "all".into(),
                ..Default::default()
            }),
        );
        let mut out: Vec<u8> = Vec::new();
        let mut any = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    any = true;
                    out.extend_from_slice(&chunk.into_bytes());
                    if out.len() > 2 * LOG_KEEP_BYTES_MAX {
                        out.drain(..out.len() - LOG_KEEP_BYTES_MAX);
                    }
                }
                Err(_) if !any => return None,
                Err(_) => break,
            }
        }
        keep_tail(&mut out, LOG_KEEP_BYTES_MAX);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_names_become_catalogue_models() {
        for (smi, model) in [
            ("Tesla T4", "T4"),
            ("NVIDIA A10G", "A10G"),
            ("Tesla V100-SXM2-16GB", "V100M16"),
            ("Tesla V100-SXM2-32GB", "V100M32"),
            ("NVIDIA A100-SXM4-40GB", "A100M40"),
            ("NVIDIA H100 80GB HBM3", "H100M80"),
            ("NVIDIA GeForce RTX 3090", "RTX3090"),
            ("NVIDIA L4", "L4"),
        ] {
            assert_eq!(gpu_model_name(smi), model, "{smi}");
        }
    }

    #[test]
    fn gpus_given_override_what_is_detected() {
        let host = GpuProbe {
            devices: 4,
            smi_names: Some(vec!["Tesla T4".into(); 4]),
        };
        let none = GpuProbe::default();
        let gpus = |count: u8, model: &str| {
            Some(NodeGpus {
                count,
                model: GpuModel::new(model),
            })
        };
        let given = |count: Option<u8>, model: Option<&str>| GpuOverride {
            count,
            model: model.map(str::to_string),
        };
        assert_eq!(resolve_gpus(&given(None, None), &host), Ok(gpus(4, "T4")));
        assert_eq!(resolve_gpus(&given(None, None), &none), Ok(None));
        assert_eq!(
            resolve_gpus(&given(Some(2), Some("T4")), &none),
            Ok(gpus(2, "T4"))
        );
        assert_eq!(
            resolve_gpus(&given(None, Some("A10G")), &host),
            Ok(gpus(4, "A10G"))
        );
        assert_eq!(resolve_gpus(&given(Some(0), None), &host), Ok(None));
        let devices_only = GpuProbe {
            devices: 1,
            smi_names: None,
        };
        let e = resolve_gpus(&given(None, None), &devices_only).unwrap_err();
        assert!(e.contains("--gpu-model"), "{e}");
        assert!(resolve_gpus(&given(Some(17), Some("T4")), &none).is_err());
    }

    #[test]
    fn the_advertised_url_is_reachable_or_refused() {
        let any: SocketAddr = "0.0.0.0:7071".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let e = advertise_url(None, any).unwrap_err().to_string();
        assert!(
            e.contains("--advertise-url") && e.contains("0.0.0.0"),
            "{e}"
        );
        assert_eq!(advertise_url(None, lo).unwrap(), "http://127.0.0.1:40000");
        assert_eq!(
            advertise_url(Some("http://10.0.0.7:7071/"), any).unwrap(),
            "http://10.0.0.7:7071"
        );
        assert!(advertise_url(Some("http://0.0.0.0:7071"), any).is_err());
        assert!(advertise_url(Some("http://[::]:7071"), any).is_err());
        assert!(advertise_url(Some("10.0.0.7:7071"), any).is_err());
        let v6: SocketAddr = "[::]:7071".parse().unwrap();
        assert!(advertise_url(None, v6).is_err());
    }

    #[test]
    fn a_capped_log_starts_at_a_line() {
        let mut log = b"first line\nsecond line\nthird\n".to_vec();
        keep_tail(&mut log, 15);
        assert_eq!(log, b"third\n");
        let mut long = vec![b'x'; 100];
        keep_tail(&mut long, 10);
        assert_eq!(long.len(), 10);
    }
}
