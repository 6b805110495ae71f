//! The durable store: the controller's input log (for replay) and the job/task tables the API
//! reads, behind the [`Store`] trait so a networked store (PostgreSQL) can back several
//! control-plane replicas later.
//!
//! One controller step is one transaction: the event that went in and the records that came
//! out are committed together, and the API acknowledges only after the commit returned. The
//! SQLite implementation runs in WAL mode with `synchronous = FULL`: every commit fsyncs the WAL,
//! so an acknowledged job survives `kill -9` *and* a power loss (`NORMAL` would survive the
//! first only; one fsync per step is cheap next to a container start).

use berth_solver::controller::{Command, Event, JobState};
use berth_solver::job::JobKind;
use berth_solver::{JobId, JobSpec, TaskId};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("data dir {path}: {message}")]
    DataDir { path: String, message: String },
}

/// A job as stored and served by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: JobId,
    pub name: String,
    pub tier: String,
    /// `batch` or `service`.
    pub kind: String,
    pub state: String,
    pub message: Option<String>,
    pub submitted_ms: u64,
    pub updated_ms: u64,
    /// The last "cannot place" summary (`"2 nodes: insufficient memory"`), while blocked.
    pub unplaced: Option<String>,
    /// The spec as submitted (always set on rows the store returns).
    pub spec: Option<JobSpec>,
}

/// A task as stored and served by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: TaskId,
    pub job: JobId,
    pub slot: u32,
    pub attempt: u32,
    pub state: String,
    pub reason: Option<String>,
    /// The driver node id, from `launched` on.
    pub node: Option<u32>,
    pub exit_code: Option<i32>,
    /// Why the launch failed, as the agent said.
    pub message: Option<String>,
    pub updated_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<String>,
    pub tier: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub job: Option<JobId>,
    pub state: Option<String>,
}

/// Where the control plane keeps what it accepted.
pub trait Store: Send + Sync {
    /// Commits one controller step (its input event and output records) atomically and
    /// durably. Returns only once the data is on disk.
    fn commit_step(
        &self,
        now_ms: u64,
        event: &Event,
        commands: &[Command],
    ) -> Result<(), StoreError>;
    /// Every committed step's event in commit order, for replay into a fresh controller.
    fn load_events(&self) -> Result<Vec<(u64, Event)>, StoreError>;
    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError>;
    fn get_job(&self, job: JobId) -> Result<Option<JobRow>, StoreError>;
    fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>, StoreError>;
    fn get_task(&self, task: TaskId) -> Result<Option<TaskRow>, StoreError>;
}

/// The embedded default: one SQLite file `berth.db` in the data directory.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// A snake_case serde name of a unit enum variant (`TaskState::KillInitiated` → `kill_initiated`).
pub fn enum_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<{e}>"),
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    now_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    tier TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    submitted_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    unplaced TEXT,
    spec TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    node INTEGER,
    exit_code INTEGER,
    message TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job);
";

impl SqliteStore {
    /// Opens (or creates) `<data_dir>/berth.db`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let conn = Connection::open(data_dir.join("berth.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction (rusqlite rolls back
        // on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A job row with its spec still as stored JSON.
fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(JobRow, String)> {
    Ok((
        JobRow {
            id: JobId(r.get::<_, i64>(0)? as u64),
            name: r.get(1)?,
            tier: r.get(2)?,
            kind: r.get(3)?,
            state: r.get(4)?,
            message: r.get(5)?,
            submitted_ms: r.get::<_, i64>(6)? as u64,
            updated_ms: r.get::<_, i64>(7)? as u64,
            unplaced: r.get(8)?,
            spec: None,
        },
        r.get(9)?,
    ))
}

fn with_spec((mut j, spec): (JobRow, String)) -> Result<JobRow, StoreError> {
    j.spec = Some(serde_json::from_str(&spec)?);
    Ok(j)
}

fn task_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: TaskId(r.get::<_, i64>(0)? as u64),
        job: JobId(r.get::<_, i64>(1)? as u64),
        slot: r.get(2)?,
        attempt: r.get(3)?,
        state: r.get(4)?,
        reason: r.get(5)?,
        node: r.get(6)?,
        exit_code: r.get(7)?,
        message: r.get(8)?,
        updated_ms: r.get::<_, i64>(9)? as u64,
    })
}

const JOB_COLS: &str =
    "id, name, tier, kind, state, message, submitted_ms, updated_ms, unplaced, spec";
const TASK_COLS: &str =
    "id, job, slot, attempt, state, reason, node, exit_code, message, updated_ms";

impl Store for SqliteStore {
    fn commit_step(
        &self,
        now_ms: u64,
        event: &Event,
        commands: &[Command],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_ms as i64;
        tx.execute(
            "INSERT INTO events (now_ms, kind, body) VALUES (?1, ?2, ?3)",
            params![now, event.kind(), serde_json::to_string(event)?],
        )?;
        match event {
            Event::JobSubmitted { job, spec, .. } => {
                let kind = match spec.kind {
                    JobKind::Batch(_) => "batch",
                    JobKind::Service(_) => "service",
                };
                tx.execute(
                    "INSERT OR IGNORE INTO jobs (id, name, tier, kind, state, submitted_ms, updated_ms, spec)
                     VALUES (?1, ?2, ?3, ?4, 'accepted', ?5, ?5, ?6)",
                    params![
                        job.0 as i64,
                        spec.name,
                        spec.tier.as_str(),
                        kind,
                        now,
                        serde_json::to_string(spec)?
                    ],
                )?;
            }
            Event::TaskExited {
                task, exit_code, ..
            } => {
                tx.execute(
                    "UPDATE tasks SET exit_code = ?2 WHERE id = ?1",
                    params![task.0 as i64, exit_code],
                )?;
            }
            Event::TaskLaunchFailed { task, message } => {
                tx.execute(
                    "UPDATE tasks SET message = ?2 WHERE id = ?1",
                    params![task.0 as i64, message],
                )?;
            }
            _ => {}
        }
        for c in commands {
            match c {
                Command::RecordJob {
                    job,
                    state,
                    message,
                } => {
                    let clear_unplaced = *state != JobState::Accepted;
                    tx.execute(
                        "UPDATE jobs SET state = ?2, message = COALESCE(?3, message), updated_ms = ?4,
                         unplaced = CASE WHEN ?5 THEN NULL ELSE unplaced END WHERE id = ?1",
                        params![job.0 as i64, enum_name(state), message, now, clear_unplaced],
                    )?;
                }
                Command::RecordUnplaced {
                    job,
                    pending,
                    reasons,
                } => {
                    tx.execute(
                        "UPDATE jobs SET unplaced = ?2, updated_ms = ?3 WHERE id = ?1",
                        params![job.0 as i64, format!("{pending} pending; {reasons}"), now],
                    )?;
                }
                Command::RecordTask(r) => {
                    tx.execute(
                        "INSERT INTO tasks (id, job, slot, attempt, state, reason, node, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                           reason = excluded.reason, node = COALESCE(excluded.node, tasks.node),
                           updated_ms = excluded.updated_ms",
                        params![
                            r.task.0 as i64,
                            r.job.0 as i64,
                            r.slot,
                            r.attempt,
                            enum_name(&r.state),
                            r.reason.as_ref().map(enum_name),
                            r.node.map(|n| n.0),
                            now
                        ],
                    )?;
                }
                Command::LaunchTask { .. }
                | Command::KillTask { .. }
                | Command::ProvisionInstances { .. }
                | Command::TerminateInstance { .. }
                | Command::WakeAt { .. } => {}
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load_events(&self) -> Result<Vec<(u64, Event)>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT now_ms, body FROM events ORDER BY seq")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (now, body) = row?;
            out.push((now as u64, serde_json::from_str(&body)?));
        }
        Ok(out)
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR tier = ?2) ORDER BY id"
        ))?;
        let rows = st.query_map(params![filter.state, filter.tier], job_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(with_spec(row?)?);
        }
        Ok(out)
    }

    fn get_job(&self, job: JobId) -> Result<Option<JobRow>, StoreError> {
        let conn = self.lock();
        let got = conn
            .query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
                params![job.0 as i64],
                job_row,
            )
            .optional()?;
        got.map(with_spec).transpose()
    }

    fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRow>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {TASK_COLS} FROM tasks WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR state = ?2) ORDER BY id"
        ))?;
        let rows = st.query_map(
            params![filter.job.map(|j| j.0 as i64), filter.state],
            task_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn get_task(&self, task: TaskId) -> Result<Option<TaskRow>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
                params![task.0 as i64],
                task_row,
            )
            .optional()?)
    }
}
