//! The EC2 cloud driver task: takes [`CloudCommand`]s from the control actor one at a time,
//! carries them out through [`Ec2Pools`], and reports outcomes back as [`CloudReport`]s; every
//! `reconcile_interval_ms` it lists the cluster's instances for the actor to reconcile.
//!
//! One task, strictly in order: a provisioning request's `InstanceLaunched` events reach the
//! actor before any later listing does, so a listing never shows an instance of ours that the
//! controller could take for a stranger.

use super::client::{CloudInstance, Ec2Pools, SpotStatus};
use super::error::CloudError;
use crate::cloud::{CloudCommand, CloudReport, ListedInstance, ProvisionRequest, SPOT_NOTICE_MS};
use crate::control::{ControlHandle, Msg};
use berth_solver::controller::{Event, InstanceId, LaunchErrorKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// After an authorization failure, the reconcile loop slows down by this factor (no retry
/// storm against a refusing account).
pub const UNAUTHORIZED_SLOWDOWN: u32 = 10;

/// Spawns the driver. It stops when the actor drops its command sender.
pub fn spawn(
    pools: Arc<Ec2Pools>,
    rx: mpsc::Receiver<CloudCommand>,
    control: ControlHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(pools, rx, control))
}

async fn run(pools: Arc<Ec2Pools>, mut rx: mpsc::Receiver<CloudCommand>, control: ControlHandle) {
    let interval = Duration::from_millis(pools.config().reconcile_interval_ms);
    let mut next_reconcile = tokio::time::Instant::now() + interval;
    let mut unauthorized = false;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let report = execute(&pools, cmd).await;
                if !report.is_empty() && control.tell(Msg::Cloud(CloudReport::Events(report))).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(next_reconcile) => {
                let wait = match reconcile(&pools).await {
                    Ok(list) => {
                        unauthorized = false;
                        if control.tell(Msg::Cloud(CloudReport::Listed(list))).await.is_err() {
                            break;
                        }
                        interval
                    }
                    Err(e) if e.kind == LaunchErrorKind::Unauthorized => {
                        if !unauthorized {
                            tracing::error!(error = %e, "EC2 refuses the credentials: instances are not reconciled until it accepts them; check the AWS credential chain and the IAM policy (ec2:DescribeInstances, CreateFleet, RunInstances, TerminateInstances, CreateTags, CreateLaunchTemplate)");
                        }
                        unauthorized = true;
                        interval * UNAUTHORIZED_SLOWDOWN
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile: DescribeInstances failed");
                        interval
                    }
                };
                next_reconcile = tokio::time::Instant::now() + wait;
            }
        }
    }
    tracing::info!("EC2 driver stopped");
}

/// Spot-request status codes of an interruption notice: EC2 has decided to take the instance
/// and will in about two minutes ([`SPOT_NOTICE_MS`] after the status changed).
pub const SPOT_NOTICE_CODES: &[&str] = &[
    "marked-for-termination",
    "marked-for-stop",
    "marked-for-hibernation",
];

/// Spot-request status codes of an instance already taken.
pub const SPOT_TAKEN_CODES: &[&str] = &[
    "instance-terminated-by-price",
    "instance-terminated-no-capacity",
    "instance-terminated-capacity-oversubscribed",
    "instance-terminated-launch-group-constraint",
    "instance-stopped-by-price",
    "instance-stopped-no-capacity",
    "instance-stopped-capacity-oversubscribed",
];

/// Lists the cluster's instances as the actor wants them: DescribeInstances by tag, and for
/// the live spot instances their spot requests' status (DescribeSpotInstanceRequests), which
/// is where an interruption notice shows before the instance stops. A failed status call
/// only loses the early warning: the instance's own state still tells a reclaim.
pub async fn reconcile(pools: &Ec2Pools) -> Result<Vec<ListedInstance>, CloudError> {
    let list = pools.list(None).await?;
    let spot: Vec<InstanceId> = list
        .iter()
        .filter(|i| i.spot && i.is_alive())
        .map(|i| i.id.clone())
        .collect();
    let statuses = match pools.spot_statuses(&spot).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "reconcile: DescribeSpotInstanceRequests failed; interruption notices are not seen this round");
            BTreeMap::new()
        }
    };
    Ok(list
        .iter()
        .map(|i| listed(i, statuses.get(&i.id)))
        .collect())
}

fn listed(i: &CloudInstance, spot: Option<&SpotStatus>) -> ListedInstance {
    let reclaimed = i.spot
        && !i.is_alive()
        && i.state_reason.as_deref() == Some("Server.SpotInstanceTermination");
    let code = spot.map(|s| s.code.as_str()).unwrap_or("");
    let notice = SPOT_NOTICE_CODES.contains(&code);
    ListedInstance {
        id: i.id.clone(),
        pool: i.pool.clone(),
        request: i.request,
        alive: i.is_alive(),
        interrupted: reclaimed || notice || SPOT_TAKEN_CODES.contains(&code),
        terminate_at_ms: spot
            .filter(|_| notice && !reclaimed)
            .and_then(|s| s.updated_ms)
            .map(|t| t + SPOT_NOTICE_MS),
    }
}

/// Carries out one command; returns the events to step.
pub async fn execute(pools: &Ec2Pools, cmd: CloudCommand) -> Vec<Event> {
    match cmd {
        CloudCommand::Provision(req) => provision(pools, &req).await,
        CloudCommand::Terminate(instance) => {
            match pools.terminate(std::slice::from_ref(&instance)).await {
                Ok(()) => tracing::info!(%instance, "instance terminated"),
                // The reconcile loop will list it again and the controller will ask again.
                Err(e) => tracing::error!(%instance, error = %e, "TerminateInstances failed"),
            }
            Vec::new()
        }
        CloudCommand::Recover(reqs) => {
            let mut out = Vec::new();
            for (req, known) in reqs {
                out.extend(recover(pools, &req, &known).await);
            }
            out
        }
    }
}

/// Launches a request and reports every instance: launched, or failed with its kind.
pub async fn provision(pools: &Ec2Pools, req: &ProvisionRequest) -> Vec<Event> {
    let t0 = std::time::Instant::now();
    let o = pools.provision(req).await;
    tracing::info!(
        request = %req.request, pool = %req.pool, instance_type = %req.instance_type,
        zone = %req.zone, count = req.count, launched = o.launched.len(),
        ms = t0.elapsed().as_millis() as u64, "provisioned"
    );
    let mut out: Vec<Event> = o
        .launched
        .iter()
        .map(|i| Event::InstanceLaunched {
            request: req.request,
            instance: i.clone(),
        })
        .collect();
    let missing = req.count.saturating_sub(o.launched.len() as u32);
    if missing > 0 {
        let e = o.failed.unwrap_or_else(|| {
            CloudError::from_code("CreateFleet", "PartialFulfilment", "fewer launched")
        });
        if e.kind == LaunchErrorKind::Unauthorized {
            tracing::error!(pool = %req.pool, error = %e, "EC2 refuses to launch: the pool stops autoscaling until the control plane restarts with working credentials");
        } else {
            tracing::warn!(pool = %req.pool, error = %e, missing, "launch failed");
        }
        out.push(Event::InstanceLaunchFailed {
            request: req.request,
            count: missing,
            error: e.kind,
            message: e.to_string(),
        });
    }
    out
}

/// A request the controller still waits for after a restart: instances already tagged with it
/// are adopted (the call went through before the crash: nothing more is launched, so a pool
/// never exceeds its maximum); with none, the request is issued again with its client token.
pub async fn recover(pools: &Ec2Pools, req: &ProvisionRequest, known: &[InstanceId]) -> Vec<Event> {
    let found = match pools.list(Some(req.request)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(request = %req.request, error = %e, "recover: listing failed");
            return vec![Event::InstanceLaunchFailed {
                request: req.request,
                count: req.count,
                error: e.kind,
                message: format!("recovering after a restart: {e}"),
            }];
        }
    };
    if found.is_empty() {
        tracing::info!(request = %req.request, "recover: no instance of the request; issuing it again");
        return provision(pools, req).await;
    }
    let mut out: Vec<Event> = found
        .iter()
        .filter(|i| i.is_alive() && !known.contains(&i.id))
        .take(req.count as usize)
        .map(|i| Event::InstanceLaunched {
            request: req.request,
            instance: i.id.clone(),
        })
        .collect();
    let missing = req.count.saturating_sub(out.len() as u32);
    tracing::info!(request = %req.request, adopted = out.len(), missing, "recover: adopted the request's instances");
    if missing > 0 {
        out.push(Event::InstanceLaunchFailed {
            request: req.request,
            count: missing,
            error: LaunchErrorKind::Other,
            message: "partly fulfilled before a control-plane restart".into(),
        });
    }
    out
}
