//! The scheduling pass: which pending job gets capacity next (queue policy), and where its tasks
//! go ([`crate::place::Placer`], one task at a time against the long-lived view; gangs
//! all-or-nothing).
//!
//! Cost control, all exact (they skip only work whose answer is known):
//! - a job whose placement failed is not tried again until capacity changes (the capacity
//!   epoch moves on when a task ends or a node comes): a job's pending tasks are identical, so
//!   when one does not fit, the next does not either;
//! - the Berth queue examines at most [`super::ControllerConfig::lookahead_jobs_max`] jobs per
//!   capacity group past blocked ones, EASY as many backfill candidates behind the head.

use super::{Command, Controller, FitKey, QueuePolicy, SlotState, TaskRec, Timer};
use crate::ids::{JobId, NodeId, TaskId};
use crate::job::TaskState;
use crate::place::{Placer, ScorerKind, WeightedScorer};
use crate::plan::{Assignment, ReasonCounts, TaskRequest};
use crate::resources::{GpuDemand, Resources, TaskShape, GPU_MILLI_PER_DEVICE};
use crate::view::ClusterView;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// What one placement try for a job gave.
pub(crate) struct Tried {
    /// Assignments applied to the view (not yet committed).
    pub placed: Vec<(u32, Assignment)>,
    /// The job still has pending tasks that found no node.
    pub blocked: bool,
    pub reasons: ReasonCounts,
}

/// EASY's reservation for the first blocked job.
#[derive(Clone, Debug)]
pub(crate) struct Reservation {
    pub head: JobId,
    /// When the head is expected to fit (`None`: not within the known run-time estimates).
    pub shadow_ms: Option<u64>,
    /// The cluster as it is expected at `shadow_ms`, with the backfilled work that outlasts it.
    pub view: ClusterView,
    /// What the head's pending tasks need together (resources, milli-GPU).
    pub head_need: (Resources, u64),
    /// The head's pending tasks as requests (a job's tasks share one shape and constraints,
    /// so while their count is the same the answers of a fit test on them are too).
    pub head_reqs: Vec<TaskRequest>,
    pub epoch: u64,
    pub nodes_version: u64,
}

impl Controller {
    /// One scheduling pass.
    pub(crate) fn pass(&mut self, now_ms: u64) {
        self.dirty = false;
        self.passes += 1;
        match self.config.queue {
            QueuePolicy::Fcfs => self.pass_fcfs(now_ms, false),
            QueuePolicy::Easy => self.pass_fcfs(now_ms, true),
            QueuePolicy::Berth => self.pass_berth(now_ms),
        }
    }

    /// The task request for slot `slot` of `job`.
    fn request(&self, job: JobId, slot: u32) -> TaskRequest {
        let j = &self.jobs[&job];
        TaskRequest {
            task: j.slots[slot as usize].task,
            job,
            shape: j.spec.task.clone(),
            tier: j.tier,
            constraints: j.constraints.clone(),
            gang: j.gang,
        }
    }

    /// Tries to place up to `max_tasks` of the job's pending tasks (a gang: all of them or
    /// none). Assignments are applied to the view; the caller commits or rolls them back.
    pub(crate) fn try_place(&mut self, job: JobId, max_tasks: usize) -> Tried {
        let j = &self.jobs[&job];
        let mut tried = Tried {
            placed: Vec::new(),
            blocked: false,
            reasons: ReasonCounts::new(),
        };
        if j.pending.is_empty() {
            return tried;
        }
        if j.blocked_epoch == Some(self.epoch) {
            tried.blocked = true;
            return tried;
        }
        // More than the free capacity of all schedulable nodes together fits nowhere: no
        // search (once its reasons are reported; the search gives them).
        let (n, need, gpu_milli) = j.smallest_start();
        if j.reported_blocked
            && (!self.view.may_hold(&need, gpu_milli)
                || self.fit_counts.count(&self.view, &j.spec.task, n) < n)
        {
            tried.blocked = true;
            return tried;
        }
        let j = &self.jobs[&job];
        if j.gang {
            let slots: Vec<u32> = j.pending.iter().copied().collect();
            let reqs: Vec<TaskRequest> = slots.iter().map(|&s| self.request(job, s)).collect();
            let plan = self.placer.place(&mut self.view, &reqs, &mut self.rng);
            if plan.is_complete() {
                for (a, s) in plan.assignments.into_iter().zip(slots) {
                    debug_assert_eq!(a.task, self.jobs[&job].slots[s as usize].task);
                    tried.placed.push((s, a));
                }
            } else {
                tried.blocked = true;
                tried.reasons = merged_reasons(plan.unplaced.iter().map(|u| &u.reasons));
            }
            return tried;
        }
        let slots: Vec<u32> = j.pending.iter().take(max_tasks).copied().collect();
        // The previous task placed and its node: only that node changed since.
        let mut last: Option<(TaskRequest, NodeId)> = None;
        for s in slots {
            let req = self.request(job, s);
            let prev = last.as_ref().map(|(r, n)| (r, *n));
            let placed = self
                .placer
                .place_next(&self.view, &req, prev, &mut self.rng);
            match placed {
                Ok(a) => {
                    if let Err(e) = self.view.try_apply(&a) {
                        panic!("controller: the placer chose an assignment the view refuses: {e}");
                    }
                    last = Some((req, a.node));
                    tried.placed.push((s, a));
                }
                Err(u) => {
                    tried.blocked = true;
                    tried.reasons = u.reasons;
                    break;
                }
            }
        }
        tried
    }

    /// Takes back assignments applied by [`Controller::try_place`] and not committed.
    pub(crate) fn roll_back(&mut self, tried: &Tried) {
        for (_, a) in tried.placed.iter().rev() {
            self.view
                .release(a)
                .expect("rolling back an assignment just applied");
        }
    }

    /// Notes the outcome of a try: blocked jobs remember the epoch (and report their reasons
    /// once); placed ones are committed.
    pub(crate) fn settle(&mut self, now_ms: u64, job: JobId, tried: Tried) -> u32 {
        let placed = tried.placed.len() as u32;
        for (slot, a) in tried.placed {
            self.commit(now_ms, job, slot, a);
        }
        let epoch = self.epoch;
        let Some(j) = self.jobs.get_mut(&job) else {
            return placed;
        };
        if placed > 0 {
            j.blocked_epoch = None;
            j.reported_blocked = false;
        }
        let drained = j.pending.is_empty();
        if tried.blocked {
            j.blocked_epoch = Some(epoch);
            if !j.reported_blocked && !tried.reasons.is_empty() {
                j.reported_blocked = true;
                let pending = j.pending.len() as u32;
                self.out.push(Command::RecordUnplaced {
                    job,
                    pending,
                    reasons: tried.reasons,
                });
            }
        }
        if drained {
            self.dequeue(job);
        }
        placed
    }

    /// Issues the launch of an assignment already applied to the view.
    fn commit(&mut self, now_ms: u64, job: JobId, slot: u32, a: Assignment) {
        let n = a.node.0;
        self.ledger_take(&a);
        let (task, attempt, group, estimate) = {
            let j = self.jobs.get_mut(&job).expect("job exists");
            let front = j.pending.pop_front();
            assert_eq!(front, Some(slot), "placements follow the pending order");
            let s = &mut j.slots[slot as usize];
            debug_assert_eq!(s.state, SlotState::Pending);
            s.state = SlotState::Live;
            j.live += 1;
            (s.task, s.attempt, j.group, j.estimate_ms)
        };
        assert_eq!(task, a.task);
        self.pending_total -= 1;
        let est_end_ms = estimate.map(|e| now_ms + e);
        let rec = self
            .tasks
            .entry(task)
            .or_insert_with(|| TaskRec::accepted(job, slot, attempt, now_ms));
        rec.state = TaskState::Launched;
        rec.node = n;
        rec.since_ms = now_ms;
        rec.launched_ms = now_ms;
        rec.est_end_ms = est_end_ms;
        if let Some(e) = est_end_ms {
            self.ends.insert((e, task));
        }
        let g = &mut self.group_alloc[group as usize];
        g[0] += a.resources.cpu_milli;
        g[1] += a.resources.mem_mib;
        g[2] += u64::from(a.gpu_milli());
        let node = &mut self.nodes[n as usize];
        node.idle_since_ms = None;
        node.tasks.insert(task);
        let node_id = node.id;
        self.out.push(Command::LaunchTask {
            task,
            job,
            node: node_id,
            resources: a.resources,
            gpus: a.gpus.clone(),
        });
        self.record(
            (task, job, slot, attempt),
            TaskState::Launched,
            None,
            Some(n),
        );
        self.timer(
            now_ms + self.config.timeouts.launch_ms,
            Timer::LaunchTimeout {
                task,
                since_ms: now_ms,
            },
        );
    }

    /// Frees what a task on a node held (view, ledger, group share, node index).
    pub(crate) fn release(&mut self, now_ms: u64, task: TaskId, t: &TaskRec) {
        let a = self
            .view
            .release_task(task)
            .expect("a live task holds an assignment");
        self.ledger_give(&a);
        if let Some(e) = t.est_end_ms {
            self.ends.remove(&(e, task));
        }
        if let Some(j) = self.jobs.get(&t.job) {
            let g = &mut self.group_alloc[j.group as usize];
            g[0] -= a.resources.cpu_milli;
            g[1] -= a.resources.mem_mib;
            g[2] -= u64::from(a.gpu_milli());
        }
        let node = &mut self.nodes[t.node as usize];
        node.tasks.remove(&task);
        if node.tasks.is_empty() && node.live {
            node.idle_since_ms = Some(now_ms);
        }
        self.epoch += 1;
        self.dirty = true;
    }

    /// Adds an assignment to the ledger, asserting that the node is not overcommitted on any
    /// dimension or GPU device.
    fn ledger_take(&mut self, a: &Assignment) {
        let n = a.node.0 as usize;
        let spec = self.view.node(a.node);
        let used = self.ledger.used[n]
            .checked_add(&a.resources)
            .expect("no overflow");
        assert!(
            used.fits_in(&spec.capacity),
            "controller: launching {} on {} would overcommit it: {} used of {}",
            a.task,
            a.node,
            used,
            spec.capacity
        );
        self.ledger.used[n] = used;
        let devs = &mut self.ledger.gpu_used[n];
        for s in &a.gpus {
            let d = &mut devs[s.device as usize];
            *d += s.milli;
            assert!(
                u32::from(*d) <= GPU_MILLI_PER_DEVICE,
                "controller: launching {} would overcommit GPU {} of {}",
                a.task,
                s.device,
                a.node
            );
        }
    }

    fn ledger_give(&mut self, a: &Assignment) {
        let n = a.node.0 as usize;
        self.ledger.used[n] = self.ledger.used[n]
            .checked_sub(&a.resources)
            .expect("ledger underflow");
        for s in &a.gpus {
            self.ledger.gpu_used[n][s.device as usize] -= s.milli;
        }
    }

    // ----- FCFS and EASY -----------------------------------------------------------------

    fn pass_fcfs(&mut self, now_ms: u64, easy: bool) {
        let key = super::QueueKey { tier: 0, group: 0 };
        let mut cursor: Option<(u64, JobId)> = None;
        let mut head: Option<JobId> = None;
        let mut examined = 0u32;
        while let Some(q) = self.queues.get(&key) {
            let next = match cursor {
                None => q.iter().next(),
                Some(c) => q.range((Excluded(c), Unbounded)).next(),
            };
            let Some(&(submit, job)) = next else { break };
            cursor = Some((submit, job));
            if head.is_none() {
                let tried = self.try_place(job, usize::MAX);
                let blocked = tried.blocked;
                self.settle(now_ms, job, tried);
                if !blocked {
                    continue;
                }
                if self.never_fits(job) {
                    // Larger than the whole cluster: it must not block everyone behind it.
                    continue;
                }
                if !easy {
                    break;
                }
                head = Some(job);
                continue;
            }
            examined += 1;
            if examined > self.config.lookahead_jobs_max || !self.queue_may_start(&key) {
                break;
            }
            self.backfill(now_ms, head.expect("head set"), job);
        }
    }

    /// EASY: `job` may start now if it does not delay the head's reservation.
    fn backfill(&mut self, now_ms: u64, head: JobId, job: JobId) {
        if self.jobs[&job].blocked_epoch == Some(self.epoch) || self.never_fits(job) {
            return;
        }
        // The reservation is computed against the cluster before the candidate is tried.
        self.ensure_reservation(now_ms, head);
        let res = self.reservation.as_ref().expect("reservation computed");
        let j = &self.jobs[&job];
        let end_ms = j.estimate_ms.map(|e| now_ms + e);
        let ends_in_time = matches!((end_ms, res.shadow_ms), (Some(e), Some(s)) if e <= s);
        if !ends_in_time {
            // Work that outlasts the shadow time must leave the head room then: when even its
            // smallest start (one task, a whole gang) and the head exceed what is free at the
            // shadow time, no search can say yes.
            let (_, need, gpu_milli) = j.smallest_start();
            let (head, head_gpu) = res.head_need;
            if !res
                .view
                .may_hold(&need.saturating_add(&head), gpu_milli + head_gpu)
            {
                let epoch = self.epoch;
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.blocked_epoch = Some(epoch);
                }
                return;
            }
        }
        let tried = self.try_place(job, usize::MAX);
        if tried.placed.is_empty() {
            self.settle(now_ms, job, tried);
            return;
        }
        let res = self.reservation.as_mut().expect("reservation computed");
        let ok = if ends_in_time {
            true
        } else {
            // The work outlasts the shadow time: it must leave room for the head then.
            for (_, a) in &tried.placed {
                res.view
                    .try_apply(a)
                    .expect("the shadow view has at least the free capacity of now");
            }
            let pending = self.jobs[&head].pending.len();
            if res.head_reqs.len() != pending {
                let reqs: Vec<TaskRequest> = self.jobs[&head]
                    .pending
                    .iter()
                    .map(|&s| self.request(head, s))
                    .collect();
                let res = self.reservation.as_mut().expect("reservation computed");
                res.head_reqs = reqs;
            }
            let res = self.reservation.as_mut().expect("reservation computed");
            let fits = fits(
                &mut self.scratch_placer,
                &mut res.view,
                &res.head_reqs,
                &mut self.rng,
            );
            if !fits {
                for (_, a) in tried.placed.iter().rev() {
                    res.view.release(a).expect("just applied");
                }
            }
            fits
        };
        if ok {
            self.settle(now_ms, job, tried);
        } else {
            self.roll_back(&tried);
            let epoch = self.epoch;
            if let Some(j) = self.jobs.get_mut(&job) {
                j.blocked_epoch = Some(epoch);
            }
        }
    }

    /// Computes the head's reservation unless the cached one still holds (same head, nothing
    /// freed or added since).
    fn ensure_reservation(&mut self, now_ms: u64, head: JobId) {
        if let Some(r) = &self.reservation {
            if r.head == head && r.epoch == self.epoch && r.nodes_version == self.nodes_version {
                return;
            }
        }
        let head_reqs: Vec<TaskRequest> = self.jobs[&head]
            .pending
            .iter()
            .map(|&s| self.request(head, s))
            .collect();
        let head_need = head_reqs.iter().fold((Resources::ZERO, 0u64), |(r, g), q| {
            (
                r.saturating_add(&q.shape.resources),
                g + u64::from(q.shape.gpu.total_milli()),
            )
        });
        // The view's free sums rule the head out in O(1) until enough has been released. The
        // shadow view is a projection: node state and the head's placement, not every placed
        // task's record.
        let mut v = self.view.projection(head);
        let (need, need_gpu) = head_need;
        let mut shadow_ms = None;
        if v.may_hold(&need, need_gpu)
            && fits(&mut self.scratch_placer, &mut v, &head_reqs, &mut self.rng)
        {
            shadow_ms = Some(now_ms);
        } else {
            // Expected ends in time order, walked only as far as the shadow time.
            let mut ends = self.ends.iter().copied().peekable();
            while let Some(&(t, _)) = ends.peek() {
                // Release every task expected to end at `t`.
                while let Some((_, task)) = ends.next_if(|&(e, _)| e == t) {
                    let a = self
                        .view
                        .assignment(task)
                        .expect("an estimated task is placed");
                    v.release_untracked(a)
                        .expect("the projection holds what the view holds");
                }
                if v.may_hold(&need, need_gpu)
                    && fits(&mut self.scratch_placer, &mut v, &head_reqs, &mut self.rng)
                {
                    shadow_ms = Some(t.max(now_ms));
                    break;
                }
            }
        }
        self.reservation = Some(Reservation {
            head,
            shadow_ms,
            view: v,
            head_need,
            head_reqs,
            epoch: self.epoch,
            nodes_version: self.nodes_version,
        });
    }

    /// True when the job's pending tasks cannot fit even on an empty cluster (of the nodes in
    /// service now). Cached per nodes version.
    fn never_fits(&mut self, job: JobId) -> bool {
        let version = self.nodes_version;
        if let Some(v) = self.jobs[&job].never_fits_at {
            if v == version {
                return true;
            }
        }
        if self.jobs[&job].never_fits_checked == Some(version) {
            return false;
        }
        let reqs: Vec<TaskRequest> = self.jobs[&job]
            .pending
            .iter()
            .map(|&s| self.request(job, s))
            .collect();
        if self.empty_view.as_ref().is_none_or(|(v, _)| *v != version) {
            let mut empty = ClusterView::new(self.view.spec());
            for n in 0..self.view.len() {
                let id = NodeId(n as u32);
                if !self.view.is_schedulable(id) {
                    empty.set_schedulable(id, false).expect("same nodes");
                }
            }
            self.empty_view = Some((version, empty));
        }
        let (_, empty) = self.empty_view.as_mut().expect("built above");
        let never = !fits(&mut self.scratch_placer, empty, &reqs, &mut self.rng);
        let j = self.jobs.get_mut(&job).expect("job exists");
        if never {
            j.never_fits_at = Some(version);
        } else {
            j.never_fits_checked = Some(version);
        }
        never
    }

    // ----- Berth: tiers, then DRF over capacity groups -----------------------------------

    fn pass_berth(&mut self, now_ms: u64) {
        let keys: Vec<super::QueueKey> = self.queues.keys().copied().collect();
        let mut tier_start = 0;
        while tier_start < keys.len() {
            let tier = keys[tier_start].tier;
            let mut tier_end = tier_start;
            while tier_end < keys.len() && keys[tier_end].tier == tier {
                tier_end += 1;
            }
            self.pass_tier(now_ms, &keys[tier_start..tier_end]);
            tier_start = tier_end;
        }
    }

    /// Capacity groups of one tier take turns, lowest dominant share first; each turn places
    /// one task (or one whole gang) of the group's first job that fits.
    fn pass_tier(&mut self, now_ms: u64, keys: &[super::QueueKey]) {
        struct Turn {
            key: super::QueueKey,
            cursor: Option<(u64, JobId)>,
            examined: u32,
            done: bool,
        }
        let mut turns: Vec<Turn> = keys
            .iter()
            .map(|&key| Turn {
                key,
                cursor: None,
                examined: 0,
                done: false,
            })
            .collect();
        let total = self.capacity_total;
        loop {
            // The group with the lowest dominant share (lowest group id on ties).
            let mut best: Option<(f64, usize)> = None;
            for (i, t) in turns.iter().enumerate() {
                if t.done {
                    continue;
                }
                let share = dominant_share(&self.group_alloc[t.key.group as usize], &total);
                if best.is_none_or(|(b, _)| share < b) {
                    best = Some((share, i));
                }
            }
            let Some((_, i)) = best else { break };
            let key = turns[i].key;
            let next = match self.queues.get(&key) {
                None => None,
                Some(q) => match turns[i].cursor {
                    None => q.iter().next().copied(),
                    Some(c) => q.range((Excluded(c), Unbounded)).next().copied(),
                },
            };
            let Some((submit, job)) = next else {
                turns[i].done = true;
                continue;
            };
            // Alone in its tier, a group's turns follow each other: its job takes what fits
            // in one try (the same placements, fewer passes over the turns).
            let alone = turns.iter().filter(|t| !t.done).count() == 1;
            let tried = self.try_place(job, if alone { usize::MAX } else { 1 });
            let blocked = tried.blocked;
            self.settle(now_ms, job, tried);
            if blocked {
                turns[i].cursor = Some((submit, job));
                turns[i].examined += 1;
                if turns[i].examined >= self.config.lookahead_jobs_max {
                    turns[i].done = true;
                }
            }
        }
    }
}

/// Shapes remembered as fitting nowhere, per view change ([`FitCounts::none`]).
const FIT_NONE_MAX: usize = 16;

/// Counts of [`ClusterView::tasks_that_fit`] on the controller's live view, kept between two
/// changes of it (many queued jobs share a shape, or are larger than one that fits nowhere).
#[derive(Clone, Debug)]
pub(crate) struct FitCounts {
    /// Per shape (scalar resources, GPU kind and amount): (view change count, the `enough`
    /// asked, the answer).
    counts: BTreeMap<FitKey, (u64, u64, u64)>,
    /// Shapes that fit no node as of a view change count (at most [`FIT_NONE_MAX`], none
    /// larger than another): a larger shape then fits nowhere either, without a count.
    none: (u64, Vec<FitKey>),
}

impl Default for FitCounts {
    fn default() -> Self {
        FitCounts {
            counts: BTreeMap::new(),
            none: (u64::MAX, Vec::new()),
        }
    }
}

impl FitCounts {
    /// `view.tasks_that_fit(shape, enough)`, without counting when an answer kept since the
    /// view's last change gives it.
    pub(crate) fn count(&mut self, view: &ClusterView, shape: &TaskShape, enough: u64) -> u64 {
        let gpu = match shape.gpu {
            GpuDemand::None => (0, 0),
            GpuDemand::Whole(k) => (1, u16::from(k)),
            GpuDemand::Milli(m) => (2, m),
        };
        let key = (shape.resources.as_array(), gpu.0, gpu.1);
        let changes = view.change_count();
        if self.none.0 == changes && self.none.1.iter().any(|t| fit_key_le(t, &key)) {
            return 0;
        }
        if let Some(&(at, asked, count)) = self.counts.get(&key) {
            // Below what was asked the count is exact; at or above it, it says "at least
            // `asked`", which answers any `enough` up to `asked`.
            if at == changes && (count < asked || enough <= asked) {
                return count;
            }
        }
        let count = view.tasks_that_fit(shape, enough);
        if self.counts.len() >= 4096 {
            self.counts.clear();
        }
        self.counts.insert(key, (changes, enough, count));
        if count == 0 {
            if self.none.0 != changes {
                self.none = (changes, Vec::new());
            }
            self.none.1.retain(|t| !fit_key_le(&key, t));
            if self.none.1.len() < FIT_NONE_MAX {
                self.none.1.push(key);
            }
        }
        count
    }
}

/// Whether every node that can take a task of shape `b` can take one of `a`: `a` asks no more
/// of any scalar dimension, and no GPU, or the same kind of GPU demand and no more of it (a
/// device with `m` milli free has `m' <= m` free too; `w' <= w` whole devices are among `w`).
fn fit_key_le(a: &FitKey, b: &FitKey) -> bool {
    let scalars = (0..4).all(|d| a.0[d] <= b.0[d]);
    let gpu = a.1 == 0 || (a.1 == b.1 && a.2 <= b.2);
    scalars && gpu
}

/// The largest of a group's shares of cpu, memory and GPU.
fn dominant_share(alloc: &[u64; 3], total: &[u64; 3]) -> f64 {
    (0..3)
        .filter(|&d| total[d] > 0)
        .map(|d| alloc[d] as f64 / total[d] as f64)
        .fold(0.0, f64::max)
}

/// Whether all of `reqs` fit on `view` together; the view is left as it was.
fn fits<R: rand::Rng + ?Sized>(
    placer: &mut Placer,
    view: &mut ClusterView,
    reqs: &[TaskRequest],
    rng: &mut R,
) -> bool {
    if reqs.is_empty() {
        return true;
    }
    let mut need = Resources::ZERO;
    let mut gpu_milli = 0u64;
    for r in reqs {
        need = need.saturating_add(&r.shape.resources);
        gpu_milli += u64::from(r.shape.gpu.total_milli());
    }
    if !view.may_hold(&need, gpu_milli) {
        return false;
    }
    // Identical tasks (a gang, a job's pending tasks): more than the nodes could take one by one
    // do not fit together.
    let n = reqs.len() as u64;
    let identical = reqs.iter().all(|r| r.shape == reqs[0].shape);
    if identical && view.tasks_that_fit(&reqs[0].shape, n) < n {
        return false;
    }
    // Identical tasks without constraints, GPU-model choice or pool restriction, on a view no
    // job holds a node of exclusively: each node takes its count alone and first fit fills
    // them, so the count is the answer (and the search draws no random numbers).
    let unconstrained = identical
        && reqs[0].shape.gpu_models.is_empty()
        && view.exclusive_nodes() == 0
        && reqs
            .iter()
            .all(|r| r.constraints.is_empty() && !placer.restricts_tier(r.tier));
    if unconstrained && !cfg!(debug_assertions) {
        return true;
    }
    let plan = placer.place(view, reqs, rng);
    for a in plan.assignments.iter().rev() {
        view.release(a).expect("releasing a trial placement");
    }
    debug_assert!(
        !unconstrained || plan.is_complete(),
        "identical unconstrained tasks that fit by count were not all placed"
    );
    plan.is_complete()
}

/// The reasons of several unplaced tasks, summed.
fn merged_reasons<'a>(all: impl Iterator<Item = &'a ReasonCounts>) -> ReasonCounts {
    let mut out = ReasonCounts::new();
    for r in all {
        for (k, &n) in &r.0 {
            out.add(k.clone(), n);
        }
    }
    out
}

/// The placer used for what-if questions (EASY reservations, "can it ever fit", the
/// autoscaler's in-flight packing): first fit, with the real policy's tier pools, and caches of
/// its own so what-if views never touch the real placer's. It scans without the node index:
/// what-if views are short-lived clones and fresh views, which the index would rebuild for a
/// few decisions each.
pub(crate) fn scratch_placer(policy: &crate::place::Policy) -> Placer {
    let mut p = policy.clone();
    p.scorers = vec![WeightedScorer {
        scorer: ScorerKind::FirstFit,
        weight: 1.0,
    }];
    // First fit's scores never tie: tie scorers would never be asked (and would keep the scan
    // from stopping at the first node that fits).
    p.tie_scorers.clear();
    Placer::new(p)
        .expect("first fit is a valid policy")
        .without_index()
}

/// Sum of a resource vector's cpu, memory and GPU, for totals.
pub(crate) fn add3(acc: &mut [u64; 3], r: &Resources, gpu_milli: u64) {
    acc[0] += r.cpu_milli;
    acc[1] += r.mem_mib;
    acc[2] += gpu_milli;
}

pub(crate) fn sub3(acc: &mut [u64; 3], r: &Resources, gpu_milli: u64) {
    acc[0] -= r.cpu_milli;
    acc[1] -= r.mem_mib;
    acc[2] -= gpu_milli;
}
