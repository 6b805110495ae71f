//! Placement: which node (and which GPU devices) each task gets.
//!
//! The whole pipeline is [`Placer::decide`], one function, in order:
//! filters (with reasons) -> scores -> normalise (each scorer to 0..=100) -> weighted sum ->
//! select (ties: lowest node id, or a seeded pick).
//!
//! [`place`] / [`Placer::place`] place a batch: each task sees the tasks placed before it in the
//! same batch (the view is updated as the batch goes), gangs are all-or-nothing. The view passed
//! in is left holding the plan's assignments (Kubernetes' "assume"): a controller keeping a
//! long-lived [`ClusterView`] releases an assignment whose launch fails. To plan without
//! committing, place on a clone.

use crate::classes::NodeClasses;
use crate::frag::{FragModel, ModelMask, TaskTypes, TypeKey, TYPICAL_COVERAGE_DEFAULT};
use crate::ids::{JobId, NodeId};
use crate::job::{Constraint, Constraints, Tier};
use crate::plan::{Assignment, FilterReason, GpuSlice, Plan, ReasonCounts, TaskRequest, Unplaced};
use crate::resources::{GpuDemand, Resources, TaskShape, GPU_MILLI_PER_DEVICE};
use crate::spec::{parse, SpecError, SpecFormat};
use crate::view::{whole_devices, ClusterView, NO_MODEL};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One scoring function. Each gives every feasible node a score in 0..=100, higher is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScorerKind {
    /// Lowest node index first: `100 * (1 - index / nodes)`.
    FirstFit,
    /// Least leftover after placing, on every dimension the task asks for (CPU, memory, disk,
    /// network, GPU), each normalised by the largest node's capacity:
    /// `100 * (1 - mean(leftover_d / capacity_max_d))`.
    BestFit,
    /// Most leftover (spread): `100 * mean(leftover_d / capacity_max_d)`.
    WorstFit,
    /// Tetris' alignment of the request with the node's free vector, both normalised by the
    /// node's capacity: `100 * sum(r_d * f_d) / sum(r_d)`.
    DotProduct,
    /// Prefer partially used GPUs, then partially used nodes, then idle nodes (the FGD paper's
    /// "GpuPacking" baseline): shared device 50..=100, idle device on a used node 33..=50, idle
    /// node 0..=33.
    GpuPacking,
    /// Prefer nodes already hosting tasks of the same GPU request type (the paper's
    /// "GpuClustering"): only that type 75..=100, that type among others 50..=75, idle node
    /// 25..=50, other types 0..=25; within a band, fuller nodes first.
    GpuClustering,
    /// Uniform in 0..100 from the seeded RNG.
    Random,
    /// Fragmentation gradient descent: `floor(100 * sigmoid(-delta / 1000))` where `delta` is the
    /// growth of the node's fragmentation (milli-GPU) against the typical task types. The score
    /// is an integer, as in the paper's artifact (a Kubernetes score plugin returns an `int64`):
    /// growths within the same point (about 40 milli-GPU near zero, and every decrease under
    /// ~40) tie, and the tie-break decides. A fractional share takes the device with the best
    /// score (the lowest index among equals), as the artifact's GPU selection does.
    Fgd,
    /// FGD on a fragmentation measure that also counts the GPUs the node's CPU cannot feed
    /// (see `FragModel::node_frag_fed`): same integer score, same device choice.
    FgdCpu,
    /// The job's soft constraints: the mean over them of 100 when satisfied, graded otherwise
    /// (zone balance: by the zone's task count; unique host: `100 / (1 + tasks here)`;
    /// attributes: 0 or 100). 100 when the job has none.
    SoftConstraints,
}

impl ScorerKind {
    pub const ALL: [ScorerKind; 10] = [
        ScorerKind::FirstFit,
        ScorerKind::BestFit,
        ScorerKind::WorstFit,
        ScorerKind::DotProduct,
        ScorerKind::GpuPacking,
        ScorerKind::GpuClustering,
        ScorerKind::Random,
        ScorerKind::Fgd,
        ScorerKind::FgdCpu,
        ScorerKind::SoftConstraints,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            ScorerKind::FirstFit => "first_fit",
            ScorerKind::BestFit => "best_fit",
            ScorerKind::WorstFit => "worst_fit",
            ScorerKind::DotProduct => "dot_product",
            ScorerKind::GpuPacking => "gpu_packing",
            ScorerKind::GpuClustering => "gpu_clustering",
            ScorerKind::Random => "random",
            ScorerKind::Fgd => "fgd",
            ScorerKind::FgdCpu => "fgd_cpu",
            ScorerKind::SoftConstraints => "soft_constraints",
        }
    }
}

/// The number of scorer kinds.
const KINDS: usize = ScorerKind::ALL.len();

/// A scorer with its weight. In TOML: `{ scorer = "fgd", weight = 1.0 }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedScorer {
    pub scorer: ScorerKind,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// How equal best scores are decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// The lowest node id wins.
    #[default]
    LowestNode,
    /// A uniform pick among the tied nodes, from the seeded RNG (like Kubernetes'
    /// `selectHost`).
    Random,
}

/// A placement policy. In TOML:
///
/// ```toml
/// name = "fgd"
/// scorers = [{ scorer = "fgd", weight = 1.0 }, { scorer = "soft_constraints", weight = 0.1 }]
/// tie_break = "lowest_node"
/// seed = 42
/// [tier_pools]
/// critical = ["reserved"]   # critical tasks only on nodes of pool "reserved"; absent/empty = any
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub name: String,
    pub scorers: Vec<WeightedScorer>,
    /// Pools each tier may use; a tier absent or mapped to an empty list may use any pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tier_pools: BTreeMap<Tier, Vec<String>>,
    /// The seed drivers create the placement RNG from ([`Policy::rng`]).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub tie_break: TieBreak,
    /// Secondary scorers, consulted only between nodes whose `scorers` sum ties (a
    /// lexicographic order: the primary score is never traded against these); `tie_break`
    /// decides what is still tied after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tie_scorers: Vec<WeightedScorer>,
    /// Share of tasks the typical task types cover (FGD), 0 < coverage <= 1.
    #[serde(default = "default_coverage")]
    pub typical_coverage: f64,
    /// How task shapes group into typical types (FGD).
    #[serde(default)]
    pub typical_key: TypeKey,
}

fn default_coverage() -> f64 {
    TYPICAL_COVERAGE_DEFAULT
}

/// A policy is unusable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlaceError {
    #[error("scorers[{index}].weight: {weight} is not a finite number >= 0")]
    BadWeight { index: usize, weight: f64 },
    #[error("tie_scorers[{index}].weight: {weight} is not a finite number >= 0")]
    BadTieWeight { index: usize, weight: f64 },
    #[error("scorers: no scorer with a positive weight")]
    NoScorers,
    #[error("typical_coverage: {0} is not in (0, 1]")]
    BadCoverage(f64),
    #[error("unknown policy preset {0:?} (known: {known})", known = Policy::PRESETS.join(", "))]
    UnknownPreset(String),
    #[error("{0}")]
    Spec(#[from] SpecError),
}

impl Policy {
    /// Names accepted by [`Policy::preset`].
    pub const PRESETS: [&'static str; 10] = [
        "first_fit",
        "best_fit",
        "worst_fit",
        "dot_product",
        "gpu_packing",
        "gpu_clustering",
        "random",
        "fgd",
        "fgd_packing",
        "berth",
    ];

    /// A policy of one scorer (plus soft constraints at a small weight).
    pub fn single(scorer: ScorerKind) -> Policy {
        Policy {
            name: scorer.name().to_string(),
            scorers: vec![
                WeightedScorer {
                    scorer,
                    weight: 1.0,
                },
                WeightedScorer {
                    scorer: ScorerKind::SoftConstraints,
                    weight: 0.01,
                },
            ],
            tier_pools: BTreeMap::new(),
            seed: 0,
            tie_break: TieBreak::LowestNode,
            tie_scorers: Vec::new(),
            typical_coverage: TYPICAL_COVERAGE_DEFAULT,
            typical_key: TypeKey::default(),
        }
    }

    /// A named policy: one of the scorers alone, or
    /// - `fgd_packing`: FGD, with GPU packing and best fit as small-weight tie-breakers;
    /// - `berth`: Berth's default (see [`Policy::berth`]).
    pub fn preset(name: &str) -> Result<Policy, PlaceError> {
        let single = |k| Ok(Policy::single(k));
        match name {
            "first_fit" => single(ScorerKind::FirstFit),
            "best_fit" => single(ScorerKind::BestFit),
            "worst_fit" => single(ScorerKind::WorstFit),
            "dot_product" => single(ScorerKind::DotProduct),
            "gpu_packing" => single(ScorerKind::GpuPacking),
            "gpu_clustering" => single(ScorerKind::GpuClustering),
            "random" => single(ScorerKind::Random),
            "fgd" => single(ScorerKind::Fgd),
            "fgd_packing" => {
                let mut p = Policy::single(ScorerKind::Fgd);
                p.name = name.to_string();
                p.scorers.push(WeightedScorer {
                    scorer: ScorerKind::GpuPacking,
                    weight: 0.01,
                });
                p.scorers.push(WeightedScorer {
                    scorer: ScorerKind::BestFit,
                    weight: 0.001,
                });
                Ok(p)
            }
            "berth" => Ok(Policy::berth()),
            other => Err(PlaceError::UnknownPreset(other.to_string())),
        }
    }

    /// Berth's default policy: FGD, and between the nodes FGD's integer score ties, FGD on a
    /// measure that also counts CPU-starved GPUs as fragments ([`ScorerKind::FgdCpu`]),
    /// lexicographically (it never overrides a real FGD difference).
    ///
    /// Why: FGD's score is an integer (one point is ~40 milli-GPU of fragmentation growth), and
    /// its measure only sees CPU at a cliff: a type is blocked when the node's free CPU is under
    /// one instance's need, but eight idle GPUs next to CPU for one task count as eight usable
    /// GPUs. So most decisions tie (CPU-only tasks almost always: they fragment nothing until the
    /// cliff) and fall to the node order. The CPU-aware measure orders those ties by how many idle
    /// GPUs the node's CPU can still feed: CPU-only and CPU-hungry tasks go where CPU is in
    /// surplus (CPU-rich nodes, nodes whose GPUs are taken) and the CPU next to idle GPUs on
    /// CPU-tight nodes is kept for GPU tasks. Measured on openb (10 seeds, GPU allocation at
    /// 100 / 130 % arrived, `solver/tests/experiment_openb.rs`): default trace FGD
    /// 95.31 ± 0.10 / 95.46 ± 0.09 %, this 95.71 ± 0.04 / 95.79 ± 0.03 % (paper's FGD 95.23 %);
    /// `gpuspec33` FGD 87.99 / 94.43 %, this 86.85 / 95.35 %.
    ///
    /// The cost: CPU-rich nodes fill earlier. The few 8-GPU tasks that only fit an empty
    /// 128-core node (5 of 8,152 on openb, not among the typical types) then fail from ~70 %
    /// arrived (80 % arrived: 79.49 % allocated against FGD's 80.01 %), and with GPU-model
    /// constraints (`gpuspec33`) unconstrained tasks take more of the CPU-rich constrained models
    /// early (-1.1 pp at 100 %, +0.9 pp at 130 %). What lost: best fit or GPU packing as the
    /// tie-break (95.15, 93.19 %), the CPU-aware measure as the primary score (95.53 %) or
    /// unrounded (95.52 %), FGD unrounded (94.28 %).
    pub fn berth() -> Policy {
        let mut p = Policy::single(ScorerKind::Fgd);
        p.name = "berth".to_string();
        p.tie_scorers = vec![WeightedScorer {
            scorer: ScorerKind::FgdCpu,
            weight: 1.0,
        }];
        p
    }

    /// Parses a policy from TOML (field-path errors) and validates it.
    pub fn from_toml(text: &str) -> Result<Policy, PlaceError> {
        let p: Policy = parse(text, SpecFormat::Toml)?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), PlaceError> {
        for (index, s) in self.scorers.iter().enumerate() {
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                return Err(PlaceError::BadWeight {
                    index,
                    weight: s.weight,
                });
            }
        }
        if !self.scorers.iter().any(|s| s.weight > 0.0) {
            return Err(PlaceError::NoScorers);
        }
        for (index, s) in self.tie_scorers.iter().enumerate() {
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                return Err(PlaceError::BadTieWeight {
                    index,
                    weight: s.weight,
                });
            }
        }
        if !(self.typical_coverage > 0.0 && self.typical_coverage <= 1.0) {
            return Err(PlaceError::BadCoverage(self.typical_coverage));
        }
        Ok(())
    }

    /// The placement RNG drivers should use: `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }

    pub fn weight_of(&self, kind: ScorerKind) -> f64 {
        self.scorers
            .iter()
            .filter(|s| s.scorer == kind)
            .map(|s| s.weight)
            .sum()
    }

    /// The weight of `kind` among the tie scorers.
    pub fn tie_weight_of(&self, kind: ScorerKind) -> f64 {
        self.tie_scorers
            .iter()
            .filter(|s| s.scorer == kind)
            .map(|s| s.weight)
            .sum()
    }

    /// Whether FGD is among the scorers or the tie scorers (it needs typical task types).
    pub fn uses_fgd(&self) -> bool {
        FGD_KINDS
            .iter()
            .any(|&k| self.weight_of(k) > 0.0 || self.tie_weight_of(k) > 0.0)
    }
}

/// The scorers that measure fragmentation (they need typical task types), in cache order.
const FGD_KINDS: [ScorerKind; 2] = [ScorerKind::Fgd, ScorerKind::FgdCpu];

/// Places a batch with `policy` (typical task types for FGD taken from the batch itself) and
/// leaves the view holding the result. See [`Placer::place`].
pub fn place<R: Rng + ?Sized>(
    view: &mut ClusterView,
    tasks: &[TaskRequest],
    policy: &Policy,
    rng: &mut R,
) -> Result<Plan, PlaceError> {
    let mut placer = Placer::new(policy.clone())?;
    if policy.uses_fgd() {
        placer.set_typical_types(TaskTypes::from_shapes(
            tasks.iter().map(|t| &t.shape),
            policy.typical_coverage,
            policy.typical_key,
        ));
    }
    Ok(placer.place(view, tasks, rng))
}

/// The per-request facts the filters and scorers need, computed once per decision.
struct Request<'a> {
    req: &'a TaskRequest,
    resources: Resources,
    gpu: GpuDemand,
    model_mask: ModelMask,
    exclusive: bool,
    unique_host: bool,
    /// Zones the hard zone balance allows (empty = no zone balance).
    zone_ok: Vec<bool>,
    /// Soft zone-balance score per zone (empty = none).
    zone_soft: Vec<f64>,
    soft_unique_host: bool,
    soft_attributes: Vec<&'a Constraint>,
    soft_count: u32,
    hard_attributes: Vec<&'a Constraint>,
    /// The tier, when its pools are restricted (see `Placer::pools`).
    pool_tier: Option<Tier>,
    /// Whether the job's per-node task counts are needed (scratch filled).
    needs_job_counts: bool,
    /// The request's shape id in the FGD cache (what fragmentation depends on: CPU, memory
    /// when the typical types check it, GPU demand).
    shape_id: u32,
}

/// What the FGD result of a node depends on, besides the node's state.
type ShapeKey = (u64, u64, u8, u16);

/// One cached FGD result: valid while the node's version and the shape id match.
#[derive(Clone, Copy, Debug)]
struct FragSlot {
    version: u64,
    shape_id: u32,
    device: u8,
    /// FGD's score (see [`fgd_score`]).
    score: f64,
}

const FRAG_SLOT_EMPTY: FragSlot = FragSlot {
    version: 0,
    shape_id: u32::MAX,
    device: 0,
    score: 0.0,
};

/// FGD cache slots per node (direct-mapped by shape id).
const FRAG_SLOTS_PER_NODE: usize = 32;

/// Distinct shapes interned before the FGD cache starts over.
const FRAG_SHAPES_MAX: usize = 1 << 16;

/// A scored feasible node.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    node: u32,
    /// Device for a fractional share (`u8::MAX` otherwise).
    device: u8,
    score: f64,
    /// The tie scorers' sum, computed only when another candidate ties on `score` (0 when
    /// the policy has none).
    tie_score: Option<f64>,
}

/// Whether a request's decision depends on the nodes' own state alone: no constraint on where
/// its job's tasks are (exclusive, unique host, zone balance), no soft constraint, no
/// fractional GPU (whose device choice is its own).
fn job_independent(request: &Request<'_>) -> bool {
    !(request.exclusive
        || request.unique_host
        || request.soft_unique_host
        || request.soft_count > 0
        || request.needs_job_counts
        || !request.zone_ok.is_empty()
        || !request.zone_soft.is_empty()
        || matches!(request.gpu, GpuDemand::Milli(_)))
}

/// Two scores are equal within a relative tolerance (float sums of the same terms in another
/// order must not decide).
fn cmp_tol(a: f64, b: f64) -> std::cmp::Ordering {
    let tol = 1e-9 * b.abs().max(1.0);
    if a > b + tol {
        std::cmp::Ordering::Greater
    } else if a < b - tol {
        std::cmp::Ordering::Less
    } else {
        std::cmp::Ordering::Equal
    }
}

/// The best candidate so far and how many tie with it.
#[derive(Default)]
struct Selection {
    best: Option<Candidate>,
    ties: u32,
}

/// Counts of refusals per reason during one decision: an array slot per reason without a
/// payload (a failed scan counts once per node, so no map operation per node), a map for the
/// attribute reasons, which carry a key.
#[derive(Clone, Debug, Default)]
struct Refusals {
    plain: [u32; PLAIN_REASONS.len()],
    keyed: BTreeMap<FilterReason, u32>,
}

/// The reasons without a payload, in [`Refusals::plain`] order.
const PLAIN_REASONS: [FilterReason; 14] = [
    FilterReason::NodeUnschedulable,
    FilterReason::TierPoolIneligible,
    FilterReason::ExclusiveHost,
    FilterReason::UniqueHost,
    FilterReason::ZoneBalance,
    FilterReason::InsufficientCpu,
    FilterReason::InsufficientMemory,
    FilterReason::InsufficientDisk,
    FilterReason::InsufficientNetwork,
    FilterReason::GpuModelMismatch,
    FilterReason::InsufficientGpu,
    FilterReason::NoGpuDeviceWithShare,
    FilterReason::GangUnplaceable,
    FilterReason::NoNodes,
];

impl Refusals {
    fn add_n(&mut self, r: FilterReason, n: u32) {
        let slot = match r {
            FilterReason::NodeUnschedulable => 0,
            FilterReason::TierPoolIneligible => 1,
            FilterReason::ExclusiveHost => 2,
            FilterReason::UniqueHost => 3,
            FilterReason::ZoneBalance => 4,
            FilterReason::InsufficientCpu => 5,
            FilterReason::InsufficientMemory => 6,
            FilterReason::InsufficientDisk => 7,
            FilterReason::InsufficientNetwork => 8,
            FilterReason::GpuModelMismatch => 9,
            FilterReason::InsufficientGpu => 10,
            FilterReason::NoGpuDeviceWithShare => 11,
            FilterReason::GangUnplaceable => 12,
            FilterReason::NoNodes => 13,
            keyed @ FilterReason::AttributeMismatch { .. } => {
                *self.keyed.entry(keyed).or_insert(0) += n;
                return;
            }
        };
        debug_assert_eq!(PLAIN_REASONS[slot], r);
        self.plain[slot] += n;
    }

    fn into_counts(self) -> ReasonCounts {
        let mut counts = self.keyed;
        for (r, &n) in PLAIN_REASONS.iter().zip(&self.plain) {
            if n > 0 {
                counts.insert(r.clone(), n);
            }
        }
        ReasonCounts(counts)
    }
}

/// A placement engine: a policy, the typical task types FGD measures against, and caches that
/// stay valid across decisions (keyed by node version, so they can never go stale).
#[derive(Clone, Debug)]
pub struct Placer {
    policy: Policy,
    weights: [f64; KINDS],
    /// The tie scorers' weights (all zero when there are none).
    tie_weights: [f64; KINDS],
    has_tie_scorers: bool,
    /// Only first fit scores (soft constraints aside): its score falls strictly with the node
    /// index, so for a request without soft constraints the first node that passes the
    /// filters is the choice and the scan stops there (same answer, same RNG draws).
    first_feasible_wins: bool,
    /// Only first fit and best fit score (soft constraints aside), ties go to the lowest node:
    /// taking a task only raises its node's score against the others, so the node chosen for a
    /// task stays the choice for an identical next one while it passes the filters
    /// ([`Placer::place_again`]).
    monotone: bool,
    /// Eligible pools per tier (index `Tier as usize`), empty = any.
    pools: [Vec<String>; 2],
    types: TaskTypes,
    frag: FragModel,
    /// The model list the frag model was compiled against.
    frag_models: Vec<crate::resources::GpuModel>,
    /// Shape ids for the FGD cache.
    frag_shapes: BTreeMap<ShapeKey, u32>,
    /// Per node: (version, fragmentation now).
    frag_now: [Vec<(u64, f64)>; 2],
    /// `FRAG_SLOTS_PER_NODE` slots per node.
    frag_slots: [Vec<FragSlot>; 2],
    /// The job's task count per node, filled for one decision.
    job_on_node: Vec<u32>,
    job_on_node_touched: Vec<u32>,
    /// The node index (equivalence classes), when the policy draws no random numbers (a
    /// seeded draw per scored node would change with the nodes scored).
    classes: Option<NodeClasses>,
    /// The indexed decision's candidates (a buffer reused across decisions).
    cands: Vec<Candidate>,
    /// Only best fit scores (soft constraints aside), ties to the lowest node: a decision's
    /// candidates keep their scores while their nodes do not change ([`Placer::next_best`]).
    best_fit_only: bool,
    /// The last indexed decision of a request [`Placer::next_best`] can follow.
    last: Option<LastDecision>,
}

/// An indexed best-fit decision kept for the next identical request of the same job: the
/// request, the view's version when it was made, its candidates (one per class, in node order,
/// with their scores) and refusals, the node chosen and the next member of that node's class.
#[derive(Clone, Debug)]
struct LastDecision {
    job: JobId,
    tier: Tier,
    shape: TaskShape,
    constraints: Arc<Constraints>,
    version: u64,
    chosen: u32,
    chosen_successor: Option<u32>,
    cands: Vec<Candidate>,
    refusals: Refusals,
}

impl LastDecision {
    fn is_for(&self, task: &TaskRequest) -> bool {
        self.job == task.job
            && self.tier == task.tier
            && self.shape == task.shape
            && (Arc::ptr_eq(&self.constraints, &task.constraints)
                || self.constraints == task.constraints)
    }
}

impl Placer {
    /// A placer for a validated policy. FGD needs typical task types
    /// ([`Placer::set_typical_types`]); without them it scores every node alike.
    pub fn new(policy: Policy) -> Result<Placer, PlaceError> {
        policy.validate()?;
        let mut weights = [0.0; KINDS];
        let mut tie_weights = [0.0; KINDS];
        for (i, k) in ScorerKind::ALL.iter().enumerate() {
            weights[i] = policy.weight_of(*k);
            tie_weights[i] = policy.tie_weight_of(*k);
        }
        let has_tie_scorers = tie_weights.iter().any(|&w| w > 0.0);
        let first_feasible_wins = !has_tie_scorers
            && weights[ScorerKind::FirstFit as usize] > 0.0
            && ScorerKind::ALL.iter().enumerate().all(|(i, &k)| {
                weights[i] == 0.0 || matches!(k, ScorerKind::FirstFit | ScorerKind::SoftConstraints)
            });
        let monotone = !has_tie_scorers
            && policy.tie_break == TieBreak::LowestNode
            && (weights[ScorerKind::FirstFit as usize] > 0.0
                || weights[ScorerKind::BestFit as usize] > 0.0)
            && ScorerKind::ALL.iter().enumerate().all(|(i, &k)| {
                weights[i] == 0.0
                    || matches!(
                        k,
                        ScorerKind::FirstFit | ScorerKind::BestFit | ScorerKind::SoftConstraints
                    )
            });
        let best_fit_only = monotone && weights[ScorerKind::FirstFit as usize] == 0.0;
        let random = ScorerKind::Random as usize;
        let indexable = policy.tie_break == TieBreak::LowestNode
            && weights[random] == 0.0
            && tie_weights[random] == 0.0;
        let clustering = ScorerKind::GpuClustering as usize;
        let gpu_clustering = weights[clustering] > 0.0 || tie_weights[clustering] > 0.0;
        let pools = [Tier::Critical, Tier::Flex]
            .map(|t| policy.tier_pools.get(&t).cloned().unwrap_or_default());
        Ok(Placer {
            policy,
            weights,
            tie_weights,
            has_tie_scorers,
            first_feasible_wins,
            monotone,
            pools,
            types: TaskTypes::default(),
            frag: FragModel::default(),
            frag_models: Vec::new(),
            frag_shapes: BTreeMap::new(),
            frag_now: Default::default(),
            frag_slots: Default::default(),
            job_on_node: Vec::new(),
            job_on_node_touched: Vec::new(),
            classes: indexable.then(|| NodeClasses::new(gpu_clustering)),
            cands: Vec::new(),
            best_fit_only,
            last: None,
        })
    }

    /// The same placer deciding by the full scan of every node, without the node index (the
    /// index's yardstick: both decide alike; see [`NodeClasses`]).
    pub fn without_index(mut self) -> Self {
        self.classes = None;
        self
    }

    /// Whether the policy restricts `tier` to some pools.
    pub fn restricts_tier(&self, tier: Tier) -> bool {
        !self.pools[tier as usize].is_empty()
    }

    /// Whether decisions use the node index (policies that draw no random numbers).
    pub fn is_indexed(&self) -> bool {
        self.classes.is_some()
    }

    /// Sets the task-type distribution FGD measures fragmentation against.
    pub fn set_typical_types(&mut self, types: TaskTypes) {
        self.last = None;
        self.types = types;
        self.frag_models.clear();
        self.frag = FragModel::default();
        self.clear_frag_cache();
    }

    pub fn with_typical_types(mut self, types: TaskTypes) -> Self {
        self.set_typical_types(types);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn typical_types(&self) -> &TaskTypes {
        &self.types
    }

    /// Places a batch in order; each task sees the ones placed before it. A gang job's tasks
    /// in the batch are placed together when the first of them comes up, or none is. The view
    /// is left holding the plan's assignments.
    pub fn place<R: Rng + ?Sized>(
        &mut self,
        view: &mut ClusterView,
        tasks: &[TaskRequest],
        rng: &mut R,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut gangs_done: BTreeSet<JobId> = BTreeSet::new();
        // The previous task placed and its node: only that node changed since.
        let mut last: Option<(&TaskRequest, NodeId)> = None;
        for (i, t) in tasks.iter().enumerate() {
            if !t.gang {
                match self.place_next(view, t, last, rng) {
                    Ok(a) => {
                        view.apply(&a);
                        last = Some((t, a.node));
                        plan.assignments.push(a);
                    }
                    Err(u) => {
                        last = None;
                        plan.unplaced.push(u);
                    }
                }
                continue;
            }
            last = None;
            if !gangs_done.insert(t.job) {
                continue;
            }
            let members: Vec<&TaskRequest> = tasks[i..]
                .iter()
                .filter(|m| m.gang && m.job == t.job)
                .collect();
            let mut placed: Vec<Assignment> = Vec::new();
            let mut failed: Option<Unplaced> = None;
            let mut prev: Option<(&TaskRequest, NodeId)> = None;
            for m in &members {
                match self.place_next(view, m, prev, rng) {
                    Ok(a) => {
                        view.apply(&a);
                        prev = Some((m, a.node));
                        placed.push(a);
                    }
                    Err(u) => {
                        failed = Some(u);
                        break;
                    }
                }
            }
            let Some(failed) = failed else {
                plan.assignments.extend(placed);
                continue;
            };
            // Roll back in reverse order; every member is unplaced: the one that failed with its
            // own reasons, the others (placed then rolled back, or never tried) with
            // `GangUnplaceable`.
            for a in placed.iter().rev() {
                view.release(a)
                    .expect("rolling back an assignment just applied");
            }
            for m in members {
                if m.task == failed.task {
                    plan.unplaced.push(failed.clone());
                } else {
                    let mut reasons = ReasonCounts::new();
                    reasons.add(FilterReason::GangUnplaceable, 1);
                    plan.unplaced.push(Unplaced {
                        task: m.task,
                        job: m.job,
                        reasons,
                    });
                }
            }
        }
        plan
    }

    /// [`Placer::place_one`], or [`Placer::place_again`] on the node of `prev` when `prev` is an
    /// identical request of the same job placed just before (only its node changed since);
    /// debug builds check such a placement against the full scan.
    pub fn place_next<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        task: &TaskRequest,
        prev: Option<(&TaskRequest, NodeId)>,
        rng: &mut R,
    ) -> Result<Assignment, Unplaced> {
        if let Some((p, node)) = prev {
            let same = p.job == task.job
                && p.tier == task.tier
                && p.shape == task.shape
                && (Arc::ptr_eq(&p.constraints, &task.constraints)
                    || p.constraints == task.constraints);
            if same {
                if let Some(a) = self.place_again(view, task, node) {
                    #[cfg(debug_assertions)]
                    {
                        let full = self.place_one(view, task, rng);
                        debug_assert_eq!(full.as_ref().ok(), Some(&a), "place_again differs");
                    }
                    return Ok(a);
                }
                if let Some(decided) = self.next_best(view, task, node, rng) {
                    let decided = decided.map_err(|reasons| Unplaced {
                        task: task.task,
                        job: task.job,
                        reasons,
                    });
                    if cfg!(debug_assertions) {
                        let kept = self.last.take();
                        let full = self.place_one(view, task, rng);
                        self.last = kept;
                        assert_eq!(full, decided, "next_best differs");
                    }
                    return decided;
                }
            }
        }
        self.place_one(view, task, rng)
    }

    /// Decides one task against the view without changing it: the assignment to apply, or why
    /// no node can take it.
    pub fn place_one<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        task: &TaskRequest,
        rng: &mut R,
    ) -> Result<Assignment, Unplaced> {
        self.decide(view, task, rng).map_err(|reasons| Unplaced {
            task: task.task,
            job: task.job,
            reasons,
        })
    }

    /// Places `task` on `node`, where the previous task of the same job and shape went, when
    /// that is provably the node a full [`Placer::place_one`] would choose now: the policy is
    /// monotone (first fit, best fit, lowest-node ties), the request has no constraint that
    /// depends on where its job's tasks are (unique host, zone balance, exclusive, soft ones),
    /// no fractional GPU, and `node` still passes the filters; no other node changed since
    /// (the caller's contract). `None`: do the full scan.
    pub fn place_again(
        &mut self,
        view: &ClusterView,
        task: &TaskRequest,
        node: NodeId,
    ) -> Option<Assignment> {
        if !self.monotone || node.0 as usize >= view.len() {
            return None;
        }
        let request = self.request(view, task);
        if !job_independent(&request) {
            return None;
        }
        self.filter(view, node, &request).ok()?;
        let gpus = match request.gpu {
            GpuDemand::Whole(k) => whole_devices(view.gpu_free(node), k)?,
            _ => Vec::new(),
        };
        Some(Assignment {
            task: task.task,
            job: task.job,
            node,
            resources: request.resources,
            gpus,
            exclusive: false,
        })
    }

    /// The full decision for `task` when `node`, which the last indexed decision of the same
    /// request chose, no longer passes the filters ([`Placer::place_again`] said no) and no
    /// other node changed since: under best fit alone (lowest-node ties) every other class
    /// keeps its representative and score, `node`'s old class is represented by its next
    /// member at `node`'s old score, and `node`'s new class is refused (it holds `node`). So
    /// the selection over the last decision's candidates, so amended, is the full decision,
    /// without filtering or scoring a node; when none is left, the last decision's refusals
    /// and `node`'s are the full scan's. `None` (do the full decision) when any of that cannot
    /// be shown.
    fn next_best<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        task: &TaskRequest,
        node: NodeId,
        rng: &mut R,
    ) -> Option<Result<Assignment, ReasonCounts>> {
        if !self.best_fit_only || self.classes.is_none() {
            return None;
        }
        let mut last = self.last.take()?;
        if last.chosen != node.0
            || !last.is_for(task)
            || !view.changed_since(last.version)?.all(|n| n == node)
        {
            return None;
        }
        let request = self.request(view, task);
        if !job_independent(&request) {
            return None;
        }
        // The filled node counts for its new class's reason (that class is refused: it
        // holds the node).
        let reason = self.filter(view, node, &request).err()?;
        let pos = last.cands.iter().position(|c| c.node == node.0)?;
        last.refusals.add_n(reason, 1);
        let old = last.cands.remove(pos);
        if let Some(m) = last.chosen_successor {
            let at = last.cands.partition_point(|c| c.node < m);
            last.cands.insert(
                at,
                Candidate {
                    node: m,
                    device: old.device,
                    score: old.score,
                    tie_score: None,
                },
            );
        }
        let mut select = Selection::default();
        for &c in &last.cands {
            self.select(view, &request, &mut select, c, rng);
        }
        let Some(best) = select.best else {
            return Some(Err(last.refusals.into_counts()));
        };
        let mut classes = self.classes.take().expect("checked");
        classes.sync(view);
        last.chosen = best.node;
        last.chosen_successor = classes.next_member(best.node as usize);
        last.version = view.last_version();
        self.classes = Some(classes);
        let chosen = NodeId(best.node);
        let gpus = match request.gpu {
            GpuDemand::Whole(k) => {
                whole_devices(view.gpu_free(chosen), k).expect("filtered: devices free")
            }
            _ => Vec::new(),
        };
        self.last = Some(last);
        Some(Ok(Assignment {
            task: task.task,
            job: task.job,
            node: chosen,
            resources: request.resources,
            gpus,
            exclusive: false,
        }))
    }

    fn clear_frag_cache(&mut self) {
        self.frag_shapes.clear();
        for c in &mut self.frag_now {
            c.clear();
        }
        for c in &mut self.frag_slots {
            c.clear();
        }
    }

    /// Sizes the caches of the FGD kinds the policy uses for `nodes` nodes.
    fn resize_frag_cache(&mut self, nodes: usize) {
        for (c, k) in FGD_KINDS.iter().enumerate() {
            if self.weights[*k as usize] > 0.0 || self.tie_weights[*k as usize] > 0.0 {
                self.frag_now[c].resize(nodes, (0, 0.0));
                self.frag_slots[c].resize(nodes * FRAG_SLOTS_PER_NODE, FRAG_SLOT_EMPTY);
            }
        }
        self.frag_now[0].resize(nodes, (0, 0.0));
    }

    /// The FGD cache's id of a request shape.
    fn shape_id(&mut self, task: &TaskRequest) -> u32 {
        let r = &task.shape.resources;
        let mem = if self.frag.uses_memory() {
            r.mem_mib
        } else {
            0
        };
        let (kind, val) = match task.shape.gpu {
            GpuDemand::None => (0, 0),
            GpuDemand::Milli(m) => (1, m),
            GpuDemand::Whole(k) => (2, k as u16),
        };
        let key = (r.cpu_milli, mem, kind, val);
        if let Some(&id) = self.frag_shapes.get(&key) {
            return id;
        }
        if self.frag_shapes.len() >= FRAG_SHAPES_MAX {
            // Start over: ids are reused, so every slot must go.
            let nodes = self.frag_now[0].len();
            self.clear_frag_cache();
            self.resize_frag_cache(nodes);
        }
        let id = self.frag_shapes.len() as u32;
        self.frag_shapes.insert(key, id);
        id
    }

    /// Prepares caches for `view` (model list, node count).
    fn sync_view(&mut self, view: &ClusterView) {
        if self.frag_models.as_slice() != view.models()
            || (self.frag.is_empty() && !self.types.is_empty())
        {
            self.frag_models = view.models().to_vec();
            self.frag = FragModel::compile(&self.types, view.models());
            self.clear_frag_cache();
        }
        if self.frag_now[0].len() < view.len() {
            self.resize_frag_cache(view.len());
        }
        if self.job_on_node.len() < view.len() {
            self.job_on_node.resize(view.len(), 0);
        }
    }

    /// The placement pipeline for one task, in order:
    ///
    /// 1. **Filters**, per node, first refusal counted: schedulable, tier pool, hard attribute
    ///    constraints, exclusive host, unique host, zone balance, CPU, memory, disk, network,
    ///    GPU model, GPU devices (k wholly free devices, or one device with the share free).
    /// 2. **Device choice** on a feasible node: whole devices take the lowest-index free ones;
    ///    a share takes the device with the best FGD score (when FGD is in the policy)
    ///    or the best-fitting device (least free that fits; lowest index on ties).
    /// 3. **Scores**: each scorer with a non-zero weight, each already normalised to 0..=100
    ///    (see [`ScorerKind`] for each formula).
    /// 4. **Weighted sum**.
    /// 5. **Select** the highest sum; ties go to the lowest node id, or a seeded uniform pick.
    ///
    /// With the node index ([`NodeClasses`]) steps 1-4 run on one node per class and on the
    /// job's own nodes; debug builds check each such decision against the full scan.
    fn decide<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        task: &TaskRequest,
        rng: &mut R,
    ) -> Result<Assignment, ReasonCounts> {
        let (result, indexed) = self.decide_with(view, task, rng, true);
        if cfg!(debug_assertions) && indexed {
            let (full, _) = self.decide_with(view, task, rng, false);
            assert_eq!(result, full, "indexed decision differs from the full scan");
        }
        result
    }

    /// [`Placer::decide`], on the index when `use_index` and the policy allows; also says
    /// whether the index decided.
    fn decide_with<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        task: &TaskRequest,
        rng: &mut R,
        use_index: bool,
    ) -> (Result<Assignment, ReasonCounts>, bool) {
        if view.is_empty() {
            let mut r = ReasonCounts::new();
            r.add(FilterReason::NoNodes, 1);
            return (Err(r), false);
        }
        self.sync_view(view);
        let mut request = self.request(view, task);
        if self.policy.uses_fgd() {
            request.shape_id = self.shape_id(task);
        }
        if request.needs_job_counts {
            if let Some(jp) = view.job(task.job) {
                for (&n, &c) in &jp.per_node {
                    self.job_on_node[n.0 as usize] = c;
                    self.job_on_node_touched.push(n.0);
                }
            }
        }
        let first_wins = self.first_feasible_wins && request.soft_count == 0;
        let mut refusals = Refusals::default();
        let mut select = Selection::default();
        let indexed = use_index && !first_wins && self.classes.is_some();
        if indexed {
            // One node per class (the lowest without the job's tasks), then the job's nodes
            // one by one; the candidates go through selection in node order, as in the scan.
            let mut classes = self.classes.take().expect("checked");
            classes.sync(view);
            let mut job_nodes_per_class: BTreeMap<u32, u32> = BTreeMap::new();
            for &n in &self.job_on_node_touched {
                *job_nodes_per_class
                    .entry(classes.class_of(n as usize))
                    .or_insert(0) += 1;
            }
            // The candidate buffer is kept across decisions (no allocation per decision).
            let mut cands = std::mem::take(&mut self.cands);
            cands.clear();
            for (id, members) in classes.classes() {
                let others = job_nodes_per_class.get(&id).copied().unwrap_or(0);
                let count = members.len() as u32 - others;
                if count == 0 {
                    continue;
                }
                let rep = if others == 0 {
                    *members.first().expect("a class has members")
                } else {
                    *members
                        .iter()
                        .find(|&&m| self.job_on_node[m as usize] == 0)
                        .expect("a member without the job's tasks")
                };
                if let Some(c) =
                    self.evaluate(view, NodeId(rep), &request, &mut refusals, count, rng)
                {
                    cands.push(c);
                }
            }
            let job_nodes = std::mem::take(&mut self.job_on_node_touched);
            for &n in &job_nodes {
                if let Some(c) = self.evaluate(view, NodeId(n), &request, &mut refusals, 1, rng) {
                    cands.push(c);
                }
            }
            self.job_on_node_touched = job_nodes;
            cands.sort_unstable_by_key(|c| c.node);
            for &c in &cands {
                self.select(view, &request, &mut select, c, rng);
            }
            // Kept for the next identical request when the node chosen fills up. The
            // candidates move there; the buffer comes back from the last ones.
            let kept = self.last.take().map(|l| l.cands);
            let followable = self.best_fit_only && job_independent(&request);
            if let Some(best) = select.best.as_ref().filter(|_| followable) {
                let buffer = kept.unwrap_or_default();
                self.last = Some(LastDecision {
                    job: task.job,
                    tier: task.tier,
                    shape: task.shape.clone(),
                    constraints: task.constraints.clone(),
                    version: view.last_version(),
                    chosen: best.node,
                    chosen_successor: classes.next_member(best.node as usize),
                    cands: std::mem::replace(&mut cands, buffer),
                    refusals: std::mem::take(&mut refusals),
                });
            }
            self.classes = Some(classes);
            self.cands = cands;
        } else {
            for n in 0..view.len() {
                let node = NodeId(n as u32);
                if let Some(c) = self.evaluate(view, node, &request, &mut refusals, 1, rng) {
                    self.select(view, &request, &mut select, c, rng);
                    if first_wins {
                        break;
                    }
                }
            }
        }
        for n in self.job_on_node_touched.drain(..) {
            self.job_on_node[n as usize] = 0;
        }
        let Some(best) = select.best else {
            return (Err(refusals.into_counts()), indexed);
        };
        let node = NodeId(best.node);
        let gpus = match request.gpu {
            GpuDemand::None => Vec::new(),
            GpuDemand::Whole(k) => {
                whole_devices(view.gpu_free(node), k).expect("filtered: devices free")
            }
            GpuDemand::Milli(m) => vec![GpuSlice {
                device: best.device,
                milli: m,
            }],
        };
        let a = Assignment {
            task: task.task,
            job: task.job,
            node,
            resources: request.resources,
            gpus,
            exclusive: request.exclusive,
        };
        (Ok(a), indexed)
    }

    /// Steps 1-4 on one node: refused (counted `count` times, for the nodes it stands for), or
    /// a scored candidate.
    fn evaluate<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        node: NodeId,
        request: &Request<'_>,
        refusals: &mut Refusals,
        count: u32,
        rng: &mut R,
    ) -> Option<Candidate> {
        // 1. Filters.
        let device = match self.filter(view, node, request) {
            Ok(d) => d,
            Err(r) => {
                refusals.add_n(r, count);
                return None;
            }
        };
        // 2-4. Device choice, scores, weighted sum.
        let weights = self.weights;
        let (device, score) = self.score(view, node, request, device, false, rng, &weights);
        Some(Candidate {
            node: node.0,
            device,
            score,
            tie_score: None,
        })
    }

    /// Step 5 for one more candidate (candidates come in node order): the primary sum, then
    /// (lexicographically) the tie scorers' sum, computed only between candidates the primary
    /// sum ties; then the tie-break.
    fn select<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        request: &Request<'_>,
        s: &mut Selection,
        mut cand: Candidate,
        rng: &mut R,
    ) {
        let order = match &mut s.best {
            None => std::cmp::Ordering::Greater,
            Some(b) => match cmp_tol(cand.score, b.score) {
                std::cmp::Ordering::Equal if self.has_tie_scorers => {
                    let tb = match b.tie_score {
                        Some(t) => t,
                        None => {
                            let t = self.tie_score(view, b, request, rng);
                            b.tie_score = Some(t);
                            t
                        }
                    };
                    let tc = self.tie_score(view, &cand, request, rng);
                    cand.tie_score = Some(tc);
                    cmp_tol(tc, tb)
                }
                o => o,
            },
        };
        match order {
            std::cmp::Ordering::Greater => {
                s.best = Some(cand);
                s.ties = 1;
            }
            std::cmp::Ordering::Equal => {
                s.ties += 1;
                if self.policy.tie_break == TieBreak::Random && rng.random_range(0..s.ties) == 0 {
                    s.best = Some(cand);
                }
            }
            std::cmp::Ordering::Less => {}
        }
    }

    fn request<'a>(&self, view: &ClusterView, task: &'a TaskRequest) -> Request<'a> {
        let c = &task.constraints;
        let mut exclusive = false;
        let mut unique_host = false;
        let mut skew_hard: Option<u32> = None;
        let mut hard_attributes = Vec::new();
        for k in &c.hard {
            match k {
                Constraint::ExclusiveHost => exclusive = true,
                Constraint::UniqueHost => unique_host = true,
                Constraint::ZoneBalance { max_skew } => {
                    skew_hard = Some(skew_hard.map_or(*max_skew, |s| s.min(*max_skew)))
                }
                Constraint::AttributeEquals { .. } | Constraint::AttributeIn { .. } => {
                    hard_attributes.push(k)
                }
            }
        }
        let mut soft_unique_host = false;
        let mut skew_soft: Option<u32> = None;
        let mut soft_attributes = Vec::new();
        for k in &c.soft {
            match k {
                Constraint::UniqueHost => soft_unique_host = true,
                Constraint::ZoneBalance { max_skew } => {
                    skew_soft = Some(skew_soft.map_or(*max_skew, |s| s.min(*max_skew)))
                }
                Constraint::AttributeEquals { .. } | Constraint::AttributeIn { .. } => {
                    soft_attributes.push(k)
                }
                // A soft exclusive host has no graded meaning; it is ignored.
                Constraint::ExclusiveHost => {}
            }
        }
        let zones = view.zones().len();
        // The job's tasks per zone, read only under zone balance (no copy otherwise).
        let zeros: Vec<u32>;
        let per_zone: &[u32] = match (skew_hard.or(skew_soft), view.job(task.job)) {
            (None, _) => &[],
            (Some(_), Some(jp)) => &jp.per_zone,
            (Some(_), None) => {
                zeros = vec![0; zones];
                &zeros
            }
        };
        let zone_ok = match skew_hard {
            None => Vec::new(),
            Some(s) => (0..zones).map(|z| skew_after(per_zone, z) <= s).collect(),
        };
        let zone_soft = match skew_soft {
            None => Vec::new(),
            Some(_) => {
                let lo = per_zone.iter().copied().min().unwrap_or(0);
                let hi = per_zone.iter().copied().max().unwrap_or(0);
                per_zone
                    .iter()
                    .map(|&c| 100.0 * (1.0 - (c - lo) as f64 / (hi - lo + 1) as f64))
                    .collect()
            }
        };
        let soft_count = c
            .soft
            .iter()
            .filter(|k| !matches!(k, Constraint::ExclusiveHost))
            .count() as u32;
        let pool_tier = (!self.pools[task.tier as usize].is_empty()).then_some(task.tier);
        let model_mask = if task.shape.gpu.is_none() {
            ModelMask::ALL
        } else {
            ModelMask::of(&task.shape.gpu_models, view.models())
        };
        let resources = task.shape.resources;
        Request {
            req: task,
            resources,
            gpu: task.shape.gpu,
            model_mask,
            exclusive,
            unique_host,
            zone_ok,
            zone_soft,
            soft_unique_host,
            soft_attributes,
            soft_count,
            hard_attributes,
            pool_tier,
            needs_job_counts: exclusive || unique_host || soft_unique_host,
            shape_id: u32::MAX,
        }
    }

    /// Step 1: the first filter that refuses `node`, or the fractional device candidate
    /// (best fit; `u8::MAX` when not a share).
    fn filter(
        &self,
        view: &ClusterView,
        node: NodeId,
        r: &Request<'_>,
    ) -> Result<u8, FilterReason> {
        let n = node.0 as usize;
        if !view.is_schedulable(node) {
            return Err(FilterReason::NodeUnschedulable);
        }
        if let Some(tier) = r.pool_tier {
            if !self.pools[tier as usize]
                .iter()
                .any(|p| *p == view.node(node).attributes.pool)
            {
                return Err(FilterReason::TierPoolIneligible);
            }
        }
        for c in &r.hard_attributes {
            if let Some(key) = attribute_mismatch(view, node, c) {
                return Err(FilterReason::AttributeMismatch {
                    key: key.to_string(),
                });
            }
        }
        match view.exclusive_holder(node) {
            Some(j) if j != r.req.job => return Err(FilterReason::ExclusiveHost),
            _ => {}
        }
        if r.exclusive && view.task_count(node) > self.job_on_node[n] {
            return Err(FilterReason::ExclusiveHost);
        }
        if r.unique_host && self.job_on_node[n] > 0 {
            return Err(FilterReason::UniqueHost);
        }
        if !r.zone_ok.is_empty() && !r.zone_ok[view.zone_of(node)] {
            return Err(FilterReason::ZoneBalance);
        }
        if let Some(d) = r.resources.first_short_dimension(&view.free(node)) {
            return Err(FilterReason::for_dimension(d));
        }
        match r.gpu {
            GpuDemand::None => Ok(u8::MAX),
            GpuDemand::Whole(k) => {
                let model = view.model_of(node);
                if model == NO_MODEL || !r.model_mask.contains(model) {
                    return Err(FilterReason::GpuModelMismatch);
                }
                let free = view
                    .gpu_free(node)
                    .iter()
                    .filter(|&&f| f as u32 == GPU_MILLI_PER_DEVICE)
                    .count();
                if free < k as usize {
                    return Err(FilterReason::InsufficientGpu);
                }
                Ok(u8::MAX)
            }
            GpuDemand::Milli(m) => {
                let model = view.model_of(node);
                if model == NO_MODEL || !r.model_mask.contains(model) {
                    return Err(FilterReason::GpuModelMismatch);
                }
                best_fit_device(view.gpu_free(node), m).ok_or(FilterReason::NoGpuDeviceWithShare)
            }
        }
    }

    /// The tie scorers' sum for a candidate, at the device its primary scores chose.
    fn tie_score<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        c: &Candidate,
        r: &Request<'_>,
        rng: &mut R,
    ) -> f64 {
        let tie_weights = self.tie_weights;
        self.score(view, NodeId(c.node), r, c.device, true, rng, &tie_weights)
            .1
    }

    /// Steps 2-4: device choice, normalised scores, weighted sum. A share's device is the
    /// first FGD kind's choice (in [`FGD_KINDS`] order), unless `device_fixed`; later FGD kinds
    /// score that device.
    #[allow(clippy::too_many_arguments)]
    fn score<R: Rng + ?Sized>(
        &mut self,
        view: &ClusterView,
        node: NodeId,
        r: &Request<'_>,
        device: u8,
        device_fixed: bool,
        rng: &mut R,
        weights: &[f64; KINDS],
    ) -> (u8, f64) {
        let weight = |k: ScorerKind| weights[k as usize];
        let mut device = device;
        let mut total = 0.0;
        let mut fixed = device_fixed || !matches!(r.gpu, GpuDemand::Milli(_));
        for (c, &k) in FGD_KINDS.iter().enumerate() {
            let w = weight(k);
            if w > 0.0 {
                let (d, score) = self.fgd(view, node, r, c, fixed.then_some(device));
                if !fixed {
                    device = d;
                    fixed = true;
                }
                total += w * score;
            }
        }
        let gpu_free = view.gpu_free(node);
        let free = view.free(node);
        let spec = view.node(node);
        // GPU milli the placement takes, and the node's free GPU after it.
        let gpu_take = r.gpu.total_milli() as u64;
        let gpu_free_total: u64 = gpu_free.iter().map(|&f| f as u64).sum();
        let w = weight(ScorerKind::FirstFit);
        if w > 0.0 {
            total += w * 100.0 * (1.0 - node.0 as f64 / view.len() as f64);
        }
        let w_bf = weight(ScorerKind::BestFit);
        let w_wf = weight(ScorerKind::WorstFit);
        if w_bf > 0.0 || w_wf > 0.0 {
            let cap_max = view.capacity_max().as_array();
            let (req, fr) = (r.resources.as_array(), free.as_array());
            let mut sum = 0.0;
            let mut dims = 0u32;
            for d in 0..4 {
                if req[d] > 0 && cap_max[d] > 0 {
                    sum += (fr[d] - req[d]) as f64 / cap_max[d] as f64;
                    dims += 1;
                }
            }
            // GPU counts on every GPU node, also for a task that takes none: a CPU-only task
            // then prefers nodes whose GPUs are already busy over eating the CPU that idle GPUs
            // need (the FGD paper's BestFit baseline scores CPU and GPU for every pod).
            if gpu_take > 0 || !gpu_free.is_empty() {
                let gmax = view.gpu_count_max().max(1) as f64 * GPU_MILLI_PER_DEVICE as f64;
                sum += (gpu_free_total - gpu_take) as f64 / gmax;
                dims += 1;
            }
            let leftover = if dims == 0 { 0.0 } else { sum / dims as f64 };
            total += w_bf * 100.0 * (1.0 - leftover) + w_wf * 100.0 * leftover;
        }
        let w = weight(ScorerKind::DotProduct);
        if w > 0.0 {
            let (req, fr, cap) = (
                r.resources.as_array(),
                free.as_array(),
                spec.capacity.as_array(),
            );
            let (mut dot, mut norm) = (0.0, 0.0);
            for d in 0..4 {
                if req[d] > 0 && cap[d] > 0 {
                    let rd = req[d] as f64 / cap[d] as f64;
                    dot += rd * fr[d] as f64 / cap[d] as f64;
                    norm += rd;
                }
            }
            if gpu_take > 0 {
                let cap_g = gpu_free.len() as f64 * GPU_MILLI_PER_DEVICE as f64;
                let rd = gpu_take as f64 / cap_g;
                dot += rd * gpu_free_total as f64 / cap_g;
                norm += rd;
            }
            total += w * if norm > 0.0 { 100.0 * dot / norm } else { 0.0 };
        }
        let w = weight(ScorerKind::GpuPacking);
        if w > 0.0 {
            total += w * gpu_packing(gpu_free, r.gpu, device);
        }
        let w = weight(ScorerKind::GpuClustering);
        if w > 0.0 {
            total += w * gpu_clustering(view, node, r.gpu, gpu_free_total);
        }
        let w = weight(ScorerKind::Random);
        if w > 0.0 {
            total += w * 100.0 * rng.random::<f64>();
        }
        let w = weight(ScorerKind::SoftConstraints);
        if w > 0.0 {
            total += w * self.soft_score(view, node, r);
        }
        (device, total)
    }

    fn soft_score(&self, view: &ClusterView, node: NodeId, r: &Request<'_>) -> f64 {
        if r.soft_count == 0 {
            return 100.0;
        }
        let mut sum = 0.0;
        if !r.zone_soft.is_empty() {
            sum += r.zone_soft[view.zone_of(node)];
        }
        if r.soft_unique_host {
            sum += 100.0 / (1.0 + self.job_on_node[node.0 as usize] as f64);
        }
        for c in &r.soft_attributes {
            if attribute_mismatch(view, node, c).is_none() {
                sum += 100.0;
            }
        }
        sum / r.soft_count as f64
    }

    /// FGD kind `c` (index in [`FGD_KINDS`]): (device for a share, score) on `node`, cached
    /// per node version and request shape. With `device`, a share is scored on that device
    /// (the one another kind chose; within one placer the choice is a function of the node's
    /// version and the shape, so the cache stays valid) instead of choosing the best.
    fn fgd(
        &mut self,
        view: &ClusterView,
        node: NodeId,
        r: &Request<'_>,
        c: usize,
        device: Option<u8>,
    ) -> (u8, f64) {
        let fed = FGD_KINDS[c] == ScorerKind::FgdCpu;
        let n = node.0 as usize;
        let version = view.node_version(node);
        let slot_index = n * FRAG_SLOTS_PER_NODE + r.shape_id as usize % FRAG_SLOTS_PER_NODE;
        let slot = self.frag_slots[c][slot_index];
        if slot.version == version && slot.shape_id == r.shape_id {
            return (slot.device, slot.score);
        }
        let model = view.model_of(node);
        let free = view.free(node);
        let gpu_free = view.gpu_free(node);
        let frag = &self.frag;
        let measure = |cpu: u64, mem: u64, devs: &[u16]| {
            if fed {
                frag.node_frag_fed(model, cpu, mem, devs)
            } else {
                frag.node_frag(model, cpu, mem, devs)
            }
        };
        let now = match self.frag_now[c][n] {
            (v, f) if v == version => f,
            _ => {
                let f = measure(free.cpu_milli, free.mem_mib, gpu_free);
                self.frag_now[c][n] = (version, f);
                f
            }
        };
        let after = free.checked_sub(&r.resources).unwrap_or(Resources::ZERO);
        let mut scratch = [0u16; 256];
        let devs = &mut scratch[..gpu_free.len()];
        devs.copy_from_slice(gpu_free);
        let (device, score) = match r.gpu {
            GpuDemand::None => (
                u8::MAX,
                fgd_score(measure(after.cpu_milli, after.mem_mib, devs) - now),
            ),
            GpuDemand::Whole(k) => {
                let mut left = k;
                for f in devs.iter_mut() {
                    if left > 0 && *f as u32 == GPU_MILLI_PER_DEVICE {
                        *f = 0;
                        left -= 1;
                    }
                }
                (
                    u8::MAX,
                    fgd_score(measure(after.cpu_milli, after.mem_mib, devs) - now),
                )
            }
            GpuDemand::Milli(m) => {
                // The device with the best score, the lowest index among equal scores (as the
                // artifact). Each distinct free value is tried once: devices with equal free are
                // equivalent and the first of them has the lowest index.
                let mut best: Option<(u8, f64)> = None;
                for i in 0..devs.len() {
                    let f = devs[i];
                    let skip = match device {
                        Some(d) => i != d as usize,
                        None => devs[..i].contains(&f),
                    };
                    if f < m || skip {
                        continue;
                    }
                    devs[i] = f - m;
                    let s = fgd_score(measure(after.cpu_milli, after.mem_mib, devs) - now);
                    devs[i] = f;
                    if best.is_none_or(|(_, b)| s > b) {
                        best = Some((i as u8, s));
                    }
                }
                best.unwrap_or((u8::MAX, 0.0))
            }
        };
        self.frag_slots[c][slot_index] = FragSlot {
            version,
            shape_id: r.shape_id,
            device,
            score,
        };
        (device, score)
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// FGD's score (0..=100, an integer) of a fragmentation growth of `delta` milli-GPU: the
/// artifact's `int64(sigmoid(-delta / 1000) * 100)`.
fn fgd_score(delta: f64) -> f64 {
    (100.0 * sigmoid(-delta / 1000.0)).floor()
}

/// The job's zone skew (fullest minus emptiest zone) after one more task in zone `z`.
fn skew_after(per_zone: &[u32], z: usize) -> u32 {
    let mut lo = u32::MAX;
    let mut hi = 0;
    for (i, &c) in per_zone.iter().enumerate() {
        let c = if i == z { c + 1 } else { c };
        lo = lo.min(c);
        hi = hi.max(c);
    }
    hi - lo
}

/// The key of an attribute constraint the node fails, if it fails it.
fn attribute_mismatch<'c>(view: &ClusterView, node: NodeId, c: &'c Constraint) -> Option<&'c str> {
    let attrs = &view.node(node).attributes;
    match c {
        Constraint::AttributeEquals { key, value } => {
            (attrs.get(key) != Some(value.as_str())).then_some(key)
        }
        Constraint::AttributeIn { key, values } => {
            let ok = attrs
                .get(key)
                .is_some_and(|v| values.iter().any(|x| x == v));
            (!ok).then_some(key)
        }
        _ => None,
    }
}

/// The device with the least free share that still fits `m` (lowest index on ties).
fn best_fit_device(free: &[u16], m: u16) -> Option<u8> {
    let mut best: Option<(u16, u8)> = None;
    for (i, &f) in free.iter().enumerate() {
        if f >= m && best.is_none_or(|(bf, _)| f < bf) {
            best = Some((f, i as u8));
        }
    }
    best.map(|(_, i)| i)
}

/// GPU packing score (0..=100): shared device 50..=100 (less left on it is better), idle device
/// on a used node 33..=50 (fewer idle devices taken is better), idle node 0..=33 (smaller node
/// is better). 0 for tasks without GPU.
fn gpu_packing(free: &[u16], gpu: GpuDemand, device: u8) -> f64 {
    let full = GPU_MILLI_PER_DEVICE as u16;
    let devices = free.len() as f64;
    match gpu {
        GpuDemand::None => 0.0,
        _ if free.iter().all(|&f| f == full) => 100.0 / 3.0 * (1.0 - devices / 257.0),
        GpuDemand::Whole(k) => 50.0 - 17.0 * k as f64 / 256.0,
        GpuDemand::Milli(_) => {
            let f = free[device as usize];
            if f == full {
                50.0 - 17.0 / 256.0
            } else {
                50.0 + 50.0 * (1.0 - f as f64 / full as f64)
            }
        }
    }
}

/// GPU clustering score (0..=100). 0 for tasks without GPU.
fn gpu_clustering(view: &ClusterView, node: NodeId, gpu: GpuDemand, gpu_free_total: u64) -> f64 {
    if gpu.is_none() {
        return 0.0;
    }
    // The clustering classes (as in the paper's artifact): every fractional share is one class
    // ("shared GPU"), whole-GPU tasks are classed by their device count.
    fn class(d: GpuDemand) -> Option<u8> {
        match d {
            GpuDemand::None => None,
            GpuDemand::Milli(_) => Some(0),
            GpuDemand::Whole(k) => Some(k),
        }
    }
    let mine = class(gpu);
    let mut same = false;
    let mut others = false;
    for (d, n) in view.gpu_types(node) {
        if *n == 0 || class(*d).is_none() {
            continue;
        }
        if class(*d) == mine {
            same = true;
        } else {
            others = true;
        }
    }
    let gmax = view.gpu_count_max().max(1) as f64 * GPU_MILLI_PER_DEVICE as f64;
    let fill = 25.0 * (gmax - gpu_free_total as f64) / gmax;
    let band = match (same, others) {
        (true, false) => 75.0,
        (true, true) => 50.0,
        (false, false) => 25.0,
        (false, true) => 0.0,
    };
    band + fill
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_counts_the_extra_task() {
        assert_eq!(skew_after(&[0, 0, 0], 0), 1);
        assert_eq!(skew_after(&[1, 0, 0], 0), 2);
        assert_eq!(skew_after(&[1, 0, 0], 1), 1);
        assert_eq!(skew_after(&[1, 1, 0], 2), 0);
    }

    #[test]
    fn fgd_scores_are_whole_points() {
        assert_eq!(fgd_score(0.0), 50.0);
        // A decrease under ~40 milli-GPU ties with no change; a small growth loses a point.
        assert_eq!(fgd_score(-30.0), 50.0);
        assert_eq!(fgd_score(-50.0), 51.0);
        assert_eq!(fgd_score(10.0), 49.0);
        assert_eq!(fgd_score(-1e9), 100.0);
        assert_eq!(fgd_score(1e9), 0.0);
    }

    #[test]
    fn berth_breaks_fgd_ties_by_the_gpus_the_cpu_can_feed() {
        use crate::cluster::{ClusterSpec, NodeAttributes, NodeGpus, NodeSpec};
        use crate::frag::TaskType;
        use crate::ids::TaskId;
        use crate::resources::{GpuModel, TaskShape};
        // Two idle 2-GPU nodes: node 0 has CPU for two typical tasks, node 1 for many.
        let node = |cpu: u64| NodeSpec {
            id: NodeId(0),
            name: String::new(),
            capacity: Resources::new(cpu, 1 << 20, 0, 0),
            gpus: Some(NodeGpus {
                count: 2,
                model: GpuModel::new("T4"),
            }),
            attributes: NodeAttributes::default(),
        };
        let view = ClusterView::new(&ClusterSpec::from_nodes([node(3500), node(64000)]));
        let types = TaskTypes {
            types: vec![TaskType {
                cpu_milli: 1500,
                mem_mib: 0,
                gpu: GpuDemand::Whole(1),
                gpu_models: vec![],
                weight: 1.0,
            }],
        };
        // A CPU-only task leaves node 0 CPU for one typical task: FGD sees no change on
        // either node (one task still fits) and takes the lowest node; Berth sees node 0's
        // second GPU starved and takes node 1.
        let task = TaskRequest::new(
            TaskId(0),
            JobId(0),
            TaskShape::new(Resources::new(1000, 1024, 0, 0)),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for (policy, want) in [(Policy::single(ScorerKind::Fgd), 0), (Policy::berth(), 1)] {
            let mut placer = Placer::new(policy)
                .unwrap()
                .with_typical_types(types.clone());
            let a = placer.place_one(&view, &task, &mut rng).unwrap();
            assert_eq!(a.node, NodeId(want), "{}", placer.policy().name);
        }
        // A task that needs node 0's spare CPU anyway ties on both measures: lowest node.
        let gpu_task = TaskRequest::new(
            TaskId(1),
            JobId(1),
            TaskShape::new(Resources::new(1500, 1024, 0, 0)).with_gpu(GpuDemand::Whole(1)),
        );
        let mut placer = Placer::new(Policy::berth())
            .unwrap()
            .with_typical_types(types);
        let a = placer.place_one(&view, &gpu_task, &mut rng).unwrap();
        assert_eq!(a.node, NodeId(0));
    }

    #[test]
    fn best_fit_device_takes_least_free_that_fits() {
        assert_eq!(best_fit_device(&[1000, 300, 600, 500], 500), Some(3));
        assert_eq!(best_fit_device(&[1000, 300], 500), Some(0));
        assert_eq!(best_fit_device(&[400, 300], 500), None);
    }

    #[test]
    fn policies_parse_from_toml_with_field_paths() {
        let p = Policy::from_toml(
            "name = \"mine\"\nscorers = [{ scorer = \"fgd\", weight = 1.0 }, { scorer = \"best_fit\" }]\n[tier_pools]\ncritical = [\"reserved\"]\n",
        )
        .unwrap();
        assert_eq!(p.weight_of(ScorerKind::BestFit), 1.0);
        assert_eq!(p.tier_pools[&Tier::Critical], vec!["reserved".to_string()]);
        let e = Policy::from_toml("scorers = [{ scorer = \"fgd\", wieght = 1.0 }]").unwrap_err();
        assert!(e.to_string().contains("scorers[0]"), "{e}");
        let e = Policy::from_toml("scorers = [{ scorer = \"fgd\", weight = -1.0 }]").unwrap_err();
        assert_eq!(
            e,
            PlaceError::BadWeight {
                index: 0,
                weight: -1.0
            }
        );
        for name in Policy::PRESETS {
            Policy::preset(name).unwrap().validate().unwrap();
        }
        assert!(Policy::preset("nope").is_err());
    }

    /// 1,000 identical nodes in two zones are two classes (then four, with a few used); a
    /// decision scores one node per class plus the job's own nodes, and a refusal still
    /// counts every node.
    #[test]
    fn identical_nodes_share_a_class_and_refusals_count_every_node() {
        use crate::cluster::{ClusterSpec, NodeAttributes, NodeSpec};
        use crate::ids::TaskId;
        use crate::job::Constraints;
        use crate::resources::TaskShape;
        let spec = ClusterSpec::from_nodes((0..1000).map(|i| NodeSpec {
            id: NodeId(0),
            name: format!("n{i}"),
            capacity: Resources::new(4000, 8192, 0, 0),
            gpus: None,
            attributes: NodeAttributes {
                zone: if i % 2 == 0 { "a" } else { "b" }.to_string(),
                ..Default::default()
            },
        }));
        let mut view = ClusterView::new(&spec);
        let mut placer = Placer::new(Policy::single(ScorerKind::BestFit)).unwrap();
        assert!(placer.is_indexed());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut unique = Constraints::default();
        unique.hard.push(Constraint::UniqueHost);
        let unique = Arc::new(unique);
        // Unique host: three tasks of one job on three nodes (the lowest of each class first).
        let mut nodes = Vec::new();
        for t in 0..3 {
            let req = TaskRequest::new(
                TaskId(t),
                JobId(1),
                TaskShape::new(Resources::new(1000, 1024, 0, 0)),
            )
            .with_constraints(unique.clone());
            let a = placer.place_one(&view, &req, &mut rng).unwrap();
            view.apply(&a);
            nodes.push(a.node.0);
        }
        assert_eq!(nodes, vec![0, 1, 2]);
        // Idle and used nodes of zone a, idle and used of zone b.
        placer.classes.as_mut().unwrap().sync(&view);
        assert_eq!(placer.classes.as_ref().unwrap().len(), 4);
        let too_big = TaskRequest::new(
            TaskId(9),
            JobId(2),
            TaskShape::new(Resources::new(8000, 1024, 0, 0)),
        );
        let u = placer.place_one(&view, &too_big, &mut rng).unwrap_err();
        assert_eq!(u.reasons.0.values().sum::<u32>(), 1000);
        assert_eq!(u.reasons.0[&FilterReason::InsufficientCpu], 1000);
    }
}
