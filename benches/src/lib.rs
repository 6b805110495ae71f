//! Benchmarks and the regression gate Berth's CI runs.
//!
//! - [`fixtures`]: the synthetic clusters and task mixes the criterion benches and the gate share;
//! - [`gate`]: deterministic quality figures and instruction counts of hot paths, compared with
//!   the committed baseline `benches/baseline.json` (the `berth-gate` binary);
//! - [`stream`]: a recorded controller event stream (the `controller` bench replays it).

pub mod fixtures;
pub mod gate;
pub mod stream;
