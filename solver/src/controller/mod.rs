//! The job and task lifecycle controller: sans-IO, pure, deterministic.
//!
//! ```text
//! Controller::step(&mut self, now_ms, Event) -> Vec<Command>
//! ```
//!
//! The controller owns every job's and task's lifecycle, the cluster's free capacity (a
//! long-lived [`ClusterView`] updated incrementally) and the pools it provisions. It never reads
//! a clock (time comes with each event), does no IO (it answers with [`Command`]s a driver
//! carries out), and its only randomness is a `ChaCha8Rng` seeded at construction. The same
//! configuration, seed and event sequence always give the same commands.
//!
//! One step, in order:
//! 1. fire the timers that are due (retries, runtime limits, stuck-state timeouts, provisioning
//!    timeouts, the scheduling pass when batched, the autoscaler);
//! 2. apply the event ([`lifecycle`] for jobs and tasks, [`pools`] for nodes and instances,
//!    [`reconcile`] for reconciliation);
//!    then the timers the event itself made due;
//! 3. run a scheduling pass if the step made one worthwhile and passes are not batched
//!    ([`schedule`]: queue order, then [`crate::place::Placer`] per task);
//! 4. ask for a wake-up at the next timer ([`Command::WakeAt`]).
//!
//! Invariants, asserted: the controller's own ledger of what it launched never exceeds a node's
//! capacity on any dimension or GPU device (checked before every [`Command::LaunchTask`],
//! independently of the view); every task the controller accepts is pending, live on a node, or
//! finished with a reason.

mod config;
mod lifecycle;
mod pools;
mod reconcile;
mod schedule;
mod types;
mod what_if;

pub use config::{
    AutoscaleConfig, CapacityType, ControllerConfig, ControllerError, DisruptionBudget, PoolSpec,
    QueuePolicy, Timeouts,
};
pub use types::{
    Command, Event, InstanceId, JobState, LaunchErrorKind, RequestId, TaskRecord, TerminateReason,
};
pub use what_if::{plan_provisioning, PlannedRequest, ProvisionPlan};

use crate::catalog::{Catalog, InstanceType};
use crate::cluster::ClusterSpec;
use crate::frag::TaskTypes;
use crate::ids::{JobId, NodeId, TaskId};
use crate::job::{Constraints, JobSpec, TaskReason, TaskState, Tier};
use crate::place::{Placer, ScorerKind};
use crate::resources::{GpuDemand, GpuModel, Resources, TaskShape};
use crate::view::ClusterView;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Where a slot of a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Its task waits for placement.
    Pending,
    /// Its task is on a node (launched, starting, running or being killed).
    Live,
    /// Its last task failed; a retry or replacement is scheduled.
    Waiting,
    /// Done for good; `ok` when the last task completed normally.
    Done { ok: bool },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// The slot's current (or last) task.
    pub task: TaskId,
    pub attempt: u32,
    pub state: SlotState,
    /// Failures that used up a retry (batch).
    pub failures: u32,
}

/// Service instance counts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceCounts {
    pub min: u32,
    pub desired: u32,
    pub max: u32,
    pub restart_on_failure: bool,
}

/// A job the controller knows (until all its tasks are terminal).
#[derive(Clone, Debug)]
pub(crate) struct JobRec {
    pub spec: JobSpec,
    pub constraints: Arc<Constraints>,
    pub tier: Tier,
    /// Index into `Controller::groups`.
    pub group: u32,
    pub submit_ms: u64,
    /// Run-time estimate for EASY: requested run time, else the batch runtime limit.
    pub estimate_ms: Option<u64>,
    pub runtime_limit_ms: Option<u64>,
    pub gang: bool,
    /// Pending slots in the order they are placed.
    pub pending: VecDeque<u32>,
    pub slots: Vec<Slot>,
    /// Tasks on nodes.
    pub live: u32,
    /// Slots not yet `Done` (batch) or active slots (service).
    pub open_slots: u32,
    pub failed_slots: u32,
    pub killed: bool,
    /// Set when a placement try failed, with the capacity epoch then; cleared when capacity
    /// changes (the epoch moves on).
    pub blocked_epoch: Option<u64>,
    pub reported_blocked: bool,
    pub service: Option<ServiceCounts>,
    /// The first id of the block of first-attempt task ids (`task_base + slot`).
    pub task_base: u64,
    /// Gang: the current attempt failed; siblings are being killed.
    pub gang_failed: bool,
    /// Gang: when the current attempt failed, the delay before the retry (`None`: no retry).
    pub gang_retry_delay_ms: Option<u64>,
    pub gang_failures: u32,
    pub gang_attempt: u32,
    /// FCFS/EASY: the job cannot fit even on an empty cluster, as of this nodes version.
    pub never_fits_at: Option<u64>,
    /// FCFS/EASY: the job was found to fit an empty cluster, as of this nodes version.
    pub never_fits_checked: Option<u64>,
    /// While queued: the smallest start it can make (one task; a gang: all of its pending
    /// tasks) as (cpu_milli, mem_mib, gpu_milli), as counted in [`Controller::queue_min`].
    pub queued_need: Option<[u64; 3]>,
}

impl JobRec {
    /// The smallest start the job can make: one task, or a gang's pending tasks all together,
    /// as (tasks, resources, milli-GPU).
    pub fn smallest_start(&self) -> (u64, Resources, u64) {
        let n = if self.gang {
            self.pending.len() as u64
        } else {
            1
        };
        let t = &self.spec.task;
        (
            n,
            t.resources.saturating_mul(n),
            u64::from(t.gpu.total_milli()).saturating_mul(n),
        )
    }

    pub fn is_service(&self) -> bool {
        self.service.is_some()
    }
    pub fn queue_key(&self, policy: QueuePolicy) -> QueueKey {
        match policy {
            QueuePolicy::Fcfs | QueuePolicy::Easy => QueueKey { tier: 0, group: 0 },
            QueuePolicy::Berth => QueueKey {
                tier: tier_rank(self.tier),
                group: self.group,
            },
        }
    }
}

pub(crate) fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::Critical => 0,
        Tier::Flex => 1,
    }
}

/// Which queue a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct QueueKey {
    pub tier: u8,
    pub group: u32,
}

/// A task the controller tracks individually: launched ones, and retries waiting for
/// placement. (A job's first-attempt tasks are implicit until launched: `task_base + slot`.)
#[derive(Clone, Debug)]
pub(crate) struct TaskRec {
    pub job: JobId,
    pub slot: u32,
    pub attempt: u32,
    pub state: TaskState,
    /// View index of the node (meaningful from `Launched` on).
    pub node: u32,
    pub since_ms: u64,
    pub launched_ms: u64,
    pub kill_reason: Option<TaskReason>,
    /// EASY: estimated end, when the job has an estimate.
    pub est_end_ms: Option<u64>,
}

/// A node the controller knows, by view index.
/// A task shape as [`ClusterView::tasks_that_fit`] sees it: scalar resources, GPU kind (0 none,
/// 1 whole, 2 milli) and amount.
pub(crate) type FitKey = ([u64; 4], u8, u16);

#[derive(Clone, Debug)]
pub(crate) struct NodeRec {
    /// The driver's id.
    pub id: NodeId,
    pub pool: Option<usize>,
    pub instance: Option<InstanceId>,
    /// In service (not lost, not terminated).
    pub live: bool,
    /// Interrupted or being terminated: takes no new task.
    pub draining: bool,
    pub idle_since_ms: Option<u64>,
    /// Its instance's launch report was counted against a provisioning request (a node that
    /// registered before the report counts it when the report comes).
    pub launch_counted: bool,
    /// Tasks on the node.
    pub tasks: BTreeSet<TaskId>,
}

/// Timers, ordered by due time then kind. Stale timers are harmless: each checks its condition
/// when it fires.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Pass,
    Autoscale,
    Retry { job: JobId, slot: u32, attempt: u32 },
    GangRetry { job: JobId, attempt: u32 },
    RuntimeLimit { task: TaskId, since_ms: u64 },
    LaunchTimeout { task: TaskId, since_ms: u64 },
    StartTimeout { task: TaskId, since_ms: u64 },
    KillTimeout { task: TaskId, since_ms: u64 },
    ProvisionTimeout { request: RequestId },
    BootTimeout { instance: InstanceId },
}

/// The controller's own ledger of what it launched per node, independent of the view: the
/// no-overcommit assertion before every launch is checked against it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    pub used: Vec<Resources>,
    pub gpu_used: Vec<Vec<u16>>,
}

/// Counters a driver may show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControllerStats {
    /// Tasks waiting for placement.
    pub pending_tasks: u64,
    /// Tasks on nodes (launched, starting, running, being killed).
    pub live_tasks: u64,
    /// Jobs not yet finished.
    pub jobs: u64,
    /// Nodes in service (schedulable or draining).
    pub nodes_live: u64,
    /// Instances asked for and not yet nodes (requested or booting).
    pub instances_in_flight: u64,
    /// Scheduling passes run.
    pub passes: u64,
}

/// A pool at run time.
#[derive(Clone, Debug)]
pub(crate) struct PoolState {
    pub spec: PoolSpec,
    pub types: Vec<InstanceType>,
    /// Live nodes (view indexes).
    pub nodes: BTreeSet<u32>,
    /// Instances requested and not yet reported, per (type index, zone index).
    pub requested: BTreeMap<(usize, usize), u32>,
    /// Instances launched and not yet nodes, per (type index, zone index).
    pub booting: BTreeMap<(usize, usize), u32>,
    /// (type index, zone index) -> avoided until.
    pub ice_until_ms: BTreeMap<(usize, usize), u64>,
    pub backoff_until_ms: u64,
    pub backoff_ms: u64,
    /// Set after an unauthorised error: the pool no longer provisions.
    pub disabled: Option<String>,
    /// Scale-down terminations in the current budget window.
    pub terminations_ms: VecDeque<u64>,
}

impl PoolState {
    pub fn in_flight(&self) -> u32 {
        self.requested.values().sum::<u32>() + self.booting.values().sum::<u32>()
    }
}

/// One provisioning request still expecting instances.
#[derive(Clone, Debug)]
pub(crate) struct Provision {
    pub pool: usize,
    pub type_idx: usize,
    pub zone_idx: usize,
    pub outstanding: u32,
}

/// An instance launched and not yet a node.
#[derive(Clone, Debug)]
pub(crate) struct Booting {
    pub pool: usize,
    pub type_idx: usize,
    pub zone_idx: usize,
}

/// The lifecycle controller. See the module documentation.
#[derive(Clone, Debug)]
pub struct Controller {
    pub(crate) config: ControllerConfig,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) placer: Placer,
    pub(crate) view: ClusterView,
    pub(crate) ledger: Ledger,
    /// By view index.
    pub(crate) nodes: Vec<NodeRec>,
    /// Driver id -> view index.
    pub(crate) node_index: BTreeMap<NodeId, u32>,
    pub(crate) jobs: BTreeMap<JobId, JobRec>,
    /// First task id of each job's block of first-attempt ids -> job.
    pub(crate) task_blocks: BTreeMap<u64, JobId>,
    pub(crate) tasks: BTreeMap<TaskId, TaskRec>,
    pub(crate) next_task: u64,
    pub(crate) queues: BTreeMap<QueueKey, BTreeSet<(u64, JobId)>>,
    /// Per queue, per dimension (cpu_milli, mem_mib, gpu_milli): the multiset of its jobs'
    /// smallest starts. When the free capacity of all schedulable nodes is below the least of
    /// one dimension, nothing in the queue can start and the pass skips it.
    pub(crate) queue_min: BTreeMap<QueueKey, [BTreeMap<u64, u32>; 3]>,
    /// Capacity group names; index = group id.
    pub(crate) groups: Vec<String>,
    pub(crate) group_index: BTreeMap<String, u32>,
    /// Per group: allocated (cpu_milli, mem_mib, gpu_milli) of its live tasks.
    pub(crate) group_alloc: Vec<[u64; 3]>,
    /// Live tasks with an estimated end (EASY).
    pub(crate) ends: BTreeSet<(u64, TaskId)>,
    /// Moves on whenever capacity is freed or added.
    pub(crate) epoch: u64,
    /// Moves on whenever a node comes, goes or stops taking tasks.
    pub(crate) nodes_version: u64,
    /// Capacity (cpu_milli, mem_mib, gpu_milli) of the nodes taking tasks (DRF's denominator).
    pub(crate) capacity_total: [u64; 3],
    pub(crate) reservation: Option<schedule::Reservation>,
    /// Placer for what-if questions (see [`schedule::scratch_placer`]).
    pub(crate) scratch_placer: Placer,
    /// The nodes in service with nothing placed, as of a nodes version ("can it ever fit").
    pub(crate) empty_view: Option<(u64, ClusterView)>,
    /// `ClusterView::tasks_that_fit` answers on the live view, kept between its changes.
    pub(crate) fit_counts: schedule::FitCounts,
    pub(crate) dirty: bool,
    pub(crate) timers: BTreeSet<(u64, Timer)>,
    pub(crate) pass_at: Option<u64>,
    pub(crate) wake_at: Option<u64>,
    pub(crate) pools: Vec<PoolState>,
    pub(crate) pool_index: BTreeMap<String, usize>,
    pub(crate) provisions: BTreeMap<RequestId, Provision>,
    pub(crate) booting: BTreeMap<InstanceId, Booting>,
    pub(crate) instance_node: BTreeMap<InstanceId, u32>,
    /// Instances the controller asked to terminate, with when: not strangers to
    /// [`Event::ReconcileInstances`] while a listing may still show them running.
    pub(crate) terminated: BTreeMap<InstanceId, u64>,
    pub(crate) next_request: u64,
    pub(crate) autoscale_started: bool,
    /// Shapes submitted so far (FGD typical types when not configured), with the task count at
    /// the last refresh.
    pub(crate) shape_hist: BTreeMap<ShapeKey, (TaskShape, u64)>,
    pub(crate) shape_total: u64,
    pub(crate) shape_refreshed_at: u64,
    pub(crate) pending_total: u64,
    pub(crate) passes: u64,
    pub(crate) out: Vec<Command>,
}

/// A task shape as an ordered key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ShapeKey {
    pub resources: [u64; 4],
    pub gpu: (u8, u32),
    pub models: Vec<GpuModel>,
}

impl ShapeKey {
    pub fn of(s: &TaskShape) -> ShapeKey {
        let gpu = match s.gpu {
            GpuDemand::None => (0, 0),
            GpuDemand::Milli(m) => (1, u32::from(m)),
            GpuDemand::Whole(k) => (2, u32::from(k)),
        };
        ShapeKey {
            resources: s.resources.as_array(),
            gpu,
            models: s.gpu_models.clone(),
        }
    }
}

impl Controller {
    /// A controller for `config`, with pool instance types looked up in `catalog`, starting
    /// with the static nodes of `initial` (driver ids = their dense ids; they belong to a pool
    /// when their `pool` attribute names one), and its RNG seeded with `seed`.
    pub fn new(
        config: ControllerConfig,
        catalog: &Catalog,
        initial: &ClusterSpec,
        seed: u64,
    ) -> Result<Controller, ControllerError> {
        let resolved = config.resolve(catalog)?;
        if let Err(m) = initial.check_ids() {
            return Err(crate::spec::SpecError::new("cluster.nodes", m).into());
        }
        let mut placer = Placer::new(config.effective_policy())?;
        if let Some(t) = &config.typical_types {
            placer.set_typical_types(t.clone());
        }
        let pools: Vec<PoolState> = resolved
            .into_iter()
            .map(|p| PoolState {
                spec: p.spec,
                types: p.types,
                nodes: BTreeSet::new(),
                requested: BTreeMap::new(),
                booting: BTreeMap::new(),
                ice_until_ms: BTreeMap::new(),
                backoff_until_ms: 0,
                backoff_ms: 0,
                disabled: None,
                terminations_ms: VecDeque::new(),
            })
            .collect();
        let pool_index = pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.spec.name.clone(), i))
            .collect();
        let mut c = Controller {
            rng: ChaCha8Rng::seed_from_u64(seed),
            placer,
            view: ClusterView::new(&ClusterSpec::default()),
            ledger: Ledger::default(),
            nodes: Vec::new(),
            node_index: BTreeMap::new(),
            jobs: BTreeMap::new(),
            task_blocks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            next_task: 1,
            queues: BTreeMap::new(),
            queue_min: BTreeMap::new(),
            groups: Vec::new(),
            group_index: BTreeMap::new(),
            group_alloc: Vec::new(),
            ends: BTreeSet::new(),
            epoch: 0,
            nodes_version: 0,
            capacity_total: [0; 3],
            reservation: None,
            scratch_placer: schedule::scratch_placer(&config.effective_policy()),
            empty_view: None,
            fit_counts: schedule::FitCounts::default(),
            dirty: false,
            timers: BTreeSet::new(),
            pass_at: None,
            wake_at: None,
            pools,
            pool_index,
            provisions: BTreeMap::new(),
            booting: BTreeMap::new(),
            instance_node: BTreeMap::new(),
            terminated: BTreeMap::new(),
            next_request: 1,
            autoscale_started: false,
            shape_hist: BTreeMap::new(),
            shape_total: 0,
            shape_refreshed_at: 0,
            pending_total: 0,
            passes: 0,
            out: Vec::new(),
            config,
        };
        c.view = ClusterView::new(initial);
        for n in &initial.nodes {
            c.register_node(n.id, None, 0);
        }
        Ok(c)
    }

    /// Applies one event at `now_ms` and returns what the driver must do. `now_ms` must not go
    /// backwards.
    pub fn step(&mut self, now_ms: u64, event: Event) -> Vec<Command> {
        self.apply_event(now_ms, event);
        self.finish_step(now_ms)
    }

    /// Applies several events of one instant, then schedules once: what [`Controller::step`]
    /// on each in turn would do, except that the scheduling pass sees them all (a gang's tasks
    /// ending together free their capacity for one decision, not one pass per task). A driver
    /// that knows the events of an instant (the simulator) hands them over together.
    pub fn step_batch(
        &mut self,
        now_ms: u64,
        events: impl IntoIterator<Item = Event>,
    ) -> Vec<Command> {
        for e in events {
            self.apply_event(now_ms, e);
        }
        self.finish_step(now_ms)
    }

    fn apply_event(&mut self, now_ms: u64, event: Event) {
        if !self.autoscale_started {
            self.autoscale_started = true;
            self.start_pools(now_ms);
        }
        self.fire_timers(now_ms);
        match event {
            Event::JobSubmitted {
                job,
                spec,
                requested_runtime_ms,
            } => self.submit(now_ms, job, spec, requested_runtime_ms),
            Event::JobScaled {
                job,
                min,
                desired,
                max,
            } => self.scale(now_ms, job, min, desired, max),
            Event::JobKilled { job } => self.kill_job(now_ms, job),
            Event::TaskKillRequested { task } => self.kill_task_requested(now_ms, task),
            Event::TaskStarting { task } => self.task_starting(now_ms, task),
            Event::TaskStarted { task } => self.task_started(now_ms, task),
            Event::TaskExited {
                task,
                exit_code,
                oom,
            } => self.task_exited(now_ms, task, exit_code, oom),
            Event::TaskLaunchFailed { task, .. } => self.task_launch_failed(now_ms, task),
            Event::NodeReady { node, instance } => self.node_ready(now_ms, node, instance),
            Event::NodeLost { node } => self.node_lost_event(now_ms, node),
            Event::InstanceLaunched { request, instance } => {
                self.instance_launched(now_ms, request, instance)
            }
            Event::InstanceLaunchFailed {
                request,
                count,
                error,
                message,
            } => self.instance_launch_failed(now_ms, request, count, error, message),
            Event::InstanceInterrupted {
                instance,
                terminate_at_ms,
            } => self.instance_interrupted(now_ms, instance, terminate_at_ms),
            Event::InstanceTerminated { instance } => self.instance_terminated(now_ms, instance),
            Event::ReconcileTasks { node, running } => self.reconcile_tasks(now_ms, node, running),
            Event::ReconcileInstances { instances } => self.reconcile_instances(now_ms, instances),
            Event::Tick => {}
        }
        // Timers the event made due now (an immediate retry, a replacement).
        self.fire_timers(now_ms);
    }

    fn finish_step(&mut self, now_ms: u64) -> Vec<Command> {
        if self.dirty {
            if self.config.schedule_interval_ms == 0 {
                self.pass(now_ms);
            } else if self.pass_at.is_none() {
                let at = now_ms + self.config.schedule_interval_ms;
                self.pass_at = Some(at);
                self.timers.insert((at, Timer::Pass));
            }
        }
        self.request_wake(now_ms);
        std::mem::take(&mut self.out)
    }

    /// Hands back a command vector a step returned, once carried out, so the next step's
    /// commands reuse its allocation (a driver stepping hundreds of thousands of times saves
    /// as many allocations). Optional; the contents are dropped.
    pub fn recycle(&mut self, mut spent: Vec<Command>) {
        spent.clear();
        if self.out.is_empty() && self.out.capacity() < spent.capacity() {
            self.out = spent;
        }
    }

    /// The cluster as the controller sees it (free capacity, placed tasks).
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Counters for a driver's display.
    pub fn stats(&self) -> ControllerStats {
        ControllerStats {
            pending_tasks: self.pending_total,
            live_tasks: self.view.placed_tasks() as u64,
            jobs: self.jobs.len() as u64,
            nodes_live: self.nodes.iter().filter(|n| n.live).count() as u64,
            instances_in_flight: self.pools.iter().map(|p| u64::from(p.in_flight())).sum(),
            passes: self.passes,
        }
    }

    /// The state of a task the controller still tracks (`None` once finished or unknown).
    pub fn task_state(&self, task: TaskId) -> Option<TaskState> {
        if let Some(t) = self.tasks.get(&task) {
            return Some(t.state);
        }
        self.implicit_task(task).map(|_| TaskState::Accepted)
    }

    /// The view index of a node by its driver id.
    pub fn node_of(&self, node: NodeId) -> Option<NodeId> {
        self.node_index.get(&node).map(|&i| NodeId(i))
    }

    /// Live nodes of a pool, per zone (zone name -> count).
    pub fn pool_nodes_by_zone(&self, pool: &str) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        if let Some(&p) = self.pool_index.get(pool) {
            for z in &self.pools[p].spec.zones {
                out.insert(z.clone(), 0);
            }
            for &n in &self.pools[p].nodes {
                *out.entry(self.node_zone(n).to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Jobs still tracked.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }

    // ----- shared helpers --------------------------------------------------------------

    /// A first-attempt task still implicit (pending, never launched): its job and slot.
    pub(crate) fn implicit_task(&self, task: TaskId) -> Option<(JobId, u32)> {
        let (&base, &job) = self.task_blocks.range(..=task.0).next_back()?;
        let j = self.jobs.get(&job)?;
        let slot = u32::try_from(task.0 - base).ok()?;
        let s = j.slots.get(slot as usize)?;
        (s.task == task
            && s.attempt == 0
            && s.state == SlotState::Pending
            && !self.tasks.contains_key(&task))
        .then_some((job, slot))
    }

    /// Records a task's state change; `id` is (task, job, slot, attempt).
    pub(crate) fn record(
        &mut self,
        id: (TaskId, JobId, u32, u32),
        state: TaskState,
        reason: Option<TaskReason>,
        node: Option<u32>,
    ) {
        let (task, job, slot, attempt) = id;
        let node = node.map(|n| self.nodes[n as usize].id);
        self.out.push(Command::RecordTask(TaskRecord {
            task,
            job,
            slot,
            attempt,
            state,
            reason,
            node,
        }));
    }

    pub(crate) fn timer(&mut self, at_ms: u64, t: Timer) {
        self.timers.insert((at_ms, t));
    }

    fn request_wake(&mut self, now_ms: u64) {
        let Some(&(at, _)) = self.timers.first() else {
            return;
        };
        let at = at.max(now_ms);
        let stale = self.wake_at.is_none_or(|w| w <= now_ms || at < w);
        if stale {
            self.wake_at = Some(at);
            self.out.push(Command::WakeAt { at_ms: at });
        }
    }

    fn fire_timers(&mut self, now_ms: u64) {
        while let Some(&(at, _)) = self.timers.first() {
            if at > now_ms {
                break;
            }
            let (_, t) = self.timers.pop_first().expect("non-empty");
            self.fire(now_ms, t);
        }
    }

    fn fire(&mut self, now_ms: u64, t: Timer) {
        match t {
            Timer::Pass => {
                self.pass_at = None;
                if self.dirty {
                    self.pass(now_ms);
                }
            }
            Timer::Autoscale => self.autoscale(now_ms),
            Timer::Retry { job, slot, attempt } => self.retry_due(now_ms, job, slot, attempt),
            Timer::GangRetry { job, attempt } => self.gang_retry_due(now_ms, job, attempt),
            Timer::RuntimeLimit { task, since_ms } => {
                self.runtime_limit_due(now_ms, task, since_ms)
            }
            Timer::LaunchTimeout { task, since_ms } => {
                self.stuck_due(now_ms, task, since_ms, TaskState::Launched)
            }
            Timer::StartTimeout { task, since_ms } => {
                self.stuck_due(now_ms, task, since_ms, TaskState::StartInitiated)
            }
            Timer::KillTimeout { task, since_ms } => self.kill_timeout_due(now_ms, task, since_ms),
            Timer::ProvisionTimeout { request } => self.provision_timeout_due(now_ms, request),
            Timer::BootTimeout { instance } => self.boot_timeout_due(now_ms, instance),
        }
    }

    /// Records a submitted shape; refreshes the FGD typical types when their count doubled.
    pub(crate) fn note_shape(&mut self, shape: &TaskShape, count: u64) {
        if self.config.typical_types.is_some()
            || self.config.policy.weight_of(ScorerKind::Fgd) <= 0.0
        {
            return;
        }
        let e = self
            .shape_hist
            .entry(ShapeKey::of(shape))
            .or_insert_with(|| (shape.clone(), 0));
        e.1 += count;
        self.shape_total += count;
        if self.shape_total >= 2 * self.shape_refreshed_at.max(1) || self.shape_refreshed_at == 0 {
            self.shape_refreshed_at = self.shape_total;
            let types = TaskTypes::from_shapes(
                self.shape_hist
                    .values()
                    .flat_map(|(s, n)| std::iter::repeat_n(s, *n as usize)),
                self.config.policy.typical_coverage,
                self.config.policy.typical_key,
            );
            self.placer.set_typical_types(types);
        }
    }
}
