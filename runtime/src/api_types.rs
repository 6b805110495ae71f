//! JSON DTOs of the HTTP API (user and agent scopes) and the one error format.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_solver::{ContainerSpec, JobId, NodeGpus, Resources, TaskId};
use serde::{Deserialize, Serialize};

/// Every error the API answers: `{"code": "...", "message": "...", "field": "task.cpu_milli"}`.
/// The status code is chosen here, at the edge, and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
    /// The field path of the offending input (`task.cpu_milli`, `batch.size`), when one is to
    /// blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            field: None,
        }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        let f = field.into();
        self.field = (!f.is_empty()).then_some(f);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }
    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(404, "not_found", format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, "conflict", message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "unavailable", message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "internal", message)
    }
}

impl From<berth_solver::spec::SpecError> for ApiError {
    fn from(e: berth_solver::spec::SpecError) -> Self {
        let field = crate::extract::field_path(&e.path, &e.message);
        ApiError::new(422, "invalid_spec", e.message).with_field(field)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self)).into_response()
    }
}

/// `POST /v1/jobs` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub id: JobId,
    pub state: String,
}

/// `POST /v1/jobs?dry_run=true` and `GET /v1/explain/{job}` answer: what the solver would do
/// now, without launching anything.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DryRun {
    pub placements: Vec<DryPlacement>,
    pub unplaced: Vec<DryUnplaced>,
    /// Nodes the solver considered.
    pub nodes: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DryPlacement {
    /// The task's index in the request (its slot).
    pub slot: u32,
    pub node: String,
    pub zone: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DryUnplaced {
    pub slot: u32,
    /// `"2 nodes: insufficient memory; 1: zone balance"`.
    pub summary: String,
    pub reasons: Vec<ReasonCount>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub nodes: u32,
}

/// `GET /v1/explain/{job}` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Explain {
    pub job: JobId,
    pub state: String,
    pub pending_tasks: u32,
    /// The controller's last "cannot place" record for the job, if it is blocked.
    pub last_unplaced: Option<String>,
    /// A fresh dry placement of the job's pending tasks against the cluster now.
    pub dry_run: DryRun,
}

/// `POST /v1/jobs/{id}/scale` body.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub min: u32,
    pub desired: u32,
    pub max: u32,
}

/// An agent's registration (`POST /v1/agent/register`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Unique per host, stable across agent restarts.
    pub name: String,
    pub capacity: Resources,
    pub zone: String,
    pub instance_type: String,
    /// Where the agent serves task logs to the control plane (`http://127.0.0.1:7071`).
    pub url: String,
    /// Tasks whose containers exist on the host (running, or exited and not yet reported).
    pub tasks: Vec<TaskId>,
    /// The cloud instance the agent runs on (EC2 `i-…`), so the controller matches it with
    /// the instance it provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The host's GPUs (`{"count": 2, "model": "T4"}`), detected or given with `--gpus` and
    /// `--gpu-model`; absent when it has none. Tasks get devices `0..count` by exact id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<NodeGpus>,
}

/// What is wrong with an agent's log URL, if anything. It must be one the control plane can
/// fetch from: `http(s)://host:port`, with a host that is not an unspecified address
/// (`0.0.0.0`, `[::]` is where an agent listens, never where it is reached).
pub fn agent_url_problem(url: &str) -> Option<String> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return Some("not a URL (expected http://host:port)".into());
    };
    if !matches!(u.scheme(), "http" | "https") {
        return Some("expected http:// or https://".into());
    }
    let host = u.host_str().unwrap_or("");
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>();
    if host.is_empty() {
        Some("no host".into())
    } else if ip.is_ok_and(|ip| ip.is_unspecified()) {
        Some(format!(
            "{host} is an address to listen on, not one the control plane can reach; \
             give the agent --advertise-url http://<its address>:<port>"
        ))
    } else if u.path() != "/" || u.query().is_some() {
        Some("give scheme, host and port only (no path)".into())
    } else {
        None
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The node id the controller knows this agent by (a new one after the node was lost).
    pub node: u32,
}

/// What an agent reports (`POST /v1/agent/report`), in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    Started {
        task: TaskId,
    },
    Exited {
        task: TaskId,
        exit_code: i32,
        oom: bool,
    },
    LaunchFailed {
        task: TaskId,
        message: String,
    },
}

impl Report {
    pub fn task(&self) -> TaskId {
        match self {
            Report::Started { task }
            | Report::Exited { task, .. }
            | Report::LaunchFailed { task, .. } => *task,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportRequest {
    pub node: String,
    pub reports: Vec<Report>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub node: String,
}

/// A command for an agent, delivered by long-poll (`GET /v1/agent/commands`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AgentCommand {
    Launch {
        task: TaskId,
        job: JobId,
        resources: Resources,
        /// GPU device indexes on the node (whole or shared).
        gpu_devices: Vec<u8>,
        container: ContainerSpec,
    },
    Kill {
        task: TaskId,
        grace_ms: u64,
    },
}

/// One long-poll answer: commands with sequence numbers; the agent acknowledges by polling with
/// `after` = the last sequence it carried out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CommandBatch {
    pub commands: Vec<(u64, AgentCommand)>,
}
