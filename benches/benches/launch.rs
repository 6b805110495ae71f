//! Launch latency (issue 7): API-accept → container running through Berth, against plain
//! `docker run` of the same image and command in the same run, p50 and p99 of each and their
//! ratio. Needs the real Docker engine and the image `scripts/test-image` builds
//! (`local/berth-test:1`); without either it prints `SKIPPED …` and exits 0.
//!
//! - Berth: a control plane and one real agent on loopback (the runtime tests' helpers,
//!   `runtime/tests/common`, with their isolation settings: per-job internal network, read-only
//!   root, capped `/tmp`, all capabilities dropped, …). The clock starts when `POST /v1/jobs`
//!   (a one-task batch job running `sleep 1`) is sent, so it includes the acceptance (one
//!   fsynced step), and stops when the job's task shows up as `started` on the server-sent
//!   event stream (the agent reports it once Docker's start call returned). Then the bench waits
//!   for the job to end before the next launch, so launches never overlap. Measured twice: with
//!   the agent's default per-job network, and with `network = none` (no network to create).
//! - `docker run -d <image> sleep 1`, the CLI: it returns once the container started.
//!   Timed from spawning the CLI to its exit; the container is removed untimed.
//!
//! The three are interleaved round by round so load on this shared machine hits them alike.
//! Not criterion: a few dozen launches of a real container give percentiles and a ratio, and a
//! mean with a confidence interval would say less. `BERTH_LAUNCH_SAMPLES` (default 40) sets
//! the launches per variant, after 3 unrecorded warm-up rounds; with 40, p99 is the slowest.
//!
//! `cargo bench -p berth-benches --bench launch`

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use berth_runtime::agent;
use berth_runtime::client::Client;
use berth_runtime::docker::NetworkMode;
use common::{AgentSpec, Cluster, IMAGE, USER_TOKEN};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the event stream told the bench.
enum Seen {
    Started(u64, Instant),
    Ended(u64),
}

fn docker_ok() -> Result<(), String> {
    let out = Command::new("docker")
        .arg("info")
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if !out.status.success() {
        return Err("the Docker engine is unreachable (docker info failed)".into());
    }
    let img = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .map_err(|e| e.to_string())?;
    if !img.status.success() {
        return Err(format!("image {IMAGE} is missing: run scripts/test-image"));
    }
    Ok(())
}

/// A control plane and one agent with `network` isolation.
async fn cluster(test: &str, network: NetworkMode) -> Cluster {
    let docker = agent::connect_docker().await.expect("docker");
    let data = tempfile::tempdir().expect("tempdir");
    let running = common::start_server(data.path().join("server")).await;
    let url = running.url();
    let spec = AgentSpec {
        zone: "a",
        cpu_milli: 2_000,
        mem_mib: 2_048,
    };
    let mut cfg = common::agent_config(test, 0, &url, &spec, data.path());
    cfg.isolation.network = network;
    let a = agent::start(cfg.clone()).await.expect("agent starts");
    let c = Cluster {
        name: test.into(),
        running: Some(running),
        client: Client::new(&url, Some(USER_TOKEN.into())),
        agents: vec![Some(a)],
        agent_configs: vec![cfg],
        data,
        docker,
    };
    c.wait_metric("berth_agents_connected", 1, 30).await;
    c
}

/// Reads the server-sent event stream of `url` and forwards task starts and job ends.
async fn follow(url: String, tx: mpsc::UnboundedSender<Seen>) {
    let http = reqwest::Client::new();
    let mut resp = http
        .get(format!("{url}/v1/events"))
        .bearer_auth(USER_TOKEN)
        .send()
        .await
        .expect("event stream");
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let at = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for data in block.lines().filter_map(|l| l.strip_prefix("data:")) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                    continue;
                };
                let body = &v["body"];
                let (Some(job), Some(state)) = (body["job"].as_u64(), body["state"].as_str())
                else {
                    continue;
                };
                let seen = match (v["kind"].as_str(), state) {
                    (Some("task"), "started") => Seen::Started(job, at),
                    (Some("job"), s) if s != "accepted" => Seen::Ended(job),
                    _ => continue,
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        }
    }
}

/// A Berth cluster under test, with its event stream.
struct Subject {
    cluster: Cluster,
    seen: mpsc::UnboundedReceiver<Seen>,
    started: BTreeMap<u64, Instant>,
    ended: BTreeSet<u64>,
}

impl Subject {
    async fn new(test: &str, network: NetworkMode) -> Subject {
        let cluster = cluster(test, network).await;
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(follow(cluster.url(), tx));
        // Let the stream connect before the first submission.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Subject {
            cluster,
            seen,
            started: BTreeMap::new(),
            ended: BTreeSet::new(),
        }
    }

    async fn next(&mut self) {
        let s = tokio::time::timeout(Duration::from_secs(60), self.seen.recv())
            .await
            .expect("an event within 60 s")
            .expect("event stream open");
        match s {
            Seen::Started(job, at) => {
                self.started.entry(job).or_insert(at);
            }
            Seen::Ended(job) => {
                self.ended.insert(job);
            }
        }
    }

    /// One launch: (submit → running, submit → accepted).
    async fn launch(&mut self, i: usize) -> (Duration, Duration) {
        let spec = common::batch(&format!("lat-{i}"), 1, 100, 64, "sleep 1");
        let t0 = Instant::now();
        let job = self.cluster.submit(spec).await;
        let accepted = t0.elapsed();
        while !self.started.contains_key(&job) {
            self.next().await;
        }
        let running = self.started[&job] - t0;
        while !self.ended.contains(&job) {
            self.next().await;
        }
        let state = self.cluster.job(job).await.state;
        assert_eq!(state, "completed", "launch {i}: job {job} ended {state}");
        (running, accepted)
    }
}

/// One plain `docker run`: the CLI's wall time until the container started.
fn docker_run(i: usize) -> Duration {
    let name = format!("berth-bench-launch-{}-{i}", std::process::id());
    let t0 = Instant::now();
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, IMAGE, "sleep", "1"])
        .output()
        .expect("docker run");
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    took
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    // Nearest rank.
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench` (and filters); this binary has nothing to filter.
    if let Err(why) = docker_ok() {
        println!("SKIPPED launch latency: {why}");
        return;
    }
    let samples: usize = std::env::var("BERTH_LAUNCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
        .max(1);
    let warmup = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (net, none, plain, accepted) = rt.block_on(async {
        let mut per_job = Subject::new("lat", NetworkMode::PerJob).await;
        let mut no_net = Subject::new("latnone", NetworkMode::None).await;
        let (mut net, mut none, mut plain, mut accepted) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..warmup + samples {
            let (r, a) = per_job.launch(i).await;
            let (r2, _) = no_net.launch(i).await;
            // The CLI blocks this thread only: the agents and streams run on the workers.
            let d = docker_run(i);
            if i >= warmup {
                net.push(r);
                accepted.push(a);
                none.push(r2);
                plain.push(d);
            }
        }
        per_job.cluster.cleanup().await;
        no_net.cluster.cleanup().await;
        (net, none, plain, accepted)
    });
    let (p50, p99) = (pct(&plain, 50.0), pct(&plain, 99.0));
    println!();
    println!("launch latency, {samples} launches each (after {warmup} warm-up rounds), image {IMAGE}, `sleep 1`");
    println!();
    println!("| path | p50 ms | p99 ms | p50 ratio to docker run | p99 ratio |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        (
            "berth: POST /v1/jobs → task started (per-job network)",
            &net,
        ),
        ("berth: POST /v1/jobs → task started (network none)", &none),
    ] {
        let (a, b) = (pct(v, 50.0), pct(v, 99.0));
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {:.2} |",
            ms(a),
            ms(b),
            ms(a) / ms(p50),
            ms(b) / ms(p99)
        );
    }
    println!(
        "| docker run -d (CLI) | {:.1} | {:.1} | 1.00 | 1.00 |",
        ms(p50),
        ms(p99)
    );
    println!(
        "| of which berth's POST /v1/jobs accepted (persisted) | {:.1} | {:.1} | | |",
        ms(pct(&accepted, 50.0)),
        ms(pct(&accepted, 99.0))
    );
}
