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
use berth_runtime::api_types::{CommandBatch, RegisterRequest, Report};
use berth_runtime::cloud::{CloudCommand, ProvisionRequest, CLOUD_QUEUE_MAX};
use berth_runtime::control::{self, ControlConfig, ControlHandle, Msg};
use berth_runtime::ec2::{driver, CloudInstance, Ec2Config, Ec2Pools};
use berth_runtime::metrics::Metrics;
use berth_runtime::store::{SqliteStore, Store};
use berth_solver::catalog::Catalog;
use berth_solver::controller::{Command, Controller, ControllerConfig, RequestId};
use berth_solver::{ClusterSpec, JobId, JobSpec, Resources, TaskId};
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

#[derive(Clone, Default)]
struct ProxyState {
    upstream: String,
    faults: Arc<Mutex<Vec<Fault>>>,
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
            let b = r.bytes().await.unwrap_or_default();
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
/// handed back instead (the test then plays the driver, or lets the commands die).
async fn start_plane(
    data: &Path,
    ec2: &Ec2Config,
    ctl: ControllerConfig,
    run_driver: bool,
) -> (Plane, Option<mpsc::Receiver<CloudCommand>>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data).expect("store"));
    let (tx, rx) = mpsc::channel(CLOUD_QUEUE_MAX);
    let config = ControlConfig {
        controller: ctl,
        cloud: Some(tx),
        ..ControlConfig::default()
    };
    let (handle, actor) =
        control::spawn(config, store, Arc::new(Metrics::default())).expect("control plane");
    let pools = Arc::new(Ec2Pools::connect(ec2.clone(), 7).await);
    pools
        .ensure_launch_templates()
        .await
        .expect("launch template");
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

/// Registers an agent for an instance, as its user data would.
async fn register(h: &ControlHandle, i: &CloudInstance) {
    let t = Catalog::ec2()
        .get(&i.instance_type)
        .expect("catalogue type");
    let req = RegisterRequest {
        name: i.id.0.clone(),
        capacity: Resources::new(u64::from(t.vcpu) * 1000, t.mem_mib, 10_000, 1_000),
        zone: i.zone.clone(),
        instance_type: i.instance_type.clone(),
        url: format!("http://{}.invalid", i.id),
        tasks: Vec::new(),
        instance_id: Some(i.id.0.clone()),
    };
    h.ask(|r| Msg::Register(req, r)).await.expect("register");
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

/// The simulator and the production service make the same choices for the same inputs:
/// the events the runtime committed (with their times) are fed to a `Controller` built the
/// way `berth_sim::engine` builds its own (`Controller::new(config, catalog, cluster, seed)`
/// then `step`), and its `ProvisionInstances` are exactly the requests the EC2 driver
/// received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_and_runtime_make_the_same_provisioning_choices() {
    let moto = start_moto().await;
    let ec2 = ec2_config(POOLS, "same", &moto.url);
    let data = tempfile::tempdir().expect("tempdir");
    let ctl = controller_config(&ec2);
    let (plane, rx) = start_plane(data.path(), &ec2, ctl.clone(), false).await;
    let mut rx = rx.expect("queue");
    submit(&plane.handle, job("a", 5, 1_500, 6_000)).await;
    submit(&plane.handle, job("b", 2, 3_500, 14_000)).await;
    let mut runtime_reqs: Vec<ProvisionRequest> = Vec::new();
    wait_for("provisioning", Duration::from_secs(10), async || {
        while let Ok(CloudCommand::Provision(p)) = rx.try_recv() {
            runtime_reqs.push(p);
        }
        (runtime_reqs.iter().map(|r| r.count).sum::<u32>() >= 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(CloudCommand::Provision(p)) = rx.try_recv() {
        runtime_reqs.push(p);
    }
    plane.crash();
    let store = SqliteStore::open(data.path()).expect("store");
    let events = store.load_events().expect("events");
    let mut sim = Controller::new(ctl, Catalog::ec2(), &ClusterSpec::default(), 7).expect("ctl");
    let mut sim_reqs = Vec::new();
    for (now_ms, ev) in events {
        for c in sim.step(now_ms, ev) {
            if let Command::ProvisionInstances {
                request,
                pool,
                instance_type,
                zone,
                count,
            } = c
            {
                sim_reqs.push(ProvisionRequest {
                    request,
                    pool,
                    instance_type,
                    zone,
                    count,
                });
            }
        }
    }
    assert!(!runtime_reqs.is_empty());
    assert_eq!(sim_reqs, runtime_reqs);
    drop(moto);
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
