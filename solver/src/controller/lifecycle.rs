//! Jobs and tasks: submission, scaling, kills, task state changes, retries and replacements.
//!
//! Task lifecycle (Titus'): `Accepted` → `Launched` → (`StartInitiated`) → `Started` →
//! (`KillInitiated`) → `Finished` with a reason. A retry or a service replacement is a new task
//! (new id) in the same slot of the job, with the attempt number one higher.

use super::{Controller, JobRec, JobState, ServiceCounts, Slot, SlotState, TaskRec, Timer};
use crate::ids::{JobId, TaskId};
use crate::job::{JobKind, JobSpec, TaskReason, TaskState};
use crate::spec::validate_job;
use std::collections::VecDeque;
use std::sync::Arc;

/// Does a task ending with `reason` use up one of its batch job's retries?
/// Losing the node (or a spot interruption) is not the task's fault and is retried freely.
fn counts_as_failure(reason: TaskReason) -> bool {
    !matches!(reason, TaskReason::Lost)
}

/// Is `reason` final for a batch task (no retry whatever the policy)?
fn is_final(reason: TaskReason) -> bool {
    matches!(
        reason,
        TaskReason::Normal
            | TaskReason::Killed
            | TaskReason::RuntimeLimitExceeded
            | TaskReason::ScaledDown
    )
}

impl Controller {
    pub(crate) fn new_task_id(&mut self) -> TaskId {
        let t = TaskId(self.next_task);
        self.next_task += 1;
        t
    }

    fn group_of(&mut self, name: &str) -> u32 {
        if let Some(&g) = self.group_index.get(name) {
            return g;
        }
        let g = self.groups.len() as u32;
        self.groups.push(name.to_string());
        self.group_index.insert(name.to_string(), g);
        self.group_alloc.push([0; 3]);
        g
    }

    pub(crate) fn enqueue(&mut self, job: JobId) {
        let policy = self.config.queue;
        let Some(j) = self.jobs.get(&job) else { return };
        if j.pending.is_empty() {
            return;
        }
        let key = j.queue_key(policy);
        let entry = (j.submit_ms, job);
        if self.queues.entry(key).or_default().insert(entry) {
            let (_, r, gpu_milli) = j.smallest_start();
            let need = [r.cpu_milli, r.mem_mib, gpu_milli];
            let mins = self.queue_min.entry(key).or_default();
            for d in 0..3 {
                *mins[d].entry(need[d]).or_insert(0) += 1;
            }
            self.jobs.get_mut(&job).expect("checked").queued_need = Some(need);
        }
        self.dirty = true;
    }

    pub(crate) fn dequeue(&mut self, job: JobId) {
        let policy = self.config.queue;
        let Some(j) = self.jobs.get(&job) else { return };
        let key = j.queue_key(policy);
        let entry = (j.submit_ms, job);
        if let Some(q) = self.queues.get_mut(&key) {
            if q.remove(&entry) {
                let need = self
                    .jobs
                    .get_mut(&job)
                    .and_then(|j| j.queued_need.take())
                    .expect("a queued job has its need counted");
                let mins = self
                    .queue_min
                    .get_mut(&key)
                    .expect("counted with the queue");
                for d in 0..3 {
                    let c = mins[d].get_mut(&need[d]).expect("counted at enqueue");
                    *c -= 1;
                    if *c == 0 {
                        mins[d].remove(&need[d]);
                    }
                }
            }
            if q.is_empty() {
                self.queues.remove(&key);
                self.queue_min.remove(&key);
            }
        }
    }

    /// False when nothing in the queue can start now: the free capacity of all schedulable
    /// nodes is below every job's smallest start on some dimension.
    pub(crate) fn queue_may_start(&self, key: &super::QueueKey) -> bool {
        let Some(mins) = self.queue_min.get(key) else {
            return false;
        };
        let (free, gpu) = self.view.free_schedulable();
        let free = [free.cpu_milli, free.mem_mib, gpu];
        (0..3).all(|d| mins[d].first_key_value().is_none_or(|(&m, _)| m <= free[d]))
    }

    fn reject(&mut self, job: JobId, message: String) {
        self.out.push(super::Command::RecordJob {
            job,
            state: JobState::Rejected,
            message: Some(message),
        });
    }

    pub(crate) fn submit(
        &mut self,
        now_ms: u64,
        job: JobId,
        spec: JobSpec,
        requested_runtime_ms: Option<u64>,
    ) {
        if self.jobs.contains_key(&job) {
            return self.reject(job, format!("{job} already exists"));
        }
        if let Err(e) = validate_job(&spec) {
            return self.reject(job, e.to_string());
        }
        let (count, gang, runtime_limit_ms, service) = match &spec.kind {
            JobKind::Batch(b) => (b.size, b.gang, b.runtime_limit_ms, None),
            JobKind::Service(s) => (
                s.desired,
                false,
                None,
                Some(ServiceCounts {
                    min: s.min,
                    desired: s.desired,
                    max: s.max,
                    restart_on_failure: s.restart_on_failure,
                }),
            ),
        };
        let base = self.next_task;
        self.next_task += u64::from(count);
        let group = self.group_of(&spec.capacity_group);
        let slots: Vec<Slot> = (0..count)
            .map(|s| Slot {
                task: TaskId(base + u64::from(s)),
                attempt: 0,
                state: SlotState::Pending,
                failures: 0,
            })
            .collect();
        let rec = JobRec {
            constraints: Arc::new(spec.constraints.clone()),
            tier: spec.tier,
            group,
            submit_ms: now_ms,
            estimate_ms: requested_runtime_ms.or(runtime_limit_ms),
            runtime_limit_ms,
            gang,
            pending: (0..count).collect::<VecDeque<u32>>(),
            slots,
            live: 0,
            open_slots: count,
            failed_slots: 0,
            killed: false,
            blocked_epoch: None,
            reported_blocked: false,
            service,
            task_base: base,
            gang_failed: false,
            gang_retry_delay_ms: None,
            gang_failures: 0,
            gang_attempt: 0,
            never_fits_at: None,
            never_fits_checked: None,
            queued_need: None,
            spec,
        };
        self.note_shape(&rec.spec.task, u64::from(count));
        self.jobs.insert(job, rec);
        if count > 0 {
            self.task_blocks.insert(base, job);
        }
        self.out.push(super::Command::RecordJob {
            job,
            state: JobState::Accepted,
            message: None,
        });
        for s in 0..count {
            self.record(
                (TaskId(base + u64::from(s)), job, s, 0),
                TaskState::Accepted,
                None,
                None,
            );
        }
        self.pending_total += u64::from(count);
        self.enqueue(job);
    }

    /// Adds a pending slot (service scale-up) with a new task.
    fn add_slot(&mut self, now_ms: u64, job: JobId) {
        let task = self.new_task_id();
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let slot = j.slots.len() as u32;
        j.slots.push(Slot {
            task,
            attempt: 0,
            state: SlotState::Pending,
            failures: 0,
        });
        j.pending.push_back(slot);
        j.open_slots += 1;
        self.tasks
            .insert(task, TaskRec::accepted(job, slot, 0, now_ms));
        self.record((task, job, slot, 0), TaskState::Accepted, None, None);
        self.pending_total += 1;
        self.enqueue(job);
    }

    pub(crate) fn scale(&mut self, now_ms: u64, job: JobId, min: u32, desired: u32, max: u32) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(sc) = j.service.as_mut() else { return };
        if j.killed || !(min <= desired && desired <= max) || max == 0 {
            return;
        }
        sc.min = min;
        sc.desired = desired;
        sc.max = max;
        let active = j.open_slots;
        if desired > active {
            for _ in active..desired {
                self.add_slot(now_ms, job);
            }
        } else if desired < active {
            self.scale_down_service(now_ms, job, active - desired);
        }
    }

    /// Removes `n` active slots: pending ones first (newest first), then slots waiting for a
    /// replacement, then live tasks from the zone where the job has the most (newest task
    /// first), so the job's zone balance is kept.
    fn scale_down_service(&mut self, now_ms: u64, job: JobId, mut n: u32) {
        // Pending slots, newest first.
        while n > 0 {
            let Some(j) = self.jobs.get_mut(&job) else {
                return;
            };
            let Some(slot) = j.pending.pop_back() else {
                break;
            };
            self.end_pending_slot(now_ms, job, slot, TaskReason::ScaledDown);
            n -= 1;
        }
        // Slots waiting for a replacement.
        while n > 0 {
            let Some(j) = self.jobs.get_mut(&job) else {
                return;
            };
            let Some(slot) = j.slots.iter().rposition(|s| s.state == SlotState::Waiting) else {
                break;
            };
            j.slots[slot].state = SlotState::Done { ok: true };
            j.open_slots -= 1;
            n -= 1;
        }
        // Live tasks, zone by zone.
        while n > 0 {
            let Some(j) = self.jobs.get(&job) else { return };
            let zones = self.view.zones().len();
            let mut per_zone: Vec<Vec<TaskId>> = vec![Vec::new(); zones];
            for s in &j.slots {
                if s.state != SlotState::Live {
                    continue;
                }
                let t = &self.tasks[&s.task];
                if t.state == TaskState::KillInitiated {
                    continue;
                }
                per_zone[self.view.zone_of(crate::ids::NodeId(t.node))].push(s.task);
            }
            // The zone with the most tasks (lowest index on ties); its newest task.
            let Some(z) = (0..zones)
                .filter(|&z| !per_zone[z].is_empty())
                .max_by_key(|&z| (per_zone[z].len(), std::cmp::Reverse(z)))
            else {
                break;
            };
            let victim = *per_zone[z].iter().max().expect("non-empty zone");
            self.initiate_kill(now_ms, victim, TaskReason::ScaledDown);
            let slot = self.tasks[&victim].slot;
            let j = self.jobs.get_mut(&job).expect("job exists");
            // The slot is no longer active; it ends when its task exits.
            j.slots[slot as usize].state = SlotState::Live;
            j.open_slots -= 1;
            n -= 1;
        }
    }

    /// Ends a slot whose task is still pending (never launched). The caller has taken the slot
    /// out of the job's `pending` queue.
    pub(crate) fn end_pending_slot(
        &mut self,
        _now_ms: u64,
        job: JobId,
        slot: u32,
        reason: TaskReason,
    ) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let s = j.slots[slot as usize];
        debug_assert_eq!(s.state, SlotState::Pending);
        let ok = matches!(reason, TaskReason::ScaledDown);
        j.slots[slot as usize].state = SlotState::Done { ok };
        j.open_slots -= 1;
        if !ok {
            j.failed_slots += 1;
        }
        let empty = j.pending.is_empty();
        self.pending_total -= 1;
        self.tasks.remove(&s.task);
        self.record(
            (s.task, job, slot, s.attempt),
            TaskState::Finished,
            Some(reason),
            None,
        );
        if empty {
            self.dequeue(job);
        }
    }

    pub(crate) fn kill_job(&mut self, now_ms: u64, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.killed {
            return;
        }
        j.killed = true;
        let slots = j.slots.clone();
        self.dequeue(job);
        let j = self.jobs.get_mut(&job).expect("job exists");
        j.pending.clear();
        for (i, s) in slots.iter().enumerate() {
            match s.state {
                SlotState::Pending => {
                    self.end_pending_slot(now_ms, job, i as u32, TaskReason::Killed)
                }
                SlotState::Waiting => {
                    let j = self.jobs.get_mut(&job).expect("job exists");
                    j.slots[i].state = SlotState::Done { ok: false };
                    j.open_slots -= 1;
                    j.failed_slots += 1;
                }
                SlotState::Live => {
                    if self.tasks[&s.task].state != TaskState::KillInitiated {
                        self.initiate_kill(now_ms, s.task, TaskReason::Killed);
                    }
                }
                SlotState::Done { .. } => {}
            }
        }
        self.check_job_done(job);
    }

    pub(crate) fn kill_task_requested(&mut self, now_ms: u64, task: TaskId) {
        if let Some(t) = self.tasks.get(&task) {
            match t.state {
                TaskState::Accepted => {
                    let (job, slot) = (t.job, t.slot);
                    self.kill_pending_task(now_ms, job, slot);
                }
                TaskState::Launched | TaskState::StartInitiated | TaskState::Started => {
                    self.initiate_kill(now_ms, task, TaskReason::Killed)
                }
                TaskState::KillInitiated | TaskState::Finished => {}
            }
        } else if let Some((job, slot)) = self.implicit_task(task) {
            self.kill_pending_task(now_ms, job, slot);
        }
    }

    /// A kill of a task still waiting for placement: a batch slot ends `Killed`; a service
    /// task is replaced by a new one.
    fn kill_pending_task(&mut self, now_ms: u64, job: JobId, slot: u32) {
        let j = self.jobs.get_mut(&job).expect("job exists");
        let service = j.is_service();
        j.pending.retain(|&x| x != slot);
        let gang = j.gang;
        if j.pending.is_empty() {
            self.dequeue(job);
        } else if gang {
            // A smaller gang: its smallest start shrank.
            self.dequeue(job);
            self.enqueue(job);
        }
        self.end_pending_slot(now_ms, job, slot, TaskReason::Killed);
        if service {
            let j = self.jobs.get_mut(&job).expect("job exists");
            // Reopen the slot and replace its task.
            j.slots[slot as usize].state = SlotState::Waiting;
            j.open_slots += 1;
            j.failed_slots -= 1;
            let attempt = j.slots[slot as usize].attempt;
            self.retry_due(now_ms, job, slot, attempt);
        } else {
            self.check_job_done(job);
        }
    }

    /// Asks for a task's container to stop.
    pub(crate) fn initiate_kill(&mut self, now_ms: u64, task: TaskId, reason: TaskReason) {
        let grace_ms = self.config.kill_grace_ms;
        self.initiate_kill_with_grace(now_ms, task, reason, grace_ms);
    }

    pub(crate) fn initiate_kill_with_grace(
        &mut self,
        now_ms: u64,
        task: TaskId,
        reason: TaskReason,
        grace_ms: u64,
    ) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if matches!(
            t.state,
            TaskState::KillInitiated | TaskState::Finished | TaskState::Accepted
        ) {
            return;
        }
        t.state = TaskState::KillInitiated;
        t.kill_reason = Some(reason);
        t.since_ms = now_ms;
        let (job, slot, attempt, node) = (t.job, t.slot, t.attempt, t.node);
        let node_id = self.nodes[node as usize].id;
        self.out.push(super::Command::KillTask {
            task,
            node: node_id,
            grace_ms,
            reason,
        });
        self.record(
            (task, job, slot, attempt),
            TaskState::KillInitiated,
            Some(reason),
            Some(node),
        );
        let at = now_ms + grace_ms.max(self.config.timeouts.kill_ms);
        self.timer(
            at,
            Timer::KillTimeout {
                task,
                since_ms: now_ms,
            },
        );
    }

    pub(crate) fn task_starting(&mut self, now_ms: u64, task: TaskId) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if t.state != TaskState::Launched {
            return;
        }
        t.state = TaskState::StartInitiated;
        t.since_ms = now_ms;
        let (job, slot, attempt, node) = (t.job, t.slot, t.attempt, t.node);
        self.record(
            (task, job, slot, attempt),
            TaskState::StartInitiated,
            None,
            Some(node),
        );
        let at = now_ms + self.config.timeouts.start_ms;
        self.timer(
            at,
            Timer::StartTimeout {
                task,
                since_ms: now_ms,
            },
        );
    }

    pub(crate) fn task_started(&mut self, now_ms: u64, task: TaskId) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if !matches!(t.state, TaskState::Launched | TaskState::StartInitiated) {
            return;
        }
        t.state = TaskState::Started;
        t.since_ms = now_ms;
        let (job, slot, attempt, node) = (t.job, t.slot, t.attempt, t.node);
        self.record(
            (task, job, slot, attempt),
            TaskState::Started,
            None,
            Some(node),
        );
        if let Some(limit) = self.jobs.get(&job).and_then(|j| j.runtime_limit_ms) {
            self.timer(
                now_ms + limit,
                Timer::RuntimeLimit {
                    task,
                    since_ms: now_ms,
                },
            );
        }
    }

    pub(crate) fn task_exited(&mut self, now_ms: u64, task: TaskId, exit_code: i32, oom: bool) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let reason = match (t.state, t.kill_reason) {
            (TaskState::Accepted | TaskState::Finished, _) => return,
            (TaskState::KillInitiated, Some(r)) => r,
            _ if oom => TaskReason::OomKilled,
            _ if exit_code == 0 => TaskReason::Normal,
            _ => TaskReason::Failed,
        };
        self.finish_live(now_ms, task, reason);
    }

    pub(crate) fn task_launch_failed(&mut self, now_ms: u64, task: TaskId) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let reason = match t.state {
            TaskState::Launched | TaskState::StartInitiated => TaskReason::LaunchFailed,
            TaskState::KillInitiated => t.kill_reason.unwrap_or(TaskReason::LaunchFailed),
            _ => return,
        };
        self.finish_live(now_ms, task, reason);
    }

    pub(crate) fn runtime_limit_due(&mut self, now_ms: u64, task: TaskId, since_ms: u64) {
        if self
            .tasks
            .get(&task)
            .is_some_and(|t| t.state == TaskState::Started && t.since_ms == since_ms)
        {
            self.initiate_kill(now_ms, task, TaskReason::RuntimeLimitExceeded);
        }
    }

    /// A task stuck in `state` since `since_ms`: killed, reason `TimedOut`.
    pub(crate) fn stuck_due(&mut self, now_ms: u64, task: TaskId, since_ms: u64, state: TaskState) {
        if self
            .tasks
            .get(&task)
            .is_some_and(|t| t.state == state && t.since_ms == since_ms)
        {
            self.initiate_kill(now_ms, task, TaskReason::TimedOut);
        }
    }

    /// A kill that got no exit in time: the task is taken for dead and its resources freed.
    pub(crate) fn kill_timeout_due(&mut self, now_ms: u64, task: TaskId, since_ms: u64) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        if t.state == TaskState::KillInitiated && t.since_ms == since_ms {
            let reason = t.kill_reason.unwrap_or(TaskReason::TimedOut);
            self.finish_live(now_ms, task, reason);
        }
    }

    /// A task on a node ends: frees its resources, records it, and decides what happens to its
    /// slot.
    pub(crate) fn finish_live(&mut self, now_ms: u64, task: TaskId, reason: TaskReason) {
        let t = self.tasks.remove(&task).expect("finish_live: task tracked");
        assert!(
            t.state != TaskState::Accepted && t.state != TaskState::Finished,
            "{task} is not on a node"
        );
        self.release(now_ms, task, &t);
        self.record(
            (task, t.job, t.slot, t.attempt),
            TaskState::Finished,
            Some(reason),
            Some(t.node),
        );
        let Some(j) = self.jobs.get_mut(&t.job) else {
            return;
        };
        j.live -= 1;
        self.slot_ended(now_ms, t.job, t.slot, t.attempt, reason);
    }

    /// The slot's task ended with `reason`: done, retried, replaced, or (gang) the whole gang
    /// restarted.
    fn slot_ended(&mut self, now_ms: u64, job: JobId, slot: u32, attempt: u32, reason: TaskReason) {
        let restart_delay = self.config.service_restart_delay_ms;
        let j = self.jobs.get_mut(&job).expect("job exists");
        let idx = slot as usize;
        // A service slot scaled down was taken off the active count when its kill was asked.
        let was_active = !(j.service.is_some() && reason == TaskReason::ScaledDown);
        if j.killed {
            let ok = matches!(reason, TaskReason::Normal | TaskReason::ScaledDown);
            j.slots[idx].state = SlotState::Done { ok };
            if was_active {
                j.open_slots -= 1;
            }
            if !ok {
                j.failed_slots += 1;
            }
        } else if let Some(sc) = j.service {
            if !was_active {
                // Scaled down: the slot was already taken off the active count.
                j.slots[idx].state = SlotState::Done { ok: true };
            } else if sc.restart_on_failure || reason == TaskReason::Killed {
                j.slots[idx].state = SlotState::Waiting;
                self.schedule_retry(now_ms + restart_delay, job, slot, attempt);
            } else {
                j.slots[idx].state = SlotState::Done {
                    ok: reason == TaskReason::Normal,
                };
                j.open_slots -= 1;
                if reason != TaskReason::Normal {
                    j.failed_slots += 1;
                }
            }
        } else if j.gang {
            return self.gang_slot_ended(now_ms, job, slot, reason);
        } else if is_final(reason) {
            let ok = reason == TaskReason::Normal;
            j.slots[idx].state = SlotState::Done { ok };
            j.open_slots -= 1;
            if !ok {
                j.failed_slots += 1;
            }
        } else {
            let retry = match &j.spec.kind {
                JobKind::Batch(b) => b.retry,
                JobKind::Service(_) => unreachable!("services handled above"),
            };
            let s = &mut j.slots[idx];
            let delay = if counts_as_failure(reason) {
                s.failures += 1;
                retry.delay_ms(s.failures - 1)
            } else {
                Some(0)
            };
            match delay {
                Some(d) => {
                    s.state = SlotState::Waiting;
                    self.schedule_retry(now_ms + d, job, slot, attempt);
                }
                None => {
                    s.state = SlotState::Done { ok: false };
                    j.open_slots -= 1;
                    j.failed_slots += 1;
                }
            }
        }
        self.check_job_done(job);
    }

    fn schedule_retry(&mut self, at_ms: u64, job: JobId, slot: u32, attempt: u32) {
        self.timer(at_ms, Timer::Retry { job, slot, attempt });
    }

    /// A gang task ended. A success leaves the rest running; a failure kills the siblings, and
    /// once none is left the whole gang is retried (or the job fails).
    fn gang_slot_ended(&mut self, now_ms: u64, job: JobId, slot: u32, reason: TaskReason) {
        let j = self.jobs.get_mut(&job).expect("job exists");
        let idx = slot as usize;
        if reason == TaskReason::Normal && !j.gang_failed {
            j.slots[idx].state = SlotState::Done { ok: true };
            j.open_slots -= 1;
            return self.check_job_done(job);
        }
        j.slots[idx].state = SlotState::Waiting;
        if reason != TaskReason::Normal && !j.gang_failed {
            j.gang_failed = true;
            let retry = match &j.spec.kind {
                JobKind::Batch(b) => b.retry,
                JobKind::Service(_) => unreachable!("gangs are batch jobs"),
            };
            j.gang_retry_delay_ms = if is_final(reason) {
                None
            } else if counts_as_failure(reason) {
                j.gang_failures += 1;
                retry.delay_ms(j.gang_failures - 1)
            } else {
                Some(0)
            };
            let siblings: Vec<TaskId> = j
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Live)
                .map(|s| s.task)
                .collect();
            for t in siblings {
                self.initiate_kill(now_ms, t, TaskReason::Killed);
            }
        }
        let j = self.jobs.get_mut(&job).expect("job exists");
        if j.live > 0 {
            return;
        }
        // The attempt is over.
        match j.gang_retry_delay_ms {
            Some(d) => {
                let attempt = j.gang_attempt;
                self.timer(now_ms + d, Timer::GangRetry { job, attempt });
            }
            None => {
                for s in j.slots.iter_mut() {
                    if !matches!(s.state, SlotState::Done { ok: true }) {
                        s.state = SlotState::Done { ok: false };
                        j.failed_slots += 1;
                    }
                }
                // Completed ones stay completed; the job failed.
                j.open_slots = 0;
                self.check_job_done(job);
            }
        }
    }

    /// A gang's retry is due: every slot gets a new task, all pending together.
    pub(crate) fn gang_retry_due(&mut self, now_ms: u64, job: JobId, attempt: u32) {
        let Some(j) = self.jobs.get(&job) else { return };
        if j.gang_attempt != attempt || !j.gang_failed || j.killed || j.live > 0 {
            return;
        }
        let n = j.slots.len();
        let mut new_tasks = Vec::with_capacity(n);
        for _ in 0..n {
            new_tasks.push(self.new_task_id());
        }
        let j = self.jobs.get_mut(&job).expect("job exists");
        j.gang_attempt += 1;
        j.gang_failed = false;
        j.gang_retry_delay_ms = None;
        j.failed_slots = 0;
        j.open_slots = n as u32;
        j.blocked_epoch = None;
        let mut recs = Vec::with_capacity(n);
        for (i, s) in j.slots.iter_mut().enumerate() {
            s.task = new_tasks[i];
            s.attempt += 1;
            s.state = SlotState::Pending;
            j.pending.push_back(i as u32);
            recs.push((s.task, i as u32, s.attempt));
        }
        for (task, slot, attempt) in recs {
            self.tasks
                .insert(task, TaskRec::accepted(job, slot, attempt, now_ms));
            self.record((task, job, slot, attempt), TaskState::Accepted, None, None);
        }
        self.pending_total += n as u64;
        self.enqueue(job);
    }

    /// A slot's retry or replacement is due: a new task, pending.
    pub(crate) fn retry_due(&mut self, now_ms: u64, job: JobId, slot: u32, attempt: u32) {
        let ok = self.jobs.get(&job).is_some_and(|j| {
            !j.killed
                && j.slots[slot as usize].state == SlotState::Waiting
                && j.slots[slot as usize].attempt == attempt
        });
        if !ok {
            return;
        }
        let task = self.new_task_id();
        let j = self.jobs.get_mut(&job).expect("job exists");
        let s = &mut j.slots[slot as usize];
        s.task = task;
        s.attempt = attempt + 1;
        s.state = SlotState::Pending;
        j.pending.push_back(slot);
        self.tasks
            .insert(task, TaskRec::accepted(job, slot, attempt + 1, now_ms));
        self.record(
            (task, job, slot, attempt + 1),
            TaskState::Accepted,
            None,
            None,
        );
        self.pending_total += 1;
        self.enqueue(job);
    }

    /// Ends the job when nothing of it is pending, live or waiting.
    pub(crate) fn check_job_done(&mut self, job: JobId) {
        let Some(j) = self.jobs.get(&job) else { return };
        let busy = j.live > 0
            || j.slots.iter().any(|s| {
                matches!(
                    s.state,
                    SlotState::Pending | SlotState::Live | SlotState::Waiting
                )
            });
        let done = if j.is_service() {
            j.killed && !busy
        } else {
            !busy
        };
        if !done {
            return;
        }
        let state = if j.killed {
            JobState::Killed
        } else if j.failed_slots > 0 {
            JobState::Failed
        } else {
            JobState::Completed
        };
        self.dequeue(job);
        let j = self.jobs.remove(&job).expect("job exists");
        self.task_blocks.remove(&j.task_base);
        self.out.push(super::Command::RecordJob {
            job,
            state,
            message: None,
        });
    }
}

impl TaskRec {
    pub(crate) fn accepted(job: JobId, slot: u32, attempt: u32, now_ms: u64) -> TaskRec {
        TaskRec {
            job,
            slot,
            attempt,
            state: TaskState::Accepted,
            node: u32::MAX,
            since_ms: now_ms,
            launched_ms: 0,
            kill_reason: None,
            est_end_ms: None,
        }
    }
}
