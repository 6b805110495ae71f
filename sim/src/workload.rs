//! Turning a scenario's workload and cluster sections into what the engine replays: a static
//! cluster and a list of job arrivals (one controller job per trace task group: its instances
//! are identical, so the group stays one job of `instances` tasks).

use crate::scenario::Scenario;
use crate::SimError;
use berth_solver::spec::SpecError;
use berth_solver::{BatchSpec, ClusterSpec, Constraints, JobId, JobKind, JobSpec, ServiceSpec};
use berth_traces::{ImportOptions, TraceFormat, TraceOutcome, WorkKind, Workload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One job arrival of a run.
#[derive(Clone, Debug)]
pub struct SimJob {
    pub id: JobId,
    pub submit_ms: u64,
    pub spec: JobSpec,
    /// How long each instance runs (trace), when known.
    pub duration_ms: Option<u64>,
    /// The user's estimate (SWF requested time), for EASY.
    pub requested_ms: Option<u64>,
    pub outcome: TraceOutcome,
}

impl SimJob {
    pub fn is_service(&self) -> bool {
        matches!(self.spec.kind, JobKind::Service(_))
    }
}

/// The prepared inputs of a run.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub cluster: ClusterSpec,
    /// Sorted by (submit_ms, id).
    pub jobs: Vec<SimJob>,
    pub source: String,
}

fn invalid(path: &str, message: impl Into<String>) -> SimError {
    SimError::Scenario(SpecError::new(path, message))
}

/// Loads the workload and the static cluster of a scenario.
pub fn prepare(s: &Scenario) -> Result<Prepared, SimError> {
    let w = &s.workload;
    let mut workload: Workload = match (&w.trace, &w.synthetic) {
        (Some(t), _) => {
            let path = s.resolve(&t.path);
            let format = t.format.as_deref().and_then(TraceFormat::from_name);
            let opts = ImportOptions {
                skip_bad: t.skip_bad,
                ..ImportOptions::default()
            };
            berth_traces::import(&path, format, &opts)?
        }
        (None, Some(spec)) => spec
            .generate()
            .map_err(|e| invalid(&format!("workload.synthetic.{}", e.path), e.message))?,
        (None, None) => return Err(invalid("workload", "no workload")),
    };
    workload.sort();
    // The static cluster.
    let mut nodes = Vec::new();
    if let Some(f) = &s.cluster.nodes_file {
        let path = s.resolve(f);
        let opts = ImportOptions::default();
        let cluster = match berth_traces::detect_format(&path) {
            Ok(TraceFormat::AlibabaGpu2023Nodes) => {
                berth_traces::alibaba_gpu::import_nodes(&path, &opts)?.0
            }
            _ => berth_traces::swf::import_machines(&path, &opts)?.0,
        };
        nodes.extend(cluster.nodes);
    }
    if s.cluster.from_workload {
        match workload.cluster.take() {
            Some(c) => nodes.extend(c.nodes),
            None => {
                return Err(invalid(
                    "cluster.from_workload",
                    "the workload trace has no node list beside it",
                ))
            }
        }
    }
    let inline = s.cluster.inline();
    if !inline.nodes.is_empty() || !inline.node_groups.is_empty() {
        let c = inline
            .into_cluster()
            .map_err(|e| invalid(&format!("cluster.{}", e.path), e.message))?;
        nodes.extend(c.nodes);
    }
    let cluster = ClusterSpec::from_nodes(nodes);

    // Transforms: window, sampling, rate scale, inflation.
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ 0x00c0_ffee);
    let mut jobs = Vec::new();
    let mut next_id = 0u64;
    let group_name = |class: &str| match s.workload.capacity_group.as_deref() {
        None | Some("class") => {
            if class.is_empty() {
                "default".to_string()
            } else {
                class.to_string()
            }
        }
        Some(fixed) => fixed.to_string(),
    };
    for copy in 0..w.inflation {
        for tj in &workload.jobs {
            if w.sample < 1.0 && !rng.random_bool(w.sample) {
                continue;
            }
            for g in &tj.groups {
                let mut submit = g.submit_ms;
                if let Some(win) = w.window {
                    if submit < win.from_ms || submit >= win.to_ms {
                        continue;
                    }
                    submit -= win.from_ms;
                }
                let submit = (submit.max(0) as f64 / w.rate_scale) as u64
                    + u64::from(copy) * w.inflation_offset_ms;
                if g.instances == 0 {
                    continue;
                }
                let kind = match tj.kind {
                    WorkKind::Batch => JobKind::Batch(BatchSpec {
                        size: g.instances,
                        runtime_limit_ms: None,
                        retry: w.retry,
                        gang: tj.gang,
                    }),
                    WorkKind::Service => JobKind::Service(ServiceSpec {
                        min: g.instances,
                        desired: g.instances,
                        max: g.instances,
                        restart_on_failure: true,
                    }),
                };
                let spec = JobSpec {
                    name: tj.name.clone(),
                    owner: String::new(),
                    tier: tj.tier,
                    capacity_group: group_name(&tj.class),
                    kind,
                    task: g.shape.clone(),
                    constraints: Constraints::default(),
                    container: None,
                };
                jobs.push(SimJob {
                    id: JobId(next_id),
                    submit_ms: submit,
                    spec,
                    duration_ms: g.duration_ms,
                    requested_ms: g.requested_runtime_ms,
                    outcome: g.outcome,
                });
                next_id += 1;
            }
        }
    }
    jobs.sort_by_key(|j| (j.submit_ms, j.id));
    Ok(Prepared {
        cluster,
        jobs,
        source: workload.source,
    })
}
