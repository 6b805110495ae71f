//! Alibaba cluster trace 2017, batch task table (`batch_task.csv`), from
//! github.com/alibaba/clusterdata, `cluster-trace-v2017` (schema in `trace_201708.md`).
//!
//! Columns: create time, end (latest modification) time, job id, task id, number of
//! instances, status, CPU per instance, normalised memory per instance. With a header line the
//! columns are matched by trimmed, lower-cased name (the copy in the shared traces has
//! `task_create_time, task_end_time, job_id, task_id,number_of_instances, status,
//! number_of_cpus_requested_per_instance_in_the_task,normalized_memory_requested_per_instance_in_the_task`
//! with stray spaces; Alibaba's own names `create_timestamp`, `modify_timestamp`,
//! `instance_num`, `plan_cpu`, `plan_mem` are accepted too); without one (Alibaba ships the
//! file headerless) they are taken by position in that order.
//!
//! Mapping:
//! - one row is one [`TaskGroup`] of `number_of_instances` identical instances (never
//!   expanded: 80,553 rows hold 11.9 M instances); rows are grouped into one [`TraceJob`] per
//!   `job_id` (batch, flex tier, `class` empty), jobs sorted by (submit, id), a job's groups
//!   by (submit, task id);
//! - CPU: 100 = one core, so `cpu_milli = cpus × 10`;
//! - memory is a fraction of one machine: `mem_mib = round(fraction × machine_mem_mib)` with
//!   [`ImportOptions::machine_mem_mib`] (default 128 GiB, an assumption: see
//!   [`crate::error::ALIBABA_2017_MACHINE_MEM_MIB_DEFAULT`]);
//! - empty CPU or memory cells (9,017 rows, mostly `Waiting`): by
//!   [`ImportOptions::missing_request`], kept with a zero request (default) or dropped and
//!   counted;
//! - times are seconds from the trace start, kept as they are (negative = before the start;
//!   Alibaba: 0 also stands for "before the trace period") and turned into ms;
//! - status: `Terminated` → completed, `Failed` → failed, both with `duration = end − create`
//!   when `end` is non-zero and not before `create`; `Running` → unfinished, `Waiting` /
//!   `Ready` → never scheduled, `Cancelled` → killed, all with unknown duration (`end` is
//!   only the latest state change).

use crate::error::{ImportOptions, MissingRequest, Skipped, TraceError};
use crate::fields::{column_positions, f64_cell, i64_cell, secs_to_ms, u64_cell};
use crate::reader::{for_each_record, LineReader};
use crate::workload::{TaskGroup, TraceJob, TraceOutcome, WorkKind, Workload};
use berth_solver::{JobId, Resources, TaskShape, Tier};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Number of columns.
pub const COLUMNS: usize = 8;

/// The accepted names of each column, in positional order.
const COLUMN_NAMES: [(&str, &[&str]); COLUMNS] = [
    (
        "task_create_time",
        &["task_create_time", "create_timestamp", "create_time"],
    ),
    (
        "task_end_time",
        &["task_end_time", "modify_timestamp", "end_time"],
    ),
    ("job_id", &["job_id"]),
    ("task_id", &["task_id"]),
    (
        "number_of_instances",
        &["number_of_instances", "instance_num"],
    ),
    ("status", &["status"]),
    (
        "number_of_cpus_requested_per_instance_in_the_task",
        &[
            "number_of_cpus_requested_per_instance_in_the_task",
            "plan_cpu",
            "cpus_per_instance",
        ],
    ),
    (
        "normalized_memory_requested_per_instance_in_the_task",
        &[
            "normalized_memory_requested_per_instance_in_the_task",
            "plan_mem",
            "normalized_memory_per_instance",
        ],
    ),
];

/// One row, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchTaskRow {
    pub create_time_s: i64,
    pub end_time_s: i64,
    pub job_id: u64,
    pub task_id: u64,
    pub instances: u32,
    pub status: String,
    /// CPU per instance, 100 = one core; `None` when the cell is empty.
    pub cpus: Option<f64>,
    /// Memory per instance as a fraction of one machine; `None` when the cell is empty.
    pub mem_fraction: Option<f64>,
}

impl BatchTaskRow {
    /// The row's task group (see the module doc).
    pub fn to_group(&self, machine_mem_mib: u64) -> Result<TaskGroup, String> {
        let outcome = status_outcome(&self.status)?;
        let resources = match (self.cpus, self.mem_fraction) {
            (Some(cpus), Some(mem)) => Resources::new(
                (cpus * 10.0).round() as u64,
                (mem * machine_mem_mib as f64).round() as u64,
                0,
                0,
            ),
            _ => Resources::ZERO,
        };
        let ran = matches!(outcome, TraceOutcome::Completed | TraceOutcome::Failed);
        let duration_ms = if ran && self.end_time_s != 0 && self.end_time_s >= self.create_time_s {
            Some(secs_to_ms(self.end_time_s - self.create_time_s, "task_end_time")? as u64)
        } else {
            None
        };
        Ok(TaskGroup {
            submit_ms: secs_to_ms(self.create_time_s, "task_create_time")?,
            instances: self.instances,
            shape: TaskShape::new(resources),
            duration_ms,
            requested_runtime_ms: None,
            outcome,
        })
    }

    /// True when the CPU or memory cell was empty.
    pub fn request_missing(&self) -> bool {
        self.cpus.is_none() || self.mem_fraction.is_none()
    }
}

/// The outcome for a task status.
pub fn status_outcome(status: &str) -> Result<TraceOutcome, String> {
    match status {
        "Terminated" => Ok(TraceOutcome::Completed),
        "Failed" => Ok(TraceOutcome::Failed),
        "Running" => Ok(TraceOutcome::Unfinished),
        "Waiting" | "Ready" => Ok(TraceOutcome::NeverScheduled),
        "Cancelled" => Ok(TraceOutcome::Killed),
        other => Err(format!(
            "status: unknown value {other:?} (expected Terminated, Failed, Running, Waiting, Ready or Cancelled)"
        )),
    }
}

/// Imports a `batch_task.csv` (plain or gzip).
pub fn import(path: &Path, opts: &ImportOptions) -> Result<Workload, TraceError> {
    let mut w = import_lines(&mut LineReader::open(path)?, opts)?;
    w.source = path.display().to_string();
    Ok(w)
}

/// [`import`] from any byte source; `name` names it in errors and in `source`.
pub fn import_from(
    reader: impl Read + 'static,
    name: &str,
    opts: &ImportOptions,
) -> Result<Workload, TraceError> {
    let mut w = import_lines(&mut LineReader::new(reader, name)?, opts)?;
    w.source = name.to_string();
    Ok(w)
}

/// Calls `row` for every parsed row, in file order.
pub fn for_each_row(
    path: &Path,
    opts: &ImportOptions,
    mut row: impl FnMut(BatchTaskRow),
) -> Result<Skipped, TraceError> {
    read_rows(&mut LineReader::open(path)?, opts, |r| {
        row(r);
        Ok(())
    })
}

/// Reads the rows, handing each to `row`; an `Err(message)` from `row` is a line error.
fn read_rows(
    lines: &mut LineReader,
    opts: &ImportOptions,
    mut row: impl FnMut(BatchTaskRow) -> Result<(), String>,
) -> Result<Skipped, TraceError> {
    let mut skipped = Skipped::default();
    // The first non-blank line is a header unless it starts with a number.
    let (cols, first_data) = loop {
        match lines.next_line()? {
            None => return Ok(skipped),
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((no, l)) => {
                let first = l.split(',').next().unwrap_or("").trim();
                if first.parse::<i64>().is_ok() {
                    break (std::array::from_fn(|i| i), Some((no, l.to_string())));
                }
                let cols = column_positions(l, COLUMN_NAMES)
                    .map_err(|m| TraceError::line(lines.file(), no, m))?;
                break (cols, None);
            }
        }
    };
    let mut one = |line: &str| -> Result<(), String> { row(parse_row(line, &cols)?) };
    if let Some((no, l)) = first_data {
        if let Err(m) = one(&l) {
            skipped.absorb(TraceError::line(lines.file(), no, m), opts)?;
        }
    }
    for_each_record(lines, opts, &mut skipped, |_, line| one(line))?;
    Ok(skipped)
}

fn import_lines(lines: &mut LineReader, opts: &ImportOptions) -> Result<Workload, TraceError> {
    // Groups per job, each with its task id for ordering. A BTreeMap keeps the job order
    // deterministic before the final sort.
    let mut jobs: BTreeMap<u64, Vec<(u64, TaskGroup)>> = BTreeMap::new();
    let mut dropped = 0u64;
    let mut skipped = read_rows(lines, opts, |r| {
        if r.request_missing() && opts.missing_request == MissingRequest::Skip {
            dropped += 1;
            return Ok(());
        }
        let g = r.to_group(opts.machine_mem_mib)?;
        jobs.entry(r.job_id).or_default().push((r.task_id, g));
        Ok(())
    })?;
    for _ in 0..dropped {
        skipped.count_dropped();
    }
    let jobs = jobs
        .into_iter()
        .map(|(job_id, mut groups)| {
            groups.sort_by_key(|(task_id, g)| (g.submit_ms, *task_id));
            TraceJob {
                id: JobId(job_id),
                name: job_id.to_string(),
                kind: WorkKind::Batch,
                tier: Tier::Flex,
                class: String::new(),
                gang: false,
                groups: groups.into_iter().map(|(_, g)| g).collect(),
            }
        })
        .collect();
    let mut w = Workload {
        jobs,
        ..Workload::default()
    };
    w.set_skipped(skipped);
    w.sort();
    Ok(w)
}

fn optional_f64(v: &str, column: &str) -> Result<Option<f64>, String> {
    if v.trim().is_empty() {
        Ok(None)
    } else {
        f64_cell(v, column).map(Some)
    }
}

fn parse_row(line: &str, cols: &[usize; COLUMNS]) -> Result<BatchTaskRow, String> {
    let all: Vec<&str> = line.split(',').collect();
    let need = cols.iter().max().map_or(0, |m| m + 1);
    if all.len() < need {
        return Err(format!("{} field(s), expected {need}", all.len()));
    }
    let c = |i: usize| all[cols[i]];
    let create_time_s = i64_cell(c(0), "task_create_time")?;
    let end_time_s = i64_cell(c(1), "task_end_time")?;
    secs_to_ms(create_time_s, "task_create_time")?;
    secs_to_ms(end_time_s, "task_end_time")?;
    let instances = u64_cell(c(4), "number_of_instances")?;
    let instances = match u32::try_from(instances) {
        Ok(0) => return Err("number_of_instances: 0".into()),
        Ok(n) => n,
        Err(_) => return Err(format!("number_of_instances: {instances} is out of range")),
    };
    let status = c(5).trim().to_string();
    status_outcome(&status)?;
    let cpus = optional_f64(c(6), "cpus_per_instance")?;
    if let Some(x) = cpus {
        if !(0.0..=1.0e9).contains(&x) {
            return Err(format!("cpus_per_instance: {x} is out of range"));
        }
    }
    let mem_fraction = optional_f64(c(7), "normalized_memory_per_instance")?;
    if let Some(x) = mem_fraction {
        if !(0.0..=1.0).contains(&x) {
            return Err(format!(
                "normalized_memory_per_instance: {x} is not a fraction of one machine (0..=1)"
            ));
        }
    }
    Ok(BatchTaskRow {
        create_time_s,
        end_time_s,
        job_id: u64_cell(c(2), "job_id")?,
        task_id: u64_cell(c(3), "task_id")?,
        instances,
        status,
        cpus,
        mem_fraction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const HEADER: &str = "task_create_time, task_end_time, job_id, task_id,number_of_instances, status, number_of_cpus_requested_per_instance_in_the_task,normalized_memory_requested_per_instance_in_the_task\r\n";

    fn import_text(text: &str, opts: &ImportOptions) -> Result<Workload, TraceError> {
        import_from(
            Cursor::new(text.as_bytes().to_vec()),
            "batch_task.csv",
            opts,
        )
    }

    #[test]
    fn rows_group_into_jobs_without_expanding_instances() {
        let text = format!(
            "{HEADER}6459,6524,3,4,15740,Terminated,50,0.0078125\r\n6457,6533,3,5,1,Terminated,100,0.5\r\n6036,6046,4,7,393,Waiting,,\r\n-60,110,1,9,2,Failed,40,0.25\r\n"
        );
        let w = import_text(
            &text,
            &ImportOptions {
                machine_mem_mib: 1024,
                ..ImportOptions::default()
            },
        )
        .unwrap();
        assert_eq!(w.jobs.len(), 3);
        assert_eq!(w.task_groups(), 4);
        assert_eq!(w.instances(), 15740 + 1 + 393 + 2);
        // Sorted by earliest submit: job 1 (-60 s), job 4 (6036 s), job 3 (6457 s).
        assert_eq!(
            w.jobs.iter().map(|j| j.id.0).collect::<Vec<_>>(),
            vec![1, 4, 3]
        );
        let j3 = &w.jobs[2];
        // Groups by submit: task 5 (6457) before task 4 (6459).
        assert_eq!(j3.groups[0].instances, 1);
        assert_eq!(
            j3.groups[0].shape.resources,
            Resources::new(1000, 512, 0, 0)
        );
        assert_eq!(j3.groups[1].shape.resources, Resources::new(500, 8, 0, 0));
        assert_eq!(j3.groups[1].duration_ms, Some(65_000));
        assert_eq!(j3.groups[1].outcome, TraceOutcome::Completed);
        let j1 = &w.jobs[0];
        assert_eq!(j1.groups[0].submit_ms, -60_000);
        assert_eq!(j1.groups[0].duration_ms, Some(170_000));
        assert_eq!(j1.groups[0].outcome, TraceOutcome::Failed);
        let j4 = &w.jobs[1];
        assert_eq!(j4.groups[0].shape.resources, Resources::ZERO);
        assert_eq!(j4.groups[0].outcome, TraceOutcome::NeverScheduled);
        assert_eq!(j4.groups[0].duration_ms, None);
        assert_eq!(w.skipped_lines, 0);
    }

    #[test]
    fn missing_requests_can_be_dropped_and_counted() {
        let text = format!("{HEADER}1,2,3,4,5,Waiting,,\n1,2,3,5,6,Terminated,50,0.1\n");
        let opts = ImportOptions {
            missing_request: MissingRequest::Skip,
            ..ImportOptions::default()
        };
        let w = import_text(&text, &opts).unwrap();
        assert_eq!(w.instances(), 6);
        assert_eq!(w.skipped_lines, 1);
        assert!(w.first_errors.is_empty());
    }

    #[test]
    fn headerless_file_is_read_by_position() {
        let w = import_text(
            "10,20,7,1,3,Terminated,50,0.5\n11,0,7,2,1,Running,50,0.5\n",
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(w.instances(), 4);
        assert_eq!(w.jobs[0].groups[1].outcome, TraceOutcome::Unfinished);
        assert_eq!(w.jobs[0].groups[1].duration_ms, None);
    }

    #[test]
    fn header_with_other_column_order_is_followed() {
        let text = "status,job_id,task_id,number_of_instances,plan_cpu,plan_mem,create_timestamp,modify_timestamp\nTerminated,9,1,4,200,0.25,100,160\n";
        let w = import_text(
            text,
            &ImportOptions {
                machine_mem_mib: 4096,
                ..ImportOptions::default()
            },
        )
        .unwrap();
        let g = &w.jobs[0].groups[0];
        assert_eq!(w.jobs[0].id, JobId(9));
        assert_eq!(
            (g.instances, g.submit_ms, g.duration_ms),
            (4, 100_000, Some(60_000))
        );
        assert_eq!(g.shape.resources, Resources::new(2000, 1024, 0, 0));
    }

    #[test]
    fn bad_rows_are_reported_or_skipped() {
        let text = format!("{HEADER}1,2,3,4,5,Terminated,50,0.1\n1,2,3,5,0,Terminated,50,0.1\n1,2,3,6,1,Exploded,50,0.1\n1,2,x,7,1,Failed,50,0.1\n1,2,3,8,1,Failed,50,1.5\n");
        let e = import_text(&text, &ImportOptions::default()).unwrap_err();
        assert_eq!(e.to_string(), "batch_task.csv:3: number_of_instances: 0");
        let w = import_text(&text, &ImportOptions::skipping_bad_lines()).unwrap();
        assert_eq!(w.instances(), 5);
        assert_eq!(w.skipped_lines, 4);
        assert!(
            w.first_errors[1].starts_with("batch_task.csv:4: status: unknown value \"Exploded\"")
        );
        assert!(w.first_errors[2].starts_with("batch_task.csv:5: job_id: "));
        assert!(w.first_errors[3].contains("1.5 is not a fraction"));
        let e = import_text("a,b,c\n", &ImportOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("batch_task.csv:1: header lacks column(s)"),
            "{e}"
        );
    }
}
