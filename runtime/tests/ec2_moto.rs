//! EC2 pools against `moto_server` (moto 5.2.5, the EC2 API on loopback): the control actor,
//! the SQLite store and the EC2 driver, wired as `berth serve` wires them, with an
//! error-injecting HTTP proxy in front of moto for the fault paths.
//!
//! `BERTH_MOTO_SERVER` names the `moto_server` executable (`scripts/moto` installs it and
//! prints its path; `scripts/test-all` exports it). Without it these tests FAIL: they never
//! pass without the server.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_runtime::api_types::{AgentCommand, CommandBatch, RegisterRequest, Report};
use berth_runtime::cloud::{CloudCommand, ProvisionRequest, CLOUD_QUEUE_MAX};
use berth_runtime::control::{self, ControlConfig, ControlHandle, Msg};
use berth_runtime::ec2::{driver, CloudInstance, Ec2Config, Ec2Pools, SpecSource};
use berth_runtime::metrics::Metrics;
use berth_runtime::store::{SqliteStore, Store};
use berth_solver::catalog::Catalog;
use berth_solver::controller::{ControllerConfig, InstanceId, RequestId};
use berth_solver::{JobId, JobSpec, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

// ----- moto ---------------------------------------------------------------------------------

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_path() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/berth/venv-moto/bin/moto_server");
    if p.exists() {
        return p;
    }
    panic!(
        "these tests need moto_server (moto[server,ec2]==5.2.5): run scripts/moto, which \
         installs it and prints its path, and set BERTH_MOTO_SERVER to it (scripts/test-all does)"
    );
}

async fn start_moto() -> Moto {
    let path = moto_path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new(&path)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "moto_server did not listen within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    moto
}

// ----- the error-injecting proxy ------------------------------------------------------------

/// Answers `times` calls of `action` with the EC2 error `code`, then forwards again.
#[derive(Clone, Debug)]
struct Fault {
    action: &'static str,
    code: &'static str,
    times: u32,
}

/// Rewrites the body of every answer to `action` (how a test makes moto say what it cannot:
/// an interruption notice).
type Rewrite = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone, Default)]
struct ProxyState {
    upstream: String,
    faults: Arc<Mutex<Vec<Fault>>>,
    rewrites: Arc<Mutex<Vec<(&'static str, Rewrite)>>>,
    /// Every action seen, in order, with whether it was answered with an injected error.
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    http: reqwest::Client,
}

impl ProxyState {
    fn inject(&self, action: &'static str, code: &'static str, times: u32) {
        self.faults.lock().unwrap().push(Fault {
            action,
            code,
            times,
        });
    }
    fn rewrite(&self, action: &'static str, f: impl Fn(&str) -> String + Send + Sync + 'static) {
        self.rewrites.lock().unwrap().push((action, Arc::new(f)));
    }
    fn calls(&self, action: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == action)
            .count()
    }
}

fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("")
        .to_string()
}

async fn proxy_handler(
    State(s): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = action_of(&body);
    let fault = {
        let mut faults = s.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| f.action == action && f.times > 0)
            .map(|f| {
                f.times -= 1;
                f.clone()
            })
    };
    s.seen
        .lock()
        .unwrap()
        .push((action.clone(), fault.is_some()));
    if let Some(f) = fault {
        let status = match f.code {
            "RequestLimitExceeded" => StatusCode::SERVICE_UNAVAILABLE,
            "UnauthorizedOperation" | "AuthFailure" => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
             <Message>injected by the test proxy</Message></Error></Errors>\
             <RequestID>injected-1</RequestID></Response>",
            f.code
        );
        return (status, [("content-type", "text/xml")], xml).into_response();
    }
    let url = format!(
        "{}{}",
        s.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut req = s.http.request(method, url).body(body);
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/xml")
                .to_string();
            let mut b = r.bytes().await.unwrap_or_default();
            let rewrites: Vec<Rewrite> = s
                .rewrites
                .lock()
                .unwrap()
                .iter()
                .filter(|(a, _)| *a == action)
                .map(|(_, f)| f.clone())
                .collect();
            for f in rewrites {
                b = Bytes::from(f(&String::from_utf8_lossy(&b)));
            }
            (status, [("content-type", ct)], b).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn start_proxy(upstream: &str) -> (ProxyState, String) {
    let state = ProxyState {
        upstream: upstream.to_string(),
        ..ProxyState::default()
    };
    let app = axum::Router::new()
        .fallback(proxy_handler)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, format!("http://{addr}"))
}

// ----- the control plane ---------------------------------------------------------------------

const POOLS: &str = r#"
cluster = "CLUSTER"
endpoint_url = "ENDPOINT"
reconcile_interval_ms = 300
throttle_backoff_initial_ms = 20
throttle_backoff_max_ms = 200

[[pools]]
name = "flex"
instance_types = ["m5.large", "m5.xlarge"]
zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
max_nodes = 6
image_id = "ami-12c6146b"
scale_down_idle_ms = 300
disruption_budget = { nodes_max = 10, window_ms = 1000 }
tags = { team = "ml" }
"#;

fn ec2_config(text: &str, cluster: &str, endpoint: &str) -> Ec2Config {
    // Static dummy credentials (moto accepts any): the standard chain reads them.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let text = text
        .replace("CLUSTER", cluster)
        .replace("ENDPOINT", endpoint);
    Ec2Config::from_toml(&text, Catalog::ec2()).expect("pools file")
}

fn controller_config(ec2: &Ec2Config) -> ControllerConfig {
    let mut c = ControllerConfig {
        pools: ec2.pool_specs(Catalog::ec2()),
        ..ControllerConfig::default()
    };
    c.autoscale.interval_ms = 200;
    c.autoscale.backoff_initial_ms = 5_000;
    c.timeouts.kill_ms = 500;
    c
}

struct Plane {
    handle: ControlHandle,
    actor: tokio::task::JoinHandle<()>,
    driver: Option<tokio::task::JoinHandle<()>>,
    pools: Arc<Ec2Pools>,
}

impl Plane {
    /// Stops everything at once, as `kill -9` would (nothing is flushed beyond what each
    /// step already committed).
    fn crash(self) {
        self.actor.abort();
        if let Some(d) = self.driver {
            d.abort();
        }
    }
}

/// Starts the actor on `data` with the EC2 driver (`run_driver`), or with the driver's queue
/// handed back instead (the test then plays the driver, or lets the commands die). As
/// `serve::start` does, the controller plans with the specs DescribeInstanceTypes gives.
async fn start_plane(
    data: &Path,
    ec2: &Ec2Config,
    ctl: ControllerConfig,
    run_driver: bool,
) -> (Plane, Option<mpsc::Receiver<CloudCommand>>) {
    let (plane, rx, _) = start_plane_with(data, ec2, ctl, run_driver, false).await;
    (plane, rx)
}

/// Every command the actor sent the cloud driver, with when it was sent.
type Tap = Arc<Mutex<Vec<(Instant, CloudCommand)>>>;

/// [`start_plane`] with the EC2 driver behind a tap that records every command the actor
/// sends it, in order.
async fn start_tapped(data: &Path, ec2: &Ec2Config, ctl: ControllerConfig) -> (Plane, Tap) {
    let (plane, _, tap) = start_plane_with(data, ec2, ctl, true, true).await;
    (plane, tap)
}

async fn start_plane_with(
    data: &Path,
    ec2: &Ec2Config,
    mut ctl: ControllerConfig,
    run_driver: bool,
    tapped: bool,
) -> (Plane, Option<mpsc::Receiver<CloudCommand>>, Tap) {
    let pools = Arc::new(Ec2Pools::connect(ec2.clone(), 7).await);
    let (catalog, source) = pools
        .instance_catalog(Catalog::ec2())
        .await
        .expect("pools file against DescribeInstanceTypes");
    assert!(
        matches!(source, SpecSource::DescribeInstanceTypes { .. }),
        "{source}"
    );
    ctl.pools = ec2.pool_specs(&catalog);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data).expect("store"));
    let (tx, rx) = mpsc::channel(CLOUD_QUEUE_MAX);
    let config = ControlConfig {
        controller: ctl,
        cloud: Some(tx),
        catalog: Arc::new(catalog),
        ..ControlConfig::default()
    };
    let (handle, actor) =
        control::spawn(config, store, Arc::new(Metrics::default())).expect("control plane");
    pools
        .ensure_launch_templates()
        .await
        .expect("launch template");
    let tap: Tap = Arc::default();
    let rx = if tapped {
        let (ftx, frx) = mpsc::channel(CLOUD_QUEUE_MAX);
        let mut rx = rx;
        let t = tap.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                t.lock().unwrap().push((Instant::now(), c.clone()));
                if ftx.send(c).await.is_err() {
                    break;
                }
            }
        });
        frx
    } else {
        rx
    };
    let (driver, rx) = if run_driver {
        (Some(driver::spawn(pools.clone(), rx, handle.clone())), None)
    } else {
        (None, Some(rx))
    };
    (
        Plane {
            handle,
            actor,
            driver,
            pools,
        },
        rx,
        tap,
    )
}

fn job(name: &str, size: u32, cpu_milli: u64, mem_mib: u64) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "batch": { "size": size },
        "task": { "cpu_milli": cpu_milli, "mem_mib": mem_mib },
        "container": { "image": "local/none:1" }
    }))
    .expect("job spec")
}

async fn submit(h: &ControlHandle, spec: JobSpec) -> JobId {
    h.ask(|r| Msg::Submit(spec, r)).await.expect("submit").id
}

/// Registers an agent for an instance, as its user data would, with the machine's capacity
/// (the catalogue type's: what the agent of such an instance measures).
async fn register(h: &ControlHandle, i: &CloudInstance) {
    let t = Catalog::ec2()
        .get(&i.instance_type)
        .expect("catalogue type");
    let req = RegisterRequest {
        name: i.id.0.clone(),
        capacity: t.capacity(),
        zone: i.zone.clone(),
        instance_type: i.instance_type.clone(),
        url: format!("http://{}.invalid:7071", i.id),
        tasks: Vec::new(),
        instance_id: Some(i.id.0.clone()),
        gpus: t.node_gpus(),
    };
    h.ask(|r| Msg::Register(req, r)).await.expect("register");
}

/// The commands queued for an agent so far (not acknowledged: every poll shows them all).
async fn queued_for(h: &ControlHandle, agent: &str) -> Vec<AgentCommand> {
    let poll = h.ask(|r| Msg::Poll(agent.to_string(), 0, r));
    let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), poll).await else {
        return Vec::new();
    };
    let batch: CommandBatch = batch.expect("poll");
    batch.commands.into_iter().map(|(_, c)| c).collect()
}

async fn report(h: &ControlHandle, agent: &str, reports: Vec<Report>) {
    h.ask(|r| Msg::Report(agent.to_string(), reports, r))
        .await
        .expect("report");
}

async fn heartbeat(h: &ControlHandle, agents: &[String]) {
    for a in agents {
        let _ = h.ask(|r| Msg::Heartbeat(a.clone(), r)).await;
    }
}

/// The instances the tap saw terminated, in order.
fn terminated(tap: &Tap) -> Vec<(Instant, InstanceId)> {
    tap.lock()
        .unwrap()
        .iter()
        .filter_map(|(t, c)| match c {
            CloudCommand::Terminate(i) => Some((*t, i.clone())),
            _ => None,
        })
        .collect()
}

/// The provisioning requests the tap saw, in order.
fn provisioned(tap: &Tap) -> Vec<ProvisionRequest> {
    tap.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, c)| match c {
            CloudCommand::Provision(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Submits `jobs`, waits for their instances, registers them, starts every task and lets
/// them all exit: the pool's nodes are then idle. Returns the instances (by id) and the
/// agents' names.
async fn run_to_idle(
    plane: &Plane,
    jobs: Vec<JobSpec>,
    instances_n: usize,
) -> BTreeMap<InstanceId, CloudInstance> {
    let h = plane.handle.clone();
    let tasks_n: u32 = jobs
        .iter()
        .map(|j| match &j.kind {
            berth_solver::JobKind::Batch(b) => b.size,
            berth_solver::JobKind::Service(s) => s.desired,
        })
        .sum();
    for j in jobs {
        submit(&h, j).await;
    }
    let list = wait_for("the instances", Duration::from_secs(30), async || {
        let l = alive(&plane.pools).await;
        (l.len() == instances_n).then_some(l)
    })
    .await;
    // moto lists an instance the moment CreateFleet makes it, a moment before the driver's
    // `InstanceLaunched` reaches the actor; a real agent boots for tens of seconds first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in &list {
        register(&h, i).await;
    }
    let agents: Vec<String> = list.iter().map(|i| i.id.0.clone()).collect();
    let mut on: BTreeMap<TaskId, String> = BTreeMap::new();
    wait_for("every task launched", Duration::from_secs(10), async || {
        for a in &agents {
            for t in launched_on(&h, a).await {
                on.insert(t, a.clone());
            }
        }
        (on.len() == tasks_n as usize).then_some(())
    })
    .await;
    for (t, a) in &on {
        report(&h, a, vec![Report::Started { task: *t }]).await;
    }
    for (t, a) in &on {
        let r = Report::Exited {
            task: *t,
            exit_code: 0,
            oom: false,
        };
        report(&h, a, vec![r]).await;
    }
    list.into_iter().map(|i| (i.id.clone(), i)).collect()
}

/// The launches queued for an agent so far.
async fn launched_on(h: &ControlHandle, agent: &str) -> Vec<TaskId> {
    // A long poll: answered at once when commands are queued, else cut short here.
    let poll = h.ask(|r| Msg::Poll(agent.to_string(), 0, r));
    let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), poll).await else {
        return Vec::new();
    };
    let batch: CommandBatch = batch.expect("poll");
    batch
        .commands
        .iter()
        .filter_map(|(_, c)| match c {
            berth_runtime::api_types::AgentCommand::Launch { task, .. } => Some(*task),
            _ => None,
        })
        .collect()
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alive(pools: &Ec2Pools) -> Vec<CloudInstance> {
    let mut v = pools.list(None).await.expect("DescribeInstances");
    v.retain(|i| i.is_alive());
    v
}

fn per_zone(list: &[CloudInstance]) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for i in list {
        *m.entry(i.zone.clone()).or_insert(0) += 1;
    }
    m
}

// ----- the tests -----------------------------------------------------------------------------

/// Six tasks of 1.5 vCPU / 6 GiB: one per m5.large (or two per m5.xlarge). The controller
/// asks per zone; every instance is of a pool type, zones are balanced within the pool's
/// skew, and each carries the cluster/pool/request tags and the pool's own tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_creates_the_right_types_in_the_right_zones_with_tags() {
    let moto = start_moto().await;
    let ec2 = ec2_config(POOLS, "up", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    let t0 = Instant::now();
    submit(&plane.handle, job("six", 6, 1_500, 6_000)).await;
    let list = wait_for("instances", Duration::from_secs(30), async || {
        let l = alive(&plane.pools).await;
        let vcpu: u32 = l
            .iter()
            .map(|i| Catalog::ec2().get(&i.instance_type).unwrap().vcpu)
            .sum();
        (vcpu >= 12).then_some(l)
    })
    .await;
    eprintln!(
        "scale-up latency against moto: {} ms for {} instances",
        t0.elapsed().as_millis(),
        list.len()
    );
    assert!(list.len() <= 6, "pool max 6: {list:?}");
    for i in &list {
        assert!(
            ["m5.large", "m5.xlarge"].contains(&i.instance_type.as_str()),
            "{i:?}"
        );
        assert_eq!(i.pool, "flex");
        assert!(i.request.is_some(), "berth:request tag: {i:?}");
    }
    let zones = per_zone(&list);
    assert_eq!(zones.len(), 3, "all three zones used: {zones:?}");
    let (lo, hi) = (zones.values().min().unwrap(), zones.values().max().unwrap());
    assert!(hi - lo <= 1, "zone skew within 1: {zones:?}");
    // One request per (type, zone): every instance of a request shares type and zone.
    let mut by_req: BTreeMap<RequestId, BTreeSet<(String, String)>> = BTreeMap::new();
    for i in &list {
        by_req
            .entry(i.request.unwrap())
            .or_default()
            .insert((i.instance_type.clone(), i.zone.clone()));
    }
    assert!(by_req.values().all(|s| s.len() == 1), "{by_req:?}");
    // The pool's own tag, read straight from EC2.
    let out = plane
        .pools
        .client()
        .describe_instances()
        .instance_ids(list[0].id.0.clone())
        .send()
        .await
        .expect("describe");
    let tags: BTreeMap<String, String> = out.reservations()[0].instances()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    assert_eq!(tags.get("team").map(String::as_str), Some("ml"), "{tags:?}");
    assert_eq!(tags.get("berth:cluster").map(String::as_str), Some("up"));
    // Stable: a few reconcile rounds later nothing was added or terminated.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(alive(&plane.pools).await, list);
    plane.crash();
}

/// Two jobs on two instances; one finishes. The controller terminates the idle instance
/// (after `scale_down_idle_ms`) and keeps the busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_terminates_the_chosen_idle_instance() {
    let moto = start_moto().await;
    let text = POOLS.replace(
        "instance_types = [\"m5.large\", \"m5.xlarge\"]",
        "instance_types = [\"m5.large\"]",
    );
    let ec2 = ec2_config(&text, "down", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    let h = plane.handle.clone();
    submit(&h, job("long", 1, 1_500, 6_000)).await;
    submit(&h, job("short", 1, 1_500, 6_000)).await;
    let list = wait_for("two instances", Duration::from_secs(30), async || {
        let l = alive(&plane.pools).await;
        (l.len() == 2).then_some(l)
    })
    .await;
    for i in &list {
        register(&h, i).await;
    }
    // Which task went where.
    let mut task_on: BTreeMap<TaskId, CloudInstance> = BTreeMap::new();
    wait_for("both tasks launched", Duration::from_secs(10), async || {
        for i in &list {
            for t in launched_on(&h, &i.id.0).await {
                task_on.insert(t, i.clone());
            }
        }
        (task_on.len() == 2).then_some(())
    })
    .await;
    let tasks: Vec<TaskId> = task_on.keys().copied().collect();
    let (busy_task, idle_task) = (tasks[0], tasks[1]); // task ids follow submission order
    for (t, i) in &task_on {
        let reports = vec![Report::Started { task: *t }];
        h.ask(|r| Msg::Report(i.id.0.clone(), reports, r))
            .await
            .expect("report");
    }
    let idle_instance = task_on[&idle_task].clone();
    let busy_instance = task_on[&busy_task].clone();
    let reports = vec![Report::Exited {
        task: idle_task,
        exit_code: 0,
        oom: false,
    }];
    h.ask(|r| Msg::Report(idle_instance.id.0.clone(), reports, r))
        .await
        .expect("report exit");
    // Keep the agents alive while the idle instance is terminated.
    let remaining = wait_for(
        "the idle instance terminated",
        Duration::from_secs(20),
        async || {
            for i in &list {
                let _ = h.ask(|r| Msg::Heartbeat(i.id.0.clone(), r)).await;
            }
            let l = alive(&plane.pools).await;
            (l.len() == 1).then_some(l)
        },
    )
    .await;
    assert_eq!(remaining[0].id, busy_instance.id, "the busy instance stays");
    let all = plane.pools.list(None).await.expect("list");
    assert!(
        !all.iter().any(|i| i.id == idle_instance.id && i.is_alive()),
        "{all:?}"
    );
    plane.crash();
}

/// A crash in the middle of a scale-up: of three requests, the first was sent to EC2 but its
/// outcome never reached the store, the other two were never sent. After the restart the
/// first is adopted (no second CreateFleet for it), the others are issued once: exactly the
/// instances asked for, never more than the pool's maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_of_a_scale_up_does_not_double_launch() {
    let moto = start_moto().await;
    let (proxy, proxy_url) = start_proxy(&moto.url).await;
    let text = POOLS.replace(
        "instance_types = [\"m5.large\", \"m5.xlarge\"]",
        "instance_types = [\"m5.large\"]",
    );
    let ec2 = ec2_config(&text, "restart", &proxy_url);
    let data = tempfile::tempdir().expect("tempdir");
    let ctl = controller_config(&ec2);
    let (plane, rx) = start_plane(data.path(), &ec2, ctl.clone(), false).await;
    let mut rx = rx.expect("driver queue");
    submit(&plane.handle, job("three", 3, 1_500, 6_000)).await;
    let mut reqs: Vec<ProvisionRequest> = Vec::new();
    wait_for(
        "three provisioning requests",
        Duration::from_secs(10),
        async || {
            while let Ok(c) = rx.try_recv() {
                if let CloudCommand::Provision(p) = c {
                    reqs.push(p);
                }
            }
            (reqs.iter().map(|r| r.count).sum::<u32>() == 3).then_some(())
        },
    )
    .await;
    assert_eq!(reqs.len(), 3, "one request per zone: {reqs:?}");
    // The first request reaches EC2; the crash comes before its outcome is stepped.
    let events = driver::provision(&plane.pools, &reqs[0]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    plane.crash();
    drop(rx);
    assert_eq!(proxy.calls("CreateFleet"), 1);

    let (plane, _) = start_plane(data.path(), &ec2, ctl, true).await;
    let list = wait_for("three instances", Duration::from_secs(30), async || {
        let l = alive(&plane.pools).await;
        (l.len() >= 3).then_some(l)
    })
    .await;
    // Several reconcile rounds: nothing more launched, nothing of ours terminated.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = alive(&plane.pools).await;
    assert_eq!(
        after, list,
        "no instance added or terminated after recovery"
    );
    assert_eq!(list.len(), 3, "exactly the instances asked for: {list:?}");
    assert_eq!(
        proxy.calls("CreateFleet"),
        3,
        "the first request is adopted, not sent again"
    );
    let requests: BTreeSet<RequestId> = list.iter().filter_map(|i| i.request).collect();
    let asked: BTreeSet<RequestId> = reqs.iter().map(|r| r.request).collect();
    assert_eq!(requests, asked);
    assert_eq!(per_zone(&list).len(), 3);
    plane.crash();
}

/// InsufficientInstanceCapacity for the first choice: the controller avoids that type/zone
/// and its next choice (the other type) is launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_capacity_moves_to_the_next_choice() {
    let moto = start_moto().await;
    let (proxy, proxy_url) = start_proxy(&moto.url).await;
    let text = POOLS.replace(
        "zones = [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\"]",
        "zones = [\"us-east-1a\"]",
    );
    let ec2 = ec2_config(&text, "ice", &proxy_url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    proxy.inject("CreateFleet", "InsufficientInstanceCapacity", 1);
    submit(&plane.handle, job("one", 1, 1_500, 6_000)).await;
    let list = wait_for("an instance", Duration::from_secs(30), async || {
        let l = alive(&plane.pools).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    let seen = proxy.seen.lock().unwrap().clone();
    let fleets: Vec<bool> = seen
        .iter()
        .filter(|(a, _)| a == "CreateFleet")
        .map(|(_, f)| *f)
        .collect();
    assert_eq!(fleets, vec![true, false], "one refused, one launched");
    assert_eq!(list.len(), 1, "{list:?}");
    // The refused request's type is not the one launched (the mix picks m5.large first: it
    // is the cheapest that fits).
    assert_eq!(list[0].instance_type, "m5.xlarge", "{list:?}");
    plane.crash();
}

/// RequestLimitExceeded: retried with jittered back-off (same client token) and launched;
/// when it persists, the controller hears `Throttled` and backs the pool off: no call storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_with_jitter() {
    let moto = start_moto().await;
    let (proxy, proxy_url) = start_proxy(&moto.url).await;
    let text = POOLS.replace(
        "throttle_backoff_initial_ms = 20",
        "throttle_retries_max = 2\nthrottle_backoff_initial_ms = 20",
    );
    let ec2 = ec2_config(&text, "throttle", &proxy_url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    // Two throttled answers, then through: launched by the driver's own retries.
    proxy.inject("CreateFleet", "RequestLimitExceeded", 2);
    submit(&plane.handle, job("one", 1, 1_500, 6_000)).await;
    wait_for("an instance", Duration::from_secs(30), async || {
        (!alive(&plane.pools).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(proxy.calls("CreateFleet"), 3, "2 throttled + 1 launched");
    // Persistent throttling: 1 call + 2 retries, then the pool backs off (5 s) instead of
    // asking again every 200 ms evaluation.
    proxy.inject("CreateFleet", "RequestLimitExceeded", 1_000);
    submit(&plane.handle, job("two", 1, 1_500, 6_000)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        proxy.calls("CreateFleet"),
        3 + 3,
        "one throttled request (with its 2 retries), then back-off"
    );
    plane.crash();
}

/// UnauthorizedOperation: reported once, the pool stops autoscaling: no retry storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_stops_the_pool_without_a_retry_storm() {
    let moto = start_moto().await;
    let (proxy, proxy_url) = start_proxy(&moto.url).await;
    let ec2 = ec2_config(POOLS, "unauth", &proxy_url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    proxy.inject("CreateFleet", "UnauthorizedOperation", 1_000);
    submit(&plane.handle, job("one", 1, 1_500, 6_000)).await;
    wait_for("a CreateFleet call", Duration::from_secs(10), async || {
        (proxy.calls("CreateFleet") > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(proxy.calls("CreateFleet"), 1, "asked once, never again");
    submit(&plane.handle, job("two", 1, 1_500, 6_000)).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(proxy.calls("CreateFleet"), 1, "the pool stays disabled");
    assert!(alive(&plane.pools).await.is_empty());
    plane.crash();
}

// ----- the simulator and the runtime make the same choices ----------------------------------

/// The what-if workload: (cpu_milli, mem_mib, run time in seconds) of single-task batch jobs,
/// all submitted at once. Two need an m5.xlarge each, five fit an m5.large (or two an
/// m5.xlarge); the pool's five instances make the optimiser pair some of them. Run times 2 s
/// apart make the nodes idle one by one, well apart from the autoscaler's 500 ms evaluations.
const SAME_JOBS: &[(u64, u64, u64)] = &[
    (3_500, 14_000, 2),
    (1_500, 6_000, 4),
    (1_500, 6_000, 6),
    (3_500, 14_000, 8),
    (1_500, 6_000, 10),
    (1_500, 6_000, 12),
    (1_500, 6_000, 14),
];
const SAME_AUTOSCALE_MS: u64 = 500;
const SAME_PROVISIONING_MS: u64 = 2_000;

/// The pool, as the runtime's pools file and the simulator's scenario both give it (the test
/// checks that they parse to the same `PoolSpec`).
const SAME_POOL: &str = r#"
name = "flex"
instance_types = ["m5.large", "m5.xlarge"]
zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
max_nodes = 5
scale_down_idle_ms = 300
disruption_budget = { nodes_max = 1, window_ms = 700 }
"#;

/// A provisioning or termination decision, without ids (the runtime's are EC2's, the
/// simulator's its own).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    Provision {
        instance_type: String,
        zone: String,
        count: u32,
    },
    Terminate {
        instance_type: String,
        zone: String,
    },
}

/// The FGD typical task types, as the simulator derives them from its whole workload.
fn typical_types(jobs: &[JobSpec], policy: &berth_solver::Policy) -> berth_solver::TaskTypes {
    berth_solver::TaskTypes::from_shapes(
        jobs.iter().map(|j| &j.task),
        policy.typical_coverage,
        policy.typical_key,
    )
}

fn same_jobs() -> Vec<JobSpec> {
    SAME_JOBS
        .iter()
        .enumerate()
        .map(|(k, &(cpu, mem, _))| {
            let mut j = job(&format!("pod-{k}"), 1, cpu, mem);
            j.capacity_group = "BE".into(); // the openb importer's class of a BE pod
            j
        })
        .collect()
}

/// The simulator's decisions, read back from its `nodes.csv` (schedulable nodes per pool,
/// type and zone at every 10 ms sample) and `series.csv` (every sample's time): a rise is the
/// request `SAME_PROVISIONING_MS` earlier (its instances come up together: the delay has no
/// spread), a fall is a termination. The engine does not hand its commands out, so this is
/// how a run's choices are observed; one request per type and zone per evaluation, issued in
/// the pool's type then zone order (the controller's `issue_launches`), so the requests that
/// rise in the same sample are put in that order. The disruption budget (one per 700 ms)
/// keeps terminations in separate samples.
fn sim_decisions(dir: &Path, types: &[String], zones: &[String]) -> Vec<Decision> {
    let series = std::fs::read_to_string(dir.join("series.csv")).expect("series.csv");
    let nodes = std::fs::read_to_string(dir.join("nodes.csv")).expect("nodes.csv");
    let mut samples: BTreeMap<u64, BTreeMap<(usize, usize), u32>> = BTreeMap::new();
    for line in series.lines().skip(1) {
        let t: u64 = line.split(',').next().unwrap().parse().unwrap();
        samples.entry(t).or_default();
    }
    for line in nodes.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let t: u64 = f[0].parse().unwrap();
        let ti = types.iter().position(|x| x == f[2]).expect("pool type");
        let zi = zones.iter().position(|x| x == f[3]).expect("pool zone");
        samples
            .entry(t)
            .or_default()
            .insert((ti, zi), f[4].parse().unwrap());
    }
    let mut out: Vec<(u64, u8, usize, usize, Decision)> = Vec::new();
    let mut prev: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    for (t, now) in samples {
        let keys: BTreeSet<(usize, usize)> = prev.keys().chain(now.keys()).copied().collect();
        for k in keys {
            let (a, b) = (
                prev.get(&k).copied().unwrap_or(0),
                now.get(&k).copied().unwrap_or(0),
            );
            let (instance_type, zone) = (types[k.0].clone(), zones[k.1].clone());
            if b > a {
                let at = t.saturating_sub(SAME_PROVISIONING_MS);
                let d = Decision::Provision {
                    instance_type,
                    zone,
                    count: b - a,
                };
                out.push((at, 0, k.0, k.1, d));
            } else {
                for _ in b..a {
                    let d = Decision::Terminate {
                        instance_type: instance_type.clone(),
                        zone: zone.clone(),
                    };
                    out.push((t, 1, k.0, k.1, d));
                }
            }
        }
        prev = now;
    }
    out.sort_by_key(|(t, kind, ti, zi, _)| (*t, *kind, *ti, *zi));
    out.into_iter().map(|(.., d)| d).collect()
}

/// The simulator and the production service make the same choices for the same inputs: one
/// pool, one set of job submissions, run once through `berth_sim` (a scenario with that pool,
/// the jobs as an openb pod list and a 2 s provisioning delay) and once through the runtime
/// against moto (actor, store, EC2 driver; the test plays the agents and runs each task for
/// its run time). Both must issue the same `ProvisionInstances` (type, zone, count) and
/// `TerminateInstance` (type, zone), in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_and_runtime_make_the_same_provisioning_choices() {
    let moto = start_moto().await;
    let text = format!(
        "cluster = \"CLUSTER\"\nendpoint_url = \"ENDPOINT\"\nreconcile_interval_ms = 300\n\n\
         [[pools]]\nimage_id = \"ami-12c6146b\"\n{SAME_POOL}"
    );
    let ec2 = ec2_config(&text, "same", &moto.url);
    let jobs = same_jobs();
    let mut ctl = controller_config(&ec2);
    ctl.autoscale.interval_ms = SAME_AUTOSCALE_MS;
    // The simulator derives FGD's typical task types from its workload up front; the
    // runtime is given the same (it would otherwise learn them as jobs arrive).
    ctl.typical_types = Some(typical_types(&jobs, &ctl.policy));

    // ---- the simulator
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pods = String::from(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n",
    );
    for (k, (cpu, mem, secs)) in SAME_JOBS.iter().enumerate() {
        pods.push_str(&format!(
            "pod-{k},{cpu},{mem},0,0,,BE,Succeeded,0,{secs},0\n"
        ));
    }
    std::fs::write(dir.path().join("pods.csv"), pods).expect("pods");
    let scenario_text = format!(
        r#"
name = "same-choices"
seed = 7
horizon_ms = 60000

[workload.trace]
path = "pods.csv"
format = "openb-pods"

[policy.autoscale]
interval_ms = {SAME_AUTOSCALE_MS}
backoff_initial_ms = 5000

[policy.timeouts]
kill_ms = 500

[timing]
container_launch = {{ median_ms = 100, sigma = 0.0 }}
provisioning = {{ median_ms = {SAME_PROVISIONING_MS}, sigma = 0.0 }}
api_latency_ms = 100

[metrics]
interval_ms = 10
per_task = false

[[cluster.pools]]
{SAME_POOL}"#
    );
    let scenario = berth_sim::Scenario::from_toml(&scenario_text, dir.path()).expect("scenario");
    assert_eq!(
        scenario.cluster.pools, ctl.pools,
        "the scenario's pool is the pools file's"
    );
    // The whole controller configuration is the same (the run adds the typical types).
    let mut sim_ctl = scenario.controller_config().expect("scenario config");
    sim_ctl.typical_types = ctl.typical_types.clone();
    assert_eq!(sim_ctl, ctl);
    assert_eq!(scenario.seed, ControlConfig::default().seed);
    let out = dir.path().join("run");
    let sim_report = berth_sim::run_scenario_to(&scenario, &out, &mut |_| {}).expect("sim run");
    let pool = &ctl.pools[0];
    let sim = sim_decisions(&out, &pool.instance_types, &pool.zones);
    let sim_requested: u32 = sim
        .iter()
        .map(|d| match d {
            Decision::Provision { count, .. } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(
        u64::from(sim_requested),
        sim_report.instances_requested,
        "{sim:?}"
    );
    assert_eq!(sim_report.tasks_started, SAME_JOBS.len() as u64);

    // ---- the runtime against moto
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, tap) = start_tapped(data.path(), &ec2, ctl).await;
    let h = plane.handle.clone();
    let t0 = Instant::now();
    for j in jobs {
        submit(&h, j).await;
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(SAME_AUTOSCALE_MS * 4 / 5),
        "submitting took {took:?}: the first evaluation ({SAME_AUTOSCALE_MS} ms after the \
         first submission) may have seen only part of the demand, which the simulator sees whole"
    );
    let reqs = wait_for("provisioning done", Duration::from_secs(30), async || {
        let p = provisioned(&tap);
        let want: u32 = p.iter().map(|r| r.count).sum();
        let n = alive(&plane.pools).await.len() as u32;
        (want > 0 && n == want).then_some(p)
    })
    .await;
    // Two more evaluations: nothing more is asked while the instances boot.
    tokio::time::sleep(Duration::from_millis(2 * SAME_AUTOSCALE_MS)).await;
    assert_eq!(provisioned(&tap), reqs);
    // The agents register in the order the simulator brings nodes up: request by request.
    let list = alive(&plane.pools).await;
    let kind: BTreeMap<InstanceId, (String, String)> = list
        .iter()
        .map(|i| (i.id.clone(), (i.instance_type.clone(), i.zone.clone())))
        .collect();
    let mut agents: Vec<String> = Vec::new();
    for r in &reqs {
        let mut of: Vec<&CloudInstance> = list
            .iter()
            .filter(|i| i.request == Some(r.request))
            .collect();
        of.sort_by(|a, b| a.id.cmp(&b.id));
        for i in of {
            register(&h, i).await;
            agents.push(i.id.0.clone());
        }
    }
    // Every task starts, and exits after its run time.
    let mut on: BTreeMap<TaskId, (String, JobId)> = BTreeMap::new();
    wait_for("every task launched", Duration::from_secs(10), async || {
        for a in &agents {
            for c in queued_for(&h, a).await {
                if let AgentCommand::Launch { task, job, .. } = c {
                    on.insert(task, (a.clone(), job));
                }
            }
        }
        (on.len() == SAME_JOBS.len()).then_some(())
    })
    .await;
    for (t, (a, _)) in &on {
        report(&h, a, vec![Report::Started { task: *t }]).await;
    }
    let started = Instant::now();
    let mut exits: Vec<(Duration, TaskId, String)> = on
        .iter()
        .map(|(t, (a, j))| {
            let secs = SAME_JOBS[(j.0 - 1) as usize].2;
            (Duration::from_secs(secs), *t, a.clone())
        })
        .collect();
    exits.sort();
    let instances_n = list.len();
    wait_for(
        "every instance terminated",
        Duration::from_secs(60),
        async || {
            while exits.first().is_some_and(|(d, ..)| started.elapsed() >= *d) {
                let (_, task, agent) = exits.remove(0);
                let r = Report::Exited {
                    task,
                    exit_code: 0,
                    oom: false,
                };
                report(&h, &agent, vec![r]).await;
            }
            heartbeat(&h, &agents).await;
            let gone: BTreeSet<InstanceId> = terminated(&tap).into_iter().map(|(_, i)| i).collect();
            (gone.len() >= instances_n).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2 * SAME_AUTOSCALE_MS)).await;
    let runtime: Vec<Decision> = tap
        .lock()
        .unwrap()
        .iter()
        .map(|(_, c)| match c {
            CloudCommand::Provision(p) => Decision::Provision {
                instance_type: p.instance_type.clone(),
                zone: p.zone.clone(),
                count: p.count,
            },
            CloudCommand::Terminate(i) => {
                let (instance_type, zone) = kind[i].clone();
                Decision::Terminate {
                    instance_type,
                    zone,
                }
            }
            CloudCommand::Recover(_) => panic!("no restart here"),
        })
        .collect();
    eprintln!("decisions: {runtime:#?}");
    assert!(
        runtime
            .iter()
            .filter(|d| matches!(d, Decision::Provision { .. }))
            .count()
            >= 2,
        "several requests: {runtime:?}"
    );
    assert_eq!(runtime, sim, "runtime (left) and simulator (right) differ");
    plane.crash();
    drop(moto);
}

// ----- instance specs from DescribeInstanceTypes ----------------------------------------------

const GPU_POOLS: &str = r#"
cluster = "CLUSTER"
endpoint_url = "ENDPOINT"

[[pools]]
name = "gpu"
instance_types = ["g5.xlarge", "p4d.24xlarge"]
zones = ["us-east-1a"]
max_nodes = 2
image_id = "ami-12c6146b"

[[pools]]
name = "a10g"
requirements = { gpu_model = "A10G", gpu_count_min = 4 }
zones = ["us-east-1a"]
max_nodes = 2
image_id = "ami-12c6146b"
"#;

/// The controller plans with the specs EC2 gives (vCPU, memory, GPU count, model and
/// memory), the catalogue's prices; a listed type EC2 does not know is a config error that
/// names the pool field, at `berth serve` too; without the API the catalogue is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_specs_come_from_describe_instance_types() {
    let moto = start_moto().await;
    let (proxy, proxy_url) = start_proxy(&moto.url).await;
    let shipped = Catalog::ec2();
    let ec2 = ec2_config(GPU_POOLS, "specs", &proxy_url);
    let pools = Ec2Pools::connect(ec2.clone(), 7).await;
    let (catalog, source) = pools.instance_catalog(shipped).await.expect("catalogue");
    assert_eq!(proxy.calls("DescribeInstanceTypes"), 1);
    assert!(
        matches!(source, SpecSource::DescribeInstanceTypes { types } if types == catalog.types.len()),
        "{source}"
    );
    // g5.xlarge: EC2 says 22,888 MiB per A10G (the catalogue rounds it to 24 GiB).
    let g5 = catalog.get("g5.xlarge").expect("g5.xlarge");
    let g = g5.gpus.as_ref().expect("GPUs");
    assert_eq!((g.count, g.model.as_str(), g.mem_mib), (1, "A10G", 22_888));
    assert_eq!(
        shipped
            .get("g5.xlarge")
            .unwrap()
            .gpus
            .as_ref()
            .unwrap()
            .mem_mib,
        24 * 1024
    );
    assert_eq!((g5.vcpu, g5.mem_mib), (4, 16_384));
    // p4d: `A100` with 40 GiB each is Berth's A100M40; memory straight from the API.
    let p4d = catalog.get("p4d.24xlarge").expect("p4d");
    let g = p4d.gpus.as_ref().expect("GPUs");
    assert_eq!(
        (g.count, g.model.as_str(), g.mem_mib),
        (8, "A100M40", 40_960)
    );
    assert_eq!((p4d.vcpu, p4d.mem_mib), (96, 1_179_648));
    // Prices, network and disk stay the catalogue's.
    for t in &catalog.types {
        let c = shipped.get(&t.name).unwrap();
        assert_eq!(
            (t.price_per_hour_micro_usd, t.net_mbps, t.disk_mib),
            (c.price_per_hour_micro_usd, c.net_mbps, c.disk_mib),
            "{}",
            t.name
        );
    }
    // moto (like a region without them) has no p3: they drop out of the catalogue, and a
    // pool given by requirements gets only types EC2 knows.
    assert!(shipped.get("p3.2xlarge").is_some() && catalog.get("p3.2xlarge").is_none());
    let specs = ec2.pool_specs(&catalog);
    assert_eq!(specs[0].instance_types, ["g5.xlarge", "p4d.24xlarge"]);
    assert!(!specs[1].instance_types.is_empty());
    for t in &specs[1].instance_types {
        let g = catalog.get(t).unwrap().gpus.clone().unwrap();
        assert!(g.model.as_str() == "A10G" && g.count >= 4, "{t}");
    }

    // A listed type EC2 does not know: refused, naming the field.
    let bad = GPU_POOLS.replace("\"p4d.24xlarge\"", "\"p3.8xlarge\"");
    let bad_ec2 = ec2_config(&bad, "specs", &proxy_url);
    let e = Ec2Pools::connect(bad_ec2.clone(), 7)
        .await
        .instance_catalog(shipped)
        .await
        .unwrap_err();
    assert_eq!(e.path, "pools[0].instance_types[1]", "{e}");
    assert!(e.message.contains("p3.8xlarge"), "{e}");
    // Requirements only types EC2 lacks meet: refused, naming the field.
    let bad = GPU_POOLS.replace("gpu_model = \"A10G\"", "gpu_model = \"V100M16\"");
    let e = Ec2Pools::connect(ec2_config(&bad, "specs", &proxy_url), 7)
        .await
        .instance_catalog(shipped)
        .await
        .unwrap_err();
    assert_eq!(e.path, "pools[1].requirements", "{e}");
    // `berth serve` refuses to start on it (before anything is launched).
    let data = tempfile::tempdir().expect("tempdir");
    let serve = berth_runtime::serve::start(berth_runtime::serve::ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        tokens: berth_runtime::server::Tokens {
            user: "u".into(),
            agent: "a".into(),
        },
        control: ControlConfig {
            ec2: Some(bad_ec2),
            ..ControlConfig::default()
        },
        local_agent: None,
    })
    .await;
    match serve {
        Err(e) => assert!(e.to_string().contains("pools[0].instance_types[1]"), "{e}"),
        Ok(_) => panic!("serve started with a type EC2 does not know"),
    }
    assert_eq!(proxy.calls("CreateFleet"), 0);

    // EC2 refuses DescribeInstanceTypes: the shipped catalogue, said so.
    proxy.inject("DescribeInstanceTypes", "UnauthorizedOperation", 1);
    let (fallback, source) = pools.instance_catalog(shipped).await.expect("fallback");
    assert!(matches!(source, SpecSource::Catalogue { .. }), "{source}");
    assert_eq!(&fallback, shipped);
}

// ----- scale-down: disruption budget, zone balance ------------------------------------------

/// A disruption budget of one node per 1.5 s and three idle nodes: one is terminated per
/// window, the others in the following windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disruption_budget_spreads_terminations_over_windows() {
    const WINDOW_MS: u64 = 1_500;
    let moto = start_moto().await;
    let text = POOLS
        .replace(
            "instance_types = [\"m5.large\", \"m5.xlarge\"]",
            "instance_types = [\"m5.large\"]",
        )
        .replace(
            "zones = [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\"]",
            "zones = [\"us-east-1a\"]",
        )
        .replace(
            "disruption_budget = { nodes_max = 10, window_ms = 1000 }",
            &format!("disruption_budget = {{ nodes_max = 1, window_ms = {WINDOW_MS} }}"),
        );
    let ec2 = ec2_config(&text, "budget", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, tap) = start_tapped(data.path(), &ec2, controller_config(&ec2)).await;
    let nodes = run_to_idle(&plane, vec![job("three", 3, 1_500, 6_000)], 3).await;
    let agents: Vec<String> = nodes.keys().map(|i| i.0.clone()).collect();
    let first = wait_for("a termination", Duration::from_secs(10), async || {
        heartbeat(&plane.handle, &agents).await;
        terminated(&tap).first().map(|(t, _)| *t)
    })
    .await;
    // Within the window: that one only, although all three are idle.
    while first.elapsed() < Duration::from_millis(WINDOW_MS * 4 / 5) {
        heartbeat(&plane.handle, &agents).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        terminated(&tap).len(),
        1,
        "one per window: {:?}",
        terminated(&tap)
    );
    assert_eq!(alive(&plane.pools).await.len(), 2);
    let all = wait_for("the other two", Duration::from_secs(15), async || {
        heartbeat(&plane.handle, &agents).await;
        let t = terminated(&tap);
        (t.len() >= 3).then_some(t)
    })
    .await;
    let ids: BTreeSet<&InstanceId> = all.iter().map(|(_, i)| i).collect();
    assert_eq!(ids.len(), 3, "three different instances: {all:?}");
    for w in all.windows(2) {
        let gap = w[1].0.duration_since(w[0].0);
        // The tap sees a command a moment after the step that issued it: 100 ms slack.
        assert!(
            gap >= Duration::from_millis(WINDOW_MS - 100),
            "terminations {gap:?} apart, the window is {WINDOW_MS} ms: {all:?}"
        );
    }
    wait_for(
        "all terminated in EC2",
        Duration::from_secs(10),
        async || alive(&plane.pools).await.is_empty().then_some(()),
    )
    .await;
    plane.crash();
}

/// Idle nodes in zones with 3 and 1: scale-down takes from the fuller zone first (the lone
/// node of the other zone idled longest, and still waits), keeping the skew within 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_takes_idle_nodes_from_the_fuller_zone_first() {
    let moto = start_moto().await;
    let text = POOLS
        .replace(
            "instance_types = [\"m5.large\", \"m5.xlarge\"]",
            "instance_types = [\"m5.large\"]",
        )
        .replace(
            "zones = [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\"]",
            "zones = [\"us-east-1a\", \"us-east-1b\"]",
        );
    let ec2 = ec2_config(&text, "zones", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, tap) = start_tapped(data.path(), &ec2, controller_config(&ec2)).await;
    let in_zone = |name: &str, size: u32, zone: &str| {
        let mut j = job(name, size, 1_500, 6_000);
        j.constraints
            .hard
            .push(berth_solver::Constraint::AttributeEquals {
                key: "zone".into(),
                value: zone.into(),
            });
        j
    };
    // The lone b task first: its node idles first.
    let nodes = run_to_idle(
        &plane,
        vec![in_zone("b", 1, "us-east-1b"), in_zone("a", 3, "us-east-1a")],
        4,
    )
    .await;
    let zones = per_zone(&nodes.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        zones,
        BTreeMap::from([("us-east-1a".to_string(), 3), ("us-east-1b".to_string(), 1)])
    );
    let agents: Vec<String> = nodes.keys().map(|i| i.0.clone()).collect();
    let all = wait_for("four terminations", Duration::from_secs(20), async || {
        heartbeat(&plane.handle, &agents).await;
        let t = terminated(&tap);
        (t.len() >= 4).then_some(t)
    })
    .await;
    let order: Vec<&str> = all.iter().map(|(_, i)| nodes[i].zone.as_str()).collect();
    if order[..2] != ["us-east-1a", "us-east-1a"] {
        dump_decisions(data.path(), &ec2);
        eprintln!("instances: {nodes:#?}");
    }
    assert_eq!(
        &order[..2],
        ["us-east-1a", "us-east-1a"],
        "the fuller zone loses first: {order:?}"
    );
    let ids: BTreeSet<&InstanceId> = all.iter().map(|(_, i)| i).collect();
    assert_eq!(ids.len(), 4, "{all:?}");
    plane.crash();
}

/// On a failure: the stored events replayed into a fresh controller, with the provisioning,
/// launch and termination commands each one gave (what the runtime decided, and why).
fn dump_decisions(data: &Path, ec2: &Ec2Config) {
    let store = SqliteStore::open(data).expect("store");
    let mut ctl = berth_solver::controller::Controller::new(
        controller_config(ec2),
        Catalog::ec2(),
        &berth_solver::ClusterSpec::default(),
        7,
    )
    .expect("controller");
    for (t, ev) in store.load_events().expect("events") {
        let k = format!("{ev:?}");
        let shown: Vec<String> = ctl
            .step(t, ev)
            .iter()
            .map(|c| format!("{c:?}"))
            .filter(|k| {
                k.starts_with("Terminate") || k.starts_with("Provision") || k.starts_with("Launch")
            })
            .collect();
        if !k.starts_with("Tick") || !shown.is_empty() {
            eprintln!("{t} {}", &k[..k.len().min(300)]);
        }
        for c in shown {
            eprintln!("    -> {}", &c[..c.len().min(200)]);
        }
    }
}

// ----- spot interruptions ------------------------------------------------------------------

/// Makes moto's DescribeSpotInstanceRequests answer say that `instance`'s spot request got
/// an interruption notice `ago` before now (status `marked-for-termination`).
fn mark_for_termination(body: &str, instance: &str, ago: Duration) -> String {
    let Some(at) = body.find(&format!("<instanceId>{instance}</instanceId>")) else {
        return body.to_string();
    };
    let (head, tail) = body.split_at(at);
    // The request's item runs to the next request's (each starts with its createTime).
    let end = tail.find("<createTime>").unwrap_or(tail.len());
    let (item, rest) = tail.split_at(end);
    let when = std::time::SystemTime::now() - ago;
    let secs = when
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamp = iso8601(secs);
    let mut item = item.replace(
        "<code>fulfilled</code>",
        "<code>marked-for-termination</code>",
    );
    if let Some(a) = item.find("<updateTime>") {
        if let Some(b) = item[a..].find("</updateTime>") {
            item.replace_range(a..a + b, &format!("<updateTime>{stamp}"));
        }
    }
    format!("{head}{item}{rest}")
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS.000Z` (civil-from-days, Howard Hinnant).
fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A spot interruption notice (the two-minute warning, seen by the reconcile loop as the
/// spot request's `marked-for-termination` status): the controller drains the node at once
/// (its task is killed with the notice's remaining time as grace, nothing new is placed
/// there) and replaces it on a new instance while the old one still runs; when EC2 then
/// takes the old instance, nothing more happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_interruption_notice_drains_and_replaces_the_node() {
    let moto = start_moto().await;
    let (proxy, proxy_url) = start_proxy(&moto.url).await;
    let text = POOLS.replace("max_nodes = 6", "max_nodes = 6\ncapacity_type = \"spot\"");
    let ec2 = ec2_config(&text, "notice", &proxy_url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, tap) = start_tapped(data.path(), &ec2, controller_config(&ec2)).await;
    let h = plane.handle.clone();
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "name": "svc",
        "service": { "min": 1, "desired": 1, "max": 1 },
        "task": { "cpu_milli": 1500, "mem_mib": 6000 },
        "container": { "image": "local/none:1" }
    }))
    .expect("spec");
    submit(&h, spec).await;
    let first = wait_for("a spot instance", Duration::from_secs(30), async || {
        alive(&plane.pools).await.into_iter().next()
    })
    .await;
    assert!(first.spot, "{first:?}");
    register(&h, &first).await;
    let task = wait_for("the task launched", Duration::from_secs(10), async || {
        launched_on(&h, &first.id.0).await.first().copied()
    })
    .await;
    report(&h, &first.id.0, vec![Report::Started { task }]).await;
    // The notice, issued 110 s ago: 10 s left.
    let id = first.id.0.clone();
    proxy.rewrite("DescribeSpotInstanceRequests", move |b| {
        mark_for_termination(b, &id, Duration::from_secs(110))
    });
    let grace_ms = wait_for("the task's kill", Duration::from_secs(10), async || {
        let _ = h.ask(|r| Msg::Heartbeat(first.id.0.clone(), r)).await;
        queued_for(&h, &first.id.0)
            .await
            .into_iter()
            .find_map(|c| match c {
                AgentCommand::Kill { task: t, grace_ms } if t == task => Some(grace_ms),
                _ => None,
            })
    })
    .await;
    assert!(
        (7_000..=10_500).contains(&grace_ms),
        "the kill's grace is the notice's remaining time (~10 s), not kill_grace_ms: {grace_ms}"
    );
    assert!(proxy.calls("DescribeSpotInstanceRequests") > 0);
    report(
        &h,
        &first.id.0,
        vec![Report::Exited {
            task,
            exit_code: 143,
            oom: false,
        }],
    )
    .await;
    // The replacement task needs a node: a new instance, while the old one still runs.
    let second = wait_for(
        "a replacement instance",
        Duration::from_secs(30),
        async || {
            let _ = h.ask(|r| Msg::Heartbeat(first.id.0.clone(), r)).await;
            alive(&plane.pools)
                .await
                .into_iter()
                .find(|i| i.id != first.id)
        },
    )
    .await;
    assert!(
        alive(&plane.pools).await.iter().any(|i| i.id == first.id),
        "replaced before EC2 took it"
    );
    assert!(
        terminated(&tap).is_empty(),
        "Berth does not terminate it: EC2 takes it"
    );
    register(&h, &second).await;
    let moved = wait_for(
        "the task on the new node",
        Duration::from_secs(10),
        async || launched_on(&h, &second.id.0).await.first().copied(),
    )
    .await;
    assert_ne!(moved, task);
    // Nothing new goes to the draining node.
    assert!(launched_on(&h, &first.id.0)
        .await
        .iter()
        .all(|t| *t == task));
    // EC2 takes the old instance: noticed, and no further instance is asked for.
    plane
        .pools
        .client()
        .terminate_instances()
        .instance_ids(first.id.0.clone())
        .send()
        .await
        .expect("the reclaim");
    let asked = provisioned(&tap).len();
    for _ in 0..10 {
        let _ = h.ask(|r| Msg::Heartbeat(second.id.0.clone(), r)).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(provisioned(&tap).len(), asked, "{:?}", provisioned(&tap));
    let store = SqliteStore::open(data.path()).expect("store");
    let tasks = store
        .list_tasks(&berth_runtime::store::TaskFilter::default())
        .expect("tasks");
    assert!(
        tasks
            .iter()
            .any(|t| t.id == task && t.reason.as_deref() == Some("lost")),
        "the interrupted task ended lost (and was replaced, not retried against its budget): {tasks:?}"
    );
    plane.crash();
}

/// An instance that never registers as an agent within `timeouts.boot_ms` is terminated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_never_registers_is_terminated() {
    let moto = start_moto().await;
    let ec2 = ec2_config(POOLS, "boot", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let mut ctl = controller_config(&ec2);
    ctl.timeouts.boot_ms = 1_000;
    let (plane, _) = start_plane(data.path(), &ec2, ctl, true).await;
    submit(&plane.handle, job("one", 1, 1_500, 6_000)).await;
    let first = wait_for("an instance", Duration::from_secs(30), async || {
        alive(&plane.pools).await.into_iter().next()
    })
    .await;
    wait_for("its termination", Duration::from_secs(15), async || {
        let l = alive(&plane.pools).await;
        (!l.iter().any(|i| i.id == first.id)).then_some(())
    })
    .await;
    plane.crash();
}

/// An instance that vanishes behind Berth's back (terminated in the console): the reconcile
/// loop notices, its node is lost with its task, and the task's replacement gets a new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_instance_is_noticed_and_replaced() {
    let moto = start_moto().await;
    let ec2 = ec2_config(POOLS, "vanish", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    let h = plane.handle.clone();
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "name": "svc",
        "service": { "min": 1, "desired": 1, "max": 1 },
        "task": { "cpu_milli": 1500, "mem_mib": 6000 },
        "container": { "image": "local/none:1" }
    }))
    .expect("spec");
    submit(&h, spec).await;
    let first = wait_for("an instance", Duration::from_secs(30), async || {
        alive(&plane.pools).await.into_iter().next()
    })
    .await;
    register(&h, &first).await;
    wait_for("the task launched", Duration::from_secs(10), async || {
        (!launched_on(&h, &first.id.0).await.is_empty()).then_some(())
    })
    .await;
    plane
        .pools
        .client()
        .terminate_instances()
        .instance_ids(first.id.0.clone())
        .send()
        .await
        .expect("terminate behind Berth's back");
    let second = wait_for(
        "a replacement instance",
        Duration::from_secs(30),
        async || {
            let _ = h.ask(|r| Msg::Heartbeat(first.id.0.clone(), r)).await;
            alive(&plane.pools)
                .await
                .into_iter()
                .find(|i| i.id != first.id)
        },
    )
    .await;
    assert_eq!(second.pool, "flex");
    let store = SqliteStore::open(data.path()).expect("store");
    let tasks = store
        .list_tasks(&berth_runtime::store::TaskFilter::default())
        .expect("tasks");
    assert!(
        tasks.iter().any(|t| t.reason.as_deref() == Some("lost")),
        "the task on the vanished instance ended lost: {tasks:?}"
    );
    plane.crash();
}

/// A spot pool launches spot instances (CreateFleet with price-capacity-optimized).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_pool_launches_spot_instances() {
    let moto = start_moto().await;
    let text = POOLS.replace("max_nodes = 6", "max_nodes = 6\ncapacity_type = \"spot\"");
    let ec2 = ec2_config(&text, "spot", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let (plane, _) = start_plane(data.path(), &ec2, controller_config(&ec2), true).await;
    submit(&plane.handle, job("one", 1, 1_500, 6_000)).await;
    let list = wait_for("an instance", Duration::from_secs(30), async || {
        let l = alive(&plane.pools).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert!(list.iter().all(|i| i.spot), "{list:?}");
    plane.crash();
}
