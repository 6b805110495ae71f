//! Node equivalence classes: the placement index.
//!
//! Two nodes whose every fact the filters and scorers read is equal (capacity, GPU model and
//! count, attributes, schedulability, the exclusive holder, whether any task is there, free
//! resources, each device's free share in device order, and for GPU clustering the GPU request
//! types hosted) get the same filter verdict and the same score for any request, except for what
//! depends on the requesting job's own tasks on the node and on the node's index. So a decision
//! filters and scores one node per class, the lowest-index one without the job's tasks (the
//! best of its class under every scorer: first fit favours lower indexes, the rest tie and the
//! lowest node wins ties), and the nodes holding the job's tasks one by one. The result is the
//! full scan's (debug builds check every indexed decision against it); a decision costs
//! O(classes + the job's nodes) instead of O(nodes).
//!
//! Clusters built from a few instance types have few classes: idle nodes of one type and zone
//! are one class however many there are. A cluster whose every node differs (a label per host)
//! has as many classes as nodes and gains nothing.
//!
//! The index follows the view by node versions: [`ClusterView::changed_since`] names the nodes
//! one decision changed; after a longer gap (or on another view) every node's version is
//! compared, and only the changed nodes move between classes.

use crate::cluster::{NodeAttributes, NodeGpus};
use crate::ids::{JobId, NodeId};
use crate::resources::GpuDemand;
use crate::view::ClusterView;
use std::collections::{BTreeMap, BTreeSet};

/// What never changes about a node: capacity, GPUs, attributes (not the name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StaticKey {
    capacity: [u64; 4],
    gpus: Option<NodeGpus>,
    attributes: NodeAttributes,
}

/// What a node's filter verdict and scores depend on (besides the job's tasks on it and its
/// index).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    static_id: u32,
    schedulable: bool,
    exclusive: Option<JobId>,
    has_tasks: bool,
    free: [u64; 4],
    /// Free milli-GPU per device, in device order (a share's device choice takes the lowest
    /// index among equals, so the order matters).
    gpu_free: Vec<u16>,
    /// GPU request types hosted, as (kind, value, count), sorted; empty unless GPU clustering
    /// scores.
    gpu_types: Vec<(u8, u16, u32)>,
}

#[derive(Clone, Debug)]
struct Class {
    key: ClassKey,
    members: BTreeSet<u32>,
}

/// The classes of one view's nodes, kept in step with it by node versions.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeClasses {
    /// Whether GPU clustering scores (its hosted request types join the key).
    with_gpu_types: bool,
    /// The view's `last_version` when last synced.
    synced: u64,
    /// Per node: the version indexed, its class, its static id.
    seen: Vec<u64>,
    class_of: Vec<u32>,
    static_of: Vec<u32>,
    statics: BTreeMap<StaticKey, u32>,
    static_keys: Vec<StaticKey>,
    ids: BTreeMap<ClassKey, u32>,
    /// By class id; a class without members is free (its id is in `free_ids`).
    classes: Vec<Class>,
    free_ids: Vec<u32>,
}

impl NodeClasses {
    pub(crate) fn new(with_gpu_types: bool) -> Self {
        NodeClasses {
            with_gpu_types,
            ..Default::default()
        }
    }

    /// Brings the classes up to date with `view`.
    pub(crate) fn sync(&mut self, view: &ClusterView) {
        let nodes = view.len();
        if nodes == self.seen.len() && view.last_version() == self.synced {
            return;
        }
        if nodes < self.seen.len() {
            // Another, smaller view: drop the nodes it does not have.
            for n in nodes..self.seen.len() {
                self.leave(n);
            }
            self.seen.truncate(nodes);
            self.class_of.truncate(nodes);
            self.static_of.truncate(nodes);
        }
        match view.changed_since(self.synced) {
            // The nodes one decision (or a few) changed.
            Some(changed) => {
                for node in changed {
                    self.refresh(view, node.0 as usize);
                }
            }
            // A longer gap, or another view: every node's version is compared.
            None => {
                for n in 0..nodes {
                    let version = view.node_version(NodeId(n as u32));
                    if n >= self.seen.len() || self.seen[n] != version {
                        self.refresh(view, n);
                    }
                }
            }
        }
        debug_assert_eq!(self.seen.len(), nodes);
        self.synced = view.last_version();
    }

    /// Re-keys node `n` if its version moved (or it is new to the index).
    fn refresh(&mut self, view: &ClusterView, n: usize) {
        let node = NodeId(n as u32);
        let version = view.node_version(node);
        if n < self.seen.len() {
            if self.seen[n] == version {
                return;
            }
            self.leave(n);
        } else {
            debug_assert_eq!(n, self.seen.len(), "nodes are added in order");
            self.seen.push(0);
            self.class_of.push(u32::MAX);
            self.static_of.push(u32::MAX);
        }
        // Same version means same node; a new version may come from another view whose node
        // `n` is another node, so the static part is checked (without allocating when equal).
        let spec = view.node(node);
        let known = self.static_of[n];
        let same_static = known != u32::MAX && {
            let k = &self.static_keys[known as usize];
            k.capacity == spec.capacity.as_array()
                && k.gpus == spec.gpus
                && k.attributes == spec.attributes
        };
        if !same_static {
            let key = StaticKey {
                capacity: spec.capacity.as_array(),
                gpus: spec.gpus.clone(),
                attributes: spec.attributes.clone(),
            };
            let next = self.static_keys.len() as u32;
            let id = *self.statics.entry(key.clone()).or_insert(next);
            if id == next {
                self.static_keys.push(key);
            }
            self.static_of[n] = id;
        }
        let gpu_types = if self.with_gpu_types {
            let mut t: Vec<(u8, u16, u32)> = view
                .gpu_types(node)
                .iter()
                .filter(|(_, c)| *c > 0)
                .map(|(d, c)| match *d {
                    GpuDemand::None => (0, 0, *c),
                    GpuDemand::Milli(m) => (1, m, *c),
                    GpuDemand::Whole(k) => (2, u16::from(k), *c),
                })
                .collect();
            t.sort_unstable();
            t
        } else {
            Vec::new()
        };
        let key = ClassKey {
            static_id: self.static_of[n],
            schedulable: view.is_schedulable(node),
            exclusive: view.exclusive_holder(node),
            has_tasks: view.task_count(node) > 0,
            free: view.free(node).as_array(),
            gpu_free: view.gpu_free(node).to_vec(),
            gpu_types,
        };
        let id = match self.ids.get(&key) {
            Some(&id) => id,
            None => {
                let id = match self.free_ids.pop() {
                    Some(id) => {
                        self.classes[id as usize].key = key.clone();
                        id
                    }
                    None => {
                        self.classes.push(Class {
                            key: key.clone(),
                            members: BTreeSet::new(),
                        });
                        (self.classes.len() - 1) as u32
                    }
                };
                self.ids.insert(key, id);
                id
            }
        };
        self.classes[id as usize].members.insert(n as u32);
        self.class_of[n] = id;
        self.seen[n] = version;
    }

    /// Takes node `n` out of its class (freeing the class when it empties).
    fn leave(&mut self, n: usize) {
        let id = self.class_of[n];
        if id == u32::MAX {
            return;
        }
        let class = &mut self.classes[id as usize];
        class.members.remove(&(n as u32));
        if class.members.is_empty() {
            self.ids.remove(&class.key);
            self.free_ids.push(id);
        }
        self.class_of[n] = u32::MAX;
    }

    /// The class of node `n` (synced).
    pub(crate) fn class_of(&self, n: usize) -> u32 {
        self.class_of[n]
    }

    /// The member of node `n`'s class that follows it in node order (synced).
    pub(crate) fn next_member(&self, n: usize) -> Option<u32> {
        let id = *self.class_of.get(n)?;
        if id == u32::MAX {
            return None;
        }
        self.classes[id as usize]
            .members
            .range(n as u32 + 1..)
            .next()
            .copied()
    }

    /// Every class with members, by id: (id, members in node order).
    pub(crate) fn classes(&self) -> impl Iterator<Item = (u32, &BTreeSet<u32>)> + '_ {
        self.classes
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.members.is_empty())
            .map(|(i, c)| (i as u32, &c.members))
    }

    /// The number of classes with members.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}
