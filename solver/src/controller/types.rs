//! What goes into the controller ([`Event`]) and what comes out ([`Command`]). Both are closed
//! enums: a driver handles every variant, and the simulator can produce every event the
//! runtime can.

use crate::cluster::NodeSpec;
use crate::ids::{JobId, NodeId, TaskId};
use crate::job::{JobSpec, TaskReason, TaskState};
use crate::plan::{GpuSlice, ReasonCounts};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A cloud instance, as the provider names it (`i-0abc…` on EC2, `sim-17` in the simulator).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One provisioning request the controller issued ([`Command::ProvisionInstances`]). Assigned
/// by the controller, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req-{}", self.0)
    }
}

/// Why the cloud refused to launch instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchErrorKind {
    /// The provider has no capacity for this type in this zone (EC2
    /// `InsufficientInstanceCapacity`). The pair is avoided for a cool-down.
    InsufficientCapacity,
    /// Request rate exceeded (`RequestLimitExceeded`). The pool backs off exponentially.
    Throttled,
    /// The credentials may not launch (`UnauthorizedOperation`). The pool stops autoscaling.
    Unauthorized,
    /// Anything else. The pool backs off.
    Other,
}

impl LaunchErrorKind {
    pub fn name(&self) -> &'static str {
        match self {
            LaunchErrorKind::InsufficientCapacity => "insufficient_capacity",
            LaunchErrorKind::Throttled => "throttled",
            LaunchErrorKind::Unauthorized => "unauthorized",
            LaunchErrorKind::Other => "other",
        }
    }
}

/// Something that happened. Time is the `now_ms` passed to [`super::Controller::step`] with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A job was submitted. `job` is chosen by the driver and must be new.
    /// `requested_runtime_ms` is the user's run-time estimate (SWF field 9) that EASY
    /// backfilling plans with; the batch runtime limit is used when it is absent.
    JobSubmitted {
        job: JobId,
        spec: JobSpec,
        requested_runtime_ms: Option<u64>,
    },
    /// A service job's instance counts changed.
    JobScaled {
        job: JobId,
        min: u32,
        desired: u32,
        max: u32,
    },
    /// Kill every task of the job; the job ends when they have exited.
    JobKilled { job: JobId },
    /// Kill one task. A batch task ends `Killed`; a service task is replaced.
    TaskKillRequested { task: TaskId },
    /// The container was created and is starting (optional; `TaskStarted` may come directly).
    TaskStarting { task: TaskId },
    /// The container is running.
    TaskStarted { task: TaskId },
    /// The container exited.
    TaskExited {
        task: TaskId,
        exit_code: i32,
        oom: bool,
    },
    /// The agent could not launch the container.
    TaskLaunchFailed { task: TaskId, message: String },
    /// A node can take tasks: an agent registered, or an instance the controller provisioned
    /// came up (`instance` names it). `node.id` is chosen by the driver and must be new.
    NodeReady {
        node: NodeSpec,
        instance: Option<InstanceId>,
    },
    /// A node is gone, with whatever ran on it.
    NodeLost { node: NodeId },
    /// One instance of a provisioning request was created (it is booting).
    InstanceLaunched {
        request: RequestId,
        instance: InstanceId,
    },
    /// `count` instances of a provisioning request will not come.
    InstanceLaunchFailed {
        request: RequestId,
        count: u32,
        error: LaunchErrorKind,
        message: String,
    },
    /// The provider will reclaim the instance at `terminate_at_ms` (spot: a two-minute notice).
    InstanceInterrupted {
        instance: InstanceId,
        terminate_at_ms: u64,
    },
    /// The instance is gone (terminated by us, reclaimed, or vanished).
    InstanceTerminated { instance: InstanceId },
    /// The containers actually on `node`. Tasks the controller places there that are missing
    /// are lost; containers it does not know (or thinks finished) are killed.
    ReconcileTasks { node: NodeId, running: Vec<TaskId> },
    /// Every instance the provider lists for this controller. Known instances that are missing
    /// are lost; unknown ones are terminated.
    ReconcileInstances { instances: Vec<InstanceId> },
    /// Nothing happened; time passed (the answer to [`Command::WakeAt`]).
    Tick,
}

impl Event {
    /// A short stable name of the variant (logs, event-log hashes).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::JobSubmitted { .. } => "job_submitted",
            Event::JobScaled { .. } => "job_scaled",
            Event::JobKilled { .. } => "job_killed",
            Event::TaskKillRequested { .. } => "task_kill_requested",
            Event::TaskStarting { .. } => "task_starting",
            Event::TaskStarted { .. } => "task_started",
            Event::TaskExited { .. } => "task_exited",
            Event::TaskLaunchFailed { .. } => "task_launch_failed",
            Event::NodeReady { .. } => "node_ready",
            Event::NodeLost { .. } => "node_lost",
            Event::InstanceLaunched { .. } => "instance_launched",
            Event::InstanceLaunchFailed { .. } => "instance_launch_failed",
            Event::InstanceInterrupted { .. } => "instance_interrupted",
            Event::InstanceTerminated { .. } => "instance_terminated",
            Event::ReconcileTasks { .. } => "reconcile_tasks",
            Event::ReconcileInstances { .. } => "reconcile_instances",
            Event::Tick => "tick",
        }
    }
}

/// Why an instance is terminated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateReason {
    /// Idle beyond the pool's headroom.
    ScaleDown,
    /// Never became a node within the boot timeout.
    BootTimedOut,
    /// Reconciliation found an instance the controller does not know.
    Unknown,
}

/// The lifecycle of a job as the controller records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted; its tasks are recorded as `Accepted` alongside.
    Accepted,
    /// Refused at submission (see the reason).
    Rejected,
    /// Every task is terminal: all completed normally.
    Completed,
    /// Every task is terminal and at least one did not complete normally.
    Failed,
    /// Killed by [`Event::JobKilled`].
    Killed,
}

/// A task's state change, for the runtime's store and event stream and the simulator's
/// metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task: TaskId,
    pub job: JobId,
    /// The task's slot in its job (batch: `0..size`; service: an instance number). A retry or
    /// a replacement is a new task in the same slot.
    pub slot: u32,
    /// 0 for the slot's first task, then +1 per retry or replacement.
    pub attempt: u32,
    pub state: TaskState,
    /// Set for `Finished` (always) and `KillInitiated` (the kill's reason).
    pub reason: Option<TaskReason>,
    /// The node, from `Launched` on.
    pub node: Option<NodeId>,
}

/// What the driver must do (or record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Start the task's container on `node` with exactly these resources and GPU slices.
    LaunchTask {
        task: TaskId,
        job: JobId,
        node: NodeId,
        resources: Resources,
        gpus: Vec<GpuSlice>,
    },
    /// Stop the task's container: SIGTERM, then SIGKILL after `grace_ms`.
    KillTask {
        task: TaskId,
        node: NodeId,
        grace_ms: u64,
        reason: TaskReason,
    },
    /// Launch `count` instances of `instance_type` in `zone` for `pool`.
    ProvisionInstances {
        request: RequestId,
        pool: String,
        instance_type: String,
        zone: String,
        count: u32,
    },
    /// Terminate an instance.
    TerminateInstance {
        instance: InstanceId,
        reason: TerminateReason,
    },
    /// A task changed state.
    RecordTask(TaskRecord),
    /// A job changed state. `message` explains a rejection.
    RecordJob {
        job: JobId,
        state: JobState,
        message: Option<String>,
    },
    /// A job's pending tasks found no node, with the per-reason node counts of the last try.
    /// Issued when a job becomes blocked, not on every retry.
    RecordUnplaced {
        job: JobId,
        pending: u32,
        reasons: ReasonCounts,
    },
    /// Deliver [`Event::Tick`] at `at_ms` (or any event before). Replaces earlier wake-ups.
    WakeAt { at_ms: u64 },
}

impl Command {
    pub fn kind(&self) -> &'static str {
        match self {
            Command::LaunchTask { .. } => "launch_task",
            Command::KillTask { .. } => "kill_task",
            Command::ProvisionInstances { .. } => "provision_instances",
            Command::TerminateInstance { .. } => "terminate_instance",
            Command::RecordTask(_) => "record_task",
            Command::RecordJob { .. } => "record_job",
            Command::RecordUnplaced { .. } => "record_unplaced",
            Command::WakeAt { .. } => "wake_at",
        }
    }
}
