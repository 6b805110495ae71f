//! What the autoscaler would issue for a pending demand: the controller itself, driven on
//! empty pools, so `berth pool plan` shows the production decision (types, counts, zones,
//! tier routing, pool limits, zone balance) and not a separate computation of it.
//!
//! The controller is stepped as a driver steps it: the jobs arrive at 0 (the first step
//! brings every pool to its minimum and idle headroom), the first autoscaler evaluation runs
//! at `autoscale.interval_ms` and provisions for what is pending; then every requested
//! instance is reported launched and ready, and what is still pending afterwards is reported
//! with the controller's own reasons.

use super::{Command, Controller, ControllerConfig, ControllerError, Event, InstanceId};
use crate::catalog::Catalog;
use crate::cluster::ClusterSpec;
use crate::ids::{JobId, NodeId};
use crate::job::JobSpec;
use std::collections::BTreeMap;

/// One provisioning request, as the controller issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRequest {
    pub pool: String,
    pub instance_type: String,
    pub zone: String,
    pub count: u32,
}

/// The controller's provisioning decisions for a demand on empty pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionPlan {
    /// Issued at the first step, before any demand: pool minimums and idle headroom.
    pub baseline: Vec<PlannedRequest>,
    /// Issued by the first autoscaler evaluation, for the pending demand.
    pub demand: Vec<PlannedRequest>,
    /// Tasks still pending once every requested instance is a node.
    pub pending_after: u64,
    /// The controller's last unplaced report per job still pending (reason counts).
    pub unplaced: Vec<(JobId, String)>,
}

impl ProvisionPlan {
    /// Every request, baseline first, in the order issued.
    pub fn requests(&self) -> impl Iterator<Item = &PlannedRequest> {
        self.baseline.iter().chain(self.demand.iter())
    }
}

fn provisions(cmds: &[Command], out: &mut Vec<PlannedRequest>) {
    for c in cmds {
        if let Command::ProvisionInstances {
            pool,
            instance_type,
            zone,
            count,
            ..
        } = c
        {
            out.push(PlannedRequest {
                pool: pool.clone(),
                instance_type: instance_type.clone(),
                zone: zone.clone(),
                count: *count,
            });
        }
    }
}

/// What the steps so far said: requests issued, launches per job, last unplaced report.
#[derive(Default)]
struct Seen {
    issued: Vec<Command>,
    launched: BTreeMap<JobId, u64>,
    unplaced: BTreeMap<JobId, String>,
}

impl Seen {
    fn note(&mut self, cmds: &[Command]) {
        for c in cmds {
            match c {
                Command::ProvisionInstances { .. } => self.issued.push(c.clone()),
                Command::LaunchTask { job, .. } => *self.launched.entry(*job).or_insert(0) += 1,
                Command::RecordUnplaced {
                    job,
                    pending,
                    reasons,
                } => {
                    self.unplaced
                        .insert(*job, format!("{pending} pending; {reasons}"));
                }
                _ => {}
            }
        }
    }
}

/// One step; returns its provisioning requests.
fn step(ctl: &mut Controller, now_ms: u64, ev: Event, seen: &mut Seen) -> Vec<PlannedRequest> {
    let cmds = ctl.step(now_ms, ev);
    seen.note(&cmds);
    let mut out = Vec::new();
    provisions(&cmds, &mut out);
    out
}

/// Runs the controller (`config`, pools resolved in `catalog`, seed `seed`) on empty pools
/// for `jobs` submitted at once, and returns what it provisions and what stays pending.
pub fn plan_provisioning(
    config: ControllerConfig,
    catalog: &Catalog,
    jobs: &[JobSpec],
    seed: u64,
) -> Result<ProvisionPlan, ControllerError> {
    let interval_ms = config.autoscale.interval_ms;
    let mut ctl = Controller::new(config, catalog, &ClusterSpec::default(), seed)?;
    let mut plan = ProvisionPlan::default();
    let mut seen = Seen::default();
    // The first step brings the pools to their minimum and headroom (the demand is not yet
    // known to it); the jobs arrive at 0.
    let first = step(&mut ctl, 0, Event::Tick, &mut seen);
    plan.baseline.extend(first);
    for (i, spec) in jobs.iter().enumerate() {
        let ev = Event::JobSubmitted {
            job: JobId(i as u64 + 1),
            spec: spec.clone(),
            requested_runtime_ms: None,
        };
        let more = step(&mut ctl, 0, ev, &mut seen);
        plan.demand.extend(more);
    }
    // The first autoscaler evaluation.
    let more = step(&mut ctl, interval_ms, Event::Tick, &mut seen);
    plan.demand.extend(more);
    // Every requested instance launches and registers (with the catalogue's capacity).
    let mut now = interval_ms + 1;
    let mut next_node = 0u32;
    for c in std::mem::take(&mut seen.issued) {
        let Command::ProvisionInstances {
            request,
            pool,
            instance_type,
            zone,
            count,
        } = c
        else {
            continue;
        };
        let Some(t) = catalog.get(&instance_type) else {
            continue;
        };
        for k in 0..count {
            let instance = InstanceId(format!("plan-{}-{k}", request.0));
            let ev = Event::InstanceLaunched {
                request,
                instance: instance.clone(),
            };
            step(&mut ctl, now, ev, &mut seen);
            let node = t.node_spec(NodeId(next_node), instance.0.clone(), &zone, &pool);
            next_node += 1;
            let ev = Event::NodeReady {
                node,
                instance: Some(instance),
            };
            step(&mut ctl, now, ev, &mut seen);
            now += 1;
        }
    }
    plan.pending_after = ctl.stats().pending_tasks;
    for (i, spec) in jobs.iter().enumerate() {
        let job = JobId(i as u64 + 1);
        let size = match &spec.kind {
            crate::job::JobKind::Batch(b) => u64::from(b.size),
            crate::job::JobKind::Service(s) => u64::from(s.desired),
        };
        let launched = seen.launched.get(&job).copied().unwrap_or(0);
        if launched < size {
            let why = why_pending(&mut ctl, job, spec);
            plan.unplaced
                .push((job, format!("{} pending: {why}", size - launched)));
        }
    }
    Ok(plan)
}

/// Why a job's tasks still wait once every requested instance runs: the placer's reasons
/// against one empty instance of every type of every pool (tier routing included), or, when
/// one of them would hold a task, that the pools stopped short of it (their maximum).
fn why_pending(ctl: &mut Controller, job: JobId, spec: &JobSpec) -> String {
    let mut nodes = Vec::new();
    for p in &ctl.pools {
        for t in &p.types {
            let id = NodeId(nodes.len() as u32);
            nodes.push(t.node_spec(
                id,
                format!("empty-{}", t.name),
                &p.spec.zones[0],
                &p.spec.name,
            ));
        }
    }
    let view = crate::view::ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let req = crate::plan::TaskRequest::new(crate::ids::TaskId(u64::MAX), job, spec.task.clone())
        .with_constraints(std::sync::Arc::new(spec.constraints.clone()))
        .with_tier(spec.tier);
    let mut rng =
        <rand_chacha::ChaCha8Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(0);
    match ctl.scratch_placer.place_one(&view, &req, &mut rng) {
        Err(u) => format!(
            "no instance type of a pool it may use holds it ({})",
            u.reasons
        ),
        Ok(a) => format!(
            "an empty {} would hold it, but the pools stop short (max_nodes, capacity errors)",
            view.node(a.node).attributes.instance_type
        ),
    }
}
