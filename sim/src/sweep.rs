//! Parameter sweeps: a grid of scenario variants (placement policies x queue policies x pool
//! size factors x arrival-rate scales) run in parallel with rayon.

use crate::report::SimReport;
use crate::scenario::Scenario;
use crate::SimError;
use berth_solver::controller::QueuePolicy;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The grid. An empty list keeps the scenario's own value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default)]
    pub placements: Vec<String>,
    #[serde(default)]
    pub queues: Vec<QueuePolicy>,
    /// Factors applied to every pool's `max_nodes` (and `min_nodes`).
    #[serde(default)]
    pub pool_size_factors: Vec<f64>,
    #[serde(default)]
    pub rate_scales: Vec<f64>,
}

impl SweepSpec {
    /// The variants, each with a name, in grid order.
    pub fn variants(&self, base: &Scenario) -> Vec<(String, Scenario)> {
        let placements: Vec<Option<&String>> = if self.placements.is_empty() {
            vec![None]
        } else {
            self.placements.iter().map(Some).collect()
        };
        let queues: Vec<Option<QueuePolicy>> = if self.queues.is_empty() {
            vec![None]
        } else {
            self.queues.iter().copied().map(Some).collect()
        };
        let factors: Vec<Option<f64>> = if self.pool_size_factors.is_empty() {
            vec![None]
        } else {
            self.pool_size_factors.iter().copied().map(Some).collect()
        };
        let rates: Vec<Option<f64>> = if self.rate_scales.is_empty() {
            vec![None]
        } else {
            self.rate_scales.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for p in &placements {
            for q in &queues {
                for f in &factors {
                    for r in &rates {
                        let mut s = base.clone();
                        let mut name = Vec::new();
                        if let Some(p) = p {
                            s.policy.placement = (*p).clone();
                            s.policy.custom = None;
                            name.push(p.to_string());
                        }
                        if let Some(q) = q {
                            s.policy.queue = *q;
                            name.push(q.name().to_string());
                        }
                        if let Some(f) = f {
                            for pool in &mut s.cluster.pools {
                                pool.max_nodes =
                                    ((pool.max_nodes as f64 * f).round() as u32).max(1);
                                pool.min_nodes = ((pool.min_nodes as f64 * f).round() as u32)
                                    .min(pool.max_nodes);
                            }
                            name.push(format!("pools x{f}"));
                        }
                        if let Some(r) = r {
                            s.workload.rate_scale *= r;
                            name.push(format!("rate x{r}"));
                        }
                        let name = if name.is_empty() {
                            "base".to_string()
                        } else {
                            name.join(" / ")
                        };
                        s.name = format!("{} [{name}]", base.name);
                        out.push((name, s));
                    }
                }
            }
        }
        out
    }
}

/// Runs every variant of the grid in parallel; results in grid order.
pub fn sweep(base: &Scenario, spec: &SweepSpec) -> Vec<(String, Result<SimReport, SimError>)> {
    let variants = spec.variants(base);
    variants
        .into_par_iter()
        .map(|(name, s)| {
            let r = crate::run_scenario(&s, &mut |_| {});
            (name, r)
        })
        .collect()
}
