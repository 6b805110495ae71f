//! The one shape every importer produces: job arrivals with their task groups, plus the trace's
//! node list where it has one.

use berth_solver::{ClusterSpec, JobId, Resources, TaskShape, Tier};
use serde::{Deserialize, Serialize};

/// Batch work runs to completion; service work runs until deleted (in a trace, for its recorded
/// lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Batch,
    Service,
}

/// How a task group ended in the trace, where the trace says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceOutcome {
    /// Completed normally.
    Completed,
    /// Failed (non-zero exit or scheduler-reported failure).
    Failed,
    /// Killed or cancelled.
    Killed,
    /// Still running or waiting when the trace ends; `duration_ms` is unknown or a lower bound.
    Unfinished,
    /// Never scheduled in the original cluster (kept, and flagged by this value).
    NeverScheduled,
    /// The trace does not say.
    Unknown,
}

/// `instances` identical task instances arriving together. This is the compact form that keeps
/// Alibaba 2017's 11.9 M instances in 80 k rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskGroup {
    /// Arrival time, ms from the trace's start (negative = before the trace window).
    pub submit_ms: i64,
    pub instances: u32,
    /// What each instance needs.
    pub shape: TaskShape,
    /// How long each instance ran in the trace, when known.
    pub duration_ms: Option<u64>,
    /// The user-requested run time (SWF field 9), used by backfilling; not the actual run time.
    pub requested_runtime_ms: Option<u64>,
    pub outcome: TraceOutcome,
}

/// One job of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceJob {
    pub id: JobId,
    /// The trace's own name or id for it.
    pub name: String,
    pub kind: WorkKind,
    pub tier: Tier,
    /// The trace's raw class: openb `qos`, SWF queue, or empty.
    pub class: String,
    /// All tasks placed together or none (rigid parallel SWF jobs).
    pub gang: bool,
    /// Task groups in arrival order.
    pub groups: Vec<TaskGroup>,
}

impl TraceJob {
    /// Earliest arrival of any of its groups.
    pub fn submit_ms(&self) -> i64 {
        self.groups.iter().map(|g| g.submit_ms).min().unwrap_or(0)
    }

    pub fn instances(&self) -> u64 {
        self.groups.iter().map(|g| g.instances as u64).sum()
    }
}

/// An imported trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Where it came from (path or generator description).
    pub source: String,
    /// Jobs sorted by (submit_ms, id).
    pub jobs: Vec<TraceJob>,
    /// The trace's node list, where it ships one.
    pub cluster: Option<ClusterSpec>,
    /// Lines skipped under `--skip-bad` (and Alibaba 2017 rows dropped under
    /// [`crate::MissingRequest::Skip`]).
    pub skipped_lines: u64,
    /// The first messages about skipped lines (`file:line: what is wrong`), at most
    /// [`crate::ImportOptions::first_errors_max`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_errors: Vec<String>,
    /// The Unix time (seconds) of `submit_ms == 0`, when the trace says (SWF: `UnixStartTime`
    /// header or epoch submit times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_unix_s: Option<i64>,
}

impl Workload {
    /// Records what an import skipped.
    pub fn set_skipped(&mut self, skipped: crate::Skipped) {
        self.skipped_lines = skipped.lines;
        self.first_errors = skipped.first_errors;
    }

    /// Takes what an import skipped out of the workload (to merge it with another file's).
    pub fn take_skipped(&mut self) -> crate::Skipped {
        crate::Skipped {
            lines: std::mem::take(&mut self.skipped_lines),
            first_errors: std::mem::take(&mut self.first_errors),
        }
    }

    /// Sorts jobs by (earliest submit, id) so every consumer sees one order.
    pub fn sort(&mut self) {
        self.jobs.sort_by_key(|j| (j.submit_ms(), j.id));
    }

    pub fn task_groups(&self) -> u64 {
        self.jobs.iter().map(|j| j.groups.len() as u64).sum()
    }

    pub fn instances(&self) -> u64 {
        self.jobs.iter().map(TraceJob::instances).sum()
    }

    /// Sum over all instances of their scalar requests.
    pub fn total_request(&self) -> Resources {
        let mut acc = Resources::ZERO;
        for g in self.jobs.iter().flat_map(|j| &j.groups) {
            acc = acc.saturating_add(&g.shape.resources.saturating_mul(g.instances as u64));
        }
        acc
    }
}
