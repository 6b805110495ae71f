//! Shared helpers of the runtime tests: a control plane and agents on loopback, against the real
//! Docker engine and the image `scripts/test-image` builds.
#![allow(dead_code)]

use berth_runtime::agent::{self, Agent, AgentConfig};
use berth_runtime::client::Client;
use berth_runtime::control::ControlConfig;
use berth_runtime::serve::{self, Running, ServeConfig};
use berth_runtime::server::Tokens;
use berth_runtime::store::{JobRow, TaskRow};
use berth_solver::Resources;
use bollard::container::ListContainersOptions;
use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "local/berth-test:1";
pub const USER_TOKEN: &str = "user-secret";
pub const AGENT_TOKEN: &str = "agent-secret";

/// The Docker engine, or a clear failure (these tests never pass without one).
pub async fn docker() -> Docker {
    let d = agent::connect_docker().await.unwrap_or_else(|e| {
        panic!("these tests need the Docker engine and it is unreachable: {e}")
    });
    if d.inspect_image(IMAGE).await.is_err() {
        panic!("image {IMAGE} is missing: run scripts/test-image (scripts/test-all does)");
    }
    d
}

pub struct Cluster {
    pub name: String,
    pub running: Option<Running>,
    pub client: Client,
    pub agents: Vec<Option<Agent>>,
    pub agent_configs: Vec<AgentConfig>,
    pub data: tempfile::TempDir,
    pub docker: Docker,
}

/// One agent's place: zone and capacity.
pub struct AgentSpec {
    pub zone: &'static str,
    pub cpu_milli: u64,
    pub mem_mib: u64,
}

pub fn control_config() -> ControlConfig {
    let mut c = ControlConfig {
        heartbeat_timeout_ms: 3_000,
        liveness_interval_ms: 200,
        ..ControlConfig::default()
    };
    c.controller.kill_grace_ms = 1_000;
    c
}

pub async fn start_server(data: PathBuf) -> Running {
    start_server_with(data, control_config()).await
}

pub async fn start_server_with(data: PathBuf, control: ControlConfig) -> Running {
    serve::start(ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data,
        tokens: Tokens {
            user: USER_TOKEN.into(),
            agent: AGENT_TOKEN.into(),
        },
        control,
        local_agent: None,
    })
    .await
    .expect("control plane starts")
}

pub fn agent_config(
    test: &str,
    i: usize,
    server: &str,
    spec: &AgentSpec,
    data: &std::path::Path,
) -> AgentConfig {
    let name = format!("t{}-{test}-{i}", std::process::id());
    let mut c = AgentConfig::new(server, AGENT_TOKEN, &name, data.join(&name));
    c.zone = spec.zone.into();
    c.instance_type = "test".into();
    c.capacity = Resources::new(spec.cpu_milli, spec.mem_mib, 0, 0);
    c.heartbeat_ms = 300;
    c.isolation.network_prefix = format!("bt{}-{test}", std::process::id());
    c
}

/// A control plane and `agents` agents, all on loopback; waits until every agent is registered.
pub async fn cluster(test: &str, agents: &[AgentSpec]) -> Cluster {
    cluster_with(test, agents, control_config(), |_, _| {}).await
}

/// [`cluster`] with a control-plane configuration and a change to each agent's configuration.
pub async fn cluster_with(
    test: &str,
    agents: &[AgentSpec],
    control: ControlConfig,
    tweak: impl Fn(usize, &mut AgentConfig),
) -> Cluster {
    let docker = docker().await;
    let data = tempfile::tempdir().expect("tempdir");
    let running = start_server_with(data.path().join("server"), control).await;
    let url = running.url();
    let client = Client::new(&url, Some(USER_TOKEN.into()));
    let mut c = Cluster {
        name: test.into(),
        running: Some(running),
        client,
        agents: Vec::new(),
        agent_configs: Vec::new(),
        data,
        docker,
    };
    for (i, spec) in agents.iter().enumerate() {
        let mut cfg = agent_config(test, i, &url, spec, c.data.path());
        tweak(i, &mut cfg);
        c.agents
            .push(Some(agent::start(cfg.clone()).await.expect("agent starts")));
        c.agent_configs.push(cfg);
    }
    let n = agents.len() as u64;
    c.wait_metric("berth_agents_connected", n, 30).await;
    c
}

/// Polls `f` every 200 ms until it gives `Some`, or panics after `secs` with `what`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Cluster {
    pub fn url(&self) -> String {
        self.running.as_ref().expect("running").url()
    }

    pub async fn metric(&self, name: &str) -> Option<u64> {
        let text = self.client.get_text("/metrics").await.ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }

    pub async fn wait_metric(&self, name: &str, value: u64, secs: u64) {
        wait_for(secs, &format!("{name} = {value}"), || async {
            (self.metric(name).await == Some(value)).then_some(())
        })
        .await
    }

    pub async fn submit(&self, spec: serde_json::Value) -> u64 {
        let r: serde_json::Value = self.client.post("/v1/jobs", &spec).await.expect("submit");
        r["id"].as_u64().expect("job id")
    }

    pub async fn job(&self, id: u64) -> JobRow {
        self.client
            .get(&format!("/v1/jobs/{id}"))
            .await
            .expect("get job")
    }

    pub async fn tasks(&self, job: u64) -> Vec<TaskRow> {
        self.client
            .get(&format!("/v1/tasks?job={job}"))
            .await
            .expect("list tasks")
    }

    pub async fn wait_job_state(&self, id: u64, state: &str, secs: u64) -> JobRow {
        let what = format!("job {id} {state}");
        let got = wait_for(secs, &what, || async {
            let j = self.job(id).await;
            (j.state == state || j.state != "accepted").then_some(j)
        })
        .await;
        assert_eq!(
            got.state,
            state,
            "job {id}: {got:?}\ntasks: {:?}",
            self.tasks(id).await
        );
        got
    }

    /// Waits until exactly `n` tasks of the job are `started`; returns them.
    pub async fn wait_started(&self, job: u64, n: usize, secs: u64) -> Vec<TaskRow> {
        wait_for(secs, &format!("{n} started tasks of job {job}"), || async {
            let t: Vec<TaskRow> = self
                .tasks(job)
                .await
                .into_iter()
                .filter(|t| t.state == "started")
                .collect();
            (t.len() == n).then_some(t)
        })
        .await
    }

    /// Starts one more agent (index `agent_configs.len()`), waits until it is connected.
    pub async fn add_agent(&mut self, spec: &AgentSpec) -> usize {
        let i = self.agent_configs.len();
        let cfg = agent_config(&self.name, i, &self.url(), spec, self.data.path());
        self.agents
            .push(Some(agent::start(cfg.clone()).await.expect("agent starts")));
        self.agent_configs.push(cfg);
        i
    }

    /// The task's container on agent `i`.
    pub fn container_name(&self, i: usize, task: berth_solver::TaskId) -> String {
        berth_runtime::docker::container_name(self.agent_name(i), task)
    }

    /// Waits until the task is `finished`; returns its row.
    pub async fn wait_finished(&self, task: berth_solver::TaskId, secs: u64) -> TaskRow {
        wait_for(secs, &format!("{task} finished"), || async {
            let t: TaskRow = self
                .client
                .get(&format!("/v1/tasks/{}", task.0))
                .await
                .ok()?;
            (t.state == "finished").then_some(t)
        })
        .await
    }

    pub fn agent_name(&self, i: usize) -> &str {
        &self.agent_configs[i].name
    }

    /// Containers of agent `i` (all states).
    pub async fn containers(&self, i: usize) -> Vec<bollard::models::ContainerSummary> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("berth.agent={}", self.agent_name(i))],
        )]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .expect("list containers")
    }

    /// Removes every container and network this test made.
    pub async fn cleanup(mut self) {
        for a in self.agents.drain(..).flatten() {
            a.stop();
        }
        for i in 0..self.agent_configs.len() {
            for c in self.containers(i).await {
                if let Some(id) = c.id {
                    let _ = self
                        .docker
                        .remove_container(
                            &id,
                            Some(bollard::container::RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                }
            }
        }
        let prefix = format!("bt{}-{}", std::process::id(), self.name);
        if let Ok(nets) = self.docker.list_networks::<String>(None).await {
            for n in nets {
                if n.name.is_some_and(|name| name.starts_with(&prefix)) {
                    if let Some(id) = n.id {
                        let _ = self.docker.remove_network(&id).await;
                    }
                }
            }
        }
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(2)).await;
        }
    }
}

pub fn batch(name: &str, size: u32, cpu_milli: u64, mem_mib: u64, cmd: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "batch": { "size": size },
        "task": { "cpu_milli": cpu_milli, "mem_mib": mem_mib },
        "container": { "image": IMAGE, "command": ["sh", "-c", cmd] }
    })
}

pub fn service(name: &str, desired: u32, cmd: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "service": { "min": 0, "desired": desired, "max": 10 },
        "task": { "cpu_milli": 100, "mem_mib": 32 },
        "container": { "image": IMAGE, "command": ["sh", "-c", cmd] }
    })
}
