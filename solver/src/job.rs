//! Jobs, their constraints, and task states with reason codes.

use crate::resources::TaskShape;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Scheduling tier (Titus' model): critical jobs run on guaranteed, pre-provisioned capacity
/// groups; flex jobs on capacity that autoscales and may be preempted for critical work.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Critical,
    #[default]
    Flex,
}

impl Tier {
    pub const ALL: [Tier; 2] = [Tier::Critical, Tier::Flex];
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Critical => "critical",
            Tier::Flex => "flex",
        }
    }
}

/// How a failed batch task is retried.
///
/// In TOML: `retry = { kind = "exponential", initial_delay_ms = 1000, max_delay_ms = 60000, max_retries = 5 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RetryPolicy {
    /// Retry at once.
    Immediate { max_retries: u32 },
    /// Retry after a fixed delay.
    Delayed { delay_ms: u64, max_retries: u32 },
    /// Retry after `initial_delay_ms * 2^attempt`, capped at `max_delay_ms`.
    Exponential {
        initial_delay_ms: u64,
        max_delay_ms: u64,
        max_retries: u32,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::Immediate { max_retries: 0 }
    }
}

impl RetryPolicy {
    pub fn max_retries(&self) -> u32 {
        match *self {
            RetryPolicy::Immediate { max_retries }
            | RetryPolicy::Delayed { max_retries, .. }
            | RetryPolicy::Exponential { max_retries, .. } => max_retries,
        }
    }

    /// Delay before retry number `attempt` (0 = the first retry), or `None` when retries are
    /// exhausted.
    pub fn delay_ms(&self, attempt: u32) -> Option<u64> {
        if attempt >= self.max_retries() {
            return None;
        }
        Some(match *self {
            RetryPolicy::Immediate { .. } => 0,
            RetryPolicy::Delayed { delay_ms, .. } => delay_ms,
            RetryPolicy::Exponential {
                initial_delay_ms,
                max_delay_ms,
                ..
            } => {
                let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
                initial_delay_ms.saturating_mul(factor).min(max_delay_ms)
            }
        })
    }
}

/// A batch job: `size` tasks that run to completion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub size: u32,
    /// A task still running after this long is killed and marked `RuntimeLimitExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_limit_ms: Option<u64>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// All tasks are placed together or none is (rigid parallel jobs, distributed training).
    #[serde(default)]
    pub gang: bool,
}

/// A service job: keeps `desired` instances running, between `min` and `max`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub min: u32,
    pub desired: u32,
    pub max: u32,
    #[serde(default = "default_true")]
    pub restart_on_failure: bool,
}

fn default_true() -> bool {
    true
}

/// Batch or service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Batch(BatchSpec),
    Service(ServiceSpec),
}

/// One placement constraint. Used as hard (a filter) or soft (a score) in [`Constraints`].
///
/// In TOML: `{ kind = "zone_balance", max_skew = 1 }`, `{ kind = "unique_host" }`,
/// `{ kind = "attribute_in", key = "instance_type", values = ["g5.xlarge"] }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Constraint {
    /// A job's tasks spread over the cluster's zones: the task count of the fullest zone minus
    /// that of the emptiest stays at most `max_skew`.
    ZoneBalance { max_skew: u32 },
    /// At most one task of the job per node.
    UniqueHost,
    /// The node runs no task of any other job while this job's task is on it.
    ExclusiveHost,
    /// Node attribute `key` equals `value` (`zone`, `instance_type`, `pool`, or a label).
    AttributeEquals { key: String, value: String },
    /// Node attribute `key` is one of `values`.
    AttributeIn { key: String, values: Vec<String> },
}

impl Constraint {
    /// Short name used in reason counts.
    pub fn name(&self) -> &'static str {
        match self {
            Constraint::ZoneBalance { .. } => "zone balance",
            Constraint::UniqueHost => "unique host",
            Constraint::ExclusiveHost => "exclusive host",
            Constraint::AttributeEquals { .. } => "attribute equals",
            Constraint::AttributeIn { .. } => "attribute in",
        }
    }
}

/// Hard constraints filter nodes; soft constraints only score them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hard: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soft: Vec<Constraint>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        self.hard.is_empty() && self.soft.is_empty()
    }
}

/// What to run. The simulator ignores it; the runtime hands it to Docker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A job as submitted by a user.
///
/// The document has exactly one of the tables `[batch]` or `[service]` (see [`JobSpecDoc`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "JobSpecDoc", into = "JobSpecDoc")]
pub struct JobSpec {
    pub name: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub tier: Tier,
    /// The capacity group (Titus): a named reservation of capacity the job draws from.
    #[serde(default = "default_capacity_group")]
    pub capacity_group: String,
    pub kind: JobKind,
    /// What each task needs.
    pub task: TaskShape,
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

/// The document form of [`JobSpec`]: `batch` and `service` as optional tables, so field paths
/// survive in errors (serde's `flatten` loses them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpecDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default)]
    pub tier: Tier,
    #[serde(default = "default_capacity_group")]
    pub capacity_group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    pub task: TaskShape,
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

impl TryFrom<JobSpecDoc> for JobSpec {
    type Error = String;
    fn try_from(d: JobSpecDoc) -> Result<Self, String> {
        let kind = match (d.batch, d.service) {
            (Some(b), None) => JobKind::Batch(b),
            (None, Some(s)) => JobKind::Service(s),
            (Some(_), Some(_)) => return Err("give either [batch] or [service], not both".into()),
            (None, None) => return Err("missing [batch] or [service]".into()),
        };
        Ok(JobSpec {
            name: d.name,
            owner: d.owner,
            tier: d.tier,
            capacity_group: d.capacity_group,
            kind,
            task: d.task,
            constraints: d.constraints,
            container: d.container,
        })
    }
}

impl From<JobSpec> for JobSpecDoc {
    fn from(j: JobSpec) -> Self {
        let (batch, service) = match j.kind {
            JobKind::Batch(b) => (Some(b), None),
            JobKind::Service(s) => (None, Some(s)),
        };
        JobSpecDoc {
            name: j.name,
            owner: j.owner,
            tier: j.tier,
            capacity_group: j.capacity_group,
            batch,
            service,
            task: j.task,
            constraints: j.constraints,
            container: j.container,
        }
    }
}

fn default_capacity_group() -> String {
    "default".to_string()
}

/// The lifecycle of a task (after Titus): accepted → launched → started → finished, with
/// kill-initiated on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, waiting for placement.
    Accepted,
    /// Placed on a node; launch command sent.
    Launched,
    /// The container is starting.
    StartInitiated,
    /// Running.
    Started,
    /// A kill was asked for; waiting for the exit.
    KillInitiated,
    /// Terminal: see the reason.
    Finished,
}

impl TaskState {
    pub fn is_terminal(&self) -> bool {
        matches!(self, TaskState::Finished)
    }
}

/// Why a task is in its state. Every terminal task has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskReason {
    /// Exited with code 0.
    Normal,
    /// Exited with a non-zero code.
    Failed,
    /// Killed by the memory cgroup.
    OomKilled,
    /// Killed because it ran past its runtime limit.
    RuntimeLimitExceeded,
    /// Killed by a user or by job kill.
    Killed,
    /// Removed by a service scale-down.
    ScaledDown,
    /// Its node was lost or its spot instance interrupted.
    Lost,
    /// The launch failed (image, agent error) or timed out.
    LaunchFailed,
    /// Stuck in a transitional state past its timeout.
    TimedOut,
    /// No node can take it (with the placement reasons recorded alongside).
    Unschedulable,
}

impl TaskReason {
    pub const ALL: [TaskReason; 10] = [
        TaskReason::Normal,
        TaskReason::Failed,
        TaskReason::OomKilled,
        TaskReason::RuntimeLimitExceeded,
        TaskReason::Killed,
        TaskReason::ScaledDown,
        TaskReason::Lost,
        TaskReason::LaunchFailed,
        TaskReason::TimedOut,
        TaskReason::Unschedulable,
    ];

    /// The name serde writes (`"oom_killed"`), without serialising.
    pub fn name(&self) -> &'static str {
        match self {
            TaskReason::Normal => "normal",
            TaskReason::Failed => "failed",
            TaskReason::OomKilled => "oom_killed",
            TaskReason::RuntimeLimitExceeded => "runtime_limit_exceeded",
            TaskReason::Killed => "killed",
            TaskReason::ScaledDown => "scaled_down",
            TaskReason::Lost => "lost",
            TaskReason::LaunchFailed => "launch_failed",
            TaskReason::TimedOut => "timed_out",
            TaskReason::Unschedulable => "unschedulable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_the_serialised_names() {
        for r in TaskReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name(), "{r:?}");
        }
    }
}
