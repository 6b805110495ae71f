//! What a run measures: a time series (allocation and utilisation per resource, pending queue,
//! nodes, cost), per-task rows (wait, run, slowdown, retries) and the summary.
//!
//! Definitions: *allocation* is what placed tasks hold on nodes in service, over their capacity;
//! *utilisation* is what running (started) containers hold (the traces carry no usage figures).
//! Wait is from the job's submission to the task's start; slowdown is response time over run
//! time, bounded slowdown uses a 10 s floor on the run time (Feitelson's bound).

use crate::engine::{Engine, SimTask};
use crate::report::{SimReport, TierFigures};
use crate::workload::SimJob;
use crate::SimError;
use berth_solver::controller::{JobState, TaskRecord};
use berth_solver::{JobId, NodeId, TaskId, TaskReason, TaskState, Tier};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// The bound of bounded slowdown.
pub const SLOWDOWN_BOUND_MS: u64 = 10_000;

pub const TASKS_CSV_HEADER: &str =
    "task,job,slot,attempt,tier,submit_ms,start_ms,end_ms,reason,wait_ms,run_ms,slowdown,bounded_slowdown\n";

/// One time-series row.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub nodes: u64,
    pub cpu_capacity_milli: u64,
    pub cpu_alloc_milli: u64,
    pub cpu_used_milli: u64,
    pub mem_capacity_mib: u64,
    pub mem_alloc_mib: u64,
    pub mem_used_mib: u64,
    pub gpu_capacity_milli: u64,
    pub gpu_alloc_milli: u64,
    pub gpu_used_milli: u64,
    /// Milli-GPU idle on nodes that have a GPU partly allocated (idle shares stranded next to
    /// allocated ones).
    pub gpu_idle_on_partial_nodes_milli: u64,
    pub pending_tasks: u64,
    pub running_tasks: u64,
    pub cost_usd: f64,
}

/// Fault counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    pub nodes_lost: u64,
    pub spot_interruptions: u64,
    pub container_launch_failures: u64,
    pub instance_launch_failures: u64,
    pub insufficient_capacity: u64,
    pub container_crashes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    accepted_ms: u64,
    started_ms: Option<u64>,
    /// What an open task's row at the horizon needs (job, slot, attempt, tier, submission).
    job: JobId,
    slot: u32,
    attempt: u32,
    tier: Option<Tier>,
    submit_ms: Option<u64>,
}

/// Accumulated measurements.
pub struct Metrics {
    pub series: Vec<Sample>,
    /// (t_ms, pool, instance type, zone, nodes).
    pub nodes_series: Vec<(u64, String, String, String, u64)>,
    pub faults: FaultCounts,
    pub unplaced_reports: u64,
    pub instances_requested: u64,
    live: HashMap<TaskId, Live>,
    /// Wait of first attempts, per tier.
    waits_ms: [Vec<u64>; 2],
    slowdown_sum: f64,
    bounded_slowdown_sum: f64,
    slowdown_n: u64,
    pub retries: u64,
    pub tasks_started: u64,
    pub reasons: BTreeMap<String, u64>,
    pub job_states: BTreeMap<String, u64>,
    pub last_job_end_ms: u64,
    used: [u64; 3],
    tasks_out: Option<Box<dyn Write>>,
    pub interval_ms: u64,
}

fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Critical => 0,
        Tier::Flex => 1,
    }
}

fn reason_name(r: TaskReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Metrics {
    pub fn new(tasks_out: Option<Box<dyn Write>>, interval_ms: u64) -> Metrics {
        Metrics {
            series: Vec::new(),
            nodes_series: Vec::new(),
            faults: FaultCounts::default(),
            unplaced_reports: 0,
            instances_requested: 0,
            live: HashMap::new(),
            waits_ms: [Vec::new(), Vec::new()],
            slowdown_sum: 0.0,
            bounded_slowdown_sum: 0.0,
            slowdown_n: 0,
            retries: 0,
            tasks_started: 0,
            reasons: BTreeMap::new(),
            job_states: BTreeMap::new(),
            last_job_end_ms: 0,
            used: [0; 3],
            tasks_out,
            interval_ms,
        }
    }

    pub(crate) fn task_record(
        &mut self,
        now: u64,
        r: &TaskRecord,
        t: Option<&SimTask>,
        jobs: &[SimJob],
        index: &HashMap<JobId, usize>,
    ) {
        match r.state {
            TaskState::Accepted => {
                if r.attempt > 0 {
                    self.retries += 1;
                }
                let job = index.get(&r.job).map(|&i| &jobs[i]);
                self.live.insert(
                    r.task,
                    Live {
                        accepted_ms: now,
                        started_ms: None,
                        job: r.job,
                        slot: r.slot,
                        attempt: r.attempt,
                        tier: job.map(|j| j.spec.tier),
                        submit_ms: job.map(|j| j.submit_ms),
                    },
                );
            }
            TaskState::Started => {
                self.tasks_started += 1;
                if let Some(l) = self.live.get_mut(&r.task) {
                    l.started_ms = Some(now);
                }
                if let Some(t) = t {
                    self.used[0] += t.resources.cpu_milli;
                    self.used[1] += t.resources.mem_mib;
                    self.used[2] += t.gpu_milli;
                }
                if r.attempt == 0 {
                    if let Some(&ji) = index.get(&r.job) {
                        let j = &jobs[ji];
                        self.waits_ms[tier_index(j.spec.tier)]
                            .push(now.saturating_sub(j.submit_ms));
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn task_finished(
        &mut self,
        now: u64,
        r: &TaskRecord,
        t: Option<&SimTask>,
        jobs: &[SimJob],
        index: &HashMap<JobId, usize>,
    ) {
        let reason = r.reason.unwrap_or(TaskReason::Normal);
        *self.reasons.entry(reason_name(reason)).or_insert(0) += 1;
        let live = self.live.remove(&r.task);
        let started = live.and_then(|l| l.started_ms);
        if let (Some(_), Some(t)) = (started, t) {
            self.used[0] -= t.resources.cpu_milli;
            self.used[1] -= t.resources.mem_mib;
            self.used[2] -= t.gpu_milli;
        }
        let job = index.get(&r.job).map(|&i| &jobs[i]);
        let submit = job.map_or(live.map_or(now, |l| l.accepted_ms), |j| j.submit_ms);
        let (mut slowdown, mut bounded) = (f64::NAN, f64::NAN);
        if let (Some(s), TaskReason::Normal) = (started, reason) {
            let run = now.saturating_sub(s);
            let response = now.saturating_sub(submit);
            if run > 0 {
                slowdown = response as f64 / run as f64;
                self.slowdown_sum += slowdown;
            }
            bounded = (response as f64 / run.max(SLOWDOWN_BOUND_MS) as f64).max(1.0);
            self.bounded_slowdown_sum += bounded;
            self.slowdown_n += u64::from(run > 0);
        }
        if let Some(w) = self.tasks_out.as_mut() {
            let tier = job.map_or("", |j| j.spec.tier.as_str());
            let start = started.map_or(String::new(), |s| s.to_string());
            let wait = started.map_or(String::new(), |s| s.saturating_sub(submit).to_string());
            let run = started.map_or(String::new(), |s| now.saturating_sub(s).to_string());
            let fmt = |x: f64| {
                if x.is_nan() {
                    String::new()
                } else {
                    format!("{x:.4}")
                }
            };
            let _ = writeln!(
                w,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.task.0,
                r.job.0,
                r.slot,
                r.attempt,
                tier,
                submit,
                start,
                now,
                reason_name(reason),
                wait,
                run,
                fmt(slowdown),
                fmt(bounded)
            );
        }
    }

    pub(crate) fn job_record(&mut self, now: u64, _job: JobId, state: JobState) {
        let name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *self.job_states.entry(name).or_insert(0) += 1;
        if matches!(
            state,
            JobState::Completed | JobState::Failed | JobState::Killed
        ) {
            self.last_job_end_ms = now;
        }
    }
}

/// Cost so far, micro-dollars.
fn cost_micro_usd(e: &Engine<'_>) -> u64 {
    let now = e.now_ms;
    let mut total: u128 = 0;
    for name in &e.instance_order {
        let i = &e.instances[name];
        let end = i.gone_ms.unwrap_or(now).min(now);
        let ms = end.saturating_sub(i.launched_ms);
        total += u128::from(i.price_micro_usd_per_hour) * u128::from(ms) / 3_600_000;
    }
    // Static nodes of a known instance type.
    for n in &e.nodes {
        if n.instance.is_none() {
            if let Some(t) =
                berth_solver::catalog::Catalog::ec2().get(&n.spec.attributes.instance_type)
            {
                total += u128::from(t.price_per_hour_micro_usd) * u128::from(now) / 3_600_000;
            }
        }
    }
    total as u64
}

/// Takes one time-series sample.
pub(crate) fn sample(e: &mut Engine<'_>) {
    let view = e.ctrl.view();
    let mut s = Sample {
        t_ms: e.now_ms,
        nodes: 0,
        cpu_capacity_milli: 0,
        cpu_alloc_milli: 0,
        cpu_used_milli: e.metrics.used[0],
        mem_capacity_mib: 0,
        mem_alloc_mib: 0,
        mem_used_mib: e.metrics.used[1],
        gpu_capacity_milli: 0,
        gpu_alloc_milli: 0,
        gpu_used_milli: e.metrics.used[2],
        gpu_idle_on_partial_nodes_milli: 0,
        pending_tasks: e.ctrl.stats().pending_tasks,
        running_tasks: 0,
        cost_usd: cost_micro_usd(e) as f64 / 1e6,
    };
    let mut per: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for n in 0..view.len() {
        let id = NodeId(n as u32);
        if !view.is_schedulable(id) {
            continue;
        }
        let spec = view.node(id);
        let free = view.free(id);
        s.nodes += 1;
        s.cpu_capacity_milli += spec.capacity.cpu_milli;
        s.cpu_alloc_milli += spec.capacity.cpu_milli - free.cpu_milli;
        s.mem_capacity_mib += spec.capacity.mem_mib;
        s.mem_alloc_mib += spec.capacity.mem_mib - free.mem_mib;
        let devs = view.gpu_free(id);
        let cap = devs.len() as u64 * 1000;
        let gfree: u64 = devs.iter().map(|&f| u64::from(f)).sum();
        s.gpu_capacity_milli += cap;
        s.gpu_alloc_milli += cap - gfree;
        if gfree > 0 && gfree < cap {
            s.gpu_idle_on_partial_nodes_milli += gfree;
        }
        s.running_tasks += u64::from(view.task_count(id));
        let a = &spec.attributes;
        *per.entry((a.pool.clone(), a.instance_type.clone(), a.zone.clone()))
            .or_insert(0) += 1;
    }
    for ((pool, it, zone), c) in per {
        e.metrics.nodes_series.push((s.t_ms, pool, it, zone, c));
    }
    e.metrics.series.push(s);
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Closes the run: tasks still live get rows without an end; the summary is computed.
pub(crate) fn finish(e: &mut Engine<'_>, source: &str) -> Result<SimReport, SimError> {
    let m = &mut e.metrics;
    // Rows for tasks still pending or running at the horizon, in task order.
    let mut open: Vec<(&TaskId, &Live)> = m.live.iter().collect();
    open.sort_by_key(|(t, _)| **t);
    if let Some(w) = m.tasks_out.as_mut() {
        for (t, l) in open {
            let submit = l.submit_ms.unwrap_or(l.accepted_ms);
            let start = l.started_ms.map_or(String::new(), |s| s.to_string());
            let wait = l
                .started_ms
                .map_or(String::new(), |s| s.saturating_sub(submit).to_string());
            let _ = writeln!(
                w,
                "{},{},{},{},{},{},{},,open,{},,,",
                t.0,
                l.job.0,
                l.slot,
                l.attempt,
                l.tier.map_or("", |t| t.as_str()),
                submit,
                start,
                wait
            );
        }
        w.flush().map_err(|err| SimError::Io {
            path: "tasks.csv".into(),
            source: err,
        })?;
    }
    m.tasks_out = None;
    let mut tiers = BTreeMap::new();
    for tier in Tier::ALL {
        let v = &mut m.waits_ms[tier_index(tier)];
        v.sort_unstable();
        tiers.insert(
            tier.as_str().to_string(),
            TierFigures {
                tasks_started: v.len() as u64,
                wait_ms_p50: percentile(v, 50.0),
                wait_ms_p99: percentile(v, 99.0),
                wait_ms_max: v.last().copied(),
            },
        );
    }
    let series = &m.series;
    let mean = |f: &dyn Fn(&Sample) -> (u64, u64)| {
        let (mut a, mut b) = (0f64, 0f64);
        for s in series {
            let (x, y) = f(s);
            a += x as f64;
            b += y as f64;
        }
        if b > 0.0 {
            a / b
        } else {
            0.0
        }
    };
    let report = SimReport {
        scenario: e.s.name.clone(),
        workload: source.to_string(),
        seed: e.s.seed,
        horizon_ms: e.s.horizon_ms,
        events: e.events,
        event_log_hash: format!("{:016x}", e.hash.0),
        jobs_submitted: e
            .jobs
            .iter()
            .filter(|j| j.submit_ms < e.s.horizon_ms)
            .count() as u64,
        job_states: m.job_states.clone(),
        last_job_end_ms: m.last_job_end_ms,
        tasks_started: m.tasks_started,
        task_reasons: m.reasons.clone(),
        retries: m.retries,
        tiers,
        slowdown_mean: if m.slowdown_n > 0 {
            m.slowdown_sum / m.slowdown_n as f64
        } else {
            0.0
        },
        bounded_slowdown_mean: if m.slowdown_n > 0 {
            m.bounded_slowdown_sum / m.slowdown_n as f64
        } else {
            0.0
        },
        cpu_alloc_mean: mean(&|s| (s.cpu_alloc_milli, s.cpu_capacity_milli)),
        mem_alloc_mean: mean(&|s| (s.mem_alloc_mib, s.mem_capacity_mib)),
        gpu_alloc_mean: mean(&|s| (s.gpu_alloc_milli, s.gpu_capacity_milli)),
        cpu_used_mean: mean(&|s| (s.cpu_used_milli, s.cpu_capacity_milli)),
        pending_tasks_max: series.iter().map(|s| s.pending_tasks).max().unwrap_or(0),
        pending_tasks_end: series.last().map_or(0, |s| s.pending_tasks),
        nodes_max: series.iter().map(|s| s.nodes).max().unwrap_or(0),
        nodes_end: series.last().map_or(0, |s| s.nodes),
        instances_requested: m.instances_requested,
        cost_usd: series.last().map_or(0.0, |s| s.cost_usd),
        faults: m.faults,
        unplaced_reports: m.unplaced_reports,
    };
    Ok(report)
}
