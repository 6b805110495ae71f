//! API throughput: submitted jobs per second and placements per second against a real control
//! plane (`berth_runtime::serve`: axum API, the controller actor, SQLite with WAL and
//! `synchronous = FULL` in a temporary folder on this machine's disk) with many fake agents on
//! loopback. No Docker: a fake agent speaks the agent protocol over HTTP like `berth agent`
//! (registers, long-polls `/v1/agent/commands` acknowledging with `after`, heartbeats every
//! 5 s, and reports, one report per request and in order from its own task, `started` then
//! `exited 0` for every launch and `exited 137` for every kill), so the figures are the control
//! plane's: HTTP, the actor, one fsynced transaction per controller step, placement.
//!
//! - `api/submit_jobs/<n>_agents` (jobs/s): 8 concurrent clients submit one-task batch jobs;
//!   the time is until the last submission is acknowledged (persisted). The cluster runs the
//!   tasks meanwhile (their reports compete with the submissions, as in production); after
//!   each sample, untimed, the bench waits for every task to finish.
//! - `api/placements/<n>_agents` (placements/s): 4 concurrent clients submit 10-task batch jobs;
//!   the time is until every task was placed, launched by an agent, reported started and
//!   exited: the whole lifecycle of a placement, 3 fsynced steps per task (placement with its
//!   job's submission, start, exit).
//!
//! `cargo bench -p berth-benches --bench api`

use berth_runtime::api_types::{
    AgentCommand, CommandBatch, HeartbeatRequest, RegisterRequest, RegisterResponse, Report,
    ReportRequest, SubmitResponse,
};
use berth_runtime::client::{Client, ClientError};
use berth_runtime::control::ControlConfig;
use berth_runtime::serve::{self, Running, ServeConfig};
use berth_runtime::server::Tokens;
use berth_solver::Resources;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const USER_TOKEN: &str = "bench-user";
const AGENT_TOKEN: &str = "bench-agent";
/// Concurrent submitters of the two benchmarks.
const SUBMITTERS_JOBS: u64 = 8;
const SUBMITTERS_PLACEMENTS: u64 = 4;
/// Tasks per job in the placements benchmark.
const PLACEMENT_JOB_SIZE: u32 = 10;
/// Every fake agent offers 16 cores and 64 GiB; a task asks for 1 core and 1 GiB.
const AGENT_CPU_MILLI: u64 = 16_000;
const AGENT_MEM_MIB: u64 = 65_536;

/// What the fake agents did, summed.
#[derive(Default)]
struct Counters {
    launched: AtomicU64,
    /// Exit reports the control plane acknowledged.
    exited: AtomicU64,
}

struct Plane {
    rt: Runtime,
    running: Option<Running>,
    url: String,
    agents: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    next_job: AtomicU64,
    _data: tempfile::TempDir,
}

impl Plane {
    fn start(agents: usize) -> Plane {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let data = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let dir = data.path().join("server");
        let running = rt.block_on(async {
            serve::start(ServeConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                data_dir: dir,
                tokens: Tokens {
                    user: USER_TOKEN.into(),
                    agent: AGENT_TOKEN.into(),
                },
                control: ControlConfig {
                    // Generous: two cores run the server, the submitters and every agent.
                    heartbeat_timeout_ms: 120_000,
                    liveness_interval_ms: 1_000,
                    ..ControlConfig::default()
                },
                local_agent: None,
            })
            .await
            .expect("control plane starts")
        });
        let url = running.url();
        let counters = Arc::new(Counters::default());
        let t0 = Instant::now();
        let handles: Vec<JoinHandle<()>> = (0..agents)
            .map(|i| {
                let (url, counters) = (url.clone(), counters.clone());
                rt.spawn(fake_agent(url, i, counters))
            })
            .collect();
        let plane = Plane {
            rt,
            running: Some(running),
            url,
            agents: handles,
            counters,
            next_job: AtomicU64::new(0),
            _data: data,
        };
        plane.rt.block_on(plane.wait_agents(agents as u64));
        eprintln!(
            "api: {agents} fake agents registered in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        plane
    }

    async fn wait_agents(&self, n: u64) {
        let c = Client::new(&self.url, None);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let text = c.get_text("/metrics").await.unwrap_or_default();
            let connected = text
                .lines()
                .find_map(|l| l.strip_prefix("berth_agents_connected "))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if connected == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "agents did not all register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits `jobs` batch jobs of `size` tasks from `clients` concurrent clients.
    async fn submit(&self, jobs: u64, size: u32, clients: u64) {
        let base = self.next_job.fetch_add(jobs, Ordering::Relaxed);
        let mut tasks = Vec::new();
        for k in 0..clients {
            let url = self.url.clone();
            tasks.push(tokio::spawn(async move {
                let c = Client::new(&url, Some(USER_TOKEN.into()));
                let mut i = k;
                while i < jobs {
                    let spec = serde_json::json!({
                        "name": format!("bench-{}", base + i),
                        "batch": { "size": size },
                        "task": { "cpu_milli": 1000, "mem_mib": 1024 },
                        "container": { "image": "local/berth-test:1", "command": ["true"] }
                    });
                    let r: SubmitResponse = c.post("/v1/jobs", &spec).await.expect("submit");
                    assert_eq!(r.state, "accepted", "{r:?}");
                    i += clients;
                }
            }));
        }
        for t in tasks {
            t.await.expect("submitter");
        }
    }

    /// Waits until `n` exit reports were acknowledged in all.
    async fn wait_exited(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.counters.exited.load(Ordering::Acquire) < n {
            assert!(
                Instant::now() < deadline,
                "tasks did not finish: {} of {n} exited, {} launched",
                self.counters.exited.load(Ordering::Acquire),
                self.counters.launched.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn stop(mut self) {
        for a in self.agents.drain(..) {
            a.abort();
        }
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown(Duration::from_secs(2)));
        }
    }
}

/// One fake agent: registration, long-poll with acknowledgements, heartbeats, and in-order
/// reports from a task of their own (as `berth agent` does).
async fn fake_agent(url: String, i: usize, counters: Arc<Counters>) {
    let name = format!("fake-{i}");
    let client = Arc::new(Client::new(&url, Some(AGENT_TOKEN.into())));
    let req = RegisterRequest {
        name: name.clone(),
        capacity: Resources::new(AGENT_CPU_MILLI, AGENT_MEM_MIB, 0, 0),
        zone: ["a", "b", "c"][i % 3].into(),
        instance_type: "fake".into(),
        url: "http://127.0.0.1:9".into(),
        tasks: Vec::new(),
        instance_id: None,
        gpus: None,
    };
    let _: RegisterResponse = loop {
        match client.post("/v1/agent/register", &req).await {
            Ok(r) => break r,
            Err(e @ ClientError::Api { .. }) => panic!("{name}: registration refused: {e}"),
            Err(ClientError::Transport { .. }) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    };
    let hb = {
        let (client, name) = (client.clone(), name.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = client
                    .post_empty(
                        "/v1/agent/heartbeat",
                        &HeartbeatRequest { node: name.clone() },
                    )
                    .await;
            }
        })
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
    let reporter = {
        let (client, name, counters) = (client.clone(), name.clone(), counters.clone());
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                let exit = matches!(r, Report::Exited { .. });
                let body = ReportRequest {
                    node: name.clone(),
                    reports: vec![r],
                };
                while client.post_empty("/v1/agent/report", &body).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if exit {
                    counters.exited.fetch_add(1, Ordering::AcqRel);
                }
            }
        })
    };
    let _guards = (AbortOnDrop(hb), AbortOnDrop(reporter));
    let mut after = 0u64;
    loop {
        let path = format!("/v1/agent/commands?node={name}&after={after}");
        let batch: CommandBatch = match client.get(&path).await {
            Ok(b) => b,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for (seq, cmd) in batch.commands {
            if seq <= after {
                continue;
            }
            after = seq;
            match cmd {
                AgentCommand::Launch { task, .. } => {
                    counters.launched.fetch_add(1, Ordering::AcqRel);
                    let _ = tx.send(Report::Started { task });
                    let _ = tx.send(Report::Exited {
                        task,
                        exit_code: 0,
                        oom: false,
                    });
                }
                AgentCommand::Kill { task, .. } => {
                    let _ = tx.send(Report::Exited {
                        task,
                        exit_code: 137,
                        oom: false,
                    });
                }
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn bench(c: &mut Criterion) {
    for agents in [100usize, 1_000] {
        let plane = Plane::start(agents);
        let mut g = c.benchmark_group("api");
        g.sample_size(10);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("submit_jobs/{agents}_agents"), |b| {
            b.iter_custom(|iters| {
                plane.rt.block_on(async {
                    let done = plane.counters.exited.load(Ordering::Acquire);
                    let t0 = Instant::now();
                    plane.submit(iters, 1, SUBMITTERS_JOBS).await;
                    let took = t0.elapsed();
                    plane.wait_exited(done + iters).await;
                    took
                })
            })
        });
        g.throughput(Throughput::Elements(u64::from(PLACEMENT_JOB_SIZE)));
        g.bench_function(format!("placements/{agents}_agents"), |b| {
            b.iter_custom(|iters| {
                plane.rt.block_on(async {
                    let done = plane.counters.exited.load(Ordering::Acquire);
                    let t0 = Instant::now();
                    plane
                        .submit(iters, PLACEMENT_JOB_SIZE, SUBMITTERS_PLACEMENTS)
                        .await;
                    plane
                        .wait_exited(done + iters * u64::from(PLACEMENT_JOB_SIZE))
                        .await;
                    t0.elapsed()
                })
            })
        });
        g.finish();
        plane.stop();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
