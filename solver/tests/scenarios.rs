//! Data-driven placement scenarios: a small cluster, a batch of tasks, a policy, and for each task
//! the expected node (and GPU devices) or the expected reasons string.

use berth_solver::{
    place, Assignment, ClusterSpec, ClusterView, Constraint, Constraints, GpuDemand, GpuModel,
    GpuSlice, JobId, NodeAttributes, NodeGpus, NodeId, NodeSpec, Plan, Policy, Resources, TaskId,
    TaskRequest, TaskShape, Tier,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A node: cpu cores, memory GiB, GPUs (count, model), zone, pool, labels.
struct N {
    cpu: u64,
    mem_gib: u64,
    gpus: Option<(u8, &'static str)>,
    zone: &'static str,
    pool: &'static str,
    labels: &'static [(&'static str, &'static str)],
}

const fn n(cpu: u64, mem_gib: u64) -> N {
    N {
        cpu,
        mem_gib,
        gpus: None,
        zone: "a",
        pool: "",
        labels: &[],
    }
}

impl N {
    const fn gpus(mut self, count: u8, model: &'static str) -> N {
        self.gpus = Some((count, model));
        self
    }
    const fn zone(mut self, z: &'static str) -> N {
        self.zone = z;
        self
    }
    const fn pool(mut self, p: &'static str) -> N {
        self.pool = p;
        self
    }
    const fn labels(mut self, l: &'static [(&'static str, &'static str)]) -> N {
        self.labels = l;
        self
    }
}

/// A task of job `job`: cpu cores, memory GiB, GPU demand.
#[derive(Clone)]
struct T {
    job: u64,
    cpu: u64,
    mem_gib: u64,
    gpu: GpuDemand,
    models: &'static [&'static str],
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
    tier: Tier,
    gang: bool,
}

fn t(job: u64, cpu: u64, mem_gib: u64) -> T {
    T {
        job,
        cpu,
        mem_gib,
        gpu: GpuDemand::None,
        models: &[],
        hard: vec![],
        soft: vec![],
        tier: Tier::Flex,
        gang: false,
    }
}

impl T {
    fn gpu(mut self, g: GpuDemand) -> T {
        self.gpu = g;
        self
    }
    fn models(mut self, m: &'static [&'static str]) -> T {
        self.models = m;
        self
    }
    fn hard(mut self, c: Constraint) -> T {
        self.hard.push(c);
        self
    }
    fn soft(mut self, c: Constraint) -> T {
        self.soft.push(c);
        self
    }
    fn tier(mut self, tier: Tier) -> T {
        self.tier = tier;
        self
    }
    fn gang(mut self) -> T {
        self.gang = true;
        self
    }
    fn times(self, k: usize) -> Vec<T> {
        vec![self; k]
    }
}

/// What one task should get.
#[derive(Debug)]
enum Expect {
    Node(u32),
    NodeDevices(u32, &'static [(u8, u16)]),
    Reasons(&'static str),
}

/// (task template, node, devices as (index, milli)).
type Before = (T, u32, Vec<(u8, u16)>);

struct Case {
    name: &'static str,
    nodes: Vec<N>,
    /// Assignments applied before the batch: (task template, node, devices).
    before: Vec<Before>,
    tasks: Vec<T>,
    policy: Policy,
    expect: Vec<Expect>,
}

fn cluster(nodes: &[N]) -> ClusterSpec {
    ClusterSpec::from_nodes(nodes.iter().enumerate().map(|(i, x)| {
        NodeSpec {
            id: NodeId(0),
            name: format!("n{i}"),
            capacity: Resources::new(x.cpu * 1000, x.mem_gib * 1024, 0, 0),
            gpus: x.gpus.map(|(count, model)| NodeGpus {
                count,
                model: GpuModel::new(model),
            }),
            attributes: NodeAttributes {
                zone: x.zone.to_string(),
                instance_type: String::new(),
                pool: x.pool.to_string(),
                labels: x
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            },
        }
    }))
}

fn requests(tasks: &[T], first_id: u64) -> Vec<TaskRequest> {
    // One Arc of constraints per job, as the controller shares them.
    let mut per_job: BTreeMap<u64, Arc<Constraints>> = BTreeMap::new();
    tasks
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let c = per_job
                .entry(x.job)
                .or_insert_with(|| {
                    Arc::new(Constraints {
                        hard: x.hard.clone(),
                        soft: x.soft.clone(),
                    })
                })
                .clone();
            let shape = TaskShape::new(Resources::new(x.cpu * 1000, x.mem_gib * 1024, 0, 0))
                .with_gpu(x.gpu)
                .with_gpu_models(x.models.iter().map(|m| GpuModel::new(*m)).collect());
            TaskRequest::new(TaskId(first_id + i as u64), JobId(x.job), shape)
                .with_constraints(c)
                .with_tier(x.tier)
                .with_gang(x.gang)
        })
        .collect()
}

fn run_case(c: &Case) -> Plan {
    let spec = cluster(&c.nodes);
    let mut view = ClusterView::new(&spec);
    for (i, (x, node, devs)) in c.before.iter().enumerate() {
        let r = &requests(std::slice::from_ref(x), 1_000_000 + i as u64)[0];
        view.try_apply(&Assignment {
            task: r.task,
            job: r.job,
            node: NodeId(*node),
            resources: r.shape.resources,
            gpus: devs
                .iter()
                .map(|&(device, milli)| GpuSlice { device, milli })
                .collect(),
            exclusive: r.is_exclusive(),
        })
        .unwrap_or_else(|e| panic!("{}: setup: {e}", c.name));
    }
    let reqs = requests(&c.tasks, 0);
    let mut rng = c.policy.rng();
    place(&mut view, &reqs, &c.policy, &mut rng).unwrap()
}

fn policy(name: &str) -> Policy {
    Policy::preset(name).unwrap()
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let milli = GpuDemand::Milli;
    vec![
        Case {
            name: "best fit takes the fuller node",
            nodes: vec![n(16, 64), n(8, 64), n(4, 64)],
            before: vec![],
            tasks: vec![t(1, 4, 8)],
            policy: policy("best_fit"),
            expect: vec![Node(2)],
        },
        Case {
            name: "worst fit spreads",
            nodes: vec![n(8, 64), n(16, 64)],
            before: vec![],
            tasks: vec![t(1, 4, 8), t(2, 4, 8), t(3, 4, 8)],
            policy: policy("worst_fit"),
            expect: vec![Node(1), Node(1), Node(0)],
        },
        Case {
            name: "first fit fills in node order",
            nodes: vec![n(8, 64), n(8, 64)],
            before: vec![],
            tasks: t(1, 3, 8).times(3),
            policy: policy("first_fit"),
            expect: vec![Node(0), Node(0), Node(1)],
        },
        Case {
            name: "whole GPUs take the lowest-index free devices",
            nodes: vec![n(32, 128).gpus(4, "T4")],
            before: vec![(t(9, 1, 1).gpu(milli(300)), 0, vec![(0, 300)])],
            tasks: vec![t(1, 1, 1).gpu(GpuDemand::Whole(2))],
            policy: policy("best_fit"),
            expect: vec![NodeDevices(0, &[(1, 1000), (2, 1000)])],
        },
        Case {
            name: "a share takes the best-fitting device",
            nodes: vec![n(32, 128).gpus(4, "T4")],
            before: vec![
                (t(9, 1, 1).gpu(milli(300)), 0, vec![(0, 300)]),
                (t(9, 1, 1).gpu(milli(600)), 0, vec![(2, 600)]),
            ],
            tasks: vec![t(1, 1, 1).gpu(milli(350)), t(1, 1, 1).gpu(milli(500))],
            policy: policy("best_fit"),
            expect: vec![NodeDevices(0, &[(2, 350)]), NodeDevices(0, &[(0, 500)])],
        },
        Case {
            name: "FGD keeps whole devices free for whole-GPU work",
            // Typical types come from the batch: mostly whole GPUs. A 0.5 share should go where
            // a device is already split rather than break a fresh one.
            nodes: vec![n(32, 128).gpus(2, "T4"), n(32, 128).gpus(2, "T4")],
            before: vec![(t(9, 1, 1).gpu(milli(500)), 1, vec![(1, 500)])],
            tasks: vec![
                t(1, 1, 1).gpu(milli(500)),
                t(2, 1, 1).gpu(GpuDemand::Whole(1)),
                t(3, 1, 1).gpu(GpuDemand::Whole(1)),
            ],
            policy: policy("fgd"),
            expect: vec![NodeDevices(1, &[(1, 500)]), Node(0), Node(0)],
        },
        Case {
            name: "reasons count each node once, first refusal",
            nodes: vec![
                n(32, 128).gpus(1, "T4"),
                n(32, 128).gpus(1, "T4"),
                n(32, 128).gpus(8, "A100"),
                n(1, 128).gpus(8, "T4"),
                n(32, 128),
            ],
            before: vec![],
            tasks: vec![t(1, 4, 8).gpu(GpuDemand::Whole(2)).models(&["T4"])],
            policy: policy("best_fit"),
            expect: vec![Reasons(
                "2 nodes: gpu model mismatch; 2: insufficient gpu; 1: insufficient cpu",
            )],
        },
        Case {
            name: "no device with the share free",
            nodes: vec![n(32, 128).gpus(2, "T4")],
            before: vec![
                (t(9, 1, 1).gpu(milli(700)), 0, vec![(0, 700)]),
                (t(9, 1, 1).gpu(milli(800)), 0, vec![(1, 800)]),
            ],
            tasks: vec![t(1, 1, 1).gpu(milli(400))],
            policy: policy("gpu_packing"),
            expect: vec![Reasons("1 node: no gpu device with share")],
        },
        Case {
            name: "memory is a dimension too",
            nodes: vec![n(32, 4), n(32, 64)],
            before: vec![],
            tasks: vec![t(1, 1, 16), t(2, 1, 128)],
            policy: policy("best_fit"),
            expect: vec![Node(1), Reasons("2 nodes: insufficient memory")],
        },
        Case {
            name: "hard zone balance spreads a job over zones, counting the batch itself",
            nodes: vec![
                n(64, 256).zone("a"),
                n(64, 256).zone("a"),
                n(64, 256).zone("b"),
                n(4, 256).zone("c"),
            ],
            before: vec![],
            tasks: t(1, 4, 4)
                .hard(Constraint::ZoneBalance { max_skew: 1 })
                .times(6),
            policy: policy("first_fit"),
            // a, b, c, then a, b; c is full (4 cores), so a third in a would make skew 2.
            expect: vec![
                Node(0),
                Node(2),
                Node(3),
                Node(0),
                Node(2),
                Reasons("3 nodes: zone balance; 1: insufficient cpu"),
            ],
        },
        Case {
            name: "hard unique host",
            nodes: vec![n(64, 256), n(64, 256)],
            before: vec![],
            tasks: t(1, 1, 1).hard(Constraint::UniqueHost).times(3),
            policy: policy("best_fit"),
            expect: vec![Node(0), Node(1), Reasons("2 nodes: unique host")],
        },
        Case {
            name: "soft unique host spreads while it can",
            nodes: vec![n(64, 256), n(64, 256)],
            before: vec![],
            tasks: t(1, 1, 1).soft(Constraint::UniqueHost).times(3),
            policy: Policy::from_toml("scorers = [{ scorer = \"soft_constraints\" }]").unwrap(),
            expect: vec![Node(0), Node(1), Node(0)],
        },
        Case {
            name: "exclusive host: the exclusive task avoids busy nodes, others avoid it",
            nodes: vec![n(64, 256), n(64, 256), n(64, 256)],
            before: vec![(t(9, 1, 1), 0, vec![])],
            tasks: vec![
                t(1, 1, 1).hard(Constraint::ExclusiveHost),
                t(2, 1, 1),
                t(1, 1, 1).hard(Constraint::ExclusiveHost),
            ],
            policy: policy("first_fit"),
            // Job 1 takes node 1; job 2 cannot join it and goes to node 0; job 1's second task
            // may share its own exclusive node.
            expect: vec![Node(1), Node(0), Node(1)],
        },
        Case {
            name: "exclusive host refusals",
            nodes: vec![n(64, 256), n(64, 256)],
            before: vec![
                (t(9, 1, 1), 0, vec![]),
                (t(8, 1, 1).hard(Constraint::ExclusiveHost), 1, vec![]),
            ],
            tasks: vec![t(1, 1, 1).hard(Constraint::ExclusiveHost)],
            policy: policy("first_fit"),
            expect: vec![Reasons("2 nodes: exclusive host")],
        },
        Case {
            name: "attribute constraints",
            nodes: vec![
                n(64, 256).labels(&[("arch", "arm")]),
                n(64, 256).labels(&[("arch", "x86")]).zone("b"),
                n(64, 256).zone("c"),
            ],
            before: vec![],
            tasks: vec![
                t(1, 1, 1).hard(Constraint::AttributeEquals {
                    key: "arch".into(),
                    value: "x86".into(),
                }),
                t(2, 1, 1).hard(Constraint::AttributeIn {
                    key: "zone".into(),
                    values: vec!["a".into(), "c".into()],
                }),
                t(3, 1, 1).hard(Constraint::AttributeEquals {
                    key: "arch".into(),
                    value: "riscv".into(),
                }),
            ],
            policy: policy("first_fit"),
            expect: vec![
                Node(1),
                Node(0),
                Reasons("3 nodes: attribute mismatch (arch)"),
            ],
        },
        Case {
            name: "tier pools",
            nodes: vec![n(64, 256).pool("flex"), n(64, 256).pool("reserved")],
            before: vec![],
            tasks: vec![
                t(1, 1, 1).tier(Tier::Critical),
                t(2, 1, 1),
                t(3, 100, 1).tier(Tier::Critical),
            ],
            policy: Policy::from_toml(
                "scorers = [{ scorer = \"first_fit\" }]\n[tier_pools]\ncritical = [\"reserved\"]\n",
            )
            .unwrap(),
            expect: vec![
                Node(1),
                Node(0),
                Reasons("1 node: tier pool ineligible; 1: insufficient cpu"),
            ],
        },
        Case {
            name: "a gang is all or nothing, and leaves no trace when nothing",
            nodes: vec![n(8, 64), n(8, 64)],
            before: vec![],
            tasks: vec![
                t(1, 6, 1).gang(),
                t(2, 2, 1),
                t(1, 6, 1).gang(),
                t(1, 6, 1).gang(),
                t(3, 8, 1),
            ],
            policy: policy("first_fit"),
            // The gang's third task finds no room: all three unplaced (the one that failed with
            // its own reasons); tasks 2 and 3 then see an empty cluster.
            expect: vec![
                Reasons("1 node: gang unplaceable"),
                Node(0),
                Reasons("1 node: gang unplaceable"),
                Reasons("2 nodes: insufficient cpu"),
                Node(1),
            ],
        },
        Case {
            name: "GPU packing prefers a shared device, then a used node",
            nodes: vec![
                n(32, 128).gpus(2, "T4"),
                n(32, 128).gpus(2, "T4"),
                n(32, 128).gpus(2, "T4"),
            ],
            before: vec![(t(9, 1, 1).gpu(milli(500)), 2, vec![(0, 500)])],
            tasks: vec![
                t(1, 1, 1).gpu(milli(400)),
                t(2, 1, 1).gpu(GpuDemand::Whole(1)),
            ],
            policy: policy("gpu_packing"),
            expect: vec![NodeDevices(2, &[(0, 400)]), NodeDevices(2, &[(1, 1000)])],
        },
        Case {
            name: "GPU clustering groups the same request type",
            nodes: vec![
                n(32, 128).gpus(4, "T4"),
                n(32, 128).gpus(4, "T4"),
                n(32, 128).gpus(4, "T4"),
            ],
            before: vec![
                (t(9, 1, 1).gpu(milli(250)), 1, vec![(0, 250)]),
                (t(8, 1, 1).gpu(GpuDemand::Whole(1)), 2, vec![(0, 1000)]),
            ],
            tasks: vec![
                t(1, 1, 1).gpu(milli(250)),
                t(2, 1, 1).gpu(GpuDemand::Whole(1)),
            ],
            policy: policy("gpu_clustering"),
            expect: vec![Node(1), Node(2)],
        },
    ]
}

#[test]
fn scenarios() {
    let mut failures = Vec::new();
    for c in cases() {
        assert_eq!(
            c.tasks.len(),
            c.expect.len(),
            "{}: one expectation per task",
            c.name
        );
        let plan = run_case(&c);
        assert_eq!(
            plan.assignments.len() + plan.unplaced.len(),
            c.tasks.len(),
            "{}",
            c.name
        );
        for (i, e) in c.expect.iter().enumerate() {
            let task = TaskId(i as u64);
            let got = match (plan.assignment_of(task), plan.unplaced_of(task)) {
                (Some(a), None) => format!(
                    "node {} devices {:?}",
                    a.node.0,
                    a.gpus
                        .iter()
                        .map(|s| (s.device, s.milli))
                        .collect::<Vec<_>>()
                ),
                (None, Some(u)) => format!("unplaced: {}", u.reasons),
                other => panic!("{}: task {i} is {other:?}", c.name),
            };
            let ok = match e {
                Expect::Node(n) => plan.assignment_of(task).is_some_and(|a| a.node.0 == *n),
                Expect::NodeDevices(n, d) => plan.assignment_of(task).is_some_and(|a| {
                    a.node.0 == *n
                        && a.gpus
                            .iter()
                            .map(|s| (s.device, s.milli))
                            .collect::<Vec<_>>()
                            == d.to_vec()
                }),
                Expect::Reasons(r) => plan
                    .unplaced_of(task)
                    .is_some_and(|u| u.reasons.to_string() == *r),
            };
            if !ok {
                failures.push(format!("{}: task {i}: expected {e:?}, got {got}", c.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing expectations:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_batch_leaves_the_view_holding_exactly_the_plan() {
    for c in cases() {
        let spec = cluster(&c.nodes);
        let mut view = ClusterView::new(&spec);
        let reqs = requests(&c.tasks, 0);
        let plan = place(&mut view, &reqs, &c.policy, &mut c.policy.rng()).unwrap();
        let mut replay = ClusterView::new(&spec);
        for a in &plan.assignments {
            replay
                .try_apply(a)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
        for n in 0..spec.len() {
            let node = NodeId(n as u32);
            assert_eq!(view.free(node), replay.free(node), "{}", c.name);
            assert_eq!(view.gpu_free(node), replay.gpu_free(node), "{}", c.name);
        }
        // Releasing everything gives back an empty cluster.
        for a in &plan.assignments {
            view.release(a).unwrap();
        }
        for (n, spec_node) in spec.nodes.iter().enumerate() {
            assert_eq!(
                view.free(NodeId(n as u32)),
                spec_node.capacity,
                "{}",
                c.name
            );
        }
        assert_eq!(view.gpu_milli_used(), 0);
    }
}
