//! The HTTP API (axum): routes, bearer-token scopes, the OpenAPI document.
//!
//! Scopes: `user` for jobs and tasks, `agent` for the agent protocol. `/healthz`, `/readyz`,
//! `/metrics` and `/v1/openapi.json` need no token. Every error is an [`ApiError`], bad query
//! strings, bodies and paths included (the extractors of [`crate::extract`]), and so are an
//! unknown route (404) and a wrong method (405).

use crate::api_types::{
    ApiError, CommandBatch, HeartbeatRequest, RegisterRequest, ReportRequest, ScaleRequest,
};
use crate::control::{ControlHandle, Msg};
use crate::extract::{check_json_syntax, ApiJson, ApiPath, ApiQuery, ApiText};
use crate::metrics::Metrics;
use crate::store::{JobFilter, Store, TaskFilter};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_solver::spec::SpecFormat;
use berth_solver::{JobId, TaskId};
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The committed OpenAPI document; `/v1/openapi.json` serves exactly this, and a test checks that
/// every path in it is routed.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// How long an agent's command poll is held open when there is nothing to send.
pub const POLL_HOLD_MS: u64 = 20_000;
/// Bytes of a task's log the API returns at most.
pub const LOG_BYTES_MAX: usize = 1 << 20;

/// Bearer tokens of the two scopes.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub user: String,
    pub agent: String,
}

#[derive(Clone)]
pub struct AppState {
    pub control: ControlHandle,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub tokens: Tokens,
    pub http: reqwest::Client,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let user = Router::new()
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/scale", post(scale_job))
        .route("/v1/jobs/{id}/kill", post(kill_job))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/kill", post(kill_task))
        .route("/v1/tasks/{id}/logs", get(task_logs))
        .route("/v1/events", get(events))
        .route("/v1/explain/{job}", get(explain))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_user));
    let agent = Router::new()
        .route("/v1/agent/register", post(agent_register))
        .route("/v1/agent/heartbeat", post(agent_heartbeat))
        .route("/v1/agent/report", post(agent_report))
        .route("/v1/agent/commands", get(agent_commands))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_agent));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .merge(user)
        .merge(agent)
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError::new(
                405,
                "method_not_allowed",
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(s): State<AppState>, req: Request, next: Next) -> Response {
    s.metrics.http_requests.inc();
    next.run(req).await
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn require(scope: &str, expected: &str, req: Request, next: Next) -> Response {
    match bearer(&req) {
        Some(t) if same(t, expected) => next.run(req).await,
        Some(_) => ApiError::new(403, "forbidden", format!("token lacks the {scope} scope"))
            .into_response(),
        None => ApiError::new(401, "unauthenticated", "give Authorization: Bearer <token>")
            .into_response(),
    }
}

async fn require_user(State(s): State<AppState>, req: Request, next: Next) -> Response {
    require("user", &s.tokens.user, req, next).await
}

async fn require_agent(State(s): State<AppState>, req: Request, next: Next) -> Response {
    require("agent", &s.tokens.agent, req, next).await
}

/// `7` or `job-7` / `task-7`; `field` names the parameter it came in.
fn parse_id(raw: &str, prefix: &str, field: &str) -> Result<u64, ApiError> {
    raw.strip_prefix(prefix)
        .unwrap_or(raw)
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{raw:?} is not an id")).with_field(field))
}

async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    s.control.ask(Msg::Ready).await.map(|_| "ready")
}

async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let text = s.control.ask(Msg::Metrics).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn submit_job(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<SubmitQuery>,
    ApiText(body): ApiText,
) -> Result<Response, ApiError> {
    check_json_syntax(&body)?;
    let spec = berth_solver::spec::job_from_str(&body, SpecFormat::Json)?;
    if q.dry_run {
        let plan = s.control.ask(|r| Msg::DryRun(spec, r)).await?;
        return Ok(Json(plan).into_response());
    }
    let accepted = s.control.ask(|r| Msg::Submit(spec, r)).await?;
    Ok((StatusCode::CREATED, Json(accepted)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    state: Option<String>,
    tier: Option<String>,
}

async fn list_jobs(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Response, ApiError> {
    let filter = JobFilter {
        state: q.state,
        tier: q.tier,
    };
    let store = s.store.clone();
    let jobs = tokio::task::spawn_blocking(move || store.list_jobs(&filter))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(jobs).into_response())
}

async fn get_job(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let job = JobId(parse_id(&id, "job-", "id")?);
    let store = s.store.clone();
    let row = tokio::task::spawn_blocking(move || store.get_job(job))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    row.map(|r| Json(r).into_response())
        .ok_or_else(|| ApiError::not_found(job))
}

async fn scale_job(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ScaleRequest>,
) -> Result<Response, ApiError> {
    let job = JobId(parse_id(&id, "job-", "id")?);
    s.control.ask(|r| Msg::Scale(job, req, r)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn kill_job(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let job = JobId(parse_id(&id, "job-", "id")?);
    s.control.ask(|r| Msg::KillJob(job, r)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskQuery {
    job: Option<String>,
    state: Option<String>,
}

async fn list_tasks(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Response, ApiError> {
    let job = q
        .job
        .map(|j| parse_id(&j, "job-", "job"))
        .transpose()?
        .map(JobId);
    let filter = TaskFilter {
        job,
        state: q.state,
    };
    let store = s.store.clone();
    let tasks = tokio::task::spawn_blocking(move || store.list_tasks(&filter))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(tasks).into_response())
}

async fn get_task(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let task = TaskId(parse_id(&id, "task-", "id")?);
    let store = s.store.clone();
    let row = tokio::task::spawn_blocking(move || store.get_task(task))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    row.map(|r| Json(r).into_response())
        .ok_or_else(|| ApiError::not_found(task))
}

async fn kill_task(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let task = TaskId(parse_id(&id, "task-", "id")?);
    s.control.ask(|r| Msg::KillTask(task, r)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The task's log, fetched from the agent of its node (which keeps it size-capped, also after
/// the container is gone).
async fn task_logs(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let task = TaskId(parse_id(&id, "task-", "id")?);
    let store = s.store.clone();
    let row = tokio::task::spawn_blocking(move || store.get_task(task))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??
        .ok_or_else(|| ApiError::not_found(task))?;
    let node = row
        .node
        .ok_or_else(|| ApiError::conflict(format!("{task} never ran: no log")))?;
    let url = s.control.ask(|r| Msg::NodeUrl(node, r)).await?;
    let resp = s
        .http
        .get(format!("{url}/logs/{}", task.0))
        .bearer_auth(&s.tokens.agent)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| ApiError::unavailable(format!("agent of node {node}: {e}")))?;
    if !resp.status().is_success() {
        return Err(ApiError::new(
            resp.status().as_u16(),
            "agent",
            format!("agent of node {node} answered {}", resp.status()),
        ));
    }
    let mut bytes = resp
        .bytes()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .to_vec();
    if bytes.len() > LOG_BYTES_MAX {
        bytes.drain(..bytes.len() - LOG_BYTES_MAX);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}

/// Server-sent events: one `job`, `task` or `unplaced` event per record the controller makes.
async fn events(State(s): State<AppState>) -> impl IntoResponse {
    let rx = s.control.events.subscribe();
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|m| async move {
        match m {
            Ok(text) => {
                let kind = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "message".into());
                Some(Ok::<_, std::convert::Infallible>(
                    SseEvent::default().event(kind).data(text),
                ))
            }
            // A slow reader missed events: tell it, so it can re-read the lists.
            Err(_) => Some(Ok(SseEvent::default().event("lagged").data("{}"))),
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn explain(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let job = JobId(parse_id(&id, "job-", "id")?);
    let e = s.control.ask(|r| Msg::Explain(job, r)).await?;
    Ok(Json(e).into_response())
}

async fn agent_register(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let r = s.control.ask(|r| Msg::Register(req, r)).await?;
    Ok(Json(r).into_response())
}

async fn agent_heartbeat(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> Result<Response, ApiError> {
    s.control.ask(|r| Msg::Heartbeat(req.node, r)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn agent_report(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ReportRequest>,
) -> Result<Response, ApiError> {
    s.control
        .ask(|r| Msg::Report(req.node, req.reports, r))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollQuery {
    node: String,
    #[serde(default)]
    after: u64,
}

async fn agent_commands(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> Result<Response, ApiError> {
    let hold = Duration::from_millis(POLL_HOLD_MS);
    let ask = s.control.ask(|r| Msg::Poll(q.node, q.after, r));
    match tokio::time::timeout(hold, ask).await {
        Ok(r) => Ok(Json(r?).into_response()),
        Err(_) => Ok(Json(CommandBatch::default()).into_response()),
    }
}
