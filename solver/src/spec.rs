//! Loading job and cluster specs from TOML or JSON.
//!
//! A spec that is wrong is refused with the field path (`task.gpu.milli`, `node_groups[2].count`)
//! and what was expected; nothing is guessed.

use crate::cluster::{ClusterSpec, NodeAttributes, NodeGpus, NodeSpec};
use crate::ids::NodeId;
use crate::job::{Constraint, JobKind, JobSpec};
use crate::resources::{GpuModel, Resources};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A spec was refused. `path` names the field (`.`-separated, `[i]` for list items; empty for the
/// document as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Spec document formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecFormat {
    Toml,
    Json,
}

impl SpecFormat {
    /// By file extension: `.json` is JSON, anything else TOML.
    pub fn from_path(path: &str) -> SpecFormat {
        if path.ends_with(".json") {
            SpecFormat::Json
        } else {
            SpecFormat::Toml
        }
    }
}

/// Deserialises `text` as `T`, reporting the failing field's path.
pub fn parse<T: DeserializeOwned>(text: &str, format: SpecFormat) -> Result<T, SpecError> {
    match format {
        SpecFormat::Toml => {
            let de = toml::Deserializer::new(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let mut message = inner.message().to_string();
                if let Some(span) = inner.span() {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    message = format!("{message} (line {line})");
                }
                SpecError::new(clean_path(&path), message)
            })
        }
        SpecFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                SpecError::new(clean_path(&path), inner.to_string())
            })
        }
    }
}

fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Parses and validates a job spec.
pub fn job_from_str(text: &str, format: SpecFormat) -> Result<JobSpec, SpecError> {
    let job: JobSpec = parse(text, format)?;
    validate_job(&job)?;
    Ok(job)
}

/// Checks what types alone cannot: ranges and cross-field rules.
pub fn validate_job(job: &JobSpec) -> Result<(), SpecError> {
    if job.name.trim().is_empty() {
        return Err(SpecError::new("name", "must not be empty"));
    }
    match &job.kind {
        JobKind::Batch(b) => {
            if b.size == 0 {
                return Err(SpecError::new("batch.size", "must be at least 1"));
            }
            if b.runtime_limit_ms == Some(0) {
                return Err(SpecError::new(
                    "batch.runtime_limit_ms",
                    "must be positive when given",
                ));
            }
            if let crate::job::RetryPolicy::Exponential {
                initial_delay_ms,
                max_delay_ms,
                ..
            } = b.retry
            {
                if initial_delay_ms == 0 || max_delay_ms < initial_delay_ms {
                    return Err(SpecError::new(
                        "batch.retry",
                        "expected 0 < initial_delay_ms <= max_delay_ms",
                    ));
                }
            }
        }
        JobKind::Service(s) => {
            if !(s.min <= s.desired && s.desired <= s.max) {
                return Err(SpecError::new(
                    "service",
                    format!(
                        "expected min <= desired <= max, got {} / {} / {}",
                        s.min, s.desired, s.max
                    ),
                ));
            }
            if s.max == 0 {
                return Err(SpecError::new("service.max", "must be at least 1"));
            }
        }
    }
    let shape = &job.task;
    if shape.resources.cpu_milli == 0 && shape.resources.mem_mib == 0 && shape.gpu.is_none() {
        return Err(SpecError::new(
            "task",
            "asks for nothing: give cpu_milli, mem_mib or gpu",
        ));
    }
    shape
        .gpu
        .validate()
        .map_err(|m| SpecError::new("task.gpu", m))?;
    if !shape.gpu_models.is_empty() && shape.gpu.is_none() {
        return Err(SpecError::new(
            "task.gpu_models",
            "given without a gpu demand",
        ));
    }
    for (list, cs) in [
        ("hard", &job.constraints.hard),
        ("soft", &job.constraints.soft),
    ] {
        for (i, c) in cs.iter().enumerate() {
            validate_constraint(c)
                .map_err(|m| SpecError::new(format!("constraints.{list}[{i}]"), m))?;
        }
    }
    if let Some(c) = &job.container {
        if c.image.trim().is_empty() {
            return Err(SpecError::new("container.image", "must not be empty"));
        }
    }
    Ok(())
}

fn validate_constraint(c: &Constraint) -> Result<(), String> {
    match c {
        Constraint::ZoneBalance { max_skew } if *max_skew == 0 => {
            Err("max_skew must be at least 1".into())
        }
        Constraint::AttributeEquals { key, .. } | Constraint::AttributeIn { key, .. }
            if key.is_empty() =>
        {
            Err("key must not be empty".into())
        }
        Constraint::AttributeIn { values, .. } if values.is_empty() => {
            Err("values must not be empty".into())
        }
        _ => Ok(()),
    }
}

/// The cluster file format: single nodes and groups of identical nodes.
///
/// ```toml
/// [[node_groups]]
/// name = "gpu-a"          # nodes are named gpu-a-0, gpu-a-1, ...
/// count = 4
/// cpu_milli = 32000
/// mem_mib = 131072
/// gpus = { count = 4, model = "T4" }
/// zone = "us-east-1a"
/// instance_type = "g4dn.12xlarge"
/// pool = "gpu"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    #[serde(default)]
    pub node_groups: Vec<NodeEntry>,
}

/// One node, or with `count`, a group of identical nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    pub cpu_milli: u64,
    pub mem_mib: u64,
    #[serde(default)]
    pub disk_mib: u64,
    #[serde(default)]
    pub net_mbps: u64,
    #[serde(default)]
    pub gpus: Option<NodeGpus>,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// The most nodes a cluster file may expand to.
pub const CLUSTER_NODES_MAX: usize = 1_000_000;

impl ClusterFile {
    /// Validates and expands groups into a dense node list.
    pub fn into_cluster(self) -> Result<ClusterSpec, SpecError> {
        let mut nodes = Vec::new();
        for (list, entries) in [("nodes", self.nodes), ("node_groups", self.node_groups)] {
            for (i, e) in entries.into_iter().enumerate() {
                let at = |f: &str| format!("{list}[{i}]{}{f}", if f.is_empty() { "" } else { "." });
                if e.name.is_empty() {
                    return Err(SpecError::new(at("name"), "must not be empty"));
                }
                if e.count == 0 {
                    return Err(SpecError::new(at("count"), "must be at least 1"));
                }
                let capacity = Resources::new(e.cpu_milli, e.mem_mib, e.disk_mib, e.net_mbps);
                if e.cpu_milli == 0 || e.mem_mib == 0 {
                    return Err(SpecError::new(
                        at("cpu_milli"),
                        "a node needs cpu_milli and mem_mib",
                    ));
                }
                if let Some(g) = &e.gpus {
                    if g.count == 0 {
                        return Err(SpecError::new(at("gpus.count"), "must be at least 1"));
                    }
                    if g.model.0.is_empty() {
                        return Err(SpecError::new(at("gpus.model"), "must not be empty"));
                    }
                }
                if nodes.len() + e.count as usize > CLUSTER_NODES_MAX {
                    return Err(SpecError::new(
                        at("count"),
                        format!("cluster exceeds {CLUSTER_NODES_MAX} nodes"),
                    ));
                }
                let attributes = NodeAttributes {
                    zone: e.zone.clone(),
                    instance_type: e.instance_type.clone(),
                    pool: e.pool.clone(),
                    labels: e.labels.clone(),
                };
                for k in 0..e.count {
                    let name = if e.count == 1 && list == "nodes" {
                        e.name.clone()
                    } else {
                        format!("{}-{k}", e.name)
                    };
                    nodes.push(NodeSpec {
                        id: NodeId(0),
                        name,
                        capacity,
                        gpus: e.gpus.clone(),
                        attributes: attributes.clone(),
                    });
                }
            }
        }
        Ok(ClusterSpec::from_nodes(nodes))
    }
}

/// Parses and expands a cluster file.
pub fn cluster_from_str(text: &str, format: SpecFormat) -> Result<ClusterSpec, SpecError> {
    parse::<ClusterFile>(text, format)?.into_cluster()
}

/// Convenience for tests and tools: a GPU model list from names.
pub fn models(names: &[&str]) -> Vec<GpuModel> {
    names.iter().map(|n| GpuModel::new(*n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{RetryPolicy, Tier};
    use crate::resources::GpuDemand;

    const BATCH: &str = r#"
name = "train"
tier = "critical"
[batch]
size = 4
runtime_limit_ms = 3600000
retry = { kind = "exponential", initial_delay_ms = 1000, max_delay_ms = 60000, max_retries = 5 }
gang = true
[task]
cpu_milli = 8000
mem_mib = 32768
gpu = { whole = 2 }
gpu_models = ["A10G", "V100M32"]
[constraints]
hard = [{ kind = "zone_balance", max_skew = 1 }, { kind = "unique_host" }]
soft = [{ kind = "attribute_in", key = "instance_type", values = ["g5.12xlarge"] }]
"#;

    #[test]
    fn batch_job_parses_from_toml() {
        let job = job_from_str(BATCH, SpecFormat::Toml).unwrap();
        assert_eq!(job.tier, Tier::Critical);
        assert_eq!(job.task.gpu, GpuDemand::Whole(2));
        let JobKind::Batch(b) = &job.kind else {
            panic!("not batch")
        };
        assert_eq!(b.size, 4);
        assert!(b.gang);
        assert_eq!(b.retry.delay_ms(0), Some(1000));
        assert_eq!(b.retry.delay_ms(4), Some(16000));
        assert_eq!(b.retry.delay_ms(5), None);
        assert_eq!(job.constraints.hard.len(), 2);
        // Round trip through JSON keeps everything.
        let json = serde_json::to_string(&job).unwrap();
        assert_eq!(job_from_str(&json, SpecFormat::Json).unwrap(), job);
    }

    #[test]
    fn service_job_parses_from_json() {
        let text = r#"{"name":"web","service":{"min":1,"desired":3,"max":10},
            "task":{"cpu_milli":500,"mem_mib":512},
            "container":{"image":"local/busybox:1","command":["sleep","60"]}}"#;
        let job = job_from_str(text, SpecFormat::Json).unwrap();
        let JobKind::Service(s) = &job.kind else {
            panic!("not service")
        };
        assert_eq!((s.min, s.desired, s.max), (1, 3, 10));
        assert!(s.restart_on_failure);
        assert_eq!(job.tier, Tier::Flex);
    }

    #[test]
    fn wrong_type_names_the_field_path() {
        let bad = BATCH.replace("size = 4", "size = \"four\"");
        let err = job_from_str(&bad, SpecFormat::Toml).unwrap_err();
        assert_eq!(err.path, "batch.size");
        assert!(err.message.contains("line"), "{err}");

        let bad = BATCH.replace("max_skew = 1", "max_skew = 1, extra = 2");
        let err = job_from_str(&bad, SpecFormat::Toml).unwrap_err();
        assert_eq!(err.path, "constraints.hard[0]", "{err}");

        let text =
            r#"{"name":"web","service":{"min":1,"desired":3,"max":10},"task":{"cpu_milli":-5}}"#;
        let err = job_from_str(text, SpecFormat::Json).unwrap_err();
        assert_eq!(err.path, "task.cpu_milli", "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field_path() {
        let bad = BATCH.replace("gpu = { whole = 2 }", "gpu = { milli = 1500 }");
        let err = job_from_str(&bad, SpecFormat::Toml).unwrap_err();
        assert_eq!(err.path, "task.gpu");
        let bad = BATCH.replace("max_skew = 1", "max_skew = 0");
        let err = job_from_str(&bad, SpecFormat::Toml).unwrap_err();
        assert_eq!(err.path, "constraints.hard[0]");
        let text =
            r#"{"name":"web","service":{"min":4,"desired":3,"max":10},"task":{"cpu_milli":5}}"#;
        let err = job_from_str(text, SpecFormat::Json).unwrap_err();
        assert_eq!(err.path, "service");
        assert_eq!(RetryPolicy::default().delay_ms(0), None);
    }

    #[test]
    fn cluster_groups_expand_densely() {
        let text = r#"
[[nodes]]
name = "big"
cpu_milli = 96000
mem_mib = 786432
zone = "a"
[[node_groups]]
name = "gpu"
count = 3
cpu_milli = 48000
mem_mib = 196608
gpus = { count = 4, model = "T4" }
zone = "b"
instance_type = "g4dn.12xlarge"
labels = { rack = "r1" }
"#;
        let c = cluster_from_str(text, SpecFormat::Toml).unwrap();
        assert_eq!(c.len(), 4);
        c.check_ids().unwrap();
        assert_eq!(c.nodes[0].name, "big");
        assert_eq!(c.nodes[3].name, "gpu-2");
        assert_eq!(c.total_gpus(), 12);
        assert_eq!(c.nodes[2].attributes.get("rack"), Some("r1"));
        assert_eq!(c.zones(), vec!["a".to_string(), "b".to_string()]);

        let err = cluster_from_str(&text.replace("count = 3", "count = 0"), SpecFormat::Toml)
            .unwrap_err();
        assert_eq!(err.path, "node_groups[0].count");
    }
}
