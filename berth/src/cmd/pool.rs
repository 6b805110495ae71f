//! `berth pool plan`: what the autoscaler would issue for a pending demand, and what it costs
//! per hour. The decisions are the controller's own (`berth_solver::controller::plan_provisioning`
//! steps a `Controller` on empty pools, as `berth serve` and the simulator do): all pools at
//! once, tier routing, pool limits, one request per type and zone, zones balanced.
//!
//! Prices: the shipped catalogue's on-demand prices; for spot pools the latest spot price
//! from DescribeSpotPriceHistory when EC2 is asked (`--ec2` / `--ec2-endpoint`), else the
//! on-demand price, said so ("spot discount unknown").

use anyhow::{Context, Result};
use berth_solver::catalog::{Catalog, MICRO_USD_PER_USD};
use berth_solver::controller::{
    plan_provisioning, CapacityType, ControllerConfig, PlannedRequest, PoolSpec,
};
use berth_solver::job::{BatchSpec, Constraints, JobKind, JobSpec, Tier};
use berth_solver::TaskShape;
use clap::{Args, Subcommand};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Show what the autoscaler would launch for a pending demand, and the cost per hour.
    #[command(after_help = "Examples:\n  \
        berth pool plan --demand demand.toml\n  \
        berth pool plan --demand demand.toml --pools pools.toml\n  \
        berth pool plan --demand demand.toml --pools pools.toml --ec2-endpoint http://127.0.0.1:5000\n\n\
        demand.toml:\n  \
        zones = [\"us-east-1a\", \"us-east-1b\"]   # without --pools (default: us-east-1a)\n  \
        [[demand]]\n  \
        count = 10\n  \
        task = { cpu_milli = 1500, mem_mib = 6000 }\n  \
        tier = \"flex\"                          # optional; critical work goes to critical pools")]
    Plan(PlanArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    /// Pending demand (TOML: `[[demand]] count = N, task = { cpu_milli, mem_mib, gpu, … }`,
    /// optional `tier`, `capacity_group`, `constraints`).
    #[arg(long)]
    demand: PathBuf,
    /// EC2 pools file (as `berth serve --pools`): the controller plans all its pools at once.
    /// Without it: one flex pool of every catalogue type in the demand file's zones.
    #[arg(long)]
    pools: Option<PathBuf>,
    /// Use the MILP (as `autoscale.mix_milp`); the autoscaler's default is greedy.
    #[arg(long)]
    milp: bool,
    /// Ask EC2 (the pools file's endpoint and the standard AWS credential chain): instance
    /// specs from DescribeInstanceTypes, spot prices from DescribeSpotPriceHistory.
    #[arg(long)]
    ec2: bool,
    /// Ask this EC2 endpoint (implies --ec2; overrides the pools file's `endpoint_url`).
    #[arg(long)]
    ec2_endpoint: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemandDoc {
    #[serde(default)]
    zones: Vec<String>,
    demand: Vec<DemandItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemandItem {
    count: u32,
    task: TaskShape,
    #[serde(default)]
    tier: Tier,
    #[serde(default)]
    capacity_group: Option<String>,
    #[serde(default)]
    constraints: Constraints,
}

/// What the plan is built from: pools, the catalogue (prices, and specs), spot prices.
struct Inputs {
    pools: Vec<PoolSpec>,
    catalog: Catalog,
    /// Where the specs come from (said in the output).
    specs: String,
    /// (type, zone) → latest spot price, micro-dollars per hour, and where it came from.
    spot: BTreeMap<(String, String), u64>,
    spot_source: Option<String>,
}

pub fn run(c: PoolCmd) -> Result<ExitCode> {
    match c {
        PoolCmd::Plan(a) => plan(a),
    }
}

fn read_demand(path: &PathBuf) -> Result<DemandDoc> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let de = toml::Deserializer::new(&text);
    let doc: DemandDoc = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        anyhow::anyhow!(
            "{}: {}: {}",
            path.display(),
            at,
            e.into_inner().message().trim()
        )
    })?;
    for (i, d) in doc.demand.iter().enumerate() {
        if d.count == 0 {
            anyhow::bail!("{}: demand[{i}].count: must be at least 1", path.display());
        }
    }
    Ok(doc)
}

#[cfg(feature = "ec2")]
fn read_pools(a: &PlanArgs, path: &PathBuf) -> Result<Inputs> {
    use berth_runtime::ec2::{Ec2Config, Ec2Pools};
    let shipped = Catalog::ec2();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cfg = Ec2Config::from_toml(&text, shipped)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(url) = &a.ec2_endpoint {
        cfg.endpoint_url = Some(url.clone());
    }
    if !(a.ec2 || a.ec2_endpoint.is_some()) {
        return Ok(Inputs {
            pools: cfg.pool_specs(shipped),
            catalog: shipped.clone(),
            specs: "the shipped catalogue".into(),
            spot: BTreeMap::new(),
            spot_source: None,
        });
    }
    let endpoint = cfg
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("AWS {}", cfg.region));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let ec2 = Ec2Pools::connect(cfg.clone(), 0).await;
        let (catalog, source) = ec2
            .instance_catalog(shipped)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let pools = cfg.pool_specs(&catalog);
        let spot_types: Vec<String> = {
            let mut v: Vec<String> = pools
                .iter()
                .filter(|p| p.capacity_type == CapacityType::Spot)
                .flat_map(|p| p.instance_types.iter().cloned())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let (spot, spot_source) = if spot_types.is_empty() {
            (BTreeMap::new(), None)
        } else {
            match ec2.spot_prices(&spot_types).await {
                Ok(prices) => (
                    prices
                        .into_iter()
                        .map(|p| ((p.instance_type, p.zone), p.price_per_hour_micro_usd))
                        .collect(),
                    Some(format!(
                        "latest Linux/UNIX spot price, DescribeSpotPriceHistory at {endpoint}"
                    )),
                ),
                Err(e) => {
                    eprintln!(
                        "berth: DescribeSpotPriceHistory failed ({e}); spot pools priced on demand"
                    );
                    (BTreeMap::new(), None)
                }
            }
        };
        Ok(Inputs {
            pools,
            catalog,
            specs: format!("{source} ({endpoint})"),
            spot,
            spot_source,
        })
    })
}

#[cfg(not(feature = "ec2"))]
fn read_pools(_a: &PlanArgs, _path: &PathBuf) -> Result<Inputs> {
    anyhow::bail!("--pools needs the `ec2` feature (this binary was built without it)")
}

/// How a request's instances are priced.
fn price_of(inputs: &Inputs, spot: bool, r: &PlannedRequest) -> (u64, String) {
    let on_demand = inputs
        .catalog
        .get(&r.instance_type)
        .map_or(0, |t| t.price_per_hour_micro_usd);
    if !spot {
        return (on_demand, "on-demand (catalogue)".into());
    }
    match (
        inputs.spot.get(&(r.instance_type.clone(), r.zone.clone())),
        &inputs.spot_source,
    ) {
        (Some(&p), Some(_)) => (p, "spot (DescribeSpotPriceHistory)".into()),
        _ => (on_demand, "on-demand price, spot discount unknown".into()),
    }
}

fn plan(a: PlanArgs) -> Result<ExitCode> {
    let demand = read_demand(&a.demand)?;
    let inputs = match &a.pools {
        Some(p) => read_pools(&a, p)?,
        None => {
            if a.ec2 || a.ec2_endpoint.is_some() {
                anyhow::bail!("--ec2 needs --pools (the region, endpoint and pools to ask about)");
            }
            let catalog = Catalog::ec2();
            let zones = if demand.zones.is_empty() {
                vec!["us-east-1a".to_string()]
            } else {
                demand.zones.clone()
            };
            Inputs {
                pools: vec![PoolSpec {
                    name: "catalogue".into(),
                    tier: Tier::Flex,
                    instance_types: catalog.types.iter().map(|t| t.name.clone()).collect(),
                    zones,
                    min_nodes: 0,
                    max_nodes: u32::MAX / 2,
                    autoscale: Some(true),
                    idle_nodes_min: 0,
                    idle_nodes_max: 0,
                    scale_down_idle_ms: 300_000,
                    disruption_budget: Default::default(),
                    zone_max_skew: 1,
                    capacity_type: CapacityType::OnDemand,
                }],
                catalog: catalog.clone(),
                specs: "the shipped catalogue".into(),
                spot: BTreeMap::new(),
                spot_source: None,
            }
        }
    };
    let jobs: Vec<JobSpec> = demand
        .demand
        .iter()
        .enumerate()
        .map(|(i, d)| JobSpec {
            name: format!("demand-{i}"),
            owner: String::new(),
            tier: d.tier,
            capacity_group: d.capacity_group.clone().unwrap_or_else(|| "default".into()),
            kind: JobKind::Batch(BatchSpec {
                size: d.count,
                runtime_limit_ms: None,
                retry: Default::default(),
                gang: false,
            }),
            task: d.task.clone(),
            constraints: d.constraints.clone(),
            container: None,
        })
        .collect();
    for (i, j) in jobs.iter().enumerate() {
        berth_solver::spec::validate_job(j)
            .map_err(|e| anyhow::anyhow!("{}: demand[{i}]: {e}", a.demand.display()))?;
    }
    let mut config = ControllerConfig {
        pools: inputs.pools.clone(),
        ..ControllerConfig::default()
    };
    config.autoscale.mix_milp = a.milp;
    let plan = plan_provisioning(config, &inputs.catalog, &jobs, 7)
        .map_err(|e| anyhow::anyhow!("pools: {e}"))?;

    let spot_pool: BTreeMap<&str, bool> = inputs
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.capacity_type == CapacityType::Spot))
        .collect();
    let priced: Vec<(&PlannedRequest, u64, String, &str)> = plan
        .baseline
        .iter()
        .map(|r| (r, "minimum / headroom"))
        .chain(plan.demand.iter().map(|r| (r, "demand")))
        .map(|(r, why)| {
            let spot = spot_pool.get(r.pool.as_str()).copied().unwrap_or(false);
            let (p, src) = price_of(&inputs, spot, r);
            (r, p, src, why)
        })
        .collect();
    let total_micro: u64 = priced
        .iter()
        .map(|(r, p, _, _)| p * u64::from(r.count))
        .sum();
    let instances: u32 = priced.iter().map(|(r, _, _, _)| r.count).sum();
    let usd = |m: u64| m as f64 / MICRO_USD_PER_USD as f64;

    if a.json {
        let requests: Vec<serde_json::Value> = priced
            .iter()
            .map(|(r, p, src, why)| {
                serde_json::json!({
                    "pool": r.pool, "instance_type": r.instance_type, "zone": r.zone,
                    "count": r.count, "for": why, "usd_per_hour_each": usd(*p),
                    "usd_per_hour": usd(p * u64::from(r.count)), "price": src,
                })
            })
            .collect();
        let out = serde_json::json!({
            "prices": format!("on-demand: {}", inputs.catalog.source),
            "specs": inputs.specs,
            "spot_prices": inputs.spot_source,
            "requests": requests,
            "instances": instances,
            "usd_per_hour": usd(total_micro),
            "pending_after": plan.pending_after,
            "unplaced": plan.unplaced.iter().map(|(j, why)| serde_json::json!({
                "demand": j.0 - 1, "why": why
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }

    let shipped = Catalog::ec2();
    println!(
        "prices: on-demand from the shipped catalogue ({}: {})",
        shipped.region, shipped.source
    );
    println!("specs: {}", inputs.specs);
    if let Some(s) = &inputs.spot_source {
        println!("spot prices: {s}");
    }
    println!("requests, in the order the autoscaler issues them (one per type and zone):");
    println!(
        "  {:<12} {:<16} {:<12} {:>5} {:>10} {:>10}  {:<18} price",
        "pool", "type", "zone", "count", "$/h each", "$/h", "for"
    );
    for (r, p, src, why) in &priced {
        println!(
            "  {:<12} {:<16} {:<12} {:>5} {:>10.5} {:>10.5}  {:<18} {}",
            r.pool,
            r.instance_type,
            r.zone,
            r.count,
            usd(*p),
            usd(p * u64::from(r.count)),
            why,
            src
        );
    }
    println!("  {instances} instances, {:.5} $/h", usd(total_micro));
    if plan.pending_after > 0 {
        println!(
            "  {} task(s) would still be pending once these instances run:",
            plan.pending_after
        );
        for (j, why) in &plan.unplaced {
            println!("    demand[{}]: {why}", j.0 - 1);
        }
    }
    Ok(ExitCode::SUCCESS)
}
