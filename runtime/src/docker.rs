//! How a task becomes a Docker container: the isolation settings, labels and per-job networks.
//!
//! Isolation of every container (each one checked from inside a container by
//! `runtime/tests/docker_e2e.rs`):
//! - CPU: CFS quota from `cpu_milli` (`NanoCpus`: quota = cpu_milli × 100 µs per 100 ms period)
//!   and `cpu.shares` = cpu_milli × 1024 / 1000.
//! - Memory: `memory = memory_swap = mem_mib` (no swap); an OOM kill is reported as `oom_killed`.
//! - PIDs: `pids_limit`.
//! - Disk: the root filesystem is read-only; the only writable area is a tmpfs `/tmp` of
//!   `disk_mib` (default and cap in [`Isolation`]). This engine's storage driver
//!   (fuse-overlayfs, and overlay2 unless on xfs with project quotas) cannot cap a container's
//!   writable layer (`--storage-opt size` is refused), so the size-capped tmpfs is the quota. Its
//!   pages are charged to the task's memory cgroup.
//! - All capabilities dropped, `no-new-privileges`, the engine's default seccomp profile (when the
//!   engine has seccomp), a non-root user (65534 by default), ulimits (`nofile`, `core`).
//! - Network: each job gets its own *internal* bridge network `berth-job-<id>`: a job's tasks
//!   reach each other, nothing else: not another job's containers, not the host, not the
//!   metadata address 169.254.169.254, not the internet. `internal` alone only stops traffic
//!   the host would forward; the container still has a default route to the bridge's address
//!   on the host, so it reaches every service listening on the host, and a metadata address or
//!   proxy bound there. The bridge therefore gets no address on the host
//!   (`com.docker.network.bridge.inhibit_ipv4`): the gateway never answers, nothing reaches
//!   the host, and tasks still talk to each other over the bridge itself. `network = none`
//!   gives no network at all.
//! - GPUs: a task's devices are passed by exact id (`DeviceRequests`, driver `nvidia`); an
//!   engine without the NVIDIA runtime refuses the start, which becomes the task's
//!   `launch_failed` reason.
//! - Logs: json-file driver, size-capped and rotated (`max-size`, `max-file`).
//! - Labels tie the container to its task, job and agent so a restarted agent adopts it.

use berth_solver::{ContainerSpec, JobId, Resources, TaskId};
use bollard::container::{Config, CreateContainerOptions};
use bollard::models::{DeviceRequest, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::network::CreateNetworkOptions;
use bollard::Docker;
use std::collections::HashMap;

pub const LABEL_TASK: &str = "berth.task";
pub const LABEL_JOB: &str = "berth.job";
pub const LABEL_AGENT: &str = "berth.agent";

/// A task's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// One internal bridge network per job.
    PerJob,
    /// No network at all.
    None,
}

/// The agent's isolation settings (the per-task part comes from the task's resources).
#[derive(Clone, Debug)]
pub struct Isolation {
    pub user: String,
    pub pids_max: i64,
    /// `/tmp` size when the task asks for no disk.
    pub tmp_mib_default: u64,
    /// `/tmp` size at most, whatever the task asks.
    pub tmp_mib_max: u64,
    /// Memory limit when the task asks for none.
    pub mem_mib_default: u64,
    pub nofile_max: i64,
    pub network: NetworkMode,
    /// json-file log cap per file, and files kept.
    pub log_file_mib: u64,
    pub log_files_max: u32,
    /// Prefix of per-job network names (`<prefix>-job-<id>`): distinct per control plane when
    /// several share one engine.
    pub network_prefix: String,
}

impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            user: "65534:65534".into(),
            pids_max: 256,
            tmp_mib_default: 64,
            tmp_mib_max: 1024,
            mem_mib_default: 256,
            nofile_max: 1024,
            network: NetworkMode::PerJob,
            log_file_mib: 1,
            log_files_max: 2,
            network_prefix: "berth".into(),
        }
    }
}

pub fn container_name(agent: &str, task: TaskId) -> String {
    format!("berth-{agent}-task-{}", task.0)
}

pub fn network_name(prefix: &str, job: JobId) -> String {
    format!("{prefix}-job-{}", job.0)
}

const MIB: i64 = 1024 * 1024;

/// One task to start, as the agent received it.
pub struct LaunchSpec<'a> {
    pub task: TaskId,
    pub job: JobId,
    pub resources: &'a Resources,
    pub gpu_devices: &'a [u8],
    pub container: &'a ContainerSpec,
}

/// The container create request for a task; `network_id` is its job network.
pub fn container_config(
    iso: &Isolation,
    agent: &str,
    launch: &LaunchSpec<'_>,
    network_id: Option<&str>,
) -> (CreateContainerOptions<String>, Config<String>) {
    let LaunchSpec {
        task,
        job,
        resources,
        gpu_devices,
        container: spec,
    } = *launch;
    let mem_mib = if resources.mem_mib > 0 {
        resources.mem_mib
    } else {
        iso.mem_mib_default
    };
    let tmp_mib = if resources.disk_mib > 0 {
        resources.disk_mib
    } else {
        iso.tmp_mib_default
    }
    .min(iso.tmp_mib_max);
    let mem = (mem_mib as i64).saturating_mul(MIB);
    let labels = HashMap::from([
        (LABEL_TASK.to_string(), task.0.to_string()),
        (LABEL_JOB.to_string(), job.0.to_string()),
        (LABEL_AGENT.to_string(), agent.to_string()),
    ]);
    let network_mode = match iso.network {
        NetworkMode::PerJob => network_id
            .map(str::to_string)
            .unwrap_or_else(|| network_name(&iso.network_prefix, job)),
        NetworkMode::None => "none".to_string(),
    };
    let device_requests = (!gpu_devices.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(gpu_devices.iter().map(|d| d.to_string()).collect()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let host = HostConfig {
        nano_cpus: (resources.cpu_milli > 0).then(|| resources.cpu_milli as i64 * 1_000_000),
        cpu_shares: Some(((resources.cpu_milli as i64) * 1024 / 1000).max(2)),
        memory: Some(mem),
        memory_swap: Some(mem),
        pids_limit: Some(iso.pids_max),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={tmp_mib}m,mode=1777"),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ulimits: Some(vec![
            ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(iso.nofile_max),
                hard: Some(iso.nofile_max),
            },
            ResourcesUlimits {
                name: Some("core".into()),
                soft: Some(0),
                hard: Some(0),
            },
        ]),
        network_mode: Some(network_mode),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), format!("{}m", iso.log_file_mib)),
                ("max-file".to_string(), iso.log_files_max.to_string()),
            ])),
        }),
        device_requests,
        ..Default::default()
    };
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let config = Config {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        user: Some(iso.user.clone()),
        labels: Some(labels),
        host_config: Some(host),
        ..Default::default()
    };
    let opts = CreateContainerOptions {
        name: container_name(agent, task),
        platform: None,
    };
    (opts, config)
}

/// The job's internal network, created unless it exists; returns its id.
///
/// The engine does not refuse a second network of the same name, and a container started
/// while two exist fails ("network … is ambiguous"). So the look-up and the creation hold a
/// lock file in the system temporary folder, one per network prefix: several agents on one
/// host (tests, a laptop) and several launches in one agent create the network once. Should
/// duplicates exist anyway (an agent with another temporary folder), every agent settles on
/// the lowest id and removes the others.
pub async fn ensure_network(
    docker: &Docker,
    prefix: &str,
    job: JobId,
) -> Result<String, bollard::errors::Error> {
    let path = std::env::temp_dir().join(format!("berth-docker-networks-{prefix}.lock"));
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.lock()?;
        Ok(f)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r)
    .map_err(|err| bollard::errors::Error::IOError { err })?;
    let out = ensure_network_locked(docker, prefix, job).await;
    // Dropping the file releases the lock.
    drop(lock);
    out
}

async fn ensure_network_locked(
    docker: &Docker,
    prefix: &str,
    job: JobId,
) -> Result<String, bollard::errors::Error> {
    let name = network_name(prefix, job);
    let mut ids = networks_named(docker, &name).await?;
    if ids.is_empty() {
        let res = docker
            .create_network(CreateNetworkOptions {
                name: name.clone(),
                check_duplicate: true,
                driver: "bridge".into(),
                internal: true,
                options: HashMap::from([(
                    "com.docker.network.bridge.inhibit_ipv4".to_string(),
                    "true".to_string(),
                )]),
                labels: HashMap::from([(LABEL_JOB.to_string(), job.0.to_string())]),
                ..Default::default()
            })
            .await;
        match res {
            Ok(_) => {}
            // Made by someone else meanwhile.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(e),
        }
        ids = networks_named(docker, &name).await?;
    }
    let Some(keep) = ids.first().cloned() else {
        return Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message: format!("network {name} vanished after creation"),
        });
    };
    for dup in &ids[1..] {
        let _ = docker.remove_network(dup).await;
    }
    Ok(keep)
}

/// Ids of the networks named exactly `name`, sorted.
async fn networks_named(
    docker: &Docker,
    name: &str,
) -> Result<Vec<String>, bollard::errors::Error> {
    let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
    let list = docker
        .list_networks(Some(bollard::network::ListNetworksOptions { filters }))
        .await?;
    let mut ids: Vec<String> = list
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| n.id)
        .collect();
    ids.sort();
    Ok(ids)
}
