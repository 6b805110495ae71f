//! End-to-end tests against the real Docker engine: jobs submitted through the API run as
//! containers on agents on loopback. They fail (never skip) when the engine is unreachable.

mod common;

use berth_runtime::agent;
use bollard::exec::{CreateExecOptions, StartExecResults};
use common::*;
use futures_util::StreamExt;
use std::collections::BTreeSet;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolation_is_visible_from_inside_the_container() {
    let c = cluster("isolation", &[small("zone-a")]).await;
    let script = "\
        echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); \
        echo period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); \
        echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares); \
        echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
        echo memsw=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || echo unsupported); \
        echo pids=$(cat /sys/fs/cgroup/pids/pids.max); \
        echo uid=$(id -u); \
        if touch /rootfile 2>/dev/null; then echo root=writable; else echo root=readonly; fi; \
        if dd if=/dev/zero of=/tmp/fill bs=1048576 count=16 2>/dev/null; then echo tmp=uncapped; else echo tmp=capped; fi; \
        echo capeff=$(grep CapEff /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
        echo nnp=$(grep NoNewPrivs /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
        echo nofile=$(ulimit -n); \
        if wget -q -T 2 -O /dev/null http://169.254.169.254/ 2>/dev/null; then echo metadata=reached; else echo metadata=unreachable; fi";
    let mut spec = batch("iso", 1, 500, 64, script);
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
    assert_eq!(get("quota"), "50000", "500 milli-CPU = 50 ms per 100 ms");
    assert_eq!(get("period"), "100000");
    assert_eq!(get("shares"), "512");
    assert_eq!(get("mem"), (64u64 << 20).to_string());
    let memsw = get("memsw");
    assert!(
        memsw == (64u64 << 20).to_string() || memsw == "unsupported",
        "no swap: {memsw}"
    );
    assert_eq!(get("pids"), "256");
    assert_eq!(get("uid"), "65534");
    assert_eq!(get("root"), "readonly");
    assert_eq!(get("tmp"), "capped", "16 MiB into an 8 MiB /tmp");
    assert_eq!(get("capeff"), "0000000000000000");
    assert_eq!(get("nnp"), "1");
    assert_eq!(get("nofile"), "1024");
    assert_eq!(get("metadata"), "unreachable");
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
