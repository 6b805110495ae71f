//! Batch placement as a mixed-integer program, warm-started from the heuristic, with a proven
//! gap (feature `milp`, HiGHS through good_lp).
//!
//! [`place_milp`] decides the same question as [`crate::place()`] (which node and which GPU
//! devices each task of a batch gets) but optimises the batch as a whole:
//!
//! 1. Run the heuristic ([`crate::place()`] with the caller's policy, plus best-fit) on clones
//!    of the view; keep the best plan under the MILP's objective. It is the warm start and the
//!    fallback.
//! 2. Candidate pairs: task `i` may go to node `j` when the node passes the static filters the
//!    heuristic applies (schedulable, tier pools, hard attributes, exclusivity, unique host
//!    against tasks already there, free capacity, GPU model and devices). Zone balance is a
//!    constraint, not a filter.
//! 3. Node groups: empty nodes identical in capacity, GPUs, attributes and zone are
//!    interchangeable, so at most one per task of the batch is kept per group (an exact
//!    reduction), and the heuristic plan is renumbered onto the kept nodes in order. Within a
//!    group `u[j] >= u[j+1]` breaks the symmetry; on a node, fully free devices are likewise
//!    ordered (`z[j][d] >= z[j][d+1]`).
//! 4. The model: `x[i][j]` binary (task on node), `s[i]` unplaced; GPU whole-device use
//!    `z[j][d]` per fully free device and fractional placement `y[i][j][d]` per device with
//!    room; scalar capacity per node; unique host; exclusive host (`e[job][j]`); gangs all or
//!    nothing; hard zone balance per job over the view's zones (final counts, skew at most
//!    `max(max_skew, skew already there)` so that placing nothing is always feasible).
//!    Objective (minimised): `BIG * unplaced + term`, `BIG` larger than any term, so placing
//!    the most tasks comes first; the term is [`MilpObjective`].
//! 5. Solve with HiGHS (threads, seed, time limit, gap from [`MilpConfig`]); check every
//!    integer value is integral (rounding, refusing anything further than 1e-6 from an
//!    integer); build the plan; verify it with [`check_plan`] (the view's own overcommit check,
//!    applied assignment by assignment, plus unique host, zone balance, gangs, GPU models).
//!    Any failure returns the heuristic plan ([`MilpStatus::FellBackToHeuristic`]).
//! 6. Tasks left unplaced get the heuristic's reasons on the final view (and a non-gang task the
//!    heuristic can still place there is placed: a time-limited incumbent may leave one).
//!
//! Bound: for [`MilpObjective::MinNodes`], when the heuristic places every task, the optimum
//! places every task too (`BIG`), so [`crate::bounds::opened_lower_bound`] (tasks no occupied
//! node can take, per-dimension demand beyond the occupied nodes' free capacity) bounds its
//! nodes opened. It is added to the model as a cut (`sum u >= bound`: HiGHS' own bound starts
//! there instead of at the LP relaxation's, which is weak for bin packing) and reported when
//! higher than the solver's.
//!
//! Decomposition: when the candidate pairs exceed [`MilpConfig::pairs_max`], the batch is split
//! into consecutive chunks of whole jobs (gangs, unique host and zone balance are per job, so no
//! constraint crosses a chunk) and the chunks are solved one after the other, each against the
//! view holding the chunks before it. Each chunk is optimal or time-limited on its own; the whole
//! has no solver bound (only the combinatorial one above).
//!
//! Determinism: this is decide-code. HiGHS with `threads = 1` and a fixed seed is deterministic
//! for a given model, but a wall-clock time limit makes the incumbent depend on the machine's
//! speed and load: two runs that hit the limit may return different plans. Runs that finish
//! (status [`MilpStatus::Optimal`]) return the same plan. Use [`MilpConfig::node_limit`] (a work
//! limit, HiGHS `mip_max_nodes`) instead of a tight time limit where reproducibility matters
//! (the simulator); tests use generous limits on instances that solve to optimality.

// Model building walks parallel arrays (nodes x devices x dimensions) by index, as the
// formulation is written; iterator chains would hide which index is which.
#![allow(clippy::needless_range_loop)]

pub(crate) mod highs_run;

pub use highs_run::relative_gap;

use crate::catalog::Catalog;
use crate::ids::{JobId, NodeId, TaskId};
use crate::job::Constraint;
use crate::place::{place, PlaceError, Placer, Policy, ScorerKind};
use crate::plan::{Assignment, FilterReason, GpuSlice, Plan, ReasonCounts, TaskRequest, Unplaced};
use crate::resources::{GpuDemand, GPU_MILLI_PER_DEVICE};
use crate::view::{ClusterView, NO_MODEL};
use good_lp::{highs, variable, Expression, SolverModel, Variable};
use highs_run::{integral, run, ColumnIndex, Columns, RunOptions, RunStatus};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

const FULL: u16 = GPU_MILLI_PER_DEVICE as u16;

/// What the MILP minimises after the number of unplaced tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MilpObjective {
    /// Nodes that were empty and receive a task (consolidation).
    #[default]
    MinNodes,
    /// On-demand price per hour of the nodes that were empty and receive a task; prices from the
    /// EC2 catalogue by the node's `instance_type` (an unknown type is an error).
    MinCost,
    /// GPU fragmentation proxy: GPU devices that were entirely free and receive a fractional
    /// share (each such device can no longer host a whole-GPU task).
    MinGpuFragmentation,
}

/// How the MILP runs.
#[derive(Clone, Debug, PartialEq)]
pub struct MilpConfig {
    /// HiGHS wall-clock limit per solve (see the determinism note in the module doc).
    pub time_limit_ms: u64,
    /// Relative gap at which HiGHS stops (0.0 = prove optimality).
    pub mip_gap: f64,
    pub threads: u32,
    pub objective: MilpObjective,
    /// HiGHS branch-and-bound node limit: a work limit that does not depend on the machine.
    pub node_limit: Option<u64>,
    /// HiGHS random seed.
    pub seed: i32,
    /// Candidate (task, node) pairs above which the batch is decomposed into chunks.
    pub pairs_max: usize,
    /// Also run best-fit as a warm-start candidate (besides the caller's policy).
    pub warm_start_best_fit: bool,
}

impl Default for MilpConfig {
    fn default() -> Self {
        MilpConfig {
            time_limit_ms: 10_000,
            mip_gap: 1e-4,
            threads: 1,
            objective: MilpObjective::MinNodes,
            node_limit: None,
            seed: 0,
            pairs_max: 20_000,
            warm_start_best_fit: true,
        }
    }
}

/// How a MILP placement ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MilpStatus {
    /// Every part solved to within `mip_gap`; the plan is proven optimal (to that gap).
    Optimal,
    /// A limit stopped HiGHS with an incumbent better than the heuristic.
    TimeLimit,
    /// The heuristic plan is returned: HiGHS found nothing better in time, or failed, or its
    /// plan failed verification (see [`MilpResult::message`]).
    FellBackToHeuristic,
}

/// The result of [`place_milp`].
#[derive(Clone, Debug, PartialEq)]
pub struct MilpResult {
    /// The plan (already applied to the view passed in).
    pub plan: Plan,
    /// The objective of `plan` (`BIG * unplaced + term`), recomputed from the plan.
    pub objective: f64,
    /// The best proven lower bound on the objective: HiGHS' dual bound (one part only) or,
    /// for [`MilpObjective::MinNodes`] when the heuristic placed every task,
    /// [`crate::bounds::opened_lower_bound`], whichever is higher; `None` without either.
    pub best_bound: Option<f64>,
    /// `(objective - best_bound) / objective` ([`relative_gap`]); `None` without a bound.
    pub gap: Option<f64>,
    pub status: MilpStatus,
    /// The objective of the best heuristic plan (the warm start).
    pub heuristic_objective: f64,
    /// The heuristic's plan (for comparison; not applied).
    pub heuristic_plan: Plan,
    /// The unplaced-task weight in the objective.
    pub big: f64,
    /// Tasks unplaced, nodes that were empty and now run a task, devices newly fragmented.
    pub unplaced: u64,
    pub nodes_opened: u64,
    pub devices_fragmented: u64,
    /// Parts solved (1 = not decomposed).
    pub parts: u32,
    /// Variables and rows of the (largest) model.
    pub variables: usize,
    pub rows: usize,
    /// Why the heuristic plan was returned, or empty.
    pub message: String,
}

/// Bad input to [`place_milp`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MilpError {
    #[error(transparent)]
    Policy(#[from] PlaceError),
    #[error("{node}: instance_type {instance_type:?} has no price in the EC2 catalogue (objective min_cost)")]
    UnknownPrice { node: NodeId, instance_type: String },
    #[error("tasks[{index}]: {task} appears twice in the batch")]
    DuplicateTask { index: usize, task: TaskId },
    #[error("tasks[{index}]: {task} is already placed on {node}")]
    AlreadyPlaced {
        index: usize,
        task: TaskId,
        node: NodeId,
    },
    #[error("config.{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
}

// ------------------------------------------------------------------------------------------
// Objective evaluation and plan checks (shared by the MILP, the heuristic and the tests).
// ------------------------------------------------------------------------------------------

/// The parts of the objective of a plan against the view it was planned on.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PlanScore {
    pub unplaced: u64,
    pub nodes_opened: u64,
    pub cost_opened_usd: f64,
    pub devices_fragmented: u64,
}

/// Price per hour in dollars of a node (for [`MilpObjective::MinCost`]).
fn node_price_usd(view: &ClusterView, node: NodeId) -> Result<f64, MilpError> {
    let it = &view.node(node).attributes.instance_type;
    Catalog::ec2()
        .get(it)
        .map(|t| t.usd_per_hour())
        .ok_or_else(|| MilpError::UnknownPrice {
            node,
            instance_type: it.clone(),
        })
}

/// Scores `plan` against `before` (the view it was planned on).
pub fn score_plan(before: &ClusterView, plan: &Plan) -> PlanScore {
    let mut opened: BTreeSet<NodeId> = BTreeSet::new();
    let mut fragmented: BTreeSet<(NodeId, u8)> = BTreeSet::new();
    for a in &plan.assignments {
        if before.task_count(a.node) == 0 {
            opened.insert(a.node);
        }
        for s in &a.gpus {
            if s.milli < FULL && before.gpu_free(a.node)[usize::from(s.device)] == FULL {
                fragmented.insert((a.node, s.device));
            }
        }
    }
    let cost_opened_usd = opened
        .iter()
        .map(|&n| node_price_usd(before, n).unwrap_or(0.0))
        .sum();
    PlanScore {
        unplaced: plan.unplaced.len() as u64,
        nodes_opened: opened.len() as u64,
        cost_opened_usd,
        devices_fragmented: fragmented.len() as u64,
    }
}

fn term_of(score: &PlanScore, objective: MilpObjective) -> f64 {
    match objective {
        MilpObjective::MinNodes => score.nodes_opened as f64,
        MilpObjective::MinCost => score.cost_opened_usd,
        MilpObjective::MinGpuFragmentation => score.devices_fragmented as f64,
    }
}

/// The job's hard zone-balance skew (the smallest if several), if any.
fn hard_skew(t: &TaskRequest) -> Option<u32> {
    t.constraints
        .hard
        .iter()
        .filter_map(|c| match c {
            Constraint::ZoneBalance { max_skew } => Some(*max_skew),
            _ => None,
        })
        .min()
}

fn hard_unique_host(t: &TaskRequest) -> bool {
    t.constraints
        .hard
        .iter()
        .any(|c| matches!(c, Constraint::UniqueHost))
}

fn skew(v: &[u32]) -> u32 {
    v.iter().max().copied().unwrap_or(0) - v.iter().min().copied().unwrap_or(0)
}

/// Checks a plan for a batch against the view it was planned on: every task exactly once
/// (assigned or unplaced), assignments match the request, no overcommit (the view's own check,
/// applied in plan order), whole devices entirely free, GPU models accepted, hard unique host,
/// hard zone balance (final skew at most `max(max_skew, skew before)`), gangs all or nothing.
pub fn check_plan(before: &ClusterView, tasks: &[TaskRequest], plan: &Plan) -> Result<(), String> {
    let by_id: BTreeMap<TaskId, &TaskRequest> = tasks.iter().map(|t| (t.task, t)).collect();
    let mut seen: BTreeSet<TaskId> = BTreeSet::new();
    for id in plan
        .assignments
        .iter()
        .map(|a| a.task)
        .chain(plan.unplaced.iter().map(|u| u.task))
    {
        if !by_id.contains_key(&id) {
            return Err(format!("{id} is not in the batch"));
        }
        if !seen.insert(id) {
            return Err(format!("{id} appears twice in the plan"));
        }
    }
    if seen.len() != tasks.len() {
        return Err(format!(
            "{} of {} tasks are in the plan",
            seen.len(),
            tasks.len()
        ));
    }
    let mut view = before.clone();
    for a in &plan.assignments {
        let t = by_id[&a.task];
        if a.job != t.job || a.resources != t.shape.resources || a.exclusive != t.is_exclusive() {
            return Err(format!("{}: assignment does not match the request", a.task));
        }
        let milli: u32 = a.gpu_milli();
        if milli != t.shape.gpu.total_milli() {
            return Err(format!(
                "{}: {milli} milli-GPU given, {} asked",
                a.task,
                t.shape.gpu.total_milli()
            ));
        }
        match t.shape.gpu {
            GpuDemand::None => {}
            GpuDemand::Whole(k) => {
                if a.gpus.len() != usize::from(k) || a.gpus.iter().any(|s| s.milli != FULL) {
                    return Err(format!("{}: needs {k} whole devices", a.task));
                }
            }
            GpuDemand::Milli(_) => {
                if a.gpus.len() != 1 {
                    return Err(format!("{}: a share must be on one device", a.task));
                }
            }
        }
        if !t.shape.gpu.is_none() {
            let model = view.model_of(a.node);
            if model == NO_MODEL || !t.shape.accepts_model(&view.models()[usize::from(model)]) {
                return Err(format!("{}: GPU model not accepted on {}", a.task, a.node));
            }
        }
        if hard_unique_host(t)
            && view
                .job(t.job)
                .and_then(|jp| jp.per_node.get(&a.node))
                .is_some()
        {
            return Err(format!("{}: unique host broken on {}", a.task, a.node));
        }
        view.try_apply(a).map_err(|e| format!("{}: {e}", a.task))?;
    }
    let jobs: BTreeSet<JobId> = tasks.iter().map(|t| t.job).collect();
    let zones = before.zones().len();
    for job in jobs {
        let members: Vec<&TaskRequest> = tasks.iter().filter(|t| t.job == job).collect();
        if members.iter().any(|t| t.gang) {
            let placed = members
                .iter()
                .filter(|t| plan.assignment_of(t.task).is_some())
                .count();
            if placed != 0 && placed != members.len() {
                return Err(format!("{job}: gang placed {placed} of {}", members.len()));
            }
        }
        if let Some(s) = members.iter().filter_map(|t| hard_skew(t)).min() {
            let z0 = before
                .job(job)
                .map_or_else(|| vec![0; zones], |jp| jp.per_zone.clone());
            let z1 = view
                .job(job)
                .map_or_else(|| vec![0; zones], |jp| jp.per_zone.clone());
            if skew(&z1) > s.max(skew(&z0)) {
                return Err(format!("{job}: zone skew {} > {s} ({z1:?})", skew(&z1)));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Candidates, node groups, canonical plans.
// ------------------------------------------------------------------------------------------

/// Whether task `t` may go on `node` as the heuristic's static filters see it (zone balance
/// excluded: a constraint of the model).
fn eligible(view: &ClusterView, policy: &Policy, t: &TaskRequest, node: NodeId) -> bool {
    if !view.is_schedulable(node) {
        return false;
    }
    let attrs = &view.node(node).attributes;
    if let Some(pools) = policy.tier_pools.get(&t.tier).filter(|p| !p.is_empty()) {
        if !pools.contains(&attrs.pool) {
            return false;
        }
    }
    for c in &t.constraints.hard {
        let ok = match c {
            Constraint::AttributeEquals { key, value } => attrs.get(key) == Some(value.as_str()),
            Constraint::AttributeIn { key, values } => attrs
                .get(key)
                .is_some_and(|v| values.iter().any(|x| x == v)),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    let own = view
        .job(t.job)
        .and_then(|jp| jp.per_node.get(&node))
        .copied()
        .unwrap_or(0);
    match view.exclusive_holder(node) {
        Some(j) if j != t.job => return false,
        _ => {}
    }
    if t.is_exclusive() && view.task_count(node) > own {
        return false;
    }
    if hard_unique_host(t) && own > 0 {
        return false;
    }
    if !t.shape.resources.fits_in(&view.free(node)) {
        return false;
    }
    let free = view.gpu_free(node);
    let model_ok = || {
        let m = view.model_of(node);
        m != NO_MODEL && t.shape.accepts_model(&view.models()[usize::from(m)])
    };
    match t.shape.gpu {
        GpuDemand::None => true,
        GpuDemand::Whole(k) => {
            model_ok() && free.iter().filter(|&&f| f == FULL).count() >= usize::from(k)
        }
        GpuDemand::Milli(m) => model_ok() && free.iter().any(|&f| f >= m),
    }
}

/// Empty nodes identical for the model share a group key.
fn group_key(view: &ClusterView, node: NodeId) -> Option<String> {
    if view.task_count(node) != 0 || !view.is_schedulable(node) {
        return None;
    }
    let n = view.node(node);
    if view.free(node) != n.capacity || view.gpu_free(node).iter().any(|&f| f != FULL) {
        return None;
    }
    Some(format!("{:?}|{:?}|{:?}", n.capacity, n.gpus, n.attributes))
}

/// Renumbers a plan's use of identical empty nodes onto each group's nodes in id order, and on
/// every node its use of fully free devices (whole-device use first, then shares, in device
/// order). The result is as feasible as the input and scores the same.
fn canonical(before: &ClusterView, groups: &BTreeMap<String, Vec<NodeId>>, plan: &Plan) -> Plan {
    let mut node_map: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    for members in groups.values() {
        let used: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|n| plan.assignments.iter().any(|a| a.node == *n))
            .collect();
        for (k, n) in used.into_iter().enumerate() {
            node_map.insert(n, members[k]);
        }
    }
    let mut out = plan.clone();
    for a in &mut out.assignments {
        if let Some(&m) = node_map.get(&a.node) {
            a.node = m;
        }
    }
    // Devices: per node, fully free devices in order whole-used, share-used, unused.
    let nodes: BTreeSet<NodeId> = out.assignments.iter().map(|a| a.node).collect();
    for node in nodes {
        let free = before.gpu_free(node);
        let fully: Vec<u8> = (0..free.len())
            .filter(|&d| free[d] == FULL)
            .map(|d| d as u8)
            .collect();
        let class = |d: u8| -> u8 {
            let mut c = 2;
            for a in out.assignments.iter().filter(|a| a.node == node) {
                for s in &a.gpus {
                    if s.device == d {
                        c = c.min(if is_whole(a) { 0 } else { 1 });
                    }
                }
            }
            c
        };
        let mut order: Vec<u8> = fully.clone();
        order.sort_by_key(|&d| (class(d), d));
        let map: BTreeMap<u8, u8> = order
            .iter()
            .zip(fully.iter())
            .map(|(&from, &to)| (from, to))
            .collect();
        for a in out.assignments.iter_mut().filter(|a| a.node == node) {
            for s in &mut a.gpus {
                if let Some(&to) = map.get(&s.device) {
                    s.device = to;
                }
            }
            a.gpus.sort();
        }
    }
    out
}

fn is_whole(a: &Assignment) -> bool {
    a.gpus.iter().all(|s| s.milli == FULL) && !a.gpus.is_empty()
}

// ------------------------------------------------------------------------------------------
// The model.
// ------------------------------------------------------------------------------------------

/// The GPU variables of one node: `z` whole-device use per fully free device (when whole tasks
/// may come too), `y[(task, device)]` a share on a device, `b` "fully free device receives a
/// share" (fragmentation objective).
struct NodeGpu {
    z: Vec<(u8, Variable)>,
    y: BTreeMap<(usize, u8), Variable>,
    b: Vec<(u8, Variable)>,
}

/// One solved part.
struct PartOutcome {
    plan: Plan,
    status: RunStatus,
    dual_bound: f64,
    variables: usize,
    rows: usize,
    message: String,
}

/// Builds and solves the MILP for `tasks` on `view`, warm-started from `warm` (a canonical
/// plan of the same tasks). Returns the MILP's plan (unverified) and its run.
/// What a part's model minimises: `big` per unplaced task, the objective's term (priced by
/// node for [`MilpObjective::MinCost`]), and a lower bound on nodes opened to add as a cut
/// (0: none).
struct Goal<'a> {
    big: f64,
    prices: &'a [f64],
    opened_min: u64,
}

fn solve_part(
    view: &ClusterView,
    tasks: &[TaskRequest],
    policy: &Policy,
    warm: &Plan,
    cfg: &MilpConfig,
    goal: &Goal<'_>,
) -> PartOutcome {
    let &Goal {
        big,
        prices,
        opened_min,
    } = goal;
    let n_nodes = view.len();
    // Candidate nodes per task, with the node-group reduction.
    let mut groups: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
    for j in 0..n_nodes {
        let node = NodeId(j as u32);
        if let Some(k) = group_key(view, node) {
            groups.entry(k).or_default().push(node);
        }
    }
    let mut kept: BTreeSet<NodeId> = (0..n_nodes)
        .map(|j| NodeId(j as u32))
        .filter(|&n| group_key(view, n).is_none())
        .collect();
    let mut group_of: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (gi, members) in groups.values().enumerate() {
        for &n in members.iter().take(tasks.len()) {
            kept.insert(n);
            group_of.insert(n, gi);
        }
    }
    let cand: Vec<Vec<NodeId>> = tasks
        .iter()
        .map(|t| {
            kept.iter()
                .copied()
                .filter(|&n| eligible(view, policy, t, n))
                .collect()
        })
        .collect();
    let nodes_used: BTreeSet<NodeId> = cand.iter().flatten().copied().collect();

    let mut vars = Columns::new();
    let mut x: Vec<BTreeMap<NodeId, Variable>> = Vec::with_capacity(tasks.len());
    for c in &cand {
        x.push(
            c.iter()
                .map(|&n| (n, vars.add(variable().binary())))
                .collect(),
        );
    }
    let s: Vec<Variable> = tasks
        .iter()
        .map(|_| vars.add(variable().min(0.0).max(1.0)))
        .collect();
    // u[j] for nodes that are empty now.
    let u: BTreeMap<NodeId, Variable> = nodes_used
        .iter()
        .filter(|&&n| view.task_count(n) == 0)
        .map(|&n| (n, vars.add(variable().binary())))
        .collect();
    // GPU variables per node (only nodes with fractional candidates: elsewhere a count).
    let mut gpu: BTreeMap<NodeId, NodeGpu> = BTreeMap::new();
    for &n in &nodes_used {
        let free = view.gpu_free(n);
        let whole_here = (0..tasks.len())
            .any(|i| x[i].contains_key(&n) && matches!(tasks[i].shape.gpu, GpuDemand::Whole(_)));
        let frac_here = (0..tasks.len())
            .any(|i| x[i].contains_key(&n) && matches!(tasks[i].shape.gpu, GpuDemand::Milli(_)));
        if !frac_here {
            continue;
        }
        let fully: Vec<u8> = (0..free.len())
            .filter(|&d| free[d] == FULL)
            .map(|d| d as u8)
            .collect();
        let z = if whole_here {
            fully
                .iter()
                .map(|&d| (d, vars.add(variable().binary())))
                .collect()
        } else {
            Vec::new()
        };
        let mut y = BTreeMap::new();
        for i in 0..tasks.len() {
            if let (Some(_), GpuDemand::Milli(m)) = (x[i].get(&n), tasks[i].shape.gpu) {
                for d in 0..free.len() {
                    if free[d] >= m {
                        y.insert((i, d as u8), vars.add(variable().binary()));
                    }
                }
            }
        }
        let b = if cfg.objective == MilpObjective::MinGpuFragmentation {
            fully
                .iter()
                .map(|&d| (d, vars.add(variable().binary())))
                .collect()
        } else {
            Vec::new()
        };
        gpu.insert(n, NodeGpu { z, y, b });
    }
    // Exclusive: e[job][node] for jobs with exclusive tasks.
    let mut e: BTreeMap<(JobId, NodeId), Variable> = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        if t.is_exclusive() {
            for &n in x[i].keys() {
                e.entry((t.job, n))
                    .or_insert_with(|| vars.add(variable().binary()));
            }
        }
    }

    // Objective.
    let mut objective: Expression = s.iter().map(|&v| big * v).sum();
    match cfg.objective {
        MilpObjective::MinNodes => objective += u.values().copied().sum::<Expression>(),
        MilpObjective::MinCost => {
            for (&n, &v) in &u {
                objective.add_mul(prices[n.0 as usize], v);
            }
        }
        MilpObjective::MinGpuFragmentation => {
            for g in gpu.values() {
                objective += g.b.iter().map(|&(_, v)| v).sum::<Expression>();
            }
        }
    }
    let n_vars_total = {
        let mut c = x.iter().map(BTreeMap::len).sum::<usize>() + s.len() + u.len() + e.len();
        for g in gpu.values() {
            c += g.z.len() + g.y.len() + g.b.len();
        }
        c
    };
    let (vars, col) = vars.into_parts();
    let mut p = vars.minimise(objective).using(highs);
    let mut rows = 0usize;
    let mut add = |p: &mut good_lp::solvers::highs::HighsProblem, c: good_lp::Constraint| {
        p.add_constraint(c);
        rows += 1;
    };

    // Each task placed once or unplaced.
    for i in 0..tasks.len() {
        let placed: Expression = x[i].values().copied().sum();
        add(&mut p, (placed + s[i]).eq(1.0));
    }
    // Gangs: all members share s.
    let mut gang_first: BTreeMap<JobId, usize> = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        if t.gang {
            match gang_first.get(&t.job) {
                Some(&f) => add(&mut p, (s[i] - s[f]).eq(0.0)),
                None => {
                    gang_first.insert(t.job, i);
                }
            }
        }
    }
    // Per node: opened, capacity, GPUs, unique host, exclusivity.
    for &n in &nodes_used {
        let on: Vec<usize> = (0..tasks.len())
            .filter(|&i| x[i].contains_key(&n))
            .collect();
        if let Some(&uv) = u.get(&n) {
            for &i in &on {
                add(&mut p, (x[i][&n] - uv).leq(0.0));
            }
        }
        let free = view.free(n).as_array();
        for d in 0..4 {
            let total: u64 = on
                .iter()
                .map(|&i| tasks[i].shape.resources.as_array()[d])
                .sum();
            if total > free[d] {
                let row: Expression = on
                    .iter()
                    .map(|&i| (tasks[i].shape.resources.as_array()[d] as f64) * x[i][&n])
                    .sum();
                add(&mut p, row.leq(free[d] as f64));
            }
        }
        let gfree = view.gpu_free(n);
        let whole_row: Expression = on
            .iter()
            .filter_map(|&i| match tasks[i].shape.gpu {
                GpuDemand::Whole(k) => Some(f64::from(k) * x[i][&n]),
                _ => None,
            })
            .sum();
        let fully_count = gfree.iter().filter(|&&f| f == FULL).count();
        match gpu.get(&n) {
            None => {
                // Whole tasks only (or none): a count of fully free devices.
                let whole_here = on
                    .iter()
                    .any(|&i| matches!(tasks[i].shape.gpu, GpuDemand::Whole(_)));
                if whole_here {
                    add(&mut p, whole_row.leq(fully_count as f64));
                }
            }
            Some(g) => {
                if !g.z.is_empty() {
                    let zsum: Expression = g.z.iter().map(|&(_, v)| v).sum();
                    add(&mut p, (whole_row - zsum).leq(0.0));
                    for w in g.z.windows(2) {
                        add(&mut p, (w[1].1 - w[0].1).leq(0.0));
                    }
                }
                for &i in &on {
                    if let GpuDemand::Milli(_) = tasks[i].shape.gpu {
                        let ys: Expression =
                            g.y.iter()
                                .filter(|((ti, _), _)| *ti == i)
                                .map(|(_, &v)| v)
                                .sum();
                        add(&mut p, (ys - x[i][&n]).eq(0.0));
                    }
                }
                for d in 0..gfree.len() {
                    let d8 = d as u8;
                    let mut row = Expression::default();
                    let mut any = false;
                    for (&(i, dd), &v) in &g.y {
                        if dd == d8 {
                            if let GpuDemand::Milli(m) = tasks[i].shape.gpu {
                                row.add_mul(f64::from(m), v);
                                any = true;
                            }
                        }
                    }
                    if !any {
                        continue;
                    }
                    if let Some(&(_, zv)) = g.z.iter().find(|(dz, _)| *dz == d8) {
                        row.add_mul(f64::from(FULL), zv);
                    }
                    add(&mut p, row.clone().leq(f64::from(gfree[d])));
                    if let Some(&(_, bv)) = g.b.iter().find(|(db, _)| *db == d8) {
                        for (&(_, dd), &v) in &g.y {
                            if dd == d8 {
                                add(&mut p, (v - bv).leq(0.0));
                            }
                        }
                    }
                }
            }
        }
        // Unique host per job.
        let mut per_job: BTreeMap<JobId, Vec<usize>> = BTreeMap::new();
        for &i in &on {
            if hard_unique_host(&tasks[i]) {
                per_job.entry(tasks[i].job).or_default().push(i);
            }
        }
        for members in per_job.values().filter(|m| m.len() > 1) {
            let row: Expression = members.iter().map(|&i| x[i][&n]).sum();
            add(&mut p, row.leq(1.0));
        }
        // Exclusivity: a job holding the node excludes every other job's tasks.
        let jobs_here: BTreeSet<JobId> = on.iter().map(|&i| tasks[i].job).collect();
        for &job in &jobs_here {
            let Some(&ev) = e.get(&(job, n)) else {
                continue;
            };
            for &i in on
                .iter()
                .filter(|&&i| tasks[i].job == job && tasks[i].is_exclusive())
            {
                add(&mut p, (x[i][&n] - ev).leq(0.0));
            }
            let others: Vec<usize> = on
                .iter()
                .copied()
                .filter(|&i| tasks[i].job != job)
                .collect();
            if !others.is_empty() {
                let row: Expression = others.iter().map(|&i| x[i][&n]).sum();
                add(
                    &mut p,
                    (row + (others.len() as f64) * ev).leq(others.len() as f64),
                );
            }
        }
    }
    // A lower bound on the nodes opened (`opened_lower_bound`), as a cut.
    if opened_min > 0 && cfg.objective == MilpObjective::MinNodes && !u.is_empty() {
        let opened: Expression = u.values().copied().sum();
        add(&mut p, opened.geq(opened_min as f64));
    }
    // Symmetry: within a group of identical empty nodes, open them in id order.
    let mut by_group: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
    for (&n, &g) in &group_of {
        if u.contains_key(&n) {
            by_group.entry(g).or_default().push(n);
        }
    }
    for members in by_group.values() {
        for w in members.windows(2) {
            add(&mut p, (u[&w[1]] - u[&w[0]]).leq(0.0));
        }
    }
    // Zone balance per job.
    let zones = view.zones().len();
    let mut skew_jobs: BTreeMap<JobId, u32> = BTreeMap::new();
    for t in tasks {
        if let Some(sk) = hard_skew(t) {
            let e = skew_jobs.entry(t.job).or_insert(sk);
            *e = (*e).min(sk);
        }
    }
    for (&job, &sk) in &skew_jobs {
        let before = view
            .job(job)
            .map_or_else(|| vec![0; zones], |jp| jp.per_zone.clone());
        let limit = sk.max(skew(&before));
        let count = |z: usize| -> Expression {
            let mut ex = Expression::from(f64::from(before[z]));
            for (i, t) in tasks.iter().enumerate() {
                if t.job == job {
                    for (&n, &v) in &x[i] {
                        if view.zone_of(n) == z {
                            ex += v;
                        }
                    }
                }
            }
            ex
        };
        let counts: Vec<Expression> = (0..zones).map(count).collect();
        for z1 in 0..zones {
            for z2 in 0..zones {
                if z1 != z2 {
                    add(
                        &mut p,
                        (counts[z1].clone() - counts[z2].clone()).leq(f64::from(limit)),
                    );
                }
            }
        }
    }

    // Warm start from the canonical heuristic plan.
    let warm_values = warm_start(tasks, warm, &x, &s, &u, &gpu, &e, &col, n_vars_total);
    let options = RunOptions {
        time_limit_s: cfg.time_limit_ms as f64 / 1000.0,
        mip_rel_gap: cfg.mip_gap,
        threads: cfg.threads,
        node_limit: cfg.node_limit,
        seed: cfg.seed,
    };
    let r = run(p, &options, warm_values.as_deref());
    let fail = |message: String| PartOutcome {
        plan: Plan::default(),
        status: r.status,
        dual_bound: r.dual_bound,
        variables: n_vars_total,
        rows,
        message,
    };
    if !matches!(r.status, RunStatus::Optimal | RunStatus::Limit) {
        return fail(format!("HiGHS: {:?} {}", r.status, r.message));
    }
    // Read the solution, refusing non-integral values.
    let val = |v: &Variable| integral(r.values[col.of(*v)]);
    let mut plan = Plan::default();
    for (i, t) in tasks.iter().enumerate() {
        let mut on: Option<NodeId> = None;
        for (&n, v) in &x[i] {
            match val(v) {
                Some(1) => {
                    if on.is_some() {
                        return fail(format!("{} on two nodes", t.task));
                    }
                    on = Some(n);
                }
                Some(0) => {}
                other => {
                    return fail(format!(
                        "{}: x = {other:?} ({})",
                        t.task,
                        r.values[col.of(*v)]
                    ))
                }
            }
        }
        if let Some(n) = on {
            plan.assignments.push(Assignment {
                task: t.task,
                job: t.job,
                node: n,
                resources: t.shape.resources,
                gpus: Vec::new(),
                exclusive: t.is_exclusive(),
            });
        } else {
            plan.unplaced.push(Unplaced {
                task: t.task,
                job: t.job,
                reasons: ReasonCounts::new(),
            });
        }
    }
    // Devices: shares from y; whole devices dealt from the fully free devices in order (the z
    // devices first; without z, any fully free device is free of shares).
    let index_of: BTreeMap<TaskId, usize> =
        tasks.iter().enumerate().map(|(i, t)| (t.task, i)).collect();
    let placed_nodes: BTreeSet<NodeId> = plan.assignments.iter().map(|a| a.node).collect();
    for n in placed_nodes {
        let gfree = view.gpu_free(n);
        let mut share_devices: BTreeSet<u8> = BTreeSet::new();
        if let Some(g) = gpu.get(&n) {
            for a in plan.assignments.iter_mut().filter(|a| a.node == n) {
                let i = index_of[&a.task];
                if let GpuDemand::Milli(m) = tasks[i].shape.gpu {
                    let mut dev = None;
                    for (&(ti, d), v) in &g.y {
                        if ti == i {
                            match val(v) {
                                Some(1) => dev = Some(d),
                                Some(0) => {}
                                _ => return fail(format!("{}: y not integral", a.task)),
                            }
                        }
                    }
                    let Some(d) = dev else {
                        return fail(format!("{}: no device chosen", a.task));
                    };
                    a.gpus = vec![GpuSlice {
                        device: d,
                        milli: m,
                    }];
                    share_devices.insert(d);
                }
            }
        }
        let mut whole_pool: Vec<u8> = (0..gfree.len())
            .filter(|&d| gfree[d] == FULL && !share_devices.contains(&(d as u8)))
            .map(|d| d as u8)
            .collect();
        whole_pool.reverse();
        for a in plan.assignments.iter_mut().filter(|a| a.node == n) {
            let i = index_of[&a.task];
            if let GpuDemand::Whole(k) = tasks[i].shape.gpu {
                let mut devs = Vec::new();
                for _ in 0..k {
                    match whole_pool.pop() {
                        Some(d) => devs.push(GpuSlice {
                            device: d,
                            milli: FULL,
                        }),
                        None => {
                            return fail(format!("{}: not enough whole devices on {n}", a.task))
                        }
                    }
                }
                a.gpus = devs;
            }
        }
    }
    PartOutcome {
        plan,
        status: r.status,
        dual_bound: r.dual_bound,
        variables: n_vars_total,
        rows,
        message: String::new(),
    }
}

/// Values of every column for the warm start, or `None` when the plan does not fit the model
/// (a pair the model does not have).
#[allow(clippy::too_many_arguments)]
fn warm_start(
    tasks: &[TaskRequest],
    warm: &Plan,
    x: &[BTreeMap<NodeId, Variable>],
    s: &[Variable],
    u: &BTreeMap<NodeId, Variable>,
    gpu: &BTreeMap<NodeId, NodeGpu>,
    e: &BTreeMap<(JobId, NodeId), Variable>,
    col: &ColumnIndex,
    columns: usize,
) -> Option<Vec<f64>> {
    let mut values = vec![0.0; columns];
    let index_of: BTreeMap<TaskId, usize> =
        tasks.iter().enumerate().map(|(i, t)| (t.task, i)).collect();
    for v in s {
        values[col.of(v)] = 1.0;
    }
    let mut whole_used: BTreeMap<NodeId, u32> = BTreeMap::new();
    for a in &warm.assignments {
        let i = *index_of.get(&a.task)?;
        let xv = x[i].get(&a.node)?;
        values[col.of(xv)] = 1.0;
        values[col.of(s[i])] = 0.0;
        if let Some(uv) = u.get(&a.node) {
            values[col.of(uv)] = 1.0;
        }
        if let Some(ev) = e.get(&(a.job, a.node)) {
            values[col.of(ev)] = 1.0;
        }
        match tasks[i].shape.gpu {
            GpuDemand::Whole(k) => *whole_used.entry(a.node).or_insert(0) += u32::from(k),
            GpuDemand::Milli(_) => {
                let d = a.gpus.first()?.device;
                if let Some(g) = gpu.get(&a.node) {
                    values[col.of(g.y.get(&(i, d))?)] = 1.0;
                    if let Some((_, bv)) = g.b.iter().find(|(db, _)| *db == d) {
                        values[col.of(bv)] = 1.0;
                    }
                }
            }
            GpuDemand::None => {}
        }
    }
    for (n, k) in whole_used {
        if let Some(g) = gpu.get(&n).filter(|g| !g.z.is_empty()) {
            // The canonical plan puts whole-device use on the first fully free devices.
            if g.z.len() < k as usize {
                return None;
            }
            for (_, zv) in g.z.iter().take(k as usize) {
                values[col.of(zv)] = 1.0;
            }
        }
    }
    Some(values)
}

// ------------------------------------------------------------------------------------------
// The entry point.
// ------------------------------------------------------------------------------------------

/// Runs the heuristic with `policy` on a clone of `view`.
fn heuristic<R: Rng + ?Sized>(
    view: &ClusterView,
    tasks: &[TaskRequest],
    policy: &Policy,
    rng: &mut R,
) -> Result<Plan, PlaceError> {
    let mut v = view.clone();
    place(&mut v, tasks, policy, rng)
}

/// Splits `tasks` into chunks of whole jobs whose candidate pairs stay under `pairs_max`
/// (a job larger than that is a chunk of its own).
fn chunks(view: &ClusterView, tasks: &[TaskRequest], pairs_max: usize) -> Vec<Vec<TaskRequest>> {
    let mut order: Vec<JobId> = Vec::new();
    let mut by_job: BTreeMap<JobId, Vec<TaskRequest>> = BTreeMap::new();
    for t in tasks {
        if !by_job.contains_key(&t.job) {
            order.push(t.job);
        }
        by_job.entry(t.job).or_default().push(t.clone());
    }
    let nodes = view.len().max(1);
    let mut out: Vec<Vec<TaskRequest>> = Vec::new();
    let mut cur: Vec<TaskRequest> = Vec::new();
    for job in order {
        let members = by_job.remove(&job).unwrap_or_default();
        if !cur.is_empty() && (cur.len() + members.len()) * nodes > pairs_max {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend(members);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Orders assignments so that every prefix keeps each job's zone skew within its rule where
/// possible: repeatedly the job's task in its emptiest zone first.
fn order_for_zone_balance(before: &ClusterView, plan: &mut Plan) {
    let zones = before.zones().len();
    let mut per_zone: BTreeMap<JobId, Vec<u32>> = BTreeMap::new();
    let mut rest = std::mem::take(&mut plan.assignments);
    while !rest.is_empty() {
        let pick = (0..rest.len())
            .min_by_key(|&k| {
                let a = &rest[k];
                let pz = per_zone.entry(a.job).or_insert_with(|| {
                    before
                        .job(a.job)
                        .map_or_else(|| vec![0; zones], |jp| jp.per_zone.clone())
                });
                (pz[before.zone_of(a.node)], k)
            })
            .expect("non-empty");
        let a = rest.remove(pick);
        per_zone.get_mut(&a.job).expect("inserted above")[before.zone_of(a.node)] += 1;
        plan.assignments.push(a);
    }
}

/// Places a batch by MILP; leaves `view` holding the returned plan (like [`crate::place()`]).
/// See the module doc for the method, the fallbacks and the determinism note.
pub fn place_milp<R: Rng + ?Sized>(
    view: &mut ClusterView,
    tasks: &[TaskRequest],
    policy: &Policy,
    rng: &mut R,
    cfg: &MilpConfig,
) -> Result<MilpResult, MilpError> {
    if !(cfg.mip_gap >= 0.0 && cfg.mip_gap.is_finite()) {
        return Err(MilpError::Config {
            field: "mip_gap",
            message: format!("{} is not >= 0", cfg.mip_gap),
        });
    }
    if cfg.threads == 0 {
        return Err(MilpError::Config {
            field: "threads",
            message: "must be at least 1".into(),
        });
    }
    let mut seen = BTreeSet::new();
    for (index, t) in tasks.iter().enumerate() {
        if !seen.insert(t.task) {
            return Err(MilpError::DuplicateTask {
                index,
                task: t.task,
            });
        }
        if let Some(a) = view.assignment(t.task) {
            return Err(MilpError::AlreadyPlaced {
                index,
                task: t.task,
                node: a.node,
            });
        }
    }
    policy.validate()?;
    let before = view.clone();
    let prices: Vec<f64> = if cfg.objective == MilpObjective::MinCost {
        (0..view.len())
            .map(|j| node_price_usd(view, NodeId(j as u32)))
            .collect::<Result<_, _>>()?
    } else {
        vec![0.0; view.len()]
    };
    // BIG exceeds any possible term: every empty node opened, every device fragmented.
    let big = 1.0
        + match cfg.objective {
            MilpObjective::MinNodes => view.len() as f64,
            MilpObjective::MinCost => prices.iter().sum(),
            MilpObjective::MinGpuFragmentation => {
                (view.gpu_milli_total() / u64::from(GPU_MILLI_PER_DEVICE)) as f64
            }
        };
    let objective_of = |plan: &Plan, base: &ClusterView| -> f64 {
        let sc = score_plan(base, plan);
        big * sc.unplaced as f64 + term_of(&sc, cfg.objective)
    };

    // 1. Heuristic candidates.
    let mut heur = heuristic(view, tasks, policy, rng)?;
    if cfg.warm_start_best_fit {
        let bf = heuristic(
            view,
            tasks,
            &Policy {
                tier_pools: policy.tier_pools.clone(),
                ..Policy::single(ScorerKind::BestFit)
            },
            rng,
        )?;
        if objective_of(&bf, view) < objective_of(&heur, view) {
            heur = bf;
        }
    }
    let heuristic_objective = objective_of(&heur, view);
    // A bound on nodes opened without the solver. Valid for the optimum only when the heuristic
    // places every task (BIG then rules out any plan leaving one unplaced).
    let opened_min = if cfg.objective == MilpObjective::MinNodes && heur.unplaced.is_empty() {
        crate::bounds::opened_lower_bound(view, tasks)
    } else {
        0
    };

    // 2-5. Solve the parts.
    let parts = chunks(view, tasks, cfg.pairs_max);
    let mut work = view.clone();
    let mut milp_plan = Plan::default();
    let mut all_optimal = true;
    let mut bound: Option<f64> = None;
    let (mut variables, mut rows) = (0usize, 0usize);
    let mut message = String::new();
    for part in &parts {
        let part_heur = if parts.len() == 1 {
            heur.clone()
        } else {
            heuristic(&work, part, policy, rng)?
        };
        let mut groups: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
        for j in 0..work.len() {
            if let Some(k) = group_key(&work, NodeId(j as u32)) {
                groups.entry(k).or_default().push(NodeId(j as u32));
            }
        }
        let warm = canonical(&work, &groups, &part_heur);
        // The bound as a cut (every plan at least as good as the warm start opens that
        // many): HiGHS starts from it instead of from the LP relaxation's weak bound.
        let part_opened_min = if parts.len() == 1 { opened_min } else { 0 };
        let goal = Goal {
            big,
            prices: &prices,
            opened_min: part_opened_min,
        };
        let out = solve_part(&work, part, policy, &warm, cfg, &goal);
        variables = variables.max(out.variables);
        rows = rows.max(out.rows);
        let mut chosen = out.plan;
        let ok = matches!(out.status, RunStatus::Optimal | RunStatus::Limit)
            && match check_plan(&work, part, &chosen) {
                Ok(()) => true,
                Err(e) => {
                    debug_assert!(false, "MILP plan failed verification: {e}");
                    message = format!("MILP plan failed verification: {e}");
                    false
                }
            };
        if !ok {
            if message.is_empty() {
                message = out.message;
            }
            chosen = part_heur.clone();
            all_optimal = false;
        } else {
            if out.status != RunStatus::Optimal {
                all_optimal = false;
            }
            if objective_of(&part_heur, &work) <= objective_of(&chosen, &work) {
                chosen = part_heur.clone();
            }
            if parts.len() == 1 && out.dual_bound.is_finite() {
                bound = Some(out.dual_bound);
            }
        }
        order_for_zone_balance(&work, &mut chosen);
        for a in &chosen.assignments {
            work.try_apply(a).expect("a verified plan applies");
        }
        milp_plan.assignments.extend(chosen.assignments);
        milp_plan.unplaced.extend(chosen.unplaced);
    }

    // 6. Unplaced tasks: reasons from the heuristic on the final view; non-gang tasks that fit
    // now are placed.
    let mut placer = Placer::new(policy.clone())?;
    let unplaced = std::mem::take(&mut milp_plan.unplaced);
    for u in unplaced {
        let t = tasks
            .iter()
            .find(|t| t.task == u.task)
            .expect("a task of the batch");
        match placer.place_one(&work, t, rng) {
            Ok(a) if !t.gang => {
                work.apply(&a);
                milp_plan.assignments.push(a);
            }
            Ok(_) => {
                let mut r = ReasonCounts::new();
                r.add(FilterReason::GangUnplaceable, 1);
                milp_plan.unplaced.push(Unplaced {
                    task: u.task,
                    job: u.job,
                    reasons: r,
                });
            }
            Err(mut un) => {
                if un.reasons.is_empty() {
                    un.reasons.add(FilterReason::NoNodes, 1);
                }
                milp_plan.unplaced.push(un);
            }
        }
    }
    // The MILP's plan only when strictly better than the heuristic's; the heuristic's is
    // returned otherwise (proven optimal when the one part was solved to optimality).
    let milp_objective = objective_of(&milp_plan, &before);
    let (plan, objective, status) = if milp_objective < heuristic_objective {
        (
            milp_plan,
            milp_objective,
            if all_optimal {
                MilpStatus::Optimal
            } else {
                MilpStatus::TimeLimit
            },
        )
    } else {
        work = before.clone();
        for a in &heur.assignments {
            work.apply(a);
        }
        let proven = all_optimal && parts.len() <= 1 && message.is_empty();
        (
            heur.clone(),
            heuristic_objective,
            if proven {
                MilpStatus::Optimal
            } else {
                MilpStatus::FellBackToHeuristic
            },
        )
    };
    if let Err(e) = check_plan(&before, tasks, &plan) {
        panic!("place_milp: the returned plan fails its check: {e}");
    }
    let sc = score_plan(&before, &plan);
    *view = work;
    // The solver's bound or the combinatorial one, whichever is higher (the latter holds for
    // the whole batch, so also when it was decomposed).
    if opened_min > 0 {
        bound = Some(bound.map_or(opened_min as f64, |b| b.max(opened_min as f64)));
    }
    let best_bound = bound.map(|b| b.min(objective));
    Ok(MilpResult {
        gap: best_bound.map(|b| relative_gap(objective, b)),
        plan,
        objective,
        best_bound,
        status,
        heuristic_objective,
        heuristic_plan: heur,
        big,
        unplaced: sc.unplaced,
        nodes_opened: sc.nodes_opened,
        devices_fragmented: sc.devices_fragmented,
        parts: parts.len() as u32,
        variables,
        rows,
        message,
    })
}
