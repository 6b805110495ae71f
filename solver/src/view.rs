//! The solver's picture of the cluster: free capacity per node and per GPU device, and the indexes
//! the filters need (tasks per job per node and per zone, exclusive holders, GPU request types per
//! node), kept up to date incrementally by [`ClusterView::apply`] / [`ClusterView::release`].
//!
//! Cost model: `apply` and `release` are O(devices of the node + log jobs + log tasks). Cloning
//! a view is O(nodes + devices + placed tasks) (the static node specs are shared behind an `Arc`):
//! fine for a what-if plan now and then, not per decision. A long-lived view in the controller is
//! updated incrementally instead.

use crate::cluster::{ClusterSpec, NodeSpec};
use crate::ids::{JobId, NodeId, TaskId};
use crate::plan::{Assignment, GpuSlice};
use crate::resources::{
    GpuDemand, GpuModel, Resources, TaskShape, DIMENSION_NAMES, GPU_MILLI_PER_DEVICE,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An assignment could not be applied or released. The view is unchanged when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("{node}: no such node (cluster has {nodes})")]
    UnknownNode { node: NodeId, nodes: usize },
    #[error("{node}: {dimension} overcommitted: asks {ask}, {free} free")]
    Overcommit {
        node: NodeId,
        dimension: &'static str,
        ask: u64,
        free: u64,
    },
    #[error("{node}: GPU device {device} does not exist ({devices} devices)")]
    UnknownDevice {
        node: NodeId,
        device: u8,
        devices: u8,
    },
    #[error("{node}: GPU device {device} overcommitted: asks {ask} milli, {free} free")]
    GpuOvercommit {
        node: NodeId,
        device: u8,
        ask: u16,
        free: u16,
    },
    #[error("{node}: GPU device {device} given twice in one assignment")]
    DuplicateDevice { node: NodeId, device: u8 },
    #[error("{node}: {task} of {job} breaks exclusivity ({reason})")]
    Exclusive {
        node: NodeId,
        task: TaskId,
        job: JobId,
        reason: &'static str,
    },
    #[error("{task} is already placed on {node}")]
    AlreadyPlaced { task: TaskId, node: NodeId },
    #[error("{task} is not placed (release of an unknown task)")]
    NotPlaced { task: TaskId },
    #[error("{task}: release does not match what was applied")]
    ReleaseMismatch { task: TaskId },
}

/// Where a job's tasks are: per node and per zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobPlacement {
    /// Tasks per node (only nodes with at least one).
    pub per_node: BTreeMap<NodeId, u32>,
    /// Tasks per zone, indexed like [`ClusterView::zones`].
    pub per_zone: Vec<u32>,
    pub total: u32,
}

/// The live state of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeState {
    free: Resources,
    schedulable: bool,
    /// Tasks on the node, all jobs.
    tasks: u32,
    /// The job holding the node exclusively, with its task count there.
    exclusive: Option<(JobId, u32)>,
    /// GPU request types of the tasks on the node, with counts (GPU clustering).
    gpu_types: Vec<(GpuDemand, u32)>,
    /// Bumped on every change of this node (caches key on it).
    version: u64,
}

/// Free capacity and placement indexes of a cluster. Built from a [`ClusterSpec`]; node ids are
/// the spec's dense indexes.
#[derive(Clone, Debug)]
pub struct ClusterView {
    spec: Arc<ClusterSpec>,
    zones: Vec<String>,
    node_zone: Vec<u16>,
    models: Vec<GpuModel>,
    /// Index into `models`, `u16::MAX` for a node without GPUs.
    node_model: Vec<u16>,
    nodes: Vec<NodeState>,
    /// `gpu_free[gpu_offset[n]..gpu_offset[n+1]]` are node n's devices' free milli-GPU.
    gpu_offset: Vec<u32>,
    gpu_free: Vec<u16>,
    jobs: BTreeMap<JobId, JobPlacement>,
    tasks: BTreeMap<TaskId, Assignment>,
    gpu_milli_total: u64,
    gpu_milli_used: u64,
    /// Free capacity summed over the schedulable nodes, and their free milli-GPUs: a necessary
    /// condition for any placement, checked in O(1) before a search.
    free_schedulable: Resources,
    gpu_free_schedulable: u64,
    /// Bumped by every change of free capacity or schedulability (caches of results that
    /// depend on the whole view key on it).
    changes: u64,
    /// Largest capacity of any node, per dimension, and largest device count.
    capacity_max: Resources,
    gpu_count_max: u8,
    /// The version of the last node change (0 before any): unique across views, so two views
    /// with the same value are one view and its clone with neither changed since.
    last_version: u64,
    /// The last [`RECENT_CHANGES`] node changes as (version, node), a ring indexed by
    /// `recent_written % RECENT_CHANGES`: lets an index kept outside the view catch up with
    /// the few nodes one decision changed instead of rescanning every node.
    recent: [(u64, u32); RECENT_CHANGES],
    recent_written: usize,
    /// Nodes some job holds exclusively.
    exclusive_nodes: u32,
}

/// Node changes the view remembers ([`ClusterView::changed_since`]).
pub const RECENT_CHANGES: usize = 64;

/// Node versions are unique across all views of the process, so a cache keyed by version can
/// never confuse two views (or a view and its clone after they diverge). Versions only key
/// caches of exact results; no decision depends on their values.
static VERSION_NEXT: AtomicU64 = AtomicU64::new(1);

fn next_version() -> u64 {
    VERSION_NEXT.fetch_add(1, Ordering::Relaxed)
}

/// No GPU model on a node.
pub const NO_MODEL: u16 = u16::MAX;

impl ClusterView {
    /// An empty view (nothing placed) of `spec`. Panics when the spec's ids are not dense
    /// (`ClusterSpec::check_ids`); specs from `spec.rs` and the importers always are.
    pub fn new(spec: &ClusterSpec) -> Self {
        Self::from_arc(Arc::new(spec.clone()))
    }

    /// Like [`ClusterView::new`], sharing the spec.
    pub fn from_arc(spec: Arc<ClusterSpec>) -> Self {
        if let Err(e) = spec.check_ids() {
            panic!("ClusterView::new: {e}");
        }
        let mut view = ClusterView {
            spec: Arc::new(ClusterSpec::default()),
            zones: Vec::new(),
            node_zone: Vec::new(),
            models: Vec::new(),
            node_model: Vec::new(),
            nodes: Vec::new(),
            gpu_offset: vec![0],
            gpu_free: Vec::new(),
            jobs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            gpu_milli_total: 0,
            gpu_milli_used: 0,
            free_schedulable: Resources::ZERO,
            gpu_free_schedulable: 0,
            changes: 0,
            capacity_max: Resources::ZERO,
            gpu_count_max: 0,
            last_version: 0,
            recent: [(0, 0); RECENT_CHANGES],
            recent_written: 0,
            exclusive_nodes: 0,
        };
        view.zones = spec.zones();
        let mut models: Vec<GpuModel> = spec
            .nodes
            .iter()
            .filter_map(|n| n.gpu_model().cloned())
            .collect();
        models.sort();
        models.dedup();
        view.models = models;
        for n in &spec.nodes {
            view.push_node_state(n);
        }
        view.spec = spec;
        view
    }

    fn push_node_state(&mut self, n: &NodeSpec) {
        let zone = self
            .zones
            .binary_search(&n.attributes.zone)
            .expect("zone listed");
        self.node_zone
            .push(u16::try_from(zone).expect("more than 65,535 zones"));
        let model = match n.gpu_model() {
            Some(m) => u16::try_from(self.models.binary_search(m).expect("model listed"))
                .expect("more than 65,534 GPU models"),
            None => NO_MODEL,
        };
        self.node_model.push(model);
        let count = n.gpu_count();
        let (a, b) = (self.capacity_max.as_array(), n.capacity.as_array());
        self.capacity_max = Resources::from_array(std::array::from_fn(|d| a[d].max(b[d])));
        self.gpu_count_max = self.gpu_count_max.max(count);
        for _ in 0..count {
            self.gpu_free.push(GPU_MILLI_PER_DEVICE as u16);
        }
        self.gpu_offset.push(self.gpu_free.len() as u32);
        self.gpu_milli_total += count as u64 * GPU_MILLI_PER_DEVICE as u64;
        self.free_schedulable = self.free_schedulable.saturating_add(&n.capacity);
        self.gpu_free_schedulable += count as u64 * GPU_MILLI_PER_DEVICE as u64;
        self.changes += 1;
        let version = next_version();
        self.record(self.nodes.len(), version);
        self.nodes.push(NodeState {
            free: n.capacity,
            schedulable: true,
            tasks: 0,
            exclusive: None,
            gpu_types: Vec::new(),
            version,
        });
    }

    /// Adds a node (scale-up) and returns its id (the next dense index; `node.id` is ignored).
    pub fn add_node(&mut self, mut node: NodeSpec) -> NodeId {
        let id = NodeId(u32::try_from(self.nodes.len()).expect("more than u32::MAX nodes"));
        node.id = id;
        let spec = Arc::make_mut(&mut self.spec);
        if let Err(i) = self.zones.binary_search(&node.attributes.zone) {
            self.zones.insert(i, node.attributes.zone.clone());
            // Re-index zone numbers above the insertion point.
            for z in self.node_zone.iter_mut() {
                if *z as usize >= i {
                    *z += 1;
                }
            }
            for jp in self.jobs.values_mut() {
                jp.per_zone.insert(i, 0);
            }
        }
        if let Some(m) = node.gpu_model() {
            if let Err(i) = self.models.binary_search(m) {
                self.models.insert(i, m.clone());
                for x in self.node_model.iter_mut() {
                    if *x != NO_MODEL && *x as usize >= i {
                        *x += 1;
                    }
                }
            }
        }
        spec.nodes.push(node);
        let node_ref = spec.nodes.last().expect("just pushed").clone();
        self.push_node_state(&node_ref);
        id
    }

    /// Marks a node (un)schedulable: cordoned, draining or lost nodes take no new tasks. Its
    /// placed tasks stay until released.
    pub fn set_schedulable(&mut self, node: NodeId, schedulable: bool) -> Result<(), ViewError> {
        let n = self.node_index(node)?;
        if self.nodes[n].schedulable != schedulable {
            let free = self.nodes[n].free;
            let (a, b) = (self.gpu_offset[n] as usize, self.gpu_offset[n + 1] as usize);
            let gpu: u64 = self.gpu_free[a..b].iter().map(|&g| u64::from(g)).sum();
            if schedulable {
                self.free_schedulable = self.free_schedulable.saturating_add(&free);
                self.gpu_free_schedulable += gpu;
            } else {
                self.free_schedulable = self
                    .free_schedulable
                    .checked_sub(&free)
                    .expect("a schedulable node's free capacity is in the sum");
                self.gpu_free_schedulable -= gpu;
            }
        }
        self.nodes[n].schedulable = schedulable;
        self.bump(n);
        Ok(())
    }

    /// Names the pool a node belongs to (its `pool` attribute): a node that joined before
    /// its pool was known. Its version moves, so indexes re-key it.
    pub fn set_pool(&mut self, node: NodeId, pool: &str) -> Result<(), ViewError> {
        let n = self.node_index(node)?;
        Arc::make_mut(&mut self.spec).nodes[n].attributes.pool = pool.to_string();
        self.bump(n);
        Ok(())
    }

    fn node_index(&self, node: NodeId) -> Result<usize, ViewError> {
        let n = node.0 as usize;
        if n < self.nodes.len() {
            Ok(n)
        } else {
            Err(ViewError::UnknownNode {
                node,
                nodes: self.nodes.len(),
            })
        }
    }

    fn bump(&mut self, n: usize) {
        let version = next_version();
        self.nodes[n].version = version;
        self.changes += 1;
        self.record(n, version);
    }

    fn record(&mut self, n: usize, version: u64) {
        self.last_version = version;
        self.recent[self.recent_written % RECENT_CHANGES] = (version, n as u32);
        self.recent_written += 1;
    }

    /// The version of the view's last node change (0 for a view without nodes). Unique across
    /// views: an index that saw a view at this value and sees it again knows nothing changed.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// The nodes changed (or added) since the view's [`ClusterView::last_version`] was
    /// `version`, oldest first (a node may repeat), when the view's history passed through
    /// `version` within its last [`RECENT_CHANGES`] changes; `None` otherwise (then the caller
    /// must compare every node's version).
    pub fn changed_since(&self, version: u64) -> Option<impl Iterator<Item = NodeId> + '_> {
        let written = self.recent_written;
        let start = if version == self.last_version {
            written
        } else {
            let oldest = written.saturating_sub(RECENT_CHANGES);
            (oldest..written)
                .rev()
                .find(|&k| self.recent[k % RECENT_CHANGES].0 == version)?
                + 1
        };
        Some((start..written).map(|k| NodeId(self.recent[k % RECENT_CHANGES].1)))
    }

    /// Changes so far (apply, release, schedulability, nodes added): equal counts mean the
    /// same free capacity everywhere.
    pub fn change_count(&self) -> u64 {
        self.changes
    }

    // ----- read access -------------------------------------------------------------------

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, node: NodeId) -> &NodeSpec {
        &self.spec.nodes[node.0 as usize]
    }

    /// Free scalar resources of a node.
    pub fn free(&self, node: NodeId) -> Resources {
        self.nodes[node.0 as usize].free
    }

    /// Free milli-GPU of each device of a node, by device index.
    pub fn gpu_free(&self, node: NodeId) -> &[u16] {
        let n = node.0 as usize;
        &self.gpu_free[self.gpu_offset[n] as usize..self.gpu_offset[n + 1] as usize]
    }

    pub fn is_schedulable(&self, node: NodeId) -> bool {
        self.nodes[node.0 as usize].schedulable
    }

    /// Number of tasks (all jobs) on a node.
    pub fn task_count(&self, node: NodeId) -> u32 {
        self.nodes[node.0 as usize].tasks
    }

    /// The job holding the node exclusively, if any.
    pub fn exclusive_holder(&self, node: NodeId) -> Option<JobId> {
        self.nodes[node.0 as usize].exclusive.map(|(j, _)| j)
    }

    /// GPU request types on the node, with task counts (for GPU clustering).
    pub fn gpu_types(&self, node: NodeId) -> &[(GpuDemand, u32)] {
        &self.nodes[node.0 as usize].gpu_types
    }

    /// A number that changes whenever anything about the node changes, unique across views
    /// (for caches).
    pub fn node_version(&self, node: NodeId) -> u64 {
        self.nodes[node.0 as usize].version
    }

    /// The cluster's zones, sorted; zone indexes refer to this list.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    pub fn zone_of(&self, node: NodeId) -> usize {
        self.node_zone[node.0 as usize] as usize
    }

    /// The cluster's GPU models, sorted; model indexes refer to this list.
    pub fn models(&self) -> &[GpuModel] {
        &self.models
    }

    /// The node's GPU model index, or [`NO_MODEL`].
    pub fn model_of(&self, node: NodeId) -> u16 {
        self.node_model[node.0 as usize]
    }

    /// Where a job's tasks are, if it has any placed.
    pub fn job(&self, job: JobId) -> Option<&JobPlacement> {
        self.jobs.get(&job)
    }

    /// The assignment a placed task holds.
    pub fn assignment(&self, task: TaskId) -> Option<&Assignment> {
        self.tasks.get(&task)
    }

    /// All placed tasks, by task id.
    pub fn assignments(&self) -> impl Iterator<Item = &Assignment> {
        self.tasks.values()
    }

    pub fn placed_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Total milli-GPU over all devices.
    pub fn gpu_milli_total(&self) -> u64 {
        self.gpu_milli_total
    }

    /// The largest capacity of any node, per dimension.
    pub fn capacity_max(&self) -> Resources {
        self.capacity_max
    }

    /// The largest device count of any node.
    pub fn gpu_count_max(&self) -> u8 {
        self.gpu_count_max
    }

    /// Allocated milli-GPU over all devices.
    pub fn gpu_milli_used(&self) -> u64 {
        self.gpu_milli_used
    }

    /// Free capacity summed over the schedulable nodes, with their free milli-GPUs. What does
    /// not fit in it fits on no node (and no set of nodes): a cheap necessary condition.
    pub fn free_schedulable(&self) -> (Resources, u64) {
        (self.free_schedulable, self.gpu_free_schedulable)
    }

    /// How many tasks of `shape` the schedulable nodes could take, each node counted alone
    /// (its free capacity and devices), constraints ignored; the count stops at `enough` (an
    /// answer of `enough` or more says "at least `enough`", below it is exact). A gang
    /// of more tasks than this fits nowhere: a necessary condition in O(nodes), where a failed
    /// search costs O(nodes) per task.
    pub fn tasks_that_fit(&self, shape: &TaskShape, enough: u64) -> u64 {
        let ask = shape.resources.as_array();
        let mut total = 0u64;
        for (n, st) in self.nodes.iter().enumerate() {
            if !st.schedulable {
                continue;
            }
            let free = st.free.as_array();
            // Most nodes of a busy cluster take none: compare before dividing.
            if (0..ask.len()).any(|d| free[d] < ask[d]) {
                continue;
            }
            // Asked for at most one, this node answers it (its own count may be higher).
            let mut k = if enough > 1 {
                (0..ask.len())
                    .filter_map(|d| free[d].checked_div(ask[d]))
                    .min()
                    .unwrap_or(u64::MAX)
            } else {
                1
            };
            let devices =
                &self.gpu_free[self.gpu_offset[n] as usize..self.gpu_offset[n + 1] as usize];
            match shape.gpu {
                GpuDemand::None => {}
                GpuDemand::Whole(w) => {
                    let whole = devices
                        .iter()
                        .filter(|&&f| u32::from(f) == GPU_MILLI_PER_DEVICE)
                        .count() as u64;
                    k = k.min(whole / u64::from(w.max(1)));
                }
                GpuDemand::Milli(m) => {
                    let m = m.max(1);
                    k = k.min(devices.iter().map(|&f| u64::from(f / m)).sum());
                }
            }
            total = total.saturating_add(k);
            if total >= enough {
                return total;
            }
        }
        total
    }

    /// The number of nodes some job holds exclusively ([`ClusterView::tasks_that_fit`] is
    /// exact for unconstrained identical tasks only when it is 0).
    pub fn exclusive_nodes(&self) -> u32 {
        self.exclusive_nodes
    }

    /// False when `need` (with `gpu_milli` GPU) exceeds [`ClusterView::free_schedulable`] on
    /// some dimension: then no placement of it exists. True says nothing either way.
    pub fn may_hold(&self, need: &Resources, gpu_milli: u64) -> bool {
        need.fits_in(&self.free_schedulable) && gpu_milli <= self.gpu_free_schedulable
    }

    // ----- updates -----------------------------------------------------------------------

    /// Checks that `a` can be applied: node exists, no dimension or device overcommitted,
    /// devices distinct, exclusivity respected, task not already placed.
    pub fn check(&self, a: &Assignment) -> Result<(), ViewError> {
        let n = self.node_index(a.node)?;
        if let Some(prev) = self.tasks.get(&a.task) {
            return Err(ViewError::AlreadyPlaced {
                task: a.task,
                node: prev.node,
            });
        }
        let st = &self.nodes[n];
        let (ask, free) = (a.resources.as_array(), st.free.as_array());
        for d in 0..4 {
            if ask[d] > free[d] {
                return Err(ViewError::Overcommit {
                    node: a.node,
                    dimension: DIMENSION_NAMES[d],
                    ask: ask[d],
                    free: free[d],
                });
            }
        }
        let devs = self.gpu_free(a.node);
        let mut seen = [0u64; 4];
        for s in &a.gpus {
            if s.device as usize >= devs.len() {
                return Err(ViewError::UnknownDevice {
                    node: a.node,
                    device: s.device,
                    devices: devs.len() as u8,
                });
            }
            let (word, bit) = (s.device as usize / 64, 1u64 << (s.device % 64));
            if seen[word] & bit != 0 {
                return Err(ViewError::DuplicateDevice {
                    node: a.node,
                    device: s.device,
                });
            }
            seen[word] |= bit;
            let f = devs[s.device as usize];
            if s.milli > f {
                return Err(ViewError::GpuOvercommit {
                    node: a.node,
                    device: s.device,
                    ask: s.milli,
                    free: f,
                });
            }
        }
        match st.exclusive {
            Some((j, _)) if j != a.job => {
                return Err(ViewError::Exclusive {
                    node: a.node,
                    task: a.task,
                    job: a.job,
                    reason: "another job holds the node exclusively",
                })
            }
            _ => {}
        }
        if a.exclusive {
            // The job's tasks here: its placement's count, or (in a projection, which tracks
            // only some jobs) the exclusive count the node keeps for its holder; a job's
            // exclusive tasks are all its tasks on the node.
            let tracked = self
                .jobs
                .get(&a.job)
                .and_then(|jp| jp.per_node.get(&a.node))
                .copied()
                .unwrap_or(0);
            let held = match st.exclusive {
                Some((j, c)) if j == a.job => c,
                _ => 0,
            };
            let own = tracked.max(held);
            if st.tasks > own {
                return Err(ViewError::Exclusive {
                    node: a.node,
                    task: a.task,
                    job: a.job,
                    reason: "the node runs other jobs' tasks",
                });
            }
        }
        Ok(())
    }

    /// Applies `a` if it fits; the view is unchanged on error. The controller's checked path.
    pub fn try_apply(&mut self, a: &Assignment) -> Result<(), ViewError> {
        self.check(a)?;
        self.apply_unchecked(a);
        Ok(())
    }

    /// Applies `a`. Panics when it does not fit: the solver only produces assignments that fit
    /// the view it planned against, so this is an invariant, not an input error (use
    /// [`ClusterView::try_apply`] for assignments from elsewhere).
    pub fn apply(&mut self, a: &Assignment) {
        if let Err(e) = self.check(a) {
            panic!("ClusterView::apply: invariant broken: {e}");
        }
        self.apply_unchecked(a);
    }

    fn apply_unchecked(&mut self, a: &Assignment) {
        let n = a.node.0 as usize;
        let zone = self.node_zone[n] as usize;
        let zones = self.zones.len();
        let st = &mut self.nodes[n];
        st.free = st
            .free
            .checked_sub(&a.resources)
            .expect("checked: scalar fit");
        if st.schedulable {
            self.free_schedulable = self
                .free_schedulable
                .checked_sub(&a.resources)
                .expect("the sum holds the node's free capacity");
            self.gpu_free_schedulable -= a.gpus.iter().map(|g| u64::from(g.milli)).sum::<u64>();
        }
        st.tasks += 1;
        if a.exclusive {
            match &mut st.exclusive {
                Some((_, c)) => *c += 1,
                None => {
                    st.exclusive = Some((a.job, 1));
                    self.exclusive_nodes += 1;
                }
            }
        }
        if let Some(demand) = gpu_demand_of(a) {
            match st.gpu_types.iter_mut().find(|(d, _)| *d == demand) {
                Some((_, c)) => *c += 1,
                None => st.gpu_types.push((demand, 1)),
            }
        }
        let off = self.gpu_offset[n] as usize;
        for s in &a.gpus {
            let f = &mut self.gpu_free[off + s.device as usize];
            debug_assert!(*f >= s.milli);
            *f -= s.milli;
            self.gpu_milli_used += s.milli as u64;
        }
        let jp = self.jobs.entry(a.job).or_insert_with(|| JobPlacement {
            per_node: BTreeMap::new(),
            per_zone: vec![0; zones],
            total: 0,
        });
        *jp.per_node.entry(a.node).or_insert(0) += 1;
        jp.per_zone[zone] += 1;
        jp.total += 1;
        self.tasks.insert(a.task, a.clone());
        self.bump(n);
    }

    /// Releases what `a` took (the task finished, was killed, or its launch failed). `a` must
    /// equal what was applied for its task.
    pub fn release(&mut self, a: &Assignment) -> Result<(), ViewError> {
        match self.tasks.get(&a.task) {
            None => return Err(ViewError::NotPlaced { task: a.task }),
            Some(prev) if prev != a => return Err(ViewError::ReleaseMismatch { task: a.task }),
            Some(_) => {}
        }
        self.release_task(a.task).map(|_| ())
    }

    /// Releases the task's assignment and returns it.
    pub fn release_task(&mut self, task: TaskId) -> Result<Assignment, ViewError> {
        let a = self
            .tasks
            .remove(&task)
            .ok_or(ViewError::NotPlaced { task })?;
        self.give_back(&a, true);
        Ok(a)
    }

    /// A copy of the view for what-if questions about `job` that only release tasks placed
    /// now and place new ones: the nodes' state and `job`'s placement, without the records of
    /// the other placed tasks (copying those is most of a clone's cost on a busy cluster).
    /// A task placed in `self` is released from the projection with
    /// [`ClusterView::release_untracked`]; tasks applied to the projection are tracked as in
    /// any view. Filters and scores for `job`'s tasks see what they would see on a clone, and
    /// [`ClusterView::check`] judges any job's assignment as on a clone (exclusivity from the
    /// nodes' own counts).
    pub fn projection(&self, job: JobId) -> ClusterView {
        let mut jobs = BTreeMap::new();
        if let Some(jp) = self.jobs.get(&job) {
            jobs.insert(job, jp.clone());
        }
        ClusterView {
            spec: self.spec.clone(),
            zones: self.zones.clone(),
            node_zone: self.node_zone.clone(),
            models: self.models.clone(),
            node_model: self.node_model.clone(),
            nodes: self.nodes.clone(),
            gpu_offset: self.gpu_offset.clone(),
            gpu_free: self.gpu_free.clone(),
            jobs,
            tasks: BTreeMap::new(),
            gpu_milli_total: self.gpu_milli_total,
            gpu_milli_used: self.gpu_milli_used,
            free_schedulable: self.free_schedulable,
            gpu_free_schedulable: self.gpu_free_schedulable,
            changes: self.changes,
            capacity_max: self.capacity_max,
            gpu_count_max: self.gpu_count_max,
            last_version: self.last_version,
            recent: self.recent,
            recent_written: self.recent_written,
            exclusive_nodes: self.exclusive_nodes,
        }
    }

    /// Releases `a` from a [`ClusterView::projection`]: an assignment of the view it was
    /// projected from, so not tracked here (`a` must be what that view holds for the task).
    pub fn release_untracked(&mut self, a: &Assignment) -> Result<(), ViewError> {
        let n = self.node_index(a.node)?;
        if self.tasks.contains_key(&a.task) {
            return Err(ViewError::ReleaseMismatch { task: a.task });
        }
        let st = &self.nodes[n];
        let cap = self.spec.nodes[n].capacity;
        let back = st.free.checked_add(&a.resources);
        if st.tasks == 0 || !back.is_some_and(|f| f.fits_in(&cap)) {
            return Err(ViewError::ReleaseMismatch { task: a.task });
        }
        self.give_back(a, false);
        Ok(())
    }

    /// Returns what `a` took to its node (and to its job's placement: required when
    /// `tracked`, else only if the job is indexed here).
    fn give_back(&mut self, a: &Assignment, tracked: bool) {
        let n = a.node.0 as usize;
        let zone = self.node_zone[n] as usize;
        let cap = self.spec.nodes[n].capacity;
        let st = &mut self.nodes[n];
        st.free = st.free.checked_add(&a.resources).expect("no overflow");
        if st.schedulable {
            self.free_schedulable = self.free_schedulable.saturating_add(&a.resources);
            self.gpu_free_schedulable += a.gpus.iter().map(|g| u64::from(g.milli)).sum::<u64>();
        }
        assert!(
            st.free.fits_in(&cap),
            "release: free exceeds capacity on {}",
            a.node
        );
        st.tasks -= 1;
        if a.exclusive {
            if let Some((_, c)) = &mut st.exclusive {
                *c -= 1;
                if *c == 0 {
                    st.exclusive = None;
                    self.exclusive_nodes -= 1;
                }
            }
        }
        if let Some(demand) = gpu_demand_of(a) {
            if let Some(i) = st.gpu_types.iter().position(|(d, _)| *d == demand) {
                st.gpu_types[i].1 -= 1;
                if st.gpu_types[i].1 == 0 {
                    st.gpu_types.swap_remove(i);
                }
            }
        }
        let off = self.gpu_offset[n] as usize;
        for s in &a.gpus {
            let f = &mut self.gpu_free[off + s.device as usize];
            *f += s.milli;
            assert!(
                *f as u32 <= GPU_MILLI_PER_DEVICE,
                "release: device over 1000 milli free"
            );
            self.gpu_milli_used -= s.milli as u64;
        }
        match self.jobs.get_mut(&a.job) {
            Some(jp) => {
                let c = jp.per_node.get_mut(&a.node).expect("node indexed");
                *c -= 1;
                if *c == 0 {
                    jp.per_node.remove(&a.node);
                }
                jp.per_zone[zone] -= 1;
                jp.total -= 1;
                if jp.total == 0 {
                    self.jobs.remove(&a.job);
                }
            }
            None => assert!(!tracked, "job indexed with its task"),
        }
        self.bump(n);
    }
}

/// The GPU request type of an assignment, as GPU clustering sees it.
fn gpu_demand_of(a: &Assignment) -> Option<GpuDemand> {
    match a.gpus.as_slice() {
        [] => None,
        [one] if (one.milli as u32) < GPU_MILLI_PER_DEVICE => Some(GpuDemand::Milli(one.milli)),
        many => Some(GpuDemand::Whole(many.len() as u8)),
    }
}

/// Builds the GPU slices of a whole-device request: the lowest-index wholly free devices.
pub(crate) fn whole_devices(free: &[u16], k: u8) -> Option<Vec<GpuSlice>> {
    let mut out = Vec::with_capacity(k as usize);
    for (i, &f) in free.iter().enumerate() {
        if out.len() == k as usize {
            break;
        }
        if f as u32 == GPU_MILLI_PER_DEVICE {
            out.push(GpuSlice {
                device: i as u8,
                milli: GPU_MILLI_PER_DEVICE as u16,
            });
        }
    }
    (out.len() == k as usize).then_some(out)
}
