//! MILP placement against the heuristic it is warm-started from, against brute force on tiny
//! instances, and on random small instances (property tests). No timing: every instance here
//! solves to optimality well within the generous limit, and the assertions are about
//! optimality properties, not speed.
#![cfg(feature = "milp")]

use berth_solver::milp::{
    check_plan, place_milp, relative_gap, score_plan, MilpConfig, MilpObjective, MilpStatus,
};
use berth_solver::{
    Assignment, ClusterSpec, ClusterView, Constraint, Constraints, GpuDemand, GpuModel, GpuSlice,
    JobId, NodeAttributes, NodeGpus, NodeId, NodeSpec, Policy, Resources, ScorerKind, TaskId,
    TaskRequest, TaskShape,
};
use proptest::prelude::*;
use std::sync::Arc;

const GIB: u64 = 1024;

fn node(cpu: u64, mem_gib: u64, gpus: u8, model: &str, zone: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(0),
        name: String::new(),
        capacity: Resources::new(cpu * 1000, mem_gib * GIB, 0, 0),
        gpus: (gpus > 0).then(|| NodeGpus {
            count: gpus,
            model: GpuModel::new(model),
        }),
        attributes: NodeAttributes {
            zone: zone.into(),
            instance_type: String::new(),
            pool: String::new(),
            labels: Default::default(),
        },
    }
}

fn shape(cpu_milli: u64, mem_gib: u64, gpu: GpuDemand) -> TaskShape {
    TaskShape::new(Resources::new(cpu_milli, mem_gib * GIB, 0, 0)).with_gpu(gpu)
}

fn generous() -> MilpConfig {
    MilpConfig {
        time_limit_ms: 120_000,
        mip_gap: 0.0,
        ..MilpConfig::default()
    }
}

/// Runs the MILP and checks what must always hold of its result.
fn run(
    view: &ClusterView,
    tasks: &[TaskRequest],
    policy: &Policy,
    cfg: &MilpConfig,
) -> berth_solver::milp::MilpResult {
    let mut v = view.clone();
    let mut rng = policy.rng();
    let r = place_milp(&mut v, tasks, policy, &mut rng, cfg).expect("valid input");
    check_plan(view, tasks, &r.plan).expect("the MILP's plan passes the plan check");
    check_plan(view, tasks, &r.heuristic_plan).expect("the heuristic's plan passes the plan check");
    // The view holds exactly the plan.
    assert_eq!(
        v.placed_tasks(),
        view.placed_tasks() + r.plan.assignments.len()
    );
    for a in &r.plan.assignments {
        assert_eq!(v.assignment(a.task), Some(a));
    }
    // Never worse than the warm start; the objective is the plan's own.
    assert!(
        r.objective <= r.heuristic_objective + 1e-9,
        "{} > {}",
        r.objective,
        r.heuristic_objective
    );
    let sc = score_plan(view, &r.plan);
    let term = match cfg.objective {
        MilpObjective::MinNodes => sc.nodes_opened as f64,
        MilpObjective::MinCost => sc.cost_opened_usd,
        MilpObjective::MinGpuFragmentation => sc.devices_fragmented as f64,
    };
    assert!((r.objective - (r.big * sc.unplaced as f64 + term)).abs() < 1e-6);
    if let Some(b) = r.best_bound {
        assert!(
            b <= r.objective + 1e-6,
            "bound {b} > objective {}",
            r.objective
        );
        assert_eq!(r.gap, Some(relative_gap(r.objective, b)));
    }
    // Every unplaced task carries reasons.
    assert!(r.plan.unplaced.iter().all(|u| !u.reasons.is_empty()));
    r
}

fn tasks_of(
    job: u64,
    first_task: u64,
    shapes: &[TaskShape],
    constraints: Constraints,
    gang: bool,
) -> Vec<TaskRequest> {
    let c = Arc::new(constraints);
    shapes
        .iter()
        .enumerate()
        .map(|(k, s)| {
            TaskRequest::new(TaskId(first_task + k as u64), JobId(job), s.clone())
                .with_constraints(c.clone())
                .with_gang(gang)
        })
        .collect()
}

/// The minimum of `BIG * unplaced + nodes opened` over every assignment of tasks to nodes (or
/// none), checking each node's fit exactly (devices by backtracking). Independent of the MILP.
fn brute_force_min_nodes(view: &ClusterView, tasks: &[TaskRequest], big: f64) -> f64 {
    let n = view.len();
    let mut best = f64::INFINITY;
    let mut choice = vec![0usize; tasks.len()]; // 0 = unplaced, k = node k-1
    loop {
        let mut ok = true;
        let mut opened = 0;
        for j in 0..n {
            let on: Vec<&TaskShape> = (0..tasks.len())
                .filter(|&i| choice[i] == j + 1)
                .map(|i| &tasks[i].shape)
                .collect();
            if on.is_empty() {
                continue;
            }
            if view.task_count(NodeId(j as u32)) == 0 {
                opened += 1;
            }
            if !node_fits(view, NodeId(j as u32), &on) {
                ok = false;
                break;
            }
        }
        if ok {
            let unplaced = choice.iter().filter(|&&c| c == 0).count();
            best = best.min(big * unplaced as f64 + opened as f64);
        }
        let mut i = 0;
        while i < tasks.len() && choice[i] == n {
            choice[i] = 0;
            i += 1;
        }
        if i == tasks.len() {
            break;
        }
        choice[i] += 1;
    }
    best
}

fn node_fits(view: &ClusterView, node: NodeId, on: &[&TaskShape]) -> bool {
    let mut free = view.free(node);
    for s in on {
        match free.checked_sub(&s.resources) {
            Some(f) => free = f,
            None => return false,
        }
    }
    let model = view.node(node).gpu_model().cloned();
    if on
        .iter()
        .any(|s| !s.gpu.is_none() && !model.as_ref().is_some_and(|m| s.accepts_model(m)))
    {
        return false;
    }
    let mut devices: Vec<u16> = view.gpu_free(node).to_vec();
    let whole: u32 = on
        .iter()
        .map(|s| {
            if let GpuDemand::Whole(k) = s.gpu {
                u32::from(k)
            } else {
                0
            }
        })
        .sum();
    // Whole devices: any fully free ones (which ones does not matter for the shares left, as
    // fully free devices are interchangeable).
    let mut need = whole;
    for d in devices.iter_mut() {
        if need > 0 && *d == 1000 {
            *d = 0;
            need -= 1;
        }
    }
    if need > 0 {
        return false;
    }
    let shares: Vec<u16> = on
        .iter()
        .filter_map(|s| {
            if let GpuDemand::Milli(m) = s.gpu {
                Some(m)
            } else {
                None
            }
        })
        .collect();
    fn fit(shares: &[u16], devices: &mut [u16]) -> bool {
        let Some((&m, rest)) = shares.split_first() else {
            return true;
        };
        for d in 0..devices.len() {
            if devices[d] >= m {
                devices[d] -= m;
                if fit(rest, devices) {
                    return true;
                }
                devices[d] += m;
            }
        }
        false
    }
    fit(&shares, &mut devices)
}

#[test]
fn small_instance_is_optimal_and_no_worse_than_the_heuristic() {
    // 8 nodes in 2 zones, 20 tasks of 3 jobs, GPU shares and whole GPUs mixed.
    let mut nodes = Vec::new();
    for z in ["a", "b"] {
        nodes.push(node(16, 64, 0, "", z));
        nodes.push(node(16, 64, 0, "", z));
        nodes.push(node(32, 128, 4, "T4", z));
        nodes.push(node(8, 32, 2, "A10G", z));
    }
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let mut tasks = tasks_of(
        1,
        0,
        &vec![shape(3000, 10, GpuDemand::None); 8],
        Constraints::default(),
        false,
    );
    tasks.extend(tasks_of(
        2,
        100,
        &vec![shape(2000, 8, GpuDemand::Milli(400)); 6],
        Constraints {
            hard: vec![Constraint::ZoneBalance { max_skew: 1 }],
            soft: vec![],
        },
        false,
    ));
    tasks.extend(tasks_of(
        3,
        200,
        &vec![shape(4000, 16, GpuDemand::Whole(1)); 6],
        Constraints::default(),
        false,
    ));
    for policy in [
        Policy::single(ScorerKind::FirstFit),
        Policy::single(ScorerKind::WorstFit),
        Policy::berth(),
    ] {
        let r = run(&view, &tasks, &policy, &generous());
        assert_eq!(
            r.status,
            MilpStatus::Optimal,
            "{}: {}",
            policy.name,
            r.message
        );
        assert_eq!(r.unplaced, 0);
        assert_eq!(r.gap, Some(0.0));
        assert!(r.best_bound.is_some());
        // Nodes opened against the bound: equal at optimality (within HiGHS' tolerance).
        assert!((r.best_bound.unwrap() - r.nodes_opened as f64).abs() < 1e-6);
    }
}

/// 80 tasks of just over a third of a node each on 60 identical nodes (two fit per node, three
/// never do: 40 nodes are needed), in two zones, one job zone-balanced: thousands of binaries
/// and a weak LP bound (about 28 nodes).
fn hard_instance() -> (ClusterView, Vec<TaskRequest>) {
    let nodes: Vec<NodeSpec> = (0..60)
        .map(|k| node(10, 40, 0, "", if k % 2 == 0 { "a" } else { "b" }))
        .collect();
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let shapes: Vec<TaskShape> = (0..80u64)
        .map(|k| shape(3400 + (k * 37) % 300, 13, GpuDemand::None))
        .collect();
    let mut tasks = tasks_of(1, 0, &shapes[..40], Constraints::default(), false);
    tasks.extend(tasks_of(
        2,
        1000,
        &shapes[40..],
        Constraints {
            hard: vec![Constraint::ZoneBalance { max_skew: 1 }],
            soft: vec![],
        },
        false,
    ));
    (view, tasks)
}

#[test]
fn out_of_time_the_heuristic_plan_is_returned() {
    // A 1 ms limit stops HiGHS long before it can improve on the warm start (its
    // presolve and the root LP over 80 x 60 pairs alone take longer): the answer is the heuristic's plan, flagged as such,
    // never an error and never a worse plan.
    let (view, tasks) = hard_instance();
    let cfg = MilpConfig {
        time_limit_ms: 1,
        mip_gap: 0.0,
        ..MilpConfig::default()
    };
    let r = run(&view, &tasks, &Policy::single(ScorerKind::WorstFit), &cfg);
    assert_eq!(
        r.status,
        MilpStatus::FellBackToHeuristic,
        "status {:?}: {}",
        r.status,
        r.message
    );
    assert_eq!(r.plan, r.heuristic_plan);
    assert_eq!(r.objective, r.heuristic_objective);
    assert_eq!(r.unplaced, 0);
}

#[test]
fn a_work_limit_keeps_the_best_incumbent_and_reports_its_gap() {
    // Worst fit opens every node it can; one branch-and-bound node with the MILP's own
    // heuristics must not prove optimality on this instance, and whatever it returns is no
    // worse than the warm start, with a bound below its objective (checked in `run`).
    let (view, tasks) = hard_instance();
    let cfg = MilpConfig {
        time_limit_ms: 120_000,
        node_limit: Some(1),
        mip_gap: 0.0,
        warm_start_best_fit: false,
        ..MilpConfig::default()
    };
    let r = run(&view, &tasks, &Policy::single(ScorerKind::WorstFit), &cfg);
    assert_eq!(score_plan(&view, &r.heuristic_plan).nodes_opened, 60);
    assert!(
        matches!(
            r.status,
            MilpStatus::TimeLimit | MilpStatus::FellBackToHeuristic
        ),
        "status {:?}",
        r.status
    );
    if r.status == MilpStatus::TimeLimit {
        assert!(r.objective < r.heuristic_objective);
        assert!(r.gap.is_some_and(|g| g > 0.0), "gap {:?}", r.gap);
    } else {
        assert_eq!(r.plan, r.heuristic_plan);
    }
}

#[test]
fn worst_fit_is_improved_upon() {
    // Spreading 6 small tasks over 6 empty nodes opens 6; one node holds them all.
    let nodes: Vec<NodeSpec> = (0..6).map(|_| node(8, 32, 0, "", "a")).collect();
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let tasks = tasks_of(
        1,
        0,
        &vec![shape(1000, 4, GpuDemand::None); 6],
        Constraints::default(),
        false,
    );
    let cfg = MilpConfig {
        warm_start_best_fit: false,
        ..generous()
    };
    let r = run(&view, &tasks, &Policy::single(ScorerKind::WorstFit), &cfg);
    assert_eq!(score_plan(&view, &r.heuristic_plan).nodes_opened, 6);
    assert_eq!(r.nodes_opened, 1);
    assert_eq!(r.status, MilpStatus::Optimal);
    assert!(r.objective < r.heuristic_objective);
}

#[test]
fn tiny_instances_match_brute_force() {
    // 3 nodes (one already running a task), 6 tasks mixing shares and whole GPUs so that device
    // packing decides: shares 600+600 cannot share a device, 600+400 can.
    let nodes = vec![
        node(8, 32, 2, "T4", "a"),
        node(8, 32, 2, "T4", "a"),
        node(16, 64, 4, "T4", "b"),
    ];
    let mut view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    view.apply(&Assignment {
        task: TaskId(999),
        job: JobId(99),
        node: NodeId(2),
        resources: Resources::new(1000, GIB, 0, 0),
        gpus: vec![GpuSlice {
            device: 0,
            milli: 500,
        }],
        exclusive: false,
    });
    let shapes = [
        shape(2000, 4, GpuDemand::Milli(600)),
        shape(2000, 4, GpuDemand::Milli(600)),
        shape(2000, 4, GpuDemand::Milli(400)),
        shape(1000, 2, GpuDemand::Whole(2)),
        shape(4000, 8, GpuDemand::Whole(1)),
        shape(3000, 8, GpuDemand::None),
    ];
    let tasks = tasks_of(1, 0, &shapes, Constraints::default(), false);
    for policy in [
        Policy::single(ScorerKind::FirstFit),
        Policy::single(ScorerKind::WorstFit),
    ] {
        let r = run(&view, &tasks, &policy, &generous());
        let opt = brute_force_min_nodes(&view, &tasks, r.big);
        assert!(
            (r.objective - opt).abs() < 1e-9,
            "{}: milp {} vs brute force {opt}",
            policy.name,
            r.objective
        );
        assert_eq!(r.status, MilpStatus::Optimal);
    }
}

#[test]
fn constraints_hold_unique_host_zone_balance_gang_exclusive() {
    let mut nodes = Vec::new();
    for z in ["a", "b", "c"] {
        for _ in 0..2 {
            nodes.push(node(8, 32, 0, "", z));
        }
    }
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let spread = Constraints {
        hard: vec![
            Constraint::UniqueHost,
            Constraint::ZoneBalance { max_skew: 0 },
        ],
        soft: vec![],
    };
    let mut tasks = tasks_of(
        1,
        0,
        &vec![shape(1000, 1, GpuDemand::None); 6],
        spread,
        false,
    );
    // A gang that cannot fit whole (4 tasks of 8 cores, but only 6 nodes and job 3 takes some).
    tasks.extend(tasks_of(
        2,
        100,
        &vec![shape(8000, 8, GpuDemand::None); 7],
        Constraints::default(),
        true,
    ));
    tasks.extend(tasks_of(
        3,
        200,
        &[shape(1000, 1, GpuDemand::None)],
        Constraints {
            hard: vec![Constraint::ExclusiveHost],
            soft: vec![],
        },
        false,
    ));
    let r = run(
        &view,
        &tasks,
        &Policy::single(ScorerKind::FirstFit),
        &generous(),
    );
    // Job 1: one task per node, two per zone.
    let nodes1: Vec<NodeId> = r
        .plan
        .assignments
        .iter()
        .filter(|a| a.job == JobId(1))
        .map(|a| a.node)
        .collect();
    assert_eq!(nodes1.len(), 6);
    // The gang is entirely unplaced (7 full nodes needed, 6 exist).
    assert!(r.plan.assignments.iter().all(|a| a.job != JobId(2)));
    assert_eq!(
        r.plan.unplaced.iter().filter(|u| u.job == JobId(2)).count(),
        7
    );
    // The exclusive task cannot share a node with job 1's tasks, and job 1 is on every node.
    assert!(r.plan.unplaced.iter().any(|u| u.job == JobId(3)));
}

#[test]
fn fragmentation_objective_keeps_whole_devices_free() {
    // Two 4-GPU nodes, 4 shares of 250: one device can take all four. A spreading heuristic
    // breaks four devices.
    let nodes = vec![node(32, 128, 4, "T4", "a"), node(32, 128, 4, "T4", "a")];
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let tasks = tasks_of(
        1,
        0,
        &vec![shape(1000, 1, GpuDemand::Milli(250)); 4],
        Constraints::default(),
        false,
    );
    let cfg = MilpConfig {
        objective: MilpObjective::MinGpuFragmentation,
        warm_start_best_fit: false,
        ..generous()
    };
    let r = run(&view, &tasks, &Policy::single(ScorerKind::WorstFit), &cfg);
    assert_eq!(r.devices_fragmented, 1);
    assert_eq!(r.status, MilpStatus::Optimal);
}

#[test]
fn cost_objective_uses_catalogue_prices_and_refuses_unknown_types() {
    let mut cheap = node(8, 32, 0, "", "a");
    cheap.attributes.instance_type = "m5.2xlarge".into();
    let mut dear = node(8, 32, 0, "", "a");
    dear.attributes.instance_type = "r5.2xlarge".into();
    // The dear node comes first: first-fit uses it; the cost objective moves to the cheap one.
    let view = ClusterView::new(&ClusterSpec::from_nodes(vec![dear, cheap]));
    let tasks = tasks_of(
        1,
        0,
        &vec![shape(1000, 4, GpuDemand::None); 3],
        Constraints::default(),
        false,
    );
    let cfg = MilpConfig {
        objective: MilpObjective::MinCost,
        warm_start_best_fit: false,
        ..generous()
    };
    let r = run(&view, &tasks, &Policy::single(ScorerKind::FirstFit), &cfg);
    assert!(r.plan.assignments.iter().all(|a| a.node == NodeId(1)));
    assert!((r.objective - 0.384).abs() < 1e-9, "{}", r.objective);

    let unknown = ClusterView::new(&ClusterSpec::from_nodes(vec![node(8, 32, 0, "", "a")]));
    let mut v = unknown.clone();
    let policy = Policy::single(ScorerKind::FirstFit);
    let e = place_milp(&mut v, &tasks, &policy, &mut policy.rng(), &cfg).unwrap_err();
    assert!(e.to_string().contains("node-0"), "{e}");
}

#[test]
fn decomposition_solves_in_chunks_with_the_combinatorial_bound_only() {
    let nodes: Vec<NodeSpec> = (0..6)
        .map(|k| node(8, 32, 0, "", if k % 2 == 0 { "a" } else { "b" }))
        .collect();
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let mut tasks = Vec::new();
    for j in 0..4 {
        tasks.extend(tasks_of(
            j,
            j * 100,
            &vec![shape(2000, 4, GpuDemand::None); 3],
            Constraints::default(),
            false,
        ));
    }
    let cfg = MilpConfig {
        pairs_max: 20,
        warm_start_best_fit: false,
        ..generous()
    };
    let r = run(&view, &tasks, &Policy::single(ScorerKind::WorstFit), &cfg);
    assert!(r.parts > 1, "{} parts", r.parts);
    // No solver bound holds for the whole batch; the combinatorial one does: twelve 2-core
    // tasks on 8-core nodes need three.
    assert_eq!(r.best_bound, Some(3.0));
    assert_eq!(r.unplaced, 0);
}

#[test]
fn same_input_same_plan() {
    let nodes: Vec<NodeSpec> = (0..5)
        .map(|k| node(8, 32, 2, "T4", if k < 3 { "a" } else { "b" }))
        .collect();
    let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
    let shapes: Vec<TaskShape> = (0..10)
        .map(|k| {
            shape(
                500 * (1 + k % 4),
                2,
                if k % 3 == 0 {
                    GpuDemand::Milli(300)
                } else {
                    GpuDemand::None
                },
            )
        })
        .collect();
    let tasks = tasks_of(1, 0, &shapes, Constraints::default(), false);
    let a = run(&view, &tasks, &Policy::berth(), &generous());
    let b = run(&view, &tasks, &Policy::berth(), &generous());
    assert_eq!(a.plan, b.plan);
    assert_eq!(a.status, MilpStatus::Optimal);
}

#[test]
fn bad_input_is_an_error() {
    let view = ClusterView::new(&ClusterSpec::from_nodes(vec![node(8, 32, 0, "", "a")]));
    let t = tasks_of(
        1,
        0,
        &vec![shape(1000, 1, GpuDemand::None); 2],
        Constraints::default(),
        false,
    );
    let dup = vec![t[0].clone(), t[0].clone()];
    let policy = Policy::single(ScorerKind::FirstFit);
    let mut v = view.clone();
    assert!(place_milp(&mut v, &dup, &policy, &mut policy.rng(), &generous()).is_err());
    let cfg = MilpConfig {
        mip_gap: -1.0,
        ..generous()
    };
    let e = place_milp(&mut v, &t, &policy, &mut policy.rng(), &cfg).unwrap_err();
    assert!(e.to_string().contains("mip_gap"), "{e}");
}

// ------------------------------------------------------------------------------------------
// Property tests.
// ------------------------------------------------------------------------------------------

fn arb_node() -> impl Strategy<Value = NodeSpec> {
    (
        prop_oneof![Just(4u64), Just(8), Just(16)],
        prop_oneof![Just(0u8), Just(2), Just(4)],
        prop_oneof![Just("T4"), Just("A10G")],
        0..2usize,
    )
        .prop_map(|(cpu, g, m, z)| node(cpu, cpu * 4, g, m, ["a", "b"][z]))
}

fn arb_shape() -> impl Strategy<Value = TaskShape> {
    (
        prop_oneof![Just(500u64), Just(1000), Just(2000), Just(4000)],
        prop_oneof![Just(1u64), Just(2), Just(8)],
        prop_oneof![
            3 => Just(GpuDemand::None),
            1 => Just(GpuDemand::Milli(300)),
            1 => Just(GpuDemand::Milli(700)),
            1 => Just(GpuDemand::Whole(1)),
            1 => Just(GpuDemand::Whole(2)),
        ],
    )
        .prop_map(|(c, m, g)| shape(c, m, g))
}

fn arb_constraints() -> impl Strategy<Value = (Constraints, bool)> {
    (any::<bool>(), prop::option::of(0u32..=1), any::<bool>()).prop_map(|(unique, skew, gang)| {
        let mut hard = Vec::new();
        if unique {
            hard.push(Constraint::UniqueHost);
        }
        if let Some(s) = skew {
            hard.push(Constraint::ZoneBalance { max_skew: s });
        }
        (Constraints { hard, soft: vec![] }, gang)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// On random small instances the MILP's plan passes every check, is never worse than the
    /// heuristic, and its bound is below its objective; on the smallest it equals brute force.
    #[test]
    fn random_small_instances(
        nodes in prop::collection::vec(arb_node(), 1..=4),
        jobs in prop::collection::vec((prop::collection::vec(arb_shape(), 1..=3), arb_constraints()), 1..=3),
        objective in prop_oneof![Just(MilpObjective::MinNodes), Just(MilpObjective::MinGpuFragmentation)],
    ) {
        let view = ClusterView::new(&ClusterSpec::from_nodes(nodes));
        let mut tasks = Vec::new();
        for (j, (shapes, (c, gang))) in jobs.iter().enumerate() {
            tasks.extend(tasks_of(j as u64, j as u64 * 100, shapes, c.clone(), *gang));
        }
        let cfg = MilpConfig { objective, ..generous() };
        let r = run(&view, &tasks, &Policy::single(ScorerKind::FirstFit), &cfg);
        prop_assert_eq!(r.status, MilpStatus::Optimal);
        let unconstrained = jobs.iter().all(|(_, (c, gang))| c.hard.is_empty() && !gang);
        if objective == MilpObjective::MinNodes && unconstrained && tasks.len() <= 6 && view.len() <= 3 {
            let opt = brute_force_min_nodes(&view, &tasks, r.big);
            prop_assert!((r.objective - opt).abs() < 1e-9, "milp {} vs brute force {}", r.objective, opt);
        }
    }
}
