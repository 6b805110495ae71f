//! `berth pool plan`: what the instance-mix optimiser (the autoscaler's own, `plan_mix`) would
//! buy for a pending demand, and what it costs per hour. Needs no AWS: the shipped catalogue.

use anyhow::{Context, Result};
use berth_solver::catalog::{Catalog, InstanceType};
use berth_solver::mix::{plan_mix, MixConfig, MixLimits, MixRequest, ZoneBalance};
use berth_solver::TaskShape;
use clap::{Args, Subcommand};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Show what the optimiser would launch for a pending demand, and the cost per hour.
    #[command(after_help = "Examples:\n  \
        berth pool plan --demand demand.toml\n  \
        berth pool plan --demand demand.toml --pools pools.toml\n\n\
        demand.toml:\n  \
        zones = [\"us-east-1a\", \"us-east-1b\"]   # without --pools (default: us-east-1a)\n  \
        [[demand]]\n  \
        count = 10\n  \
        task = { cpu_milli = 1500, mem_mib = 6000 }")]
    Plan(PlanArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    /// Pending demand (TOML: `[[demand]] count = N, task = { cpu_milli, mem_mib, gpu, … }`).
    #[arg(long)]
    demand: PathBuf,
    /// EC2 pools file (as `berth serve --pools`): one plan per pool (each for the whole
    /// demand), with its types, zones and maximum. Without it: every catalogue type.
    #[arg(long)]
    pools: Option<PathBuf>,
    /// Use the MILP (as `autoscale.mix_milp`); the autoscaler's default is greedy.
    #[arg(long)]
    milp: bool,
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
}

/// A pool to plan for: its name, types, zones, size limit.
struct PlanPool {
    name: String,
    types: Vec<InstanceType>,
    zones: Vec<String>,
    max: Option<u32>,
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
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        anyhow::anyhow!(
            "{}: {}: {}",
            path.display(),
            at,
            e.into_inner().message().trim()
        )
    })
}

#[cfg(feature = "ec2")]
fn read_pools(path: &PathBuf, catalog: &Catalog) -> Result<Vec<PlanPool>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = berth_runtime::ec2::Ec2Config::from_toml(&text, catalog)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cfg
        .pool_specs(catalog)
        .into_iter()
        .map(|p| PlanPool {
            name: p.name,
            types: p
                .instance_types
                .iter()
                .filter_map(|t| catalog.get(t).cloned())
                .collect(),
            zones: p.zones,
            max: Some(p.max_nodes),
        })
        .collect())
}

#[cfg(not(feature = "ec2"))]
fn read_pools(_path: &PathBuf, _catalog: &Catalog) -> Result<Vec<PlanPool>> {
    anyhow::bail!("--pools needs the `ec2` feature (this binary was built without it)")
}

fn plan(a: PlanArgs) -> Result<ExitCode> {
    let catalog = Catalog::ec2();
    let demand = read_demand(&a.demand)?;
    let pools = match &a.pools {
        Some(p) => read_pools(p, catalog)?,
        None => vec![PlanPool {
            name: "catalogue".into(),
            types: catalog.types.clone(),
            zones: if demand.zones.is_empty() {
                vec!["us-east-1a".into()]
            } else {
                demand.zones.clone()
            },
            max: None,
        }],
    };
    let shapes: Vec<(TaskShape, u32)> = demand
        .demand
        .iter()
        .map(|d| (d.task.clone(), d.count))
        .collect();
    let cfg = MixConfig {
        greedy_only: !a.milp,
        ..MixConfig::default()
    };
    println!("prices: {}: {}", catalog.region, catalog.source);
    for p in &pools {
        let req = MixRequest {
            demand: shapes.clone(),
            types: p.types.clone(),
            zones: p.zones.clone(),
            limits: MixLimits {
                total_max: p.max,
                ..MixLimits::default()
            },
            zone_balance: ZoneBalance::None,
        };
        let plan = plan_mix(&req, &cfg).map_err(|e| anyhow::anyhow!("pool {}: {e}", p.name))?;
        println!(
            "\npool {} ({} types, zones {})",
            p.name,
            p.types.len(),
            p.zones.join(",")
        );
        println!(
            "  {:<16} {:<12} {:>5} {:>10} {:>10}",
            "type", "zone", "count", "$/h each", "$/h"
        );
        for l in &plan.launches {
            let price = catalog
                .get(&l.instance_type)
                .map(|t| t.price_per_hour_micro_usd)
                .unwrap_or(0);
            println!(
                "  {:<16} {:<12} {:>5} {:>10.4} {:>10.4}",
                l.instance_type,
                l.zone,
                l.count,
                price as f64 / 1e6,
                (price * u64::from(l.count)) as f64 / 1e6
            );
        }
        println!(
            "  {} instances, {:.4} $/h ({:?})",
            plan.instance_count(),
            plan.cost_per_hour_usd(),
            plan.method
        );
        for u in &plan.unplaceable {
            println!("  cannot provision for {} task(s): {:?}", u.count, u.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}
