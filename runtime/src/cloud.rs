//! The seam between the control actor and a cloud driver (EC2: [`crate::ec2`]), free of any
//! cloud SDK type so the actor builds without one.
//!
//! The actor sends [`CloudCommand`]s (the controller's `ProvisionInstances` and
//! `TerminateInstance`, plus `Recover` after a restart); the driver answers with
//! [`CloudReport`]s that the actor turns into controller events, in the order sent.

use berth_solver::controller::{Event, InstanceId, RequestId};

/// Commands waiting for the cloud driver.
pub const CLOUD_QUEUE_MAX: usize = 4096;

/// How long EC2 warns before it reclaims a spot instance (its interruption notice).
pub const SPOT_NOTICE_MS: u64 = 120_000;

/// One provisioning request, as the controller issued it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionRequest {
    pub request: RequestId,
    pub pool: String,
    pub instance_type: String,
    pub zone: String,
    pub count: u32,
}

/// What the actor asks the cloud driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudCommand {
    Provision(ProvisionRequest),
    Terminate(InstanceId),
    /// After a restart: requests the replayed controller still waits for (`count` = instances
    /// still owed), each with the instances it already reported. The driver adopts instances
    /// tagged with the request and launches (with the request's client token) only when there
    /// are none at all.
    Recover(Vec<(ProvisionRequest, Vec<InstanceId>)>),
}

/// An instance the cloud lists for this cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedInstance {
    pub id: InstanceId,
    pub pool: String,
    pub request: Option<RequestId>,
    /// Pending or running.
    pub alive: bool,
    /// The provider is reclaiming it (a spot interruption): an interruption notice, or an
    /// instance already stopping for it.
    pub interrupted: bool,
    /// When the provider will take it (ms since the Unix epoch), when a notice says so;
    /// `None`: now.
    pub terminate_at_ms: Option<u64>,
}

/// What the cloud driver tells the actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudReport {
    /// Outcomes of provisioning requests (`InstanceLaunched`, `InstanceLaunchFailed`), to be
    /// stepped in order.
    Events(Vec<Event>),
    /// Every instance of the cluster (the reconcile loop).
    Listed(Vec<ListedInstance>),
}
