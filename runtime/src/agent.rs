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
//! report was acknowledged (its log is copied to the data dir first).

use crate::api_types::{
    AgentCommand, ApiError, CommandBatch, HeartbeatRequest, RegisterRequest, RegisterResponse,
    Report, ReportRequest,
};
use crate::docker::{self, Isolation, LABEL_AGENT, LABEL_TASK};
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_solver::{ContainerSpec, JobId, Resources, TaskId};
use bollard::container::{
    InspectContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Exited; the report is not acknowledged yet.
    Exited,
}

struct Shared {
    docker: Docker,
    config: AgentConfig,
    capacity: Resources,
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
    let url = format!("http://{}", listener.local_addr()?);
    let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE_MAX);
    let (registered, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        docker,
        config,
        capacity,
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
    tracing::info!(agent = %shared.config.name, url = %shared.url, "agent started");
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
    Path(task): Path<u64>,
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
                let _ = self
                    .docker
                    .remove_container(
                        &name,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
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
                    Err(e) => {
                        tracing::warn!(task = task.0, error = %e, "launch failed");
                        let name = docker::container_name(&self.config.name, task);
                        let _ = self
                            .docker
                            .remove_container(
                                &name,
                                Some(RemoveContainerOptions {
                                    force: true,
                                    ..Default::default()
                                }),
                            )
                            .await;
                        self.report(Report::LaunchFailed {
                            task,
                            message: e.to_string(),
                        })
                        .await;
                    }
                }
            }
            AgentCommand::Kill { task, grace_ms } => {
                let name = docker::container_name(&self.config.name, task);
                let docker = self.docker.clone();
                let known = self
                    .tasks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&task);
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

    async fn launch(
        &self,
        task: TaskId,
        job: JobId,
        resources: &Resources,
        gpu_devices: &[u8],
        spec: &ContainerSpec,
    ) -> Result<(), bollard::errors::Error> {
        let _guard = self.net_lock.lock().await;
        // Another agent on the same engine may remove the job's network between our check and
        // our start (its last task of the job ended): one retry re-creates it.
        let mut last_err = None;
        for _ in 0..2 {
            match self
                .try_launch(task, job, resources, gpu_devices, spec)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let name = docker::container_name(&self.config.name, task);
                    let _ = self
                        .docker
                        .remove_container(
                            &name,
                            Some(RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("two failed tries"))
    }

    async fn try_launch(
        &self,
        task: TaskId,
        job: JobId,
        resources: &Resources,
        gpu_devices: &[u8],
        spec: &ContainerSpec,
    ) -> Result<(), bollard::errors::Error> {
        let iso = &self.config.isolation;
        let network_id = if iso.network == docker::NetworkMode::PerJob {
            Some(docker::ensure_network(&self.docker, &iso.network_prefix, job).await?)
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
        self.docker.create_container(Some(opts), config).await?;
        self.docker.start_container::<String>(&name, None).await?;
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
        let (exit_code, oom) = match &inspect {
            Ok(i) => {
                let st = i.state.clone().unwrap_or_default();
                (
                    st.exit_code.unwrap_or(-1) as i32,
                    st.oom_killed.unwrap_or(false),
                )
            }
            // Removed behind our back: report a failure rather than nothing.
            Err(_) => (-1, false),
        };
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
        if out.len() > LOG_KEEP_BYTES_MAX {
            out.drain(..out.len() - LOG_KEEP_BYTES_MAX);
        }
        Some(out)
    }
}
