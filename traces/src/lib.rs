//! Trace importers and the synthetic workload generator.
//!
//! Every importer turns a file into one [`Workload`]: job arrivals with task groups (identical
//! instances kept as one group) and, where the trace has one, a node list.
//!
//! Module map:
//! - [`workload`]: the one shape every importer produces.
//! - [`error`]: [`TraceError`] (`file:line: what is wrong`) and [`ImportOptions`].
//! - [`reader`]: plain or gzip files (by magic bytes), streamed line by line.
//! - [`alibaba_gpu`]: Alibaba GPU 2023 ("openb") pod and node lists.
//! - [`alibaba_2017`]: Alibaba 2017 `batch_task.csv`.
//! - [`swf`]: the Standard Workload Format (+ Alea `.machines` files).
//! - [`synthetic`]: a seeded generator of workloads from a [`SyntheticSpec`].
//! - [`stats`]: [`TraceStats`], a summary of a workload (`berth trace stats`).
//!
//! [`detect_format`] recognises a file by its first lines and [`import`] dispatches on it.
//! Importers never panic on a user's file: every problem is a [`TraceError`].

pub mod alibaba_2017;
pub mod alibaba_gpu;
pub mod error;
mod fields;
pub mod reader;
pub mod stats;
pub mod swf;
pub mod synthetic;
pub mod workload;

pub use error::{ImportOptions, MissingRequest, Skipped, SwfMemory, TraceError};
pub use stats::TraceStats;
pub use synthetic::SyntheticSpec;
pub use workload::{TaskGroup, TraceJob, TraceOutcome, WorkKind, Workload};

use reader::LineReader;
use std::fmt;
use std::path::{Path, PathBuf};

/// The trace formats [`import`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceFormat {
    /// An openb pod list (`openb_pod_list_*.csv`).
    AlibabaGpu2023Pods,
    /// An openb node list (`openb_node_list_*.csv`): a cluster without jobs.
    AlibabaGpu2023Nodes,
    /// Alibaba 2017 `batch_task.csv`, with or without its header line.
    Alibaba2017Batch,
    /// Standard Workload Format.
    Swf,
}

impl TraceFormat {
    pub const ALL: [TraceFormat; 4] = [
        TraceFormat::AlibabaGpu2023Pods,
        TraceFormat::AlibabaGpu2023Nodes,
        TraceFormat::Alibaba2017Batch,
        TraceFormat::Swf,
    ];

    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            TraceFormat::AlibabaGpu2023Pods => "openb-pods",
            TraceFormat::AlibabaGpu2023Nodes => "openb-nodes",
            TraceFormat::Alibaba2017Batch => "alibaba-2017",
            TraceFormat::Swf => "swf",
        }
    }

    /// The format named `name` (as [`TraceFormat::name`] gives it).
    pub fn from_name(name: &str) -> Option<TraceFormat> {
        TraceFormat::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many non-blank lines [`detect_format`] looks at.
const DETECT_LINES_MAX: usize = 50;

/// Recognises a trace file by its first lines (gzip is decompressed first):
/// - a header starting `name,` with `num_gpu` and `gpu_milli` → openb pods;
/// - a header starting `sn,` with `gpu` and `model` → openb nodes;
/// - a header with `job_id`, `task_id` and `status`, or a headerless row of 8 comma-separated
///   cells whose 6th is a task status → Alibaba 2017 batch tasks;
/// - `;` comment lines and/or a line of at least 18 whitespace-separated numbers → SWF.
pub fn detect_format(path: &Path) -> Result<TraceFormat, TraceError> {
    let mut lines = LineReader::open(path)?;
    let mut seen = 0;
    let mut saw_comment = false;
    let mut first_seen: Option<String> = None;
    let mut data_line_seen = false;
    while seen < DETECT_LINES_MAX {
        let (_, line) = match lines.next_line() {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) if e.is_line_error() => break,
            Err(e) => return Err(e),
        };
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        seen += 1;
        if first_seen.is_none() {
            first_seen = Some(fields::clip(t, 120));
        }
        if t.starts_with(';') {
            saw_comment = true;
            continue;
        }
        // The first line that is not a comment decides.
        data_line_seen = true;
        if let Some(f) = classify_line(t) {
            return Ok(f);
        }
        break;
    }
    if saw_comment && !data_line_seen {
        // Only SWF comments so far (a header, or a log with no job).
        return Ok(TraceFormat::Swf);
    }
    let what = match first_seen {
        None => "empty file".to_string(),
        Some(l) => format!("first line {l:?}"),
    };
    Err(TraceError::file(
        lines.file(),
        format!("unrecognised trace format ({what}); expected an openb pod or node list, Alibaba 2017 batch_task.csv or SWF"),
    ))
}

fn classify_line(t: &str) -> Option<TraceFormat> {
    let lower = t.to_ascii_lowercase();
    let cells: Vec<String> = lower.split(',').map(|c| c.trim().to_string()).collect();
    let has = |n: &str| cells.iter().any(|c| c == n);
    if cells[0] == "name" && has("num_gpu") && has("gpu_milli") {
        return Some(TraceFormat::AlibabaGpu2023Pods);
    }
    if cells[0] == "sn" && has("gpu") && has("model") {
        return Some(TraceFormat::AlibabaGpu2023Nodes);
    }
    if has("job_id") && has("task_id") && has("status") {
        return Some(TraceFormat::Alibaba2017Batch);
    }
    if cells.len() == alibaba_2017::COLUMNS
        && cells[0].parse::<i64>().is_ok()
        && alibaba_2017::status_outcome(t.split(',').nth(5).unwrap_or("").trim()).is_ok()
    {
        return Some(TraceFormat::Alibaba2017Batch);
    }
    let ws: Vec<&str> = t.split_ascii_whitespace().collect();
    if ws.len() >= swf::FIELDS && ws[..swf::FIELDS].iter().all(|v| v.parse::<f64>().is_ok()) {
        return Some(TraceFormat::Swf);
    }
    None
}

/// Imports a trace: `format` or, when `None`, what [`detect_format`] finds.
///
/// - openb pods: with the sibling node list when one of
///   [`alibaba_gpu::SIBLING_NODE_LISTS`] is in the same folder (`all_node` first);
/// - openb nodes: a workload with no jobs and the cluster;
/// - SWF: with `<path>.machines` when present.
pub fn import(
    path: &Path,
    format: Option<TraceFormat>,
    opts: &ImportOptions,
) -> Result<Workload, TraceError> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    match format {
        TraceFormat::AlibabaGpu2023Pods => match alibaba_gpu::sibling_node_list(path) {
            Some(nodes) => alibaba_gpu::import_pods_with_nodes(path, &nodes, opts),
            None => alibaba_gpu::import_pods(path, opts),
        },
        TraceFormat::AlibabaGpu2023Nodes => {
            let (cluster, skipped) = alibaba_gpu::import_nodes(path, opts)?;
            let mut w = Workload {
                source: path.display().to_string(),
                cluster: Some(cluster),
                ..Workload::default()
            };
            w.set_skipped(skipped);
            Ok(w)
        }
        TraceFormat::Alibaba2017Batch => alibaba_2017::import(path, opts),
        TraceFormat::Swf => swf::import(path, opts),
    }
}

/// The environment variable that overrides where the shared real traces are.
pub const TRACES_DIR_ENV: &str = "BERTH_TRACES_DIR";

/// Where the shared real traces are: `$BERTH_TRACES_DIR`, else `<workspace root>/../shared/traces`;
/// `None` when that folder does not exist (tests and benchmarks then skip, saying so).
pub fn shared_traces_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(TRACES_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"),
    };
    dir.is_dir().then_some(dir)
}

/// The folder of the small hand-written sample traces shipped with this crate.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}
