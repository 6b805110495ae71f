//! The discrete-event simulator: drives the solver's lifecycle controller over traces.
//!
//! Entry points (what `berth sim` calls):
//! - [`Scenario::load`] / [`Scenario::default_scenario`]: a scenario, checked before any run
//!   (errors name the file, the field path and the line);
//! - [`run_scenario`]: one run, with a progress callback, returning a [`SimReport`];
//! - [`run_scenario_to`]: the same, writing `series.csv`, `nodes.csv`, `tasks.csv` and
//!   `report.json` to a folder;
//! - [`sweep`]: a grid of variants run in parallel (rayon), with [`comparison_table`];
//! - [`gate`]: compare a run's SLA figures with a baseline (`berth sim gate`).
//!
//! Module map: [`scenario`] (the file format), [`workload`] (traces and transforms into job
//! arrivals), `engine` (event queue, the simulated world and its faults), [`metrics`],
//! [`report`].

mod engine;
pub mod gate;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod sweep;
pub mod workload;

pub use engine::{Fnv64, SPOT_NOTICE_MS};
pub use report::{comparison_table, SimReport, TierFigures};
pub use scenario::{Scenario, ScenarioError, DEFAULT_SCENARIO_TOML};
pub use sweep::{sweep, SweepSpec};

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

/// Runs a scenario and writes its CSV files and `report.json` to `out_dir`.
pub fn run_scenario_to(
    s: &Scenario,
    out_dir: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<SimReport, SimError> {
    engine::run(s, Some(out_dir), progress)
}
