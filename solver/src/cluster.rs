//! Nodes and clusters: what capacity exists and where.

use crate::ids::NodeId;
use crate::resources::{GpuModel, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The GPUs of one node: `count` devices of one model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGpus {
    pub count: u8,
    pub model: GpuModel,
}

/// Where a node is and what it is. `labels` holds arbitrary key/value pairs; constraints look up
/// `zone`, `instance_type` and `pool` first, then the labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttributes {
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub pool: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl NodeAttributes {
    /// The value of attribute `key`: `zone`, `instance_type`, `pool`, else a label.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "zone" => Some(self.zone.as_str()),
            "instance_type" => Some(self.instance_type.as_str()),
            "pool" => Some(self.pool.as_str()),
            _ => self.labels.get(key).map(String::as_str),
        }
    }
}

/// One node: identity, total capacity and attributes. Free capacity lives in the solver's
/// cluster view, not here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    pub name: String,
    pub capacity: Resources,
    pub gpus: Option<NodeGpus>,
    pub attributes: NodeAttributes,
}

impl NodeSpec {
    pub fn gpu_count(&self) -> u8 {
        self.gpus.as_ref().map_or(0, |g| g.count)
    }
    pub fn gpu_model(&self) -> Option<&GpuModel> {
        self.gpus.as_ref().map(|g| &g.model)
    }
}

/// A cluster: a dense list of nodes, `nodes[i].id == NodeId(i)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub nodes: Vec<NodeSpec>,
}

impl ClusterSpec {
    /// Builds a cluster from nodes, renumbering ids densely in the given order.
    pub fn from_nodes(nodes: impl IntoIterator<Item = NodeSpec>) -> Self {
        let nodes = nodes
            .into_iter()
            .enumerate()
            .map(|(i, mut n)| {
                n.id = NodeId(u32::try_from(i).expect("more than u32::MAX nodes"));
                n
            })
            .collect();
        ClusterSpec { nodes }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sum of scalar capacity over all nodes.
    pub fn total_capacity(&self) -> Resources {
        self.nodes
            .iter()
            .fold(Resources::ZERO, |acc, n| acc.saturating_add(&n.capacity))
    }

    /// Number of GPU devices over all nodes.
    pub fn total_gpus(&self) -> u64 {
        self.nodes.iter().map(|n| n.gpu_count() as u64).sum()
    }

    /// Distinct zones, sorted.
    pub fn zones(&self) -> Vec<String> {
        let mut z: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.attributes.zone.clone())
            .collect();
        z.sort();
        z.dedup();
        z
    }

    /// Checks the dense-id invariant.
    pub fn check_ids(&self) -> Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.id.0 as usize != i {
                return Err(format!("nodes[{i}]: id {} is not its index", n.id.0));
            }
        }
        Ok(())
    }
}
