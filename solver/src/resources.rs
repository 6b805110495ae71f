//! Resources as integers, so sums are exact.
//!
//! Scalar dimensions are [`Resources`]: milli-CPU, MiB of memory and disk, Mbit/s of network.
//! GPUs are devices, not a scalar: a node has N devices of one [`GpuModel`], each with a free
//! share in milli-GPU (1000 = a whole device). A task asks for k whole devices or a fraction of
//! one device ([`GpuDemand`]), optionally restricted to a set of models.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milli-GPU in one whole device.
pub const GPU_MILLI_PER_DEVICE: u32 = 1000;

/// The largest number of whole GPUs one task may ask for (an 8-GPU host is the largest in the
/// catalogue; 16 leaves room for 16-device hosts).
pub const GPU_WHOLE_COUNT_MAX: u8 = 16;

/// Scalar resources of a node or a task. All integers; units in the field names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU in thousandths of a core (1000 = one core).
    #[serde(default)]
    pub cpu_milli: u64,
    /// Memory in MiB.
    #[serde(default)]
    pub mem_mib: u64,
    /// Local disk in MiB.
    #[serde(default)]
    pub disk_mib: u64,
    /// Network bandwidth in Mbit/s.
    #[serde(default)]
    pub net_mbps: u64,
}

/// Names of the scalar dimensions, in the order of [`Resources::as_array`].
pub const DIMENSION_NAMES: [&str; 4] = ["cpu", "memory", "disk", "network"];

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_milli: 0,
        mem_mib: 0,
        disk_mib: 0,
        net_mbps: 0,
    };

    pub const fn new(cpu_milli: u64, mem_mib: u64, disk_mib: u64, net_mbps: u64) -> Self {
        Resources {
            cpu_milli,
            mem_mib,
            disk_mib,
            net_mbps,
        }
    }

    /// The dimensions as an array, in the order of [`DIMENSION_NAMES`].
    pub const fn as_array(&self) -> [u64; 4] {
        [self.cpu_milli, self.mem_mib, self.disk_mib, self.net_mbps]
    }

    pub const fn from_array(a: [u64; 4]) -> Self {
        Resources {
            cpu_milli: a[0],
            mem_mib: a[1],
            disk_mib: a[2],
            net_mbps: a[3],
        }
    }

    /// True when every dimension of `self` is at most the same dimension of `other`.
    #[inline]
    pub const fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_milli <= other.cpu_milli
            && self.mem_mib <= other.mem_mib
            && self.disk_mib <= other.disk_mib
            && self.net_mbps <= other.net_mbps
    }

    /// The first dimension (by [`DIMENSION_NAMES`] index) where `self` exceeds `other`.
    pub fn first_short_dimension(&self, other: &Resources) -> Option<usize> {
        let (a, b) = (self.as_array(), other.as_array());
        (0..4).find(|&i| a[i] > b[i])
    }

    /// `self - other`, or `None` when any dimension would go below zero.
    #[inline]
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_milli: self.cpu_milli.checked_sub(other.cpu_milli)?,
            mem_mib: self.mem_mib.checked_sub(other.mem_mib)?,
            disk_mib: self.disk_mib.checked_sub(other.disk_mib)?,
            net_mbps: self.net_mbps.checked_sub(other.net_mbps)?,
        })
    }

    /// `self + other`, or `None` on overflow.
    #[inline]
    pub fn checked_add(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpu_milli: self.cpu_milli.checked_add(other.cpu_milli)?,
            mem_mib: self.mem_mib.checked_add(other.mem_mib)?,
            disk_mib: self.disk_mib.checked_add(other.disk_mib)?,
            net_mbps: self.net_mbps.checked_add(other.net_mbps)?,
        })
    }

    /// `self * n`, saturating (used for totals of task groups).
    pub fn saturating_mul(&self, n: u64) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_mul(n),
            mem_mib: self.mem_mib.saturating_mul(n),
            disk_mib: self.disk_mib.saturating_mul(n),
            net_mbps: self.net_mbps.saturating_mul(n),
        }
    }

    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(other.cpu_milli),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
            net_mbps: self.net_mbps.saturating_add(other.net_mbps),
        }
    }

    pub const fn is_zero(&self) -> bool {
        self.cpu_milli == 0 && self.mem_mib == 0 && self.disk_mib == 0 && self.net_mbps == 0
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu_milli={} mem_mib={} disk_mib={} net_mbps={}",
            self.cpu_milli, self.mem_mib, self.disk_mib, self.net_mbps
        )
    }
}

/// A GPU model name, e.g. `T4`, `V100M32`, `A10G`. Compared exactly (case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuModel(pub String);

impl GpuModel {
    pub fn new(name: impl Into<String>) -> Self {
        GpuModel(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a task asks of GPUs.
///
/// In TOML: `gpu = { whole = 2 }` or `gpu = { milli = 460 }`; absent means no GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuDemand {
    /// No GPU.
    #[default]
    None,
    /// `k` whole devices (1..=[`GPU_WHOLE_COUNT_MAX`]), each entirely free.
    Whole(u8),
    /// A share of one device, 1..=999 milli-GPU. (1000 is written as `Whole(1)`.)
    Milli(u16),
}

impl GpuDemand {
    /// Builds a demand from the openb trace's (`num_gpu`, `gpu_milli`) pair: a fraction is only
    /// meaningful when `num_gpu == 1`; `gpu_milli == 1000` with one GPU is a whole device.
    pub fn from_count_and_milli(num_gpu: u32, gpu_milli: u32) -> Result<GpuDemand, String> {
        match (num_gpu, gpu_milli) {
            (0, _) => Ok(GpuDemand::None),
            (1, m) if (1..GPU_MILLI_PER_DEVICE).contains(&m) => Ok(GpuDemand::Milli(m as u16)),
            (1, 0) | (1, 1000) => Ok(GpuDemand::Whole(1)),
            (1, m) => Err(format!("gpu_milli {m} out of range 0..=1000 for one GPU")),
            (k, _) if k <= GPU_WHOLE_COUNT_MAX as u32 => Ok(GpuDemand::Whole(k as u8)),
            (k, _) => Err(format!("num_gpu {k} exceeds {GPU_WHOLE_COUNT_MAX}")),
        }
    }

    /// Total milli-GPU asked for (a whole device counts 1000).
    pub const fn total_milli(&self) -> u32 {
        match *self {
            GpuDemand::None => 0,
            GpuDemand::Whole(k) => k as u32 * GPU_MILLI_PER_DEVICE,
            GpuDemand::Milli(m) => m as u32,
        }
    }

    pub const fn is_none(&self) -> bool {
        matches!(self, GpuDemand::None)
    }

    /// Checks the bounds; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            GpuDemand::None => Ok(()),
            GpuDemand::Whole(k) if (1..=GPU_WHOLE_COUNT_MAX).contains(&k) => Ok(()),
            GpuDemand::Whole(k) => Err(format!(
                "whole GPU count {k} not in 1..={GPU_WHOLE_COUNT_MAX}"
            )),
            GpuDemand::Milli(m) if (1..GPU_MILLI_PER_DEVICE as u16).contains(&m) => Ok(()),
            GpuDemand::Milli(m) => Err(format!(
                "GPU share {m} milli not in 1..=999 (write whole = 1 for a full device)"
            )),
        }
    }
}

/// What one task instance needs: scalar resources, GPUs, and which GPU models are acceptable
/// (empty = any model).
///
/// Serialised flat (`cpu_milli = 500`, `gpu = { milli = 250 }`, ...) through [`TaskShapeDoc`]
/// rather than `#[serde(flatten)]`, which would lose field paths in errors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "TaskShapeDoc", into = "TaskShapeDoc")]
pub struct TaskShape {
    pub resources: Resources,
    pub gpu: GpuDemand,
    pub gpu_models: Vec<GpuModel>,
}

/// The document form of [`TaskShape`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskShapeDoc {
    #[serde(default)]
    pub cpu_milli: u64,
    #[serde(default)]
    pub mem_mib: u64,
    #[serde(default)]
    pub disk_mib: u64,
    #[serde(default)]
    pub net_mbps: u64,
    #[serde(default, skip_serializing_if = "GpuDemand::is_none")]
    pub gpu: GpuDemand,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_models: Vec<GpuModel>,
}

impl From<TaskShapeDoc> for TaskShape {
    fn from(d: TaskShapeDoc) -> Self {
        TaskShape {
            resources: Resources::new(d.cpu_milli, d.mem_mib, d.disk_mib, d.net_mbps),
            gpu: d.gpu,
            gpu_models: d.gpu_models,
        }
    }
}

impl From<TaskShape> for TaskShapeDoc {
    fn from(t: TaskShape) -> Self {
        let r = t.resources;
        TaskShapeDoc {
            cpu_milli: r.cpu_milli,
            mem_mib: r.mem_mib,
            disk_mib: r.disk_mib,
            net_mbps: r.net_mbps,
            gpu: t.gpu,
            gpu_models: t.gpu_models,
        }
    }
}

impl TaskShape {
    pub fn new(resources: Resources) -> Self {
        TaskShape {
            resources,
            gpu: GpuDemand::None,
            gpu_models: Vec::new(),
        }
    }

    pub fn with_gpu(mut self, gpu: GpuDemand) -> Self {
        self.gpu = gpu;
        self
    }

    pub fn with_gpu_models(mut self, models: Vec<GpuModel>) -> Self {
        self.gpu_models = models;
        self
    }

    /// True when `model` is acceptable for this task.
    pub fn accepts_model(&self, model: &GpuModel) -> bool {
        self.gpu_models.is_empty() || self.gpu_models.contains(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openb_gpu_pairs_map_to_demands() {
        assert_eq!(GpuDemand::from_count_and_milli(0, 0), Ok(GpuDemand::None));
        assert_eq!(
            GpuDemand::from_count_and_milli(1, 460),
            Ok(GpuDemand::Milli(460))
        );
        assert_eq!(
            GpuDemand::from_count_and_milli(1, 1000),
            Ok(GpuDemand::Whole(1))
        );
        assert_eq!(
            GpuDemand::from_count_and_milli(8, 1000),
            Ok(GpuDemand::Whole(8))
        );
        assert!(GpuDemand::from_count_and_milli(1, 1500).is_err());
        assert!(GpuDemand::from_count_and_milli(99, 1000).is_err());
    }

    #[test]
    fn fits_and_sub_are_exact() {
        let cap = Resources::new(4000, 8192, 100, 10);
        let ask = Resources::new(4000, 8193, 0, 0);
        assert!(!ask.fits_in(&cap));
        assert_eq!(ask.first_short_dimension(&cap), Some(1));
        assert_eq!(cap.checked_sub(&ask), None);
        let ok = Resources::new(1000, 1024, 0, 0);
        assert_eq!(
            cap.checked_sub(&ok),
            Some(Resources::new(3000, 7168, 100, 10))
        );
    }
}
