//! The EC2 pools file (`pools.toml`): what the cloud driver needs beyond the controller's
//! [`PoolSpec`] (image or launch template, subnets, user data, tags, requirements).
//!
//! Errors name the field path (`pools[1].requirements.vcpu_min`), from serde through
//! `serde_path_to_error` and from the checks after it.

use berth_solver::catalog::{Catalog, CatalogGpus, InstanceType};
use berth_solver::controller::{CapacityType, DisruptionBudget, PoolSpec};
use berth_solver::job::Tier;
use berth_solver::GpuModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pools file is wrong: `path` names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Config {
    /// Tag `berth:cluster` on every instance; DescribeInstances filters on it, so two control
    /// planes in one account never touch each other's instances.
    pub cluster: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// An EC2-compatible endpoint (`http://127.0.0.1:5000` for moto). Default: AWS's.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// What the default user data passes to `berth agent --server`.
    #[serde(default)]
    pub server_url: Option<String>,
    /// How often DescribeInstances reconciles the account with the controller.
    #[serde(default = "default_reconcile_interval_ms")]
    pub reconcile_interval_ms: u64,
    /// Throttled calls are retried this many times (full-jitter exponential back-off) before
    /// the controller hears `Throttled`.
    #[serde(default = "default_throttle_retries_max")]
    pub throttle_retries_max: u32,
    #[serde(default = "default_throttle_backoff_initial_ms")]
    pub throttle_backoff_initial_ms: u64,
    #[serde(default = "default_throttle_backoff_max_ms")]
    pub throttle_backoff_max_ms: u64,
    pub pools: Vec<Ec2PoolConfig>,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_reconcile_interval_ms() -> u64 {
    30_000
}
fn default_throttle_retries_max() -> u32 {
    4
}
fn default_throttle_backoff_initial_ms() -> u64 {
    200
}
fn default_throttle_backoff_max_ms() -> u64 {
    20_000
}

/// Instance requirements: every catalogue type that meets them, cheapest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    #[serde(default)]
    pub vcpu_min: u32,
    #[serde(default)]
    pub mem_mib_min: u64,
    #[serde(default)]
    pub gpu_model: Option<GpuModel>,
    #[serde(default)]
    pub gpu_count_min: u8,
    /// Types above this many vCPUs are left out (0: no bound).
    #[serde(default)]
    pub vcpu_max: u32,
}

impl Requirements {
    pub fn matches(&self, t: &InstanceType) -> bool {
        t.vcpu >= self.vcpu_min
            && (self.vcpu_max == 0 || t.vcpu <= self.vcpu_max)
            && t.mem_mib >= self.mem_mib_min
            && t.gpu_count() >= self.gpu_count_min
            && self
                .gpu_model
                .as_ref()
                .is_none_or(|m| t.gpu_model() == Some(m))
    }
}

/// One pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2PoolConfig {
    pub name: String,
    #[serde(default)]
    pub tier: Tier,
    /// Catalogue names, in preference order for ties. Either this or `requirements`.
    #[serde(default)]
    pub instance_types: Vec<String>,
    #[serde(default)]
    pub requirements: Option<Requirements>,
    pub zones: Vec<String>,
    /// Subnet per zone; without one the instance goes to the zone's default subnet.
    #[serde(default)]
    pub subnets: BTreeMap<String, String>,
    #[serde(default)]
    pub capacity_type: CapacityType,
    #[serde(default)]
    pub min_nodes: u32,
    pub max_nodes: u32,
    #[serde(default)]
    pub autoscale: Option<bool>,
    #[serde(default)]
    pub idle_nodes_min: u32,
    #[serde(default)]
    pub idle_nodes_max: u32,
    #[serde(default = "default_scale_down_idle_ms")]
    pub scale_down_idle_ms: u64,
    #[serde(default)]
    pub disruption_budget: DisruptionBudget,
    #[serde(default = "one")]
    pub zone_max_skew: u32,
    /// An existing launch template (name). Either this or `image_id`.
    #[serde(default)]
    pub launch_template: Option<String>,
    /// An AMI; Berth then creates the launch template `berth-<cluster>-<pool>` itself.
    #[serde(default)]
    pub image_id: Option<String>,
    /// User data (plain text, base64-encoded by Berth). Default: a script starting
    /// `berth agent` against `server_url` with the instance's id, zone and type.
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// Extra tags on every instance (the `berth:` prefix is reserved).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_scale_down_idle_ms() -> u64 {
    300_000
}
fn one() -> u32 {
    1
}

impl Ec2Config {
    /// Parses and checks a pools file against the catalogue.
    pub fn from_toml(text: &str, catalog: &Catalog) -> Result<Ec2Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Ec2Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(
                if path == "." { String::new() } else { path },
                e.into_inner().message().trim().to_string(),
            )
        })?;
        cfg.validate(catalog)?;
        Ok(cfg)
    }

    pub fn validate(&self, catalog: &Catalog) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::new("cluster", "must not be empty"));
        }
        if self.pools.is_empty() {
            return Err(ConfigError::new("pools", "give at least one pool"));
        }
        if self.reconcile_interval_ms == 0 {
            return Err(ConfigError::new(
                "reconcile_interval_ms",
                "must be at least 1",
            ));
        }
        for (i, p) in self.pools.iter().enumerate() {
            let at = |f: &str| format!("pools[{i}].{f}");
            match (&p.launch_template, &p.image_id) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        at("image_id"),
                        "give launch_template or image_id, not both",
                    ))
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        at("image_id"),
                        "give launch_template or image_id",
                    ))
                }
                _ => {}
            }
            if p.instance_types.is_empty() == p.requirements.is_none() {
                return Err(ConfigError::new(
                    at("instance_types"),
                    "give instance_types or requirements (exactly one)",
                ));
            }
            if p.requirements.is_some() && Self::types_of(p, catalog).is_empty() {
                return Err(ConfigError::new(
                    at("requirements"),
                    "no type of the catalogue meets these requirements",
                ));
            }
            for zone in p.subnets.keys() {
                if !p.zones.contains(zone) {
                    return Err(ConfigError::new(
                        at(&format!("subnets.{zone}")),
                        "a subnet for a zone the pool does not use",
                    ));
                }
            }
            for k in p.tags.keys() {
                if k.starts_with("berth:") {
                    return Err(ConfigError::new(
                        at(&format!("tags.{k}")),
                        "the berth: tag prefix is reserved",
                    ));
                }
            }
        }
        // The controller's own checks (zones, min/max, types in the catalogue), with the
        // same paths.
        let ctl = berth_solver::controller::ControllerConfig {
            pools: self.pool_specs(catalog),
            ..Default::default()
        };
        berth_solver::controller::Controller::new(
            ctl,
            catalog,
            &berth_solver::ClusterSpec::default(),
            0,
        )
        .map_err(|e| match e {
            berth_solver::controller::ControllerError::Config(s) => {
                ConfigError::new(s.path, s.message)
            }
            other => ConfigError::new("pools", other.to_string()),
        })?;
        Ok(())
    }

    /// The instance types of a pool: as listed, or every catalogue type meeting its
    /// requirements, cheapest first.
    pub fn types_of(p: &Ec2PoolConfig, catalog: &Catalog) -> Vec<String> {
        match &p.requirements {
            None => p.instance_types.clone(),
            Some(r) => {
                let mut ts: Vec<&InstanceType> =
                    catalog.types.iter().filter(|t| r.matches(t)).collect();
                ts.sort_by_key(|t| (t.price_per_hour_micro_usd, t.name.clone()));
                ts.into_iter().map(|t| t.name.clone()).collect()
            }
        }
    }

    /// The controller's view of the pools.
    pub fn pool_specs(&self, catalog: &Catalog) -> Vec<PoolSpec> {
        self.pools
            .iter()
            .map(|p| PoolSpec {
                name: p.name.clone(),
                tier: p.tier,
                instance_types: Self::types_of(p, catalog),
                zones: p.zones.clone(),
                min_nodes: p.min_nodes,
                max_nodes: p.max_nodes,
                autoscale: p.autoscale,
                idle_nodes_min: p.idle_nodes_min,
                idle_nodes_max: p.idle_nodes_max,
                scale_down_idle_ms: p.scale_down_idle_ms,
                disruption_budget: p.disruption_budget,
                zone_max_skew: p.zone_max_skew,
                capacity_type: p.capacity_type,
            })
            .collect()
    }

    pub fn pool(&self, name: &str) -> Option<&Ec2PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// An instance type as EC2's DescribeInstanceTypes describes it: the fields Berth takes from
/// the API (everything else, the price above all, comes from the shipped catalogue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSpec {
    pub name: String,
    pub vcpu: u32,
    pub mem_mib: u64,
    /// Devices, Berth's model name ([`gpu_model_name`]) and memory per device.
    pub gpus: Option<CatalogGpus>,
}

/// GPU models AWS sells with several memory sizes: Berth's name carries the size
/// (`A100` with 40 GiB → `A100M40`), as the catalogue and the openb trace name them.
pub const MEMORY_SUFFIXED_GPU_MODELS: &[&str] = &["V100", "A100", "H100"];

/// Berth's GPU model name for DescribeInstanceTypes' `GpuInfo.Gpus[].Name` and memory.
pub fn gpu_model_name(api_name: &str, mem_mib: u64) -> GpuModel {
    if MEMORY_SUFFIXED_GPU_MODELS.contains(&api_name) {
        GpuModel::new(format!("{api_name}M{}", (mem_mib + 512) / 1024))
    } else {
        GpuModel::new(api_name)
    }
}

/// Where the instance specs the controller plans with came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecSource {
    /// vCPU, memory and GPUs from DescribeInstanceTypes; prices from the catalogue.
    DescribeInstanceTypes { types: usize },
    /// The API could not be asked (`why`): everything from the shipped catalogue.
    Catalogue { why: String },
}

impl std::fmt::Display for SpecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecSource::DescribeInstanceTypes { types } => write!(
                f,
                "vCPU, memory and GPUs of {types} types from EC2 DescribeInstanceTypes, prices from the shipped catalogue"
            ),
            SpecSource::Catalogue { why } => {
                write!(f, "the shipped catalogue (DescribeInstanceTypes failed: {why})")
            }
        }
    }
}

impl Ec2Config {
    /// The type names whose specs the pools need: the listed types, and every catalogue type
    /// for a pool given by requirements (sorted, unique).
    pub fn type_names_needed(&self, catalog: &Catalog) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for p in &self.pools {
            if p.requirements.is_some() {
                out.extend(catalog.types.iter().map(|t| t.name.clone()));
            }
            out.extend(p.instance_types.iter().cloned());
        }
        out.into_iter().collect()
    }

    /// The catalogue the controller plans with: the shipped one's types that EC2 knows, with
    /// vCPU, memory and GPUs as DescribeInstanceTypes gives them (`specs`), the catalogue's
    /// prices, network and disk. A listed type EC2 does not know is refused with its field
    /// (`pools[0].instance_types[1]`); a pool given by requirements keeps the types EC2 knows
    /// that meet them, and is refused (`pools[0].requirements`) when none does.
    pub fn catalog_with_specs(
        &self,
        catalog: &Catalog,
        specs: &BTreeMap<String, TypeSpec>,
        endpoint: &str,
    ) -> Result<Catalog, ConfigError> {
        for (i, p) in self.pools.iter().enumerate() {
            for (j, t) in p.instance_types.iter().enumerate() {
                if !specs.contains_key(t) {
                    return Err(ConfigError::new(
                        format!("pools[{i}].instance_types[{j}]"),
                        format!(
                            "EC2 does not know instance type {t:?} in {} (DescribeInstanceTypes at {endpoint} has no such type)",
                            self.region
                        ),
                    ));
                }
            }
        }
        let types: Vec<InstanceType> = catalog
            .types
            .iter()
            .filter_map(|t| {
                let s = specs.get(&t.name)?;
                Some(InstanceType {
                    vcpu: s.vcpu,
                    mem_mib: s.mem_mib,
                    gpus: s.gpus.clone(),
                    ..t.clone()
                })
            })
            .collect();
        let out = Catalog {
            region: catalog.region.clone(),
            source: format!(
                "{}; vCPU, memory and GPUs from EC2 DescribeInstanceTypes ({}, {endpoint})",
                catalog.source, self.region
            ),
            types,
        };
        self.validate(&out)?;
        Ok(out)
    }
}

/// The default user data: installs nothing, starts `berth agent` (the image must carry the
/// binary at `/usr/local/bin/berth` and the agent token in `/etc/berth/agent-token`). The agent
/// listens on every address and advertises the instance's private IP (from the metadata), the
/// address the control plane fetches task logs from.
pub fn default_user_data(server_url: &str, pool: &str) -> String {
    format!(
        r#"#!/bin/sh
set -eu
md=http://169.254.169.254/latest
tok=$(curl -sf -X PUT "$md/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
get() {{ curl -sf -H "X-aws-ec2-metadata-token: $tok" "$md/meta-data/$1"; }}
id=$(get instance-id)
ip=$(get local-ipv4)
exec /usr/local/bin/berth agent --server '{server_url}' \
  --token "$(cat /etc/berth/agent-token)" --name "$id" --instance-id "$id" \
  --zone "$(get placement/availability-zone)" --instance-type "$(get instance-type)" \
  --listen 0.0.0.0:7071 --advertise-url "http://$ip:7071" \
  --data /var/lib/berth-agent  # pool {pool}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
cluster = "c1"
[[pools]]
name = "flex"
instance_types = ["m5.large"]
zones = ["us-east-1a", "us-east-1b"]
max_nodes = 4
image_id = "ami-12345678"
"#;

    /// Runs the user data with `curl` answering as the metadata service and a stand-in `berth`
    /// that records its arguments: the agent advertises the instance's private IP.
    #[test]
    fn user_data_advertises_the_private_ip() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stub = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        stub(
            "curl",
            r#"for a; do case "$a" in http://*) url=$a ;; esac; done
case "$url" in
  */api/token) echo tok ;;
  */meta-data/instance-id) echo i-0abc ;;
  */meta-data/local-ipv4) echo 10.1.2.3 ;;
  */meta-data/placement/availability-zone) echo us-east-1a ;;
  */meta-data/instance-type) echo m5.large ;;
  *) exit 22 ;;
esac"#,
        );
        let args = dir.path().join("args");
        let berth = stub(
            "berth",
            &format!(r#"for a; do echo "$a"; done > {}"#, args.display()),
        );
        let token = dir.path().join("agent-token");
        std::fs::write(&token, "secret").unwrap();
        let script = default_user_data("http://10.0.0.5:7070", "flex")
            .replace("/usr/local/bin/berth", berth.to_str().unwrap())
            .replace("/etc/berth/agent-token", token.to_str().unwrap());
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read_to_string(&args).unwrap();
        let got: Vec<&str> = got.lines().collect();
        let after = |flag: &str| {
            let i = got
                .iter()
                .position(|a| *a == flag)
                .unwrap_or_else(|| panic!("{flag}: {got:?}"));
            got[i + 1]
        };
        assert_eq!(after("--advertise-url"), "http://10.1.2.3:7071");
        assert_eq!(after("--listen"), "0.0.0.0:7071");
        assert_eq!(after("--instance-id"), "i-0abc");
        assert_eq!(after("--zone"), "us-east-1a");
        assert_eq!(after("--token"), "secret");
    }

    #[test]
    fn parses_and_converts() {
        let c = Ec2Config::from_toml(OK, Catalog::ec2()).unwrap();
        let specs = c.pool_specs(Catalog::ec2());
        assert_eq!(specs[0].instance_types, vec!["m5.large".to_string()]);
        assert_eq!(specs[0].max_nodes, 4);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = OK.replace("max_nodes = 4", "max_nodes = \"x\"");
        let e = Ec2Config::from_toml(&bad, Catalog::ec2()).unwrap_err();
        assert_eq!(e.path, "pools[0].max_nodes", "{e}");
        let bad = OK.replace("m5.large", "m5.nope");
        let e = Ec2Config::from_toml(&bad, Catalog::ec2()).unwrap_err();
        assert_eq!(e.path, "pools[0].instance_types[0]", "{e}");
        let bad = OK.replace("image_id = \"ami-12345678\"", "");
        let e = Ec2Config::from_toml(&bad, Catalog::ec2()).unwrap_err();
        assert_eq!(e.path, "pools[0].image_id", "{e}");
        let bad = OK.replace("cluster = \"c1\"", "cluster = \"c1\"\nbogus = 1");
        let e = Ec2Config::from_toml(&bad, Catalog::ec2()).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
    }

    #[test]
    fn api_specs_replace_the_catalogues_and_unknown_types_name_the_field() {
        assert_eq!(gpu_model_name("A100", 40_960).as_str(), "A100M40");
        assert_eq!(gpu_model_name("H100", 81_920).as_str(), "H100M80");
        assert_eq!(gpu_model_name("A10G", 22_888).as_str(), "A10G");
        let c = Ec2Config::from_toml(OK, Catalog::ec2()).unwrap();
        let spec = |vcpu, mem_mib| TypeSpec {
            name: "m5.large".into(),
            vcpu,
            mem_mib,
            gpus: None,
        };
        let specs = BTreeMap::from([("m5.large".to_string(), spec(3, 9_000))]);
        let cat = c
            .catalog_with_specs(Catalog::ec2(), &specs, "test")
            .unwrap();
        let t = cat.get("m5.large").unwrap();
        assert_eq!((t.vcpu, t.mem_mib), (3, 9_000));
        let shipped = Catalog::ec2().get("m5.large").unwrap();
        assert_eq!(t.price_per_hour_micro_usd, shipped.price_per_hour_micro_usd);
        assert_eq!(cat.types.len(), 1, "types EC2 does not know are left out");
        let e = c
            .catalog_with_specs(Catalog::ec2(), &BTreeMap::new(), "test")
            .unwrap_err();
        assert_eq!(e.path, "pools[0].instance_types[0]", "{e}");
    }

    #[test]
    fn requirements_pick_matching_types_cheapest_first() {
        let text = OK.replace(
            "instance_types = [\"m5.large\"]",
            "requirements = { vcpu_min = 4, gpu_count_min = 1 }",
        );
        let c = Ec2Config::from_toml(&text, Catalog::ec2()).unwrap();
        let types = Ec2Config::types_of(&c.pools[0], Catalog::ec2());
        assert!(!types.is_empty());
        let prices: Vec<u64> = types
            .iter()
            .map(|t| Catalog::ec2().get(t).unwrap().price_per_hour_micro_usd)
            .collect();
        assert!(prices.windows(2).all(|w| w[0] <= w[1]));
        for t in &types {
            let it = Catalog::ec2().get(t).unwrap();
            assert!(it.vcpu >= 4 && it.gpu_count() >= 1, "{t}");
        }
    }
}
