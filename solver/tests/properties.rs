//! Property tests of placement over random clusters, tasks and policies:
//! no overcommit on any dimension or device; every task either assigned or unplaced with reasons;
//! same inputs and seed give the same plan; hard constraints hold in the result.

use berth_solver::{
    place, ClusterSpec, ClusterView, Constraint, Constraints, GpuDemand, GpuModel, JobId,
    NodeAttributes, NodeGpus, NodeId, NodeSpec, Plan, Policy, Resources, ScorerKind, TaskId,
    TaskRequest, TaskShape, TieBreak, Tier, WeightedScorer,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const ZONES: [&str; 3] = ["a", "b", "c"];
const MODELS: [&str; 2] = ["T4", "V100"];
const POOLS: [&str; 2] = ["flex", "reserved"];

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    (
        1u64..=16,
        1u64..=64,
        0u8..=4,
        0usize..2,
        0usize..3,
        0usize..2,
        any::<bool>(),
    )
        .prop_map(|(cpu, mem, gpus, model, zone, pool, arm)| NodeSpec {
            id: NodeId(0),
            name: String::new(),
            capacity: Resources::new(cpu * 1000, mem * 1024, 100, 0),
            gpus: (gpus > 0).then(|| NodeGpus {
                count: gpus,
                model: GpuModel::new(MODELS[model]),
            }),
            attributes: NodeAttributes {
                zone: ZONES[zone].to_string(),
                instance_type: String::new(),
                pool: POOLS[pool].to_string(),
                labels: [(
                    "arch".to_string(),
                    if arm { "arm" } else { "x86" }.to_string(),
                )]
                .into_iter()
                .collect(),
            },
        })
}

/// A job template: shape, hard/soft constraints, tier, gang, task count.
#[derive(Clone, Debug)]
struct JobT {
    shape: TaskShape,
    constraints: Constraints,
    tier: Tier,
    gang: bool,
    tasks: usize,
}

fn gpu_strategy() -> impl Strategy<Value = GpuDemand> {
    prop_oneof![
        3 => Just(GpuDemand::None),
        2 => (1u16..1000).prop_map(GpuDemand::Milli),
        1 => (1u8..=3).prop_map(GpuDemand::Whole),
    ]
}

fn constraint_strategy() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        (1u32..=2).prop_map(|max_skew| Constraint::ZoneBalance { max_skew }),
        Just(Constraint::UniqueHost),
        Just(Constraint::ExclusiveHost),
        any::<bool>().prop_map(|arm| Constraint::AttributeEquals {
            key: "arch".into(),
            value: if arm { "arm" } else { "x86" }.into()
        }),
        Just(Constraint::AttributeIn {
            key: "zone".into(),
            values: vec!["a".into(), "b".into()]
        }),
    ]
}

fn job_strategy() -> impl Strategy<Value = JobT> {
    (
        0u64..=6000,
        0u64..=24,
        0u64..=60,
        gpu_strategy(),
        prop::option::of(0usize..2),
        prop::collection::vec(constraint_strategy(), 0..=2),
        prop::collection::vec(constraint_strategy(), 0..=2),
        any::<bool>(),
        prop::bool::weighted(0.2),
        1usize..=5,
    )
        .prop_map(
            |(cpu, mem, disk, gpu, model, hard, soft, critical, gang, tasks)| {
                let models = match (gpu, model) {
                    (GpuDemand::None, _) | (_, None) => vec![],
                    (_, Some(m)) => vec![GpuModel::new(MODELS[m])],
                };
                JobT {
                    shape: TaskShape::new(Resources::new(cpu, mem * 1024, disk, 0))
                        .with_gpu(gpu)
                        .with_gpu_models(models),
                    constraints: Constraints { hard, soft },
                    tier: if critical { Tier::Critical } else { Tier::Flex },
                    gang,
                    tasks,
                }
            },
        )
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec((0usize..ScorerKind::ALL.len(), 0.0f64..=2.0), 1..=4),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(scorers, random_ties, restrict, seed)| {
            let mut scorers: Vec<WeightedScorer> = scorers
                .into_iter()
                .map(|(k, weight)| WeightedScorer {
                    scorer: ScorerKind::ALL[k],
                    weight,
                })
                .collect();
            scorers[0].weight = scorers[0].weight.max(0.1);
            let mut tier_pools = BTreeMap::new();
            if restrict {
                tier_pools.insert(Tier::Critical, vec!["reserved".to_string()]);
            }
            Policy {
                name: "prop".into(),
                scorers,
                tier_pools,
                seed,
                tie_break: if random_ties {
                    TieBreak::Random
                } else {
                    TieBreak::LowestNode
                },
                ..Policy::single(ScorerKind::FirstFit)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The view's O(1) and O(nodes) necessary conditions are sound on any state (after a
    /// placement, a release and cordons): the free sums are the sums over schedulable nodes,
    /// and more identical unconstrained tasks than `tasks_that_fit` never all get a node.
    #[test]
    fn free_sums_and_fit_counts_are_sound(
        nodes in prop::collection::vec(node_strategy(), 1..=8),
        jobs in prop::collection::vec(job_strategy(), 1..=4),
        cordon in prop::collection::vec(any::<bool>(), 8),
        probe_cpu in 1u64..=8,
        probe_mem in 1u64..=16,
        probe_gpu in gpu_strategy(),
    ) {
        let spec = ClusterSpec::from_nodes(nodes);
        let reqs = requests(&jobs);
        let policy = Policy::preset("first_fit").unwrap();
        let mut view = ClusterView::new(&spec);
        let plan = place(&mut view, &reqs, &policy, &mut policy.rng()).unwrap();
        if let Some(a) = plan.assignments.first() {
            view.release(a).unwrap();
        }
        for (n, &off) in cordon.iter().enumerate().take(view.len()) {
            view.set_schedulable(NodeId(n as u32), !off).unwrap();
        }
        let (mut free, mut gpu) = (Resources::ZERO, 0u64);
        for n in 0..view.len() {
            let id = NodeId(n as u32);
            if view.is_schedulable(id) {
                free = free.saturating_add(&view.free(id));
                gpu += view.gpu_free(id).iter().map(|&g| u64::from(g)).sum::<u64>();
            }
        }
        prop_assert_eq!(view.free_schedulable(), (free, gpu));
        let shape = TaskShape {
            resources: Resources::new(probe_cpu * 1000, probe_mem * 1024, 0, 0),
            gpu: probe_gpu,
            gpu_models: Vec::new(),
        };
        let k = view.tasks_that_fit(&shape, u64::MAX);
        prop_assert!(view.tasks_that_fit(&shape, 1) >= k.min(1), "stops at enough, not below");
        let probe: Vec<TaskRequest> = (0..=k)
            .map(|i| TaskRequest::new(TaskId(10_000 + i), JobId(10_000 + i), shape.clone()))
            .collect();
        let plan = place(&mut view, &probe, &policy, &mut policy.rng()).unwrap();
        prop_assert!(plan.assignments.len() as u64 <= k, "{} placed, {} counted", plan.assignments.len(), k);
    }

    /// First fit stops its scan at the first node that passes the filters: each unconstrained
    /// task goes to the lowest-index node that can hold it at that moment.
    #[test]
    fn first_fit_takes_the_lowest_node_that_holds_the_task(
        nodes in prop::collection::vec(node_strategy(), 1..=10),
        sizes in prop::collection::vec((1u64..=8, 1u64..=16), 1..=20),
    ) {
        let spec = ClusterSpec::from_nodes(nodes);
        let reqs: Vec<TaskRequest> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(c, m))| {
                let shape = TaskShape {
                    resources: Resources::new(c * 1000, m * 1024, 0, 0),
                    gpu: GpuDemand::None,
                    gpu_models: Vec::new(),
                };
                TaskRequest::new(TaskId(i as u64), JobId(i as u64), shape)
            })
            .collect();
        let policy = Policy::preset("first_fit").unwrap();
        let mut view = ClusterView::new(&spec);
        let plan = place(&mut view, &reqs, &policy, &mut policy.rng()).unwrap();
        let mut replay = ClusterView::new(&spec);
        for a in &plan.assignments {
            for m in 0..a.node.0 {
                let mut lower = a.clone();
                lower.node = NodeId(m);
                prop_assert!(replay.check(&lower).is_err(), "{} fits lower, on {}", a.task, m);
            }
            replay.apply(a);
        }
    }
}

fn requests(jobs: &[JobT]) -> Vec<TaskRequest> {
    let mut out = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let c = Arc::new(job.constraints.clone());
        for _ in 0..job.tasks {
            out.push(
                TaskRequest::new(TaskId(out.len() as u64), JobId(j as u64), job.shape.clone())
                    .with_constraints(c.clone())
                    .with_tier(job.tier)
                    .with_gang(job.gang),
            );
        }
    }
    // Interleave jobs deterministically (the batch order is part of the input).
    out.sort_by_key(|r| (r.task.0 % 3, r.task.0));
    out
}

fn check_plan(
    spec: &ClusterSpec,
    reqs: &[TaskRequest],
    policy: &Policy,
    plan: &Plan,
) -> Result<(), TestCaseError> {
    // Every task exactly once, unplaced ones with reasons.
    let mut seen = BTreeSet::new();
    for a in &plan.assignments {
        prop_assert!(seen.insert(a.task), "{:?} twice", a.task);
    }
    for u in &plan.unplaced {
        prop_assert!(seen.insert(u.task), "{:?} twice", u.task);
        prop_assert!(
            !u.reasons.is_empty(),
            "{:?} unplaced without reasons",
            u.task
        );
    }
    prop_assert_eq!(seen.len(), reqs.len());
    // No overcommit: the plan replays onto a fresh view through the checked path.
    let mut view = ClusterView::new(spec);
    for a in &plan.assignments {
        view.try_apply(a)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let r = reqs.iter().find(|r| r.task == a.task).unwrap();
        prop_assert_eq!(a.resources, r.shape.resources);
        prop_assert_eq!(a.gpu_milli(), r.shape.gpu.total_milli());
        let node = &spec.nodes[a.node.0 as usize];
        if !r.shape.gpu.is_none() {
            prop_assert!(r.shape.accepts_model(node.gpu_model().unwrap()));
        }
    }
    // Hard constraints.
    let by_job = |j: JobId| plan.assignments.iter().filter(move |a| a.job == j);
    let jobs: BTreeSet<JobId> = reqs.iter().map(|r| r.job).collect();
    for j in jobs {
        let r = reqs.iter().find(|r| r.job == j).unwrap();
        let placed: Vec<_> = by_job(j).collect();
        if r.gang {
            let n = reqs.iter().filter(|x| x.job == j).count();
            prop_assert!(
                placed.is_empty() || placed.len() == n,
                "gang partially placed"
            );
        }
        for c in &r.constraints.hard {
            match c {
                Constraint::UniqueHost => {
                    let nodes: BTreeSet<_> = placed.iter().map(|a| a.node).collect();
                    prop_assert_eq!(nodes.len(), placed.len(), "unique host broken");
                }
                Constraint::ZoneBalance { max_skew } => {
                    let mut per_zone = vec![0u32; view.zones().len()];
                    for a in &placed {
                        per_zone[view.zone_of(a.node)] += 1;
                    }
                    // A cluster without zones has nothing to balance.
                    let skew =
                        per_zone.iter().max().unwrap_or(&0) - per_zone.iter().min().unwrap_or(&0);
                    prop_assert!(skew <= *max_skew, "zone skew {} > {}", skew, max_skew);
                }
                Constraint::ExclusiveHost => {
                    for a in &placed {
                        let others = plan
                            .assignments
                            .iter()
                            .filter(|b| b.node == a.node && b.job != j)
                            .count();
                        prop_assert_eq!(others, 0, "exclusive host shared");
                    }
                }
                Constraint::AttributeEquals { key, value } => {
                    for a in &placed {
                        prop_assert_eq!(
                            spec.nodes[a.node.0 as usize].attributes.get(key),
                            Some(value.as_str())
                        );
                    }
                }
                Constraint::AttributeIn { key, values } => {
                    for a in &placed {
                        let v = spec.nodes[a.node.0 as usize]
                            .attributes
                            .get(key)
                            .unwrap_or("");
                        prop_assert!(values.iter().any(|x| x == v));
                    }
                }
            }
        }
        if let Some(pools) = policy.tier_pools.get(&r.tier) {
            for a in &placed {
                prop_assert!(pools.contains(&spec.nodes[a.node.0 as usize].attributes.pool));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn placement_invariants(
        nodes in prop::collection::vec(node_strategy(), 0..=10),
        jobs in prop::collection::vec(job_strategy(), 1..=6),
        policy in policy_strategy(),
    ) {
        let spec = ClusterSpec::from_nodes(nodes);
        let reqs = requests(&jobs);
        let mut view = ClusterView::new(&spec);
        let plan = place(&mut view, &reqs, &policy, &mut policy.rng()).unwrap();
        check_plan(&spec, &reqs, &policy, &plan)?;
        // The view holds exactly the plan.
        prop_assert_eq!(view.placed_tasks(), plan.assignments.len());
        // Determinism: same inputs and seed, same plan.
        let mut again = ClusterView::new(&spec);
        let plan2 = place(&mut again, &reqs, &policy, &mut policy.rng()).unwrap();
        prop_assert_eq!(&plan, &plan2);
    }
}

/// A cluster of copies of a few node templates (as clusters of a few instance types are), so
/// that nodes share classes in the placement index.
fn templated_nodes() -> impl Strategy<Value = Vec<NodeSpec>> {
    (
        prop::collection::vec(node_strategy(), 1..=3),
        prop::collection::vec(0usize..3, 8..=40),
    )
        .prop_map(|(templates, picks)| {
            picks
                .into_iter()
                .map(|i| templates[i % templates.len()].clone())
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The node index decides exactly as the full scan: the same plan (nodes, devices,
    /// reasons with counts) for a batch with constraints and gangs, and again after some tasks
    /// are released and a node cordoned (the index catches up with changes it did not see).
    #[test]
    fn the_node_index_decides_as_the_full_scan(
        nodes in templated_nodes(),
        jobs in prop::collection::vec(job_strategy(), 1..=6),
        more in prop::collection::vec(job_strategy(), 1..=3),
        policy in policy_strategy(),
        cordon in any::<prop::sample::Index>(),
    ) {
        let spec = ClusterSpec::from_nodes(nodes);
        let reqs = requests(&jobs);
        let types = berth_solver::TaskTypes::from_shapes(
            reqs.iter().map(|t| &t.shape),
            policy.typical_coverage,
            policy.typical_key,
        );
        let mut indexed = berth_solver::Placer::new(policy.clone())
            .unwrap()
            .with_typical_types(types);
        let mut scan = indexed.clone().without_index();
        let mut view_a = ClusterView::new(&spec);
        let mut view_b = ClusterView::new(&spec);
        let plan_a = indexed.place(&mut view_a, &reqs, &mut policy.rng());
        let plan_b = scan.place(&mut view_b, &reqs, &mut policy.rng());
        prop_assert_eq!(&plan_a, &plan_b);
        // Release every other placed task, cordon a node, place more.
        for a in plan_a.assignments.iter().step_by(2) {
            view_a.release(a).unwrap();
            view_b.release(a).unwrap();
        }
        let c = NodeId(cordon.index(spec.len()) as u32);
        view_a.set_schedulable(c, false).unwrap();
        view_b.set_schedulable(c, false).unwrap();
        let mut next = requests(&more);
        for (i, t) in next.iter_mut().enumerate() {
            t.task = TaskId(1_000_000 + i as u64);
            t.job = JobId(1_000 + t.job.0);
        }
        let plan_a = indexed.place(&mut view_a, &next, &mut policy.rng());
        let plan_b = scan.place(&mut view_b, &next, &mut policy.rng());
        prop_assert_eq!(&plan_a, &plan_b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Under best fit alone, a job's identical tasks placed one after the other (each on the
    /// node the last decision chose while it fits, then on the next best from that decision's
    /// candidates: `Placer::next_best`) land where the full scan puts them, on a cluster
    /// already partly used (so nodes fill up mid-job, in classes of identical nodes).
    #[test]
    fn best_fit_follows_the_full_scan_as_nodes_fill(
        nodes in templated_nodes(),
        load in prop::collection::vec(job_strategy(), 0..=4),
        jobs in prop::collection::vec((0u64..=6000, 0u64..=24, 0u8..=2, 1usize..=40), 1..=4),
    ) {
        let spec = ClusterSpec::from_nodes(nodes);
        let policy = Policy::single(ScorerKind::BestFit);
        let mut indexed = berth_solver::Placer::new(policy.clone()).unwrap();
        let mut scan = indexed.clone().without_index();
        let mut view_a = ClusterView::new(&spec);
        let mut view_b = ClusterView::new(&spec);
        let pre = requests(&load);
        let plan_a = indexed.place(&mut view_a, &pre, &mut policy.rng());
        let plan_b = scan.place(&mut view_b, &pre, &mut policy.rng());
        prop_assert_eq!(&plan_a, &plan_b);
        let mut reqs = Vec::new();
        for (j, &(cpu, mem, gpus, tasks)) in jobs.iter().enumerate() {
            let gpu = if gpus == 0 { GpuDemand::None } else { GpuDemand::Whole(gpus) };
            let shape = TaskShape::new(Resources::new(cpu, mem * 1024, 0, 0)).with_gpu(gpu);
            for _ in 0..tasks {
                reqs.push(TaskRequest::new(
                    TaskId(1_000_000 + reqs.len() as u64),
                    JobId(1_000 + j as u64),
                    shape.clone(),
                ));
            }
        }
        let plan_a = indexed.place(&mut view_a, &reqs, &mut policy.rng());
        let plan_b = scan.place(&mut view_b, &reqs, &mut policy.rng());
        prop_assert_eq!(&plan_a, &plan_b);
    }

    /// A projection for one job (EASY's shadow view) releasing the view's tasks holds what a
    /// clone releasing them holds: every node's free capacity, devices, task count and
    /// exclusive holder, the free sums, and the job's placement; any job's assignment is
    /// judged as on the clone. A task placed on the projection itself is tracked there:
    /// releasing it as untracked is an error.
    #[test]
    fn a_projection_releases_as_a_clone_does(
        nodes in templated_nodes(),
        jobs in prop::collection::vec(job_strategy(), 1..=6),
        policy in policy_strategy(),
        keep in 0u64..6,
    ) {
        let spec = ClusterSpec::from_nodes(nodes);
        let reqs = requests(&jobs);
        let mut view = ClusterView::new(&spec);
        let plan = place(&mut view, &reqs, &policy, &mut policy.rng()).unwrap();
        let job = JobId(keep);
        let mut clone = view.clone();
        let mut proj = view.projection(job);
        for a in plan.assignments.iter().step_by(2) {
            clone.release(a).unwrap();
            proj.release_untracked(a).unwrap();
        }
        for n in 0..spec.len() {
            let id = NodeId(n as u32);
            prop_assert_eq!(proj.free(id), clone.free(id));
            prop_assert_eq!(proj.gpu_free(id), clone.gpu_free(id));
            prop_assert_eq!(proj.task_count(id), clone.task_count(id));
            prop_assert_eq!(proj.exclusive_holder(id), clone.exclusive_holder(id));
        }
        prop_assert_eq!(proj.free_schedulable(), clone.free_schedulable());
        prop_assert_eq!(proj.job(job), clone.job(job));
        // The plan's first assignment was released above; any job's assignment placed on
        // the projection (EASY applies a backfilled job's there) is judged as on the clone.
        if let Some(a) = plan.assignments.first() {
            prop_assert_eq!(proj.check(a).is_ok(), clone.check(a).is_ok());
            proj.try_apply(a).unwrap();
            prop_assert!(proj.release_untracked(a).is_err());
            proj.release(a).unwrap();
        }
    }
}
