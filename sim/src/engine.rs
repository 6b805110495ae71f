//! The event loop: a priority queue of simulated events keyed by (time_ms, sequence), a
//! controller driven by them, and the simulated world answering the controller's commands
//! (container launch latency, task durations from the workload, instance provisioning delays,
//! and the scenario's faults). One seed reproduces a run bit for bit; the event-log hash
//! ([`crate::report::SimReport::event_log_hash`]) is the FNV-1a hash of every (time, event kind,
//! ids) delivered to the controller.

use crate::fxhash::FxHashMap;
use crate::metrics::Metrics;
use crate::report::SimReport;
use crate::scenario::Scenario;
use crate::workload::{prepare, SimJob};
use crate::{Progress, SimError};
use berth_solver::catalog::Catalog;
use berth_solver::controller::{
    CapacityType, Command, Controller, Event, InstanceId, LaunchErrorKind, RequestId,
};
use berth_solver::frag::TaskTypes;
use berth_solver::place::ScorerKind;
use berth_solver::{JobId, NodeId, NodeSpec, Resources, TaskId};
use berth_traces::TraceOutcome;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::Path;

/// Spot instances get this much notice before they are reclaimed.
pub const SPOT_NOTICE_MS: u64 = 120_000;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// What happens at a point of simulated time.
#[derive(Clone, Debug)]
enum SimEvent {
    /// Deliver an event to the controller: its slot in [`Engine::parked`].
    Deliver(u32),
    /// Deliver `TaskStarted` / `TaskExited`, the events most in flight (one per running
    /// task), inline: an `Event` is ~340 bytes, these 24. One entry stands for the tasks
    /// `first`, `first + 1`, … (`count` of them) launched together (see [`LaunchRun`]).
    Started { first: TaskId, count: u32 },
    Exited {
        first: TaskId,
        count: u32,
        exit_code: i32,
        oom: bool,
    },
    /// Job `index` of the prepared list arrives.
    Arrival(usize),
    /// Take a metrics sample.
    Sample,
    /// Fault: lose node (sim id).
    NodeLoss(NodeId),
    /// Fault: spot interruption notice for node (sim id).
    SpotNotice(NodeId),
    /// A provisioned instance becomes a node.
    InstanceUp(String),
}

impl SimEvent {
    /// Whether the event goes to the controller (the others are the world's own).
    fn is_for_controller(&self) -> bool {
        matches!(
            self,
            SimEvent::Deliver(_)
                | SimEvent::Started { .. }
                | SimEvent::Exited { .. }
                | SimEvent::Arrival(_)
        )
    }
}

/// Tasks with consecutive ids launched in one step that start at the same instant and exit
/// at the same later instant with the same code (a job's identical tasks placed together):
/// queued as one `Started` and one `Exited` entry instead of one each per task. Delivered in
/// task order at their instants, where one entry per task would have been delivered in the
/// same order (their sequence numbers would have followed each other with nothing else at
/// those instants in between: any other push ends the run first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LaunchRun {
    first: u64,
    count: u32,
    start_ms: u64,
    /// (instant, exit code) of the exit, when the task ends by itself.
    exit: Option<(u64, i32)>,
}

struct Queued {
    at_ms: u64,
    seq: u64,
    event: SimEvent,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ms, self.seq) == (o.at_ms, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(o.at_ms, o.seq))
    }
}

/// The event queue: a heap of the events the run creates, and the trace's arrivals as a
/// sorted stream beside it (they are known up front: the heap stays as small as what is in
/// flight). Pops in (time, sequence) order across both, exactly as one heap would.
#[derive(Default)]
struct EventQueue {
    heap: BinaryHeap<Reverse<Queued>>,
    /// Arrivals in (time, sequence) order; `next` is the first not yet popped.
    arrivals: Vec<Queued>,
    next: usize,
}

impl EventQueue {
    fn push(&mut self, q: Queued) {
        self.heap.push(Reverse(q));
    }

    /// Sets the arrival stream (any order; sorted here).
    fn set_arrivals(&mut self, mut arrivals: Vec<Queued>) {
        arrivals.sort_unstable();
        self.arrivals = arrivals;
        self.next = 0;
    }

    /// Whether the next event is the next arrival (else the heap's top).
    fn arrival_first(&self) -> Option<bool> {
        match (self.arrivals.get(self.next), self.heap.peek()) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(a), Some(Reverse(h))) => Some(a < h),
        }
    }

    fn peek(&self) -> Option<&Queued> {
        match self.arrival_first()? {
            true => self.arrivals.get(self.next),
            false => self.heap.peek().map(|Reverse(q)| q),
        }
    }

    fn pop(&mut self) -> Option<Queued> {
        match self.arrival_first()? {
            true => {
                let i = self.next;
                self.next += 1;
                // Leave a cheap placeholder: the arrival's event moves out.
                let q = &mut self.arrivals[i];
                Some(Queued {
                    at_ms: q.at_ms,
                    seq: q.seq,
                    event: std::mem::replace(&mut q.event, SimEvent::Sample),
                })
            }
            false => self.heap.pop().map(|Reverse(q)| q),
        }
    }
}

/// A simulated node (static or an instance's).
#[derive(Clone, Debug)]
pub(crate) struct SimNode {
    pub spec: NodeSpec,
    pub instance: Option<String>,
    pub alive: bool,
}

/// A simulated cloud instance.
#[derive(Clone, Debug)]
pub(crate) struct SimInstance {
    pub pool: String,
    pub instance_type: String,
    pub zone: String,
    pub spot: bool,
    pub node: Option<NodeId>,
    /// Billed from launch to termination.
    pub launched_ms: u64,
    pub gone_ms: Option<u64>,
    pub price_micro_usd_per_hour: u64,
}

/// A task the world is running.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SimTask {
    pub resources: Resources,
    pub gpu_milli: u64,
}

/// FNV-1a, 64 bit.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(pub u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// The primary id of an event, for the event-log hash.
fn event_id(e: &Event) -> u64 {
    let mut h = Fnv64::default();
    match e {
        Event::JobSubmitted { job, .. }
        | Event::JobScaled { job, .. }
        | Event::JobKilled { job } => h.u64(job.0),
        Event::TaskKillRequested { task }
        | Event::TaskStarting { task }
        | Event::TaskStarted { task }
        | Event::TaskLaunchFailed { task, .. } => h.u64(task.0),
        Event::TaskExited {
            task, exit_code, ..
        } => {
            h.u64(task.0);
            h.u64(*exit_code as u64);
        }
        Event::NodeReady { node, .. } => h.u64(u64::from(node.id.0)),
        Event::NodeLost { node } => h.u64(u64::from(node.0)),
        Event::InstanceLaunched { request, instance } => {
            h.u64(request.0);
            h.bytes(instance.0.as_bytes());
        }
        Event::InstanceLaunchFailed { request, count, .. } => {
            h.u64(request.0);
            h.u64(u64::from(*count));
        }
        Event::InstanceInterrupted { instance, .. } | Event::InstanceTerminated { instance } => {
            h.bytes(instance.0.as_bytes())
        }
        Event::ReconcileTasks { node, running } => {
            h.u64(u64::from(node.0));
            h.u64(running.len() as u64);
        }
        Event::ReconcileInstances { instances } => h.u64(instances.len() as u64),
        Event::Tick => {}
    }
    h.0
}

/// The engine's state for one run.
pub(crate) struct Engine<'a> {
    pub s: &'a Scenario,
    pub ctrl: Controller,
    pub rng: ChaCha8Rng,
    queue: EventQueue,
    /// Events waiting in the queue for delivery, by slot, and the free slots.
    parked: Vec<Option<Event>>,
    parked_free: Vec<u32>,
    seq: u64,
    pub now_ms: u64,
    pub jobs: Vec<SimJob>,
    /// By job id (dense: `jobs[i].id == JobId(i)` after preparation renumbering).
    pub(crate) job_index: FxHashMap<JobId, usize>,
    service_end_set: Vec<bool>,
    pub nodes: Vec<SimNode>,
    pub instances: FxHashMap<String, SimInstance>,
    /// Instances in creation order (for deterministic iteration).
    pub instance_order: Vec<String>,
    pub tasks: FxHashMap<TaskId, SimTask>,
    next_instance: u64,
    last_wake_ms: Option<u64>,
    /// Launches not queued yet (see [`LaunchRun`]).
    run: Option<LaunchRun>,
    /// Whether launches are queued as runs (always, but in the test that shows it changes
    /// nothing).
    launch_runs: bool,
    pub hash: Fnv64,
    pub events: u64,
    pub metrics: Metrics,
    catalog: &'a Catalog,
}

impl<'a> Engine<'a> {
    fn push(&mut self, at_ms: u64, event: SimEvent) {
        self.flush_run();
        self.push_now(at_ms, event);
    }

    fn push_now(&mut self, at_ms: u64, event: SimEvent) {
        self.seq += 1;
        self.queue.push(Queued {
            at_ms,
            seq: self.seq,
            event,
        });
    }

    /// Queues the run of launches, if any.
    fn flush_run(&mut self) {
        let Some(r) = self.run.take() else { return };
        let first = TaskId(r.first);
        self.push_now(
            r.start_ms,
            SimEvent::Started {
                first,
                count: r.count,
            },
        );
        if let Some((at_ms, exit_code)) = r.exit {
            self.push_now(
                at_ms,
                SimEvent::Exited {
                    first,
                    count: r.count,
                    exit_code,
                    oom: false,
                },
            );
        }
    }

    /// A launched task's start at `start_ms` and its own exit (instant, code), joining the
    /// run of launches when it follows it (see [`LaunchRun`]).
    fn launched(&mut self, task: TaskId, start_ms: u64, exit: Option<(u64, i32)>) {
        if let Some(r) = &mut self.run {
            if r.first + u64::from(r.count) == task.0
                && r.start_ms == start_ms
                && r.exit == exit
                && r.count < u32::MAX
            {
                r.count += 1;
                return;
            }
        }
        self.flush_run();
        if !self.launch_runs || exit.is_some_and(|(at, _)| at == start_ms) {
            // Start and exit at one instant: delivered start, exit, start, exit… per task.
            self.deliver_at(start_ms, Event::TaskStarted { task });
            if let Some((at_ms, exit_code)) = exit {
                self.deliver_at(
                    at_ms,
                    Event::TaskExited {
                        task,
                        exit_code,
                        oom: false,
                    },
                );
            }
            return;
        }
        self.run = Some(LaunchRun {
            first: task.0,
            count: 1,
            start_ms,
            exit,
        });
    }

    fn deliver_at(&mut self, at_ms: u64, e: Event) {
        let e = match e {
            Event::TaskStarted { task } => {
                return self.push(
                    at_ms,
                    SimEvent::Started {
                        first: task,
                        count: 1,
                    },
                )
            }
            Event::TaskExited {
                task,
                exit_code,
                oom,
            } => {
                return self.push(
                    at_ms,
                    SimEvent::Exited {
                        first: task,
                        count: 1,
                        exit_code,
                        oom,
                    },
                )
            }
            other => other,
        };
        // Parked in a reused slot (an event is ~340 bytes: the heap entry stays small and no
        // allocation is made per event).
        let slot = match self.parked_free.pop() {
            Some(i) => {
                self.parked[i as usize] = Some(e);
                i
            }
            None => {
                self.parked.push(Some(e));
                (self.parked.len() - 1) as u32
            }
        };
        self.push(at_ms, SimEvent::Deliver(slot));
    }

    fn log_normal(&mut self, d: crate::scenario::LogNormalMs) -> u64 {
        if d.sigma <= 0.0 {
            return d.median_ms;
        }
        let ln = LogNormal::new((d.median_ms.max(1) as f64).ln(), d.sigma).expect("sigma checked");
        ln.sample(&mut self.rng).round().max(0.0) as u64
    }

    fn exp_ms(&mut self, rate_per_hour: f64) -> Option<u64> {
        if rate_per_hour <= 0.0 {
            return None;
        }
        let e = Exp::new(rate_per_hour).expect("positive rate");
        let hours: f64 = e.sample(&mut self.rng);
        Some((hours * MS_PER_HOUR) as u64)
    }

    /// A node joined the simulated world: schedule its faults.
    fn node_joined(&mut self, id: NodeId, spot: bool) {
        let horizon = self.s.horizon_ms;
        if let Some(d) = self.exp_ms(self.s.faults.node_loss_per_node_hour) {
            if self.now_ms + d < horizon {
                self.push(self.now_ms + d, SimEvent::NodeLoss(id));
            }
        }
        if spot {
            if let Some(d) = self.exp_ms(self.s.faults.spot_interruption_per_node_hour) {
                if self.now_ms + d < horizon {
                    self.push(self.now_ms + d, SimEvent::SpotNotice(id));
                }
            }
        }
    }

    /// Delivers one event to the controller and carries out its commands.
    fn step(&mut self, e: Event) {
        self.note(&e);
        let cmds = self.ctrl.step(self.now_ms, e);
        self.carry_out(cmds);
    }

    /// Delivers the controller events of one instant together (one scheduling pass for all)
    /// and carries out the commands. `events` is emptied; its capacity is kept for the next
    /// instant.
    fn step_batch(&mut self, events: &mut Vec<Event>) {
        for e in events.iter() {
            self.note(e);
        }
        let cmds = self.ctrl.step_batch(self.now_ms, events.drain(..));
        self.carry_out(cmds);
    }

    /// Carries out a step's commands in order and hands the vector back for reuse.
    fn carry_out(&mut self, mut cmds: Vec<Command>) {
        for c in cmds.drain(..) {
            self.command(c);
        }
        self.flush_run();
        self.ctrl.recycle(cmds);
    }

    /// Counts an event and adds it to the event-log hash.
    fn note(&mut self, e: &Event) {
        self.events += 1;
        self.hash.u64(self.now_ms);
        self.hash.bytes(e.kind().as_bytes());
        self.hash.u64(event_id(e));
    }

    /// The controller events a queued entry delivers, added to `out` (a trace arrival becomes
    /// a submission; a run of starts or exits one event per task, in task order).
    fn controller_events(&mut self, ev: SimEvent, out: &mut Vec<Event>) -> Result<(), SimEvent> {
        match ev {
            SimEvent::Deliver(slot) => {
                self.parked_free.push(slot);
                out.push(
                    self.parked[slot as usize]
                        .take()
                        .expect("a queued delivery's slot holds its event"),
                );
            }
            SimEvent::Started { first, count } => {
                out.extend((0..u64::from(count)).map(|k| Event::TaskStarted {
                    task: TaskId(first.0 + k),
                }));
            }
            SimEvent::Exited {
                first,
                count,
                exit_code,
                oom,
            } => {
                out.extend((0..u64::from(count)).map(|k| Event::TaskExited {
                    task: TaskId(first.0 + k),
                    exit_code,
                    oom,
                }));
            }
            SimEvent::Arrival(i) => {
                let j = &self.jobs[i];
                out.push(Event::JobSubmitted {
                    job: j.id,
                    spec: j.spec.clone(),
                    requested_runtime_ms: j.requested_ms,
                });
            }
            other => return Err(other),
        }
        Ok(())
    }

    fn command(&mut self, c: Command) {
        let now = self.now_ms;
        match c {
            Command::LaunchTask {
                task,
                job,
                node: _,
                resources,
                gpus,
            } => {
                let gpu_milli = gpus.iter().map(|g| u64::from(g.milli)).sum();
                self.tasks.insert(
                    task,
                    SimTask {
                        resources,
                        gpu_milli,
                    },
                );
                let latency = self.log_normal(self.s.timing.container_launch);
                let fails = self.s.faults.launch_failure_probability > 0.0
                    && self
                        .rng
                        .random_bool(self.s.faults.launch_failure_probability);
                if fails {
                    self.metrics.faults.container_launch_failures += 1;
                    self.deliver_at(
                        now + latency,
                        Event::TaskLaunchFailed {
                            task,
                            message: "injected".into(),
                        },
                    );
                    return;
                }
                let start = now + latency;
                let j = &self.jobs[self.job_index[&job]];
                let duration = if j.is_service() {
                    None
                } else {
                    j.duration_ms.or(self.s.timing.batch_duration_default_ms)
                };
                let failed = j.outcome == TraceOutcome::Failed;
                let crash = self.exp_ms(self.s.faults.container_crash_per_task_hour);
                let exit = match (duration, crash) {
                    (_, Some(c))
                        if duration.is_none_or(|d| c < d) && start + c < self.s.horizon_ms =>
                    {
                        self.metrics.faults.container_crashes += 1;
                        Some((start + c, 1))
                    }
                    (Some(d), _) => Some((start + d, if failed { 1 } else { 0 })),
                    _ => None,
                };
                self.launched(task, start, exit);
            }
            Command::KillTask { task, grace_ms, .. } => {
                if self.tasks.contains_key(&task) {
                    let after = self.s.timing.kill_latency_ms.min(grace_ms);
                    self.deliver_at(
                        now + after,
                        Event::TaskExited {
                            task,
                            exit_code: 143,
                            oom: false,
                        },
                    );
                }
            }
            Command::ProvisionInstances {
                request,
                pool,
                instance_type,
                zone,
                count,
            } => {
                self.provision(request, pool, instance_type, zone, count);
            }
            Command::TerminateInstance { instance, .. } => {
                if let Some(i) = self.instances.get_mut(&instance.0) {
                    if i.gone_ms.is_none() {
                        i.gone_ms = Some(now);
                        if let Some(n) = i.node {
                            self.nodes[n.0 as usize].alive = false;
                        }
                    }
                }
                let at = now + self.s.timing.api_latency_ms;
                self.deliver_at(at, Event::InstanceTerminated { instance });
            }
            Command::RecordTask(r) => {
                if r.state == berth_solver::TaskState::Started {
                    if let Some(&ji) = self.job_index.get(&r.job) {
                        let j = &self.jobs[ji];
                        if j.is_service() && !self.service_end_set[ji] {
                            self.service_end_set[ji] = true;
                            if let Some(d) = j.duration_ms {
                                let job = j.id;
                                self.deliver_at(now + d, Event::JobKilled { job });
                            }
                        }
                    }
                }
                if r.state == berth_solver::TaskState::Finished {
                    let t = self.tasks.remove(&r.task);
                    self.metrics
                        .task_finished(now, &r, t.as_ref(), &self.jobs, &self.job_index);
                } else {
                    let t = self.tasks.get(&r.task).copied();
                    let node_pool = r
                        .node
                        .and_then(|n| self.nodes.get(n.0 as usize))
                        .map(|n| n.spec.attributes.pool.as_str());
                    self.metrics.task_record(
                        now,
                        &r,
                        t.as_ref(),
                        node_pool,
                        &self.jobs,
                        &self.job_index,
                    );
                }
            }
            Command::RecordJob { job, state, .. } => {
                let submit_ms = self.job_index.get(&job).map(|&i| self.jobs[i].submit_ms);
                self.metrics.job_record(now, job, state, submit_ms)
            }
            Command::RecordUnplaced { .. } => self.metrics.unplaced_reports += 1,
            Command::WakeAt { at_ms } => {
                if self.last_wake_ms != Some(at_ms) {
                    self.last_wake_ms = Some(at_ms);
                    self.deliver_at(at_ms, Event::Tick);
                }
            }
        }
    }

    fn provision(
        &mut self,
        request: RequestId,
        pool: String,
        instance_type: String,
        zone: String,
        count: u32,
    ) {
        let now = self.now_ms;
        let api = self.s.timing.api_latency_ms;
        self.metrics.instances_requested += u64::from(count);
        let ice = self.s.faults.insufficient_capacity.iter().any(|o| {
            o.instance_type == instance_type
                && o.zone == zone
                && (o.from_ms..o.to_ms).contains(&now)
        });
        if ice {
            self.metrics.faults.insufficient_capacity += u64::from(count);
            self.deliver_at(
                now + api,
                Event::InstanceLaunchFailed {
                    request,
                    count,
                    error: LaunchErrorKind::InsufficientCapacity,
                    message: format!("no capacity for {instance_type} in {zone}"),
                },
            );
            return;
        }
        let spot = self
            .s
            .cluster
            .pools
            .iter()
            .any(|p| p.name == pool && p.capacity_type == CapacityType::Spot);
        let price = self
            .catalog
            .get(&instance_type)
            .map_or(0, |t| t.price_per_hour_micro_usd);
        for _ in 0..count {
            let p = self.s.faults.instance_launch_failure_probability;
            if p > 0.0 && self.rng.random_bool(p) {
                self.metrics.faults.instance_launch_failures += 1;
                self.deliver_at(
                    now + api,
                    Event::InstanceLaunchFailed {
                        request,
                        count: 1,
                        error: LaunchErrorKind::Other,
                        message: "injected".into(),
                    },
                );
                continue;
            }
            self.next_instance += 1;
            let name = format!("sim-i-{}", self.next_instance);
            self.instances.insert(
                name.clone(),
                SimInstance {
                    pool: pool.clone(),
                    instance_type: instance_type.clone(),
                    zone: zone.clone(),
                    spot,
                    node: None,
                    launched_ms: now + api,
                    gone_ms: None,
                    price_micro_usd_per_hour: price,
                },
            );
            self.instance_order.push(name.clone());
            self.deliver_at(
                now + api,
                Event::InstanceLaunched {
                    request,
                    instance: InstanceId(name.clone()),
                },
            );
            let delay = match self.s.timing.provisioning_by_type.get(&instance_type) {
                Some(d) => self.log_normal(*d),
                None => self.log_normal(self.s.timing.provisioning),
            };
            self.push(now + api.max(delay), SimEvent::InstanceUp(name));
        }
    }

    fn instance_up(&mut self, name: String) {
        let Some(i) = self.instances.get(&name) else {
            return;
        };
        if i.gone_ms.is_some() {
            return;
        }
        let Some(t) = self.catalog.get(&i.instance_type) else {
            return;
        };
        let id = NodeId(self.nodes.len() as u32);
        let spec = t.node_spec(id, name.clone(), &i.zone, &i.pool);
        let spot = i.spot;
        self.nodes.push(SimNode {
            spec: spec.clone(),
            instance: Some(name.clone()),
            alive: true,
        });
        self.instances.get_mut(&name).expect("exists").node = Some(id);
        self.node_joined(id, spot);
        self.step(Event::NodeReady {
            node: spec,
            instance: Some(InstanceId(name)),
        });
    }

    fn node_loss(&mut self, id: NodeId) {
        let n = &mut self.nodes[id.0 as usize];
        if !n.alive {
            return;
        }
        n.alive = false;
        self.metrics.faults.nodes_lost += 1;
        if let Some(i) = n.instance.clone() {
            if let Some(inst) = self.instances.get_mut(&i) {
                inst.gone_ms = Some(self.now_ms);
            }
        }
        self.step(Event::NodeLost { node: id });
    }

    fn spot_notice(&mut self, id: NodeId) {
        let n = &self.nodes[id.0 as usize];
        if !n.alive {
            return;
        }
        let Some(i) = n.instance.clone() else { return };
        self.metrics.faults.spot_interruptions += 1;
        let at = self.now_ms + SPOT_NOTICE_MS;
        self.push(at, SimEvent::NodeLoss(id));
        self.step(Event::InstanceInterrupted {
            instance: InstanceId(i),
            terminate_at_ms: at,
        });
    }
}

/// The FGD typical task types of a workload (every instance counted), when the policy uses FGD.
fn typical_types(
    s: &Scenario,
    policy: &berth_solver::Policy,
    jobs: &[SimJob],
) -> Option<TaskTypes> {
    let _ = s;
    if policy.weight_of(ScorerKind::Fgd) <= 0.0 {
        return None;
    }
    let shapes = jobs.iter().flat_map(|j| {
        let n = match &j.spec.kind {
            berth_solver::JobKind::Batch(b) => b.size,
            berth_solver::JobKind::Service(sv) => sv.desired,
        };
        std::iter::repeat_n(&j.spec.task, n as usize)
    });
    Some(TaskTypes::from_shapes(
        shapes,
        policy.typical_coverage,
        policy.typical_key,
    ))
}

/// Runs a scenario. Writes `series.csv`, `nodes.csv`, `tasks.csv` and `report.json` to `out_dir`
/// when given.
pub fn run(
    s: &Scenario,
    out_dir: Option<&Path>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SimReport, SimError> {
    run_with(s, out_dir, progress, true)
}

/// [`run`], with or without queueing launches as runs ([`LaunchRun`]; the same run either way).
fn run_with(
    s: &Scenario,
    out_dir: Option<&Path>,
    progress: &mut dyn FnMut(&Progress),
    launch_runs: bool,
) -> Result<SimReport, SimError> {
    // Everything that can be checked before a file is read (a scenario built or changed in
    // code has not been through `Scenario::load`), then that the files exist.
    s.validate()?;
    s.check_files()?;
    let prepared = prepare(s)?;
    crate::scenario::check_node_loss_at(&s.faults, prepared.cluster.nodes.len())?;
    let catalog = Catalog::ec2();
    let mut cfg = s.controller_config()?;
    cfg.typical_types = typical_types(s, &cfg.policy, &prepared.jobs);
    let ctrl = Controller::new(cfg, catalog, &prepared.cluster, s.seed)
        .map_err(crate::scenario::controller_error)?;
    let tasks_out = match out_dir {
        Some(d) if s.metrics.per_task => {
            std::fs::create_dir_all(d).map_err(|e| SimError::io(d, e))?;
            let p = d.join("tasks.csv");
            let f = std::fs::File::create(&p).map_err(|e| SimError::io(&p, e))?;
            let mut w: Box<dyn Write> = Box::new(std::io::BufWriter::with_capacity(1 << 20, f));
            w.write_all(crate::metrics::TASKS_CSV_HEADER.as_bytes())
                .map_err(|e| SimError::io(&p, e))?;
            Some(w)
        }
        _ => None,
    };
    let job_index: FxHashMap<JobId, usize> = prepared
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id, i))
        .collect();
    let n_jobs = prepared.jobs.len();
    let interval = if s.metrics.interval_ms > 0 {
        s.metrics.interval_ms
    } else {
        (s.horizon_ms / u64::from(s.metrics.samples_max)).max(1)
    };
    let mut e = Engine {
        s,
        ctrl,
        rng: ChaCha8Rng::seed_from_u64(s.seed),
        queue: EventQueue::default(),
        parked: Vec::new(),
        parked_free: Vec::new(),
        seq: 0,
        now_ms: 0,
        jobs: prepared.jobs,
        job_index,
        service_end_set: vec![false; n_jobs],
        nodes: Vec::new(),
        instances: FxHashMap::default(),
        instance_order: Vec::new(),
        tasks: FxHashMap::default(),
        next_instance: 0,
        last_wake_ms: None,
        run: None,
        launch_runs,
        hash: Fnv64::default(),
        events: 0,
        metrics: Metrics::new(tasks_out, interval),
        catalog,
    };
    // Static nodes.
    for n in &prepared.cluster.nodes {
        e.nodes.push(SimNode {
            spec: n.clone(),
            instance: None,
            alive: true,
        });
    }
    for i in 0..e.nodes.len() {
        e.node_joined(NodeId(i as u32), false);
    }
    // Indexes checked against the static nodes above.
    for f in s.faults.node_loss_at.clone() {
        e.push(f.at_ms, SimEvent::NodeLoss(NodeId(f.node)));
    }
    let mut arrivals = Vec::with_capacity(n_jobs);
    for i in 0..n_jobs {
        let at = e.jobs[i].submit_ms;
        if at < s.horizon_ms {
            e.seq += 1;
            arrivals.push(Queued {
                at_ms: at,
                seq: e.seq,
                event: SimEvent::Arrival(i),
            });
        }
    }
    e.queue.set_arrivals(arrivals);
    crate::metrics::init_pools(&mut e);
    e.push(0, SimEvent::Sample);
    e.step(Event::Tick);
    let progress_every = 1u64 << 16;
    let mut progress_at = progress_every;
    let mut batch: Vec<Event> = Vec::with_capacity(64);
    while let Some(q) = e.queue.pop() {
        if q.at_ms > s.horizon_ms {
            break;
        }
        e.now_ms = q.at_ms;
        let event = match e.controller_events(q.event, &mut batch) {
            Ok(()) => {
                // Every controller event queued for this instant, in queue order, goes in one
                // step: the controller schedules once for all of them.
                while let Some(next) = e.queue.peek() {
                    if next.at_ms != q.at_ms || !next.event.is_for_controller() {
                        break;
                    }
                    let next = e.queue.pop().expect("peeked");
                    e.controller_events(next.event, &mut batch)
                        .expect("matched above");
                }
                if batch.len() == 1 {
                    e.step(batch.pop().expect("one"));
                } else {
                    e.step_batch(&mut batch);
                }
                None
            }
            Err(other) => Some(other),
        };
        match event {
            None => {}
            Some(
                SimEvent::Deliver(_)
                | SimEvent::Started { .. }
                | SimEvent::Exited { .. }
                | SimEvent::Arrival(_),
            ) => unreachable!("delivered above"),
            Some(SimEvent::Sample) => {
                crate::metrics::sample(&mut e);
                let next = e.now_ms + interval;
                if next <= s.horizon_ms {
                    e.push(next, SimEvent::Sample);
                }
            }
            Some(SimEvent::NodeLoss(id)) => e.node_loss(id),
            Some(SimEvent::SpotNotice(id)) => e.spot_notice(id),
            Some(SimEvent::InstanceUp(name)) => e.instance_up(name),
        }
        if e.events >= progress_at {
            progress_at = e.events + progress_every;
            progress(&Progress {
                now_ms: e.now_ms,
                horizon_ms: s.horizon_ms,
                events: e.events,
                pending_tasks: e.ctrl.stats().pending_tasks,
            });
        }
    }
    let end_ms = s.horizon_ms;
    e.now_ms = end_ms;
    crate::metrics::sample(&mut e);
    let report = crate::metrics::finish(&mut e, &prepared.source)?;
    if let Some(d) = out_dir {
        crate::report::write_outputs(d, &report, &e.metrics)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queueing a job's launches as one run delivers every event as one entry per task
    /// would: same events, same event-log hash, same figures. The default scenario (faults,
    /// crashes, services; launch latencies drawn per task, so few runs) and the Alibaba 2017
    /// sample with a fixed launch latency (jobs of up to 250 identical tasks starting and
    /// ending together, some ending at their start).
    #[test]
    fn launch_runs_change_nothing() {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/samples");
        let alibaba = Scenario::from_toml(
            r#"
name = "alibaba-sample"
seed = 3
horizon_ms = 3_600_000
[workload.trace]
path = "batch_task_sample.csv"
format = "alibaba-2017"
[[cluster.node_groups]]
name = "m"
count = 3
cpu_milli = 8000
mem_mib = 16384
[policy]
placement = "best_fit"
[timing]
container_launch = { median_ms = 500, sigma = 0.0 }
"#,
            &samples,
        )
        .expect("valid scenario");
        for s in [Scenario::default_scenario(), alibaba] {
            let with = run_with(&s, None, &mut |_| {}, true).expect("runs");
            let without = run_with(&s, None, &mut |_| {}, false).expect("runs");
            assert!(with.events > 100, "{}: {} events", s.name, with.events);
            assert_eq!(with.event_log_hash, without.event_log_hash, "{}", s.name);
            assert_eq!(with.events, without.events, "{}", s.name);
            assert_eq!(
                serde_json::to_string(&with).unwrap(),
                serde_json::to_string(&without).unwrap(),
                "{}",
                s.name
            );
        }
    }
}
