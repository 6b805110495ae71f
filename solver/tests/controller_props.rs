//! Properties of the controller over random workloads and faults, driven by a small
//! event-queue driver (the simulator's role, in miniature):
//! - no node is ever overcommitted (checked from the commands alone, by an independent ledger);
//! - every accepted task ends up terminal once faults stop, services are removed and time
//!   passes;
//! - the same events and seed give the same commands.

use berth_solver::catalog::Catalog;
use berth_solver::controller::{Command, Controller, ControllerConfig, Event, QueuePolicy};
use berth_solver::{
    BatchSpec, ClusterSpec, Constraints, JobId, JobKind, JobSpec, NodeAttributes, NodeId, NodeSpec,
    Resources, RetryPolicy, ServiceSpec, TaskId, TaskShape, TaskState, Tier,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const NODE_CPU: u64 = 4000;
const NODE_MEM: u64 = 8192;

fn make_node(i: u32) -> NodeSpec {
    NodeSpec {
        id: NodeId(i),
        name: format!("n{i}"),
        capacity: Resources::new(NODE_CPU, NODE_MEM, 0, 0),
        gpus: None,
        attributes: NodeAttributes {
            zone: ["a", "b"][i as usize % 2].into(),
            ..NodeAttributes::default()
        },
    }
}

#[derive(Clone, Debug)]
struct JobPlan {
    at_ms: u64,
    tasks: u32,
    cpu_milli: u64,
    kind: u8, // 0 batch, 1 gang, 2 service
    retries: u32,
    tier: bool,
}

fn job_plan() -> impl Strategy<Value = JobPlan> {
    (
        0u64..20_000,
        1u32..4,
        1u64..=4,
        0u8..3,
        0u32..3,
        any::<bool>(),
    )
        .prop_map(|(at_ms, tasks, cpu, kind, retries, tier)| JobPlan {
            at_ms,
            tasks,
            cpu_milli: cpu * 500,
            kind,
            retries,
            tier,
        })
}

fn spec(p: &JobPlan) -> JobSpec {
    let kind = match p.kind {
        2 => JobKind::Service(ServiceSpec {
            min: 0,
            desired: p.tasks,
            max: 8,
            restart_on_failure: true,
        }),
        k => JobKind::Batch(BatchSpec {
            size: p.tasks,
            runtime_limit_ms: Some(30_000),
            retry: RetryPolicy::Delayed {
                delay_ms: 700,
                max_retries: p.retries,
            },
            gang: k == 1,
        }),
    };
    JobSpec {
        name: "j".into(),
        owner: String::new(),
        tier: if p.tier { Tier::Critical } else { Tier::Flex },
        capacity_group: if p.tier { "g1".into() } else { "g2".into() },
        kind,
        task: TaskShape::new(Resources::new(p.cpu_milli, 256, 0, 0)),
        constraints: Constraints::default(),
        container: None,
    }
}

/// The outcome of one driven run.
struct Run {
    commands: Vec<(u64, Command)>,
    /// Last recorded state of every task.
    last_state: BTreeMap<TaskId, TaskState>,
}

/// Drives a controller: launches start after 5 ms and run 1..20 s; some exit non-zero; kills
/// exit after 3 ms; nodes are lost and come back until `faults_until_ms`; then time runs on.
fn drive(jobs: &[JobPlan], queue: QueuePolicy, seed: u64, faults_until_ms: u64) -> Run {
    let cfg = ControllerConfig {
        queue,
        ..ControllerConfig::default()
    };
    let initial = ClusterSpec::from_nodes((0..4).map(make_node));
    let mut c = Controller::new(cfg, Catalog::ec2(), &initial, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut queue_ev: BTreeMap<(u64, u64), Event> = BTreeMap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BTreeMap<(u64, u64), Event>, at: u64, e: Event| {
        seq += 1;
        q.insert((at, seq), e);
    };
    for (i, j) in jobs.iter().enumerate() {
        push(
            &mut queue_ev,
            j.at_ms,
            Event::JobSubmitted {
                job: JobId(i as u64),
                spec: spec(j),
                requested_runtime_ms: Some(20_000),
            },
        );
        if j.kind == 2 {
            // Services run until removed: each is killed 30 s after it was submitted.
            push(
                &mut queue_ev,
                j.at_ms + 30_000,
                Event::JobKilled {
                    job: JobId(i as u64),
                },
            );
        }
    }
    // Node losses during the fault window, each node back 2 s later under a new id.
    let mut next_node = 100u32;
    let mut t = 1500;
    while t < faults_until_ms {
        let victim = NodeId(rng.random_range(0..4));
        push(&mut queue_ev, t, Event::NodeLost { node: victim });
        t += rng.random_range(2_000..6_000);
    }
    let mut ledger: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut task_node: BTreeMap<TaskId, (NodeId, u64)> = BTreeMap::new();
    let mut node_cap: BTreeMap<NodeId, u64> = (0..4).map(|i| (NodeId(i), NODE_CPU)).collect();
    let mut lost_ids: BTreeMap<NodeId, bool> = BTreeMap::new();
    let mut run = Run {
        commands: Vec::new(),
        last_state: BTreeMap::new(),
    };
    let horizon = faults_until_ms + 600_000;
    while let Some(((now, _), ev)) = queue_ev.pop_first() {
        if now > horizon {
            break;
        }
        if let Event::NodeLost { node } = &ev {
            if lost_ids.insert(*node, true).is_some() {
                continue;
            }
            let mut n = make_node(next_node);
            n.id = NodeId(next_node);
            node_cap.insert(n.id, NODE_CPU);
            next_node += 1;
            push(
                &mut queue_ev,
                now + 2000,
                Event::NodeReady {
                    node: n,
                    instance: None,
                },
            );
        }
        let out = c.step(now, ev);
        for cmd in &out {
            match cmd {
                Command::LaunchTask {
                    task,
                    node,
                    resources,
                    ..
                } => {
                    let used = ledger.entry(*node).or_insert(0);
                    *used += resources.cpu_milli;
                    assert!(*used <= node_cap[node], "overcommit on {node}: {used}");
                    task_node.insert(*task, (*node, resources.cpu_milli));
                    push(&mut queue_ev, now + 5, Event::TaskStarted { task: *task });
                    let run_ms = rng.random_range(1_000..20_000);
                    let code = if rng.random_bool(0.2) { 1 } else { 0 };
                    push(
                        &mut queue_ev,
                        now + 5 + run_ms,
                        Event::TaskExited {
                            task: *task,
                            exit_code: code,
                            oom: false,
                        },
                    );
                }
                Command::KillTask { task, .. } => {
                    push(
                        &mut queue_ev,
                        now + 3,
                        Event::TaskExited {
                            task: *task,
                            exit_code: 143,
                            oom: false,
                        },
                    );
                }
                Command::WakeAt { at_ms } => push(&mut queue_ev, *at_ms, Event::Tick),
                Command::RecordTask(r) => {
                    run.last_state.insert(r.task, r.state);
                    if r.state == TaskState::Finished {
                        if let Some((n, cpu)) = task_node.remove(&r.task) {
                            *ledger.get_mut(&n).unwrap() -= cpu;
                        }
                    }
                }
                _ => {}
            }
            run.commands.push((now, cmd.clone()));
        }
    }
    run
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_overcommit_and_every_task_ends_or_runs(
        jobs in prop::collection::vec(job_plan(), 1..25),
        seed in any::<u64>(),
        queue in prop_oneof![Just(QueuePolicy::Berth), Just(QueuePolicy::Fcfs), Just(QueuePolicy::Easy)],
    ) {
        let run = drive(&jobs, queue, seed, 40_000);
        prop_assert!(!run.last_state.is_empty());
        for (task, state) in &run.last_state {
            prop_assert!(*state == TaskState::Finished, "{task} left in {state:?} ({queue:?})");
        }
    }

    #[test]
    fn same_events_and_seed_give_the_same_commands(
        jobs in prop::collection::vec(job_plan(), 1..15),
        seed in any::<u64>(),
    ) {
        let a = drive(&jobs, QueuePolicy::Berth, seed, 20_000);
        let b = drive(&jobs, QueuePolicy::Berth, seed, 20_000);
        prop_assert_eq!(a.commands, b.commands);
    }
}
