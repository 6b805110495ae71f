//! Berth's decision core.
//!
//! Everything in this crate is pure and deterministic: it does no IO, never reads a clock,
//! never creates randomness of its own (a seeded RNG is passed in), and never lets `HashMap`
//! iteration order reach a decision. The simulator (`berth-sim`) and the production runtime
//! (`berth-runtime`) are thin drivers of it.
//!
//! Module map:
//! - [`ids`], [`resources`], [`cluster`], [`job`]: the domain model shared by every crate.
//! - [`spec`]: loading job and cluster specs from TOML/JSON with field-path errors.
//! - [`bounds`]: lower bounds on the nodes a demand needs ("nodes used vs lower bound").
//! - [`catalog`]: the embedded EC2 instance catalogue (capacity, GPUs, on-demand price).
//! - [`mix`]: instance-mix optimisation (which instances to launch where, at least cost).
//! - `milp` (feature `milp`): batch placement as a MILP on HiGHS, warm-started
//!   from the heuristic, with a proven gap.
//! - [`plan`]: what placement takes and gives (task requests, assignments, unplaced reasons).
//! - [`view`]: the cluster's free capacity and placement indexes, updated incrementally.
//! - [`place`]: the placement pipeline (filters -> scores -> weighted sum -> select) and policies.
//! - [`frag`]: GPU fragmentation against typical task types (FGD, Weng et al. ATC '23).
//! - [`controller`]: the sans-IO job/task lifecycle controller (`Controller::step(now, Event) -> Vec<Command>`).
//! - [`experiment`]: the FGD paper's fragmentation experiment, Berth's quality yardstick.

mod classes;
pub mod cluster;
pub mod ids;
pub mod job;
pub mod resources;
pub mod spec;

pub mod bounds;
pub mod catalog;
#[cfg(feature = "milp")]
pub mod milp;
pub mod mix;

pub mod experiment;
pub mod frag;
pub mod place;
pub mod plan;
pub mod view;

pub mod controller;

pub use cluster::{ClusterSpec, NodeAttributes, NodeGpus, NodeSpec};
pub use frag::{TaskType, TaskTypes, TypeKey};
pub use ids::{JobId, NodeId, TaskId};
pub use job::{
    BatchSpec, Constraint, Constraints, ContainerSpec, JobKind, JobSpec, JobSpecDoc, RetryPolicy,
    ServiceSpec, TaskReason, TaskState, Tier,
};
pub use place::{place, PlaceError, Placer, Policy, ScorerKind, TieBreak, WeightedScorer};
pub use plan::{Assignment, FilterReason, GpuSlice, Plan, ReasonCounts, TaskRequest, Unplaced};
pub use resources::{GpuDemand, GpuModel, Resources, TaskShape};
pub use view::{ClusterView, JobPlacement, ViewError};
