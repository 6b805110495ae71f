//! Instance-mix optimisation: fit verified independently of the optimiser's own packer, limits
//! and zone balance respected, the greedy never beating the MILP, and (on tiny instances) the
//! MILP against a brute-force optimum with an exact packing check.

use berth_solver::catalog::{Catalog, InstanceType};
use berth_solver::mix::{
    plan_mix, MixConfig, MixLimits, MixPlan, MixReason, MixRequest, ZoneBalance,
};
use berth_solver::{GpuDemand, GpuModel, Resources, TaskShape};
use proptest::prelude::*;
use std::collections::BTreeMap;

const GIB: u64 = 1024;

fn shape(cpu_milli: u64, mem_mib: u64, gpu: GpuDemand) -> TaskShape {
    TaskShape::new(Resources::new(cpu_milli, mem_mib, 0, 0)).with_gpu(gpu)
}

fn types(names: &[&str]) -> Vec<InstanceType> {
    Catalog::ec2().select(names).expect("known types")
}

fn zones(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("us-east-1{}", (b'a' + i as u8) as char))
        .collect()
}

/// Checks a plan on its own terms: the witness packing fits every instance, covers exactly the
/// demand that is not reported unplaceable, matches the launches, and the price adds up.
fn check_witness(req: &MixRequest, plan: &MixPlan) {
    let by_name: BTreeMap<&str, &InstanceType> =
        req.types.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut placed = vec![0u64; req.demand.len()];
    let mut launched: BTreeMap<(String, String), u32> = BTreeMap::new();
    for inst in &plan.instances {
        let t = by_name[inst.instance_type.as_str()];
        *launched
            .entry((inst.instance_type.clone(), inst.zone.clone()))
            .or_insert(0) += 1;
        let mut used = Resources::ZERO;
        let mut gpu_milli = 0u64;
        for &(s, c) in &inst.tasks {
            let sh = &req.demand[s].0;
            used = used.saturating_add(&sh.resources.saturating_mul(u64::from(c)));
            gpu_milli += u64::from(sh.gpu.total_milli()) * u64::from(c);
            placed[s] += u64::from(c);
            if !sh.gpu.is_none() {
                let model = t.gpu_model().expect("a GPU task on a GPU type");
                assert!(
                    sh.accepts_model(model),
                    "{}: model {model} refused",
                    inst.instance_type
                );
            }
        }
        assert_eq!(
            used, inst.used,
            "{}: used does not add up",
            inst.instance_type
        );
        assert!(
            used.fits_in(&t.capacity()),
            "{}: overcommitted: {used}",
            inst.instance_type
        );
        assert_eq!(inst.gpu_used_milli.len(), usize::from(t.gpu_count()));
        assert!(inst.gpu_used_milli.iter().all(|&m| m <= 1000));
        assert_eq!(
            inst.gpu_used_milli
                .iter()
                .map(|&m| u64::from(m))
                .sum::<u64>(),
            gpu_milli
        );
    }
    let launches: BTreeMap<(String, String), u32> = plan
        .launches
        .iter()
        .map(|l| ((l.instance_type.clone(), l.zone.clone()), l.count))
        .collect();
    assert_eq!(launches, launched, "launches and packed instances differ");
    let cost: u64 = plan
        .launches
        .iter()
        .map(|l| by_name[l.instance_type.as_str()].price_per_hour_micro_usd * u64::from(l.count))
        .sum();
    assert_eq!(cost, plan.cost_per_hour_micro_usd);
    for (s, (sh, c)) in req.demand.iter().enumerate() {
        let unplaced: u64 = plan
            .unplaceable
            .iter()
            .filter(|u| &u.shape == sh)
            .map(|u| u64::from(u.count))
            .sum();
        assert_eq!(
            placed[s] + unplaced,
            u64::from(*c),
            "demand[{s}] not covered"
        );
    }
}

fn check_rules(req: &MixRequest, plan: &MixPlan) {
    let mut n: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for l in &plan.launches {
        n.insert((l.instance_type.as_str(), l.zone.as_str()), l.count);
    }
    let get = |t: &str, z: &str| n.get(&(t, z)).copied().unwrap_or(0);
    let lim = &req.limits;
    let mut total = 0;
    for t in &req.types {
        let per_zone: Vec<u32> = req.zones.iter().map(|z| get(&t.name, z)).collect();
        for &c in &per_zone {
            assert!(
                lim.type_zone_max.is_none_or(|m| c <= m),
                "{}: type_zone_max",
                t.name
            );
        }
        let sum: u32 = per_zone.iter().sum();
        total += sum;
        assert!(
            lim.type_max.get(&t.name).is_none_or(|&m| sum <= m),
            "{}: type_max",
            t.name
        );
        if let ZoneBalance::PerType { max_skew } = req.zone_balance {
            let spread = per_zone.iter().max().unwrap() - per_zone.iter().min().unwrap();
            assert!(
                spread <= max_skew,
                "{}: per-type skew {spread} > {max_skew}: {per_zone:?}",
                t.name
            );
        }
    }
    let zone_totals: Vec<u32> = req
        .zones
        .iter()
        .map(|z| req.types.iter().map(|t| get(&t.name, z)).sum())
        .collect();
    for (z, &c) in req.zones.iter().zip(&zone_totals) {
        assert!(lim.zone_max.get(z).is_none_or(|&m| c <= m), "{z}: zone_max");
    }
    assert!(lim.total_max.is_none_or(|m| total <= m), "total_max");
    if let ZoneBalance::Total { max_skew } = req.zone_balance {
        let spread = zone_totals.iter().max().unwrap() - zone_totals.iter().min().unwrap();
        assert!(
            spread <= max_skew,
            "total skew {spread} > {max_skew}: {zone_totals:?}"
        );
    }
}

fn solve(req: &MixRequest) -> MixPlan {
    let plan = plan_mix(req, &MixConfig::default()).expect("valid request");
    check_witness(req, &plan);
    check_rules(req, &plan);
    plan
}

fn greedy(req: &MixRequest) -> MixPlan {
    let plan = plan_mix(
        req,
        &MixConfig {
            greedy_only: true,
            ..MixConfig::default()
        },
    )
    .expect("valid request");
    check_witness(req, &plan);
    check_rules(req, &plan);
    plan
}

#[test]
fn ten_a100_tasks_take_two_p4d() {
    // Only p4d.24xlarge has A100s (8 per instance): 10 tasks need two.
    let a100 =
        shape(8000, 64 * GIB, GpuDemand::Whole(1)).with_gpu_models(vec![GpuModel::new("A100M40")]);
    let req = MixRequest {
        demand: vec![(a100, 10)],
        types: Catalog::ec2().types.clone(),
        zones: zones(1),
        ..MixRequest::default()
    };
    let plan = solve(&req);
    assert!(plan.unplaceable.is_empty(), "{:?}", plan.unplaceable);
    assert_eq!(plan.instance_count(), 2);
    assert!(plan
        .launches
        .iter()
        .all(|l| l.instance_type == "p4d.24xlarge"));
    let p4d = Catalog::ec2()
        .get("p4d.24xlarge")
        .unwrap()
        .price_per_hour_micro_usd;
    assert_eq!(plan.cost_per_hour_micro_usd, 2 * p4d);
}

#[test]
fn whole_gpu_tasks_of_any_model_take_the_cheapest_gpu_per_task() {
    // 10 tasks of (4 vCPU, 16 GiB, 1 GPU, any model). One per g4dn.xlarge ($0.526, exactly 4
    // vCPU / 16 GiB / 1 T4) costs $5.26; every other host costs more per task: g4dn.12xlarge
    // holds 4 ($3.912 / 4 = $0.978), g5.xlarge $1.006, p3.2xlarge $3.06.
    let t = shape(4000, 16 * GIB, GpuDemand::Whole(1));
    let req = MixRequest {
        demand: vec![(t, 10)],
        types: Catalog::ec2().types.clone(),
        zones: zones(1),
        ..MixRequest::default()
    };
    let plan = solve(&req);
    assert_eq!(plan.launches.len(), 1);
    assert_eq!(plan.launches[0].instance_type, "g4dn.xlarge");
    assert_eq!(plan.launches[0].count, 10);
    if let Some(b) = plan.cost_lower_bound_micro_usd {
        assert!(b <= plan.cost_per_hour_micro_usd);
    }
}

#[test]
fn shapes_no_type_can_host_are_answers_not_errors() {
    let huge = shape(500_000, GIB, GpuDemand::None);
    let h100 =
        shape(1000, GIB, GpuDemand::Whole(1)).with_gpu_models(vec![GpuModel::new("H100M80")]);
    let nine = shape(1000, GIB, GpuDemand::Whole(9));
    let fine = shape(1000, GIB, GpuDemand::None);
    let req = MixRequest {
        demand: vec![
            (huge.clone(), 2),
            (h100.clone(), 1),
            (nine.clone(), 1),
            (fine, 3),
        ],
        types: types(&["m5.large", "g5.48xlarge"]),
        zones: zones(2),
        ..MixRequest::default()
    };
    let plan = solve(&req);
    let reason = |s: &TaskShape| {
        plan.unplaceable
            .iter()
            .find(|u| &u.shape == s)
            .map(|u| u.reason.clone())
    };
    match reason(&huge) {
        Some(MixReason::NoTypeFits(why)) => assert!(why.contains("cpu"), "{why}"),
        other => panic!("{other:?}"),
    }
    match reason(&h100) {
        Some(MixReason::NoTypeFits(why)) => assert!(why.contains("H100M80"), "{why}"),
        other => panic!("{other:?}"),
    }
    match reason(&nine) {
        Some(MixReason::NoTypeFits(why)) => assert!(why.contains("9 GPUs"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.unplaceable_count(), 4);
    assert_eq!(
        plan.instance_count(),
        2,
        "three 1-core tasks on m5.large (2 vCPU): two instances"
    );
}

#[test]
fn zone_balance_per_type_and_total_hold() {
    let demand = vec![
        (shape(1500, 6 * GIB, GpuDemand::None), 7),
        (shape(3000, 4 * GIB, GpuDemand::None), 5),
        (shape(2000, 8 * GIB, GpuDemand::Milli(500)), 3),
    ];
    for rule in [
        ZoneBalance::PerType { max_skew: 0 },
        ZoneBalance::PerType { max_skew: 1 },
        ZoneBalance::Total { max_skew: 1 },
    ] {
        let req = MixRequest {
            demand: demand.clone(),
            types: types(&[
                "m5.large",
                "m5.xlarge",
                "c5.xlarge",
                "r5.large",
                "g4dn.xlarge",
                "g4dn.2xlarge",
            ]),
            zones: zones(3),
            zone_balance: rule,
            ..MixRequest::default()
        };
        let plan = solve(&req);
        assert!(
            plan.unplaceable.is_empty(),
            "{rule:?}: {:?}",
            plan.unplaceable
        );
        let g = greedy(&req);
        assert!(g.unplaceable.is_empty());
        assert!(plan.cost_per_hour_micro_usd <= g.cost_per_hour_micro_usd);
    }
}

#[test]
fn pool_limits_hold_and_excess_demand_is_reported() {
    // 20 tasks of 2 vCPU / 8 GiB: at most 3 m5.2xlarge (4 tasks each) and 2 m5.xlarge (2 each)
    // per the limits: 16 tasks fit, 4 are left with LimitsReached.
    let mut limits = MixLimits {
        type_zone_max: Some(2),
        total_max: Some(5),
        ..MixLimits::default()
    };
    limits.type_max.insert("m5.2xlarge".into(), 3);
    let req = MixRequest {
        demand: vec![(shape(2000, 8 * GIB, GpuDemand::None), 20)],
        types: types(&["m5.xlarge", "m5.2xlarge"]),
        zones: zones(2),
        limits,
        ..MixRequest::default()
    };
    for plan in [solve(&req), greedy(&req)] {
        assert!(plan.instance_count() <= 5);
        assert!(plan.unplaceable_count() >= 4, "{:?}", plan.launches);
        assert!(plan
            .unplaceable
            .iter()
            .all(|u| u.reason == MixReason::LimitsReached));
    }
    // The optimiser places the most the limits allow.
    let best = solve(&req);
    assert_eq!(best.unplaceable_count(), 4, "{:?}", best.launches);
    assert_eq!(best.instance_count(), 5);
}

#[test]
fn bad_requests_name_the_field() {
    let base = MixRequest {
        types: types(&["m5.large"]),
        zones: zones(1),
        ..MixRequest::default()
    };
    let mut r = base.clone();
    r.zones.clear();
    assert!(plan_mix(&r, &MixConfig::default())
        .unwrap_err()
        .to_string()
        .starts_with("zones"));
    let mut r = base.clone();
    r.limits.type_max.insert("m5.huge".into(), 1);
    let e = plan_mix(&r, &MixConfig::default()).unwrap_err().to_string();
    assert!(
        e.contains("limits.type_max") && e.contains("m5.huge"),
        "{e}"
    );
    let mut r = base;
    r.demand.push((shape(1, 1, GpuDemand::Milli(1000)), 1));
    assert!(plan_mix(&r, &MixConfig::default())
        .unwrap_err()
        .to_string()
        .starts_with("demand[0].gpu"));
}

// ------------------------------------------------------------------------------------------
// Brute force on tiny instances: every mix in increasing price, checked by exact packing.
// ------------------------------------------------------------------------------------------

/// Exact feasibility: can `tasks` be packed onto `bins` (capacity, devices) at all? Plain
/// backtracking, independent of the optimiser's packer.
fn packs(tasks: &[&TaskShape], bins: &mut [(Resources, Vec<u16>, Option<GpuModel>)]) -> bool {
    let Some((first, rest)) = tasks.split_first() else {
        return true;
    };
    for b in 0..bins.len() {
        let Some(free) = bins[b].0.checked_sub(&first.resources) else {
            continue;
        };
        let model_ok = bins[b].2.as_ref().is_some_and(|m| first.accepts_model(m));
        let choices: Vec<Vec<(usize, u16)>> = match first.gpu {
            GpuDemand::None => vec![vec![]],
            _ if !model_ok => vec![],
            GpuDemand::Whole(k) => {
                let idle: Vec<usize> = (0..bins[b].1.len())
                    .filter(|&d| bins[b].1[d] == 1000)
                    .collect();
                if idle.len() < usize::from(k) {
                    vec![]
                } else {
                    vec![idle[..usize::from(k)].iter().map(|&d| (d, 1000)).collect()]
                }
            }
            GpuDemand::Milli(m) => (0..bins[b].1.len())
                .filter(|&d| bins[b].1[d] >= m)
                .map(|d| vec![(d, m)])
                .collect(),
        };
        for choice in choices {
            let saved = bins[b].clone();
            bins[b].0 = free;
            for &(d, m) in &choice {
                bins[b].1[d] -= m;
            }
            if packs(rest, bins) {
                return true;
            }
            bins[b] = saved;
        }
    }
    false
}

/// The cheapest single-zone mix (at most `per_type_max` of each type) that packs the demand:
/// every count vector, cheapest first, the first that passes exact packing wins. Mixes whose
/// summed capacity or GPU count falls short are ruled out before the (exponential) packing.
fn brute_force_cost(req: &MixRequest, per_type_max: u32) -> Option<u64> {
    let tasks: Vec<&TaskShape> = req
        .demand
        .iter()
        .flat_map(|(s, c)| std::iter::repeat_n(s, *c as usize))
        .collect();
    let need = tasks
        .iter()
        .fold(Resources::default(), |a, t| a.saturating_add(&t.resources));
    let need_gpu_milli: u64 = tasks
        .iter()
        .map(|t| match t.gpu {
            GpuDemand::None => 0,
            GpuDemand::Whole(k) => 1000 * u64::from(k),
            GpuDemand::Milli(m) => u64::from(m),
        })
        .sum();
    let nt = req.types.len();
    let mut mixes: Vec<(u64, Vec<u32>)> = Vec::new();
    let mut counts = vec![0u32; nt];
    loop {
        let cost: u64 = req
            .types
            .iter()
            .zip(counts.iter())
            .map(|(t, &n)| t.price_per_hour_micro_usd * u64::from(n))
            .sum();
        mixes.push((cost, counts.clone()));
        // Next count vector.
        let mut i = 0;
        while i < nt && counts[i] == per_type_max {
            counts[i] = 0;
            i += 1;
        }
        if i == nt {
            break;
        }
        counts[i] += 1;
    }
    mixes.sort();
    for (cost, counts) in mixes {
        let mut bins: Vec<(Resources, Vec<u16>, Option<GpuModel>)> = Vec::new();
        for (ty, &n) in req.types.iter().zip(counts.iter()) {
            for _ in 0..n {
                bins.push((
                    ty.capacity(),
                    vec![1000; usize::from(ty.gpu_count())],
                    ty.gpu_model().cloned(),
                ));
            }
        }
        let have = bins
            .iter()
            .fold(Resources::default(), |a, b| a.saturating_add(&b.0));
        let have_gpu_milli: u64 = bins.iter().map(|b| 1000 * b.1.len() as u64).sum();
        if have.checked_sub(&need).is_none() || need_gpu_milli > have_gpu_milli {
            continue;
        }
        if packs(&tasks, &mut bins) {
            return Some(cost);
        }
    }
    None
}

fn tiny_types() -> Vec<InstanceType> {
    types(&[
        "c5.large",
        "m5.large",
        "r5.large",
        "m5.xlarge",
        "g4dn.xlarge",
        "g4dn.12xlarge",
    ])
}

fn arb_shape() -> impl Strategy<Value = TaskShape> {
    (
        prop_oneof![
            Just(250u64),
            Just(500),
            Just(1000),
            Just(1500),
            Just(2000),
            Just(3000)
        ],
        prop_oneof![
            Just(512u64),
            Just(1024),
            Just(2048),
            Just(4096),
            Just(6144),
            Just(12288)
        ],
        prop_oneof![
            4 => Just(GpuDemand::None),
            1 => Just(GpuDemand::Milli(300)),
            1 => Just(GpuDemand::Milli(600)),
            1 => Just(GpuDemand::Whole(1)),
        ],
    )
        .prop_map(|(c, m, g)| shape(c, m, g))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Greedy and MILP plans are valid; the MILP is never dearer than the greedy; the proven
    /// bound is below both; on these tiny instances the brute-force optimum lies between the
    /// bound and the MILP, and equals the MILP when its first answer packed.
    #[test]
    fn mix_against_greedy_and_brute_force(
        demand in prop::collection::vec((arb_shape(), 1u32..=3), 1..=3),
    ) {
        let req = MixRequest { demand, types: tiny_types(), zones: zones(1), ..MixRequest::default() };
        let tasks: u32 = req.demand.iter().map(|(_, c)| c).sum();
        prop_assume!(tasks <= 6);
        let g = greedy(&req);
        let m = solve(&req);
        prop_assert!(g.unplaceable.is_empty() && m.unplaceable.is_empty());
        prop_assert!(m.cost_per_hour_micro_usd <= g.cost_per_hour_micro_usd);
        prop_assert_eq!(m.greedy_cost_per_hour_micro_usd, g.cost_per_hour_micro_usd);
        // No mix needs more instances of one type than there are tasks.
        let opt = brute_force_cost(&req, tasks).expect("a mix exists within one instance per task");
        prop_assert!(opt <= m.cost_per_hour_micro_usd, "brute force {} > milp {}", opt, m.cost_per_hour_micro_usd);
        if let Some(b) = m.cost_lower_bound_micro_usd {
            prop_assert!(b <= opt, "bound {} > optimum {}", b, opt);
            if m.method == berth_solver::mix::MixMethod::Milp && m.repair_rounds == 0 {
                prop_assert_eq!(m.cost_per_hour_micro_usd, opt);
            }
        }
    }
}
