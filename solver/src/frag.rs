//! GPU fragmentation against a workload's task-type distribution, after Weng et al., "Beware of
//! Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent"
//! (USENIX ATC '23).
//!
//! A node's idle GPU share is *fragment* for a task type when that type cannot use it:
//! - the type asks for no GPU (it can never use an idle GPU): all idle GPU is fragment;
//! - the node cannot host the type at all (GPU model not accepted, not enough free CPU or
//!   memory, or not enough devices with the type's per-device share free): all idle GPU;
//! - otherwise, the devices whose free share is smaller than the type's per-device share
//!   (1000 for whole-GPU types).
//!
//! The node's fragmentation is the popularity-weighted sum over the "typical" task types: the
//! most frequent shapes covering a given share (95 %) of the tasks, weights renormalised to 1.
//! Fragmentation gradient descent places a task where this measure grows least.

use crate::resources::{GpuDemand, GpuModel, TaskShape, GPU_MILLI_PER_DEVICE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default share of tasks the typical types cover (the paper's 95 %).
pub const TYPICAL_COVERAGE_DEFAULT: f64 = 0.95;

/// One typical task type with its popularity (weights of a [`TaskTypes`] sum to 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskType {
    pub cpu_milli: u64,
    pub mem_mib: u64,
    pub gpu: GpuDemand,
    /// Accepted GPU models (empty = any), sorted.
    pub gpu_models: Vec<GpuModel>,
    pub weight: f64,
}

/// The typical task types of a workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTypes {
    pub types: Vec<TaskType>,
}

/// How task shapes are grouped into types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeKey {
    /// CPU, GPU demand and GPU models; memory is not part of the type and not checked (as in
    /// the paper's artifact).
    #[default]
    CpuGpu,
    /// CPU, memory, GPU demand and GPU models.
    CpuMemGpu,
}

impl TaskTypes {
    /// The most popular shapes covering at least `coverage` (0..=1) of `shapes`, weights
    /// renormalised to sum to 1. Ties in popularity go to the larger shape (CPU, then GPU
    /// demand, then models), as in the paper's artifact, which sorts its types in decreasing
    /// (count, shape) order.
    pub fn from_shapes<'a>(
        shapes: impl IntoIterator<Item = &'a TaskShape>,
        coverage: f64,
        key: TypeKey,
    ) -> TaskTypes {
        // (cpu, mem-or-0, gpu, models) -> count
        type Key = (u64, u64, GpuDemandKey, Vec<GpuModel>);
        let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
        let mut total = 0u64;
        for s in shapes {
            let mut models = s.gpu_models.clone();
            models.sort();
            models.dedup();
            let mem_key = match key {
                TypeKey::CpuGpu => 0,
                TypeKey::CpuMemGpu => s.resources.mem_mib,
            };
            *counts
                .entry((s.resources.cpu_milli, mem_key, GpuDemandKey(s.gpu), models))
                .or_insert(0) += 1;
            total += 1;
        }
        if total == 0 {
            return TaskTypes::default();
        }
        // Most popular first; ties by decreasing key (the reversed BTreeMap order, kept by a
        // stable sort).
        let mut all: Vec<(Key, u64)> = counts.into_iter().rev().collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.1));
        let target = coverage.clamp(0.0, 1.0) * total as f64;
        let mut kept = Vec::new();
        let mut cum = 0u64;
        for (k, n) in all {
            if (cum as f64) >= target && !kept.is_empty() {
                break;
            }
            cum += n;
            kept.push((k, n));
        }
        let types = kept
            .into_iter()
            .map(|((cpu, mem, gpu, models), n)| TaskType {
                cpu_milli: cpu,
                mem_mib: mem,
                gpu: gpu.0,
                gpu_models: models,
                weight: n as f64 / cum as f64,
            })
            .collect();
        TaskTypes { types }
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }
}

/// `GpuDemand` ordered for use as a map key (None < Milli < Whole, then by size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GpuDemandKey(GpuDemand);

impl GpuDemandKey {
    fn rank(&self) -> (u8, u32) {
        match self.0 {
            GpuDemand::None => (0, 0),
            GpuDemand::Milli(m) => (1, m as u32),
            GpuDemand::Whole(k) => (2, k as u32),
        }
    }
}

impl PartialOrd for GpuDemandKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GpuDemandKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// A typical type compiled against one cluster's model list, for fast evaluation.
#[derive(Clone, Debug)]
pub(crate) struct CompiledType {
    cpu_milli: u64,
    mem_mib: u64,
    /// Per-device share needed (1000 for whole devices), 0 for no GPU.
    need_milli: u16,
    /// Devices needed (1 for a share).
    need_devices: u8,
    /// Bit i set when model i of the cluster is accepted (all set when any model is).
    model_mask: ModelMask,
    weight: f64,
}

/// A set of GPU model indexes (a cluster has at most a few dozen models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct ModelMask(pub u128);

impl ModelMask {
    pub const ALL: ModelMask = ModelMask(u128::MAX);

    /// The mask of `accepted` among `models` (all when `accepted` is empty). Models beyond the
    /// 128th are treated as accepted only by "any model" requests.
    pub fn of(accepted: &[GpuModel], models: &[GpuModel]) -> ModelMask {
        if accepted.is_empty() {
            return ModelMask::ALL;
        }
        let mut m = 0u128;
        for (i, model) in models.iter().enumerate().take(128) {
            if accepted.contains(model) {
                m |= 1 << i;
            }
        }
        ModelMask(m)
    }

    #[inline]
    pub fn contains(&self, model: u16) -> bool {
        if model as usize >= 128 {
            return self.0 == u128::MAX;
        }
        self.0 & (1u128 << model) != 0
    }
}

/// Typical types compiled against a cluster's GPU model list.
#[derive(Clone, Debug, Default)]
pub(crate) struct FragModel {
    types: Vec<CompiledType>,
    /// Sum of the weights of the types that use no GPU (their term is `w * idle` everywhere).
    cpu_only_weight: f64,
}

impl FragModel {
    pub fn compile(types: &TaskTypes, models: &[GpuModel]) -> FragModel {
        let mut out = FragModel::default();
        for t in &types.types {
            let (need_milli, need_devices) = match t.gpu {
                GpuDemand::None => {
                    out.cpu_only_weight += t.weight;
                    continue;
                }
                GpuDemand::Milli(m) => (m, 1),
                GpuDemand::Whole(k) => (GPU_MILLI_PER_DEVICE as u16, k),
            };
            out.types.push(CompiledType {
                cpu_milli: t.cpu_milli,
                mem_mib: t.mem_mib,
                need_milli,
                need_devices,
                model_mask: ModelMask::of(&t.gpu_models, models),
                weight: t.weight,
            });
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.cpu_only_weight == 0.0
    }

    /// Whether any type checks memory (else a node's fragmentation ignores free memory).
    pub fn uses_memory(&self) -> bool {
        self.types.iter().any(|t| t.mem_mib > 0)
    }

    /// Fragmentation (milli-GPU, weighted) of a node state: GPU model index `model` (or
    /// `NO_MODEL`), free CPU and memory, and free milli-GPU per device.
    pub fn node_frag(&self, model: u16, cpu_free: u64, mem_free: u64, gpu_free: &[u16]) -> f64 {
        if gpu_free.is_empty() {
            return 0.0;
        }
        let idle: u32 = gpu_free.iter().map(|&f| f as u32).sum();
        if idle == 0 {
            return 0.0;
        }
        let idle_f = idle as f64;
        let mut frag = self.cpu_only_weight * idle_f;
        for t in &self.types {
            if !t.model_mask.contains(model) || t.cpu_milli > cpu_free || t.mem_mib > mem_free {
                frag += t.weight * idle_f;
                continue;
            }
            let mut usable = 0u32;
            let mut short = 0u32;
            for &f in gpu_free {
                if f >= t.need_milli {
                    usable += 1;
                } else {
                    short += f as u32;
                }
            }
            if usable >= t.need_devices as u32 {
                frag += t.weight * short as f64;
            } else {
                frag += t.weight * idle_f;
            }
        }
        frag
    }

    /// Like [`FragModel::node_frag`], but a GPU the node's CPU (or memory) cannot feed is
    /// fragment too: a type whose CPU fits `n` times uses at most `n` of the devices it could
    /// take (the ones with the most free), or `k * n` whole devices for a `k`-GPU type. Eight
    /// idle GPUs next to CPU for one typical task are one usable GPU and seven fragments.
    pub fn node_frag_fed(&self, model: u16, cpu_free: u64, mem_free: u64, gpu_free: &[u16]) -> f64 {
        if gpu_free.is_empty() {
            return 0.0;
        }
        let idle: u32 = gpu_free.iter().map(|&f| f as u32).sum();
        if idle == 0 {
            return 0.0;
        }
        let mut scratch = [0u16; 256];
        let sorted = &mut scratch[..gpu_free.len()];
        sorted.copy_from_slice(gpu_free);
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let idle_f = idle as f64;
        let mut frag = self.cpu_only_weight * idle_f;
        for t in &self.types {
            if !t.model_mask.contains(model) || t.cpu_milli > cpu_free || t.mem_mib > mem_free {
                frag += t.weight * idle_f;
                continue;
            }
            // Instances the CPU and memory can feed (at least one, checked above).
            let fed = |need: u64, free: u64| free.checked_div(need).unwrap_or(u64::MAX);
            let n = fed(t.cpu_milli, cpu_free).min(fed(t.mem_mib, mem_free));
            let usable = sorted.iter().take_while(|&&f| f >= t.need_milli).count() as u64;
            let k = t.need_devices as u64;
            if usable < k {
                frag += t.weight * idle_f;
                continue;
            }
            let take = usable.min(n.saturating_mul(k)) as usize;
            let used: u32 = sorted[..take].iter().map(|&f| f as u32).sum();
            frag += t.weight * (idle - used) as f64;
        }
        frag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    fn shape(cpu: u64, gpu: GpuDemand) -> TaskShape {
        TaskShape::new(Resources::new(cpu, 1024, 0, 0)).with_gpu(gpu)
    }

    #[test]
    fn typical_types_cover_the_asked_share_and_renormalise() {
        let mut shapes = Vec::new();
        shapes.extend(std::iter::repeat_n(shape(1000, GpuDemand::Milli(500)), 60));
        shapes.extend(std::iter::repeat_n(shape(2000, GpuDemand::Whole(1)), 30));
        shapes.extend(std::iter::repeat_n(shape(4000, GpuDemand::Whole(8)), 10));
        let t = TaskTypes::from_shapes(&shapes, 0.85, TypeKey::CpuGpu);
        assert_eq!(t.len(), 2, "60 + 30 covers 85 %");
        assert!((t.types[0].weight - 60.0 / 90.0).abs() < 1e-12);
        assert!((t.types.iter().map(|x| x.weight).sum::<f64>() - 1.0).abs() < 1e-12);
        let all = TaskTypes::from_shapes(&shapes, 1.0, TypeKey::CpuGpu);
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn popularity_ties_go_to_the_larger_shape() {
        let mut shapes = Vec::new();
        shapes.extend(std::iter::repeat_n(shape(1000, GpuDemand::Milli(500)), 10));
        shapes.extend(std::iter::repeat_n(shape(2000, GpuDemand::Milli(500)), 10));
        shapes.extend(std::iter::repeat_n(shape(1000, GpuDemand::Whole(1)), 10));
        let t = TaskTypes::from_shapes(&shapes, 0.5, TypeKey::CpuGpu);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t.types[0].cpu_milli, t.types[0].gpu),
            (2000, GpuDemand::Milli(500))
        );
        assert_eq!(
            (t.types[1].cpu_milli, t.types[1].gpu),
            (1000, GpuDemand::Whole(1)),
            "same CPU: a whole GPU is larger than a share"
        );
    }

    #[test]
    fn fragment_is_what_a_type_cannot_use() {
        let models = vec![GpuModel::new("T4")];
        let types = TaskTypes {
            types: vec![TaskType {
                cpu_milli: 1000,
                mem_mib: 0,
                gpu: GpuDemand::Milli(500),
                gpu_models: vec![],
                weight: 1.0,
            }],
        };
        let m = FragModel::compile(&types, &models);
        // Devices with 300 and 1000 free: the 300 cannot host a 500 share.
        assert_eq!(m.node_frag(0, 8000, 8000, &[300, 1000]), 300.0);
        // Not enough CPU: everything idle is fragment.
        assert_eq!(m.node_frag(0, 500, 8000, &[300, 1000]), 1300.0);
        // Nothing idle, nothing fragmented.
        assert_eq!(m.node_frag(0, 8000, 8000, &[0, 0]), 0.0);
        // A whole-GPU type needs fully free devices.
        let whole = TaskTypes {
            types: vec![TaskType {
                cpu_milli: 0,
                mem_mib: 0,
                gpu: GpuDemand::Whole(2),
                gpu_models: vec![GpuModel::new("V100")],
                weight: 1.0,
            }],
        };
        let w = FragModel::compile(&whole, &models);
        // Model not accepted: all idle.
        assert_eq!(w.node_frag(0, 8000, 8000, &[1000, 1000]), 2000.0);
    }

    #[test]
    fn gpus_the_cpu_cannot_feed_are_fragment_for_the_fed_measure() {
        let models = vec![GpuModel::new("T4")];
        let one = |gpu| TaskTypes {
            types: vec![TaskType {
                cpu_milli: 1000,
                mem_mib: 0,
                gpu,
                gpu_models: vec![],
                weight: 1.0,
            }],
        };
        let share = FragModel::compile(&one(GpuDemand::Milli(500)), &models);
        // CPU for two tasks: the two devices with the most free are usable, the third is not.
        assert_eq!(share.node_frag(0, 2000, 0, &[1000, 600, 1000]), 0.0);
        assert_eq!(share.node_frag_fed(0, 2000, 0, &[1000, 600, 1000]), 600.0);
        // Devices too small stay fragment; with CPU to spare both measures agree.
        assert_eq!(share.node_frag_fed(0, 8000, 0, &[300, 600, 1000]), 300.0);
        assert_eq!(share.node_frag(0, 8000, 0, &[300, 600, 1000]), 300.0);
        // No CPU for even one task: everything idle, as in FGD.
        assert_eq!(share.node_frag_fed(0, 500, 0, &[300, 1000]), 1300.0);
        // A 2-GPU type fed once uses two of the three whole devices.
        let pair = FragModel::compile(&one(GpuDemand::Whole(2)), &models);
        assert_eq!(
            pair.node_frag_fed(0, 1000, 0, &[1000, 1000, 1000, 400]),
            1400.0
        );
        assert_eq!(
            pair.node_frag_fed(0, 2000, 0, &[1000, 1000, 1000, 400]),
            400.0
        );
        assert_eq!(pair.node_frag(0, 1000, 0, &[1000, 1000, 1000, 400]), 400.0);
    }
}
