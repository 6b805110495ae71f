//! End-to-end tests against the real Docker engine: jobs submitted through the API run as
//! containers on agents on loopback. They fail (never skip) when the engine is unreachable.

mod common;

use berth_runtime::agent::{self, GpuOverride};
use berth_runtime::client::ClientError;
use berth_solver::{GpuModel, NodeGpus, TaskId};
use bollard::exec::{CreateExecOptions, StartExecResults};
use common::*;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn small(zone: &'static str) -> AgentSpec {
    AgentSpec {
        zone,
        cpu_milli: 2_000,
        mem_mib: 1_024,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_job_runs_across_two_agents_in_two_zones() {
    let c = cluster("batch", &[small("zone-a"), small("zone-b")]).await;
    let mut spec = batch("fan-out", 4, 500, 32, "echo out-of-$(hostname); sleep 1");
    spec["constraints"] = serde_json::json!({"hard": [{"kind": "zone_balance", "max_skew": 1}]});
    let job = c.submit(spec).await;
    c.wait_job_state(job, "completed", 90).await;
    let tasks = c.tasks(job).await;
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.state == "finished"
        && t.reason.as_deref() == Some("normal")
        && t.exit_code == Some(0)));
    let nodes: BTreeSet<u32> = tasks.iter().filter_map(|t| t.node).collect();
    assert_eq!(
        nodes.len(),
        2,
        "zone balance spreads over both agents: {tasks:?}"
    );
    let log = c
        .client
        .get_text(&format!("/v1/tasks/{}/logs", tasks[0].id.0))
        .await
        .expect("logs");
    assert!(log.contains("out-of-"), "log: {log:?}");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_task_is_retried_per_policy() {
    let c = cluster("retry", &[small("zone-a")]).await;
    let mut spec = batch("fails", 1, 100, 16, "echo trying; exit 3");
    spec["batch"]["retry"] = serde_json::json!({"kind": "immediate", "max_retries": 2});
    let job = c.submit(spec).await;
    c.wait_job_state(job, "failed", 60).await;
    let tasks = c.tasks(job).await;
    let attempts: Vec<u32> = tasks.iter().map(|t| t.attempt).collect();
    assert_eq!(attempts, vec![0, 1, 2], "{tasks:?}");
    assert!(
        tasks
            .iter()
            .all(|t| t.reason.as_deref() == Some("failed") && t.exit_code == Some(3)),
        "{tasks:?}"
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_survives_a_killed_container_and_scales_up_and_down_then_dies() {
    let c = cluster("service", &[small("zone-a")]).await;
    let job = c.submit(service("web", 2, "sleep 600")).await;
    let started = c.wait_started(job, 2, 60).await;
    // Kill one container by hand, behind Berth's back.
    let victim = started[0].id;
    let name = berth_runtime::docker::container_name(c.agent_name(0), victim);
    c.docker
        .kill_container::<String>(&name, None)
        .await
        .expect("docker kill");
    let after = wait_for(60, "a replacement", || async {
        let t = c.tasks(job).await;
        let running: Vec<_> = t.iter().filter(|t| t.state == "started").cloned().collect();
        (running.len() == 2 && running.iter().all(|t| t.id != victim)).then_some(t)
    })
    .await;
    let dead = after.iter().find(|t| t.id == victim).expect("victim row");
    assert_eq!(dead.state, "finished");
    assert_eq!(dead.reason.as_deref(), Some("failed"));
    assert_eq!(dead.exit_code, Some(137));

    // Scale up to 3, then down to 1.
    let scale = |d: u32| serde_json::json!({"min": 0, "desired": d, "max": 10});
    c.client
        .post_empty(&format!("/v1/jobs/{job}/scale"), &scale(3))
        .await
        .expect("scale up");
    c.wait_started(job, 3, 60).await;
    c.client
        .post_empty(&format!("/v1/jobs/{job}/scale"), &scale(1))
        .await
        .expect("scale down");
    c.wait_started(job, 1, 60).await;
    let scaled_down = wait_for(30, "two scaled_down tasks", || async {
        let n = c
            .tasks(job)
            .await
            .iter()
            .filter(|t| t.reason.as_deref() == Some("scaled_down"))
            .count();
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(scaled_down, 2);

    // Scale of a batch-only field is refused with the error format.
    let bad = c
        .client
        .post_empty(
            &format!("/v1/jobs/{job}/scale"),
            &serde_json::json!({"min": 5, "desired": 1, "max": 2}),
        )
        .await
        .expect_err("min > desired");
    assert!(bad.to_string().contains("422"), "{bad}");

    c.client
        .post_empty(&format!("/v1/jobs/{job}/kill"), &serde_json::json!({}))
        .await
        .expect("kill");
    c.wait_job_state(job, "killed", 60).await;
    wait_for(30, "containers removed", || async {
        c.containers(0).await.is_empty().then_some(())
    })
    .await;
    c.cleanup().await;
}

/// The host's cgroup version: `stat -fc %T /sys/fs/cgroup` says `cgroup2fs` on a unified (v2)
/// host, `tmpfs` on a v1 one.
fn host_cgroup_v2() -> bool {
    let out = std::process::Command::new("stat")
        .args(["-fc", "%T", "/sys/fs/cgroup"])
        .output()
        .expect("stat runs");
    String::from_utf8_lossy(&out.stdout).trim() == "cgroup2fs"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolation_is_visible_from_inside_the_container() {
    let c = cluster("isolation", &[small("zone-a")]).await;
    let v2 = host_cgroup_v2();
    let cgroup = if v2 {
        "echo cpumax=$(cat /sys/fs/cgroup/cpu.max); \
         echo weight=$(cat /sys/fs/cgroup/cpu.weight); \
         echo mem=$(cat /sys/fs/cgroup/memory.max); \
         echo swap=$(cat /sys/fs/cgroup/memory.swap.max 2>/dev/null || echo absent); \
         echo pids=$(cat /sys/fs/cgroup/pids.max); "
    } else {
        "echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); \
         echo period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); \
         echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares); \
         echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
         echo memsw=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || echo absent); \
         echo pids=$(cat /sys/fs/cgroup/pids/pids.max); "
    };
    let script = format!(
        "{cgroup}\
        echo uid=$(id -u); \
        if touch /rootfile 2>/dev/null; then echo root=writable; else echo root=readonly; fi; \
        if dd if=/dev/zero of=/tmp/fill bs=1048576 count=16 2>/dev/null; then echo tmp=uncapped; else echo tmp=capped; fi; \
        echo capeff=$(grep CapEff /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
        echo nnp=$(grep NoNewPrivs /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
        echo seccomp=$(grep '^Seccomp:' /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
        echo nofile=$(ulimit -n)"
    );
    let mut spec = batch("iso", 1, 500, 64, &script);
    spec["task"]["disk_mib"] = serde_json::json!(8);
    let job = c.submit(spec).await;
    c.wait_job_state(job, "completed", 60).await;
    let task = c.tasks(job).await[0].id;
    let log = c
        .client
        .get_text(&format!("/v1/tasks/{}/logs", task.0))
        .await
        .expect("logs");
    let get = |k: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing from the log: {log}"))
            .trim()
            .to_string()
    };
    let mem = (64u64 << 20).to_string();
    if v2 {
        assert_eq!(
            get("cpumax"),
            "50000 100000",
            "500 milli-CPU = 50 ms per 100 ms"
        );
        // runc maps cpu.shares 512 to cpu.weight 1 + (512 - 2) * 9999 / 262142.
        assert_eq!(get("weight"), (1 + (512 - 2) * 9999 / 262_142).to_string());
        assert_eq!(get("mem"), mem);
        match get("swap").as_str() {
            "absent" => println!(
                "NOTE: this kernel has no swap accounting (memory.swap.max is absent): \
                 that the task cannot swap is not checked here"
            ),
            swap => assert_eq!(swap, "0", "no swap"),
        }
    } else {
        assert_eq!(get("quota"), "50000", "500 milli-CPU = 50 ms per 100 ms");
        assert_eq!(get("period"), "100000");
        assert_eq!(get("shares"), "512");
        assert_eq!(get("mem"), mem);
        match get("memsw").as_str() {
            "absent" => println!(
                "NOTE: this kernel has no swap accounting (memory.memsw.limit_in_bytes is \
                 absent): that the task cannot swap is not checked here"
            ),
            memsw => assert_eq!(memsw, mem, "memory + swap = memory: no swap"),
        }
    }
    assert_eq!(get("pids"), "256");
    assert_eq!(get("uid"), "65534");
    assert_eq!(get("root"), "readonly");
    assert_eq!(get("tmp"), "capped", "16 MiB into an 8 MiB /tmp");
    assert_eq!(get("capeff"), "0000000000000000");
    assert_eq!(get("nnp"), "1");
    assert_eq!(
        get("seccomp"),
        "2",
        "the default seccomp profile filters system calls"
    );
    assert_eq!(get("nofile"), "1024");
    c.cleanup().await;
}

/// An address added on the host for the test's duration (a dummy interface, or an empty
/// bridge where the kernel has no dummy driver); removed on drop.
struct HostAddress {
    link: String,
}

impl HostAddress {
    fn add(ip: &str) -> Result<HostAddress, String> {
        let link = format!("bmd{}", std::process::id() % 100_000);
        let ip_cmd = |args: &[&str]| {
            let o = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        ip_cmd(&["link", "add", &link, "type", "dummy"])
            .or_else(|_| ip_cmd(&["link", "add", &link, "type", "bridge"]))?;
        let h = HostAddress { link };
        ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", &h.link])?;
        ip_cmd(&["link", "set", &h.link, "up"])?;
        Ok(h)
    }
}

impl Drop for HostAddress {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}

/// A listener on every host address, 169.254.169.254 included (added on the host for the test
/// where it may be): a plain container reaches it through the metadata address and the host's
/// bridge address; a Berth task reaches it through neither, nor through its own network's
/// gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_task_reaches_the_host_or_the_metadata_address_that_a_plain_container_reaches() {
    use tokio::io::AsyncWriteExt;
    let c = cluster("hostnet", &[small("zone-a")]).await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"reached-host\n").await;
        }
    });
    let metadata = match HostAddress::add("169.254.169.254") {
        Ok(h) => Some(h),
        Err(e) => {
            println!(
                "NOTE: cannot add 169.254.169.254 on this host ({e}); checking the host's \
                 bridge address only"
            );
            None
        }
    };
    let probe = |t: &str| format!("echo {t}=$(nc -w 2 {t} {port} </dev/null || echo blocked); ");
    let route = "gw=$(ip route | awk '/^default/ {print $3}'); echo gw=$gw; ";

    // Without Berth's isolation (the default bridge network), the host's bridge address and
    // the metadata address reach the listener.
    let mut targets: Vec<String> = Vec::new();
    if metadata.is_some() {
        targets.push("169.254.169.254".to_string());
    }
    let probes: String = targets.iter().map(|t| probe(t)).collect();
    let script =
        format!("{route}{probes}echo gateway=$(nc -w 2 $gw {port} </dev/null || echo blocked)");
    let plain = tokio::process::Command::new("docker")
        .args(["run", "--rm", IMAGE, "sh", "-c", &script])
        .output()
        .await
        .expect("docker run");
    let plain = String::from_utf8_lossy(&plain.stdout).to_string();
    let gateway = plain
        .lines()
        .find_map(|l| l.strip_prefix("gw="))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| panic!("the plain container's gateway: {plain:?}"))
        .to_string();
    for t in targets.iter().map(String::as_str).chain(["gateway"]) {
        assert!(
            plain.contains(&format!("{t}=reached-host")),
            "the control container must reach the listener through {t}, or this test proves \
             nothing: {plain:?}"
        );
    }
    targets.push(gateway);
    let probes: String = targets.iter().map(|t| probe(t)).collect();

    // A Berth task reaches none of them, nor its own network's gateway.
    let script = format!(
        "{probes}{route}echo jobgw=$(nc -w 2 ${{gw:-0.0.0.1}} {port} </dev/null || echo blocked)"
    );
    let job = c.submit(batch("probe", 1, 100, 16, &script)).await;
    c.wait_job_state(job, "completed", 60).await;
    let task = c.tasks(job).await[0].id;
    let log = c
        .client
        .get_text(&format!("/v1/tasks/{}/logs", task.0))
        .await
        .expect("logs");
    for t in targets.iter().map(String::as_str).chain(["jobgw"]) {
        assert!(
            log.contains(&format!("{t}=blocked")),
            "a task must not reach the host through {t}: {log:?}"
        );
    }
    assert!(!log.contains("reached-host"), "{log:?}");
    drop(metadata);
    server.abort();
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_memory_is_reported_as_oom_killed() {
    let c = cluster("oom", &[small("zone-a")]).await;
    let spec = batch(
        "hog",
        1,
        100,
        16,
        "x=$(head -c 67108864 /dev/zero | tr '\\000' a); echo survived",
    );
    let job = c.submit(spec).await;
    c.wait_job_state(job, "failed", 60).await;
    let t = &c.tasks(job).await[0];
    assert_eq!(t.reason.as_deref(), Some("oom_killed"), "{t:?}");
    assert_eq!(t.exit_code, Some(137));
    c.cleanup().await;
}

async fn exec(docker: &bollard::Docker, container: &str, cmd: &str) -> String {
    let e = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["sh".to_string(), "-c".to_string(), cmd.to_string()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&e.id, None).await.expect("start exec")
    {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_reaches_its_own_tasks_but_not_another_jobs() {
    let c = cluster("network", &[small("zone-a")]).await;
    let server = "while true; do echo pong | nc -l -p 8080; done";
    let a = c.submit(service("a", 2, server)).await;
    let b = c.submit(service("b", 1, "sleep 600")).await;
    let a_tasks = c.wait_started(a, 2, 60).await;
    let b_tasks = c.wait_started(b, 1, 60).await;
    let name = |t: berth_solver::TaskId| berth_runtime::docker::container_name(c.agent_name(0), t);
    let target = c
        .docker
        .inspect_container(&name(a_tasks[0].id), None)
        .await
        .expect("inspect");
    let ip = target
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.into_values().next())
        .and_then(|e| e.ip_address)
        .expect("the task has an address on its job network");
    let probe = format!("nc -w 2 {ip} 8080 </dev/null && echo REACHED || echo BLOCKED");
    let same_job = exec(&c.docker, &name(a_tasks[1].id), &probe).await;
    assert!(
        same_job.contains("pong"),
        "a task reaches its sibling: {same_job:?}"
    );
    let other_job = exec(&c.docker, &name(b_tasks[0].id), &probe).await;
    assert!(
        other_job.contains("BLOCKED") && !other_job.contains("pong"),
        "another job's task must not reach it: {other_job:?}"
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_adopts_its_containers() {
    let mut c = cluster("adopt", &[small("zone-a")]).await;
    let job = c.submit(service("keep", 2, "sleep 600")).await;
    let before = c.wait_started(job, 2, 60).await;
    let ids_before: BTreeSet<String> = c
        .containers(0)
        .await
        .into_iter()
        .filter_map(|x| x.id)
        .collect();
    assert_eq!(ids_before.len(), 2);

    // Stop the agent (its containers keep running) and start it again under the same name.
    c.agents[0].take().expect("agent").stop();
    let again = agent::start(c.agent_configs[0].clone())
        .await
        .expect("agent restarts");
    c.agents[0] = Some(again);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    c.wait_metric("berth_agents_connected", 1, 30).await;

    let ids_after: BTreeSet<String> = c
        .containers(0)
        .await
        .into_iter()
        .filter_map(|x| x.id)
        .collect();
    assert_eq!(ids_before, ids_after, "no container duplicated or replaced");
    let after = c.wait_started(job, 2, 10).await;
    let t0: BTreeSet<_> = before.iter().map(|t| t.id).collect();
    let t1: BTreeSet<_> = after.iter().map(|t| t.id).collect();
    assert_eq!(t0, t1, "the same tasks are still running");
    assert_eq!(c.tasks(job).await.len(), 2, "no task was relaunched");

    // And the adopted containers are still controlled: killing the job stops them.
    c.client
        .post_empty(&format!("/v1/jobs/{job}/kill"), &serde_json::json!({}))
        .await
        .expect("kill");
    c.wait_job_state(job, "killed", 60).await;
    c.cleanup().await;
}

/// The events read from a server-sent event stream until `done` holds for them (or `secs`
/// pass): `(event name, data as JSON)`.
async fn read_events(
    resp: &mut reqwest::Response,
    secs: u64,
    done: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = String::new();
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(other) => panic!("the event stream ended: {other:?}; saw {events:?}"),
            Err(_) => panic!("timed out after {secs} s reading events; saw {events:?}"),
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                let body = serde_json::from_str(&data).expect("event data is JSON");
                events.push((name, body));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_stream_shows_a_job_and_its_tasks_changing() {
    let c = cluster("events", &[small("zone-a")]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", c.url());
    let anon = http.get(&url).send().await.expect("events");
    assert_eq!(
        anon.status().as_u16(),
        401,
        "the stream needs the user token"
    );
    let mut stream = http
        .get(&url)
        .bearer_auth(USER_TOKEN)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(stream.status().as_u16(), 200);
    let ctype = stream.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert_eq!(ctype, "text/event-stream");

    let job = c.submit(batch("watched", 1, 100, 16, "echo hi")).await;
    let events = read_events(&mut stream, 60, |evs| {
        evs.iter().any(|(k, b)| {
            k == "job" && b["body"]["job"] == job && b["body"]["state"] == "completed"
        })
    })
    .await;
    for (kind, body) in &events {
        assert_eq!(
            &body["kind"], kind,
            "the event name is the record's kind: {body}"
        );
    }
    let task_states: Vec<&str> = events
        .iter()
        .filter(|(k, b)| k == "task" && b["body"]["job"] == job)
        .filter_map(|(_, b)| b["body"]["state"].as_str())
        .collect();
    let at = |s: &str| {
        task_states
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("no task event {s}: {task_states:?}"))
    };
    assert!(
        at("accepted") < at("launched")
            && at("launched") < at("started")
            && at("started") < at("finished"),
        "task events in lifecycle order: {task_states:?}"
    );
    let finished = events
        .iter()
        .find(|(k, b)| k == "task" && b["body"]["state"] == "finished")
        .expect("finished event");
    assert_eq!(finished.1["body"]["reason"], "normal", "{:?}", finished.1);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_task_replaces_a_service_instance_and_ends_a_batch_task_killed() {
    let c = cluster("killtask", &[small("zone-a")]).await;
    let svc = c.submit(service("svc", 2, "sleep 600")).await;
    let bat = c.submit(batch("bat", 1, 100, 16, "sleep 600")).await;
    let started = c.wait_started(svc, 2, 60).await;
    let batch_task = c.wait_started(bat, 1, 60).await[0].clone();

    // A service instance: killed, and replaced in its slot by the next attempt.
    let victim = started[0].clone();
    c.client
        .post_empty(
            &format!("/v1/tasks/{}/kill", victim.id.0),
            &serde_json::json!({}),
        )
        .await
        .expect("kill the service task");
    let dead = c.wait_finished(victim.id, 30).await;
    assert_eq!(dead.reason.as_deref(), Some("killed"), "{dead:?}");
    let replacement = wait_for(60, "a replacement", || async {
        let t = c.tasks(svc).await;
        let running: Vec<_> = t.iter().filter(|t| t.state == "started").cloned().collect();
        (running.len() == 2 && running.iter().all(|t| t.id != victim.id))
            .then(|| running.into_iter().find(|t| t.slot == victim.slot))
            .flatten()
    })
    .await;
    assert_eq!(replacement.attempt, victim.attempt + 1, "{replacement:?}");
    let name = c.container_name(0, victim.id);
    wait_for(30, "the killed container removed", || async {
        c.docker
            .inspect_container(&name, None)
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // A batch task: killed for good, no retry, and its job ends.
    c.client
        .post_empty(
            &format!("/v1/tasks/task-{}/kill", batch_task.id.0),
            &serde_json::json!({}),
        )
        .await
        .expect("kill the batch task");
    let dead = c.wait_finished(batch_task.id, 30).await;
    assert_eq!(dead.reason.as_deref(), Some("killed"), "{dead:?}");
    c.wait_job_state(bat, "failed", 30).await;
    assert_eq!(
        c.tasks(bat).await.len(),
        1,
        "a killed batch task is not retried"
    );

    // A task that is not live: 404 in the error format.
    match c
        .client
        .post_empty("/v1/tasks/999999/kill", &serde_json::json!({}))
        .await
    {
        Err(ClientError::Api { status, error }) => {
            assert_eq!((status, error.code.as_str()), (404, "not_found"))
        }
        other => panic!("expected 404, got {other:?}"),
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_agents_tasks_are_replaced_elsewhere_and_its_orphans_removed_when_it_returns() {
    let mut c = cluster("lost", &[small("zone-a")]).await;
    let svc = c.submit(service("svc", 2, "sleep 600")).await;
    let bat = c.submit(batch("bat", 1, 100, 16, "sleep 600")).await;
    let mut before = c.wait_started(svc, 2, 60).await;
    before.extend(c.wait_started(bat, 1, 60).await);
    let node_a = before[0].node;
    c.add_agent(&small("zone-b")).await;
    c.wait_metric("berth_agents_connected", 2, 30).await;

    // Agent A's loops stop without deregistering: no heartbeats; its containers keep running.
    c.agents[0].take().expect("agent").stop();
    let stopped = Instant::now();
    for t in &before {
        let row = c.wait_finished(t.id, 30).await;
        assert_eq!(row.reason.as_deref(), Some("lost"), "{row:?}");
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "declared lost only after the heartbeat timeout (3 s): {:?}",
        stopped.elapsed()
    );
    c.wait_metric("berth_agents_connected", 1, 10).await;

    // The controller's policy: service instances replaced, the batch task retried (a lost
    // node is not the task's fault), all on agent B.
    let svc_now = wait_for(60, "service replacements", || async {
        let t: Vec<_> = c
            .tasks(svc)
            .await
            .into_iter()
            .filter(|t| t.state == "started")
            .collect();
        (t.len() == 2 && t.iter().all(|t| t.node != node_a)).then_some(t)
    })
    .await;
    assert!(svc_now.iter().all(|t| t.attempt == 1), "{svc_now:?}");
    let bat_now = wait_for(60, "the batch retry", || async {
        let t: Vec<_> = c
            .tasks(bat)
            .await
            .into_iter()
            .filter(|t| t.state == "started")
            .collect();
        (t.len() == 1 && t[0].node != node_a).then(|| t[0].clone())
    })
    .await;
    assert_eq!((bat_now.slot, bat_now.attempt), (0, 1), "{bat_now:?}");
    assert_eq!(
        c.containers(1).await.len(),
        3,
        "the three tasks run on agent B"
    );

    // Agent A's containers still run, unknown to the controller. When it comes back it
    // registers as a new node with them, and the controller has them killed.
    assert_eq!(
        c.containers(0).await.len(),
        3,
        "orphans until agent A returns"
    );
    let again = agent::start(c.agent_configs[0].clone())
        .await
        .expect("agent A restarts");
    c.agents[0] = Some(again);
    wait_for(60, "agent A's orphans removed", || async {
        c.containers(0).await.is_empty().then_some(())
    })
    .await;
    c.wait_started(svc, 2, 10).await;
    assert_eq!(c.containers(1).await.len(), 3, "agent B's tasks untouched");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_past_its_runtime_limit_is_killed_with_that_reason() {
    let c = cluster("runtime", &[small("zone-a")]).await;
    let mut spec = batch("slow", 1, 100, 16, "sleep 60");
    spec["batch"]["runtime_limit_ms"] = serde_json::json!(2_000);
    let submitted = Instant::now();
    let job = c.submit(spec).await;
    let task = c.wait_started(job, 1, 60).await[0].id;
    let row = c.wait_finished(task, 40).await;
    assert_eq!(
        row.reason.as_deref(),
        Some("runtime_limit_exceeded"),
        "{row:?}"
    );
    assert!(
        submitted.elapsed() < Duration::from_secs(40),
        "killed at its 2 s limit, not at the end of its 60 s sleep: {:?}",
        submitted.elapsed()
    );
    c.wait_job_state(job, "failed", 30).await;
    let name = c.container_name(0, task);
    wait_for(30, "the container removed", || async {
        c.docker
            .inspect_container(&name, None)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_sends_sigterm_first_then_sigkill_after_the_grace_period() {
    let mut control = control_config();
    control.controller.kill_grace_ms = 3_000;
    let c = cluster_with("grace", &[small("zone-a")], control, |_, _| {}).await;
    // PID 1 traps SIGTERM, says so, and carries on: only SIGKILL ends it.
    let script = "trap 'echo got-sigterm' TERM; echo ready; while true; do sleep 1; done";
    let job = c.submit(batch("stubborn", 1, 100, 16, script)).await;
    let task = c.wait_started(job, 1, 60).await[0].id;
    let logs = format!("/v1/tasks/{}/logs", task.0);
    wait_for(30, "the task ready", || async {
        let log = c.client.get_text(&logs).await.ok()?;
        log.contains("ready").then_some(())
    })
    .await;
    let killed = Instant::now();
    c.client
        .post_empty(
            &format!("/v1/tasks/{}/kill", task.0),
            &serde_json::json!({}),
        )
        .await
        .expect("kill");
    let row = c.wait_finished(task, 30).await;
    let took = killed.elapsed();
    let log = c.client.get_text(&logs).await.expect("logs");
    assert!(log.contains("got-sigterm"), "SIGTERM comes first: {log:?}");
    assert!(
        took >= Duration::from_millis(2_900),
        "SIGKILL only after the 3 s grace: ended after {took:?}"
    );
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert_eq!(row.exit_code, Some(137), "ended by SIGKILL: {row:?}");
    assert_eq!(row.reason.as_deref(), Some("killed"), "{row:?}");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_printing_past_the_log_cap_is_capped_and_unharmed() {
    let c = cluster("logcap", &[small("zone-a")]).await;
    // About 3.5 MB of numbered lines, more than three times the cap, then a last line.
    let script = "seq 1 60000 | sed 's/$/ 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef/'; \
                  echo LOG-END";
    let job = c.submit(batch("chatty", 1, 200, 64, script)).await;
    c.wait_job_state(job, "completed", 120).await;
    let t = c.tasks(job).await[0].clone();
    assert_eq!(
        (t.reason.as_deref(), t.exit_code),
        (Some("normal"), Some(0)),
        "{t:?}"
    );
    let log = c
        .client
        .get_text(&format!("/v1/tasks/{}/logs", t.id.0))
        .await
        .expect("logs");
    assert!(
        log.len() <= agent::LOG_KEEP_BYTES_MAX,
        "served {} bytes, cap {}",
        log.len(),
        agent::LOG_KEEP_BYTES_MAX
    );
    assert!(
        log.len() > agent::LOG_KEEP_BYTES_MAX / 2,
        "{} bytes",
        log.len()
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.last(), Some(&"LOG-END"), "the tail is kept");
    let numbers: Vec<u64> = lines[..lines.len() - 1]
        .iter()
        .map(|l| {
            let (n, pad) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("cut line {l:?}"));
            assert_eq!(pad.len(), 52, "a whole line: {l:?}");
            n.parse().unwrap_or_else(|_| panic!("cut line {l:?}"))
        })
        .collect();
    assert!(numbers[0] > 1, "the head is dropped");
    assert_eq!(numbers.last(), Some(&60_000));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a contiguous tail"
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gpu_tasks_get_their_exact_devices_in_the_containers_they_create() {
    let c = cluster_with("gpu", &[small("zone-a")], control_config(), |_, a| {
        a.gpus = GpuOverride {
            count: Some(2),
            model: Some("T4".into()),
        };
        a.keep_failed_containers = true;
    })
    .await;
    assert_eq!(
        c.agents[0].as_ref().expect("agent").gpus(),
        Some(&NodeGpus {
            count: 2,
            model: GpuModel::new("T4")
        })
    );
    let mut spec = batch("train", 2, 100, 16, "sleep 30");
    spec["task"]["gpu"] = serde_json::json!({"whole": 1});
    spec["task"]["gpu_models"] = serde_json::json!(["T4"]);
    let job = c.submit(spec).await;

    // Each task's container asks the engine for its own device, by id.
    let containers = wait_for(60, "two GPU task containers", || async {
        let l = c.containers(0).await;
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut device_of: BTreeMap<TaskId, String> = BTreeMap::new();
    for x in containers {
        let id = x.id.expect("container id");
        let i = c
            .docker
            .inspect_container(&id, None)
            .await
            .expect("inspect");
        let task = i
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get("berth.task")?.parse().ok())
            .map(TaskId)
            .expect("task label");
        let requests = i
            .host_config
            .and_then(|h| h.device_requests)
            .expect("DeviceRequests");
        assert_eq!(requests.len(), 1, "{requests:?}");
        let r = &requests[0];
        assert_eq!(r.driver.as_deref(), Some("nvidia"), "{r:?}");
        assert_eq!(r.capabilities, Some(vec![vec!["gpu".to_string()]]), "{r:?}");
        let ids = r.device_ids.clone().expect("device ids");
        assert_eq!(ids.len(), 1, "one whole device: {r:?}");
        device_of.insert(task, ids[0].clone());
    }
    let devices: BTreeSet<&str> = device_of.values().map(String::as_str).collect();
    assert_eq!(
        devices,
        BTreeSet::from(["0", "1"]),
        "distinct, exact devices"
    );

    // Without the NVIDIA runtime the engine refuses the start: that is the task's reason, at
    // once, not a hang. (An engine that has it runs them.)
    let tasks = wait_for(60, "GPU tasks settled", || async {
        let t = c.tasks(job).await;
        (t.len() == 2
            && t.iter()
                .all(|t| t.state == "finished" || t.state == "started"))
        .then_some(t)
    })
    .await;
    if tasks.iter().all(|t| t.state == "started") {
        println!("NOTE: this engine passes GPUs: the tasks run");
    } else {
        for t in &tasks {
            assert_eq!(t.reason.as_deref(), Some("launch_failed"), "{t:?}");
            let m = t.message.as_deref().unwrap_or("");
            let d = &device_of[&t.id];
            assert!(
                m.contains("starting the container failed")
                    && m.contains(&format!("GPU devices [{d}]"))
                    && m.contains("NVIDIA"),
                "a clear reason naming the device: {m:?}"
            );
        }
        c.wait_job_state(job, "failed", 30).await;
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_on_every_address_needs_an_advertise_url_which_the_control_plane_uses() {
    let mut c = cluster("advertise", &[]).await;
    let spec = small("zone-a");
    let mut cfg = agent_config("advertise", 0, &c.url(), &spec, c.data.path());
    cfg.listen = "0.0.0.0:0".parse().expect("addr");
    let refused = agent::start(cfg.clone()).await.err().expect("refused");
    let e = refused.to_string();
    assert!(
        e.contains("0.0.0.0") && e.contains("--advertise-url"),
        "{e}"
    );

    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    cfg.listen = format!("0.0.0.0:{port}").parse().expect("addr");
    cfg.advertise_url = Some(format!("http://127.0.0.1:{port}/"));
    let a = agent::start(cfg.clone()).await.expect("agent starts");
    assert_eq!(a.url(), format!("http://127.0.0.1:{port}"));
    c.agents.push(Some(a));
    c.agent_configs.push(cfg);
    c.wait_metric("berth_agents_connected", 1, 30).await;
    let job = c
        .submit(batch("adv", 1, 100, 16, "echo through-the-advertised-url"))
        .await;
    c.wait_job_state(job, "completed", 60).await;
    let task = c.tasks(job).await[0].id;
    let log = c
        .client
        .get_text(&format!("/v1/tasks/{}/logs", task.0))
        .await
        .expect("the control plane fetches logs from the advertised URL");
    assert!(log.contains("through-the-advertised-url"), "{log:?}");

    // Without one, a specific listen address is advertised with its real port.
    let d = agent_config("advertise", 1, &c.url(), &spec, c.data.path());
    let b = agent::start(d.clone()).await.expect("agent starts");
    let u = b.url().to_string();
    assert!(
        u.starts_with("http://127.0.0.1:") && !u.ends_with(":0"),
        "{u}"
    );
    c.agents.push(Some(b));
    c.agent_configs.push(d);
    c.cleanup().await;
}
