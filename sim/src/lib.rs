//! The discrete-event simulator: drives the solver's lifecycle controller over traces.
//!
//! Entry points (what `berth sim` calls):
//! - [`Scenario::load`] / [`Scenario::default_scenario`]: a scenario, checked before any run
//!   (errors name the file, the field path and the line);
//! - [`run_scenario`]: one run, with a progress callback, returning a [`SimReport`];
//! - [`run_scenario_to`]: the same, writing `series.csv`, `nodes.csv`, `pools.csv`, `tasks.csv`
//!   and `report.json` to a folder (and their Parquet copies with the feature `parquet`);
//! - [`html::render`]: a self-contained HTML report (inline SVG plots) of a run's folder;
//! - [`sweep`]: a grid of variants run in parallel (rayon), with [`comparison_table`];
//!   [`sweep_to`] writes each variant's outputs and a `sweep.csv` summary;
//! - [`gate`]: compare a run's SLA figures with a baseline (`berth sim gate`).
//!
//! Module map: [`scenario`] (the file format), [`workload`] (traces and transforms into job
//! arrivals), `engine` (event queue, the simulated world and its faults; the controller events
//! of one instant are stepped together, `Controller::step_batch`), [`metrics`],
//! [`report`], [`tables`] (column types, CSV reading, Parquet), [`html`].

mod engine;
mod fxhash;
pub mod gate;
pub mod html;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod sweep;
pub mod tables;
pub mod workload;

pub use engine::{Fnv64, SPOT_NOTICE_MS};
pub use report::{comparison_table, SimReport, TierFigures};
pub use scenario::{Scenario, ScenarioError, DEFAULT_SCENARIO_TOML};
pub use sweep::{sweep, sweep_to, SweepSpec, VariantParams};

use std::path::{Path, PathBuf};

/// A run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("scenario: {0}")]
    Scenario(#[from] berth_solver::spec::SpecError),
    #[error("{0}")]
    Trace(#[from] berth_traces::TraceError),
    #[error("controller: {0}")]
    Controller(#[from] berth_solver::controller::ControllerError),
    #[error("{path}: writing Parquet: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SimError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> SimError {
        SimError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a run is (for a progress bar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub now_ms: u64,
    pub horizon_ms: u64,
    pub events: u64,
    pub pending_tasks: u64,
}

/// Runs a scenario; `progress` is called every 65,536 events.
pub fn run_scenario(
    s: &Scenario,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SimReport, SimError> {
    engine::run(s, None, progress)
}

/// Runs a scenario and writes its CSV files and `report.json` to `out_dir`, and with the
/// feature `parquet` the same tables as `series.parquet`, `nodes.parquet`, `tasks.parquet`.
pub fn run_scenario_to(
    s: &Scenario,
    out_dir: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SimReport, SimError> {
    let report = engine::run(s, Some(out_dir), progress)?;
    #[cfg(feature = "parquet")]
    tables::write_run_parquet(out_dir)?;
    Ok(report)
}

/// Whether this build writes Parquet files (feature `parquet`).
pub const WRITES_PARQUET: bool = cfg!(feature = "parquet");
