//! What placement takes and gives: task requests in, a [`Plan`] of assignments and unplaced tasks
//! (with per-reason node counts) out.
//!
//! "Cannot place" is an answer, not an error: every task of a batch ends up either in
//! [`Plan::assignments`] or in [`Plan::unplaced`] with a non-empty [`ReasonCounts`].

use crate::ids::{JobId, NodeId, TaskId};
use crate::job::{Constraints, Tier};
use crate::resources::{Resources, TaskShape};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One task to place. `constraints` is shared by all tasks of a job. (In-memory only: jobs are
/// serialised as [`crate::job::JobSpec`]s.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRequest {
    pub task: TaskId,
    pub job: JobId,
    pub shape: TaskShape,
    pub tier: Tier,
    pub constraints: Arc<Constraints>,
    /// All tasks of the job in one batch are placed together or none is
    /// ([`FilterReason::GangUnplaceable`] for the ones that would have fitted).
    pub gang: bool,
}

impl TaskRequest {
    /// A request with no constraints, flex tier, not a gang.
    pub fn new(task: TaskId, job: JobId, shape: TaskShape) -> Self {
        TaskRequest {
            task,
            job,
            shape,
            tier: Tier::Flex,
            constraints: Arc::new(Constraints::default()),
            gang: false,
        }
    }

    pub fn with_constraints(mut self, constraints: Arc<Constraints>) -> Self {
        self.constraints = constraints;
        self
    }

    pub fn with_tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    pub fn with_gang(mut self, gang: bool) -> Self {
        self.gang = gang;
        self
    }

    /// True when the job's hard constraints ask for an exclusive host.
    pub fn is_exclusive(&self) -> bool {
        self.constraints
            .hard
            .iter()
            .any(|c| matches!(c, crate::job::Constraint::ExclusiveHost))
    }
}

/// The share taken from one GPU device: `milli` of device number `device` (0-based index into
/// the node's devices). A whole device is `milli == 1000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GpuSlice {
    pub device: u8,
    pub milli: u16,
}

/// One task placed on one node, with exactly what it takes there. Self-contained: a
/// [`crate::view::ClusterView`] can `apply` and `release` it without any other record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskId,
    pub job: JobId,
    pub node: NodeId,
    /// Scalar resources taken on the node.
    pub resources: Resources,
    /// GPU shares taken, by device (sorted by device, each device at most once).
    pub gpus: Vec<GpuSlice>,
    /// The task holds its node exclusively (its job's hard `ExclusiveHost` constraint).
    pub exclusive: bool,
}

impl Assignment {
    /// Total milli-GPU taken.
    pub fn gpu_milli(&self) -> u32 {
        self.gpus.iter().map(|s| s.milli as u32).sum()
    }
}

/// Why a node was refused for a task. A closed set; [`FilterReason::name`] is stable (used in
/// reason strings, logs and metrics).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FilterReason {
    /// The node is cordoned, draining or lost.
    NodeUnschedulable,
    /// The task's tier may not use the node's pool (policy `tier_pools`).
    TierPoolIneligible,
    /// A hard `attribute_equals` / `attribute_in` constraint on `key` does not hold.
    AttributeMismatch {
        key: String,
    },
    /// The node holds another job's exclusive task, or the task wants exclusivity and the node
    /// runs other jobs' tasks.
    ExclusiveHost,
    /// The job already has a task on the node (hard unique host).
    UniqueHost,
    /// Placing here would push the job's zone skew above `max_skew`.
    ZoneBalance,
    InsufficientCpu,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientNetwork,
    /// The task needs a GPU and the node has none of an accepted model.
    GpuModelMismatch,
    /// Not enough wholly free GPU devices for a whole-GPU request.
    InsufficientGpu,
    /// A fractional request needs one device with that much free; none has.
    NoGpuDeviceWithShare,
    /// The node would fit, but another task of the same gang found no node, so the gang as a
    /// whole was not placed.
    GangUnplaceable,
    /// The cluster has no node at all.
    NoNodes,
}

impl FilterReason {
    /// Stable short name.
    pub fn name(&self) -> &'static str {
        match self {
            FilterReason::NodeUnschedulable => "node unschedulable",
            FilterReason::TierPoolIneligible => "tier pool ineligible",
            FilterReason::AttributeMismatch { .. } => "attribute mismatch",
            FilterReason::ExclusiveHost => "exclusive host",
            FilterReason::UniqueHost => "unique host",
            FilterReason::ZoneBalance => "zone balance",
            FilterReason::InsufficientCpu => "insufficient cpu",
            FilterReason::InsufficientMemory => "insufficient memory",
            FilterReason::InsufficientDisk => "insufficient disk",
            FilterReason::InsufficientNetwork => "insufficient network",
            FilterReason::GpuModelMismatch => "gpu model mismatch",
            FilterReason::InsufficientGpu => "insufficient gpu",
            FilterReason::NoGpuDeviceWithShare => "no gpu device with share",
            FilterReason::GangUnplaceable => "gang unplaceable",
            FilterReason::NoNodes => "no nodes",
        }
    }

    /// The reason for a scalar dimension index (see [`crate::resources::DIMENSION_NAMES`]).
    pub fn for_dimension(dim: usize) -> FilterReason {
        match dim {
            0 => FilterReason::InsufficientCpu,
            1 => FilterReason::InsufficientMemory,
            2 => FilterReason::InsufficientDisk,
            _ => FilterReason::InsufficientNetwork,
        }
    }
}

impl fmt::Display for FilterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterReason::AttributeMismatch { key } => write!(f, "attribute mismatch ({key})"),
            other => f.write_str(other.name()),
        }
    }
}

/// How many nodes refused a task for each reason (each node counted once, for the first filter
/// that refused it). Displayed largest count first:
/// `"1,203 nodes: insufficient gpu; 310: zone balance"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReasonCounts(pub BTreeMap<FilterReason, u32>);

impl ReasonCounts {
    pub fn new() -> Self {
        ReasonCounts(BTreeMap::new())
    }

    pub fn add(&mut self, reason: FilterReason, nodes: u32) {
        if nodes > 0 {
            *self.0.entry(reason).or_insert(0) += nodes;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, reason: &FilterReason) -> u32 {
        self.0.get(reason).copied().unwrap_or(0)
    }

    /// Total nodes counted.
    pub fn total(&self) -> u64 {
        self.0.values().map(|&n| n as u64).sum()
    }

    /// Reasons with counts, largest count first, ties in reason order.
    pub fn sorted(&self) -> Vec<(&FilterReason, u32)> {
        let mut v: Vec<(&FilterReason, u32)> = self.0.iter().map(|(r, &n)| (r, n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v
    }
}

/// `1234567` -> `"1,234,567"`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for ReasonCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (reason, n)) in self.sorted().into_iter().enumerate() {
            if i == 0 {
                let unit = if n == 1 { "node" } else { "nodes" };
                write!(f, "{} {unit}: {reason}", thousands(n as u64))?;
            } else {
                write!(f, "; {}: {reason}", thousands(n as u64))?;
            }
        }
        Ok(())
    }
}

/// A task no node could take, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    pub task: TaskId,
    pub job: JobId,
    pub reasons: ReasonCounts,
}

/// The answer to one placement batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    pub unplaced: Vec<Unplaced>,
}

impl Plan {
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty()
    }

    /// The assignment of `task`, if placed.
    pub fn assignment_of(&self, task: TaskId) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.task == task)
    }

    /// The unplaced record of `task`, if not placed.
    pub fn unplaced_of(&self, task: TaskId) -> Option<&Unplaced> {
        self.unplaced.iter().find(|u| u.task == task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_render_largest_first_with_thousands() {
        let mut r = ReasonCounts::new();
        r.add(FilterReason::ZoneBalance, 310);
        r.add(FilterReason::InsufficientGpu, 1203);
        r.add(FilterReason::UniqueHost, 0);
        assert_eq!(
            r.to_string(),
            "1,203 nodes: insufficient gpu; 310: zone balance"
        );
        let mut one = ReasonCounts::new();
        one.add(FilterReason::AttributeMismatch { key: "zone".into() }, 1);
        assert_eq!(one.to_string(), "1 node: attribute mismatch (zone)");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
