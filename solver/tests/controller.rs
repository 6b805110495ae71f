//! The lifecycle controller, driven event by event: each test states the situation, the events,
//! and the commands (or records) the controller must answer with.

use berth_solver::catalog::Catalog;
use berth_solver::controller::{
    Command, Controller, ControllerConfig, Event, InstanceId, JobState, LaunchErrorKind, PoolSpec,
    QueuePolicy, RequestId, TaskRecord, TerminateReason,
};
use berth_solver::{
    BatchSpec, ClusterSpec, Constraints, JobId, JobKind, JobSpec, NodeAttributes, NodeId, NodeSpec,
    Resources, RetryPolicy, ServiceSpec, TaskId, TaskReason, TaskShape, TaskState, Tier,
};
use std::collections::BTreeMap;

// ----- building blocks ------------------------------------------------------------------------

fn node(name: &str, cpu_milli: u64, mem_mib: u64, zone: &str, pool: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(0),
        name: name.to_string(),
        capacity: Resources::new(cpu_milli, mem_mib, 0, 0),
        gpus: None,
        attributes: NodeAttributes {
            zone: zone.to_string(),
            instance_type: String::new(),
            pool: pool.to_string(),
            labels: BTreeMap::new(),
        },
    }
}

/// `n` nodes of `cpu_milli` / 8 GiB, zones a, b, c round-robin.
fn cluster(n: usize, cpu_milli: u64) -> ClusterSpec {
    ClusterSpec::from_nodes((0..n).map(|i| {
        node(
            &format!("n{i}"),
            cpu_milli,
            8192,
            ["a", "b", "c"][i % 3],
            "",
        )
    }))
}

fn batch(size: u32, cpu_milli: u64) -> JobSpec {
    JobSpec {
        name: "job".into(),
        owner: String::new(),
        tier: Tier::Flex,
        capacity_group: "default".into(),
        kind: JobKind::Batch(BatchSpec {
            size,
            runtime_limit_ms: None,
            retry: RetryPolicy::default(),
            gang: false,
        }),
        task: TaskShape::new(Resources::new(cpu_milli, 512, 0, 0)),
        constraints: Constraints::default(),
        container: None,
    }
}

fn with_retry(mut j: JobSpec, retry: RetryPolicy) -> JobSpec {
    if let JobKind::Batch(b) = &mut j.kind {
        b.retry = retry;
    }
    j
}

fn gang(mut j: JobSpec) -> JobSpec {
    if let JobKind::Batch(b) = &mut j.kind {
        b.gang = true;
    }
    j
}

fn service(min: u32, desired: u32, max: u32, cpu_milli: u64) -> JobSpec {
    let mut j = batch(1, cpu_milli);
    j.kind = JobKind::Service(ServiceSpec {
        min,
        desired,
        max,
        restart_on_failure: true,
    });
    j
}

fn config(queue: QueuePolicy) -> ControllerConfig {
    ControllerConfig {
        queue,
        policy: berth_solver::Policy::preset("first_fit").unwrap(),
        ..ControllerConfig::default()
    }
}

/// A controller and the commands it gave, with helpers to read them.
struct H {
    c: Controller,
    log: Vec<Command>,
}

impl H {
    fn new(cfg: ControllerConfig, cluster: &ClusterSpec) -> H {
        H {
            c: Controller::new(cfg, Catalog::ec2(), cluster, 7).unwrap(),
            log: Vec::new(),
        }
    }

    fn step(&mut self, now_ms: u64, e: Event) -> Vec<Command> {
        let out = self.c.step(now_ms, e);
        self.log.extend(out.iter().cloned());
        out
    }

    fn submit(&mut self, now_ms: u64, job: u64, spec: JobSpec) -> Vec<Command> {
        self.step(
            now_ms,
            Event::JobSubmitted {
                job: JobId(job),
                spec,
                requested_runtime_ms: None,
            },
        )
    }

    fn submit_est(&mut self, now_ms: u64, job: u64, spec: JobSpec, est_ms: u64) -> Vec<Command> {
        self.step(
            now_ms,
            Event::JobSubmitted {
                job: JobId(job),
                spec,
                requested_runtime_ms: Some(est_ms),
            },
        )
    }

    fn start(&mut self, now_ms: u64, task: TaskId) -> Vec<Command> {
        self.step(now_ms, Event::TaskStarted { task })
    }

    fn exit(&mut self, now_ms: u64, task: TaskId, code: i32) -> Vec<Command> {
        self.step(
            now_ms,
            Event::TaskExited {
                task,
                exit_code: code,
                oom: false,
            },
        )
    }
}

fn launches(cmds: &[Command]) -> Vec<(TaskId, JobId, NodeId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::LaunchTask {
                task, job, node, ..
            } => Some((*task, *job, *node)),
            _ => None,
        })
        .collect()
}

fn kills(cmds: &[Command]) -> Vec<(TaskId, TaskReason)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::KillTask { task, reason, .. } => Some((*task, *reason)),
            _ => None,
        })
        .collect()
}

fn records(cmds: &[Command]) -> Vec<TaskRecord> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::RecordTask(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn finished(cmds: &[Command]) -> Vec<(TaskId, TaskReason)> {
    records(cmds)
        .into_iter()
        .filter(|r| r.state == TaskState::Finished)
        .map(|r| (r.task, r.reason.unwrap()))
        .collect()
}

fn accepted(cmds: &[Command]) -> Vec<TaskRecord> {
    records(cmds)
        .into_iter()
        .filter(|r| r.state == TaskState::Accepted)
        .collect()
}

fn job_states(cmds: &[Command]) -> Vec<(JobId, JobState)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::RecordJob { job, state, .. } => Some((*job, *state)),
            _ => None,
        })
        .collect()
}

fn wake(cmds: &[Command]) -> Option<u64> {
    cmds.iter().rev().find_map(|c| match c {
        Command::WakeAt { at_ms } => Some(*at_ms),
        _ => None,
    })
}

fn provisions(cmds: &[Command]) -> Vec<(RequestId, String, String, String, u32)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ProvisionInstances {
                request,
                pool,
                instance_type,
                zone,
                count,
            } => Some((
                *request,
                pool.clone(),
                instance_type.clone(),
                zone.clone(),
                *count,
            )),
            _ => None,
        })
        .collect()
}

fn terminations(cmds: &[Command]) -> Vec<(InstanceId, TerminateReason)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::TerminateInstance { instance, reason } => Some((instance.clone(), *reason)),
            _ => None,
        })
        .collect()
}

fn scale_downs(cmds: &[Command]) -> Vec<InstanceId> {
    terminations(cmds)
        .into_iter()
        .filter(|(_, r)| *r == TerminateReason::ScaleDown)
        .map(|(i, _)| i)
        .collect()
}

/// The most of the sorted `times_ms` any half-open window `[t, t + window_ms)` holds (the most
/// is reached by a window starting at one of the times).
fn most_in_any_window(times_ms: &[u64], window_ms: u64) -> usize {
    (0..times_ms.len())
        .map(|i| {
            times_ms[i..]
                .iter()
                .take_while(|&&t| t < times_ms[i] + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0)
}

// ----- batch jobs -------------------------------------------------------------------------------

#[test]
fn batch_job_runs_to_completion_and_frees_its_node() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let out = h.submit(0, 1, batch(2, 2000));
    assert_eq!(accepted(&out).len(), 2);
    let l = launches(&out);
    assert_eq!(l.len(), 2, "both tasks fit the 4-core node");
    assert_eq!(h.c.view().free(NodeId(0)).cpu_milli, 0);
    for (t, _, _) in &l {
        h.start(10, *t);
    }
    h.exit(100, l[0].0, 0);
    let out = h.exit(200, l[1].0, 0);
    assert_eq!(finished(&out), vec![(l[1].0, TaskReason::Normal)]);
    assert_eq!(job_states(&out), vec![(JobId(1), JobState::Completed)]);
    assert_eq!(h.c.view().free(NodeId(0)).cpu_milli, 4000);
    assert_eq!(h.c.stats().jobs, 0);
}

#[test]
fn a_task_waits_for_capacity_and_runs_when_it_frees() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 2000));
    let out = h.submit(0, 1, batch(2, 2000));
    assert_eq!(launches(&out).len(), 1);
    assert!(out.iter().any(|c| matches!(
        c,
        Command::RecordUnplaced {
            job: JobId(1),
            pending: 1,
            ..
        }
    )));
    let first = launches(&out)[0].0;
    h.start(5, first);
    let out = h.exit(50, first, 0);
    let l = launches(&out);
    assert_eq!(
        l.len(),
        1,
        "the second task takes the freed capacity at once"
    );
    assert_ne!(l[0].0, first);
}

#[test]
fn retries_follow_the_policy_and_stop_at_max_retries() {
    let retry = RetryPolicy::Exponential {
        initial_delay_ms: 1000,
        max_delay_ms: 3000,
        max_retries: 3,
    };
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let out = h.submit(0, 1, with_retry(batch(1, 1000), retry));
    let mut task = launches(&out)[0].0;
    let mut now = 0;
    // Failures at 100 ms after each launch; retries after 1000, 2000, then 3000 (capped) ms.
    for expected_delay in [1000, 2000, 3000] {
        h.start(now + 1, task);
        now += 100;
        let out = h.exit(now, task, 1);
        assert_eq!(finished(&out), vec![(task, TaskReason::Failed)]);
        assert!(launches(&out).is_empty(), "no retry before the delay");
        assert_eq!(wake(&out), Some(now + expected_delay));
        // One millisecond early: nothing.
        let out = h.step(now + expected_delay - 1, Event::Tick);
        assert!(launches(&out).is_empty());
        now += expected_delay;
        let out = h.step(now, Event::Tick);
        let acc = accepted(&out);
        assert_eq!(acc.len(), 1);
        assert_eq!(acc[0].slot, 0);
        let l = launches(&out);
        assert_eq!(l.len(), 1);
        assert_ne!(l[0].0, task, "a retry is a new task");
        task = l[0].0;
    }
    h.start(now + 1, task);
    let out = h.exit(now + 100, task, 1);
    assert_eq!(finished(&out), vec![(task, TaskReason::Failed)]);
    assert_eq!(job_states(&out), vec![(JobId(1), JobState::Failed)]);
}

#[test]
fn immediate_and_delayed_retries() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let out = h.submit(
        0,
        1,
        with_retry(batch(1, 1000), RetryPolicy::Immediate { max_retries: 1 }),
    );
    let t = launches(&out)[0].0;
    let out = h.step(
        10,
        Event::TaskExited {
            task: t,
            exit_code: 137,
            oom: true,
        },
    );
    assert_eq!(finished(&out), vec![(t, TaskReason::OomKilled)]);
    assert_eq!(
        launches(&out).len(),
        1,
        "immediate: relaunched in the same step"
    );

    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let out = h.submit(
        0,
        1,
        with_retry(
            batch(1, 1000),
            RetryPolicy::Delayed {
                delay_ms: 500,
                max_retries: 1,
            },
        ),
    );
    let t = launches(&out)[0].0;
    let out = h.exit(10, t, 2);
    assert_eq!(wake(&out), Some(510));
    assert_eq!(launches(&h.step(510, Event::Tick)).len(), 1);
}

#[test]
fn runtime_limit_kills_and_marks_the_task() {
    let mut spec = batch(1, 1000);
    if let JobKind::Batch(b) = &mut spec.kind {
        b.runtime_limit_ms = Some(60_000);
        b.retry = RetryPolicy::Immediate { max_retries: 5 };
    }
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let t = launches(&h.submit(0, 1, spec))[0].0;
    let out = h.start(1000, t);
    assert_eq!(wake(&out), Some(61_000));
    assert!(kills(&h.step(60_999, Event::Tick)).is_empty());
    let out = h.step(61_000, Event::Tick);
    assert_eq!(kills(&out), vec![(t, TaskReason::RuntimeLimitExceeded)]);
    let out = h.exit(61_500, t, 143);
    assert_eq!(finished(&out), vec![(t, TaskReason::RuntimeLimitExceeded)]);
    assert!(launches(&out).is_empty(), "a runtime limit is not retried");
    assert_eq!(job_states(&out), vec![(JobId(1), JobState::Failed)]);
}

#[test]
fn node_loss_retries_without_using_up_retries() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(2, 4000));
    let l = launches(&h.submit(0, 1, batch(1, 1000)));
    let (t, _, n) = l[0];
    h.start(10, t);
    let out = h.step(20, Event::NodeLost { node: n });
    assert_eq!(finished(&out), vec![(t, TaskReason::Lost)]);
    let l2 = launches(&out);
    assert_eq!(
        l2.len(),
        1,
        "max_retries = 0 and still retried: losing a node is not the task's fault"
    );
    assert_ne!(l2[0].2, n, "not on the lost node");
}

#[test]
fn invalid_and_duplicate_jobs_are_rejected() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let out = h.submit(0, 1, batch(0, 1000));
    assert_eq!(job_states(&out), vec![(JobId(1), JobState::Rejected)]);
    let msg = out.iter().find_map(|c| match c {
        Command::RecordJob { message, .. } => message.clone(),
        _ => None,
    });
    assert!(msg.unwrap().contains("batch.size"));
    h.submit(0, 2, batch(1, 1000));
    assert_eq!(
        job_states(&h.submit(0, 2, batch(1, 1000))),
        vec![(JobId(2), JobState::Rejected)]
    );
}

#[test]
fn job_kill_ends_pending_and_running_tasks() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 2000));
    let out = h.submit(0, 1, batch(3, 1000));
    let l = launches(&out);
    assert_eq!(l.len(), 2);
    let out = h.step(10, Event::JobKilled { job: JobId(1) });
    assert_eq!(kills(&out).len(), 2);
    assert_eq!(finished(&out).len(), 1, "the pending task ends at once");
    assert!(
        job_states(&out).is_empty(),
        "the job ends when its tasks have exited"
    );
    h.exit(20, l[0].0, 143);
    let out = h.exit(21, l[1].0, 143);
    assert_eq!(finished(&out), vec![(l[1].0, TaskReason::Killed)]);
    assert_eq!(job_states(&out), vec![(JobId(1), JobState::Killed)]);
}

// ----- services ---------------------------------------------------------------------------------

#[test]
fn service_replaces_failed_instances_and_scales() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(3, 4000));
    let out = h.submit(0, 1, service(1, 3, 10, 1000));
    let l = launches(&out);
    assert_eq!(l.len(), 3);
    for (t, _, _) in &l {
        h.start(1, *t);
    }
    let out = h.exit(100, l[0].0, 1);
    let r = launches(&out);
    assert_eq!(r.len(), 1, "the failed instance is replaced");
    assert_eq!(
        accepted(&out)[0].slot,
        records(&h.log)
            .iter()
            .find(|x| x.task == l[0].0)
            .unwrap()
            .slot
    );
    h.start(101, r[0].0);

    // Scale up to 5.
    let out = h.step(
        200,
        Event::JobScaled {
            job: JobId(1),
            min: 1,
            desired: 5,
            max: 10,
        },
    );
    assert_eq!(launches(&out).len(), 2);
    for (t, _, _) in launches(&out) {
        h.start(201, t);
    }
    // Scale down to 2: three kills, leaving the zones balanced.
    let out = h.step(
        300,
        Event::JobScaled {
            job: JobId(1),
            min: 1,
            desired: 2,
            max: 10,
        },
    );
    let k = kills(&out);
    assert_eq!(k.len(), 3);
    assert!(k.iter().all(|(_, r)| *r == TaskReason::ScaledDown));
    for (t, _) in &k {
        let out = h.exit(310, *t, 143);
        assert_eq!(finished(&out), vec![(*t, TaskReason::ScaledDown)]);
        assert!(
            launches(&out).is_empty(),
            "scaled-down instances are not replaced"
        );
    }
    let view = h.c.view();
    let jp = view.job(JobId(1)).unwrap();
    assert_eq!(jp.total, 2);
    let skew = jp.per_zone.iter().max().unwrap() - jp.per_zone.iter().min().unwrap();
    assert!(skew <= 1, "zones after scale-down: {:?}", jp.per_zone);
}

#[test]
fn killing_a_service_task_replaces_it() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let l = launches(&h.submit(0, 1, service(1, 1, 1, 1000)));
    let t = l[0].0;
    h.start(1, t);
    assert_eq!(
        kills(&h.step(10, Event::TaskKillRequested { task: t })),
        vec![(t, TaskReason::Killed)]
    );
    let out = h.exit(11, t, 143);
    assert_eq!(launches(&out).len(), 1);
}

// ----- gangs and queue policies ---------------------------------------------------------------------

/// Two nodes busy with one job; a gang of two waits, then a one-task job. Both running tasks
/// end at the same instant. Stepped one event at a time, the first end already schedules:
/// the small job takes the freed node and the gang keeps waiting. Handed over together
/// (`step_batch`), the pass sees both nodes free and the gang, first in line, starts.
#[test]
fn events_of_one_instant_handed_over_together_are_scheduled_once() {
    let run = |together: bool| {
        let mut h = H::new(config(QueuePolicy::Berth), &cluster(2, 4000));
        let running = launches(&h.submit(0, 1, batch(2, 4000)));
        assert_eq!(running.len(), 2);
        for (t, _, _) in &running {
            h.start(1, *t);
        }
        h.submit(2, 2, gang(batch(2, 4000)));
        h.submit(3, 3, batch(1, 4000));
        let exits = running.iter().map(|(t, _, _)| Event::TaskExited {
            task: *t,
            exit_code: 0,
            oom: false,
        });
        let out: Vec<Command> = if together {
            h.c.step_batch(10, exits)
        } else {
            exits.flat_map(|e| h.c.step(10, e)).collect()
        };
        let mut jobs: Vec<JobId> = launches(&out).iter().map(|l| l.1).collect();
        jobs.sort();
        jobs
    };
    assert_eq!(
        run(false),
        vec![JobId(3)],
        "one pass per event: the small job first"
    );
    assert_eq!(
        run(true),
        vec![JobId(2), JobId(2)],
        "one pass for the instant: the gang"
    );
}

#[test]
fn gang_is_placed_all_or_nothing() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(2, 2000));
    let out = h.submit(0, 1, gang(batch(3, 2000)));
    assert!(
        launches(&out).is_empty(),
        "3 tasks, room for 2: none placed"
    );
    assert_eq!(h.c.view().placed_tasks(), 0);
    let mut n = node("extra", 2000, 8192, "a", "");
    n.id = NodeId(10);
    let out = h.step(
        5,
        Event::NodeReady {
            node: n,
            instance: None,
        },
    );
    assert_eq!(
        launches(&out).len(),
        3,
        "a third node: the whole gang starts"
    );
}

#[test]
fn gang_task_failure_restarts_the_whole_gang() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(2, 2000));
    let spec = with_retry(
        gang(batch(2, 2000)),
        RetryPolicy::Immediate { max_retries: 1 },
    );
    let l = launches(&h.submit(0, 1, spec));
    assert_eq!(l.len(), 2);
    h.start(1, l[0].0);
    h.start(1, l[1].0);
    let out = h.exit(10, l[0].0, 1);
    assert_eq!(
        kills(&out),
        vec![(l[1].0, TaskReason::Killed)],
        "the sibling is killed"
    );
    let out = h.exit(11, l[1].0, 143);
    let again = launches(&out);
    assert_eq!(again.len(), 2, "both slots restart together");
    assert!(again.iter().all(|(t, _, _)| *t != l[0].0 && *t != l[1].0));
}

#[test]
fn fcfs_blocks_behind_the_head_and_berth_does_not() {
    for (queue, small_runs) in [(QueuePolicy::Fcfs, false), (QueuePolicy::Berth, true)] {
        let mut h = H::new(config(queue), &cluster(1, 4000));
        let l = launches(&h.submit(0, 1, batch(1, 3000)));
        h.start(1, l[0].0);
        assert!(launches(&h.submit(2, 2, batch(1, 4000))).is_empty());
        let out = h.submit(3, 3, batch(1, 1000));
        assert_eq!(!launches(&out).is_empty(), small_runs, "{queue:?}");
    }
}

/// EASY on one 4-core node, by hand:
/// - A (2 cores, est 10 s) at 0 starts at 0;
/// - B (4 cores) at 1 is the head: its reservation is at 10 s (when A ends);
/// - C (2 cores, est 5 s) at 2 ends by 7 s < 10 s: backfilled at 2;
/// - D (2 cores, est 20 s) at 3 would hold 2 cores past 10 s: not backfilled;
/// - A ends at 10 s → B starts; B ends at 20 s → D starts.
#[test]
fn easy_backfills_only_what_does_not_delay_the_head() {
    let mut h = H::new(config(QueuePolicy::Easy), &cluster(1, 4000));
    let a = launches(&h.submit_est(0, 1, batch(1, 2000), 10_000))[0].0;
    h.start(0, a);
    assert!(launches(&h.submit_est(1000, 2, batch(1, 4000), 10_000)).is_empty());
    let c = launches(&h.submit_est(2000, 3, batch(1, 2000), 5_000));
    assert_eq!(c.len(), 1, "C fits before the reservation");
    h.start(2000, c[0].0);
    assert!(
        launches(&h.submit_est(3000, 4, batch(1, 2000), 20_000)).is_empty(),
        "D would delay B"
    );
    assert!(
        launches(&h.exit(7000, c[0].0, 0)).is_empty(),
        "B needs all 4 cores; D still may not pass"
    );
    let out = h.exit(10_000, a, 0);
    let b = launches(&out);
    assert_eq!(b.iter().map(|x| x.1).collect::<Vec<_>>(), vec![JobId(2)]);
    h.start(10_000, b[0].0);
    let out = h.exit(20_000, b[0].0, 0);
    assert_eq!(
        launches(&out).iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![JobId(4)]
    );
}

#[test]
fn critical_jobs_go_first_and_groups_share_by_dominant_share() {
    // One 2-core node; two pending 1-core flex tasks and one critical task.
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 2000));
    let blocker = launches(&h.submit(0, 1, batch(1, 2000)))[0].0;
    let mut flex = batch(1, 1000);
    flex.capacity_group = "x".into();
    h.submit(1, 2, flex);
    let mut crit = batch(1, 1000);
    crit.tier = Tier::Critical;
    h.submit(2, 3, crit);
    let out = h.exit(10, blocker, 0);
    let jobs: Vec<JobId> = launches(&out).iter().map(|x| x.1).collect();
    assert_eq!(jobs, vec![JobId(3), JobId(2)], "critical first, then flex");

    // Fair share: group "big" already holds 3 of 4 cores; one core frees up and both groups
    // wait: "small" (share 0) gets it though "big" asked first.
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let mut big = batch(4, 1000);
    big.capacity_group = "big".into();
    let held = launches(&h.submit(0, 1, big));
    assert_eq!(held.len(), 4);
    let mut big2 = batch(1, 1000);
    big2.capacity_group = "big".into();
    h.submit(1, 2, big2);
    let mut small = batch(1, 1000);
    small.capacity_group = "small".into();
    h.submit(2, 3, small);
    let out = h.exit(10, held[0].0, 0);
    assert_eq!(
        launches(&out).iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![JobId(3)]
    );
}

#[test]
fn tier_pools_keep_critical_work_on_critical_nodes() {
    let nodes = vec![
        node("c0", 4000, 8192, "a", "reserved"),
        node("f0", 4000, 8192, "a", "elastic"),
    ];
    let mut cfg = config(QueuePolicy::Berth);
    cfg.policy
        .tier_pools
        .insert(Tier::Critical, vec!["reserved".into()]);
    cfg.policy
        .tier_pools
        .insert(Tier::Flex, vec!["elastic".into()]);
    let mut h = H::new(cfg, &ClusterSpec::from_nodes(nodes));
    let mut crit = batch(2, 1000);
    crit.tier = Tier::Critical;
    let l = launches(&h.submit(0, 1, crit));
    assert!(l.iter().all(|x| x.2 == NodeId(0)));
    let l = launches(&h.submit(0, 2, batch(2, 1000)));
    assert!(l.iter().all(|x| x.2 == NodeId(1)));
}

// ----- timeouts and reconciliation ----------------------------------------------------------------

#[test]
fn stuck_launch_is_killed_and_a_stuck_kill_is_given_up() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.timeouts.launch_ms = 1000;
    cfg.timeouts.kill_ms = 5000;
    cfg.kill_grace_ms = 2000;
    let mut h = H::new(cfg, &cluster(1, 1000));
    let t = launches(&h.submit(
        0,
        1,
        with_retry(batch(1, 1000), RetryPolicy::Immediate { max_retries: 1 }),
    ))[0]
        .0;
    let out = h.step(1000, Event::Tick);
    assert_eq!(kills(&out), vec![(t, TaskReason::TimedOut)]);
    assert_eq!(
        h.c.view().free(NodeId(0)).cpu_milli,
        0,
        "still held while the kill is pending"
    );
    // No exit ever comes: after the kill timeout the task is taken for dead.
    let out = h.step(6000, Event::Tick);
    assert_eq!(finished(&out), vec![(t, TaskReason::TimedOut)]);
    assert_eq!(launches(&out).len(), 1, "retried on the freed capacity");
}

#[test]
fn start_timeout_kills_a_task_stuck_starting() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.timeouts.start_ms = 3000;
    let mut h = H::new(cfg, &cluster(1, 1000));
    let t = launches(&h.submit(0, 1, batch(1, 1000)))[0].0;
    h.step(10, Event::TaskStarting { task: t });
    assert!(kills(&h.step(3009, Event::Tick)).is_empty());
    assert_eq!(
        kills(&h.step(3010, Event::Tick)),
        vec![(t, TaskReason::TimedOut)]
    );
}

#[test]
fn reconciliation_kills_strangers_and_loses_the_missing() {
    let mut h = H::new(config(QueuePolicy::Berth), &cluster(1, 4000));
    let l = launches(&h.submit(0, 1, batch(2, 1000)));
    h.start(10, l[0].0);
    h.start(10, l[1].0);
    let stranger = TaskId(999_999);
    let out = h.step(
        100_000,
        Event::ReconcileTasks {
            node: NodeId(0),
            running: vec![l[0].0, stranger],
        },
    );
    assert_eq!(kills(&out), vec![(stranger, TaskReason::Killed)]);
    assert_eq!(finished(&out), vec![(l[1].0, TaskReason::Lost)]);
    assert_eq!(launches(&out).len(), 1, "the lost task is retried");
}

// ----- pools and autoscaling -----------------------------------------------------------------------

fn flex_pool(min: u32, max: u32) -> PoolSpec {
    PoolSpec {
        name: "flex".into(),
        tier: Tier::Flex,
        instance_types: vec!["m5.xlarge".into(), "m5.2xlarge".into()],
        zones: vec!["us-east-1a".into(), "us-east-1b".into()],
        min_nodes: min,
        max_nodes: max,
        autoscale: None,
        idle_nodes_min: 0,
        idle_nodes_max: 0,
        scale_down_idle_ms: 60_000,
        disruption_budget: Default::default(),
        zone_max_skew: 1,
        capacity_type: Default::default(),
    }
}

/// Completes a provisioning request: every instance launches and registers.
fn bring_up(
    h: &mut H,
    now_ms: u64,
    p: &(RequestId, String, String, String, u32),
    next_node: &mut u32,
) -> Vec<Command> {
    let mut out = Vec::new();
    for _ in 0..p.4 {
        let instance = InstanceId(format!("i-{}", *next_node));
        out.extend(h.step(
            now_ms,
            Event::InstanceLaunched {
                request: p.0,
                instance: instance.clone(),
            },
        ));
        let it = Catalog::ec2().get(&p.2).unwrap();
        let spec = it.node_spec(NodeId(*next_node), format!("n{}", *next_node), &p.3, &p.1);
        *next_node += 1;
        out.extend(h.step(
            now_ms,
            Event::NodeReady {
                node: spec,
                instance: Some(instance),
            },
        ));
    }
    out
}

#[test]
fn pools_scale_up_for_pending_work_without_double_provisioning() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![flex_pool(0, 10)];
    let mut h = H::new(cfg, &ClusterSpec::default());
    // 4 tasks of 3 cores: m5.xlarge (4 vCPU) hosts one each; m5.2xlarge (8 vCPU) two.
    let out = h.submit(0, 1, batch(4, 3000));
    assert!(launches(&out).is_empty());
    let out = h.step(10_000, Event::Tick);
    let p = provisions(&out);
    assert!(!p.is_empty(), "pending work provisions instances");
    let total: u32 = p.iter().map(|x| x.4).sum();
    let capacity_tasks: u32 = p
        .iter()
        .map(|x| x.4 * if x.2 == "m5.2xlarge" { 2 } else { 1 })
        .sum();
    assert!(capacity_tasks >= 4, "{p:?}");
    // Zones balanced.
    let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
    for x in &p {
        *per_zone.entry(x.3.clone()).or_default() += x.4;
    }
    let (lo, hi) = (
        per_zone.values().min().unwrap(),
        per_zone.values().max().unwrap(),
    );
    assert!(
        hi - lo <= 1 || per_zone.len() == 1 && total == 1,
        "{per_zone:?}"
    );
    // While in flight, the next evaluation provisions nothing more.
    assert!(
        provisions(&h.step(20_000, Event::Tick)).is_empty(),
        "no double provisioning"
    );
    // Instances come up: the tasks are placed.
    let mut next = 0;
    let mut placed = 0;
    for x in &p {
        placed += launches(&bring_up(&mut h, 30_000, x, &mut next)).len();
    }
    assert_eq!(placed, 4);
    assert_eq!(h.c.stats().instances_in_flight, 0);
}

#[test]
fn critical_pools_are_pre_provisioned_and_idle_nodes_scale_down_within_budget() {
    let mut crit = flex_pool(2, 2);
    crit.name = "crit".into();
    crit.tier = Tier::Critical;
    let mut flex = flex_pool(1, 10);
    flex.scale_down_idle_ms = 60_000;
    flex.disruption_budget = berth_solver::controller::DisruptionBudget {
        nodes_max: 1,
        window_ms: 100_000,
    };
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![crit, flex];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let out = h.step(0, Event::Tick);
    let p = provisions(&out);
    let crit_count: u32 = p.iter().filter(|x| x.1 == "crit").map(|x| x.4).sum();
    let flex_count: u32 = p.iter().filter(|x| x.1 == "flex").map(|x| x.4).sum();
    assert_eq!(
        (crit_count, flex_count),
        (2, 1),
        "pools start at their minimum"
    );
    let crit_zones: Vec<&String> = p.iter().filter(|x| x.1 == "crit").map(|x| &x.3).collect();
    assert_eq!(crit_zones.len(), 2, "one per zone: {crit_zones:?}");
    let mut next = 0;
    for x in &p {
        bring_up(&mut h, 1000, x, &mut next);
    }
    // Flex work needing 3 more nodes arrives, runs and ends.
    let out = h.submit(2000, 1, batch(4, 3000));
    let first = launches(&out);
    assert_eq!(first.len(), 1, "the flex minimum node takes one");
    let p = provisions(&h.step(10_000, Event::Tick));
    for x in &p {
        bring_up(&mut h, 11_000, x, &mut next);
    }
    let running: Vec<TaskId> = launches(&h.log).iter().map(|x| x.0).collect();
    assert_eq!(running.len(), 4);
    for t in &running {
        h.exit(12_000, *t, 0);
    }
    let flex_nodes = |h: &H| h.c.pool_nodes_by_zone("flex").values().sum::<u32>();
    let before = flex_nodes(&h);
    assert!(before >= 3);
    // Idle for less than scale_down_idle_ms: kept.
    let out = h.step(71_999, Event::Tick);
    assert!(!out
        .iter()
        .any(|c| matches!(c, Command::TerminateInstance { .. })));
    // Then one node per budget window, never below min, zones within skew 1.
    let mut times = Vec::new();
    let mut now = 72_000;
    while now < 1_000_000 {
        let out = h.step(now, Event::Tick);
        times.extend(scale_downs(&out).iter().map(|_| now));
        let zones = h.c.pool_nodes_by_zone("flex");
        let (lo, hi) = (zones.values().min().unwrap(), zones.values().max().unwrap());
        assert!(hi - lo <= 1, "zone balance kept: {zones:?}");
        now += 1_000;
    }
    assert_eq!(
        most_in_any_window(&times, 100_000),
        1,
        "budget: at most one per 100 s window: {times:?}"
    );
    assert_eq!(flex_nodes(&h), 1, "down to the minimum");
    assert_eq!(times.len() as u32, before - 1);
    assert_eq!(
        h.c.pool_nodes_by_zone("crit").values().sum::<u32>(),
        2,
        "critical pools do not scale down"
    );
}

#[test]
fn launch_errors_steer_the_autoscaler() {
    let mut pool = flex_pool(0, 10);
    pool.instance_types = vec!["m5.xlarge".into()];
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![pool];
    cfg.autoscale.backoff_initial_ms = 30_000;
    let mut h = H::new(cfg, &ClusterSpec::default());
    h.submit(0, 1, batch(1, 3000));
    let p = provisions(&h.step(10_000, Event::Tick));
    assert_eq!(p.len(), 1);
    let zone = p[0].3.clone();
    // Insufficient capacity in that zone: the other zone is asked at once.
    let out = h.step(
        11_000,
        Event::InstanceLaunchFailed {
            request: p[0].0,
            count: 1,
            error: LaunchErrorKind::InsufficientCapacity,
            message: "no m5.xlarge".into(),
        },
    );
    let p2 = provisions(&out);
    assert_eq!(p2.len(), 1);
    assert_ne!(p2[0].3, zone);
    // Throttled: nothing until the back-off ends.
    h.step(
        12_000,
        Event::InstanceLaunchFailed {
            request: p2[0].0,
            count: 1,
            error: LaunchErrorKind::Throttled,
            message: String::new(),
        },
    );
    assert!(provisions(&h.step(20_000, Event::Tick)).is_empty());
    assert!(
        provisions(&h.step(40_000, Event::Tick)).is_empty(),
        "the zone short of capacity is still avoided"
    );
    // The cool-down passes: the first zone again... but unauthorised stops the pool for good.
    let out = h.step(700_000, Event::Tick);
    let p3 = provisions(&out);
    assert_eq!(p3.len(), 1);
    h.step(
        701_000,
        Event::InstanceLaunchFailed {
            request: p3[0].0,
            count: 1,
            error: LaunchErrorKind::Unauthorized,
            message: "not allowed".into(),
        },
    );
    assert!(provisions(&h.step(2_000_000, Event::Tick)).is_empty());
}

#[test]
fn spot_interruption_drains_the_node_and_moves_its_tasks() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![flex_pool(2, 2)];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let p = provisions(&h.step(0, Event::Tick));
    let mut next = 0;
    for x in &p {
        bring_up(&mut h, 1000, x, &mut next);
    }
    let l = launches(&h.submit(2000, 1, batch(1, 1000)));
    let (t, _, n) = l[0];
    h.start(2001, t);
    let instance = InstanceId(format!("i-{}", n.0));
    let out = h.step(
        3000,
        Event::InstanceInterrupted {
            instance,
            terminate_at_ms: 123_000,
        },
    );
    assert_eq!(kills(&out), vec![(t, TaskReason::Lost)]);
    let out = h.exit(4000, t, 143);
    assert_eq!(finished(&out), vec![(t, TaskReason::Lost)]);
    let l2 = launches(&out);
    assert_eq!(l2.len(), 1);
    assert_ne!(l2[0].2, n, "moved off the interrupted node");
    assert!(!h.c.view().is_schedulable(h.c.node_of(n).unwrap()));
}

/// Ticks every 10 s over `from_ms..to_ms`; the instances provisioned and scale-down
/// terminations it gave.
fn quiet(h: &mut H, from_ms: u64, to_ms: u64) -> (u32, usize) {
    let (mut provisioned, mut terminated) = (0, 0);
    for now in (from_ms..to_ms).step_by(10_000) {
        let out = h.step(now, Event::Tick);
        provisioned += provisions(&out).iter().map(|p| p.4).sum::<u32>();
        terminated += scale_downs(&out).len();
    }
    (provisioned, terminated)
}

fn m5_xlarge_pool(min: u32, max: u32) -> PoolSpec {
    let mut pool = flex_pool(min, max);
    pool.instance_types = vec!["m5.xlarge".into()];
    pool
}

#[test]
fn idle_nodes_min_above_idle_nodes_max_is_refused() {
    // (idle_nodes_min, idle_nodes_max, accepted). idle_nodes_max = 0 keeps no idle node: with
    // idle_nodes_min > 0 the pool would provision its headroom and terminate it again.
    for (min, max, ok) in [(2, 0, false), (3, 2, false), (2, 2, true), (0, 0, true)] {
        let mut pool = flex_pool(0, 10);
        pool.idle_nodes_min = min;
        pool.idle_nodes_max = max;
        let mut cfg = config(QueuePolicy::Berth);
        cfg.pools = vec![pool];
        let r = Controller::new(cfg.clone(), Catalog::ec2(), &ClusterSpec::default(), 7);
        assert_eq!(r.is_ok(), ok, "idle_nodes_min {min}, idle_nodes_max {max}");
        assert_eq!(cfg.validate(Catalog::ec2()).is_ok(), ok);
        if let Err(e) = r {
            let berth_solver::controller::ControllerError::Config(e) = e else {
                panic!("{e}")
            };
            assert_eq!(e.path, "pools[0].idle_nodes_max");
            assert!(
                e.message.contains(&format!("idle_nodes_min ({min})")),
                "{e}"
            );
        }
    }
}

#[test]
fn idle_headroom_is_kept_without_flapping() {
    let mut pool = m5_xlarge_pool(0, 10);
    pool.idle_nodes_min = 2;
    pool.idle_nodes_max = 3;
    pool.scale_down_idle_ms = 60_000;
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![pool];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let nodes = |h: &H| h.c.pool_nodes_by_zone("flex").values().sum::<u32>();
    let p = provisions(&h.step(0, Event::Tick));
    assert_eq!(p.iter().map(|x| x.4).sum::<u32>(), 2, "the headroom: {p:?}");
    let mut next = 0;
    for x in &p {
        bring_up(&mut h, 1000, x, &mut next);
    }
    // Two idle hours: the headroom stays, nothing is provisioned or terminated.
    assert_eq!(quiet(&mut h, 10_000, 7_200_000), (0, 0));
    assert_eq!(nodes(&h), 2);

    // Work takes both idle nodes: the headroom is provisioned again, two nodes, once.
    let l = launches(&h.submit(7_200_000, 1, batch(2, 3000)));
    assert_eq!(l.len(), 2, "the idle nodes take the work at once");
    let p = provisions(&h.step(7_210_000, Event::Tick));
    assert_eq!(p.iter().map(|x| x.4).sum::<u32>(), 2, "{p:?}");
    assert_eq!(quiet(&mut h, 7_220_000, 7_300_000), (0, 0), "in flight");
    for x in &p {
        bring_up(&mut h, 7_300_000, x, &mut next);
    }
    // The work ends: 4 idle nodes, idle_nodes_max 3: one goes once idle for
    // scale_down_idle_ms (the new nodes since 7,300 s, the others since 7,310 s).
    for (t, _, _) in &l {
        h.start(7_300_000, *t);
        h.exit(7_310_000, *t, 0);
    }
    assert_eq!(quiet(&mut h, 7_320_000, 7_360_000), (0, 0), "idle < 60 s");
    assert_eq!(quiet(&mut h, 7_360_000, 7_400_000), (0, 1));
    assert_eq!(nodes(&h), 3);
    // Then quiet for two more hours: 3 idle nodes, between idle_nodes_min and idle_nodes_max.
    assert_eq!(quiet(&mut h, 7_400_000, 14_400_000), (0, 0));
    assert_eq!(nodes(&h), 3);
}

#[test]
fn a_critical_pool_keeps_its_idle_headroom_too() {
    // Not autoscaled: nothing is terminated, and the headroom is restored when work takes it.
    let mut pool = m5_xlarge_pool(1, 4);
    pool.name = "crit".into();
    pool.tier = Tier::Critical;
    pool.idle_nodes_min = 1;
    pool.idle_nodes_max = 1;
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![pool];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let p = provisions(&h.step(0, Event::Tick));
    assert_eq!(
        p.iter().map(|x| x.4).sum::<u32>(),
        1,
        "min 1 is also the headroom"
    );
    let mut next = 0;
    bring_up(&mut h, 1000, &p[0], &mut next);
    assert_eq!(quiet(&mut h, 10_000, 3_600_000), (0, 0));
    let mut crit = batch(1, 3000);
    crit.tier = Tier::Critical;
    assert_eq!(launches(&h.submit(3_600_000, 1, crit)).len(), 1);
    let (provisioned, _) = quiet(&mut h, 3_610_000, 3_620_000);
    assert_eq!(provisioned, 1, "the headroom is provisioned again");
}

/// A pool of 9 busy m5.xlarge nodes whose work ends at 12 s: min 1, so 8 to scale down.
fn nine_busy_nodes(budget_nodes_max: u32, window_ms: u64) -> (H, u32) {
    let mut pool = m5_xlarge_pool(1, 20);
    pool.scale_down_idle_ms = 60_000;
    pool.disruption_budget = berth_solver::controller::DisruptionBudget {
        nodes_max: budget_nodes_max,
        window_ms,
    };
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![pool];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let mut next = 0;
    for x in provisions(&h.step(0, Event::Tick)) {
        bring_up(&mut h, 1000, &x, &mut next);
    }
    h.submit(2000, 1, batch(9, 3000));
    for x in provisions(&h.step(10_000, Event::Tick)) {
        bring_up(&mut h, 11_000, &x, &mut next);
    }
    let running: Vec<TaskId> = launches(&h.log).iter().map(|x| x.0).collect();
    assert_eq!(running.len(), 9, "one 3-core task per 4-core node");
    for t in &running {
        h.start(11_500, *t);
        h.exit(12_000, *t, 0);
    }
    (h, next)
}

#[test]
fn scale_down_never_exceeds_the_disruption_budget_in_any_window() {
    const WINDOW_MS: u64 = 100_000;
    let (mut h, _) = nine_busy_nodes(2, WINDOW_MS);
    // Stepped every second, so nothing is hidden between steps.
    let mut times = Vec::new();
    for now in (13_000..1_000_000).step_by(1_000) {
        let out = h.step(now, Event::Tick);
        let n = scale_downs(&out).len();
        times.extend(std::iter::repeat_n(now, n));
        let zones = h.c.pool_nodes_by_zone("flex");
        let (lo, hi) = (zones.values().min().unwrap(), zones.values().max().unwrap());
        assert!(hi - lo <= 1, "zone balance kept at {now}: {zones:?}");
    }
    assert_eq!(times.len(), 8, "down to min_nodes: {times:?}");
    assert!(times[0] >= 72_000, "idle 60 s first: {times:?}");
    assert_eq!(
        most_in_any_window(&times, WINDOW_MS),
        2,
        "at most (and, with 8 idle nodes, exactly) nodes_max per window: {times:?}"
    );
    // Four windows at least for 8 terminations at 2 per window.
    assert!(times[7] - times[0] >= 3 * WINDOW_MS, "{times:?}");
    assert_eq!(h.c.pool_nodes_by_zone("flex").values().sum::<u32>(), 1);
}

// ----- instance reconciliation and provisioning timeouts ------------------------------------------

#[test]
fn reconcile_instances_loses_the_vanished_and_terminates_strangers() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![m5_xlarge_pool(2, 2)];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let p = provisions(&h.step(0, Event::Tick));
    assert_eq!(p.len(), 2, "one per zone");
    // While a request may still report instances, an unknown one may be its: kept.
    let stranger = InstanceId("i-stranger".into());
    let out = h.step(
        500,
        Event::ReconcileInstances {
            instances: vec![stranger.clone()],
        },
    );
    assert!(terminations(&out).is_empty(), "{out:?}");
    let mut next = 0;
    for x in &p {
        bring_up(&mut h, 1000, x, &mut next);
    }
    let l = launches(&h.submit(2000, 1, batch(1, 1000)));
    let (t, _, n) = l[0];
    h.start(2001, t);
    let kept = InstanceId(format!("i-{}", 1 - n.0));
    // The provider lists the other instance and a stranger; the task's instance is gone.
    let out = h.step(
        5000,
        Event::ReconcileInstances {
            instances: vec![kept.clone(), stranger.clone()],
        },
    );
    assert_eq!(finished(&out), vec![(t, TaskReason::Lost)]);
    let moved = launches(&out);
    assert_eq!(moved.len(), 1, "the lost task is retried at once");
    assert_ne!(moved[0].2, n, "not on the vanished node");
    assert_eq!(
        terminations(&out),
        vec![(stranger, TerminateReason::Unknown)]
    );
    assert!(!h.c.view().is_schedulable(h.c.node_of(n).unwrap()));
    assert_eq!(h.c.stats().nodes_live, 1);
    // The pool is back under min_nodes: the next evaluation replaces the node.
    let p = provisions(&h.step(10_000, Event::Tick));
    assert_eq!(p.iter().map(|x| x.4).sum::<u32>(), 1, "{p:?}");
    // Listed again as before, the known instance stays; nothing else happens.
    let out = h.step(
        11_000,
        Event::ReconcileInstances {
            instances: vec![kept],
        },
    );
    assert!(terminations(&out).is_empty() && finished(&out).is_empty());
}

#[test]
fn provision_timeout_takes_missing_instances_as_failed_and_asks_again() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![m5_xlarge_pool(2, 2)];
    cfg.timeouts.provision_ms = 60_000;
    let mut h = H::new(cfg, &ClusterSpec::default());
    let p = provisions(&h.step(0, Event::Tick));
    assert_eq!(p.len(), 2);
    // The first request's instance comes; the second request never answers.
    let mut next = 0;
    bring_up(&mut h, 1000, &p[0], &mut next);
    assert_eq!(h.c.stats().instances_in_flight, 1);
    // Up to the timeout, the missing instance is still expected: nothing asked again.
    assert_eq!(quiet(&mut h, 10_000, 60_001), (0, 0));
    assert_eq!(h.c.stats().instances_in_flight, 0, "given up at 60 s");
    let again = provisions(&h.step(70_000, Event::Tick));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        (again[0].3.as_str(), again[0].4),
        (p[1].3.as_str(), 1),
        "the same zone, for balance"
    );
    assert_ne!(again[0].0, p[1].0, "a new request");
    // A late answer to the timed-out request is not counted.
    h.step(
        71_000,
        Event::InstanceLaunched {
            request: p[1].0,
            instance: InstanceId("i-late".into()),
        },
    );
    assert_eq!(h.c.stats().instances_in_flight, 1, "only the new request");
}

#[test]
fn boot_timeout_terminates_an_instance_that_never_becomes_a_node() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![m5_xlarge_pool(1, 1)];
    cfg.timeouts.boot_ms = 120_000;
    let mut h = H::new(cfg, &ClusterSpec::default());
    let p = provisions(&h.step(0, Event::Tick));
    assert_eq!(p.len(), 1);
    let instance = InstanceId("i-stuck".into());
    h.step(
        1000,
        Event::InstanceLaunched {
            request: p[0].0,
            instance: instance.clone(),
        },
    );
    // Booting counts as in flight: nothing more is asked for meanwhile.
    let mut seen = Vec::new();
    for now in (10_000..121_000).step_by(10_000) {
        let out = h.step(now, Event::Tick);
        assert!(provisions(&out).is_empty(), "at {now}");
        seen.extend(terminations(&out));
    }
    assert!(seen.is_empty(), "{seen:?}");
    let out = h.step(121_000, Event::Tick);
    assert_eq!(
        terminations(&out),
        vec![(instance, TerminateReason::BootTimedOut)]
    );
    assert_eq!(h.c.stats().instances_in_flight, 0);
    // The pool is under min_nodes again: a new instance is asked for.
    let p2 = provisions(&h.step(130_000, Event::Tick));
    assert_eq!(p2.iter().map(|x| x.4).sum::<u32>(), 1);
}

/// Idle nodes 3 in zone a and 1 in zone b, all idle past the threshold on one tick: the
/// terminations of that tick start with zone a twice (the fuller zone), never with the lone b.
#[test]
fn scale_down_takes_from_the_fuller_zone_first_within_one_tick() {
    let mut pool = flex_pool(0, 6);
    pool.instance_types = vec!["m5.large".into()];
    pool.scale_down_idle_ms = 300;
    pool.disruption_budget = berth_solver::controller::DisruptionBudget {
        nodes_max: 10,
        window_ms: 1000,
    };
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![pool];
    let mut h = H::new(cfg, &ClusterSpec::default());
    let in_zone = |size: u32, zone: &str| {
        let mut j = batch(size, 1500);
        j.constraints
            .hard
            .push(berth_solver::Constraint::AttributeEquals {
                key: "zone".into(),
                value: zone.into(),
            });
        j
    };
    h.submit(0, 1, in_zone(1, "us-east-1b"));
    h.submit(1, 2, in_zone(3, "us-east-1a"));
    let p = provisions(&h.step(10_000, Event::Tick));
    // As the runtime saw it: every launch reported, a listing, then the b node registers first.
    let mut launched = Vec::new();
    let mut zone_of = BTreeMap::new();
    for x in &p {
        for _ in 0..x.4 {
            let instance = InstanceId(format!("i-{}", launched.len() + 1));
            h.step(
                10_010,
                Event::InstanceLaunched {
                    request: x.0,
                    instance: instance.clone(),
                },
            );
            zone_of.insert(instance.clone(), x.3.clone());
            launched.push((instance, x.2.clone(), x.3.clone(), x.1.clone()));
        }
    }
    h.step(
        10_100,
        Event::ReconcileInstances {
            instances: zone_of.keys().cloned().collect(),
        },
    );
    launched.sort_by_key(|l| l.2 != "us-east-1b");
    for (n, (instance, ty, zone, pool)) in launched.iter().enumerate() {
        let id = NodeId(n as u32 + 1);
        let spec = Catalog::ec2()
            .get(ty)
            .unwrap()
            .node_spec(id, instance.0.clone(), zone, pool);
        h.step(
            10_400,
            Event::NodeReady {
                node: spec,
                instance: Some(instance.clone()),
            },
        );
        h.step(
            10_400,
            Event::ReconcileTasks {
                node: id,
                running: vec![],
            },
        );
    }
    let running: Vec<TaskId> = launches(&h.log).iter().map(|x| x.0).collect();
    assert_eq!(running.len(), 4, "{p:?} {:?}", h.log);
    for t in &running {
        h.start(10_401, *t);
    }
    for t in &running {
        h.exit(10_402, *t, 0);
    }
    h.step(
        10_500,
        Event::ReconcileInstances {
            instances: zone_of.keys().cloned().collect(),
        },
    );
    let out = h.step(20_000, Event::Tick);
    let order: Vec<&str> = scale_downs(&out)
        .iter()
        .map(|i| zone_of[i].as_str())
        .collect();
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(&order[..2], ["us-east-1a", "us-east-1a"], "{order:?}");
}

/// The agent of `instance` (of type `ty` in `zone`, pool "flex") registers as node 1.
fn agent_ready(instance: &InstanceId, ty: &str, zone: &str) -> Event {
    let node =
        Catalog::ec2()
            .get(ty)
            .unwrap()
            .node_spec(NodeId(1), instance.0.clone(), zone, "flex");
    Event::NodeReady {
        node,
        instance: Some(instance.clone()),
    }
}

/// One flex pool and one pending one-task job: the autoscaler requests one instance; its
/// request, type and zone.
fn one_flex_instance_requested() -> (H, RequestId, String, String) {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![flex_pool(0, 10)];
    let mut h = H::new(cfg, &ClusterSpec::default());
    h.submit(0, 1, batch(1, 3000));
    let p = provisions(&h.step(10_000, Event::Tick));
    assert_eq!(p.iter().map(|x| x.4).sum::<u32>(), 1, "{p:?}");
    let (request, _pool, ty, zone, _) = p[0].clone();
    (h, request, ty, zone)
}

/// The agent of a new instance registers before the driver reports the launch (the runtime's
/// agent is quicker than the CreateFleet answer): the node joins its pool, and the late launch
/// report closes the request instead of leaving it open (and counted in flight) until timeout.
#[test]
fn an_instance_registering_before_its_launch_report_closes_its_request() {
    let (mut h, request, ty, zone) = one_flex_instance_requested();
    let instance = InstanceId("i-early".into());
    let out = h.step(10_500, agent_ready(&instance, &ty, &zone));
    assert_eq!(launches(&out).len(), 1, "the task runs on the early node");
    assert_eq!(h.c.pool_nodes_by_zone("flex").values().sum::<u32>(), 1);
    h.step(
        10_600,
        Event::InstanceLaunched {
            request,
            instance: instance.clone(),
        },
    );
    assert_eq!(h.c.stats().instances_in_flight, 0, "the request is closed");
    // A repeated report changes nothing, and nothing more is provisioned.
    h.step(10_700, Event::InstanceLaunched { request, instance });
    assert_eq!(h.c.stats().instances_in_flight, 0);
    assert!(provisions(&h.step(20_000, Event::Tick)).is_empty());
    assert_eq!(h.c.pool_nodes_by_zone("flex").values().sum::<u32>(), 1);
}

/// As above, but the driver could not name the early node's pool (the runtime learns an
/// instance's pool from its launch report): the flex task may not use a node outside the flex
/// pools, so it waits; the late report names the node's pool and the task runs there, with
/// nothing more provisioned. (The runtime's `a_spot_interruption_notice…` test hit this once:
/// its agent registered before the actor stepped the launch report, and the task never ran.)
#[test]
fn an_early_node_without_a_pool_joins_the_pool_its_launch_report_names() {
    let (mut h, request, ty, zone) = one_flex_instance_requested();
    let instance = InstanceId("i-early".into());
    let node = Catalog::ec2()
        .get(&ty)
        .unwrap()
        .node_spec(NodeId(1), instance.0.clone(), &zone, "");
    let out = h.step(
        10_500,
        Event::NodeReady {
            node,
            instance: Some(instance.clone()),
        },
    );
    assert!(launches(&out).is_empty(), "not a flex pool's node yet");
    assert_eq!(h.c.pool_nodes_by_zone("flex").values().sum::<u32>(), 0);
    let out = h.step(10_600, Event::InstanceLaunched { request, instance });
    assert_eq!(launches(&out).len(), 1, "the task runs on the adopted node");
    assert_eq!(h.c.pool_nodes_by_zone("flex").values().sum::<u32>(), 1);
    assert_eq!(h.c.view().node(NodeId(0)).attributes.pool, "flex");
    assert_eq!(h.c.stats().instances_in_flight, 0, "the request is closed");
    assert!(provisions(&h.step(20_000, Event::Tick)).is_empty());
}

/// Two autoscaled pools can both serve the pending work: the first provisions for it, and the
/// second, seeing that work absorbed by the first pool's in-flight instances, does not (on
/// that evaluation nor on the next, while the instances boot).
#[test]
fn two_pools_do_not_both_provision_for_the_same_work() {
    let mut second = flex_pool(0, 10);
    second.name = "flex-b".into();
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![flex_pool(0, 10), second];
    let mut h = H::new(cfg, &ClusterSpec::default());
    h.submit(0, 1, batch(4, 3000));
    let per_pool = |p: &[(RequestId, String, String, String, u32)]| {
        let mut m: BTreeMap<String, u32> = BTreeMap::new();
        for x in p {
            *m.entry(x.1.clone()).or_default() += x.4;
        }
        m
    };
    let first = per_pool(&provisions(&h.step(10_000, Event::Tick)));
    assert!(first.get("flex").copied().unwrap_or(0) > 0, "{first:?}");
    assert_eq!(first.get("flex-b"), None, "{first:?}");
    let again = per_pool(&provisions(&h.step(20_000, Event::Tick)));
    assert!(again.is_empty(), "in flight covers it: {again:?}");
}

/// An instance whose agent did not register within the boot timeout is terminated; when its
/// agent registers after all (the termination is still under way), the node is not taken into
/// service: no task goes to an instance being terminated.
#[test]
fn an_instance_registering_after_its_boot_timeout_is_not_adopted() {
    let mut cfg = config(QueuePolicy::Berth);
    cfg.pools = vec![flex_pool(0, 10)];
    cfg.timeouts.boot_ms = 60_000;
    let mut h = H::new(cfg, &ClusterSpec::default());
    h.submit(0, 1, batch(1, 3000));
    let p = provisions(&h.step(10_000, Event::Tick));
    let (request, _pool, ty, zone, _) = p[0].clone();
    let instance = InstanceId("i-slow".into());
    h.step(
        10_100,
        Event::InstanceLaunched {
            request,
            instance: instance.clone(),
        },
    );
    let out = h.step(71_000, Event::Tick);
    assert_eq!(
        terminations(&out),
        vec![(instance.clone(), TerminateReason::BootTimedOut)]
    );
    let out = h.step(72_000, agent_ready(&instance, &ty, &zone));
    assert!(launches(&out).is_empty(), "{out:?}");
    assert_eq!(h.c.pool_nodes_by_zone("flex").values().sum::<u32>(), 0);
}
