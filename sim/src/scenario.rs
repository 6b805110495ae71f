//! Scenario files: what to simulate (cluster, workload, policy, faults, seed, horizon).
//!
//! TOML, unknown fields refused, every error naming the field path (`faults.node_loss_per_node_hour`)
//! and the line, all before any run starts: [`Scenario::validate`] (at load, and again at the
//! start of a run) checks values and the names taken from the instance catalogue (pool types and
//! zones, `cluster.pools[i].…`; fault and timing types); [`Scenario::check_files`] (at the start
//! of a run, before any file is read) that the trace and node list exist.
//!
//! Paths in a scenario resolve relative to the scenario file; a path starting with
//! `$BERTH_TRACES_DIR/` resolves against that variable (else `<workspace>/../shared/traces`).

use berth_solver::catalog::Catalog;
use berth_solver::controller::{
    AutoscaleConfig, ControllerConfig, ControllerError, PoolSpec, QueuePolicy, Timeouts,
};
use berth_solver::spec::{parse, ClusterFile, SpecError, SpecFormat};
use berth_solver::Policy;
use berth_traces::SyntheticSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The embedded default scenario (`berth sim run` with no file).
pub const DEFAULT_SCENARIO_TOML: &str = include_str!("../scenarios/default.toml");

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    /// One seed for everything random in the run (faults, latencies, placement ties).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time at which the run stops.
    pub horizon_ms: u64,
    pub cluster: ClusterSection,
    pub workload: WorkloadSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The folder relative paths resolve against (the scenario file's folder). Not in files.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_seed() -> u64 {
    1
}

/// The cluster: static nodes (a trace's node list and/or inline groups) and pools the
/// controller provisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// A node list file: an openb node list, an SWF `.machines` file. `from_workload = true`
    /// takes the workload trace's own node list instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_file: Option<String>,
    #[serde(default)]
    pub from_workload: bool,
    /// Inline nodes, in the cluster file format of `berth_solver::spec` (`[[cluster.node_groups]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<berth_solver::spec::NodeEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<berth_solver::spec::NodeEntry>,
    /// Pools of instance types x zones the controller provisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolSpec>,
}

impl ClusterSection {
    pub(crate) fn inline(&self) -> ClusterFile {
        ClusterFile {
            nodes: self.nodes.clone(),
            node_groups: self.node_groups.clone(),
        }
    }
}

/// The workload: a trace or the synthetic generator, with transforms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticSpec>,
    /// Keep only jobs submitted in `[from_ms, to_ms)` (trace time), shifted to start at 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Arrival-rate scale: submit times are divided by it (2.0 = twice as many per hour).
    #[serde(default = "one_f64")]
    pub rate_scale: f64,
    /// Keep each job with this probability (seeded).
    #[serde(default = "one_f64")]
    pub sample: f64,
    /// Copies of every job (workload inflation); copy k arrives `k * inflation_offset_ms` later.
    #[serde(default = "one_u32")]
    pub inflation: u32,
    #[serde(default)]
    pub inflation_offset_ms: u64,
    /// Capacity group of trace jobs: "class" (the trace's class: openb qos, SWF queue) or a
    /// fixed name. Default: "class".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_group: Option<String>,
    /// Retries of failed batch tasks.
    #[serde(default)]
    pub retry: berth_solver::RetryPolicy,
}

fn one_f64() -> f64 {
    1.0
}
fn one_u32() -> u32 {
    1
}

/// A trace file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSource {
    pub path: String,
    /// `openb-pods`, `alibaba-2017`, `swf`; detected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Skip bad lines instead of stopping at the first.
    #[serde(default)]
    pub skip_bad: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Placement and queue policy, and controller tuning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// A placement preset name (`berth`, `fgd`, `best_fit`, ...). Ignored when `custom` is given.
    #[serde(default = "default_placement")]
    pub placement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Policy>,
    #[serde(default)]
    pub queue: QueuePolicy,
    #[serde(default)]
    pub schedule_interval_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead_jobs_max: Option<u32>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub autoscale: AutoscaleConfig,
}

fn default_placement() -> String {
    "berth".to_string()
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            placement: default_placement(),
            custom: None,
            queue: QueuePolicy::default(),
            schedule_interval_ms: 0,
            lookahead_jobs_max: None,
            timeouts: Timeouts::default(),
            autoscale: AutoscaleConfig::default(),
        }
    }
}

impl PolicySection {
    pub fn placement_policy(&self) -> Result<Policy, SpecError> {
        match &self.custom {
            Some(p) => {
                p.validate()
                    .map_err(|e| SpecError::new("policy.custom", e.to_string()))?;
                Ok(p.clone())
            }
            None => Policy::preset(&self.placement)
                .map_err(|e| SpecError::new("policy.placement", e.to_string())),
        }
    }
}

/// Faults, each as a rate or a schedule. All rates default to 0 (no fault).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Each node is lost at this rate (exponential time to loss).
    #[serde(default)]
    pub node_loss_per_node_hour: f64,
    /// Nodes lost at given times: `{ at_ms = 3600000, node = 12 }`. `node` indexes the static
    /// nodes (a node list file, then the workload's, then the inline ones); an index past them
    /// is refused (before the run with inline nodes only, else when the files are read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_loss_at: Vec<NodeLossAt>,
    /// Each spot instance gets a two-minute interruption notice at this rate.
    #[serde(default)]
    pub spot_interruption_per_node_hour: f64,
    /// Probability that a container launch fails.
    #[serde(default)]
    pub launch_failure_probability: f64,
    /// Probability that an instance launch fails (error kind "other").
    #[serde(default)]
    pub instance_launch_failure_probability: f64,
    /// Windows where a type has no capacity in a zone (EC2 `InsufficientInstanceCapacity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insufficient_capacity: Vec<CapacityOutage>,
    /// Each running container crashes (exit code 1) at this rate.
    #[serde(default)]
    pub container_crash_per_task_hour: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLossAt {
    pub at_ms: u64,
    /// The node's id (static nodes are numbered from 0 in file order).
    pub node: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityOutage {
    pub instance_type: String,
    pub zone: String,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// A log-normal duration: median and sigma of `ln`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNormalMs {
    pub median_ms: u64,
    #[serde(default)]
    pub sigma: f64,
}

/// Latencies of the simulated world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Container launch: from the launch command to running.
    #[serde(default = "default_launch_latency")]
    pub container_launch: LogNormalMs,
    /// Kill: from the kill command to the exit (capped by the grace period).
    #[serde(default = "default_kill_latency_ms")]
    pub kill_latency_ms: u64,
    /// Instance provisioning: from the request to a ready node.
    #[serde(default = "default_provisioning")]
    pub provisioning: LogNormalMs,
    /// Per instance type, overriding `provisioning`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub provisioning_by_type: std::collections::BTreeMap<String, LogNormalMs>,
    /// From the request to the cloud's answer (instance created, or an error).
    #[serde(default = "default_api_latency_ms")]
    pub api_latency_ms: u64,
    /// Service lifetime when the workload does not give one: `None` = until the horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_duration_default_ms: Option<u64>,
}

fn default_launch_latency() -> LogNormalMs {
    LogNormalMs {
        median_ms: 2_000,
        sigma: 0.3,
    }
}
fn default_kill_latency_ms() -> u64 {
    1_000
}
fn default_provisioning() -> LogNormalMs {
    LogNormalMs {
        median_ms: 90_000,
        sigma: 0.2,
    }
}
fn default_api_latency_ms() -> u64 {
    1_000
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            container_launch: default_launch_latency(),
            kill_latency_ms: default_kill_latency_ms(),
            provisioning: default_provisioning(),
            provisioning_by_type: Default::default(),
            api_latency_ms: default_api_latency_ms(),
            batch_duration_default_ms: None,
        }
    }
}

/// Metrics sampling.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Sampling interval; 0 = `horizon_ms / samples_max`.
    #[serde(default)]
    pub interval_ms: u64,
    #[serde(default = "default_samples_max")]
    pub samples_max: u32,
    /// Write one row per task to `tasks.csv`.
    #[serde(default = "yes")]
    pub per_task: bool,
}

fn default_samples_max() -> u32 {
    2_000
}
fn yes() -> bool {
    true
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            interval_ms: 0,
            samples_max: default_samples_max(),
            per_task: true,
        }
    }
}

/// A scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `file: path: message`.
    #[error("{file}: {error}")]
    Invalid { file: String, error: SpecError },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

impl Scenario {
    /// Parses and checks a scenario; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Scenario, SpecError> {
        let mut s: Scenario = parse(text, SpecFormat::Toml)?;
        s.base_dir = base_dir.to_path_buf();
        s.validate()?;
        Ok(s)
    }

    /// Loads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: file.clone(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Scenario::from_toml(&text, &base).map_err(|error| ScenarioError::Invalid { file, error })
    }

    /// The embedded default scenario.
    pub fn default_scenario() -> Scenario {
        Scenario::from_toml(DEFAULT_SCENARIO_TOML, Path::new("."))
            .unwrap_or_else(|e| panic!("sim/scenarios/default.toml is invalid: {e}"))
    }

    /// The controller configuration the run uses (FGD typical types are added by the run,
    /// from the workload).
    pub fn controller_config(&self) -> Result<ControllerConfig, SpecError> {
        Ok(ControllerConfig {
            policy: self.policy.placement_policy()?,
            queue: self.policy.queue,
            pools: self.cluster.pools.clone(),
            timeouts: self.policy.timeouts,
            autoscale: self.policy.autoscale,
            schedule_interval_ms: self.policy.schedule_interval_ms,
            lookahead_jobs_max: self
                .policy
                .lookahead_jobs_max
                .unwrap_or(ControllerConfig::default().lookahead_jobs_max),
            ..ControllerConfig::default()
        })
    }

    /// Checks ranges and cross-field rules, and the names the scenario takes from the instance
    /// catalogue (pool types and zones, fault and timing types). Reads no file: see
    /// [`Scenario::check_files`].
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.horizon_ms == 0 {
            return Err(SpecError::new("horizon_ms", "must be positive"));
        }
        let w = &self.workload;
        match (&w.trace, &w.synthetic) {
            (None, None) => {
                return Err(SpecError::new(
                    "workload",
                    "give [workload.trace] or [workload.synthetic]",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(SpecError::new(
                    "workload",
                    "give one of trace or synthetic, not both",
                ))
            }
            (None, Some(s)) => s
                .validate()
                .map_err(|e| SpecError::new(format!("workload.synthetic.{}", e.path), e.message))?,
            (Some(t), None) => {
                if let Some(f) = &t.format {
                    if berth_traces::TraceFormat::from_name(f).is_none() {
                        return Err(SpecError::new(
                            "workload.trace.format",
                            format!("unknown format {f:?}"),
                        ));
                    }
                }
            }
        }
        if !(w.rate_scale.is_finite() && w.rate_scale > 0.0) {
            return Err(SpecError::new(
                "workload.rate_scale",
                "must be a positive number",
            ));
        }
        if !(0.0..=1.0).contains(&w.sample) || w.sample == 0.0 {
            return Err(SpecError::new("workload.sample", "must be in (0, 1]"));
        }
        if w.inflation == 0 {
            return Err(SpecError::new("workload.inflation", "must be at least 1"));
        }
        if let Some(win) = w.window {
            if win.to_ms <= win.from_ms {
                return Err(SpecError::new(
                    "workload.window",
                    "to_ms must be after from_ms",
                ));
            }
        }
        self.policy.placement_policy()?;
        let f = &self.faults;
        for (name, v) in [
            ("faults.node_loss_per_node_hour", f.node_loss_per_node_hour),
            (
                "faults.spot_interruption_per_node_hour",
                f.spot_interruption_per_node_hour,
            ),
            (
                "faults.container_crash_per_task_hour",
                f.container_crash_per_task_hour,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SpecError::new(name, "must be a rate >= 0"));
            }
        }
        for (name, v) in [
            (
                "faults.launch_failure_probability",
                f.launch_failure_probability,
            ),
            (
                "faults.instance_launch_failure_probability",
                f.instance_launch_failure_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(SpecError::new(name, "must be a probability in 0..=1"));
            }
        }
        let catalog = Catalog::ec2();
        self.validate_pools(catalog)?;
        for (i, o) in f.insufficient_capacity.iter().enumerate() {
            let at = |field: &str| format!("faults.insufficient_capacity[{i}]{field}");
            if o.to_ms <= o.from_ms {
                return Err(SpecError::new(at(""), "to_ms must be after from_ms"));
            }
            known_type(catalog, &o.instance_type, &at(".instance_type"))?;
            known_zone(catalog, &o.zone, &at(".zone"))?;
            let launched =
                self.cluster.pools.iter().any(|p| {
                    p.instance_types.contains(&o.instance_type) && p.zones.contains(&o.zone)
                });
            if !launched {
                return Err(SpecError::new(
                    at(""),
                    format!(
                        "no pool in cluster.pools launches {} in {}: the outage would have no effect",
                        o.instance_type, o.zone
                    ),
                ));
            }
        }
        let t = &self.timing;
        for (path, d) in [
            ("timing.container_launch".to_string(), &t.container_launch),
            ("timing.provisioning".to_string(), &t.provisioning),
        ]
        .into_iter()
        .chain(
            t.provisioning_by_type
                .iter()
                .map(|(k, d)| (format!("timing.provisioning_by_type.{k}"), d)),
        ) {
            if !(d.sigma.is_finite() && d.sigma >= 0.0) {
                return Err(SpecError::new(
                    format!("{path}.sigma"),
                    "must be a number >= 0",
                ));
            }
        }
        for name in t.provisioning_by_type.keys() {
            known_type(
                catalog,
                name,
                &format!("timing.provisioning_by_type.{name}"),
            )?;
        }
        // Inline nodes are checked here; node list files when the run reads them.
        let inline = self
            .cluster
            .inline()
            .into_cluster()
            .map_err(|e| SpecError::new(format!("cluster.{}", e.path), e.message))?;
        let files = self.cluster.nodes_file.is_some() || self.cluster.from_workload;
        if !files {
            check_node_loss_at(&self.faults, inline.nodes.len())?;
        }
        let no_static = !files && inline.nodes.is_empty();
        if no_static && self.cluster.pools.is_empty() {
            return Err(SpecError::new(
                "cluster",
                "no nodes: give nodes_file, from_workload, nodes, node_groups or pools",
            ));
        }
        if self.metrics.samples_max == 0 {
            return Err(SpecError::new("metrics.samples_max", "must be at least 1"));
        }
        Ok(())
    }

    /// The pools and the controller tuning, by the controller's own checks (the same the run
    /// makes when it builds the controller), with the scenario's paths.
    fn validate_pools(&self, catalog: &Catalog) -> Result<(), SpecError> {
        for (i, p) in self.cluster.pools.iter().enumerate() {
            for (j, z) in p.zones.iter().enumerate() {
                known_zone(catalog, z, &format!("cluster.pools[{i}].zones[{j}]"))?;
            }
        }
        self.controller_config()?
            .validate(catalog)
            .map_err(controller_error)
    }

    /// Checks that the files the scenario names exist, before any is read: the error names
    /// the field and the file.
    pub fn check_files(&self) -> Result<(), SpecError> {
        let mut files = Vec::new();
        if let Some(t) = &self.workload.trace {
            files.push(("workload.trace.path", &t.path));
        }
        if let Some(f) = &self.cluster.nodes_file {
            files.push(("cluster.nodes_file", f));
        }
        for (field, p) in files {
            let path = self.resolve(p);
            if !path.is_file() {
                let hint = if p.starts_with("$BERTH_TRACES_DIR") {
                    " (set BERTH_TRACES_DIR to the folder of the shared traces, or put them in ../shared/traces)"
                } else {
                    ""
                };
                let what = if path.exists() {
                    "not a file"
                } else {
                    "file not found"
                };
                return Err(SpecError::new(
                    field,
                    format!("{what}: {}{hint}", path.display()),
                ));
            }
        }
        Ok(())
    }

    /// Resolves a path written in the scenario.
    pub fn resolve(&self, p: &str) -> PathBuf {
        const VAR: &str = "$BERTH_TRACES_DIR";
        if let Some(rest) = p.strip_prefix(VAR) {
            let rest = rest.trim_start_matches('/');
            let dir = std::env::var_os(berth_traces::TRACES_DIR_ENV)
                .map(PathBuf::from)
                .or_else(berth_traces::shared_traces_dir)
                .unwrap_or_else(|| PathBuf::from("../shared/traces"));
            return dir.join(rest);
        }
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A controller configuration error with the scenario's path: pools live under `cluster.`, the
/// controller tuning under `policy.` (static node errors already name `cluster.`).
pub(crate) fn controller_error(e: ControllerError) -> SpecError {
    match e {
        ControllerError::Config(e) if e.path.starts_with("pools") => {
            SpecError::new(format!("cluster.{}", e.path), e.message)
        }
        ControllerError::Config(e) if e.path.starts_with("cluster") => e,
        ControllerError::Config(e) => SpecError::new(format!("policy.{}", e.path), e.message),
        ControllerError::Policy(e) => SpecError::new("policy", e.to_string()),
    }
}

fn known_type(catalog: &Catalog, name: &str, path: &str) -> Result<(), SpecError> {
    match catalog.get(name) {
        Some(_) => Ok(()),
        None => Err(SpecError::new(
            path,
            format!("unknown instance type {name:?} (not in the instance catalogue)"),
        )),
    }
}

/// A zone of the catalogue's region (`us-east-1a`): the catalogue's prices are that region's.
fn known_zone(catalog: &Catalog, zone: &str, path: &str) -> Result<(), SpecError> {
    let region = &catalog.region;
    let suffix = zone.strip_prefix(region.as_str()).unwrap_or("");
    if suffix.len() == 1 && suffix.bytes().all(|b| b.is_ascii_lowercase()) {
        return Ok(());
    }
    Err(SpecError::new(
        path,
        format!(
            "unknown zone {zone:?}: the instance catalogue is for {region} (zones {region}a, {region}b, ...)"
        ),
    ))
}

/// `faults.node_loss_at` names static nodes `0..static_nodes`.
pub(crate) fn check_node_loss_at(f: &Faults, static_nodes: usize) -> Result<(), SpecError> {
    for (i, l) in f.node_loss_at.iter().enumerate() {
        if l.node as usize >= static_nodes {
            return Err(SpecError::new(
                format!("faults.node_loss_at[{i}].node"),
                format!(
                    "no static node {}: the cluster has {static_nodes} (numbered from 0 in file order; \
                     instances the pools provision cannot be named)",
                    l.node
                ),
            ));
        }
    }
    Ok(())
}
