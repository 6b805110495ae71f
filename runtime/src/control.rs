//! The control plane's core: one task owns the [`Controller`] (an actor over an mpsc channel).
//!
//! API requests, agent reports, agent liveness and the controller's own wake-ups all become
//! [`Event`]s stepped here with `now_ms` from the clock, one at a time. Each step is committed
//! to the [`Store`] (event in, records out, one fsynced transaction) **before** anything is
//! acknowledged or sent to an agent; then its commands are carried out: records go to the
//! event stream and metrics, launches and kills to the agents' command queues.
//!
//! On start the stored events are replayed into a fresh controller (same configuration and
//! seed, so the same decisions); the commands replayed are only booked, not re-sent. Agents
//! then re-register with what actually runs on them ([`Event::ReconcileTasks`]), and nodes
//! that never come back are declared lost after the heartbeat timeout.

use crate::api_types::{
    AgentCommand, ApiError, CommandBatch, DryPlacement, DryRun, DryUnplaced, Explain, ReasonCount,
    RegisterRequest, RegisterResponse, Report, ScaleRequest, SubmitResponse,
};
use crate::cloud::{CloudCommand, CloudReport, ProvisionRequest};
use crate::metrics::Metrics;
use crate::store::{enum_name, Store};
use berth_solver::catalog::Catalog;
use berth_solver::controller::{
    Command, Controller, ControllerConfig, Event, InstanceId, JobState, RequestId,
};
use berth_solver::job::JobKind;
use berth_solver::resources::GPU_WHOLE_COUNT_MAX;
use berth_solver::{
    ClusterSpec, JobId, JobSpec, NodeAttributes, NodeId, NodeSpec, Placer, TaskId, TaskRequest,
    TaskState,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Bounds of the actor's queues.
pub const ACTOR_QUEUE_MAX: usize = 1024;
pub const EVENT_STREAM_BUFFER_MAX: usize = 4096;
/// Commands kept for an agent that has not acknowledged them.
pub const AGENT_QUEUE_MAX: usize = 100_000;

/// How the control plane behaves (beyond the controller's own configuration).
#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub controller: ControllerConfig,
    /// Seed of the controller's RNG. Must stay the same across restarts on one data dir
    /// (replay depends on it).
    pub seed: u64,
    /// An agent silent this long is lost ([`Event::NodeLost`]).
    pub heartbeat_timeout_ms: u64,
    /// How often agent liveness is checked.
    pub liveness_interval_ms: u64,
    /// The cloud driver (EC2 pools), when pools are configured: provisioning and termination
    /// commands go there, in order; without one they are only logged.
    pub cloud: Option<mpsc::Sender<CloudCommand>>,
    /// The instance catalogue the controller plans pools with: the shipped one, or with EC2
    /// pools its types as DescribeInstanceTypes describes them (`serve::start` sets it). Must
    /// stay the same across restarts on one data dir (replay depends on it).
    pub catalog: Arc<Catalog>,
    /// EC2 pools: `serve::start` fills the controller's pools from it and starts the driver.
    #[cfg(feature = "ec2")]
    pub ec2: Option<crate::ec2::Ec2Config>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            controller: ControllerConfig::default(),
            seed: 7,
            heartbeat_timeout_ms: 10_000,
            liveness_interval_ms: 500,
            cloud: None,
            catalog: Arc::new(Catalog::ec2().clone()),
            #[cfg(feature = "ec2")]
            ec2: None,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What the actor is asked to do.
pub enum Msg {
    Submit(JobSpec, Reply<SubmitResponse>),
    DryRun(JobSpec, Reply<DryRun>),
    Explain(JobId, Reply<Explain>),
    Scale(JobId, ScaleRequest, Reply<()>),
    KillJob(JobId, Reply<()>),
    KillTask(TaskId, Reply<()>),
    Register(RegisterRequest, Reply<RegisterResponse>),
    Heartbeat(String, Reply<()>),
    Report(String, Vec<Report>, Reply<()>),
    Poll(String, u64, Reply<CommandBatch>),
    NodeUrl(u32, Reply<String>),
    Metrics(Reply<String>),
    Ready(Reply<()>),
    /// What the cloud driver found out (no reply).
    Cloud(CloudReport),
}

/// A handle on the actor: how the HTTP layer talks to it.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Msg>,
    pub events: broadcast::Sender<String>,
}

impl ControlHandle {
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ApiError::unavailable("the control plane is shutting down"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the control plane dropped the request"))?
    }

    /// Sends a message that has no reply.
    pub async fn tell(&self, msg: Msg) -> Result<(), ApiError> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| ApiError::unavailable("the control plane is shutting down"))
    }
}

/// A provisioning request the controller still waits for (driver-side bookkeeping, rebuilt
/// by replay): what is still owed, what was reported, when it was issued.
struct InFlight {
    req: ProvisionRequest,
    launched: Vec<InstanceId>,
    issued_ms: u64,
}

struct JobInfo {
    spec: JobSpec,
    state: JobState,
    last_unplaced: Option<String>,
}

struct LiveTask {
    job: JobId,
    state: TaskState,
    accepted_ms: u64,
}

struct Session {
    url: String,
    last_seen_ms: u64,
    queue: VecDeque<(u64, AgentCommand)>,
    next_seq: u64,
    waiter: Option<Reply<CommandBatch>>,
}

impl Session {
    fn new(url: String, now_ms: u64) -> Session {
        Session {
            url,
            last_seen_ms: now_ms,
            queue: VecDeque::new(),
            next_seq: 1,
            waiter: None,
        }
    }

    fn push(&mut self, cmd: AgentCommand) {
        if self.queue.len() >= AGENT_QUEUE_MAX {
            tracing::warn!("agent command queue full; dropping the oldest command");
            self.queue.pop_front();
        }
        self.queue.push_back((self.next_seq, cmd));
        self.next_seq += 1;
        self.flush();
    }

    fn flush(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        if let Some(w) = self.waiter.take() {
            let _ = w.send(Ok(CommandBatch {
                commands: self.queue.iter().cloned().collect(),
            }));
        }
    }
}

struct Actor {
    ctl: Controller,
    config: ControlConfig,
    store: Arc<dyn Store>,
    last_ms: u64,
    jobs: BTreeMap<JobId, JobInfo>,
    next_job: u64,
    tasks: BTreeMap<TaskId, LiveTask>,
    /// Launches not yet known started, and kills not yet known finished: re-sent when the
    /// node's agent (re-)registers.
    launches: BTreeMap<TaskId, (NodeId, AgentCommand)>,
    kills: BTreeMap<TaskId, (NodeId, AgentCommand)>,
    node_by_name: BTreeMap<String, NodeId>,
    live_nodes: BTreeSet<NodeId>,
    next_node: u32,
    sessions: BTreeMap<NodeId, Session>,
    wake_at: Option<u64>,
    /// Set when the store refused a write: the controller is ahead of the store, so nothing
    /// more is accepted (a restart replays the store).
    failed: Option<String>,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<String>,
    in_flight: BTreeMap<RequestId, InFlight>,
    /// The pool of every instance the controller provisioned (for the agent's registration).
    instance_pool: BTreeMap<InstanceId, String>,
    /// Instances already reported interrupted.
    interrupted: BTreeSet<InstanceId>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts the actor: replays the store, then serves messages until every handle is dropped.
pub fn spawn(
    config: ControlConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) -> Result<(ControlHandle, tokio::task::JoinHandle<()>), String> {
    let ctl = Controller::new(
        config.controller.clone(),
        &config.catalog,
        &ClusterSpec::default(),
        config.seed,
    )
    .map_err(|e| format!("controller configuration: {e}"))?;
    let (events, _) = broadcast::channel(EVENT_STREAM_BUFFER_MAX);
    let mut actor = Actor {
        ctl,
        config,
        store,
        last_ms: 0,
        jobs: BTreeMap::new(),
        next_job: 1,
        tasks: BTreeMap::new(),
        launches: BTreeMap::new(),
        kills: BTreeMap::new(),
        node_by_name: BTreeMap::new(),
        live_nodes: BTreeSet::new(),
        next_node: 1,
        sessions: BTreeMap::new(),
        wake_at: None,
        failed: None,
        metrics,
        events: events.clone(),
        in_flight: BTreeMap::new(),
        instance_pool: BTreeMap::new(),
        interrupted: BTreeSet::new(),
    };
    actor.replay()?;
    let (tx, rx) = mpsc::channel(ACTOR_QUEUE_MAX);
    let join = tokio::spawn(actor.run(rx));
    Ok((ControlHandle { tx, events }, join))
}

impl Actor {
    fn now(&mut self) -> u64 {
        self.last_ms = self.last_ms.max(wall_ms());
        self.last_ms
    }

    fn replay(&mut self) -> Result<(), String> {
        let events = self
            .store
            .load_events()
            .map_err(|e| format!("loading the store: {e}"))?;
        let n = events.len();
        for (now_ms, ev) in events {
            self.before_step(&ev);
            self.last_ms = self.last_ms.max(now_ms);
            let cmds = self.ctl.step(now_ms, ev);
            self.book(now_ms, &cmds, false);
        }
        let now = self.now();
        // Nodes alive at the crash get a heartbeat-timeout's grace to re-register.
        for &n in &self.live_nodes {
            self.sessions.insert(n, Session::new(String::new(), now));
        }
        // Requests issued before the restart and not fully reported: the cloud driver adopts
        // what they launched, or issues them again with the same client token.
        let provision_ms = self.config.controller.timeouts.provision_ms;
        let recover: Vec<(ProvisionRequest, Vec<InstanceId>)> = self
            .in_flight
            .values()
            .filter(|f| f.issued_ms + provision_ms > now)
            .map(|f| (f.req.clone(), f.launched.clone()))
            .collect();
        if !recover.is_empty() {
            tracing::info!(
                requests = recover.len(),
                "recovering in-flight provisioning requests"
            );
            self.send_cloud(CloudCommand::Recover(recover));
        }
        tracing::info!(
            events = n,
            jobs = self.jobs.len(),
            live_tasks = self.tasks.len(),
            nodes = self.live_nodes.len(),
            "store replayed"
        );
        Ok(())
    }

    /// Driver-side bookkeeping of an event about to be stepped (live or replayed).
    fn before_step(&mut self, ev: &Event) {
        match ev {
            Event::JobSubmitted { job, spec, .. } => {
                self.next_job = self.next_job.max(job.0 + 1);
                self.jobs.insert(
                    *job,
                    JobInfo {
                        spec: spec.clone(),
                        state: JobState::Accepted,
                        last_unplaced: None,
                    },
                );
            }
            Event::NodeReady { node, .. } => {
                self.next_node = self.next_node.max(node.id.0 + 1);
                self.node_by_name.insert(node.name.clone(), node.id);
                self.live_nodes.insert(node.id);
            }
            Event::NodeLost { node } => {
                self.live_nodes.remove(node);
                self.sessions.remove(node);
            }
            Event::InstanceLaunched { request, instance } => {
                if let Some(f) = self.in_flight.get_mut(request) {
                    if !f.launched.contains(instance) && f.req.count > 0 {
                        f.req.count -= 1;
                        f.launched.push(instance.clone());
                        self.instance_pool
                            .insert(instance.clone(), f.req.pool.clone());
                    }
                    if f.req.count == 0 {
                        self.in_flight.remove(request);
                    }
                }
            }
            Event::InstanceLaunchFailed { request, count, .. } => {
                if let Some(f) = self.in_flight.get_mut(request) {
                    f.req.count = f.req.count.saturating_sub(*count);
                    if f.req.count == 0 {
                        self.in_flight.remove(request);
                    }
                }
            }
            _ => {}
        }
    }

    /// Steps the controller, commits the step, then carries out its commands.
    fn step(&mut self, ev: Event) -> Result<Vec<Command>, ApiError> {
        if let Some(f) = &self.failed {
            return Err(ApiError::unavailable(format!("store failed: {f}")));
        }
        let now = self.now();
        self.before_step(&ev);
        let cmds = self.ctl.step(now, ev.clone());
        let store = self.store.clone();
        let res = tokio::task::block_in_place(|| store.commit_step(now, &ev, &cmds));
        if let Err(e) = res {
            tracing::error!(error = %e, "store commit failed; refusing further work");
            self.failed = Some(e.to_string());
            return Err(ApiError::unavailable(format!("store failed: {e}")));
        }
        self.metrics.steps.inc();
        self.book(now, &cmds, true);
        Ok(cmds)
    }

    /// Books a step's commands; `live` also sends them (false while replaying).
    fn book(&mut self, now_ms: u64, cmds: &[Command], live: bool) {
        for c in cmds {
            match c {
                Command::LaunchTask {
                    task,
                    job,
                    node,
                    resources,
                    gpus,
                } => {
                    let container = self
                        .jobs
                        .get(job)
                        .and_then(|j| j.spec.container.clone())
                        .unwrap_or_default();
                    let cmd = AgentCommand::Launch {
                        task: *task,
                        job: *job,
                        resources: *resources,
                        gpu_devices: gpus.iter().map(|g| g.device).collect(),
                        container,
                    };
                    self.launches.insert(*task, (*node, cmd.clone()));
                    if let Some(t) = self.tasks.get_mut(task) {
                        t.state = TaskState::Launched;
                    }
                    if live {
                        self.metrics.placements.inc();
                        self.send(*node, cmd);
                    }
                }
                Command::KillTask {
                    task,
                    node,
                    grace_ms,
                    ..
                } => {
                    let cmd = AgentCommand::Kill {
                        task: *task,
                        grace_ms: *grace_ms,
                    };
                    self.kills.insert(*task, (*node, cmd.clone()));
                    if live {
                        self.send(*node, cmd);
                    }
                }
                Command::RecordTask(r) => {
                    match r.state {
                        TaskState::Accepted => {
                            self.tasks.insert(
                                r.task,
                                LiveTask {
                                    job: r.job,
                                    state: r.state,
                                    accepted_ms: now_ms,
                                },
                            );
                        }
                        TaskState::Finished => {
                            self.tasks.remove(&r.task);
                            self.launches.remove(&r.task);
                            self.kills.remove(&r.task);
                            if live {
                                let reason = r.reason.as_ref().map(enum_name).unwrap_or_default();
                                self.metrics.finished(&reason);
                            }
                        }
                        TaskState::Started => {
                            self.launches.remove(&r.task);
                            if let Some(t) = self.tasks.get_mut(&r.task) {
                                t.state = r.state;
                                if live {
                                    self.metrics
                                        .launch_latency
                                        .observe_ms(now_ms.saturating_sub(t.accepted_ms));
                                }
                            }
                        }
                        _ => {
                            if let Some(t) = self.tasks.get_mut(&r.task) {
                                t.state = r.state;
                            }
                        }
                    }
                    if live {
                        self.publish("task", serde_json::to_value(r).ok());
                    }
                }
                Command::RecordJob {
                    job,
                    state,
                    message,
                } => {
                    if let Some(j) = self.jobs.get_mut(job) {
                        j.state = *state;
                        if *state != JobState::Accepted {
                            j.last_unplaced = None;
                        }
                    }
                    if live {
                        self.publish(
                            "job",
                            Some(serde_json::json!({
                                "job": job, "state": enum_name(state), "message": message
                            })),
                        );
                    }
                }
                Command::RecordUnplaced {
                    job,
                    pending,
                    reasons,
                } => {
                    let summary = format!("{pending} pending; {reasons}");
                    if let Some(j) = self.jobs.get_mut(job) {
                        j.last_unplaced = Some(summary.clone());
                    }
                    if live {
                        self.publish(
                            "unplaced",
                            Some(serde_json::json!({"job": job, "summary": summary})),
                        );
                    }
                }
                Command::WakeAt { at_ms } => self.wake_at = Some(*at_ms),
                Command::ProvisionInstances {
                    request,
                    pool,
                    instance_type,
                    zone,
                    count,
                } => {
                    let req = ProvisionRequest {
                        request: *request,
                        pool: pool.clone(),
                        instance_type: instance_type.clone(),
                        zone: zone.clone(),
                        count: *count,
                    };
                    self.in_flight.insert(
                        *request,
                        InFlight {
                            req: req.clone(),
                            launched: Vec::new(),
                            issued_ms: now_ms,
                        },
                    );
                    if live {
                        self.send_cloud(CloudCommand::Provision(req));
                    }
                }
                Command::TerminateInstance { instance, reason } => {
                    if live {
                        tracing::info!(%instance, reason = %enum_name(reason), "terminating instance");
                        self.send_cloud(CloudCommand::Terminate(instance.clone()));
                    }
                }
            }
        }
    }

    fn send_cloud(&self, cmd: CloudCommand) {
        match &self.config.cloud {
            // A full queue loses the command: the controller's provision timeout (or the next
            // reconcile, for a termination) makes up for it.
            Some(tx) => {
                if let Err(e) = tx.try_send(cmd) {
                    tracing::error!(error = %e, "cloud driver queue full or closed; command dropped");
                }
            }
            None => tracing::warn!(?cmd, "cloud command but no cloud driver is configured"),
        }
    }

    /// A listing of the cluster's instances: adopts those of requests the controller waits
    /// for, reports spot reclaims, then lets the controller reconcile (vanished instances are
    /// lost, strangers terminated).
    fn cloud_report(&mut self, report: CloudReport) {
        match report {
            CloudReport::Events(events) => {
                for ev in events {
                    let _ = self.step(ev);
                }
            }
            CloudReport::Listed(list) => {
                for i in &list {
                    let Some(request) = i.request else { continue };
                    let owed = self
                        .in_flight
                        .get(&request)
                        .is_some_and(|f| !f.launched.contains(&i.id));
                    if i.alive && owed {
                        let _ = self.step(Event::InstanceLaunched {
                            request,
                            instance: i.id.clone(),
                        });
                    }
                }
                for i in &list {
                    if i.interrupted && self.interrupted.insert(i.id.clone()) {
                        // A notice gives the time EC2 takes the instance (within its two
                        // minutes); an instance already going is taken now.
                        let now = self.now();
                        let terminate_at_ms = i
                            .terminate_at_ms
                            .map_or(now, |t| t.clamp(now, now + crate::cloud::SPOT_NOTICE_MS));
                        tracing::warn!(instance = %i.id, pool = %i.pool, in_ms = terminate_at_ms - now, "spot interruption: draining the node");
                        let _ = self.step(Event::InstanceInterrupted {
                            instance: i.id.clone(),
                            terminate_at_ms,
                        });
                    }
                }
                let alive: BTreeSet<&InstanceId> =
                    list.iter().filter(|i| i.alive).map(|i| &i.id).collect();
                self.interrupted.retain(|i| list.iter().any(|l| &l.id == i));
                let _ = self.step(Event::ReconcileInstances {
                    instances: alive.into_iter().cloned().collect(),
                });
            }
        }
    }

    fn publish(&self, kind: &str, body: Option<serde_json::Value>) {
        if let Some(b) = body {
            // No subscriber is fine.
            let _ = self
                .events
                .send(serde_json::json!({"kind": kind, "body": b}).to_string());
        }
    }

    fn send(&mut self, node: NodeId, cmd: AgentCommand) {
        if let Some(s) = self.sessions.get_mut(&node) {
            s.push(cmd);
        }
        // Not connected: kept in `launches`/`kills`, sent when the agent registers.
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let liveness = Duration::from_millis(self.config.liveness_interval_ms.max(10));
        let mut next_liveness = tokio::time::Instant::now() + liveness;
        loop {
            let now = self.now();
            let wake = self.wake_at.map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now))
            });
            let deadline = match wake {
                Some(w) if w < next_liveness => w,
                _ => next_liveness,
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = self.now();
            if self.wake_at.is_some_and(|at| at <= now) {
                self.wake_at = None;
                let _ = self.step(Event::Tick);
            }
            if tokio::time::Instant::now() >= next_liveness {
                next_liveness = tokio::time::Instant::now() + liveness;
                self.check_liveness();
            }
        }
        tracing::info!("control actor stopped");
    }

    fn check_liveness(&mut self) {
        let now = self.now();
        let timeout = self.config.heartbeat_timeout_ms;
        let lost: Vec<NodeId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_seen_ms) > timeout)
            .map(|(n, _)| *n)
            .collect();
        for node in lost {
            tracing::warn!(node = node.0, "agent missed its heartbeats: node lost");
            if self.live_nodes.contains(&node) {
                let _ = self.step(Event::NodeLost { node });
            }
            self.sessions.remove(&node);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Submit(spec, r) => {
                let _ = r.send(self.submit(spec));
            }
            Msg::DryRun(spec, r) => {
                let _ = r.send(Ok(self.dry_run(&spec, Self::slots_of(&spec))));
            }
            Msg::Explain(job, r) => {
                let _ = r.send(self.explain(job));
            }
            Msg::Scale(job, s, r) => {
                let _ = r.send(self.scale(job, s));
            }
            Msg::KillJob(job, r) => {
                let _ = r.send(self.kill_job(job));
            }
            Msg::KillTask(task, r) => {
                let _ = r.send(self.kill_task(task));
            }
            Msg::Register(req, r) => {
                let _ = r.send(self.register(req));
            }
            Msg::Heartbeat(name, r) => {
                let _ = r.send(self.touch(&name).map(|_| ()));
            }
            Msg::Report(name, reports, r) => {
                let _ = r.send(self.report(&name, reports));
            }
            Msg::Poll(name, after, r) => self.poll(&name, after, r),
            Msg::NodeUrl(node, r) => {
                let url = self
                    .sessions
                    .get(&NodeId(node))
                    .map(|s| s.url.clone())
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        ApiError::unavailable(format!("the agent of node {node} is not connected"))
                    });
                let _ = r.send(url);
            }
            Msg::Metrics(r) => {
                let _ = r.send(Ok(self.render_metrics()));
            }
            Msg::Cloud(report) => self.cloud_report(report),
            Msg::Ready(r) => {
                let _ = r.send(match &self.failed {
                    Some(f) => Err(ApiError::unavailable(format!("store failed: {f}"))),
                    None => Ok(()),
                });
            }
        }
    }

    fn slots_of(spec: &JobSpec) -> Vec<u32> {
        let n = match &spec.kind {
            JobKind::Batch(b) => b.size,
            JobKind::Service(s) => s.desired,
        };
        (0..n).collect()
    }

    fn submit(&mut self, spec: JobSpec) -> Result<SubmitResponse, ApiError> {
        berth_solver::spec::validate_job(&spec)?;
        match &spec.container {
            Some(c) if !c.image.trim().is_empty() => {}
            _ => {
                return Err(ApiError::new(
                    422,
                    "invalid_spec",
                    "the runtime needs an image to run: give container.image",
                )
                .with_field("container.image"))
            }
        }
        let job = JobId(self.next_job);
        self.next_job += 1;
        let cmds = self.step(Event::JobSubmitted {
            job,
            spec,
            requested_runtime_ms: None,
        })?;
        let mut state = "accepted".to_string();
        for c in &cmds {
            if let Command::RecordJob {
                job: j,
                state: s,
                message,
            } = c
            {
                if *j == job && *s == JobState::Rejected {
                    return Err(ApiError::new(
                        422,
                        "rejected",
                        message.clone().unwrap_or_default(),
                    ));
                }
                if *j == job {
                    state = enum_name(s);
                }
            }
        }
        Ok(SubmitResponse { id: job, state })
    }

    fn dry_run(&self, spec: &JobSpec, slots: Vec<u32>) -> DryRun {
        let mut view = self.ctl.view().clone();
        let mut out = DryRun {
            nodes: view.len() as u32,
            ..DryRun::default()
        };
        let Ok(mut placer) = Placer::new(self.config.controller.policy.clone()) else {
            return out;
        };
        let mut rng = placer.policy().rng();
        let job = JobId(u64::MAX);
        let gang = matches!(&spec.kind, JobKind::Batch(b) if b.gang);
        let constraints = Arc::new(spec.constraints.clone());
        let requests: Vec<TaskRequest> = slots
            .iter()
            .map(|&s| {
                TaskRequest::new(TaskId(u64::MAX - u64::from(s)), job, spec.task.clone())
                    .with_constraints(constraints.clone())
                    .with_tier(spec.tier)
                    .with_gang(gang)
            })
            .collect();
        let plan = placer.place(&mut view, &requests, &mut rng);
        let slot_of = |t: TaskId| (u64::MAX - t.0) as u32;
        for a in &plan.assignments {
            let n = view.node(a.node);
            out.placements.push(DryPlacement {
                slot: slot_of(a.task),
                node: n.name.clone(),
                zone: n.attributes.zone.clone(),
            });
        }
        for u in &plan.unplaced {
            out.unplaced.push(DryUnplaced {
                slot: slot_of(u.task),
                summary: u.reasons.to_string(),
                reasons: u
                    .reasons
                    .sorted()
                    .into_iter()
                    .map(|(r, n)| ReasonCount {
                        reason: r.to_string(),
                        nodes: n,
                    })
                    .collect(),
            });
        }
        out
    }

    fn explain(&self, job: JobId) -> Result<Explain, ApiError> {
        let j = self
            .jobs
            .get(&job)
            .ok_or_else(|| ApiError::not_found(job))?;
        let pending: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| t.job == job && t.state == TaskState::Accepted)
            .enumerate()
            .map(|(i, _)| i as u32)
            .collect();
        Ok(Explain {
            job,
            state: enum_name(&j.state),
            pending_tasks: pending.len() as u32,
            last_unplaced: j.last_unplaced.clone(),
            dry_run: self.dry_run(&j.spec, pending),
        })
    }

    fn open_job(&self, job: JobId) -> Result<&JobInfo, ApiError> {
        let j = self
            .jobs
            .get(&job)
            .ok_or_else(|| ApiError::not_found(job))?;
        if j.state != JobState::Accepted {
            return Err(ApiError::conflict(format!(
                "{job} is {}",
                enum_name(&j.state)
            )));
        }
        Ok(j)
    }

    fn scale(&mut self, job: JobId, s: ScaleRequest) -> Result<(), ApiError> {
        let j = self.open_job(job)?;
        if !matches!(j.spec.kind, JobKind::Service(_)) {
            return Err(ApiError::new(
                422,
                "not_a_service",
                format!("{job} is a batch job; only service jobs scale"),
            ));
        }
        if !(s.min <= s.desired && s.desired <= s.max) || s.max == 0 {
            return Err(ApiError::new(
                422,
                "invalid_scale",
                format!(
                    "expected min <= desired <= max and max >= 1, got {} / {} / {}",
                    s.min, s.desired, s.max
                ),
            )
            .with_field("desired"));
        }
        self.step(Event::JobScaled {
            job,
            min: s.min,
            desired: s.desired,
            max: s.max,
        })?;
        if let Some(j) = self.jobs.get_mut(&job) {
            if let JobKind::Service(sv) = &mut j.spec.kind {
                sv.min = s.min;
                sv.desired = s.desired;
                sv.max = s.max;
            }
        }
        Ok(())
    }

    fn kill_job(&mut self, job: JobId) -> Result<(), ApiError> {
        self.open_job(job)?;
        self.step(Event::JobKilled { job }).map(|_| ())
    }

    fn kill_task(&mut self, task: TaskId) -> Result<(), ApiError> {
        if !self.tasks.contains_key(&task) {
            return Err(ApiError::not_found(format!("live {task}")));
        }
        self.step(Event::TaskKillRequested { task }).map(|_| ())
    }

    fn touch(&mut self, name: &str) -> Result<NodeId, ApiError> {
        let now = self.now();
        let node = self
            .node_by_name
            .get(name)
            .copied()
            .filter(|n| self.live_nodes.contains(n));
        match node.and_then(|n| self.sessions.get_mut(&n).map(|s| (n, s))) {
            Some((n, s)) if !s.url.is_empty() => {
                s.last_seen_ms = now;
                Ok(n)
            }
            _ => Err(ApiError::new(
                409,
                "register",
                format!("agent {name} is not registered: register first"),
            )),
        }
    }

    fn register(&mut self, req: RegisterRequest) -> Result<RegisterResponse, ApiError> {
        if req.name.trim().is_empty() {
            return Err(ApiError::bad_request("name must not be empty").with_field("name"));
        }
        if req.capacity.cpu_milli == 0 || req.capacity.mem_mib == 0 {
            return Err(
                ApiError::bad_request("capacity needs cpu_milli and mem_mib")
                    .with_field("capacity"),
            );
        }
        if let Some(why) = crate::api_types::agent_url_problem(&req.url) {
            return Err(
                ApiError::bad_request(format!("agent url {:?}: {why}", req.url)).with_field("url"),
            );
        }
        let gpus = req.gpus.clone().filter(|g| g.count > 0);
        if let Some(g) = &gpus {
            if g.count > GPU_WHOLE_COUNT_MAX {
                return Err(ApiError::bad_request(format!(
                    "{} GPUs: a node has at most {GPU_WHOLE_COUNT_MAX}",
                    g.count
                ))
                .with_field("gpus.count"));
            }
            if g.model.as_str().trim().is_empty() {
                return Err(ApiError::bad_request("a node with GPUs names their model")
                    .with_field("gpus.model"));
            }
        }
        let now = self.now();
        let known = self
            .node_by_name
            .get(&req.name)
            .copied()
            .filter(|n| self.live_nodes.contains(n));
        let node = match known {
            Some(n) => n,
            None => {
                let id = NodeId(self.next_node);
                let instance = req.instance_id.clone().map(InstanceId);
                let pool = instance
                    .as_ref()
                    .and_then(|i| self.instance_pool.get(i).cloned())
                    .unwrap_or_default();
                let spec = NodeSpec {
                    id,
                    name: req.name.clone(),
                    capacity: req.capacity,
                    gpus,
                    attributes: NodeAttributes {
                        zone: req.zone.clone(),
                        instance_type: req.instance_type.clone(),
                        pool,
                        labels: BTreeMap::new(),
                    },
                };
                self.step(Event::NodeReady {
                    node: spec,
                    instance,
                })?;
                id
            }
        };
        tracing::info!(
            agent = %req.name,
            node = node.0,
            tasks = req.tasks.len(),
            url = %req.url,
            "agent registered"
        );
        // A fresh session (the agent's acknowledgements restart), with what it still owes.
        let old = self
            .sessions
            .insert(node, Session::new(req.url.clone(), now));
        if let Some(mut o) = old {
            if let Some(w) = o.waiter.take() {
                let _ = w.send(Ok(CommandBatch::default()));
            }
        }
        self.step(Event::ReconcileTasks {
            node,
            running: req.tasks.clone(),
        })?;
        let owed: Vec<AgentCommand> = self
            .launches
            .values()
            .chain(self.kills.values())
            .filter(|(n, _)| *n == node)
            .map(|(_, c)| c.clone())
            .collect();
        for c in owed {
            self.send(node, c);
        }
        Ok(RegisterResponse { node: node.0 })
    }

    fn report(&mut self, name: &str, reports: Vec<Report>) -> Result<(), ApiError> {
        self.touch(name)?;
        for r in reports {
            let ev = match r {
                Report::Started { task } => Event::TaskStarted { task },
                Report::Exited {
                    task,
                    exit_code,
                    oom,
                } => Event::TaskExited {
                    task,
                    exit_code,
                    oom,
                },
                Report::LaunchFailed { task, message } => Event::TaskLaunchFailed { task, message },
            };
            self.step(ev)?;
        }
        Ok(())
    }

    fn poll(&mut self, name: &str, after: u64, r: Reply<CommandBatch>) {
        let node = match self.touch(name) {
            Ok(n) => n,
            Err(e) => {
                let _ = r.send(Err(e));
                return;
            }
        };
        let Some(s) = self.sessions.get_mut(&node) else {
            return;
        };
        while s.queue.front().is_some_and(|(seq, _)| *seq <= after) {
            s.queue.pop_front();
        }
        if let Some(old) = s.waiter.replace(r) {
            let _ = old.send(Ok(CommandBatch::default()));
        }
        s.flush();
    }

    fn render_metrics(&mut self) -> String {
        let stats = self.ctl.stats();
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        for t in self.tasks.values() {
            *states.entry(enum_name(&t.state)).or_insert(0) += 1;
        }
        self.metrics.render(
            stats.pending_tasks,
            self.live_nodes.len() as u64,
            self.sessions.values().filter(|s| !s.url.is_empty()).count() as u64,
            &states,
        )
    }
}
