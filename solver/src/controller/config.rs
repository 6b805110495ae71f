//! How the controller behaves: placement policy, queue policy, pools, timeouts and bounds.
//! Every field has a default; the TOML form refuses unknown fields.

use crate::catalog::{Catalog, InstanceType};
use crate::frag::TaskTypes;
use crate::job::Tier;
use crate::place::{PlaceError, Policy};
use crate::spec::SpecError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// In which order pending jobs get capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuePolicy {
    /// Strict arrival order over all jobs: a job that does not fit blocks every later one.
    Fcfs,
    /// Arrival order with EASY backfilling (Lifka 1995): the first blocked job gets a
    /// reservation at the earliest time the running tasks' requested run times free enough
    /// capacity; a later job may start now only if it does not delay that reservation (it ends
    /// before it, or leaves enough for it).
    Easy,
    /// Berth's default: critical tier before flex; inside a tier, capacity groups take turns by
    /// lowest dominant resource share (DRF); inside a group, arrival order, and a job that does
    /// not fit does not block later ones (up to [`ControllerConfig::lookahead_jobs_max`]).
    #[default]
    Berth,
}

impl QueuePolicy {
    pub fn name(&self) -> &'static str {
        match self {
            QueuePolicy::Fcfs => "fcfs",
            QueuePolicy::Easy => "easy",
            QueuePolicy::Berth => "berth",
        }
    }
}

/// On-demand or spot capacity.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CapacityType {
    #[default]
    OnDemand,
    Spot,
}

/// At most `nodes_max` nodes of a pool terminated by scale-down per `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisruptionBudget {
    pub nodes_max: u32,
    pub window_ms: u64,
}

impl Default for DisruptionBudget {
    fn default() -> Self {
        DisruptionBudget {
            nodes_max: 1,
            window_ms: 60_000,
        }
    }
}

/// A pool of instances the controller provisions (a Titus capacity group's backing
/// auto-scaling group).
///
/// A `critical` pool is guaranteed capacity: pre-provisioned to `min_nodes` at the start and
/// kept there; only critical jobs run on it. A `flex` pool autoscales between `min_nodes` and
/// `max_nodes` for flex jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    #[serde(default)]
    pub tier: Tier,
    /// Instance types the pool may launch (catalogue names), in preference order for ties.
    pub instance_types: Vec<String>,
    pub zones: Vec<String>,
    #[serde(default)]
    pub min_nodes: u32,
    pub max_nodes: u32,
    /// Scale up for pending work and down when idle. Default: true for flex, false for
    /// critical.
    #[serde(default)]
    pub autoscale: Option<bool>,
    /// Idle headroom kept ready: at least this many nodes without tasks (or booting).
    #[serde(default)]
    pub idle_nodes_min: u32,
    /// Idle nodes beyond this many, idle for `scale_down_idle_ms`, are terminated (autoscaled
    /// pools). 0, the default, is no idle node kept beyond `min_nodes`, not "no cap". Must be
    /// at least `idle_nodes_min`: the headroom would otherwise be provisioned and terminated
    /// again forever, so a pool with `idle_nodes_min = 2` and no `idle_nodes_max` is refused.
    #[serde(default)]
    pub idle_nodes_max: u32,
    #[serde(default = "default_scale_down_idle_ms")]
    pub scale_down_idle_ms: u64,
    #[serde(default)]
    pub disruption_budget: DisruptionBudget,
    /// The pool's node count per zone, fullest minus emptiest, is kept at most this (on
    /// scale-up and scale-down).
    #[serde(default = "one")]
    pub zone_max_skew: u32,
    #[serde(default)]
    pub capacity_type: CapacityType,
}

fn default_scale_down_idle_ms() -> u64 {
    300_000
}

fn one() -> u32 {
    1
}

impl PoolSpec {
    pub fn autoscales(&self) -> bool {
        self.autoscale.unwrap_or(self.tier == Tier::Flex)
    }
}

/// How long a task may stay in a transitional state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// `Launched` without `TaskStarting`/`TaskStarted`: killed, reason `TimedOut`.
    #[serde(default = "default_launch_ms")]
    pub launch_ms: u64,
    /// `StartInitiated` without `TaskStarted`: killed, reason `TimedOut`.
    #[serde(default = "default_start_ms")]
    pub start_ms: u64,
    /// `KillInitiated` without an exit: taken for dead and released (its kill reason kept).
    #[serde(default = "default_kill_ms")]
    pub kill_ms: u64,
    /// A provisioning request with instances still not reported: the rest are taken as failed.
    #[serde(default = "default_provision_ms")]
    pub provision_ms: u64,
    /// A launched instance that has not become a node: terminated.
    #[serde(default = "default_boot_ms")]
    pub boot_ms: u64,
    /// A task launched this recently and missing from a [`super::Event::ReconcileTasks`] is
    /// not yet taken for lost (the agent may not have seen it yet).
    #[serde(default = "default_reconcile_grace_ms")]
    pub reconcile_grace_ms: u64,
}

fn default_launch_ms() -> u64 {
    300_000
}
fn default_start_ms() -> u64 {
    300_000
}
fn default_kill_ms() -> u64 {
    120_000
}
fn default_provision_ms() -> u64 {
    600_000
}
fn default_boot_ms() -> u64 {
    900_000
}
fn default_reconcile_grace_ms() -> u64 {
    60_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            launch_ms: default_launch_ms(),
            start_ms: default_start_ms(),
            kill_ms: default_kill_ms(),
            provision_ms: default_provision_ms(),
            boot_ms: default_boot_ms(),
            reconcile_grace_ms: default_reconcile_grace_ms(),
        }
    }
}

/// Autoscaler pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleConfig {
    /// How often pools are evaluated (scale up, headroom, scale down).
    #[serde(default = "default_autoscale_interval_ms")]
    pub interval_ms: u64,
    /// A type/zone that reported insufficient capacity is avoided this long.
    #[serde(default = "default_ice_cooldown_ms")]
    pub ice_cooldown_ms: u64,
    /// First back-off after a throttled or failed request; doubles per consecutive failure.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Pending tasks considered per evaluation (bounds the mix problem).
    #[serde(default = "default_demand_tasks_max")]
    pub demand_tasks_max: u32,
    /// Use the MILP in the instance-mix optimiser. Off by default: the MILP's time limit is
    /// wall-clock, which would make runs irreproducible.
    #[serde(default)]
    pub mix_milp: bool,
}

fn default_autoscale_interval_ms() -> u64 {
    10_000
}
fn default_ice_cooldown_ms() -> u64 {
    600_000
}
fn default_backoff_initial_ms() -> u64 {
    5_000
}
fn default_backoff_max_ms() -> u64 {
    300_000
}
fn default_demand_tasks_max() -> u32 {
    10_000
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            interval_ms: default_autoscale_interval_ms(),
            ice_cooldown_ms: default_ice_cooldown_ms(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            demand_tasks_max: default_demand_tasks_max(),
            mix_milp: false,
        }
    }
}

/// Everything the controller is configured with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// The placement policy. When it gives no `tier_pools` and pools are configured, critical
    /// jobs are restricted to critical pools and flex jobs to flex pools.
    #[serde(default = "Policy::berth")]
    pub policy: Policy,
    #[serde(default)]
    pub queue: QueuePolicy,
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub autoscale: AutoscaleConfig,
    /// 0: a scheduling pass ends every step that made one worthwhile. Above 0: passes are
    /// batched, at most one per interval (Titus' scheduling loop), via [`super::Command::WakeAt`].
    #[serde(default)]
    pub schedule_interval_ms: u64,
    /// Jobs a pass examines past a blocked one, per capacity group (Berth queue) or behind the
    /// head (EASY backfill candidates).
    #[serde(default = "default_lookahead")]
    pub lookahead_jobs_max: u32,
    /// Grace period of the kills the controller issues.
    #[serde(default = "default_kill_grace_ms")]
    pub kill_grace_ms: u64,
    /// Delay before a failed service task is replaced.
    #[serde(default)]
    pub service_restart_delay_ms: u64,
    /// The task types FGD measures fragmentation against. `None`: derived from the jobs
    /// submitted so far (refreshed each time their task count doubles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typical_types: Option<TaskTypes>,
}

fn default_lookahead() -> u32 {
    256
}

fn default_kill_grace_ms() -> u64 {
    30_000
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            policy: Policy::berth(),
            queue: QueuePolicy::default(),
            pools: Vec::new(),
            timeouts: Timeouts::default(),
            autoscale: AutoscaleConfig::default(),
            schedule_interval_ms: 0,
            lookahead_jobs_max: default_lookahead(),
            kill_grace_ms: default_kill_grace_ms(),
            service_restart_delay_ms: 0,
            typical_types: None,
        }
    }
}

/// The controller cannot be built from this configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControllerError {
    /// A field is wrong; `path` names it (`pools[1].instance_types[0]`).
    #[error("{0}")]
    Config(#[from] SpecError),
    #[error("policy: {0}")]
    Policy(#[from] PlaceError),
}

/// A pool with its instance types resolved against the catalogue.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedPool {
    pub spec: PoolSpec,
    pub types: Vec<InstanceType>,
}

impl ControllerConfig {
    /// Checks the configuration against `catalog` as [`super::Controller::new`] does, without
    /// building a controller. Field paths are relative to this struct (`pools[1].max_nodes`,
    /// `autoscale.interval_ms`); a driver embedding it elsewhere prefixes them.
    pub fn validate(&self, catalog: &Catalog) -> Result<(), ControllerError> {
        self.resolve(catalog).map(|_| ())
    }

    /// Checks the configuration and resolves pool instance types in `catalog`.
    pub(crate) fn resolve(&self, catalog: &Catalog) -> Result<Vec<ResolvedPool>, ControllerError> {
        self.policy.validate()?;
        if self.lookahead_jobs_max == 0 {
            return Err(SpecError::new("lookahead_jobs_max", "must be at least 1").into());
        }
        if self.autoscale.interval_ms == 0 {
            return Err(SpecError::new("autoscale.interval_ms", "must be at least 1").into());
        }
        let mut names = BTreeSet::new();
        let mut out = Vec::with_capacity(self.pools.len());
        for (i, p) in self.pools.iter().enumerate() {
            let at = |f: &str| format!("pools[{i}].{f}");
            if p.name.trim().is_empty() {
                return Err(SpecError::new(at("name"), "must not be empty").into());
            }
            if !names.insert(p.name.clone()) {
                return Err(
                    SpecError::new(at("name"), format!("duplicate pool {:?}", p.name)).into(),
                );
            }
            if p.instance_types.is_empty() {
                return Err(SpecError::new(
                    at("instance_types"),
                    "give at least one instance type",
                )
                .into());
            }
            if p.zones.is_empty() {
                return Err(SpecError::new(at("zones"), "give at least one zone").into());
            }
            let zones: BTreeSet<&String> = p.zones.iter().collect();
            if zones.len() != p.zones.len() {
                return Err(SpecError::new(at("zones"), "a zone is listed twice").into());
            }
            if p.max_nodes == 0 || p.min_nodes > p.max_nodes {
                return Err(SpecError::new(
                    at("max_nodes"),
                    format!(
                        "expected 0 <= min_nodes <= max_nodes and max_nodes >= 1, got {} / {}",
                        p.min_nodes, p.max_nodes
                    ),
                )
                .into());
            }
            // Scale-down terminates idle nodes beyond `idle_nodes_max` and scale-up provisions
            // up to `idle_nodes_min`: min above max would flap for ever.
            if p.idle_nodes_min > p.idle_nodes_max {
                return Err(SpecError::new(
                    at("idle_nodes_max"),
                    format!(
                        "must be at least idle_nodes_min ({}), got {}: idle nodes beyond \
                         idle_nodes_max are terminated, so the headroom would be provisioned \
                         and terminated again (0 keeps no idle node, it is not \"no cap\")",
                        p.idle_nodes_min, p.idle_nodes_max
                    ),
                )
                .into());
            }
            if p.zone_max_skew == 0 {
                return Err(SpecError::new(at("zone_max_skew"), "must be at least 1").into());
            }
            if p.disruption_budget.window_ms == 0 {
                return Err(SpecError::new(
                    at("disruption_budget.window_ms"),
                    "must be at least 1",
                )
                .into());
            }
            let mut types = Vec::with_capacity(p.instance_types.len());
            for (j, t) in p.instance_types.iter().enumerate() {
                let it = catalog.get(t).ok_or_else(|| {
                    SpecError::new(
                        at(&format!("instance_types[{j}]")),
                        format!("unknown instance type {t:?}"),
                    )
                })?;
                types.push(it.clone());
            }
            out.push(ResolvedPool {
                spec: p.clone(),
                types,
            });
        }
        Ok(out)
    }

    /// The policy the placer uses: the configured one, with `tier_pools` derived from the pools
    /// when the policy gives none.
    pub(crate) fn effective_policy(&self) -> Policy {
        let mut p = self.policy.clone();
        if p.tier_pools.is_empty() && !self.pools.is_empty() {
            for tier in Tier::ALL {
                let names: Vec<String> = self
                    .pools
                    .iter()
                    .filter(|pool| pool.tier == tier)
                    .map(|pool| pool.name.clone())
                    .collect();
                if !names.is_empty() {
                    p.tier_pools.insert(tier, names);
                }
            }
        }
        p
    }
}
