//! The shipped real-trace scenarios (`sim/scenarios/*.toml`) run end to end on the shared
//! traces (`$BERTH_TRACES_DIR`, else `<workspace>/../shared/traces`). Each test prints a message
//! and passes without checking anything when the traces are absent.
//!
//! Affordable in a debug `cargo test` (each well under 30 s on a loaded 2-core machine): openb
//! is replayed in full (150 days); wagap-2013 under EASY is cut to 8 days of arrivals where the
//! queue builds up (the full replay takes minutes in debug) and run again under FCFS for the
//! ordering properties; Alibaba 2017 is cut to its first hour of arrivals with 3 % of the jobs
//! sampled (the full 11.9 M instances take minutes in debug). The full replays are the `sim`
//! benchmarks' (`benches/benches/sim.rs`).

use berth_sim::scenario::Window;
use berth_sim::{run_scenario_to, Scenario, SimReport};
use berth_solver::controller::QueuePolicy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The shipped scenario, or `None` (with a message) when the shared traces are absent.
fn shipped(file: &str) -> Option<Scenario> {
    if berth_traces::shared_traces_dir().is_none() {
        eprintln!(
            "SKIPPED: shared traces not found (set BERTH_TRACES_DIR or put them in ../shared/traces)"
        );
        return None;
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(file);
    let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = s.check_files() {
        eprintln!("SKIPPED: {file}: {e}");
        return None;
    }
    Some(s)
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-sim-real-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// A CSV file as rows of named fields.
fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, col: &str) -> Option<u64> {
    let v = row.get(col).unwrap_or_else(|| panic!("no column {col}"));
    (!v.is_empty()).then(|| v.parse().unwrap_or_else(|_| panic!("{col} = {v:?}")))
}

/// Checks every sample: allocation within capacity on every resource.
fn no_overcommit(dir: &Path) {
    let rows = csv(&dir.join("series.csv"));
    assert!(!rows.is_empty());
    for r in &rows {
        for res in ["cpu", "mem", "gpu"] {
            let unit = if res == "mem" { "mib" } else { "milli" };
            let cap = num(r, &format!("{res}_capacity_{unit}")).unwrap();
            let alloc = num(r, &format!("{res}_alloc_{unit}")).unwrap();
            let used = num(r, &format!("{res}_used_{unit}")).unwrap();
            assert!(alloc <= cap, "{res} overcommitted: {r:?}");
            assert!(used <= alloc, "{res} used beyond allocation: {r:?}");
        }
    }
}

/// A first-attempt task that started: (job, submit, start).
struct Started {
    job: u64,
    submit_ms: u64,
    start_ms: u64,
}

/// Reads `tasks.csv`, checks every row (start after submission, end after start, wait = start -
/// submission) and returns the first attempts that started.
fn started_tasks(dir: &Path) -> Vec<Started> {
    let mut out = Vec::new();
    for r in csv(&dir.join("tasks.csv")) {
        let submit = num(&r, "submit_ms").unwrap();
        let Some(start) = num(&r, "start_ms") else {
            continue;
        };
        assert!(start >= submit, "started before submission: {r:?}");
        assert_eq!(num(&r, "wait_ms"), Some(start - submit), "{r:?}");
        if let Some(end) = num(&r, "end_ms") {
            assert!(end >= start, "{r:?}");
        }
        if num(&r, "attempt") == Some(0) {
            out.push(Started {
                job: num(&r, "job").unwrap(),
                submit_ms: submit,
                start_ms: start,
            });
        }
    }
    out
}

/// Per job: (submission, first start of its tasks, last start of its tasks), in queue order
/// (submission, then job id).
fn job_starts(tasks: &[Started]) -> Vec<(u64, u64, u64)> {
    let mut by_job: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for t in tasks {
        let e = by_job
            .entry(t.job)
            .or_insert((t.submit_ms, t.start_ms, t.start_ms));
        e.1 = e.1.min(t.start_ms);
        e.2 = e.2.max(t.start_ms);
    }
    let mut v: Vec<(u64, u64, u64, u64)> = by_job
        .into_iter()
        .map(|(j, (s, a, b))| (s, j, a, b))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(s, _, a, b)| (s, a, b)).collect()
}

fn run(s: &Scenario, name: &str) -> (SimReport, PathBuf) {
    let dir = out_dir(name);
    let t = std::time::Instant::now();
    let r = run_scenario_to(s, &dir, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{name}: {:.1} s wall, {} jobs, {} tasks started",
        t.elapsed().as_secs_f64(),
        r.jobs_submitted,
        r.tasks_started
    );
    (r, dir)
}

#[test]
fn openb_replay_runs_every_pod_on_its_own_nodes() {
    let Some(s) = shipped("openb-replay.toml") else {
        return;
    };
    let (r, dir) = run(&s, "openb");
    // 8,152 pods, each a job of one task, on the 1,523 nodes they ran on.
    assert_eq!(r.jobs_submitted, 8152);
    assert_eq!(r.tasks_started, 8152, "{}", r.render_table());
    assert!(r.gpu_alloc_mean > 0.0 && r.gpu_alloc_mean <= 1.0);
    assert!(r.cpu_alloc_mean > 0.0 && r.cpu_alloc_mean <= 1.0);
    assert_eq!(
        r.pending_tasks_end, 0,
        "nothing left waiting after 150 days"
    );
    assert!(r.bounded_slowdown_mean >= 1.0);
    no_overcommit(&dir);
    let started = started_tasks(&dir);
    assert_eq!(started.len() as u64, r.tasks_started);
    std::fs::remove_dir_all(&dir).ok();
}

/// wagap-2013 under EASY (the shipped scenario) and FCFS: the arrivals of days 38 to 46, when
/// the queue builds up (before day 38 no job ever waits, so both policies start every job at
/// once).
#[test]
fn wagap_easy_backfills_and_fcfs_keeps_arrival_order() {
    const DAY_MS: u64 = 86_400_000;
    let Some(mut s) = shipped("wagap-2013-easy.toml") else {
        return;
    };
    assert_eq!(s.policy.queue, QueuePolicy::Easy);
    s.workload.window = Some(Window {
        from_ms: (38 * DAY_MS) as i64,
        to_ms: (46 * DAY_MS) as i64,
    });
    s.horizon_ms = 8 * DAY_MS;
    let (easy, easy_dir) = run(&s, "wagap-easy");
    let mut f = s.clone();
    f.policy.queue = QueuePolicy::Fcfs;
    let (fcfs, fcfs_dir) = run(&f, "wagap-fcfs");
    for (r, dir) in [(&easy, &easy_dir), (&fcfs, &fcfs_dir)] {
        assert!(r.tasks_started > 0);
        no_overcommit(dir);
    }
    let easy_jobs = job_starts(&started_tasks(&easy_dir));
    let fcfs_jobs = job_starts(&started_tasks(&fcfs_dir));
    // Rigid jobs are gangs: all of a job's processors start together.
    for (submit, first, last) in easy_jobs.iter().chain(&fcfs_jobs) {
        assert_eq!(first, last, "a gang started piecewise (submitted {submit})");
    }
    // FCFS: no job starts before one submitted earlier.
    let overtakes = |jobs: &[(u64, u64, u64)]| {
        let mut latest = 0;
        let mut n = 0;
        for &(_, start, _) in jobs {
            if start < latest {
                n += 1;
            }
            latest = latest.max(start);
        }
        n
    };
    assert_eq!(overtakes(&fcfs_jobs), 0, "FCFS kept arrival order");
    // EASY: later jobs pass blocked ones (backfilling), and the queue moves faster.
    assert!(overtakes(&easy_jobs) > 0, "EASY backfilled nothing");
    assert!(
        easy_jobs.len() >= fcfs_jobs.len(),
        "EASY started {} jobs, FCFS {}",
        easy_jobs.len(),
        fcfs_jobs.len()
    );
    let mean_wait = |jobs: &[(u64, u64, u64)]| {
        jobs.iter().map(|(s, a, _)| (a - s) as f64).sum::<f64>() / jobs.len() as f64
    };
    assert!(
        mean_wait(&easy_jobs) <= mean_wait(&fcfs_jobs),
        "mean wait EASY {:.0} ms, FCFS {:.0} ms",
        mean_wait(&easy_jobs),
        mean_wait(&fcfs_jobs)
    );
    std::fs::remove_dir_all(&easy_dir).ok();
    std::fs::remove_dir_all(&fcfs_dir).ok();
}

/// Alibaba 2017 batch, the first hour of arrivals with 3 % of the jobs, run for two hours.
#[test]
fn alibaba_2017_first_hour_sampled() {
    let Some(mut s) = shipped("alibaba-2017-batch.toml") else {
        return;
    };
    s.workload.window = Some(Window {
        from_ms: 0,
        to_ms: 3_600_000,
    });
    s.workload.sample = 0.03;
    s.horizon_ms = 7_200_000;
    s.metrics.per_task = true;
    let (r, dir) = run(&s, "alibaba");
    assert!(r.jobs_submitted > 10, "{}", r.render_table());
    assert!(
        r.tasks_started > r.jobs_submitted,
        "groups of identical instances are jobs of many tasks"
    );
    assert!(r.cpu_alloc_mean > 0.0 && r.cpu_alloc_mean <= 1.0);
    assert_eq!(r.nodes_max, 1300, "the scenario's 1,300 machines, no pool");
    no_overcommit(&dir);
    let started = started_tasks(&dir);
    assert!(started.len() as u64 <= r.tasks_started);
    assert!(started.iter().all(|t| t.submit_ms < 3_600_000), "window");
    std::fs::remove_dir_all(&dir).ok();
}
