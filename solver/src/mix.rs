//! Instance-mix optimisation: which instances to launch, in which zones, so that pending demand
//! fits at the lowest price per hour.
//!
//! This is what a pool provisioner and the simulator's autoscaler call. The answer is checked by
//! packing the demand onto the chosen instances, task by task, with GPU devices as devices (a
//! per-dimension aggregate is not enough: a 0.6-GPU task and a 0.5-GPU task do not share a
//! device, and a task does not split across nodes).
//!
//! Pipeline of [`plan_mix`]:
//! 1. Validate the request (zones, limits naming known types and zones). Shapes no listed type
//!    can host are answered as [`MixReason::NoTypeFits`], with the dimension that is short.
//! 2. Greedy (always): open one instance at a time, of the type with the lowest price per unit
//!    of dominant resource it actually takes from the remaining demand (first-fit-decreasing
//!    onto a fresh instance); zones by round-robin within the limits; then top up zones until
//!    the zone-balance rule holds.
//! 3. MILP (feature `milp`): integer counts `n[t][z]` of each type per zone and `a[s][t]` tasks
//!    of each shape per type, with per-type capacity in every dimension (GPU as device
//!    shares), a per-instance fit count (`a[s][t] <= fit(s, t) * n[t]`), pool limits and the
//!    zone-balance rule; minimise dollars per hour; warm-started from the greedy answer. The
//!    MILP's answer is then packed for real; what does not fit is added to the demand and the
//!    MILP solved again (repair loop, [`MixConfig::repair_rounds_max`] rounds), and anything
//!    still left after that gets greedy instances on top.
//! 4. The cheapest answer that places the most tasks wins; [`MixPlan::cost_lower_bound_micro_usd`]
//!    carries the MILP's proven bound (the aggregate model is a relaxation of the real one, so
//!    its bound holds for every mix).
//!
//! Pure and deterministic: no IO, no clock (HiGHS' time limit aside, see
//! [`crate::milp`]'s notes on determinism), ties broken by the request's type and zone order.

use crate::bounds::NodeKind;
use crate::catalog::{InstanceType, MICRO_USD_PER_USD};
use crate::resources::{
    GpuDemand, GpuModel, Resources, TaskShape, DIMENSION_NAMES, GPU_MILLI_PER_DEVICE,
};
use std::collections::{BTreeMap, BTreeSet};

/// How zone counts must stay balanced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZoneBalance {
    /// No rule.
    #[default]
    None,
    /// For every type, the count in the fullest zone minus the emptiest is at most `max_skew`.
    PerType { max_skew: u32 },
    /// The total count over types, fullest zone minus emptiest, is at most `max_skew`.
    Total { max_skew: u32 },
}

/// Pool limits on launches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixLimits {
    /// At most this many of any one type in any one zone.
    pub type_zone_max: Option<u32>,
    /// Per type, over all zones.
    pub type_max: BTreeMap<String, u32>,
    /// Per zone, over all types.
    pub zone_max: BTreeMap<String, u32>,
    /// Over everything (the pool's size limit).
    pub total_max: Option<u32>,
}

/// What to provision for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixRequest {
    /// Pending demand: shapes with counts.
    pub demand: Vec<(TaskShape, u32)>,
    /// The types that may be launched (a catalogue subset), in preference order for ties.
    pub types: Vec<InstanceType>,
    /// Zones, in order for ties.
    pub zones: Vec<String>,
    pub limits: MixLimits,
    pub zone_balance: ZoneBalance,
}

/// Which method produced a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MixMethod {
    /// Greedy only (the `milp` feature is off, or it was asked for).
    Greedy,
    /// The MILP's answer, verified by packing (with repair rounds when needed).
    Milp,
}

/// How the optimiser runs.
#[derive(Clone, Debug, PartialEq)]
pub struct MixConfig {
    /// Greedy only, even when the `milp` feature is on.
    pub greedy_only: bool,
    /// HiGHS time limit per solve (wall clock: see the determinism note in [`crate::milp`]).
    pub time_limit_ms: u64,
    /// Relative MIP gap at which HiGHS stops.
    pub mip_gap: f64,
    /// MILP re-solves after a failed packing check.
    pub repair_rounds_max: u32,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            greedy_only: false,
            time_limit_ms: 10_000,
            mip_gap: 1e-4,
            repair_rounds_max: 6,
        }
    }
}

/// `count` instances of a type in a zone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Launch {
    pub instance_type: String,
    pub zone: String,
    pub count: u32,
}

/// Why demand is left out of a mix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MixReason {
    /// No listed type can host one task of this shape, even empty. The text says which
    /// dimension is short on the closest type.
    NoTypeFits(String),
    /// Some type could host it, but the pool limits or the zone-balance rule leave no room.
    LimitsReached,
}

/// Demand left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaceable {
    pub shape: TaskShape,
    pub count: u32,
    pub reason: MixReason,
}

/// One launched instance and what the packing check put on it (the witness that the demand
/// fits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedInstance {
    pub instance_type: String,
    pub zone: String,
    /// (index into the request's `demand`, count).
    pub tasks: Vec<(usize, u32)>,
    /// Scalar resources used.
    pub used: Resources,
    /// Milli-GPU used per device.
    pub gpu_used_milli: Vec<u16>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub struct MixPlan {
    /// Sorted by (type order, zone order); counts > 0.
    pub launches: Vec<Launch>,
    pub cost_per_hour_micro_usd: u64,
    pub unplaceable: Vec<Unplaceable>,
    pub method: MixMethod,
    /// A proven lower bound on the price of any mix hosting the placeable demand (MILP only).
    pub cost_lower_bound_micro_usd: Option<u64>,
    /// The greedy answer's price, for comparison.
    pub greedy_cost_per_hour_micro_usd: u64,
    /// MILP repair rounds used (0 when the first answer packed).
    pub repair_rounds: u32,
    /// The packing that proves the fit.
    pub instances: Vec<PackedInstance>,
}

impl MixPlan {
    pub fn cost_per_hour_usd(&self) -> f64 {
        self.cost_per_hour_micro_usd as f64 / MICRO_USD_PER_USD as f64
    }

    /// Instances launched in total.
    pub fn instance_count(&self) -> u64 {
        self.launches.iter().map(|l| u64::from(l.count)).sum()
    }

    /// Tasks left out.
    pub fn unplaceable_count(&self) -> u64 {
        self.unplaceable.iter().map(|u| u64::from(u.count)).sum()
    }
}

/// A request that cannot be answered as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> MixError {
    MixError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

// ------------------------------------------------------------------------------------------
// The packer: instances with device-level GPUs, first-fit-decreasing.
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Bin {
    type_idx: usize,
    zone_idx: usize,
    free: Resources,
    gpu_free: Vec<u16>,
    model: Option<GpuModel>,
    tasks: BTreeMap<usize, u32>,
}

impl Bin {
    fn new(t: &InstanceType, type_idx: usize, zone_idx: usize) -> Self {
        Bin {
            type_idx,
            zone_idx,
            free: t.capacity(),
            gpu_free: vec![GPU_MILLI_PER_DEVICE as u16; usize::from(t.gpu_count())],
            model: t.gpu_model().cloned(),
            tasks: BTreeMap::new(),
        }
    }

    /// Places one task of `shape` (index `s`) if it fits; devices: whole ones lowest index
    /// first, a fraction on the fullest device that still has room (best fit).
    fn try_place(&mut self, s: usize, shape: &TaskShape) -> bool {
        let Some(free) = self.free.checked_sub(&shape.resources) else {
            return false;
        };
        let model_ok = |m: &Option<GpuModel>| m.as_ref().is_some_and(|m| shape.accepts_model(m));
        match shape.gpu {
            GpuDemand::None => {}
            GpuDemand::Whole(k) => {
                if !model_ok(&self.model) {
                    return false;
                }
                let idle: Vec<usize> = (0..self.gpu_free.len())
                    .filter(|&d| self.gpu_free[d] == GPU_MILLI_PER_DEVICE as u16)
                    .collect();
                if idle.len() < usize::from(k) {
                    return false;
                }
                for &d in &idle[..usize::from(k)] {
                    self.gpu_free[d] = 0;
                }
            }
            GpuDemand::Milli(m) => {
                if !model_ok(&self.model) {
                    return false;
                }
                let best = (0..self.gpu_free.len())
                    .filter(|&d| self.gpu_free[d] >= m)
                    .min_by_key(|&d| (self.gpu_free[d], d));
                match best {
                    Some(d) => self.gpu_free[d] -= m,
                    None => return false,
                }
            }
        }
        self.free = free;
        *self.tasks.entry(s).or_insert(0) += 1;
        true
    }
}

/// Reference capacities for "dominant share": the largest of each dimension over the types
/// (GPU as milli over all devices).
fn reference_capacity(types: &[InstanceType]) -> [u64; 5] {
    let mut r = [1u64; 5];
    for t in types {
        let c = t.capacity().as_array();
        for d in 0..4 {
            r[d] = r[d].max(c[d]);
        }
        r[4] = r[4].max(u64::from(t.gpu_count()) * u64::from(GPU_MILLI_PER_DEVICE));
    }
    r
}

fn dominant_share(shape: &TaskShape, reference: &[u64; 5]) -> f64 {
    let a = shape.resources.as_array();
    let mut m = 0.0f64;
    for d in 0..4 {
        m = m.max(a[d] as f64 / reference[d] as f64);
    }
    m.max(f64::from(shape.gpu.total_milli()) / reference[4] as f64)
}

/// Shape indices in first-fit-decreasing order: GPU tasks first (most constrained), then by
/// dominant share, then by index.
fn ffd_order(demand: &[(TaskShape, u32)], reference: &[u64; 5]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..demand.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (&demand[a].0, &demand[b].0);
        let ga = (u32::from(!sa.gpu.is_none()), sa.gpu.total_milli());
        let gb = (u32::from(!sb.gpu.is_none()), sb.gpu.total_milli());
        gb.cmp(&ga)
            .then_with(|| dominant_share(sb, reference).total_cmp(&dominant_share(sa, reference)))
            .then(a.cmp(&b))
    });
    order
}

/// Packs `counts[s]` tasks of each shape onto `bins` first-fit-decreasing; returns what is
/// left per shape.
fn pack(
    bins: &mut [Bin],
    demand: &[(TaskShape, u32)],
    counts: &[u32],
    order: &[usize],
) -> Vec<u32> {
    let mut left = counts.to_vec();
    for &s in order {
        let shape = &demand[s].0;
        let mut start = 0;
        while left[s] > 0 {
            match (start..bins.len()).find(|&b| bins[b].try_place(s, shape)) {
                Some(b) => {
                    left[s] -= 1;
                    start = b; // earlier bins already refused this shape
                }
                None => break,
            }
        }
    }
    left
}

// ------------------------------------------------------------------------------------------
// Counts, limits and the zone-balance rule.
// ------------------------------------------------------------------------------------------

/// Launch counts `n[t][z]` and the limits they must respect.
#[derive(Clone, Debug)]
struct Counts {
    n: Vec<Vec<u32>>,
}

struct Rules<'a> {
    req: &'a MixRequest,
    type_max: Vec<Option<u32>>,
    zone_max: Vec<Option<u32>>,
}

impl Rules<'_> {
    fn can_add(&self, c: &Counts, t: usize, z: usize) -> bool {
        let l = &self.req.limits;
        let type_total: u32 = c.n[t].iter().sum();
        let zone_total: u32 = c.n.iter().map(|row| row[z]).sum();
        let total: u32 = c.n.iter().flatten().sum();
        l.type_zone_max.is_none_or(|m| c.n[t][z] < m)
            && self.type_max[t].is_none_or(|m| type_total < m)
            && self.zone_max[z].is_none_or(|m| zone_total < m)
            && l.total_max.is_none_or(|m| total < m)
    }

    fn within_limits(&self, c: &Counts) -> bool {
        let l = &self.req.limits;
        let total: u32 = c.n.iter().flatten().sum();
        c.n.iter().enumerate().all(|(t, row)| {
            row.iter().all(|&v| l.type_zone_max.is_none_or(|m| v <= m))
                && self.type_max[t].is_none_or(|m| row.iter().sum::<u32>() <= m)
        }) && (0..self.req.zones.len()).all(|z| {
            self.zone_max[z].is_none_or(|m| c.n.iter().map(|row| row[z]).sum::<u32>() <= m)
        }) && l.total_max.is_none_or(|m| total <= m)
    }

    /// The zone-balance rule's violation: (type or None for total, emptiest zone) to top up.
    fn imbalance(&self, c: &Counts) -> Option<(Option<usize>, usize, usize)> {
        let zones = self.req.zones.len();
        let spread = |v: &[u32]| -> (u32, usize, usize) {
            let (mut lo, mut hi) = (0usize, 0usize);
            for z in 0..v.len() {
                if v[z] < v[lo] {
                    lo = z;
                }
                if v[z] > v[hi] {
                    hi = z;
                }
            }
            (v[hi] - v[lo], lo, hi)
        };
        match self.req.zone_balance {
            ZoneBalance::None => None,
            ZoneBalance::PerType { max_skew } => (0..c.n.len()).find_map(|t| {
                let (s, lo, hi) = spread(&c.n[t]);
                (s > max_skew).then_some((Some(t), lo, hi))
            }),
            ZoneBalance::Total { max_skew } => {
                let totals: Vec<u32> = (0..zones)
                    .map(|z| c.n.iter().map(|row| row[z]).sum())
                    .collect();
                let (s, lo, hi) = spread(&totals);
                (s > max_skew).then_some((None, lo, hi))
            }
        }
    }

    /// The zone a new instance of type `t` goes to: the emptiest under the rule (per type or
    /// total), among zones where limits allow; ties by zone order.
    fn pick_zone(&self, c: &Counts, t: usize) -> Option<usize> {
        (0..self.req.zones.len())
            .filter(|&z| self.can_add(c, t, z))
            .min_by_key(|&z| {
                let total: u32 = c.n.iter().map(|row| row[z]).sum();
                match self.req.zone_balance {
                    ZoneBalance::Total { .. } => (total, c.n[t][z], z),
                    _ => (c.n[t][z], total, z),
                }
            })
    }
}

#[cfg(feature = "milp")]
fn bins_of(req: &MixRequest, c: &Counts) -> Vec<Bin> {
    // Larger (pricier) instances first, so first-fit fills them before the small ones.
    let mut order: Vec<usize> = (0..req.types.len()).collect();
    order.sort_by_key(|&t| (std::cmp::Reverse(req.types[t].price_per_hour_micro_usd), t));
    let mut bins = Vec::new();
    for t in order {
        for z in 0..req.zones.len() {
            for _ in 0..c.n[t][z] {
                bins.push(Bin::new(&req.types[t], t, z));
            }
        }
    }
    bins
}

fn cost_of(req: &MixRequest, c: &Counts) -> u64 {
    c.n.iter()
        .enumerate()
        .map(|(t, row)| req.types[t].price_per_hour_micro_usd * u64::from(row.iter().sum::<u32>()))
        .sum()
}

/// A candidate answer: counts, the bins with the witness packing, what is left.
#[derive(Clone, Debug)]
struct Candidate {
    counts: Counts,
    bins: Vec<Bin>,
    left: Vec<u32>,
    cost: u64,
}

impl Candidate {
    fn left_total(&self) -> u64 {
        self.left.iter().map(|&v| u64::from(v)).sum()
    }
}

// ------------------------------------------------------------------------------------------
// Greedy.
// ------------------------------------------------------------------------------------------

/// Adds instances one at a time for what `bins` do not hold yet (`left`), then tops zones up
/// to the balance rule. Instances that cannot be added because of limits leave their demand
/// in `left`.
fn greedy_extend(
    rules: &Rules<'_>,
    demand: &[(TaskShape, u32)],
    order: &[usize],
    reference: &[u64; 5],
    counts: &mut Counts,
    bins: &mut Vec<Bin>,
    left: &mut [u32],
) {
    let req = rules.req;
    // Shapes that cannot be placed because of limits are skipped from then on.
    let mut blocked: BTreeSet<usize> = BTreeSet::new();
    while let Some(&first) = order
        .iter()
        .find(|&&s| left[s] > 0 && !blocked.contains(&s))
    {
        let first_shape = &demand[first].0;
        // (score, value, type, zone, bin, left after): lowest price per unit of dominant
        // resource; ties go to the instance taking more (fewer instances against the limits),
        // then to the request's type order.
        let mut best: Option<(f64, f64, usize, usize, Bin, Vec<u32>)> = None;
        for (t, ty) in req.types.iter().enumerate() {
            if !NodeKind::from_instance_type(ty).can_host(first_shape) {
                continue;
            }
            let Some(z) = rules.pick_zone(counts, t) else {
                continue;
            };
            let mut bin = Bin::new(ty, t, z);
            let mut trial = left.to_vec();
            for &s in order {
                if blocked.contains(&s) {
                    continue;
                }
                while trial[s] > 0 && bin.try_place(s, &demand[s].0) {
                    trial[s] -= 1;
                }
            }
            let value: f64 = (0..demand.len())
                .map(|s| {
                    f64::from(left[s] - trial[s])
                        * dominant_share(&demand[s].0, reference).max(1e-6)
                })
                .sum();
            if value <= 0.0 {
                continue;
            }
            let score = ty.price_per_hour_micro_usd as f64 / value;
            let better = match &best {
                None => true,
                Some((bs, bv, ..)) => score < *bs || (score == *bs && value > *bv),
            };
            if better {
                best = Some((score, value, t, z, bin, trial));
            }
        }
        match best {
            Some((_, _, t, z, bin, trial)) => {
                counts.n[t][z] += 1;
                bins.push(bin);
                left.copy_from_slice(&trial);
            }
            None => {
                blocked.insert(first);
            }
        }
    }
    balance_fixup(rules, demand, order, counts, bins, left);
}

/// Tops zones up until the balance rule holds. When limits forbid a top-up, removes the
/// instance of the fullest zone with the fewest tasks instead; its tasks go back to `left`
/// (and are re-packed onto the remaining bins where they fit).
fn balance_fixup(
    rules: &Rules<'_>,
    demand: &[(TaskShape, u32)],
    order: &[usize],
    counts: &mut Counts,
    bins: &mut Vec<Bin>,
    left: &mut [u32],
) {
    let req = rules.req;
    while let Some((t_opt, lo, hi)) = rules.imbalance(counts) {
        // Top up the emptiest zone: with the same type (per-type rule) or the cheapest type
        // the limits allow (total rule).
        let add = match t_opt {
            Some(t) => rules.can_add(counts, t, lo).then_some(t),
            None => (0..req.types.len())
                .filter(|&t| rules.can_add(counts, t, lo))
                .min_by_key(|&t| (req.types[t].price_per_hour_micro_usd, t)),
        };
        if let Some(t) = add {
            counts.n[t][lo] += 1;
            let mut bin = Bin::new(&req.types[t], t, lo);
            for &s in order {
                while left[s] > 0 && bin.try_place(s, &demand[s].0) {
                    left[s] -= 1;
                }
            }
            bins.push(bin);
            continue;
        }
        // Remove from the fullest zone: the bin of that (type, zone) with the fewest tasks.
        let victim = (0..bins.len())
            .filter(|&b| bins[b].zone_idx == hi && t_opt.is_none_or(|t| bins[b].type_idx == t))
            .min_by_key(|&b| (bins[b].tasks.values().sum::<u32>(), std::cmp::Reverse(b)));
        let Some(b) = victim else { break };
        let removed = bins.remove(b);
        counts.n[removed.type_idx][removed.zone_idx] -= 1;
        for (s, c) in removed.tasks {
            left[s] += c;
        }
        let repacked = pack(bins, demand, left, order);
        left.copy_from_slice(&repacked);
    }
}

fn greedy(
    rules: &Rules<'_>,
    demand: &[(TaskShape, u32)],
    counts0: &[u32],
    order: &[usize],
    reference: &[u64; 5],
) -> Candidate {
    let req = rules.req;
    let mut counts = Counts {
        n: vec![vec![0; req.zones.len()]; req.types.len()],
    };
    let mut bins = Vec::new();
    let mut left = counts0.to_vec();
    greedy_extend(
        rules,
        demand,
        order,
        reference,
        &mut counts,
        &mut bins,
        &mut left,
    );
    let cost = cost_of(req, &counts);
    Candidate {
        counts,
        bins,
        left,
        cost,
    }
}

// ------------------------------------------------------------------------------------------
// MILP.
// ------------------------------------------------------------------------------------------

/// How many tasks of `shape` fit on one empty instance of `t` (0 when none).
pub fn fit_count(shape: &TaskShape, t: &InstanceType) -> u64 {
    if !NodeKind::from_instance_type(t).can_host(shape) {
        return 0;
    }
    let cap = t.capacity().as_array();
    let dem = shape.resources.as_array();
    let mut k = u64::MAX;
    for (c, d) in cap.iter().zip(dem.iter()).take(4) {
        if let Some(n) = c.checked_div(*d) {
            k = k.min(n);
        }
    }
    let g = u64::from(t.gpu_count());
    match shape.gpu {
        GpuDemand::None => {}
        GpuDemand::Whole(w) => k = k.min(g / u64::from(w)),
        GpuDemand::Milli(m) => k = k.min(g * (u64::from(GPU_MILLI_PER_DEVICE) / u64::from(m))),
    }
    k
}

#[cfg(feature = "milp")]
// Index loops over parallel arrays (shapes x types x zones), as the formulation is written.
#[allow(clippy::needless_range_loop)]
mod milp_model {
    use super::*;
    use crate::bounds::lp::device_share;
    use crate::milp::highs_run::{integral, run, Columns, RunOptions, RunStatus};
    use good_lp::{highs, variable, Expression, SolverModel, Variable};

    pub(super) struct MilpAnswer {
        pub counts: Counts,
        /// A proven lower bound on the price of any mix placing all of the model's demand.
        pub dual_bound_usd: Option<f64>,
    }

    /// Solves the aggregate mix MILP for `counts[s]` tasks per shape; warm start `warm` (counts
    /// and the witness assignment of the greedy answer) when it is feasible for the model.
    pub(super) fn solve(
        rules: &Rules<'_>,
        demand: &[(TaskShape, u32)],
        counts: &[u32],
        warm: Option<(&Counts, &[Bin])>,
        cfg: &MixConfig,
    ) -> Option<MilpAnswer> {
        let req = rules.req;
        let (nt, nz) = (req.types.len(), req.zones.len());
        let mut vars = Columns::new();
        let n: Vec<Vec<Variable>> = (0..nt)
            .map(|_| {
                (0..nz)
                    .map(|_| {
                        let v = variable().integer().min(0);
                        match req.limits.type_zone_max {
                            Some(m) => vars.add(v.max(f64::from(m))),
                            None => vars.add(v),
                        }
                    })
                    .collect()
            })
            .collect();
        // Per-instance fit, capped at the count (a zero-size shape fits without limit).
        let fit: Vec<Vec<u64>> = (0..demand.len())
            .map(|s| {
                req.types
                    .iter()
                    .map(|t| fit_count(&demand[s].0, t).min(u64::from(counts[s])))
                    .collect()
            })
            .collect();
        let a: Vec<Vec<Option<Variable>>> = (0..demand.len())
            .map(|s| {
                (0..nt)
                    .map(|t| {
                        (counts[s] > 0 && fit[s][t] > 0).then(|| {
                            vars.add(variable().integer().min(0).max(f64::from(counts[s])))
                        })
                    })
                    .collect()
            })
            .collect();
        // Unplaced tasks per shape, at a price above any mix worth having: a mix that places
        // everything needs at most one instance per task per zone (zone balance), so it costs
        // at most `BIG - 1`.
        let r: Vec<Option<Variable>> = (0..demand.len())
            .map(|s| {
                (counts[s] > 0)
                    .then(|| vars.add(variable().integer().min(0).max(f64::from(counts[s]))))
            })
            .collect();
        let price_max = req
            .types
            .iter()
            .map(|t| t.price_per_hour_micro_usd)
            .max()
            .unwrap_or(0) as f64
            / MICRO_USD_PER_USD as f64;
        let tasks_total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        let big = 1.0 + price_max * tasks_total * nz as f64;
        let mut objective: Expression = (0..nt)
            .flat_map(|t| {
                let price = req.types[t].price_per_hour_micro_usd as f64 / MICRO_USD_PER_USD as f64;
                n[t].iter().map(move |&v| price * v)
            })
            .sum();
        for v in r.iter().flatten() {
            objective.add_mul(big, *v);
        }
        let (vars, col) = vars.into_parts();
        let mut p = vars.minimise(objective).using(highs);
        let n_t = |t: usize| -> Expression { n[t].iter().copied().sum() };
        for s in 0..demand.len() {
            let Some(rv) = r[s] else { continue };
            let row: Expression = a[s].iter().flatten().copied().sum();
            p.add_constraint((row + rv).eq(f64::from(counts[s])));
        }
        for t in 0..nt {
            let ty = &req.types[t];
            let cap = ty.capacity().as_array();
            for d in 0..5 {
                let mut row = Expression::default();
                let mut any = false;
                for s in 0..demand.len() {
                    let Some(v) = a[s][t] else { continue };
                    let share = if d < 4 {
                        demand[s].0.resources.as_array()[d] as f64 / cap[d].max(1) as f64
                    } else {
                        device_share(&demand[s].0) / f64::from(ty.gpu_count().max(1))
                    };
                    if share > 0.0 {
                        row.add_mul(share, v);
                        any = true;
                    }
                }
                if any {
                    p.add_constraint((row - n_t(t)).leq(0.0));
                }
            }
            for s in 0..demand.len() {
                if let Some(v) = a[s][t] {
                    let mut row = Expression::default();
                    row += v;
                    row -= n_t(t) * fit[s][t] as f64;
                    p.add_constraint(row.leq(0.0));
                }
            }
            if let Some(m) = rules.type_max[t] {
                p.add_constraint(n_t(t).leq(f64::from(m)));
            }
        }
        for z in 0..nz {
            if let Some(m) = rules.zone_max[z] {
                let row: Expression = (0..nt).map(|t| n[t][z]).sum();
                p.add_constraint(row.leq(f64::from(m)));
            }
        }
        if let Some(m) = req.limits.total_max {
            let row: Expression = n.iter().flatten().copied().sum();
            p.add_constraint(row.leq(f64::from(m)));
        }
        match req.zone_balance {
            ZoneBalance::None => {}
            ZoneBalance::PerType { max_skew } => {
                for t in 0..nt {
                    for z1 in 0..nz {
                        for z2 in 0..nz {
                            if z1 != z2 {
                                p.add_constraint((n[t][z1] - n[t][z2]).leq(f64::from(max_skew)));
                            }
                        }
                    }
                }
            }
            ZoneBalance::Total { max_skew } => {
                for z1 in 0..nz {
                    for z2 in 0..nz {
                        if z1 != z2 {
                            let d: Expression = (0..nt).map(|t| n[t][z1]).sum::<Expression>()
                                - (0..nt).map(|t| n[t][z2]).sum::<Expression>();
                            p.add_constraint(d.leq(f64::from(max_skew)));
                        }
                    }
                }
            }
        }
        // Warm start: the greedy counts and, per (shape, type), the tasks its packing put there.
        let warm_values = warm.and_then(|(c, bins)| {
            let mut per: BTreeMap<(usize, usize), u64> = BTreeMap::new();
            for b in bins {
                for (&s, &k) in &b.tasks {
                    *per.entry((s, b.type_idx)).or_insert(0) += u64::from(k);
                }
            }
            // Only when the packing places no more than the demand of this model.
            let covered: Vec<u64> = (0..demand.len())
                .map(|s| {
                    (0..nt)
                        .map(|t| per.get(&(s, t)).copied().unwrap_or(0))
                        .sum()
                })
                .collect();
            if (0..demand.len()).any(|s| covered[s] > u64::from(counts[s])) {
                return None;
            }
            let mut values = Vec::new();
            for t in 0..nt {
                for z in 0..nz {
                    values.push(f64::from(c.n[t][z]));
                }
            }
            for s in 0..demand.len() {
                for t in 0..nt {
                    if a[s][t].is_some() {
                        values.push(per.get(&(s, t)).copied().unwrap_or(0) as f64);
                    } else if per.contains_key(&(s, t)) {
                        return None;
                    }
                }
            }
            for s in 0..demand.len() {
                if r[s].is_some() {
                    values.push((u64::from(counts[s]) - covered[s]) as f64);
                }
            }
            Some(values)
        });
        let options = RunOptions {
            time_limit_s: cfg.time_limit_ms as f64 / 1000.0,
            mip_rel_gap: cfg.mip_gap,
            threads: 1,
            node_limit: None,
            seed: 0,
        };
        let run_result = run(p, &options, warm_values.as_deref());
        if !matches!(run_result.status, RunStatus::Optimal | RunStatus::Limit) {
            return None;
        }
        let mut out = Counts {
            n: vec![vec![0; nz]; nt],
        };
        for t in 0..nt {
            for z in 0..nz {
                let v = integral(run_result.values[col.of(n[t][z])])?;
                out.n[t][z] = u32::try_from(v).ok()?;
            }
        }
        let mut unplaced = 0i64;
        for v in r.iter().flatten() {
            unplaced += integral(run_result.values[col.of(*v)])?;
        }
        // The bound is a bound on the price only when placing everything is feasible in the
        // model (then every solution leaving a task out costs more than BIG).
        let dual_bound_usd =
            (unplaced == 0 && run_result.dual_bound < big).then_some(run_result.dual_bound);
        Some(MilpAnswer {
            counts: out,
            dual_bound_usd,
        })
    }
}

// ------------------------------------------------------------------------------------------
// The entry point.
// ------------------------------------------------------------------------------------------

/// The MILP's answer, verified by packing, repaired when it does not pack: the candidate, the
/// repair rounds used and the proven price bound (micro-dollars).
#[cfg(feature = "milp")]
fn milp_candidate(
    rules: &Rules<'_>,
    demand: &[(TaskShape, u32)],
    counts0: &[u32],
    order: &[usize],
    reference: &[u64; 5],
    greedy: &Candidate,
    cfg: &MixConfig,
) -> MilpFound {
    let req = rules.req;
    let mut want = counts0.to_vec();
    let mut round = 0u32;
    let first = milp_model::solve(
        rules,
        demand,
        &want,
        Some((&greedy.counts, greedy.bins.as_slice())),
        cfg,
    )?;
    // The first round's model is a relaxation of the real problem: its bound holds for any mix.
    let bound = first
        .dual_bound_usd
        .map(|b| (b * MICRO_USD_PER_USD as f64 - 1e-3).ceil().max(0.0) as u64);
    let mut answer = first;
    loop {
        let mut bins = bins_of(req, &answer.counts);
        let mut left = pack(&mut bins, demand, counts0, order);
        let mut counts = answer.counts.clone();
        if left.iter().any(|&v| v > 0) {
            if round < cfg.repair_rounds_max {
                round += 1;
                for s in 0..want.len() {
                    want[s] += left[s];
                }
                if let Some(next) = milp_model::solve(rules, demand, &want, None, cfg) {
                    answer = next;
                    continue;
                }
            }
            // Out of rounds (or the enlarged model failed): greedy instances on top.
            greedy_extend(
                rules,
                demand,
                order,
                reference,
                &mut counts,
                &mut bins,
                &mut left,
            );
        }
        let cost = cost_of(req, &counts);
        debug_assert!(rules.within_limits(&counts));
        return Some((
            Candidate {
                counts,
                bins,
                left,
                cost,
            },
            round,
            bound,
        ));
    }
}

/// A mix found by the MILP: the candidate, its round and the solver's bound when it has one.
type MilpFound = Option<(Candidate, u32, Option<u64>)>;

#[cfg(not(feature = "milp"))]
fn milp_candidate(
    _rules: &Rules<'_>,
    _demand: &[(TaskShape, u32)],
    _counts0: &[u32],
    _order: &[usize],
    _reference: &[u64; 5],
    _greedy: &Candidate,
    _cfg: &MixConfig,
) -> MilpFound {
    None
}

/// Per-zone and per-type limits, `None` where unlimited.
type Limits = (Vec<Option<u32>>, Vec<Option<u32>>);

fn validate(req: &MixRequest) -> Result<Limits, MixError> {
    if req.zones.is_empty() {
        return Err(invalid("zones", "no zones"));
    }
    let mut seen = BTreeSet::new();
    for (i, z) in req.zones.iter().enumerate() {
        if !seen.insert(z.as_str()) {
            return Err(invalid(
                format!("zones[{i}]"),
                format!("duplicate zone {z:?}"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, t) in req.types.iter().enumerate() {
        if !seen.insert(t.name.as_str()) {
            return Err(invalid(
                format!("types[{i}]"),
                format!("duplicate type {:?}", t.name),
            ));
        }
    }
    for (i, (shape, _)) in req.demand.iter().enumerate() {
        shape
            .gpu
            .validate()
            .map_err(|m| invalid(format!("demand[{i}].gpu"), m))?;
    }
    for name in req.limits.type_max.keys() {
        if !req.types.iter().any(|t| &t.name == name) {
            return Err(invalid(
                format!("limits.type_max[{name:?}]"),
                "not one of the request's types",
            ));
        }
    }
    for name in req.limits.zone_max.keys() {
        if !req.zones.contains(name) {
            return Err(invalid(
                format!("limits.zone_max[{name:?}]"),
                "not one of the request's zones",
            ));
        }
    }
    let type_max = req
        .types
        .iter()
        .map(|t| req.limits.type_max.get(&t.name).copied())
        .collect();
    let zone_max = req
        .zones
        .iter()
        .map(|z| req.limits.zone_max.get(z).copied())
        .collect();
    Ok((type_max, zone_max))
}

/// Why no type hosts `shape`: the closest type's shortest dimension.
fn why_no_type(shape: &TaskShape, types: &[InstanceType]) -> String {
    if types.is_empty() {
        return "no instance types given".to_string();
    }
    let gpus_needed: u8 = match shape.gpu {
        GpuDemand::None => 0,
        GpuDemand::Whole(k) => k,
        GpuDemand::Milli(_) => 1,
    };
    if gpus_needed > 0 {
        let ok: Vec<&InstanceType> = types
            .iter()
            .filter(|t| t.gpu_model().is_some_and(|m| shape.accepts_model(m)))
            .collect();
        if ok.is_empty() {
            return if shape.gpu_models.is_empty() {
                "no type has GPUs".to_string()
            } else {
                let names: Vec<&str> = shape.gpu_models.iter().map(GpuModel::as_str).collect();
                format!("no type has GPU model {}", names.join("|"))
            };
        }
        let max = ok.iter().map(|t| t.gpu_count()).max().unwrap_or(0);
        if max < gpus_needed {
            return format!(
                "needs {gpus_needed} GPUs; the most any type with an accepted model has is {max}"
            );
        }
    }
    for (d, dim_name) in DIMENSION_NAMES.iter().enumerate().take(4) {
        let need = shape.resources.as_array()[d];
        let max = types
            .iter()
            .map(|t| t.capacity().as_array()[d])
            .max()
            .unwrap_or(0);
        if need > max {
            return format!("needs {need} {}; the largest type has {max}", dim_name);
        }
    }
    "no single type has all of cpu, memory, disk, network and GPU it needs".to_string()
}

/// Chooses instances to launch for `req.demand`. See the module doc for the pipeline.
pub fn plan_mix(req: &MixRequest, cfg: &MixConfig) -> Result<MixPlan, MixError> {
    let (type_max, zone_max) = validate(req)?;
    let rules = Rules {
        req,
        type_max,
        zone_max,
    };
    let demand = &req.demand;
    let reference = reference_capacity(&req.types);
    let order = ffd_order(demand, &reference);

    let mut unplaceable = Vec::new();
    let mut counts0: Vec<u32> = demand.iter().map(|(_, c)| *c).collect();
    for (s, (shape, c)) in demand.iter().enumerate() {
        if *c > 0
            && !req
                .types
                .iter()
                .any(|t| NodeKind::from_instance_type(t).can_host(shape))
        {
            unplaceable.push(Unplaceable {
                shape: shape.clone(),
                count: *c,
                reason: MixReason::NoTypeFits(why_no_type(shape, &req.types)),
            });
            counts0[s] = 0;
        }
    }

    let greedy_c = greedy(&rules, demand, &counts0, &order, &reference);
    let greedy_cost = greedy_c.cost;
    let mut best = (greedy_c, MixMethod::Greedy, 0u32);
    let mut bound: Option<u64> = None;
    if !cfg.greedy_only && counts0.iter().any(|&c| c > 0) {
        if let Some((cand, rounds, b)) =
            milp_candidate(&rules, demand, &counts0, &order, &reference, &best.0, cfg)
        {
            bound = b;
            let key = |c: &Candidate| (c.left_total(), c.cost);
            if key(&cand) <= key(&best.0) {
                best = (cand, MixMethod::Milp, rounds);
            }
        }
    }

    let (cand, method, repair_rounds) = best;
    assert!(
        rules.within_limits(&cand.counts),
        "a mix breaks the pool limits"
    );
    assert!(
        rules.imbalance(&cand.counts).is_none() || cand.bins.is_empty(),
        "a mix breaks the zone-balance rule"
    );
    for (s, &l) in cand.left.iter().enumerate() {
        if l > 0 {
            unplaceable.push(Unplaceable {
                shape: demand[s].0.clone(),
                count: l,
                reason: MixReason::LimitsReached,
            });
        }
    }
    let mut launches = Vec::new();
    for (t, row) in cand.counts.n.iter().enumerate() {
        for (z, &c) in row.iter().enumerate() {
            if c > 0 {
                launches.push(Launch {
                    instance_type: req.types[t].name.clone(),
                    zone: req.zones[z].clone(),
                    count: c,
                });
            }
        }
    }
    let mut bins = cand.bins;
    bins.sort_by_key(|b| (b.type_idx, b.zone_idx));
    let instances = bins
        .into_iter()
        .map(|b| {
            let ty = &req.types[b.type_idx];
            let used = ty
                .capacity()
                .checked_sub(&b.free)
                .expect("free never exceeds capacity");
            PackedInstance {
                instance_type: ty.name.clone(),
                zone: req.zones[b.zone_idx].clone(),
                tasks: b.tasks.into_iter().collect(),
                used,
                gpu_used_milli: b
                    .gpu_free
                    .iter()
                    .map(|&f| GPU_MILLI_PER_DEVICE as u16 - f)
                    .collect(),
            }
        })
        .collect();
    Ok(MixPlan {
        launches,
        cost_per_hour_micro_usd: cand.cost,
        unplaceable,
        method,
        cost_lower_bound_micro_usd: bound,
        greedy_cost_per_hour_micro_usd: greedy_cost,
        repair_rounds,
        instances,
    })
}
