//! What a run measures: a time series (allocation and utilisation per resource, pending queue,
//! nodes, cost), the same figures per pool at each sample, per-task rows (wait, run, slowdown,
//! retries) and the summary.
//!
//! Definitions: *allocation* is what placed tasks hold on nodes in service, over their capacity;
//! *utilisation* is what running (started) containers hold (the traces carry no usage figures).
//! Wait is from the job's submission to the task's start; slowdown is response time over run
//! time (tasks that ran 0 ms have none), bounded slowdown uses a 10 s floor on the run time
//! (Feitelson's bound), so every task that finished normally has one. The same figures per
//! completed job (response from submission to the last task's end, run from the first task's
//! start) are what the SWF literature reports: a rigid 64-processor job counts once, not 64
//! times.
//!
//! Per pool: capacity, allocation and running tasks belong to the pool of the node (its `pool`
//! attribute; nodes without one are [`NO_POOL`]). A pending task has no node yet: it counts under
//! the first pool, in the scenario's order, that could serve it (its tier may use the pool, its
//! hard attribute constraints allow one of the pool's types and zones, and an empty node of that
//! type fits it), else under the first group of static nodes outside the pools that could, else
//! under [`NO_POOL`]. So every figure of a sample is the sum of its pools' figures.

use crate::engine::{Engine, SimTask};
use crate::fxhash::FxHashMap;
use crate::report::{SimReport, TierFigures};
use crate::scenario::Scenario;
use crate::workload::SimJob;
use crate::SimError;
use berth_solver::bounds::NodeKind;
use berth_solver::catalog::Catalog;
use berth_solver::controller::{JobState, PoolSpec, TaskRecord};
use berth_solver::{
    Constraint, Constraints, JobId, JobSpec, NodeAttributes, NodeId, NodeSpec, TaskId, TaskReason,
    TaskState, Tier,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// The bound of bounded slowdown.
pub const SLOWDOWN_BOUND_MS: u64 = 10_000;

pub const TASKS_CSV_HEADER: &str =
    "task,job,slot,attempt,tier,submit_ms,start_ms,end_ms,reason,wait_ms,run_ms,slowdown,bounded_slowdown\n";

/// One time-series row: the figures of every pool summed, and the cost so far.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sample {
    pub t_ms: u64,
    #[serde(flatten)]
    pub figures: PoolFigures,
    pub cost_usd: f64,
}

/// The pool name of nodes without a `pool` attribute, and of pending tasks nothing could serve.
pub const NO_POOL: &str = "(none)";

/// One pool's share of a sample (a row of `pools.csv` with its time and pool name); summed
/// over the pools of a sample, the sample's figures (a row of `series.csv`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolFigures {
    pub nodes: u64,
    pub cpu_capacity_milli: u64,
    pub cpu_alloc_milli: u64,
    pub cpu_used_milli: u64,
    pub mem_capacity_mib: u64,
    pub mem_alloc_mib: u64,
    pub mem_used_mib: u64,
    pub gpu_capacity_milli: u64,
    pub gpu_alloc_milli: u64,
    pub gpu_used_milli: u64,
    pub gpu_idle_on_partial_nodes_milli: u64,
    pub pending_tasks: u64,
    pub running_tasks: u64,
}

impl PoolFigures {
    /// The fields' names, in order: the columns of `series.csv` and `pools.csv` they fill.
    pub const NAMES: [&'static str; 13] = [
        "nodes",
        "cpu_capacity_milli",
        "cpu_alloc_milli",
        "cpu_used_milli",
        "mem_capacity_mib",
        "mem_alloc_mib",
        "mem_used_mib",
        "gpu_capacity_milli",
        "gpu_alloc_milli",
        "gpu_used_milli",
        "gpu_idle_on_partial_nodes_milli",
        "pending_tasks",
        "running_tasks",
    ];

    /// The fields in [`PoolFigures::NAMES`] order.
    pub fn values(&self) -> [u64; 13] {
        [
            self.nodes,
            self.cpu_capacity_milli,
            self.cpu_alloc_milli,
            self.cpu_used_milli,
            self.mem_capacity_mib,
            self.mem_alloc_mib,
            self.mem_used_mib,
            self.gpu_capacity_milli,
            self.gpu_alloc_milli,
            self.gpu_used_milli,
            self.gpu_idle_on_partial_nodes_milli,
            self.pending_tasks,
            self.running_tasks,
        ]
    }

    /// The inverse of [`PoolFigures::values`].
    pub fn from_values(v: [u64; 13]) -> PoolFigures {
        PoolFigures {
            nodes: v[0],
            cpu_capacity_milli: v[1],
            cpu_alloc_milli: v[2],
            cpu_used_milli: v[3],
            mem_capacity_mib: v[4],
            mem_alloc_mib: v[5],
            mem_used_mib: v[6],
            gpu_capacity_milli: v[7],
            gpu_alloc_milli: v[8],
            gpu_used_milli: v[9],
            gpu_idle_on_partial_nodes_milli: v[10],
            pending_tasks: v[11],
            running_tasks: v[12],
        }
    }

    /// Adds `o` field by field.
    pub fn add(&mut self, o: &PoolFigures) {
        let (a, b) = (self.values(), o.values());
        *self = PoolFigures::from_values(std::array::from_fn(|i| a[i] + b[i]));
    }

    /// The comma-separated values, for a CSV row.
    pub fn csv(&self) -> String {
        let v = self.values().map(|x| x.to_string());
        v.join(",")
    }
}

/// Fault counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    pub nodes_lost: u64,
    pub spot_interruptions: u64,
    pub container_launch_failures: u64,
    pub instance_launch_failures: u64,
    pub insufficient_capacity: u64,
    pub container_crashes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    accepted_ms: u64,
    started_ms: Option<u64>,
    /// What an open task's row at the horizon needs (job, slot, attempt; its job gives the
    /// tier and the submission, so one record per task stays small: a replay can hold
    /// millions of pending tasks).
    job: JobId,
    slot: u32,
    attempt: u32,
    /// Set when the task was placed (`Launched`): no longer pending.
    placed: bool,
    /// The node it was placed on (driver id).
    node: Option<NodeId>,
    /// Where it counts in [`Metrics::pending_by_pool`] while pending, and in
    /// [`Metrics::used_by_pool`] while started (indexes into `pool_names`).
    pending_pool: Option<u32>,
    used_pool: Option<u32>,
}

/// A job's first-attempt tasks accepted together and not placed yet, without a [`Live`] entry
/// each (a replay can hold millions of pending tasks: ~80 bytes each in `Metrics::live`).
/// A job's initial tasks are accepted at once with consecutive ids (`base`, `base + 1`, … for
/// slots `slot0`, `slot0 + 1`, …) and placed in slot order, so the ones still pending are the
/// ids `next..end` less `gone` (placed or finished out of order: rare).
#[derive(Clone, Debug)]
struct PendingBlock {
    base: u64,
    slot0: u32,
    next: u64,
    end: u64,
    accepted_ms: u64,
    pending_pool: u32,
    gone: BTreeSet<u64>,
}

impl PendingBlock {
    /// Whether `task` is one of the block's tasks still pending.
    fn holds(&self, task: TaskId) -> bool {
        (self.next..self.end).contains(&task.0) && !self.gone.contains(&task.0)
    }

    /// Takes `task` (one it holds) out of the pending ones.
    fn take(&mut self, task: TaskId) {
        if task.0 == self.next {
            self.next += 1;
            while self.gone.remove(&self.next) {
                self.next += 1;
            }
        } else {
            self.gone.insert(task.0);
        }
    }

    fn slot_of(&self, task: TaskId) -> u32 {
        self.slot0 + (task.0 - self.base) as u32
    }

    /// The record `task` (one of the block's, of `job`) would have had in `Metrics::live`
    /// while pending.
    fn live(&self, job: JobId, task: TaskId) -> Live {
        Live {
            accepted_ms: self.accepted_ms,
            started_ms: None,
            job,
            slot: self.slot_of(task),
            attempt: 0,
            placed: false,
            node: None,
            pending_pool: Some(self.pending_pool),
            used_pool: None,
        }
    }

    /// The tasks still pending, in id order.
    fn pending(&self) -> impl Iterator<Item = TaskId> + '_ {
        (self.next..self.end)
            .filter(|t| !self.gone.contains(t))
            .map(TaskId)
    }
}

/// Accumulated measurements.
pub struct Metrics {
    pub series: Vec<Sample>,
    /// (t_ms, pool, instance type, zone, nodes).
    pub nodes_series: Vec<(u64, String, String, String, u64)>,
    /// Pool names of `pools_series`: the scenario's pools in order, then the pools of static
    /// nodes outside them, then [`NO_POOL`] when anything counts under it.
    pub pool_names: Vec<String>,
    /// Per sample: its time and one entry per pool of `pool_names` (a pool named later in the
    /// run has no entry in earlier samples: it had nothing then).
    pub pools_series: Vec<(u64, Vec<PoolFigures>)>,
    /// By job index: the index in `pool_names` its pending tasks count under (set at the first
    /// sample).
    job_pool: Vec<u32>,
    pub faults: FaultCounts,
    pub unplaced_reports: u64,
    pub instances_requested: u64,
    live: FxHashMap<TaskId, Live>,
    /// Per job: its first-attempt tasks accepted and never placed (not in `live`).
    pending_blocks: FxHashMap<JobId, PendingBlock>,
    /// Wait of first attempts, per tier.
    waits_ms: [Vec<u64>; 2],
    /// Sum and count of slowdowns: tasks that finished normally and ran more than 0 ms.
    slowdown_sum: f64,
    slowdown_n: u64,
    /// Sum and count of bounded slowdowns: every task that finished normally.
    bounded_slowdown_sum: f64,
    bounded_slowdown_n: u64,
    /// Per job with a task started and not yet ended: its first start and last end so far.
    job_spans: FxHashMap<JobId, (u64, u64)>,
    /// Sums and counts of per-job slowdown and bounded slowdown, over completed jobs (a job's
    /// response runs from its submission to its last task's end, its run from its first
    /// task's start to that end: the figures the SWF literature reports, where a rigid job
    /// of 64 processors is one job, not 64).
    job_slowdown_sum: f64,
    job_slowdown_n: u64,
    job_bounded_slowdown_sum: f64,
    job_bounded_slowdown_n: u64,
    pub retries: u64,
    pub tasks_started: u64,
    pub reasons: BTreeMap<String, u64>,
    pub job_states: BTreeMap<String, u64>,
    pub last_job_end_ms: u64,
    used: [u64; 3],
    tasks_out: Option<Box<dyn Write>>,
    pub interval_ms: u64,
    /// Hourly price (micro-USD) of the static nodes of a known instance type, with the node
    /// count it was summed over (static nodes come first and never go: a cache, not a figure).
    static_price: Option<(usize, u128)>,
    /// Pending tasks by their job's pool, and (cpu_milli, mem_mib, gpu_milli) of started tasks
    /// by their node's pool, kept as tasks change state: a sample costs O(pools), not O(tasks).
    pending_by_pool: Vec<u64>,
    used_by_pool: Vec<[u64; 3]>,
    /// `pool_names` and `job_pool` are set ([`init_pools`], before the first event).
    pools_ready: bool,
    /// Per node (driver id), set at the first sample that counts it: its pool index and its
    /// (pool, instance type, zone) group, so a sample does no string work per node.
    node_groups: Vec<Option<(u32, u32)>>,
    /// The groups' ids, and their keys by id.
    groups: BTreeMap<(String, String, String), u32>,
    group_keys: Vec<(String, String, String)>,
}

fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Critical => 0,
        Tier::Flex => 1,
    }
}

impl Metrics {
    pub fn new(tasks_out: Option<Box<dyn Write>>, interval_ms: u64) -> Metrics {
        Metrics {
            series: Vec::new(),
            nodes_series: Vec::new(),
            pool_names: Vec::new(),
            pools_series: Vec::new(),
            job_pool: Vec::new(),
            faults: FaultCounts::default(),
            unplaced_reports: 0,
            instances_requested: 0,
            live: FxHashMap::default(),
            pending_blocks: FxHashMap::default(),
            waits_ms: [Vec::new(), Vec::new()],
            slowdown_sum: 0.0,
            slowdown_n: 0,
            bounded_slowdown_sum: 0.0,
            bounded_slowdown_n: 0,
            job_spans: FxHashMap::default(),
            job_slowdown_sum: 0.0,
            job_slowdown_n: 0,
            job_bounded_slowdown_sum: 0.0,
            job_bounded_slowdown_n: 0,
            retries: 0,
            tasks_started: 0,
            reasons: BTreeMap::new(),
            job_states: BTreeMap::new(),
            last_job_end_ms: 0,
            used: [0; 3],
            tasks_out,
            interval_ms,
            static_price: None,
            pending_by_pool: Vec::new(),
            used_by_pool: Vec::new(),
            node_groups: Vec::new(),
            groups: BTreeMap::new(),
            group_keys: Vec::new(),
            pools_ready: false,
        }
    }

    pub(crate) fn task_record(
        &mut self,
        now: u64,
        r: &TaskRecord,
        t: Option<&SimTask>,
        node_pool: Option<&str>,
        jobs: &[SimJob],
        index: &FxHashMap<JobId, usize>,
    ) {
        match r.state {
            TaskState::Accepted => {
                if r.attempt > 0 {
                    self.retries += 1;
                }
                let job_index = index.get(&r.job).copied();
                let pending_pool = match job_index.and_then(|j| self.job_pool.get(j)) {
                    Some(&i) => i,
                    None => self.pool_index(NO_POOL),
                };
                self.count_pending(pending_pool, true);
                if r.attempt == 0 && !self.live.contains_key(&r.task) {
                    // The next of a block accepted in this instant, or a block's first task.
                    let block = self.pending_blocks.entry(r.job).or_insert(PendingBlock {
                        base: r.task.0,
                        slot0: r.slot,
                        next: r.task.0,
                        end: r.task.0,
                        accepted_ms: now,
                        pending_pool,
                        gone: BTreeSet::new(),
                    });
                    if block.end == r.task.0
                        && block.accepted_ms == now
                        && block.pending_pool == pending_pool
                        && block.slot_of(r.task) == r.slot
                    {
                        block.end += 1;
                        return;
                    }
                }
                let old = self.live.insert(
                    r.task,
                    Live {
                        accepted_ms: now,
                        started_ms: None,
                        job: r.job,
                        slot: r.slot,
                        attempt: r.attempt,
                        placed: false,
                        node: None,
                        pending_pool: Some(pending_pool),
                        used_pool: None,
                    },
                );
                if let Some(old) = old {
                    self.uncount(&old, t);
                }
            }
            // A task of a pending block moves to `live` in the guard; a tracked one here.
            TaskState::Launched if !self.placed_from_block(r) => {
                if let Some(l) = self.live.get_mut(&r.task) {
                    l.placed = true;
                    l.node = r.node;
                    if let Some(p) = l.pending_pool.take() {
                        self.count_pending(p, false);
                    }
                }
            }
            TaskState::Started => {
                self.tasks_started += 1;
                // Placed and started in one record (a driver may skip `Launched`).
                self.placed_from_block(r);
                let pool = node_pool.map(|p| self.pool_index(pool_label(p)));
                if let Some(l) = self.live.get_mut(&r.task) {
                    l.started_ms = Some(now);
                    if let (Some(t), true, Some(_), None, Some(p)) =
                        (t, l.placed, l.node, l.used_pool, pool)
                    {
                        l.used_pool = Some(p);
                        let i = p as usize;
                        if self.used_by_pool.len() <= i {
                            self.used_by_pool.resize(i + 1, [0; 3]);
                        }
                        let u = &mut self.used_by_pool[i];
                        u[0] += t.resources.cpu_milli;
                        u[1] += t.resources.mem_mib;
                        u[2] += t.gpu_milli;
                    }
                }
                if let Some(t) = t {
                    self.used[0] += t.resources.cpu_milli;
                    self.used[1] += t.resources.mem_mib;
                    self.used[2] += t.gpu_milli;
                }
                if r.attempt == 0 {
                    if let Some(&ji) = index.get(&r.job) {
                        let j = &jobs[ji];
                        self.waits_ms[tier_index(j.spec.tier)]
                            .push(now.saturating_sub(j.submit_ms));
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn task_finished(
        &mut self,
        now: u64,
        r: &TaskRecord,
        t: Option<&SimTask>,
        jobs: &[SimJob],
        index: &FxHashMap<JobId, usize>,
    ) {
        let reason = r.reason.unwrap_or(TaskReason::Normal);
        match self.reasons.get_mut(reason.name()) {
            Some(c) => *c += 1,
            None => {
                self.reasons.insert(reason.name().to_string(), 1);
            }
        }
        let live = self.live.remove(&r.task);
        if let Some(l) = &live {
            self.uncount(l, t);
        } else if let Some(b) = self
            .pending_blocks
            .get_mut(&r.job)
            .filter(|b| b.holds(r.task))
        {
            // Finished without being placed (its job killed, say).
            b.take(r.task);
            let pool = b.pending_pool;
            self.count_pending(pool, false);
        }
        let started = live.as_ref().and_then(|l| l.started_ms);
        if let (Some(_), Some(t)) = (started, t) {
            self.used[0] -= t.resources.cpu_milli;
            self.used[1] -= t.resources.mem_mib;
            self.used[2] -= t.gpu_milli;
        }
        let job = index.get(&r.job).map(|&i| &jobs[i]);
        let submit = job.map_or(live.as_ref().map_or(now, |l| l.accepted_ms), |j| {
            j.submit_ms
        });
        if let Some(s) = started {
            let span = self.job_spans.entry(r.job).or_insert((s, now));
            span.0 = span.0.min(s);
            span.1 = span.1.max(now);
        }
        let (mut slowdown, mut bounded) = (f64::NAN, f64::NAN);
        if let (Some(s), TaskReason::Normal) = (started, reason) {
            let run = now.saturating_sub(s);
            let response = now.saturating_sub(submit);
            if run > 0 {
                slowdown = response as f64 / run as f64;
                self.slowdown_sum += slowdown;
                self.slowdown_n += 1;
            }
            bounded = (response as f64 / run.max(SLOWDOWN_BOUND_MS) as f64).max(1.0);
            self.bounded_slowdown_sum += bounded;
            self.bounded_slowdown_n += 1;
        }
        if let Some(w) = self.tasks_out.as_mut() {
            let tier = job.map_or("", |j| j.spec.tier.as_str());
            let start = started.map_or(String::new(), |s| s.to_string());
            let wait = started.map_or(String::new(), |s| s.saturating_sub(submit).to_string());
            let run = started.map_or(String::new(), |s| now.saturating_sub(s).to_string());
            let fmt = |x: f64| {
                if x.is_nan() {
                    String::new()
                } else {
                    format!("{x:.4}")
                }
            };
            let _ = writeln!(
                w,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.task.0,
                r.job.0,
                r.slot,
                r.attempt,
                tier,
                submit,
                start,
                now,
                reason.name(),
                wait,
                run,
                fmt(slowdown),
                fmt(bounded)
            );
        }
    }

    /// (mean slowdown, mean bounded slowdown) of the tasks finished so far, each over the tasks
    /// it is defined for; 0 when there are none.
    pub fn slowdown_means(&self) -> (f64, f64) {
        let mean = |sum: f64, n: u64| if n > 0 { sum / n as f64 } else { 0.0 };
        (
            mean(self.slowdown_sum, self.slowdown_n),
            mean(self.bounded_slowdown_sum, self.bounded_slowdown_n),
        )
    }

    /// (mean slowdown, mean bounded slowdown) over completed jobs: a job's response runs from
    /// its submission to its last task's end, its run from its first task's start.
    pub fn job_slowdown_means(&self) -> (f64, f64) {
        let mean = |sum: f64, n: u64| if n > 0 { sum / n as f64 } else { 0.0 };
        (
            mean(self.job_slowdown_sum, self.job_slowdown_n),
            mean(self.job_bounded_slowdown_sum, self.job_bounded_slowdown_n),
        )
    }

    /// A job's final state (`submit_ms`: its submission, when the driver knows the job).
    pub(crate) fn job_record(
        &mut self,
        now: u64,
        job: JobId,
        state: JobState,
        submit_ms: Option<u64>,
    ) {
        let span = self.job_spans.remove(&job);
        if let (JobState::Completed, Some((start, end)), Some(submit)) = (state, span, submit_ms) {
            let run = end.saturating_sub(start);
            let response = end.saturating_sub(submit);
            if run > 0 {
                self.job_slowdown_sum += response as f64 / run as f64;
                self.job_slowdown_n += 1;
            }
            self.job_bounded_slowdown_sum +=
                (response as f64 / run.max(SLOWDOWN_BOUND_MS) as f64).max(1.0);
            self.job_bounded_slowdown_n += 1;
        }
        let name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *self.job_states.entry(name).or_insert(0) += 1;
        if matches!(
            state,
            JobState::Completed | JobState::Failed | JobState::Killed
        ) {
            self.last_job_end_ms = now;
        }
    }
}

/// Cost so far, micro-dollars.
fn cost_micro_usd(e: &mut Engine<'_>) -> u64 {
    let now = e.now_ms;
    let statics = e.nodes.iter().filter(|n| n.instance.is_none()).count();
    let static_price = match e.metrics.static_price {
        Some((count, p)) if count == statics => p,
        _ => {
            let p = e
                .nodes
                .iter()
                .filter(|n| n.instance.is_none())
                .filter_map(|n| {
                    berth_solver::catalog::Catalog::ec2().get(&n.spec.attributes.instance_type)
                })
                .map(|t| u128::from(t.price_per_hour_micro_usd))
                .sum();
            e.metrics.static_price = Some((statics, p));
            p
        }
    };
    let mut total: u128 = static_price * u128::from(now) / 3_600_000;
    for name in &e.instance_order {
        let i = &e.instances[name];
        let end = i.gone_ms.unwrap_or(now).min(now);
        let ms = end.saturating_sub(i.launched_ms);
        total += u128::from(i.price_micro_usd_per_hour) * u128::from(ms) / 3_600_000;
    }
    total as u64
}

/// Does a node with `attrs` satisfy the hard attribute constraints? (Zone balance, unique and
/// exclusive host depend on where other tasks are, not on the node: they pass.)
fn attributes_ok(c: &Constraints, attrs: &NodeAttributes) -> bool {
    c.hard.iter().all(|k| match k {
        Constraint::AttributeEquals { key, value } => attrs.get(key) == Some(value.as_str()),
        Constraint::AttributeIn { key, values } => attrs
            .get(key)
            .is_some_and(|v| values.iter().any(|x| x == v)),
        _ => true,
    })
}

/// The pool name a node counts under.
fn pool_label(attr: &str) -> &str {
    if attr.is_empty() {
        NO_POOL
    } else {
        attr
    }
}

/// Who may serve pending tasks, in the order they are tried (see the module documentation).
struct Servers<'a> {
    pools: &'a [PoolSpec],
    /// Pools each tier may use (the policy's, else derived from the pools' tiers, as the
    /// controller does); absent or empty = any.
    tier_pools: BTreeMap<Tier, Vec<String>>,
    /// Distinct static nodes outside the pools (attributes, capacity and GPUs).
    static_kinds: Vec<NodeSpec>,
}

impl Servers<'_> {
    fn tier_may_use(&self, tier: Tier, pool: &str) -> bool {
        self.tier_pools
            .get(&tier)
            .is_none_or(|l| l.is_empty() || l.iter().any(|p| p == pool))
    }

    /// The configured pool (index into `pools`) or else the static kind (index into
    /// `static_kinds`, after the pools) a pending task of `job` counts under.
    fn serving(&self, job: &JobSpec) -> Option<usize> {
        let catalog = Catalog::ec2();
        for (i, p) in self.pools.iter().enumerate() {
            if !self.tier_may_use(job.tier, &p.name) {
                continue;
            }
            for t in p.instance_types.iter().filter_map(|t| catalog.get(t)) {
                if !NodeKind::from_instance_type(t).can_host(&job.task) {
                    continue;
                }
                let fits_zone = p.zones.iter().any(|z| {
                    let attrs = NodeAttributes {
                        zone: z.clone(),
                        instance_type: t.name.clone(),
                        pool: p.name.clone(),
                        labels: BTreeMap::new(),
                    };
                    attributes_ok(&job.constraints, &attrs)
                });
                if fits_zone {
                    return Some(i);
                }
            }
        }
        self.static_kinds
            .iter()
            .position(|n| {
                self.tier_may_use(job.tier, &n.attributes.pool)
                    && attributes_ok(&job.constraints, &n.attributes)
                    && NodeKind::new(n.capacity, n.gpus.clone()).can_host(&job.task)
            })
            .map(|k| self.pools.len() + k)
    }
}

impl Metrics {
    /// The index of pool `name` in `pool_names`, added when new.
    /// One more (`add`) or one fewer pending task in pool `p`.
    fn count_pending(&mut self, p: u32, add: bool) {
        let i = p as usize;
        if self.pending_by_pool.len() <= i {
            self.pending_by_pool.resize(i + 1, 0);
        }
        if add {
            self.pending_by_pool[i] += 1;
        } else {
            self.pending_by_pool[i] -= 1;
        }
    }

    /// A task its job's pending block holds, placed: out of the block and the pending count,
    /// into `live`. False when no block holds it.
    fn placed_from_block(&mut self, r: &TaskRecord) -> bool {
        let Some(b) = self
            .pending_blocks
            .get_mut(&r.job)
            .filter(|b| b.holds(r.task))
        else {
            return false;
        };
        b.take(r.task);
        let pending = b.live(r.job, r.task);
        let pool = b.pending_pool;
        self.count_pending(pool, false);
        self.live.insert(
            r.task,
            Live {
                placed: true,
                node: r.node,
                pending_pool: None,
                ..pending
            },
        );
        true
    }

    /// Takes a task that leaves (or is replaced) out of the per-pool counts.
    fn uncount(&mut self, l: &Live, t: Option<&SimTask>) {
        if let Some(p) = l.pending_pool {
            self.count_pending(p, false);
        }
        if let (Some(p), Some(t)) = (l.used_pool, t) {
            let u = &mut self.used_by_pool[p as usize];
            u[0] -= t.resources.cpu_milli;
            u[1] -= t.resources.mem_mib;
            u[2] -= t.gpu_milli;
        }
    }

    fn pool_index(&mut self, name: &str) -> u32 {
        match self.pool_names.iter().position(|p| p == name) {
            Some(i) => i as u32,
            None => {
                self.pool_names.push(name.to_string());
                (self.pool_names.len() - 1) as u32
            }
        }
    }
}

impl<'a> Servers<'a> {
    /// The pools of `s` and the static nodes (`nodes`) outside them.
    fn new<'n>(s: &'a Scenario, nodes: impl IntoIterator<Item = &'n NodeSpec>) -> Servers<'a> {
        let pools = &s.cluster.pools;
        let mut tier_pools = s
            .policy
            .placement_policy()
            .map(|p| p.tier_pools)
            .unwrap_or_default();
        if tier_pools.is_empty() && !pools.is_empty() {
            for tier in Tier::ALL {
                let names: Vec<String> = pools
                    .iter()
                    .filter(|p| p.tier == tier)
                    .map(|p| p.name.clone())
                    .collect();
                if !names.is_empty() {
                    tier_pools.insert(tier, names);
                }
            }
        }
        let mut static_kinds: Vec<NodeSpec> = Vec::new();
        for n in nodes {
            if pools.iter().any(|p| p.name == n.attributes.pool) {
                continue;
            }
            let same = |k: &NodeSpec| {
                k.attributes == n.attributes && k.capacity == n.capacity && k.gpus == n.gpus
            };
            if !static_kinds.iter().any(same) {
                static_kinds.push(n.clone());
            }
        }
        Servers {
            pools,
            tier_pools,
            static_kinds,
        }
    }

    /// The pool name of each server (`serving`'s index).
    fn names(&self) -> Vec<String> {
        self.pools
            .iter()
            .map(|p| p.name.clone())
            .chain(
                self.static_kinds
                    .iter()
                    .map(|k| pool_label(&k.attributes.pool).to_string()),
            )
            .collect()
    }
}

/// Names the pools and decides, per job, the pool its pending tasks count under (at the first
/// sample: the static nodes are known, pool nodes carry their pool's name).
pub(crate) fn init_pools(e: &mut Engine<'_>) {
    if e.metrics.pools_ready {
        return;
    }
    e.metrics.pools_ready = true;
    let servers = Servers::new(
        e.s,
        e.nodes
            .iter()
            .filter(|n| n.instance.is_none())
            .map(|n| &n.spec),
    );
    let pools = servers.pools;
    let m = &mut e.metrics;
    for p in pools {
        m.pool_index(&p.name);
    }
    for n in &e.nodes {
        m.pool_index(pool_label(&n.spec.attributes.pool));
    }
    let server_pool = servers.names();
    let mut job_pool = Vec::with_capacity(e.jobs.len());
    for j in &e.jobs {
        let name = servers
            .serving(&j.spec)
            .map_or(NO_POOL, |i| server_pool[i].as_str());
        job_pool.push(m.pool_index(name));
    }
    m.job_pool = job_pool;
}

/// Takes one time-series sample, and its per-pool figures.
pub(crate) fn sample(e: &mut Engine<'_>) {
    init_pools(e);
    let cost_usd = cost_micro_usd(e) as f64 / 1e6;
    let view = e.ctrl.view();
    let mut s = Sample {
        t_ms: e.now_ms,
        figures: PoolFigures::default(),
        cost_usd,
    };
    let mut per: Vec<u64> = vec![0; e.metrics.group_keys.len()];
    let mut pools = vec![PoolFigures::default(); e.metrics.pool_names.len()];
    if e.metrics.node_groups.len() < view.len() {
        e.metrics.node_groups.resize(view.len(), None);
    }
    for n in 0..view.len() {
        let id = NodeId(n as u32);
        if !view.is_schedulable(id) {
            continue;
        }
        let spec = view.node(id);
        let free = view.free(id);
        let devs = view.gpu_free(id);
        let cap = devs.len() as u64 * 1000;
        let gfree: u64 = devs.iter().map(|&f| u64::from(f)).sum();
        let (pi, group) = match e.metrics.node_groups[n] {
            Some(g) => g,
            None => {
                let m = &mut e.metrics;
                let a = &spec.attributes;
                let pi = m.pool_index(pool_label(&a.pool));
                let key = (a.pool.clone(), a.instance_type.clone(), a.zone.clone());
                let next = m.group_keys.len() as u32;
                let group = *m.groups.entry(key.clone()).or_insert(next);
                if group == next {
                    m.group_keys.push(key);
                }
                m.node_groups[n] = Some((pi, group));
                (pi, group)
            }
        };
        let pi = pi as usize;
        if pi >= pools.len() {
            pools.resize(pi + 1, PoolFigures::default());
        }
        let p = &mut pools[pi];
        p.nodes += 1;
        p.cpu_capacity_milli += spec.capacity.cpu_milli;
        p.cpu_alloc_milli += spec.capacity.cpu_milli - free.cpu_milli;
        p.mem_capacity_mib += spec.capacity.mem_mib;
        p.mem_alloc_mib += spec.capacity.mem_mib - free.mem_mib;
        p.gpu_capacity_milli += cap;
        p.gpu_alloc_milli += cap - gfree;
        if gfree > 0 && gfree < cap {
            p.gpu_idle_on_partial_nodes_milli += gfree;
        }
        p.running_tasks += u64::from(view.task_count(id));
        let g = group as usize;
        if g >= per.len() {
            per.resize(g + 1, 0);
        }
        per[g] += 1;
    }
    // Started tasks by their node's pool (nodes out of service too, as `used` counts them);
    // pending tasks by their job's pool. Sums of integers: the map's order does not matter.
    // A name not yet in `pool_names` (not expected: every node's pool is named at the first
    // sample or when it comes into service) is added after the loop.
    pools.resize(e.metrics.pool_names.len(), PoolFigures::default());
    let m = &e.metrics;
    pools.resize(m.pool_names.len(), PoolFigures::default());
    for (i, &c) in m.pending_by_pool.iter().enumerate() {
        pools[i].pending_tasks += c;
    }
    for (i, u) in m.used_by_pool.iter().enumerate() {
        pools[i].cpu_used_milli += u[0];
        pools[i].mem_used_mib += u[1];
        pools[i].gpu_used_milli += u[2];
    }
    for p in &pools {
        s.figures.add(p);
    }
    // Used and pending from the run's own totals (every started task, every pending one).
    s.figures.cpu_used_milli = m.used[0];
    s.figures.mem_used_mib = m.used[1];
    s.figures.gpu_used_milli = m.used[2];
    s.figures.pending_tasks = e.ctrl.stats().pending_tasks;
    // Groups with nodes, in key order.
    let m = &mut e.metrics;
    for &g in m.groups.values() {
        let c = per.get(g as usize).copied().unwrap_or(0);
        if c > 0 {
            let (pool, it, zone) = m.group_keys[g as usize].clone();
            m.nodes_series.push((s.t_ms, pool, it, zone, c));
        }
    }
    e.metrics.pools_series.push((s.t_ms, pools));
    e.metrics.series.push(s);
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Closes the run: tasks still live get rows without an end; the summary is computed.
pub(crate) fn finish(e: &mut Engine<'_>, source: &str) -> Result<SimReport, SimError> {
    let m = &mut e.metrics;
    // Rows for tasks still pending or running at the horizon, in task order: the tracked
    // ones and the never-placed first attempts of the pending blocks.
    if let Some(w) = m.tasks_out.as_mut() {
        let implicit: Vec<(TaskId, Live)> = m
            .pending_blocks
            .iter()
            .flat_map(|(&job, b)| b.pending().map(move |t| (t, b.live(job, t))))
            .collect();
        let mut open: Vec<(&TaskId, &Live)> = m
            .live
            .iter()
            .chain(implicit.iter().map(|(t, l)| (t, l)))
            .collect();
        open.sort_by_key(|(t, _)| **t);
        for (t, l) in open {
            let job = e.job_index.get(&l.job).map(|&i| &e.jobs[i]);
            let submit = job.map_or(l.accepted_ms, |j| j.submit_ms);
            let start = l.started_ms.map_or(String::new(), |s| s.to_string());
            let wait = l
                .started_ms
                .map_or(String::new(), |s| s.saturating_sub(submit).to_string());
            let _ = writeln!(
                w,
                "{},{},{},{},{},{},{},,open,{},,,",
                t.0,
                l.job.0,
                l.slot,
                l.attempt,
                job.map_or("", |j| j.spec.tier.as_str()),
                submit,
                start,
                wait
            );
        }
        w.flush().map_err(|err| SimError::Io {
            path: "tasks.csv".into(),
            source: err,
        })?;
    }
    m.tasks_out = None;
    let mut tiers = BTreeMap::new();
    for tier in Tier::ALL {
        let v = &mut m.waits_ms[tier_index(tier)];
        v.sort_unstable();
        tiers.insert(
            tier.as_str().to_string(),
            TierFigures {
                tasks_started: v.len() as u64,
                wait_ms_p50: percentile(v, 50.0),
                wait_ms_p99: percentile(v, 99.0),
                wait_ms_max: v.last().copied(),
            },
        );
    }
    let (slowdown_mean, bounded_slowdown_mean) = m.slowdown_means();
    let (job_slowdown_mean, job_bounded_slowdown_mean) = m.job_slowdown_means();
    let series = &m.series;
    let mean = |f: &dyn Fn(&Sample) -> (u64, u64)| {
        let (mut a, mut b) = (0f64, 0f64);
        for s in series {
            let (x, y) = f(s);
            a += x as f64;
            b += y as f64;
        }
        if b > 0.0 {
            a / b
        } else {
            0.0
        }
    };
    let report = SimReport {
        scenario: e.s.name.clone(),
        workload: source.to_string(),
        seed: e.s.seed,
        horizon_ms: e.s.horizon_ms,
        events: e.events,
        event_log_hash: format!("{:016x}", e.hash.0),
        jobs_submitted: e
            .jobs
            .iter()
            .filter(|j| j.submit_ms < e.s.horizon_ms)
            .count() as u64,
        job_states: m.job_states.clone(),
        last_job_end_ms: m.last_job_end_ms,
        tasks_started: m.tasks_started,
        task_reasons: m.reasons.clone(),
        retries: m.retries,
        tiers,
        slowdown_mean,
        bounded_slowdown_mean,
        job_slowdown_mean,
        job_bounded_slowdown_mean,
        cpu_alloc_mean: mean(&|s| (s.figures.cpu_alloc_milli, s.figures.cpu_capacity_milli)),
        mem_alloc_mean: mean(&|s| (s.figures.mem_alloc_mib, s.figures.mem_capacity_mib)),
        gpu_alloc_mean: mean(&|s| (s.figures.gpu_alloc_milli, s.figures.gpu_capacity_milli)),
        cpu_used_mean: mean(&|s| (s.figures.cpu_used_milli, s.figures.cpu_capacity_milli)),
        pending_tasks_max: series
            .iter()
            .map(|s| s.figures.pending_tasks)
            .max()
            .unwrap_or(0),
        pending_tasks_end: series.last().map_or(0, |s| s.figures.pending_tasks),
        nodes_max: series.iter().map(|s| s.figures.nodes).max().unwrap_or(0),
        nodes_end: series.last().map_or(0, |s| s.figures.nodes),
        instances_requested: m.instances_requested,
        cost_usd: series.last().map_or(0.0, |s| s.cost_usd),
        faults: m.faults,
        unplaced_reports: m.unplaced_reports,
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_solver::{BatchSpec, GpuDemand, JobKind, Resources, TaskShape};

    fn job(tier: Tier, task: TaskShape, hard: Vec<Constraint>) -> JobSpec {
        JobSpec {
            name: "j".into(),
            owner: String::new(),
            tier,
            capacity_group: "default".into(),
            kind: JobKind::Batch(BatchSpec {
                size: 1,
                runtime_limit_ms: None,
                retry: Default::default(),
                gang: false,
            }),
            task,
            constraints: Constraints {
                hard,
                soft: Vec::new(),
            },
            container: None,
        }
    }

    fn equals(key: &str, value: &str) -> Constraint {
        Constraint::AttributeEquals {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_pending_task_counts_under_the_first_pool_that_could_serve_it() {
        // The default scenario: critical (m5.2xlarge, g5.2xlarge; critical tier only), cpu
        // (m5.*) and gpu (g5.xlarge, g5.2xlarge), both flex.
        let s = Scenario::default_scenario();
        let big = NodeSpec {
            id: NodeId(0),
            name: "big".into(),
            capacity: Resources::new(1_000_000, 1 << 30, 1 << 30, 1 << 20),
            gpus: None,
            attributes: NodeAttributes::default(),
        };
        let sv = Servers::new(&s, [&big, &big]);
        assert_eq!(sv.names(), ["critical", "cpu", "gpu", NO_POOL]);
        let cpu = TaskShape::new(Resources::new(1000, 2048, 0, 0));
        let gpu = cpu.clone().with_gpu(GpuDemand::Milli(500));
        let huge = TaskShape::new(Resources::new(500_000, 2048, 0, 0));
        let serving = |tier, shape: &TaskShape, hard| sv.serving(&job(tier, shape.clone(), hard));
        assert_eq!(serving(Tier::Critical, &cpu, vec![]), Some(0));
        assert_eq!(serving(Tier::Critical, &gpu, vec![]), Some(0));
        assert_eq!(serving(Tier::Flex, &cpu, vec![]), Some(1));
        // The cpu pool has no GPU: the gpu pool is the first that could serve it.
        assert_eq!(serving(Tier::Flex, &gpu, vec![]), Some(2));
        // Hard attribute constraints narrow the pools.
        assert_eq!(
            serving(Tier::Flex, &cpu, vec![equals("pool", "gpu")]),
            Some(2)
        );
        assert_eq!(
            serving(Tier::Flex, &cpu, vec![equals("instance_type", "g5.xlarge")]),
            Some(2)
        );
        // Only static nodes outside the pools could fit it, but the tiers' pools (derived from
        // the configured pools, as the controller does) leave them out.
        assert_eq!(serving(Tier::Flex, &huge, vec![]), None);
        // Nothing could: the caller counts it under NO_POOL.
        assert_eq!(
            serving(Tier::Flex, &gpu, vec![equals("zone", "mars")]),
            None
        );
        let eight = cpu.clone().with_gpu(GpuDemand::Whole(8));
        assert_eq!(serving(Tier::Critical, &eight, vec![]), None);
        // When any tier may use any node, the static nodes count under their pool name, after
        // the pools (the critical pool is now the first for flex work).
        let mut open = Servers::new(&s, [&big]);
        open.tier_pools.clear();
        assert_eq!(
            open.serving(&job(Tier::Flex, huge.clone(), vec![])),
            Some(3)
        );
        assert_eq!(open.serving(&job(Tier::Flex, cpu.clone(), vec![])), Some(0));
        // Without static nodes, a task too big for every pool is served by none.
        open.static_kinds.clear();
        assert_eq!(open.serving(&job(Tier::Flex, huge, vec![])), None);
    }

    fn record(task: u64, state: TaskState, reason: Option<TaskReason>) -> TaskRecord {
        TaskRecord {
            task: TaskId(task),
            job: JobId(0),
            slot: task as u32,
            attempt: 0,
            state,
            reason,
            node: Some(NodeId(0)),
        }
    }

    #[test]
    fn slowdown_means_cover_the_tasks_each_is_defined_for() {
        let (jobs, index) = one_job();
        let mut m = Metrics::new(None, 1000);
        for t in 0..3 {
            record_state(&mut m, 0, t, TaskState::Accepted, &jobs, &index);
        }
        // Task 0 waits 20 s and runs 0 ms: no slowdown, bounded slowdown 20 s / 10 s = 2.
        record_state(&mut m, 20_000, 0, TaskState::Started, &jobs, &index);
        let done = |t| record(t, TaskState::Finished, Some(TaskReason::Normal));
        m.task_finished(20_000, &done(0), None, &jobs, &index);
        // Task 1 starts at once and runs 100 s: slowdown 1, bounded slowdown 1.
        record_state(&mut m, 0, 1, TaskState::Started, &jobs, &index);
        m.task_finished(100_000, &done(1), None, &jobs, &index);
        // Task 2 never ran: neither.
        let killed = record(2, TaskState::Finished, Some(TaskReason::Killed));
        m.task_finished(100_000, &killed, None, &jobs, &index);
        let (slowdown, bounded) = m.slowdown_means();
        assert_eq!(slowdown, 1.0);
        assert_eq!(bounded, 1.5);
        assert_eq!(Metrics::new(None, 1000).slowdown_means(), (0.0, 0.0));
        // Per job: the job ended killed (one task killed): not a completed job.
        m.job_record(100_000, JobId(0), JobState::Killed, Some(0));
        assert_eq!(m.job_slowdown_means(), (0.0, 0.0));
    }

    /// `task_record` of task `t`'s move to `state` at `now` (no node pool, no resources).
    fn record_state(
        m: &mut Metrics,
        now: u64,
        t: u64,
        state: TaskState,
        jobs: &[SimJob],
        index: &FxHashMap<JobId, usize>,
    ) {
        m.task_record(now, &record(t, state, None), None, None, jobs, index);
    }

    /// One flex job, submitted at 0, and its index.
    fn one_job() -> (Vec<SimJob>, FxHashMap<JobId, usize>) {
        let jobs = vec![SimJob {
            id: JobId(0),
            submit_ms: 0,
            spec: job(
                Tier::Flex,
                TaskShape::new(Resources::new(1000, 1, 0, 0)),
                vec![],
            ),
            duration_ms: None,
            requested_ms: None,
            outcome: berth_traces::TraceOutcome::Completed,
        }];
        (jobs, [(JobId(0), 0)].into_iter().collect())
    }

    /// A rigid job of two tasks is one job: submitted at 0, both start at 10 s, end at 20 s
    /// and 30 s: response 30 s over run 20 s = 1.5 (its tasks' mean would be 1.75).
    #[test]
    fn job_slowdown_counts_a_job_once_from_its_first_start_to_its_last_end() {
        let (jobs, index) = one_job();
        let mut m = Metrics::new(None, 1000);
        for t in 0..2 {
            record_state(&mut m, 0, t, TaskState::Accepted, &jobs, &index);
            record_state(&mut m, 10_000, t, TaskState::Started, &jobs, &index);
        }
        let done = |t| record(t, TaskState::Finished, Some(TaskReason::Normal));
        m.task_finished(20_000, &done(0), None, &jobs, &index);
        m.task_finished(30_000, &done(1), None, &jobs, &index);
        assert_eq!(m.slowdown_means().0, (2.0 + 1.5) / 2.0);
        m.job_record(30_000, JobId(0), JobState::Completed, Some(0));
        assert_eq!(m.job_slowdown_means(), (1.5, 1.5));
        assert!(m.job_spans.is_empty());
    }
}
