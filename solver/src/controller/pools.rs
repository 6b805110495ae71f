//! Nodes, instances and pool autoscaling.
//!
//! A pool keeps `min_nodes` (critical pools are pre-provisioned to it at the start) and its idle
//! headroom; an autoscaled pool also provisions for pending work through the instance-mix
//! optimiser ([`crate::mix::plan_mix`]) and terminates idle nodes beyond its headroom. Every
//! evaluation counts instances already requested or booting, so nothing is provisioned twice:
//! pending tasks are first packed onto those in-flight instances and only the rest goes to the
//! optimiser. Zones are kept balanced on both ways, within the pool's `zone_max_skew`.

use super::schedule::{add3, sub3};
use super::{
    Booting, Command, Controller, InstanceId, LaunchErrorKind, NodeRec, Provision, RequestId,
    TerminateReason, Timer,
};
use crate::cluster::{NodeAttributes, NodeSpec};
use crate::ids::{JobId, NodeId, TaskId};
use crate::job::{Constraint, Constraints, TaskReason, TaskState, Tier};
use crate::mix::{plan_mix, MixConfig, MixLimits, MixRequest, ZoneBalance};
use crate::plan::TaskRequest;
use crate::resources::TaskShape;
use crate::view::ClusterView;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Does `attrs` satisfy the hard attribute constraints?
fn attributes_ok(c: &Constraints, attrs: &NodeAttributes) -> bool {
    c.hard.iter().all(|k| match k {
        Constraint::AttributeEquals { key, value } => attrs.get(key) == Some(value.as_str()),
        Constraint::AttributeIn { key, values } => attrs
            .get(key)
            .is_some_and(|v| values.iter().any(|x| x == v)),
        _ => true,
    })
}

/// Residual demand grouped by the (types, zones) its constraints allow.
type DemandGroups = BTreeMap<(Vec<usize>, Vec<usize>), Vec<(TaskShape, u32)>>;

/// Pending demand a pool might serve: a shape, its tier and constraints, how many.
struct Demand {
    job: JobId,
    shape: TaskShape,
    tier: Tier,
    constraints: Arc<Constraints>,
    count: u32,
}

impl Controller {
    /// Registers the node at view index `nodes.len()` (already in the view).
    pub(crate) fn register_node(
        &mut self,
        id: NodeId,
        instance: Option<InstanceId>,
        now_ms: u64,
    ) -> u32 {
        let idx = self.nodes.len() as u32;
        let vid = NodeId(idx);
        let spec = self.view.node(vid);
        let booted = instance.as_ref().and_then(|i| self.booting.remove(i));
        let launch_counted = booted.is_some();
        let pool = match booted {
            Some(b) => {
                let p = &mut self.pools[b.pool];
                dec(&mut p.booting, (b.type_idx, b.zone_idx), 1);
                Some(b.pool)
            }
            None => self.pool_index.get(&spec.attributes.pool).copied(),
        };
        let devices = spec.gpu_count() as usize;
        let cap = spec.capacity;
        let gpu = u64::from(spec.gpu_count()) * 1000;
        self.ledger.used.push(crate::resources::Resources::ZERO);
        self.ledger.gpu_used.push(vec![0; devices]);
        self.nodes.push(NodeRec {
            id,
            pool,
            instance: instance.clone(),
            live: true,
            draining: false,
            idle_since_ms: Some(now_ms),
            launch_counted,
            tasks: BTreeSet::new(),
        });
        self.node_index.insert(id, idx);
        if let Some(i) = instance {
            self.instance_node.insert(i, idx);
        }
        if let Some(p) = pool {
            self.pools[p].nodes.insert(idx);
        }
        add3(&mut self.capacity_total, &cap, gpu);
        self.nodes_version += 1;
        self.epoch += 1;
        self.dirty = true;
        idx
    }

    /// The zone of the node at view index `idx`, read from the view each time: the view
    /// renumbers its zone indexes when a zone sorting before the known ones joins, so an index
    /// kept from registration would name another zone.
    pub(crate) fn node_zone(&self, idx: u32) -> &str {
        &self.view.node(NodeId(idx)).attributes.zone
    }

    pub(crate) fn node_ready(&mut self, now_ms: u64, node: NodeSpec, instance: Option<InstanceId>) {
        if let Some(&idx) = self.node_index.get(&node.id) {
            if self.nodes[idx as usize].live {
                return; // already known
            }
        }
        if let Some(i) = &instance {
            // Known, or being terminated (its boot timed out, it was scaled down): an agent
            // that registers now does not bring it into service.
            if self.instance_node.contains_key(i) || self.terminated.contains_key(i) {
                return;
            }
        }
        let id = node.id;
        self.view.add_node(node);
        self.register_node(id, instance, now_ms);
    }

    /// A live node without a pool becomes one of pool `p`'s (its instance turned out to be
    /// the pool's): in the view too, so the tiers that may use the pool may use it.
    fn adopt_into_pool(&mut self, idx: u32, p: usize) {
        let name = self.pools[p].spec.name.clone();
        self.view.set_pool(NodeId(idx), &name).expect("known node");
        self.nodes[idx as usize].pool = Some(p);
        if !self.nodes[idx as usize].draining {
            self.pools[p].nodes.insert(idx);
        }
        self.nodes_version += 1;
        self.epoch += 1;
        self.dirty = true;
    }

    /// Takes a node out of the capacity the scheduler counts (it stays in the view,
    /// unschedulable).
    fn take_out_of_service(&mut self, idx: u32) {
        let n = &self.nodes[idx as usize];
        if !n.live || n.draining {
            return;
        }
        let spec = self.view.node(NodeId(idx));
        let (cap, gpu) = (spec.capacity, u64::from(spec.gpu_count()) * 1000);
        sub3(&mut self.capacity_total, &cap, gpu);
        self.view
            .set_schedulable(NodeId(idx), false)
            .expect("known node");
        if let Some(p) = self.nodes[idx as usize].pool {
            self.pools[p].nodes.remove(&idx);
        }
        self.nodes[idx as usize].draining = true;
        self.nodes_version += 1;
    }

    pub(crate) fn node_lost_event(&mut self, now_ms: u64, node: NodeId) {
        if let Some(&idx) = self.node_index.get(&node) {
            self.node_lost(now_ms, idx);
        }
    }

    /// A node is gone: its tasks end `Lost` (or with their kill's reason) and are retried or
    /// replaced.
    pub(crate) fn node_lost(&mut self, now_ms: u64, idx: u32) {
        if !self.nodes[idx as usize].live {
            return;
        }
        self.take_out_of_service(idx);
        let n = &mut self.nodes[idx as usize];
        n.live = false;
        n.idle_since_ms = None;
        if let Some(i) = n.instance.clone() {
            self.instance_node.remove(&i);
        }
        let tasks: Vec<TaskId> = self.nodes[idx as usize].tasks.iter().copied().collect();
        for t in tasks {
            self.finish_lost(now_ms, t);
        }
    }

    /// A task vanished with its node (or from its node): `Lost`, or the reason of the kill it
    /// was already under.
    pub(crate) fn finish_lost(&mut self, now_ms: u64, task: TaskId) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let reason = match (t.state, t.kill_reason) {
            (TaskState::KillInitiated, Some(r)) => r,
            _ => TaskReason::Lost,
        };
        self.finish_live(now_ms, task, reason);
    }

    pub(crate) fn instance_launched(
        &mut self,
        now_ms: u64,
        request: RequestId,
        instance: InstanceId,
    ) {
        let Some(prov) = self.provisions.get_mut(&request) else {
            return;
        };
        if self.booting.contains_key(&instance) {
            return;
        }
        // Registered before this report: the node is in service already; the report only
        // closes its share of the request (once), and names the node's pool when its driver
        // could not (the runtime learns an instance's pool from this very report).
        let registered = match self.instance_node.get(&instance) {
            Some(&idx) if self.nodes[idx as usize].launch_counted => return,
            Some(&idx) => {
                self.nodes[idx as usize].launch_counted = true;
                Some(idx)
            }
            None => None,
        };
        let (pool, type_idx, zone_idx) = (prov.pool, prov.type_idx, prov.zone_idx);
        if prov.outstanding > 0 {
            prov.outstanding -= 1;
            dec(&mut self.pools[pool].requested, (type_idx, zone_idx), 1);
        }
        if prov.outstanding == 0 {
            self.provisions.remove(&request);
        }
        if let Some(idx) = registered {
            let n = &self.nodes[idx as usize];
            if n.pool.is_none() && n.live {
                self.adopt_into_pool(idx, pool);
            }
            return;
        }
        let p = &mut self.pools[pool];
        p.backoff_ms = 0;
        *p.booting.entry((type_idx, zone_idx)).or_insert(0) += 1;
        self.booting.insert(
            instance.clone(),
            Booting {
                pool,
                type_idx,
                zone_idx,
            },
        );
        self.timer(
            now_ms + self.config.timeouts.boot_ms,
            Timer::BootTimeout { instance },
        );
    }

    pub(crate) fn instance_launch_failed(
        &mut self,
        now_ms: u64,
        request: RequestId,
        count: u32,
        error: LaunchErrorKind,
        message: String,
    ) {
        let Some(prov) = self.provisions.get_mut(&request) else {
            return;
        };
        let n = count.min(prov.outstanding);
        prov.outstanding -= n;
        let (pool, type_idx, zone_idx) = (prov.pool, prov.type_idx, prov.zone_idx);
        if prov.outstanding == 0 {
            self.provisions.remove(&request);
        }
        let cfg = self.config.autoscale;
        let p = &mut self.pools[pool];
        dec(&mut p.requested, (type_idx, zone_idx), n);
        match error {
            LaunchErrorKind::InsufficientCapacity => {
                p.ice_until_ms
                    .insert((type_idx, zone_idx), now_ms + cfg.ice_cooldown_ms);
                // Try another type or zone at once.
                self.evaluate_pools(now_ms);
            }
            LaunchErrorKind::Throttled | LaunchErrorKind::Other => {
                p.backoff_ms = if p.backoff_ms == 0 {
                    cfg.backoff_initial_ms
                } else {
                    (p.backoff_ms * 2).min(cfg.backoff_max_ms)
                };
                p.backoff_until_ms = now_ms + p.backoff_ms;
            }
            LaunchErrorKind::Unauthorized => {
                p.disabled = Some(message);
            }
        }
    }

    pub(crate) fn instance_interrupted(
        &mut self,
        now_ms: u64,
        instance: InstanceId,
        terminate_at_ms: u64,
    ) {
        if let Some(b) = self.booting.remove(&instance) {
            dec(&mut self.pools[b.pool].booting, (b.type_idx, b.zone_idx), 1);
            return;
        }
        let Some(&idx) = self.instance_node.get(&instance) else {
            return;
        };
        self.take_out_of_service(idx);
        let grace = self
            .config
            .kill_grace_ms
            .min(terminate_at_ms.saturating_sub(now_ms));
        let tasks: Vec<TaskId> = self.nodes[idx as usize].tasks.iter().copied().collect();
        for t in tasks {
            self.initiate_kill_with_grace(now_ms, t, TaskReason::Lost, grace);
        }
    }

    pub(crate) fn instance_terminated(&mut self, now_ms: u64, instance: InstanceId) {
        self.terminated.remove(&instance);
        if let Some(b) = self.booting.remove(&instance) {
            dec(&mut self.pools[b.pool].booting, (b.type_idx, b.zone_idx), 1);
            return;
        }
        if let Some(&idx) = self.instance_node.get(&instance) {
            self.node_lost(now_ms, idx);
        }
    }

    pub(crate) fn provision_timeout_due(&mut self, _now_ms: u64, request: RequestId) {
        let Some(prov) = self.provisions.remove(&request) else {
            return;
        };
        dec(
            &mut self.pools[prov.pool].requested,
            (prov.type_idx, prov.zone_idx),
            prov.outstanding,
        );
    }

    pub(crate) fn boot_timeout_due(&mut self, now_ms: u64, instance: InstanceId) {
        let Some(b) = self.booting.remove(&instance) else {
            return;
        };
        dec(&mut self.pools[b.pool].booting, (b.type_idx, b.zone_idx), 1);
        self.terminated.insert(instance.clone(), now_ms);
        self.out.push(Command::TerminateInstance {
            instance,
            reason: TerminateReason::BootTimedOut,
        });
    }

    // ----- autoscaling ---------------------------------------------------------------------

    /// At the first step: pools are brought to their minimum (critical pools are
    /// pre-provisioned) and the periodic evaluation starts.
    pub(crate) fn start_pools(&mut self, now_ms: u64) {
        if self.pools.is_empty() {
            return;
        }
        self.autoscale(now_ms);
    }

    /// The periodic evaluation.
    pub(crate) fn autoscale(&mut self, now_ms: u64) {
        self.timer(now_ms + self.config.autoscale.interval_ms, Timer::Autoscale);
        self.evaluate_pools(now_ms);
    }

    /// Scale every pool up (minimum, headroom, pending work) and down (idle beyond headroom).
    pub(crate) fn evaluate_pools(&mut self, now_ms: u64) {
        if self.dirty {
            // Place what fits first, so only what does not fit is provisioned for.
            self.pass(now_ms);
        }
        let mut demand = self.pending_demand();
        for p in 0..self.pools.len() {
            self.scale_up(now_ms, p, &demand);
            // What this pool's instances will take is not demand for the pools after it.
            self.absorb_demand(p, &mut demand);
            demand.retain(|d| d.count > 0);
            self.scale_down(now_ms, p);
        }
    }

    /// Pending tasks in queue order, at most `demand_tasks_max`.
    fn pending_demand(&self) -> Vec<Demand> {
        let mut out = Vec::new();
        let mut left = self.config.autoscale.demand_tasks_max;
        'all: for q in self.queues.values() {
            for &(_, job) in q {
                if left == 0 {
                    break 'all;
                }
                let j = &self.jobs[&job];
                let count = (j.pending.len() as u32).min(left);
                if count == 0 {
                    continue;
                }
                left -= count;
                out.push(Demand {
                    job,
                    shape: j.spec.task.clone(),
                    tier: j.tier,
                    constraints: j.constraints.clone(),
                    count,
                });
            }
        }
        out
    }

    /// May tasks of `tier` run on pool `p` (the policy's tier pools)?
    fn tier_may_use(&self, tier: Tier, p: usize) -> bool {
        match self.placer.policy().tier_pools.get(&tier) {
            Some(list) if !list.is_empty() => list.iter().any(|n| *n == self.pools[p].spec.name),
            _ => true,
        }
    }

    /// The pool's live nodes per zone (pool zone order), plus in-flight instances.
    fn zone_counts(&self, p: usize) -> Vec<u32> {
        let pool = &self.pools[p];
        let mut counts = vec![0u32; pool.spec.zones.len()];
        for &n in &pool.nodes {
            let zone = self.node_zone(n);
            if let Some(z) = pool.spec.zones.iter().position(|x| x == zone) {
                counts[z] += 1;
            }
        }
        for (&(_, z), &c) in pool.requested.iter().chain(pool.booting.iter()) {
            counts[z] += c;
        }
        counts
    }

    fn scale_up(&mut self, now_ms: u64, p: usize, demand: &[Demand]) {
        let pool = &self.pools[p];
        if pool.disabled.is_some() || now_ms < pool.backoff_until_ms {
            return;
        }
        let live = pool.nodes.len() as u32;
        let in_flight = pool.in_flight();
        let mut room = pool.spec.max_nodes.saturating_sub(live + in_flight);
        if room == 0 {
            return;
        }
        let zones_n = pool.spec.zones.len();
        let usable = |pool: &super::PoolState, t: usize, z: usize| {
            pool.ice_until_ms
                .get(&(t, z))
                .is_none_or(|&until| until <= now_ms)
        };
        // (type index, allowed zones, count) to launch.
        let mut launches: Vec<(usize, Vec<usize>, u32)> = Vec::new();
        let all_zones: Vec<usize> = (0..zones_n).collect();
        let default_type =
            (0..pool.types.len()).find(|&t| all_zones.iter().any(|&z| usable(pool, t, z)));
        // 1. The minimum, then 2. the idle headroom.
        let idle = pool
            .nodes
            .iter()
            .filter(|&&n| self.nodes[n as usize].tasks.is_empty())
            .count() as u32;
        let need_min = pool.spec.min_nodes.saturating_sub(live + in_flight);
        let need_idle = pool
            .spec
            .idle_nodes_min
            .saturating_sub(idle + in_flight)
            .saturating_sub(need_min);
        let baseline = (need_min + need_idle).min(room);
        if let (Some(t), true) = (default_type, baseline > 0) {
            launches.push((t, all_zones.clone(), baseline));
            room -= baseline;
        }
        // 3. Pending work, for autoscaled pools.
        if pool.spec.autoscales() && room > 0 && !demand.is_empty() {
            for (t, zones, count) in self.demand_launches(now_ms, p, demand, &launches, room) {
                let count = count.min(room);
                if count > 0 {
                    launches.push((t, zones, count));
                    room -= count;
                }
            }
        }
        self.issue_launches(now_ms, p, launches);
    }

    /// Pool `p`'s in-flight instances (requested, booting) and `planned` ones as a what-if
    /// cluster of empty nodes.
    fn in_flight_view(&self, p: usize, planned: &[(usize, Vec<usize>, u32)]) -> ClusterView {
        let pool = &self.pools[p];
        let name = &pool.spec.name;
        let mut virtual_nodes: Vec<NodeSpec> = Vec::new();
        let mut add_virtual = |t: usize, z: usize, c: u32| {
            for _ in 0..c {
                let it = &pool.types[t];
                let id = NodeId(virtual_nodes.len() as u32);
                virtual_nodes.push(it.node_spec(
                    id,
                    format!("in-flight-{}", id.0),
                    &pool.spec.zones[z],
                    name,
                ));
            }
        };
        for (&(t, z), &c) in pool.requested.iter().chain(pool.booting.iter()) {
            add_virtual(t, z, c);
        }
        for (t, zones, c) in planned {
            add_virtual(*t, zones[0], *c);
        }
        ClusterView::new(&crate::cluster::ClusterSpec::from_nodes(virtual_nodes))
    }

    /// Takes out of `demand` what pool `p`'s in-flight instances (those just requested
    /// included) will take, so a later pool does not provision for the same tasks.
    fn absorb_demand(&mut self, p: usize, demand: &mut [Demand]) {
        if self.pools[p].in_flight() == 0 {
            return;
        }
        let mut in_flight = self.in_flight_view(p, &[]);
        let mut next_task = 0u64;
        for d in demand.iter_mut() {
            if d.count == 0 || !self.tier_may_use(d.tier, p) {
                continue;
            }
            d.count -= self.absorb_into(&mut in_flight, d, &mut next_task);
        }
    }

    /// Places `d`'s tasks on the what-if view `in_flight` one by one (first fit) and returns
    /// how many fit; the tasks are identical, so the first that does not fit ends it.
    fn absorb_into(&mut self, in_flight: &mut ClusterView, d: &Demand, next_task: &mut u64) -> u32 {
        let mut absorbed = 0u32;
        for _ in 0..d.count {
            *next_task += 1;
            let req = TaskRequest {
                task: TaskId(*next_task),
                job: d.job,
                shape: d.shape.clone(),
                tier: d.tier,
                constraints: d.constraints.clone(),
                gang: false,
            };
            match self
                .scratch_placer
                .place_one(in_flight, &req, &mut self.rng)
            {
                Ok(a) => {
                    in_flight.apply(&a);
                    absorbed += 1;
                }
                Err(_) => break,
            }
        }
        absorbed
    }

    /// What pending work needs from pool `p` beyond its in-flight instances (and `planned`),
    /// as (type, allowed zones, count) from the instance-mix optimiser.
    fn demand_launches(
        &mut self,
        now_ms: u64,
        p: usize,
        demand: &[Demand],
        planned: &[(usize, Vec<usize>, u32)],
        room: u32,
    ) -> Vec<(usize, Vec<usize>, u32)> {
        let name = self.pools[p].spec.name.clone();
        let mut in_flight = self.in_flight_view(p, planned);
        // Eligible demand; what in-flight capacity does not absorb goes to the optimiser,
        // grouped by the types and zones its constraints allow.
        let mut groups: DemandGroups = BTreeMap::new();
        let mut next_task = 0u64;
        for d in demand {
            if !self.tier_may_use(d.tier, p) {
                continue;
            }
            let pool = &self.pools[p];
            let mut types = Vec::new();
            let mut zones = BTreeSet::new();
            for (t, it) in pool.types.iter().enumerate() {
                for (z, zone) in pool.spec.zones.iter().enumerate() {
                    let attrs = NodeAttributes {
                        zone: zone.clone(),
                        instance_type: it.name.clone(),
                        pool: name.clone(),
                        labels: BTreeMap::new(),
                    };
                    if pool.ice_until_ms.get(&(t, z)).is_none_or(|&u| u <= now_ms)
                        && attributes_ok(&d.constraints, &attrs)
                    {
                        if types.last() != Some(&t) {
                            types.push(t);
                        }
                        zones.insert(z);
                    }
                }
            }
            if types.is_empty() {
                continue;
            }
            let left = d.count - self.absorb_into(&mut in_flight, d, &mut next_task);
            if left > 0 {
                let e = groups
                    .entry((types, zones.into_iter().collect()))
                    .or_default();
                match e.iter_mut().find(|(s, _)| *s == d.shape) {
                    Some((_, c)) => *c += left,
                    None => e.push((d.shape.clone(), left)),
                }
            }
        }
        let pool = &self.pools[p];
        let cfg = MixConfig {
            greedy_only: !self.config.autoscale.mix_milp,
            ..MixConfig::default()
        };
        let mut out = Vec::new();
        let mut room = room;
        for ((types, zones), shapes) in groups {
            if room == 0 {
                break;
            }
            let req = MixRequest {
                demand: shapes,
                types: types.iter().map(|&t| pool.types[t].clone()).collect(),
                zones: zones.iter().map(|&z| pool.spec.zones[z].clone()).collect(),
                limits: MixLimits {
                    total_max: Some(room),
                    ..MixLimits::default()
                },
                zone_balance: ZoneBalance::None,
            };
            let Ok(plan) = plan_mix(&req, &cfg) else {
                continue;
            };
            // Count per type; zones are chosen by `issue_launches` for balance.
            let mut per_type: BTreeMap<usize, u32> = BTreeMap::new();
            for l in &plan.launches {
                if let Some(i) = req.types.iter().position(|t| t.name == l.instance_type) {
                    *per_type.entry(types[i]).or_insert(0) += l.count;
                }
            }
            for (t, c) in per_type {
                let c = c.min(room);
                room -= c;
                out.push((t, zones.clone(), c));
            }
        }
        out
    }

    /// Spreads launches over zones (fewest nodes first, avoiding type/zone pairs short of
    /// capacity) and issues one request per (type, zone).
    fn issue_launches(&mut self, now_ms: u64, p: usize, launches: Vec<(usize, Vec<usize>, u32)>) {
        if launches.is_empty() {
            return;
        }
        let mut counts = self.zone_counts(p);
        let mut per: BTreeMap<(usize, usize), u32> = BTreeMap::new();
        for (t, zones, c) in launches {
            for _ in 0..c {
                let pool = &self.pools[p];
                let z = zones
                    .iter()
                    .copied()
                    .filter(|&z| pool.ice_until_ms.get(&(t, z)).is_none_or(|&u| u <= now_ms))
                    .min_by_key(|&z| (counts[z], z));
                let Some(z) = z else { break };
                counts[z] += 1;
                *per.entry((t, z)).or_insert(0) += 1;
            }
        }
        for ((t, z), count) in per {
            let request = RequestId(self.next_request);
            self.next_request += 1;
            let pool = &mut self.pools[p];
            *pool.requested.entry((t, z)).or_insert(0) += count;
            self.provisions.insert(
                request,
                Provision {
                    pool: p,
                    type_idx: t,
                    zone_idx: z,
                    outstanding: count,
                },
            );
            self.out.push(Command::ProvisionInstances {
                request,
                pool: pool.spec.name.clone(),
                instance_type: pool.types[t].name.clone(),
                zone: pool.spec.zones[z].clone(),
                count,
            });
            self.timer(
                now_ms + self.config.timeouts.provision_ms,
                Timer::ProvisionTimeout { request },
            );
        }
    }

    /// Terminates idle nodes beyond the pool's headroom: idle for `scale_down_idle_ms`, never
    /// below `min_nodes`, within the disruption budget, from the zone with the most nodes so
    /// the skew stays within `zone_max_skew` (or does not grow).
    fn scale_down(&mut self, now_ms: u64, p: usize) {
        let pool = &self.pools[p];
        if !pool.spec.autoscales() {
            return;
        }
        let window = pool.spec.disruption_budget.window_ms;
        while self.pools[p]
            .terminations_ms
            .front()
            .is_some_and(|&t| t + window <= now_ms)
        {
            self.pools[p].terminations_ms.pop_front();
        }
        loop {
            let pool = &self.pools[p];
            let idle: Vec<u32> = pool
                .nodes
                .iter()
                .copied()
                .filter(|&n| self.nodes[n as usize].tasks.is_empty())
                .collect();
            let live = pool.nodes.len() as u32;
            let excess = (idle.len() as u32).saturating_sub(pool.spec.idle_nodes_max);
            let above_min = live.saturating_sub(pool.spec.min_nodes);
            let budget = pool
                .spec
                .disruption_budget
                .nodes_max
                .saturating_sub(pool.terminations_ms.len() as u32);
            if excess == 0 || above_min == 0 || budget == 0 {
                return;
            }
            let counts = self.zone_counts(p);
            let skew = |c: &[u32]| c.iter().max().unwrap_or(&0) - c.iter().min().unwrap_or(&0);
            let skew_now = skew(&counts);
            let mut best: Option<(u32, u64, u32)> = None; // (zone count, idle since, node)
            for &n in &idle {
                let rec = &self.nodes[n as usize];
                let Some(since) = rec.idle_since_ms else {
                    continue;
                };
                if rec.instance.is_none() || since + pool.spec.scale_down_idle_ms > now_ms {
                    continue;
                }
                let zone = self.node_zone(n);
                let Some(z) = pool.spec.zones.iter().position(|x| x == zone) else {
                    continue;
                };
                let mut after = counts.clone();
                after[z] -= 1;
                if skew(&after) > skew_now.max(pool.spec.zone_max_skew) {
                    continue;
                }
                // Fullest zone first, then idle longest, then lowest index.
                let key = (counts[z], since, n);
                let better = match best {
                    None => true,
                    Some((bc, bs, bn)) => key.0 > bc || (key.0 == bc && (key.1, key.2) < (bs, bn)),
                };
                if better {
                    best = Some(key);
                }
            }
            let Some((_, _, n)) = best else { return };
            self.terminate_node(now_ms, n, TerminateReason::ScaleDown);
            self.pools[p].terminations_ms.push_back(now_ms);
        }
    }

    fn terminate_node(&mut self, now_ms: u64, idx: u32, reason: TerminateReason) {
        self.take_out_of_service(idx);
        let n = &mut self.nodes[idx as usize];
        n.live = false;
        n.idle_since_ms = None;
        let instance = n.instance.clone().expect("only instances are terminated");
        self.instance_node.remove(&instance);
        self.terminated.insert(instance.clone(), now_ms);
        self.out
            .push(Command::TerminateInstance { instance, reason });
    }
}

/// `map[key] -= n`, removing the entry at zero.
fn dec(map: &mut BTreeMap<(usize, usize), u32>, key: (usize, usize), n: u32) {
    if let Some(c) = map.get_mut(&key) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            map.remove(&key);
        }
    }
}
