//! `berth pool plan` shows the autoscaler's own decision: the requests a `Controller` with the
//! same pools issues for the same pending demand (driven here as `berth serve` drives it,
//! step by step), with honest prices: on-demand from the catalogue, spot from
//! DescribeSpotPriceHistory when EC2 is asked (moto, `BERTH_MOTO_SERVER`), else said unknown.

#![cfg(feature = "ec2")]

use berth_runtime::ec2::Ec2Config;
use berth_solver::catalog::Catalog;
use berth_solver::controller::{Command, Controller, ControllerConfig, Event};
use berth_solver::{ClusterSpec, JobId, JobSpec};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Output, Stdio};
use std::time::{Duration, Instant};

const POOLS: &str = r#"
cluster = "plan"

[[pools]]
name = "critical"
tier = "critical"
instance_types = ["m5.2xlarge"]
zones = ["us-east-1a", "us-east-1b"]
min_nodes = 2
max_nodes = 4
image_id = "ami-12c6146b"

[[pools]]
name = "flex"
instance_types = ["m5.large", "m5.xlarge"]
zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
max_nodes = 6
capacity_type = "spot"
image_id = "ami-12c6146b"
"#;

/// Seven flex tasks (one m5.large each, or two an m5.xlarge) for a pool of at most six, and
/// one task no type of the pool can hold.
const DEMAND: &str = r#"
[[demand]]
count = 7
task = { cpu_milli = 1500, mem_mib = 6000 }

[[demand]]
count = 1
task = { cpu_milli = 60000, mem_mib = 1000 }
"#;

fn berth(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Process::new(env!("CARGO_BIN_EXE_berth"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the berth binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn plan_json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let o = berth(args, env);
    assert!(
        o.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// (pool, type, zone, count) of every request in the plan, in order.
fn requests(v: &serde_json::Value) -> Vec<(String, String, String, u32)> {
    v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pool"].as_str().unwrap().to_string(),
                r["instance_type"].as_str().unwrap().to_string(),
                r["zone"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// What the controller issues for this demand, driven as the runtime's actor drives it: its
/// first step starts the pools, the jobs arrive, the next autoscaler evaluation comes.
fn controller_requests(pools: &str, jobs: &[JobSpec]) -> Vec<(String, String, String, u32)> {
    let cfg = Ec2Config::from_toml(pools, Catalog::ec2()).expect("pools");
    let config = ControllerConfig {
        pools: cfg.pool_specs(Catalog::ec2()),
        ..ControllerConfig::default()
    };
    let interval = config.autoscale.interval_ms;
    let mut ctl = Controller::new(config, Catalog::ec2(), &ClusterSpec::default(), 7).unwrap();
    let mut cmds = ctl.step(0, Event::Tick);
    for (i, spec) in jobs.iter().enumerate() {
        cmds.extend(ctl.step(
            1,
            Event::JobSubmitted {
                job: JobId(100 + i as u64),
                spec: spec.clone(),
                requested_runtime_ms: None,
            },
        ));
    }
    cmds.extend(ctl.step(interval + 1, Event::Tick));
    cmds.into_iter()
        .filter_map(|c| match c {
            Command::ProvisionInstances {
                pool,
                instance_type,
                zone,
                count,
                ..
            } => Some((pool, instance_type, zone, count)),
            _ => None,
        })
        .collect()
}

fn demand_jobs() -> Vec<JobSpec> {
    [(7, 1_500, 6_000), (1, 60_000, 1_000)]
        .iter()
        .map(|&(n, cpu, mem)| {
            serde_json::from_value(serde_json::json!({
                "name": "d", "batch": { "size": n },
                "task": { "cpu_milli": cpu, "mem_mib": mem }
            }))
            .unwrap()
        })
        .collect()
}

#[test]
fn pool_plan_is_the_autoscalers_decision_with_honest_spot_prices() {
    let dir = tempfile::tempdir().unwrap();
    let pools = write(dir.path(), "pools.toml", POOLS);
    let demand = write(dir.path(), "demand.toml", DEMAND);
    let v = plan_json(
        &[
            "pool", "plan", "--demand", &demand, "--pools", &pools, "--json",
        ],
        &[],
    );
    let got = requests(&v);
    // Exactly what the controller issues.
    assert_eq!(got, controller_requests(POOLS, &demand_jobs()), "{v:#}");
    // Which means: the critical pool gets its minimum only (flex work never goes there),
    // spread over its zones; the flex pool stays within its maximum, one request per type
    // and zone, balanced over all three zones.
    let crit: Vec<_> = got.iter().filter(|r| r.0 == "critical").collect();
    assert_eq!(crit.iter().map(|r| r.3).sum::<u32>(), 2, "{got:?}");
    assert_eq!(crit.len(), 2, "one per zone: {got:?}");
    let flex: Vec<_> = got.iter().filter(|r| r.0 == "flex").collect();
    let flex_n: u32 = flex.iter().map(|r| r.3).sum();
    assert!((4..=6).contains(&flex_n), "{got:?}");
    let mut per_zone = std::collections::BTreeMap::new();
    for r in &flex {
        *per_zone.entry(r.2.clone()).or_insert(0u32) += r.3;
    }
    assert_eq!(per_zone.len(), 3, "all three zones: {got:?}");
    let (lo, hi) = (
        per_zone.values().min().unwrap(),
        per_zone.values().max().unwrap(),
    );
    assert!(hi - lo <= 1, "balanced: {per_zone:?}");
    // The task no flex type holds stays pending, with the controller's reason.
    assert_eq!(v["pending_after"], 1, "{v:#}");
    assert_eq!(v["unplaced"][0]["demand"], 1, "{v:#}");
    // Prices: on-demand from the catalogue; the spot pool says it has no spot price.
    for r in v["requests"].as_array().unwrap() {
        let t = Catalog::ec2()
            .get(r["instance_type"].as_str().unwrap())
            .unwrap();
        assert_eq!(r["usd_per_hour_each"].as_f64().unwrap(), t.usd_per_hour());
        let want = if r["pool"] == "flex" {
            "on-demand price, spot discount unknown"
        } else {
            "on-demand (catalogue)"
        };
        assert_eq!(r["price"], want, "{r}");
    }

    // The table says the same.
    let o = berth(
        &["pool", "plan", "--demand", &demand, "--pools", &pools],
        &[],
    );
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("spot discount unknown"), "{out}");
    assert!(out.contains("instances,") && out.contains("$/h"), "{out}");
    assert!(out.contains("would still be pending"), "{out}");
}

// ----- against moto ---------------------------------------------------------------------------

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_path() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/berth/venv-moto/bin/moto_server");
    assert!(
        p.exists(),
        "this test needs moto_server (moto[server,ec2]==5.2.5): run scripts/moto and set \
         BERTH_MOTO_SERVER to the path it prints"
    );
    p
}

fn start_moto() -> (Moto, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Process::new(moto_path())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto(child);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "moto did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (moto, format!("http://127.0.0.1:{port}"))
}

/// With an EC2 endpoint: specs from DescribeInstanceTypes, the spot pool priced from
/// DescribeSpotPriceHistory (moto's is a fixed $0.00001), the on-demand pool from the
/// catalogue; the requests are the same as without (moto's m5 specs are the catalogue's).
#[test]
fn pool_plan_asks_ec2_for_specs_and_spot_prices() {
    let (_moto, url) = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let pools = write(dir.path(), "pools.toml", POOLS);
    let demand = write(dir.path(), "demand.toml", DEMAND);
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let v = plan_json(
        &[
            "pool",
            "plan",
            "--demand",
            &demand,
            "--pools",
            &pools,
            "--ec2-endpoint",
            &url,
            "--json",
        ],
        &env,
    );
    assert_eq!(
        requests(&v),
        controller_requests(POOLS, &demand_jobs()),
        "{v:#}"
    );
    assert!(
        v["specs"]
            .as_str()
            .unwrap()
            .contains("DescribeInstanceTypes"),
        "{v:#}"
    );
    assert!(
        v["spot_prices"]
            .as_str()
            .unwrap()
            .contains("DescribeSpotPriceHistory"),
        "{v:#}"
    );
    for r in v["requests"].as_array().unwrap() {
        if r["pool"] == "flex" {
            assert_eq!(r["price"], "spot (DescribeSpotPriceHistory)", "{r}");
            assert_eq!(r["usd_per_hour_each"].as_f64().unwrap(), 0.00001, "{r}");
        } else {
            assert_eq!(r["price"], "on-demand (catalogue)", "{r}");
        }
    }
    // A pool type EC2 does not know: refused, naming the field.
    let bad = write(
        dir.path(),
        "bad.toml",
        &POOLS.replace("[\"m5.2xlarge\"]", "[\"m5.2xlarge\", \"p3.8xlarge\"]"),
    );
    let o = berth(
        &[
            "pool",
            "plan",
            "--demand",
            &demand,
            "--pools",
            &bad,
            "--ec2-endpoint",
            &url,
        ],
        &env,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pools[0].instance_types[1]") && err.contains("p3.8xlarge"),
        "{err}"
    );
}
