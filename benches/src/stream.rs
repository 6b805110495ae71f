//! A recorded controller event stream: what a small closed-loop driver feeds
//! [`Controller::step`] for `jobs` jobs on `nodes` nodes, kept so a benchmark can replay exactly
//! the same events into a fresh controller (the controller is deterministic: same
//! configuration, seed and events give the same commands).
//!
//! The driver is a miniature of the simulator's world, seeded: jobs arrive as a Poisson stream
//! sized to offer ≈ 90 % of the cluster's GPUs (so a queue builds up and some jobs block), a
//! launched task starts after 0.5–3 s and runs 1–20 min, 5 % of tasks fail (batch jobs retry
//! twice), one job in ten is a service killed 30 min after submission, one node is lost at a
//! third of the arrivals and comes back as a new node 5 min later, and every `WakeAt` gets its
//! `Tick`. The mix of events is then close to a real run's: submissions, starts, exits, kills,
//! ticks, a node loss.

use crate::fixtures::{cluster, shapes};
use berth_solver::catalog::Catalog;
use berth_solver::controller::{Command, Controller, ControllerConfig, Event};
use berth_solver::job::{BatchSpec, JobKind, RetryPolicy, ServiceSpec};
use berth_solver::{ClusterSpec, Constraints, GpuDemand, JobId, JobSpec, NodeId, TaskId, Tier};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// What to record.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    pub jobs: usize,
    pub nodes: usize,
    pub seed: u64,
    /// The controller's `schedule_interval_ms`: 0 runs a scheduling pass at the end of every
    /// step that made one worthwhile; above 0 passes are batched (Titus' scheduling loop).
    pub schedule_interval_ms: u64,
}

/// A recorded run: the inputs of a controller and every event it was stepped with.
pub struct Recorded {
    pub cluster: ClusterSpec,
    pub config: ControllerConfig,
    pub seed: u64,
    /// `(now_ms, event)` in the order they were stepped.
    pub events: Vec<(u64, Event)>,
    /// Commands the controller answered over the whole stream (a replay must give as many).
    pub commands: u64,
    /// `LaunchTask` commands among them.
    pub launches: u64,
}

/// Events a recording delivers at most (a bound on a run that would not drain).
pub const STREAM_EVENTS_MAX: usize = 5_000_000;

impl Recorded {
    /// A fresh controller in the recording's starting state.
    pub fn controller(&self) -> Controller {
        Controller::new(
            self.config.clone(),
            Catalog::ec2(),
            &self.cluster,
            self.seed,
        )
        .expect("bench controller configuration")
    }

    /// Steps `ctl` with every recorded event; returns the number of commands it answered.
    pub fn replay(&self, ctl: &mut Controller, events: Vec<(u64, Event)>) -> u64 {
        let mut n = 0u64;
        for (now, e) in events {
            n += ctl.step(now, e).len() as u64;
        }
        n
    }

    /// Event counts by kind (for the bench's description).
    pub fn kinds(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for (_, e) in &self.events {
            *m.entry(e.kind()).or_insert(0) += 1;
        }
        m
    }
}

/// One thing the driver will deliver.
enum Pending {
    Submit(usize),
    Started(TaskId),
    Exited {
        task: TaskId,
        exit_code: i32,
    },
    KillJob(JobId),
    LoseNode(NodeId),
    NodeBack(NodeId),
    /// A wake-up the controller asked for (only the latest one is delivered).
    Tick(u64),
}

struct DrvTask {
    node: NodeId,
    done: bool,
}

/// Records the stream of `spec` (deterministic in `spec.seed`).
pub fn record(spec: StreamSpec) -> Recorded {
    let cluster = cluster(spec.nodes);
    let config = ControllerConfig {
        schedule_interval_ms: spec.schedule_interval_ms,
        ..ControllerConfig::default()
    };
    let mut ctl = Controller::new(config.clone(), Catalog::ec2(), &cluster, spec.seed)
        .expect("bench controller configuration");
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let shapes = shapes();

    // Offered GPU load ≈ 90 % of the cluster's GPUs.
    let gpus_total: f64 = cluster
        .nodes
        .iter()
        .map(|n| n.gpus.as_ref().map_or(0.0, |g| f64::from(g.count)))
        .sum();
    let gpu_per_task: f64 = shapes
        .iter()
        .map(|s| match s.gpu {
            GpuDemand::None => 0.0,
            GpuDemand::Milli(m) => f64::from(m) / 1000.0,
            GpuDemand::Whole(w) => f64::from(w),
        })
        .sum::<f64>()
        / shapes.len() as f64;
    let (size_max, run_ms_min, run_ms_max) = (4u32, 60_000u64, 1_200_000u64);
    let tasks_per_job = f64::from(1 + size_max) / 2.0;
    let run_s_mean = (run_ms_min + run_ms_max) as f64 / 2000.0;
    let jobs_per_s = 0.9 * gpus_total.max(1.0) / (tasks_per_job * gpu_per_task * run_s_mean);
    let mean_gap_ms = 1000.0 / jobs_per_s;

    let mut jobs: Vec<(u64, JobSpec)> = Vec::with_capacity(spec.jobs);
    let mut at = 0u64;
    for i in 0..spec.jobs {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        at += (-u.ln() * mean_gap_ms) as u64;
        let service = i % 10 == 9;
        let kind = if service {
            JobKind::Service(ServiceSpec {
                min: 1,
                desired: 2,
                max: 4,
                restart_on_failure: true,
            })
        } else {
            JobKind::Batch(BatchSpec {
                size: rng.random_range(1..=size_max),
                runtime_limit_ms: None,
                retry: RetryPolicy::Immediate { max_retries: 2 },
                gang: false,
            })
        };
        let job = JobSpec {
            name: format!("job-{i}"),
            owner: String::new(),
            tier: if i % 3 == 0 {
                Tier::Critical
            } else {
                Tier::Flex
            },
            capacity_group: ["default", "ml", "batch"][i % 3].to_string(),
            kind,
            task: shapes[rng.random_range(0..shapes.len())].clone(),
            constraints: Constraints::default(),
            container: None,
        };
        jobs.push((at, job));
    }
    let lose_at = jobs.get(spec.jobs / 3).map_or(0, |j| j.0);

    let mut queue: BTreeMap<(u64, u64), Pending> = BTreeMap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BTreeMap<(u64, u64), Pending>, at: u64, p: Pending| {
        seq += 1;
        q.insert((at, seq), p);
    };
    for (i, (at, _)) in jobs.iter().enumerate() {
        push(&mut queue, *at, Pending::Submit(i));
    }
    if spec.nodes > 1 {
        push(&mut queue, lose_at, Pending::LoseNode(NodeId(0)));
    }

    let mut tasks: BTreeMap<TaskId, DrvTask> = BTreeMap::new();
    let mut on_node: BTreeMap<NodeId, BTreeSet<TaskId>> = BTreeMap::new();
    let mut wake: Option<u64> = None;
    let mut events: Vec<(u64, Event)> = Vec::new();
    let (mut commands, mut launches) = (0u64, 0u64);
    let mut next_node = spec.nodes as u32;

    let deliver = |now: u64,
                   e: Event,
                   ctl: &mut Controller,
                   events: &mut Vec<(u64, Event)>|
     -> Vec<Command> {
        events.push((now, e.clone()));
        ctl.step(now, e)
    };
    let mut now = 0u64;
    let mut cmds = deliver(now, Event::Tick, &mut ctl, &mut events);
    loop {
        commands += cmds.len() as u64;
        for c in cmds.drain(..) {
            match c {
                Command::LaunchTask { task, node, .. } => {
                    launches += 1;
                    tasks.insert(task, DrvTask { node, done: false });
                    on_node.entry(node).or_default().insert(task);
                    let start = now + rng.random_range(500..3_000);
                    push(&mut queue, start, Pending::Started(task));
                    let fail = rng.random_range(0..100) < 5;
                    let end = start + rng.random_range(run_ms_min..run_ms_max);
                    push(
                        &mut queue,
                        end,
                        Pending::Exited {
                            task,
                            exit_code: i32::from(fail),
                        },
                    );
                }
                Command::KillTask { task, grace_ms, .. } => {
                    let at = now + grace_ms.min(2_000);
                    push(
                        &mut queue,
                        at,
                        Pending::Exited {
                            task,
                            exit_code: 137,
                        },
                    );
                }
                Command::WakeAt { at_ms } if wake != Some(at_ms) => {
                    wake = Some(at_ms);
                    push(&mut queue, at_ms.max(now), Pending::Tick(at_ms));
                }
                _ => {}
            }
        }
        if events.len() >= STREAM_EVENTS_MAX {
            break;
        }
        // The next event worth delivering.
        let next = loop {
            let Some(((at, _), p)) = queue.pop_first() else {
                break None;
            };
            let e = match p {
                Pending::Submit(i) => {
                    let j = JobId(i as u64 + 1);
                    if matches!(jobs[i].1.kind, JobKind::Service(_)) {
                        push(&mut queue, at + 1_800_000, Pending::KillJob(j));
                    }
                    Some(Event::JobSubmitted {
                        job: j,
                        spec: jobs[i].1.clone(),
                        requested_runtime_ms: None,
                    })
                }
                Pending::Started(task) => tasks
                    .get(&task)
                    .is_some_and(|t| !t.done)
                    .then_some(Event::TaskStarted { task }),
                Pending::Exited { task, exit_code } => match tasks.get_mut(&task) {
                    Some(t) if !t.done => {
                        t.done = true;
                        if let Some(s) = on_node.get_mut(&t.node) {
                            s.remove(&task);
                        }
                        Some(Event::TaskExited {
                            task,
                            exit_code,
                            oom: false,
                        })
                    }
                    _ => None,
                },
                Pending::KillJob(job) => Some(Event::JobKilled { job }),
                Pending::LoseNode(node) => {
                    for t in on_node.remove(&node).unwrap_or_default() {
                        if let Some(r) = tasks.get_mut(&t) {
                            r.done = true;
                        }
                    }
                    push(&mut queue, at + 300_000, Pending::NodeBack(node));
                    Some(Event::NodeLost { node })
                }
                Pending::NodeBack(node) => {
                    let mut n = cluster.nodes[node.0 as usize].clone();
                    n.id = NodeId(next_node);
                    n.name = format!("{}-replacement", n.name);
                    next_node += 1;
                    Some(Event::NodeReady {
                        node: n,
                        instance: None,
                    })
                }
                Pending::Tick(at_ms) => (wake == Some(at_ms)).then(|| {
                    wake = None;
                    Event::Tick
                }),
            };
            if let Some(e) = e {
                break Some((at, e));
            }
        };
        let Some((at, e)) = next else { break };
        now = now.max(at);
        cmds = deliver(now, e, &mut ctl, &mut events);
    }
    Recorded {
        cluster,
        config,
        seed: spec.seed,
        events,
        commands,
        launches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_gives_the_recorded_commands() {
        for schedule_interval_ms in [0, 1_000] {
            let r = record(StreamSpec {
                jobs: 60,
                nodes: 12,
                seed: 3,
                schedule_interval_ms,
            });
            assert!(r.launches > 60, "{} launches", r.launches);
            let kinds = r.kinds();
            for k in [
                "job_submitted",
                "task_started",
                "task_exited",
                "node_lost",
                "tick",
            ] {
                assert!(kinds.contains_key(k), "{k} missing: {kinds:?}");
            }
            let mut ctl = r.controller();
            assert_eq!(r.replay(&mut ctl, r.events.clone()), r.commands);
            assert_eq!(ctl.stats().jobs, 0, "every job finished");
        }
    }
}
