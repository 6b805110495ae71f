//! A catalogue of cloud instance types: capacity, GPUs, network and on-demand price.
//!
//! The EC2 catalogue ships inside the crate (`solver/data/ec2_catalog.toml`, read with
//! `include_str!`: no IO at run time) and says in its header where its figures come from and
//! when. [`Catalog::parse_toml`] loads any other catalogue of the same form; a wrong one is
//! refused with the field path (`types[3].vcpu`) and the line.
//!
//! Prices are kept as integer micro-dollars per hour ([`InstanceType::price_per_hour_micro_usd`])
//! so that the cost of a mix is an exact sum.

use crate::cluster::{NodeAttributes, NodeGpus, NodeSpec};
use crate::ids::NodeId;
use crate::resources::{GpuModel, Resources, GPU_WHOLE_COUNT_MAX};
use crate::spec::{parse, SpecError, SpecFormat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The EC2 catalogue's text, embedded at build time.
pub const EC2_CATALOG_TOML: &str = include_str!("../data/ec2_catalog.toml");

/// Micro-dollars in one dollar.
pub const MICRO_USD_PER_USD: u64 = 1_000_000;

const MIB_PER_GIB: u64 = 1024;

/// The GPUs of an instance type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CatalogGpus {
    pub count: u8,
    pub model: GpuModel,
    /// Memory of one device, MiB.
    pub mem_mib: u64,
}

/// One instance type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceType {
    pub name: String,
    pub vcpu: u32,
    pub mem_mib: u64,
    pub gpus: Option<CatalogGpus>,
    /// Headline network bandwidth; a burst figure when `net_burst`.
    pub net_mbps: u64,
    pub net_burst: bool,
    /// Local instance-store disk, or the catalogue's EBS root volume for EBS-only types.
    pub disk_mib: u64,
    /// Whether `disk_mib` is local NVMe (true) or the EBS root volume (false).
    pub disk_is_instance_store: bool,
    /// On-demand price, micro-dollars per hour.
    pub price_per_hour_micro_usd: u64,
}

impl InstanceType {
    /// Scalar capacity as a node of this type offers it.
    pub fn capacity(&self) -> Resources {
        Resources::new(
            u64::from(self.vcpu) * 1000,
            self.mem_mib,
            self.disk_mib,
            self.net_mbps,
        )
    }

    pub fn gpu_count(&self) -> u8 {
        self.gpus.as_ref().map_or(0, |g| g.count)
    }

    pub fn gpu_model(&self) -> Option<&GpuModel> {
        self.gpus.as_ref().map(|g| &g.model)
    }

    /// The node-level GPU description.
    pub fn node_gpus(&self) -> Option<NodeGpus> {
        self.gpus.as_ref().map(|g| NodeGpus {
            count: g.count,
            model: g.model.clone(),
        })
    }

    /// The price in dollars per hour (for display; sums use the micro-dollar integer).
    pub fn usd_per_hour(&self) -> f64 {
        self.price_per_hour_micro_usd as f64 / MICRO_USD_PER_USD as f64
    }

    /// A node of this type. `id` is a placeholder that [`crate::ClusterSpec::from_nodes`]
    /// renumbers.
    pub fn node_spec(&self, id: NodeId, name: String, zone: &str, pool: &str) -> NodeSpec {
        NodeSpec {
            id,
            name,
            capacity: self.capacity(),
            gpus: self.node_gpus(),
            attributes: NodeAttributes {
                zone: zone.to_string(),
                instance_type: self.name.clone(),
                pool: pool.to_string(),
                labels: Default::default(),
            },
        }
    }
}

/// A catalogue: types in file order, names unique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub region: String,
    pub source: String,
    pub types: Vec<InstanceType>,
}

/// The document form of a catalogue (see `solver/data/ec2_catalog.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogDoc {
    region: String,
    source: String,
    ebs_root_gib: u64,
    types: Vec<InstanceTypeDoc>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceTypeDoc {
    name: String,
    vcpu: u32,
    mem_gib: f64,
    #[serde(default)]
    gpu: Option<GpuDoc>,
    net_gbps: f64,
    #[serde(default)]
    net_burst: bool,
    #[serde(default)]
    instance_store_gb: Option<u64>,
    usd_per_hour: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuDoc {
    count: u8,
    model: String,
    mem_gib: u64,
}

/// `x * scale` as an exact integer, or an error when `x` is negative, not finite, or has more
/// precision than `1/scale`.
fn exact_scaled(x: f64, scale: f64) -> Result<u64, String> {
    if !x.is_finite() || x < 0.0 {
        return Err(format!("{x} is not a finite non-negative number"));
    }
    let scaled = x * scale;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 * scale.max(1.0) || rounded > u64::MAX as f64 / 2.0 {
        return Err(format!("{x} has more precision than 1/{scale}"));
    }
    Ok(rounded as u64)
}

impl Catalog {
    /// The embedded EC2 catalogue (us-east-1). Parsed once; the embedded file is checked by
    /// this module's tests, so a failure here is a build defect.
    pub fn ec2() -> &'static Catalog {
        static EC2: OnceLock<Catalog> = OnceLock::new();
        EC2.get_or_init(|| {
            Catalog::parse_toml(EC2_CATALOG_TOML)
                .unwrap_or_else(|e| panic!("solver/data/ec2_catalog.toml is invalid: {e}"))
        })
    }

    /// Parses and validates a catalogue document.
    pub fn parse_toml(text: &str) -> Result<Catalog, SpecError> {
        let doc: CatalogDoc = parse(text, SpecFormat::Toml)?;
        if doc.types.is_empty() {
            return Err(SpecError::new(
                "types",
                "the catalogue has no instance types",
            ));
        }
        let ebs_root_mib = doc.ebs_root_gib.checked_mul(MIB_PER_GIB).ok_or_else(|| {
            SpecError::new(
                "ebs_root_gib",
                format!("{} GiB overflows", doc.ebs_root_gib),
            )
        })?;
        let mut names = BTreeSet::new();
        let mut types = Vec::with_capacity(doc.types.len());
        for (i, t) in doc.types.into_iter().enumerate() {
            let at = |field: &str| format!("types[{i}].{field}");
            if t.name.trim().is_empty() {
                return Err(SpecError::new(at("name"), "empty name"));
            }
            if !names.insert(t.name.clone()) {
                return Err(SpecError::new(
                    at("name"),
                    format!("duplicate type {:?}", t.name),
                ));
            }
            if t.vcpu == 0 {
                return Err(SpecError::new(at("vcpu"), "must be at least 1"));
            }
            let mem_mib = exact_scaled(t.mem_gib, MIB_PER_GIB as f64)
                .map_err(|m| SpecError::new(at("mem_gib"), m))?;
            if mem_mib == 0 {
                return Err(SpecError::new(at("mem_gib"), "must be positive"));
            }
            let net_mbps =
                exact_scaled(t.net_gbps, 1000.0).map_err(|m| SpecError::new(at("net_gbps"), m))?;
            let price_per_hour_micro_usd = exact_scaled(t.usd_per_hour, MICRO_USD_PER_USD as f64)
                .map_err(|m| SpecError::new(at("usd_per_hour"), m))?;
            if price_per_hour_micro_usd == 0 {
                return Err(SpecError::new(at("usd_per_hour"), "must be positive"));
            }
            let gpus = match t.gpu {
                None => None,
                Some(g) => {
                    if g.count == 0 || g.count > GPU_WHOLE_COUNT_MAX {
                        return Err(SpecError::new(
                            at("gpu.count"),
                            format!("{} not in 1..={GPU_WHOLE_COUNT_MAX}", g.count),
                        ));
                    }
                    if g.model.trim().is_empty() {
                        return Err(SpecError::new(at("gpu.model"), "empty model name"));
                    }
                    if g.mem_gib == 0 {
                        return Err(SpecError::new(at("gpu.mem_gib"), "must be positive"));
                    }
                    Some(CatalogGpus {
                        count: g.count,
                        model: GpuModel::new(g.model),
                        mem_mib: g.mem_gib * MIB_PER_GIB,
                    })
                }
            };
            let (disk_mib, disk_is_instance_store) = match t.instance_store_gb {
                // AWS quotes instance store in GB (10^9 bytes); round down to whole MiB.
                Some(gb) => (gb.saturating_mul(1_000_000_000) / (1024 * 1024), true),
                None => (ebs_root_mib, false),
            };
            types.push(InstanceType {
                name: t.name,
                vcpu: t.vcpu,
                mem_mib,
                gpus,
                net_mbps,
                net_burst: t.net_burst,
                disk_mib,
                disk_is_instance_store,
                price_per_hour_micro_usd,
            });
        }
        Ok(Catalog {
            region: doc.region,
            source: doc.source,
            types,
        })
    }

    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// The named types, in the order given; an unknown name is an error naming it.
    pub fn select(&self, names: &[&str]) -> Result<Vec<InstanceType>, SpecError> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                self.get(n).cloned().ok_or_else(|| {
                    SpecError::new(format!("[{i}]"), format!("unknown instance type {n:?}"))
                })
            })
            .collect()
    }

    /// Types whose name starts with one of `prefixes` (`"m5."`, `"g5."`), in catalogue order.
    pub fn families(&self, prefixes: &[&str]) -> Vec<InstanceType> {
        self.types
            .iter()
            .filter(|t| prefixes.iter().any(|p| t.name.starts_with(p)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_parses_and_has_the_known_types() {
        let c = Catalog::ec2();
        assert_eq!(c.region, "us-east-1");
        assert!(
            (25..=40).contains(&c.types.len()),
            "{} types",
            c.types.len()
        );

        let p4d = c.get("p4d.24xlarge").expect("p4d.24xlarge");
        let g = p4d.gpus.as_ref().expect("p4d has GPUs");
        assert_eq!(
            (g.count, g.model.as_str(), g.mem_mib),
            (8, "A100M40", 40 * 1024)
        );
        assert_eq!(p4d.vcpu, 96);
        assert_eq!(p4d.mem_mib, 1152 * 1024);
        assert_eq!(p4d.price_per_hour_micro_usd, 32_772_600);
        assert_eq!(p4d.net_mbps, 400_000);
        assert!(p4d.disk_is_instance_store);

        let m5 = c.get("m5.large").expect("m5.large");
        assert_eq!(
            m5.capacity(),
            Resources::new(2000, 8192, 100 * 1024, 10_000)
        );
        assert!(m5.net_burst && !m5.disk_is_instance_store);
        assert_eq!(m5.price_per_hour_micro_usd, 96_000);
        assert_eq!(c.get("m6i.large").map(|t| t.net_mbps), Some(12_500));
        assert_eq!(c.get("p3.2xlarge").map(|t| t.mem_mib), Some(61 * 1024));
        assert_eq!(
            c.get("g4dn.12xlarge")
                .and_then(|t| t.gpu_model())
                .map(GpuModel::as_str),
            Some("T4")
        );
    }

    #[test]
    fn sizes_of_a_family_scale_with_price() {
        // Within m5, c5 and r5 the price per vCPU is constant: a check on typing errors.
        let c = Catalog::ec2();
        for fam in ["m5.", "m6i.", "c5.", "r5."] {
            let types = c.families(&[fam]);
            assert!(types.len() >= 5, "{fam}");
            let per_vcpu: BTreeSet<u64> = types
                .iter()
                .map(|t| t.price_per_hour_micro_usd / u64::from(t.vcpu))
                .collect();
            assert_eq!(
                per_vcpu.len(),
                1,
                "{fam}: price per vCPU differs: {per_vcpu:?}"
            );
        }
    }

    #[test]
    fn bad_catalogues_name_the_field() {
        let base = "region = \"r\"\nsource = \"s\"\nebs_root_gib = 10\n";
        let e = Catalog::parse_toml(&format!(
            "{base}[[types]]\nname = \"a\"\nvcpu = 0\nmem_gib = 1\nnet_gbps = 1\nusd_per_hour = 1\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "types[0].vcpu");

        let e = Catalog::parse_toml(&format!(
            "{base}[[types]]\nname = \"a\"\nvcpu = 1\nmem_gib = 1\nnet_gbps = 1\nusd_per_hour = 0.0000001\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "types[0].usd_per_hour");

        let one = "vcpu = 1\nmem_gib = 1\nnet_gbps = 1\nusd_per_hour = 1\n";
        let e = Catalog::parse_toml(&format!(
            "{base}[[types]]\nname = \"a\"\n{one}[[types]]\nname = \"a\"\n{one}"
        ))
        .unwrap_err();
        assert_eq!(e.path, "types[1].name");

        let e = Catalog::parse_toml(&format!(
            "{base}[[types]]\nname = \"a\"\n{one}gpu = {{ count = 0, model = \"T4\", mem_gib = 16 }}\n"
        ))
        .unwrap_err();
        assert_eq!(e.path, "types[0].gpu.count");

        let e = Catalog::parse_toml(&format!("{base}[[types]]\nname = \"a\"\n{one}colour = 3\n"))
            .unwrap_err();
        assert!(
            e.path.starts_with("types[0]") || e.message.contains("colour"),
            "{e}"
        );
        assert!(e.message.contains("line"), "{e}");
    }

    #[test]
    fn select_reports_unknown_names() {
        let c = Catalog::ec2();
        let ok = c.select(&["g5.xlarge", "m5.large"]).unwrap();
        assert_eq!(
            ok.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["g5.xlarge", "m5.large"]
        );
        let e = c.select(&["m5.large", "m5.huge"]).unwrap_err();
        assert_eq!(e.path, "[1]");
        assert!(e.message.contains("m5.huge"));
    }
}
