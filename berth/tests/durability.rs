//! Durability of the control plane: `kill -9` of `berth serve` in the middle of a stream of
//! submissions loses no acknowledged job, and after a restart on the same data dir every one of
//! them runs to completion on an agent (the real Docker engine: the test fails without it).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_berth");
const IMAGE: &str = "local/berth-test:1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn serve(port: u16, data: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .args([
            "--user-token",
            "u",
            "--agent-token",
            "a",
            "--heartbeat-timeout-ms",
            "5000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth serve starts")
}

fn wait_healthy(http: &reqwest::blocking::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http
            .get(format!("{url}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("berth serve did not become healthy at {url}");
}

/// A fresh server on a free port with its own data dir, healthy (the test image must exist).
struct Plane {
    data: tempfile::TempDir,
    port: u16,
    url: String,
    http: reqwest::blocking::Client,
    server: Child,
}

impl Plane {
    fn start() -> Plane {
        let status = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output();
        assert!(
            status.is_ok_and(|o| o.status.success()),
            "this test needs the Docker engine and {IMAGE}: run scripts/test-image"
        );
        let data = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let server = serve(port, data.path());
        wait_healthy(&http, &url);
        Plane {
            data,
            port,
            url,
            http,
            server,
        }
    }
}

fn jobs(http: &reqwest::blocking::Client, url: &str) -> Vec<serde_json::Value> {
    http.get(format!("{url}/v1/jobs"))
        .bearer_auth("u")
        .send()
        .expect("list jobs")
        .json()
        .expect("jobs JSON")
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_job_and_all_converge() {
    let Plane {
        data,
        port,
        url,
        http,
        mut server,
    } = Plane::start();

    // A stream of submissions from another thread; record what was acknowledged.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (acked, stop, url, http) = (acked.clone(), stop.clone(), url.clone(), http.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let spec = serde_json::json!({
                    "name": format!("d{i}"),
                    "batch": {"size": 1},
                    "task": {"cpu_milli": 100, "mem_mib": 16},
                    "container": {"image": IMAGE, "command": ["true"]}
                });
                let r = http
                    .post(format!("{url}/v1/jobs"))
                    .bearer_auth("u")
                    .json(&spec)
                    .send();
                if let Ok(r) = r {
                    if r.status().is_success() {
                        let v: serde_json::Value = r.json().expect("submit answer");
                        acked
                            .lock()
                            .expect("lock")
                            .push(v["id"].as_u64().expect("id"));
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 25 {
        assert!(Instant::now() < deadline, "submissions too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill().expect("kill -9"); // SIGKILL
    let _ = server.wait();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    submitter.join().expect("submitter");
    let acked: Vec<u64> = acked.lock().expect("lock").clone();

    // Restart on the same data dir: every acknowledged job is there.
    let mut server = serve(port, data.path());
    wait_healthy(&http, &url);
    let listed: Vec<u64> = jobs(&http, &url)
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .collect();
    for id in &acked {
        assert!(
            listed.contains(id),
            "acknowledged job {id} lost; listed {listed:?}"
        );
    }

    // Converges: an agent comes and every acknowledged job completes.
    let name = format!("dur{}", std::process::id());
    let mut agent = Command::new(BIN)
        .args(["agent", "--server", &url, "--token", "a", "--name", &name])
        .args([
            "--cpu-milli",
            "4000",
            "--mem-mib",
            "2048",
            "--network-prefix",
            &name,
        ])
        .arg("--data")
        .arg(data.path().join("agent"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth agent starts");
    let deadline = Instant::now() + Duration::from_secs(180);
    let result = loop {
        let all = jobs(&http, &url);
        let done = acked.iter().all(|id| {
            all.iter()
                .any(|j| j["id"].as_u64() == Some(*id) && j["state"] == "completed")
        });
        if done {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(format!("not all acknowledged jobs completed: {all:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = agent.kill();
    let _ = server.kill();
    let _ = agent.wait();
    let _ = server.wait();
    let leftovers = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.agent={name}"),
        ])
        .output()
        .expect("docker ps");
    for id in String::from_utf8_lossy(&leftovers.stdout).split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    let nets = Command::new("docker")
        .args(["network", "ls", "--format", "{{.ID}} {{.Name}}"])
        .output()
        .expect("docker network ls");
    for line in String::from_utf8_lossy(&nets.stdout).lines() {
        if let Some((id, net)) = line.split_once(' ') {
            if net.starts_with(&format!("{name}-job-")) {
                let _ = Command::new("docker").args(["network", "rm", id]).output();
            }
        }
    }
    result.expect("convergence");
}

/// Container ids of the agent's containers (all states).
fn agent_containers(agent: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=berth.agent={agent}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn tasks_of(http: &reqwest::blocking::Client, url: &str, job: u64) -> Vec<serde_json::Value> {
    http.get(format!("{url}/v1/tasks?job={job}"))
        .bearer_auth("u")
        .send()
        .and_then(|r| r.json())
        .unwrap_or_default()
}

/// `kill -9` of the server while an agent runs the job's tasks: after the restart the agent
/// re-registers with the containers it has, the controller adopts them (no container is created
/// twice, no task relaunched), and the job completes with the exits that happened meanwhile.
#[test]
fn kill_9_while_an_agent_runs_tasks_duplicates_no_container_and_the_job_converges() {
    let Plane {
        data,
        port,
        url,
        http,
        mut server,
    } = Plane::start();
    let name = format!("rs{}", std::process::id());
    let mut agent = Command::new(BIN)
        .args(["agent", "--server", &url, "--token", "a", "--name", &name])
        .args([
            "--cpu-milli",
            "2000",
            "--mem-mib",
            "1024",
            "--network-prefix",
            &name,
        ])
        .arg("--data")
        .arg(data.path().join("agent"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth agent starts");

    let result = (|| -> Result<(), String> {
        let spec = serde_json::json!({
            "name": "spans-a-restart",
            "batch": {"size": 2},
            "task": {"cpu_milli": 100, "mem_mib": 16},
            "container": {"image": IMAGE, "command": ["sh", "-c", "sleep 8; echo done"]}
        });
        let r: serde_json::Value = http
            .post(format!("{url}/v1/jobs"))
            .bearer_auth("u")
            .json(&spec)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| format!("submit: {e}"))?;
        let job = r["id"].as_u64().ok_or(format!("no id: {r}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while tasks_of(&http, &url, job)
            .iter()
            .filter(|t| t["state"] == "started")
            .count()
            < 2
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "tasks never started: {:?}",
                    tasks_of(&http, &url, job)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let before: std::collections::BTreeSet<String> =
            agent_containers(&name).into_iter().collect();
        if before.len() != 2 {
            return Err(format!("expected 2 containers, saw {before:?}"));
        }

        server.kill().map_err(|e| format!("kill -9: {e}"))?; // SIGKILL
        let _ = server.wait();
        std::thread::sleep(Duration::from_millis(500));
        server = serve(port, data.path());
        wait_healthy(&http, &url);

        // Until the job is done, every container the agent has is one of the two from before.
        let mut seen = before.clone();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            seen.extend(agent_containers(&name));
            let j: serde_json::Value = http
                .get(format!("{url}/v1/jobs/{job}"))
                .bearer_auth("u")
                .send()
                .and_then(|r| r.json())
                .unwrap_or_default();
            if j["state"] == "completed" {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the job did not converge: {j}; tasks {:?}",
                    tasks_of(&http, &url, job)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if seen != before {
            return Err(format!(
                "a container was created again: before {before:?}, seen {seen:?}"
            ));
        }
        let tasks = tasks_of(&http, &url, job);
        let ok = tasks.len() == 2
            && tasks.iter().all(|t| {
                t["attempt"] == 0
                    && t["state"] == "finished"
                    && t["reason"] == "normal"
                    && t["exit_code"] == 0
            });
        if !ok {
            return Err(format!("no relaunch, both finished normally: {tasks:?}"));
        }
        Ok(())
    })();

    let _ = agent.kill();
    let _ = server.kill();
    let _ = agent.wait();
    let _ = server.wait();
    for id in agent_containers(&name) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
    let nets = Command::new("docker")
        .args(["network", "ls", "--format", "{{.ID}} {{.Name}}"])
        .output()
        .expect("docker network ls");
    for line in String::from_utf8_lossy(&nets.stdout).lines() {
        if let Some((id, net)) = line.split_once(' ') {
            if net.starts_with(&format!("{name}-job-")) {
                let _ = Command::new("docker").args(["network", "rm", id]).output();
            }
        }
    }
    result.expect("restart while running");
}
