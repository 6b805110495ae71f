//! Prometheus metrics (text exposition format), kept by hand: a few counters and one
//! histogram do not need a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the launch-latency buckets, in milliseconds.
pub const LAUNCH_BUCKETS_MS: [u64; 12] = [
    50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
];

/// A cumulative histogram over [`LAUNCH_BUCKETS_MS`].
#[derive(Default)]
pub struct Histogram {
    inner: Mutex<HistogramInner>,
}

#[derive(Default)]
struct HistogramInner {
    buckets: [u64; LAUNCH_BUCKETS_MS.len()],
    count: u64,
    sum_ms: u64,
}

impl Histogram {
    pub fn observe_ms(&self, ms: u64) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &b) in LAUNCH_BUCKETS_MS.iter().enumerate() {
            if ms <= b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum_ms += ms;
    }
}

/// Everything `/metrics` shows besides the gauges the actor computes on demand.
#[derive(Default)]
pub struct Metrics {
    pub steps: Counter,
    pub placements: Counter,
    pub launch_latency: Histogram,
    pub http_requests: Counter,
    finished: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn finished(&self, reason: &str) {
        let mut f = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        *f.entry(reason.to_string()).or_insert(0) += 1;
    }

    /// The exposition text. `task_states` counts the tasks not yet finished by state.
    pub fn render(
        &self,
        queue_depth: u64,
        nodes_live: u64,
        agents_connected: u64,
        task_states: &BTreeMap<String, u64>,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP berth_queue_depth Tasks waiting for placement.");
        let _ = writeln!(s, "# TYPE berth_queue_depth gauge");
        let _ = writeln!(s, "berth_queue_depth {queue_depth}");
        let _ = writeln!(
            s,
            "# HELP berth_nodes_live Nodes the controller schedules on."
        );
        let _ = writeln!(s, "# TYPE berth_nodes_live gauge");
        let _ = writeln!(s, "berth_nodes_live {nodes_live}");
        let _ = writeln!(
            s,
            "# HELP berth_agents_connected Agents with a live session."
        );
        let _ = writeln!(s, "# TYPE berth_agents_connected gauge");
        let _ = writeln!(s, "berth_agents_connected {agents_connected}");
        let _ = writeln!(
            s,
            "# HELP berth_placements_total Tasks placed (launch commands issued)."
        );
        let _ = writeln!(s, "# TYPE berth_placements_total counter");
        let _ = writeln!(s, "berth_placements_total {}", self.placements.get());
        let _ = writeln!(
            s,
            "# HELP berth_controller_steps_total Controller steps committed."
        );
        let _ = writeln!(s, "# TYPE berth_controller_steps_total counter");
        let _ = writeln!(s, "berth_controller_steps_total {}", self.steps.get());
        let _ = writeln!(s, "# HELP berth_http_requests_total HTTP requests served.");
        let _ = writeln!(s, "# TYPE berth_http_requests_total counter");
        let _ = writeln!(s, "berth_http_requests_total {}", self.http_requests.get());
        let _ = writeln!(s, "# HELP berth_tasks Tasks not yet finished, by state.");
        let _ = writeln!(s, "# TYPE berth_tasks gauge");
        for state in [
            "accepted",
            "launched",
            "start_initiated",
            "started",
            "kill_initiated",
        ] {
            let n = task_states.get(state).copied().unwrap_or(0);
            let _ = writeln!(s, "berth_tasks{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP berth_tasks_finished_total Tasks finished, by reason."
        );
        let _ = writeln!(s, "# TYPE berth_tasks_finished_total counter");
        for (reason, n) in self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(s, "berth_tasks_finished_total{{reason=\"{reason}\"}} {n}");
        }
        let h = self
            .launch_latency
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            s,
            "# HELP berth_launch_latency_seconds Task accepted to container running."
        );
        let _ = writeln!(s, "# TYPE berth_launch_latency_seconds histogram");
        for (i, b) in LAUNCH_BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                s,
                "berth_launch_latency_seconds_bucket{{le=\"{}\"}} {}",
                *b as f64 / 1000.0,
                h.buckets[i]
            );
        }
        let _ = writeln!(
            s,
            "berth_launch_latency_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            s,
            "berth_launch_latency_seconds_sum {}",
            h.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(s, "berth_launch_latency_seconds_count {}", h.count);
        s
    }
}
