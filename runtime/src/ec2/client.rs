//! [`Ec2Pools`]: the EC2 calls of the cloud driver, one method per thing the controller asks
//! (provision, terminate) or the reconcile loop needs (list, find a request's instances).
//!
//! Every instance carries `berth:cluster`, `berth:pool` and `berth:request` tags; a request's
//! `ClientToken` is derived from the cluster and the request id, so re-issuing it after a
//! control-plane restart is idempotent where EC2 honours tokens, and the reconcile path first
//! looks for instances tagged with the request before re-issuing at all.

use super::config::{
    default_user_data, gpu_model_name, ConfigError, Ec2Config, Ec2PoolConfig, SpecSource, TypeSpec,
};
use super::error::{Backoff, CloudError};
pub use crate::cloud::ProvisionRequest;
use aws_sdk_ec2::types::{
    CreateFleetError as FleetErrorItem, DefaultTargetCapacityType, Filter,
    FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType,
    InstanceStateName, InstanceType, LaunchTemplateIamInstanceProfileSpecificationRequest,
    OnDemandOptionsRequest, RequestLaunchTemplateData, ResourceType, SpotAllocationStrategy,
    SpotOptionsRequest, Tag, TagSpecification, TargetCapacitySpecificationRequest,
};
use berth_solver::catalog::{Catalog, CatalogGpus, MICRO_USD_PER_USD};
use berth_solver::controller::{CapacityType, InstanceId, LaunchErrorKind, RequestId};
use berth_solver::resources::GPU_WHOLE_COUNT_MAX;
use std::collections::BTreeMap;
use tokio::sync::Mutex;

pub const TAG_CLUSTER: &str = "berth:cluster";
pub const TAG_POOL: &str = "berth:pool";
pub const TAG_REQUEST: &str = "berth:request";
/// Instances one DescribeInstances page returns (the API's maximum).
pub const DESCRIBE_PAGE_MAX: i32 = 1000;
/// Instance ids per TerminateInstances call (the API's maximum).
pub const TERMINATE_BATCH_MAX: usize = 1000;
/// Type names per DescribeInstanceTypes / DescribeSpotPriceHistory call.
pub const TYPE_BATCH_MAX: usize = 100;
/// Results per DescribeInstanceTypes page (the API's maximum).
pub const DESCRIBE_TYPES_PAGE_MAX: i32 = 100;
/// Spot requests per DescribeSpotInstanceRequests page (the API's maximum).
pub const DESCRIBE_SPOT_PAGE_MAX: i32 = 1000;

/// What EC2 says about a spot instance's request (DescribeSpotInstanceRequests): its status
/// code (`fulfilled`, `marked-for-termination`, `instance-terminated-by-price`, …) and when
/// the status last changed, in ms since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpotStatus {
    pub code: String,
    pub updated_ms: Option<u64>,
}

/// The latest spot price of a type in a zone (DescribeSpotPriceHistory, Linux/UNIX).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpotPrice {
    pub instance_type: String,
    pub zone: String,
    pub price_per_hour_micro_usd: u64,
}

/// What a provisioning call achieved: the instances it launched, and for the rest why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionOutcome {
    pub launched: Vec<InstanceId>,
    /// Set when fewer than `count` were launched.
    pub failed: Option<CloudError>,
}

/// An instance of this cluster as DescribeInstances lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInstance {
    pub id: InstanceId,
    pub pool: String,
    pub request: Option<RequestId>,
    pub instance_type: String,
    pub zone: String,
    /// `pending`, `running`, `shutting-down`, `stopping`, `stopped`.
    pub state: String,
    pub spot: bool,
    /// The state transition reason code (`Server.SpotInstanceTermination` for a reclaim).
    pub state_reason: Option<String>,
}

impl CloudInstance {
    /// Pending or running: capacity the controller may count on.
    pub fn is_alive(&self) -> bool {
        self.state == "pending" || self.state == "running"
    }
}

/// The EC2 side of the pools.
pub struct Ec2Pools {
    client: aws_sdk_ec2::Client,
    config: Ec2Config,
    backoff: Mutex<Backoff>,
    /// The default subnet of each zone (DescribeSubnets), for pools that name none.
    default_subnets: Mutex<BTreeMap<String, String>>,
}

/// `ClientToken` of a request: stable across restarts, unique per cluster (≤ 64 ASCII).
pub fn client_token(cluster: &str, request: RequestId) -> String {
    let mut t = format!("berth-{cluster}-{}", request.0);
    t.truncate(64);
    t
}

fn parse_request(tag: &str) -> Option<RequestId> {
    tag.strip_prefix("req-")?.parse().ok().map(RequestId)
}

impl Ec2Pools {
    /// Credentials and region from the standard AWS chain (environment, profile, SSO, IMDS),
    /// the region and endpoint from the config when given there. `seed` seeds the throttling
    /// back-off's jitter.
    pub async fn connect(config: Ec2Config, seed: u64) -> Ec2Pools {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        // Retries are the driver's (jittered, bounded, with the controller told): the SDK
        // makes one attempt per call.
        let ec2 = aws_sdk_ec2::config::Builder::from(&shared)
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
            .build();
        let backoff = Backoff::new(
            seed,
            config.throttle_backoff_initial_ms,
            config.throttle_backoff_max_ms,
        );
        Ec2Pools {
            client: aws_sdk_ec2::Client::from_conf(ec2),
            config,
            backoff: Mutex::new(backoff),
            default_subnets: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn config(&self) -> &Ec2Config {
        &self.config
    }

    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    /// Runs `call` again while EC2 throttles it, at most `throttle_retries_max` more times.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        let mut attempt = 0u32;
        loop {
            match call().await {
                Err(e) if e.is_throttled() && attempt < self.config.throttle_retries_max => {
                    let d = self.backoff.lock().await.delay(attempt);
                    tracing::warn!(
                        action = e.action,
                        attempt,
                        delay_ms = d.as_millis() as u64,
                        "EC2 throttled; backing off"
                    );
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn pool(&self, name: &str) -> Result<&Ec2PoolConfig, CloudError> {
        self.config
            .pool(name)
            .ok_or_else(|| CloudError::from_code("config", "UnknownPool", name))
    }

    fn template_name(&self, pool: &Ec2PoolConfig) -> String {
        pool.launch_template
            .clone()
            .unwrap_or_else(|| format!("berth-{}-{}", self.config.cluster, pool.name))
    }

    /// Creates the launch templates of pools given by `image_id` (an existing one of the same
    /// name is kept as it is).
    pub async fn ensure_launch_templates(&self) -> Result<(), CloudError> {
        for p in &self.config.pools {
            let Some(image) = &p.image_id else { continue };
            let user_data = match (&p.user_data, &self.config.server_url) {
                (Some(u), _) => u.clone(),
                (None, Some(s)) => default_user_data(s, &p.name),
                (None, None) => default_user_data("http://127.0.0.1:7070", &p.name),
            };
            let mut data = RequestLaunchTemplateData::builder()
                .image_id(image)
                .user_data(base64(user_data.as_bytes()))
                .set_security_group_ids(
                    (!p.security_group_ids.is_empty()).then(|| p.security_group_ids.clone()),
                );
            if let Some(profile) = &p.instance_profile {
                data = data.iam_instance_profile(
                    LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .name(profile)
                        .build(),
                );
            }
            let name = self.template_name(p);
            let (client, name_ref, data_ref) = (&self.client, &name, &data);
            let res = self
                .retrying(|| async move {
                    client
                        .create_launch_template()
                        .launch_template_name(name_ref)
                        .launch_template_data(data_ref.clone().build())
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("CreateLaunchTemplate", &e))
                })
                .await;
            match res {
                Ok(_) => {
                    tracing::info!(template = %name, pool = %p.name, "launch template created")
                }
                Err(e) if e.code.contains("AlreadyExists") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The subnet a request goes to: the pool's for the zone, else the zone's default subnet.
    /// Always a subnet, never just an `AvailabilityZone` override: the subnet is what places
    /// an instance (moto ignores a fleet override's zone and uses the first default subnet).
    async fn subnet(&self, pool: &Ec2PoolConfig, zone: &str) -> Result<String, CloudError> {
        if let Some(s) = pool.subnets.get(zone) {
            return Ok(s.clone());
        }
        if let Some(s) = self.default_subnets.lock().await.get(zone) {
            return Ok(s.clone());
        }
        let client = &self.client;
        let out = self
            .retrying(|| async move {
                client
                    .describe_subnets()
                    .filters(
                        Filter::builder()
                            .name("availability-zone")
                            .values(zone)
                            .build(),
                    )
                    .filters(
                        Filter::builder()
                            .name("default-for-az")
                            .values("true")
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("DescribeSubnets", &e))
            })
            .await?;
        let id = out
            .subnets()
            .iter()
            .find_map(|s| s.subnet_id())
            .ok_or_else(|| {
                CloudError::from_code(
                    "DescribeSubnets",
                    "NoDefaultSubnet",
                    &format!("zone {zone} has no default subnet: give pools[].subnets.{zone}"),
                )
            })?
            .to_string();
        self.default_subnets
            .lock()
            .await
            .insert(zone.to_string(), id.clone());
        Ok(id)
    }

    fn tags(&self, pool: &Ec2PoolConfig, request: RequestId) -> TagSpecification {
        let mut t = TagSpecification::builder().resource_type(ResourceType::Instance);
        let mut all: BTreeMap<&str, String> = pool
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        all.insert(TAG_CLUSTER, self.config.cluster.clone());
        all.insert(TAG_POOL, pool.name.clone());
        all.insert(TAG_REQUEST, request.to_string());
        for (k, v) in all {
            t = t.tags(Tag::builder().key(k).value(v).build());
        }
        t.build()
    }

    /// Launches `req.count` instances of one type in one zone through CreateFleet (type
    /// `instant`): spot with the price-capacity-optimised strategy, or on-demand. One zone
    /// per call, so zone balance is the controller's (and moto's CreateFleet, which puts a
    /// fleet in its first override's zone, cannot skew it).
    pub async fn provision(&self, req: &ProvisionRequest) -> ProvisionOutcome {
        let pool = match self.pool(&req.pool) {
            Ok(p) => p,
            Err(e) => {
                return ProvisionOutcome {
                    launched: Vec::new(),
                    failed: Some(e),
                }
            }
        };
        let spot = pool.capacity_type == CapacityType::Spot;
        let mut overrides = FleetLaunchTemplateOverridesRequest::builder()
            .instance_type(InstanceType::from(req.instance_type.as_str()))
            .availability_zone(&req.zone);
        match self.subnet(pool, &req.zone).await {
            Ok(subnet) => overrides = overrides.subnet_id(subnet),
            Err(e) => {
                return ProvisionOutcome {
                    launched: Vec::new(),
                    failed: Some(e),
                }
            }
        }
        let ltc = FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(
                FleetLaunchTemplateSpecificationRequest::builder()
                    .launch_template_name(self.template_name(pool))
                    .version("$Latest")
                    .build(),
            )
            .overrides(overrides.build())
            .build();
        let target = TargetCapacitySpecificationRequest::builder()
            .total_target_capacity(req.count as i32)
            .default_target_capacity_type(if spot {
                DefaultTargetCapacityType::Spot
            } else {
                DefaultTargetCapacityType::OnDemand
            })
            .set_on_demand_target_capacity((!spot).then_some(req.count as i32))
            .set_spot_target_capacity(spot.then_some(req.count as i32))
            .build();
        let token = client_token(&self.config.cluster, req.request);
        let tags = self.tags(pool, req.request);
        let (client, token, ltc, target, tags) = (&self.client, &token, &ltc, &target, &tags);
        let res = self
            .retrying(|| async move {
                client
                    .create_fleet()
                    .r#type(FleetType::Instant)
                    .client_token(token)
                    .launch_template_configs(ltc.clone())
                    .target_capacity_specification(target.clone())
                    .spot_options(
                        SpotOptionsRequest::builder()
                            .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                            .build(),
                    )
                    .on_demand_options(
                        OnDemandOptionsRequest::builder()
                            .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                            .build(),
                    )
                    .tag_specifications(tags.clone())
                    .send()
                    .await
                    .map_err(|e| CloudError::from_sdk("CreateFleet", &e))
            })
            .await;
        match res {
            Err(e) => ProvisionOutcome {
                launched: Vec::new(),
                failed: Some(e),
            },
            Ok(out) => {
                let mut launched: Vec<InstanceId> = out
                    .instances()
                    .iter()
                    .flat_map(|i| i.instance_ids().iter().cloned().map(InstanceId))
                    .collect();
                launched.sort();
                launched.dedup();
                launched.truncate(req.count as usize);
                let failed = (launched.len() < req.count as usize).then(|| {
                    fleet_error(out.errors()).unwrap_or_else(|| {
                        CloudError::from_code(
                            "CreateFleet",
                            "PartialFulfilment",
                            &format!("{} of {} launched", launched.len(), req.count),
                        )
                    })
                });
                ProvisionOutcome { launched, failed }
            }
        }
    }

    /// Terminates instances (batched); an id EC2 no longer knows is not an error.
    pub async fn terminate(&self, instances: &[InstanceId]) -> Result<(), CloudError> {
        for batch in instances.chunks(TERMINATE_BATCH_MAX) {
            let ids: Vec<String> = batch.iter().map(|i| i.0.clone()).collect();
            let (client, ids) = (&self.client, &ids);
            let res = self
                .retrying(|| async move {
                    client
                        .terminate_instances()
                        .set_instance_ids(Some(ids.clone()))
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("TerminateInstances", &e))
                })
                .await;
            match res {
                Ok(_) => {}
                Err(e) if e.code == "InvalidInstanceID.NotFound" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every instance tagged with this cluster that is not terminated (optionally: of one
    /// request only).
    pub async fn list(&self, request: Option<RequestId>) -> Result<Vec<CloudInstance>, CloudError> {
        let mut filters = vec![
            Filter::builder()
                .name(format!("tag:{TAG_CLUSTER}"))
                .values(&self.config.cluster)
                .build(),
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(
                    ["pending", "running", "shutting-down", "stopping", "stopped"]
                        .map(String::from)
                        .to_vec(),
                ))
                .build(),
        ];
        if let Some(r) = request {
            filters.push(
                Filter::builder()
                    .name(format!("tag:{TAG_REQUEST}"))
                    .values(r.to_string())
                    .build(),
            );
        }
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let (client, filters, next_ref) = (&self.client, &filters, &next);
            let page = self
                .retrying(|| async move {
                    client
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .max_results(DESCRIBE_PAGE_MAX)
                        .set_next_token(next_ref.clone())
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("DescribeInstances", &e))
                })
                .await?;
            for r in page.reservations() {
                for i in r.instances() {
                    let Some(id) = i.instance_id() else { continue };
                    let tag = |k: &str| {
                        i.tags()
                            .iter()
                            .find(|t| t.key() == Some(k))
                            .and_then(|t| t.value())
                            .map(str::to_string)
                    };
                    out.push(CloudInstance {
                        id: InstanceId(id.to_string()),
                        pool: tag(TAG_POOL).unwrap_or_default(),
                        request: tag(TAG_REQUEST).as_deref().and_then(parse_request),
                        instance_type: i
                            .instance_type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default(),
                        zone: i
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .unwrap_or_default()
                            .to_string(),
                        state: i
                            .state()
                            .and_then(|s| s.name())
                            .map(InstanceStateName::as_str)
                            .unwrap_or("unknown")
                            .to_string(),
                        spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
                        state_reason: i.state_reason().and_then(|s| s.code()).map(str::to_string),
                    });
                }
            }
            next = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

impl Ec2Pools {
    /// vCPU, memory and GPUs of the named types from DescribeInstanceTypes (filtered by
    /// `instance-type`, so a name EC2 does not know is simply absent from the answer).
    pub async fn describe_instance_types(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, TypeSpec>, CloudError> {
        let mut out = BTreeMap::new();
        for batch in names.chunks(TYPE_BATCH_MAX) {
            let mut next: Option<String> = None;
            loop {
                let (client, next_ref) = (&self.client, &next);
                let page = self
                    .retrying(|| async move {
                        client
                            .describe_instance_types()
                            .filters(
                                Filter::builder()
                                    .name("instance-type")
                                    .set_values(Some(batch.to_vec()))
                                    .build(),
                            )
                            .max_results(DESCRIBE_TYPES_PAGE_MAX)
                            .set_next_token(next_ref.clone())
                            .send()
                            .await
                            .map_err(|e| CloudError::from_sdk("DescribeInstanceTypes", &e))
                    })
                    .await?;
                for t in page.instance_types() {
                    let Some(name) = t.instance_type().map(|n| n.as_str().to_string()) else {
                        continue;
                    };
                    let vcpu = t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(0);
                    let mem = t.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0);
                    if vcpu <= 0 || mem <= 0 {
                        tracing::warn!(instance_type = %name, "DescribeInstanceTypes gives no vCPU or memory; type left out");
                        continue;
                    }
                    let devices = t.gpu_info().map(|g| g.gpus()).unwrap_or_default();
                    let count: i32 = devices.iter().filter_map(|d| d.count()).sum();
                    let gpus = devices.first().filter(|_| count > 0).map(|d| {
                        let mem_mib = d
                            .memory_info()
                            .and_then(|m| m.size_in_mib())
                            .map_or(0, |m| m.max(0) as u64);
                        CatalogGpus {
                            count: count.clamp(1, i32::from(GPU_WHOLE_COUNT_MAX)) as u8,
                            model: gpu_model_name(d.name().unwrap_or("unknown"), mem_mib),
                            mem_mib,
                        }
                    });
                    out.insert(
                        name.clone(),
                        TypeSpec {
                            name,
                            vcpu: vcpu as u32,
                            mem_mib: mem as u64,
                            gpus,
                        },
                    );
                }
                next = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The catalogue the controller plans with: specs from DescribeInstanceTypes when EC2
    /// answers (a listed type it does not know is a [`ConfigError`] naming the pool field),
    /// else the shipped `base` as it is, with the reason.
    pub async fn instance_catalog(
        &self,
        base: &Catalog,
    ) -> Result<(Catalog, SpecSource), ConfigError> {
        let names = self.config.type_names_needed(base);
        match self.describe_instance_types(&names).await {
            Ok(specs) => {
                let endpoint = self
                    .config
                    .endpoint_url
                    .clone()
                    .unwrap_or_else(|| format!("AWS {}", self.config.region));
                let catalog = self.config.catalog_with_specs(base, &specs, &endpoint)?;
                let n = catalog.types.len();
                tracing::info!(types = n, "instance specs from DescribeInstanceTypes");
                Ok((catalog, SpecSource::DescribeInstanceTypes { types: n }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "DescribeInstanceTypes failed; using the shipped catalogue's specs");
                Ok((base.clone(), SpecSource::Catalogue { why: e.to_string() }))
            }
        }
    }

    /// The spot-request status of each of `instances` that has one (DescribeSpotInstanceRequests
    /// of the open and active requests, joined on the instance id): how the reconcile loop
    /// sees an interruption notice (`marked-for-termination`) before the instance goes.
    pub async fn spot_statuses(
        &self,
        instances: &[InstanceId],
    ) -> Result<BTreeMap<InstanceId, SpotStatus>, CloudError> {
        let mut out = BTreeMap::new();
        if instances.is_empty() {
            return Ok(out);
        }
        let wanted: std::collections::BTreeSet<&str> =
            instances.iter().map(|i| i.0.as_str()).collect();
        let mut next: Option<String> = None;
        loop {
            let (client, next_ref) = (&self.client, &next);
            let page = self
                .retrying(|| async move {
                    client
                        .describe_spot_instance_requests()
                        .filters(
                            Filter::builder()
                                .name("state")
                                .values("open")
                                .values("active")
                                .build(),
                        )
                        .max_results(DESCRIBE_SPOT_PAGE_MAX)
                        .set_next_token(next_ref.clone())
                        .send()
                        .await
                        .map_err(|e| CloudError::from_sdk("DescribeSpotInstanceRequests", &e))
                })
                .await?;
            for r in page.spot_instance_requests() {
                let Some(id) = r.instance_id().filter(|i| wanted.contains(i)) else {
                    continue;
                };
                let Some(status) = r.status() else { continue };
                out.insert(
                    InstanceId(id.to_string()),
                    SpotStatus {
                        code: status.code().unwrap_or_default().to_string(),
                        updated_ms: status
                            .update_time()
                            .and_then(|t| t.to_millis().ok())
                            .and_then(|ms| u64::try_from(ms).ok()),
                    },
                );
            }
            next = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The latest Linux/UNIX spot price of each of `types` in each zone EC2 reports
    /// (DescribeSpotPriceHistory, newest entry per type and zone).
    pub async fn spot_prices(&self, types: &[String]) -> Result<Vec<SpotPrice>, CloudError> {
        let mut latest: BTreeMap<(String, String), (i64, u64)> = BTreeMap::new();
        for batch in types.chunks(TYPE_BATCH_MAX) {
            let mut next: Option<String> = None;
            loop {
                let (client, next_ref) = (&self.client, &next);
                let page = self
                    .retrying(|| async move {
                        client
                            .describe_spot_price_history()
                            .set_instance_types(Some(
                                batch
                                    .iter()
                                    .map(|t| InstanceType::from(t.as_str()))
                                    .collect(),
                            ))
                            .product_descriptions("Linux/UNIX")
                            .set_next_token(next_ref.clone())
                            .send()
                            .await
                            .map_err(|e| CloudError::from_sdk("DescribeSpotPriceHistory", &e))
                    })
                    .await?;
                for p in page.spot_price_history() {
                    let (Some(t), Some(z), Some(price)) = (
                        p.instance_type().map(|t| t.as_str().to_string()),
                        p.availability_zone().map(str::to_string),
                        p.spot_price().and_then(|s| s.trim().parse::<f64>().ok()),
                    ) else {
                        continue;
                    };
                    if !(price.is_finite() && price >= 0.0) {
                        continue;
                    }
                    let at = p.timestamp().map_or(0, |t| t.secs());
                    let micro = (price * MICRO_USD_PER_USD as f64).round() as u64;
                    let e = latest.entry((t, z)).or_insert((i64::MIN, micro));
                    if at >= e.0 {
                        *e = (at, micro);
                    }
                }
                next = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(latest
            .into_iter()
            .map(|((instance_type, zone), (_, price))| SpotPrice {
                instance_type,
                zone,
                price_per_hour_micro_usd: price,
            })
            .collect())
    }
}

/// The first error of an instant fleet's answer (capacity errors come back here, not as an
/// API error).
fn fleet_error(errors: &[FleetErrorItem]) -> Option<CloudError> {
    errors.first().map(|e| {
        CloudError::from_code(
            "CreateFleet",
            e.error_code().unwrap_or("Unknown"),
            e.error_message().unwrap_or(""),
        )
    })
}

/// Whether a provisioning failure means: report it to the controller as this kind.
pub fn launch_error(e: &CloudError) -> LaunchErrorKind {
    e.kind
}

/// Standard base64 (user data).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn client_tokens_are_stable_and_bounded() {
        assert_eq!(client_token("c", RequestId(7)), "berth-c-7");
        assert!(client_token(&"x".repeat(100), RequestId(7)).len() <= 64);
        assert_eq!(parse_request("req-42"), Some(RequestId(42)));
        assert_eq!(parse_request("x"), None);
    }
}
