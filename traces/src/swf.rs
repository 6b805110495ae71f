//! The Standard Workload Format (SWF) of the Parallel Workloads Archive
//! (cs.huji.ac.il/labs/parallel/workload/swf.html), plain or gzip (`.swf.gz`).
//!
//! One job per line, whitespace-separated, `-1` = unknown, `;` starts a header comment
//! (`MaxNodes`, `MaxProcs` and `UnixStartTime` are read: [`SwfHeader`]). Fields (1-based):
//! 1 job id, 2 submit, 3 wait, 4 run time, 5 allocated processors, 6 average CPU time, 7 used
//! memory, 8 requested processors, 9 requested time, 10 requested memory, 11 status, 12 user,
//! 13 group, 14 executable, 15 queue, 16 partition, 17 preceding job, 18 think time. Fields
//! past the 18th are tolerated; MetaCentrum's logs (`wagap-2013.swf`) add three: the assigned
//! node list `{n1,n2,...}` (read up to its closing `}` should it contain spaces), the queue
//! name and the PBS node spec (`2:ppn=8:x86_64:cl_zegox`).
//!
//! Mapping — one SWF job is one [`TraceJob`] (batch, flex tier, `gang = true`: a rigid
//! parallel job starts all its processors together) with one [`TaskGroup`]:
//! - `instances` = requested processors (field 8), else allocated (field 5); each instance is
//!   one processor, `cpu_milli = 1000`;
//! - memory per instance from field 10 (requested), else field 7 (used), rounded up to MiB.
//!   Units by [`SwfMemory`]: the standard says KB per processor; MetaCentrum writes bytes per
//!   node (its PBS `mem`; 64 GiB for a 64-processor job on one 505 GiB node), divided here by
//!   the `ppn` of the first chunk of the PBS spec (the processors per node), else by the
//!   processor count. [`SwfMemory::Auto`] tells the two apart per line (a MetaCentrum line has
//!   at least 21 fields and field 19 starts with `{`);
//! - `submit_ms` is relative to the first job of the file; [`Workload::epoch_unix_s`] is
//!   `UnixStartTime + first submit` when the header has `UnixStartTime`, else the first
//!   submit itself when it looks like a Unix time (after 1980: MetaCentrum writes epoch
//!   seconds), else unknown;
//! - `duration_ms` = run time (field 4); `requested_runtime_ms` = field 9;
//! - status (field 11): 1 → completed, 0 → failed, 5 → cancelled ([`TraceOutcome::Killed`]),
//!   3 / 4 → last part of a checkpointed job, completed / failed; 2 (a partial run to be
//!   continued) and -1 → unknown;
//! - `class` = the queue: MetaCentrum's queue name, else field 15 (a number) unless -1.
//!
//! Any negative number is read as unknown, not only -1: `wagap-2013.swf` has two jobs whose run
//! time is minus their submit time.
//!
//! # Machines files
//! `<trace>.machines` (Alea's format): one line per node type, `id name nodes cpus_per_node
//! speed ram_per_node_KB`. Each becomes `nodes` nodes named `name-i` of `cpus_per_node × 1000`
//! milli-CPU and `ram_per_node_KB / 1024` MiB, with `pool = name`. [`import`] loads
//! `<path>.machines` (or, for `x.swf.gz`, `x.swf.machines`) when it exists.

use crate::error::{ImportOptions, Skipped, SwfMemory, TraceError};
use crate::reader::{for_each_record, LineReader};
use crate::workload::{TaskGroup, TraceJob, TraceOutcome, WorkKind, Workload};
use berth_solver::{
    ClusterSpec, JobId, NodeAttributes, NodeId, NodeSpec, Resources, TaskShape, Tier,
};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Standard fields per line.
pub const FIELDS: usize = 18;

/// Submit times from this value on (1980-01-01) are taken for Unix times.
pub const EPOCH_SUBMIT_MIN_S: i64 = 315_532_800;

/// What the `;` header comments say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwfHeader {
    pub max_nodes: Option<u64>,
    pub max_procs: Option<u64>,
    pub unix_start_time_s: Option<i64>,
}

impl SwfHeader {
    /// Reads one `; Key: value` comment; other comments are ignored.
    fn absorb(&mut self, comment: &str) {
        let body = comment.trim_start_matches(';').trim();
        let Some((key, value)) = body.split_once(':') else {
            return;
        };
        let value = value.trim();
        match key.trim() {
            "MaxNodes" => self.max_nodes = value.parse().ok(),
            "MaxProcs" => self.max_procs = value.parse().ok(),
            "UnixStartTime" => self.unix_start_time_s = value.parse().ok(),
            _ => {}
        }
    }
}

/// Reads the header comments of an SWF file (all `;` lines, wherever they are).
pub fn read_header(path: &Path) -> Result<SwfHeader, TraceError> {
    let mut lines = LineReader::open(path)?;
    let mut header = SwfHeader::default();
    loop {
        match lines.next_line() {
            Ok(Some((_, l))) if l.trim_start().starts_with(';') => header.absorb(l.trim_start()),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(header),
            Err(e) if e.is_line_error() => {}
            Err(e) => return Err(e),
        }
    }
}

/// Imports an SWF file (plain or gzip) and its machines file when there is one.
pub fn import(path: &Path, opts: &ImportOptions) -> Result<Workload, TraceError> {
    let mut w = import_lines(&mut LineReader::open(path)?, opts)?;
    w.source = path.display().to_string();
    if let Some(m) = machines_path_for(path) {
        let (cluster, skipped) = import_machines(&m, opts)?;
        let mut all = w.take_skipped();
        all.merge(skipped, opts);
        w.set_skipped(all);
        w.cluster = Some(cluster);
    }
    Ok(w)
}

/// [`import`] from any byte source, without a machines file; `name` names it in errors.
pub fn import_from(
    reader: impl Read + 'static,
    name: &str,
    opts: &ImportOptions,
) -> Result<Workload, TraceError> {
    let mut w = import_lines(&mut LineReader::new(reader, name)?, opts)?;
    w.source = name.to_string();
    Ok(w)
}

/// The machines file that goes with `path`, if it exists: `<path>.machines`, or for a
/// `.gz` file also `<path without .gz>.machines`.
pub fn machines_path_for(path: &Path) -> Option<PathBuf> {
    let s = path.as_os_str().to_string_lossy();
    let mut candidates = vec![PathBuf::from(format!("{s}.machines"))];
    if let Some(stem) = s.strip_suffix(".gz") {
        candidates.push(PathBuf::from(format!("{stem}.machines")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Reads a machines file into a cluster.
pub fn import_machines(
    path: &Path,
    opts: &ImportOptions,
) -> Result<(ClusterSpec, Skipped), TraceError> {
    read_machines(&mut LineReader::open(path)?, opts)
}

/// [`import_machines`] from any byte source.
pub fn import_machines_from(
    reader: impl Read + 'static,
    name: &str,
    opts: &ImportOptions,
) -> Result<(ClusterSpec, Skipped), TraceError> {
    read_machines(&mut LineReader::new(reader, name)?, opts)
}

/// The most nodes a machines file may declare in all (the shared traces' files have 68 and 120).
pub const MACHINES_NODES_MAX: u64 = 100_000;

fn read_machines(
    lines: &mut LineReader,
    opts: &ImportOptions,
) -> Result<(ClusterSpec, Skipped), TraceError> {
    let mut nodes = Vec::new();
    let mut skipped = Skipped::default();
    for_each_record(lines, opts, &mut skipped, |_, line| {
        let t = line.trim_start();
        if t.starts_with(';') || t.starts_with('#') {
            return Ok(());
        }
        let f: Vec<&str> = t.split_ascii_whitespace().collect();
        if f.len() < 6 {
            return Err(format!(
                "{} field(s), expected 6: id name nodes cpus_per_node speed ram_per_node_KB",
                f.len()
            ));
        }
        let name = f[1];
        let count = crate::fields::u64_cell(f[2], "nodes")?;
        if count > MACHINES_NODES_MAX - nodes.len() as u64 {
            return Err(format!(
                "nodes: {count} more would make more than {MACHINES_NODES_MAX} nodes in all"
            ));
        }
        let cpus = crate::fields::u64_cell(f[3], "cpus_per_node")?;
        let ram_kib = crate::fields::u64_cell(f[5], "ram_per_node_KB")?;
        let capacity = Resources::new(
            cpus.checked_mul(1000)
                .ok_or_else(|| format!("cpus_per_node: {cpus} is out of range"))?,
            ram_kib / 1024,
            0,
            0,
        );
        for i in 0..count {
            nodes.push(NodeSpec {
                id: NodeId(0),
                name: format!("{name}-{i}"),
                capacity,
                gpus: None,
                attributes: NodeAttributes {
                    pool: name.to_string(),
                    ..NodeAttributes::default()
                },
            });
        }
        Ok(())
    })?;
    Ok((ClusterSpec::from_nodes(nodes), skipped))
}

/// A number field: `None` when negative (unknown), `Err` when not a number.
fn field(f: &[&str], n: usize, name: &str) -> Result<Option<f64>, String> {
    let v = f[n - 1];
    // Most fields are plain whole numbers: parsed as integers (exact below 2^53, so the same
    // value the float parse gives) at a fraction of its cost.
    if (1..=15).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Some(v.parse::<u64>().expect("checked: digits") as f64));
    }
    let x: f64 = v
        .parse()
        .map_err(|_| format!("field {n} ({name}): not a number: {v:?}"))?;
    if !x.is_finite() {
        return Err(format!("field {n} ({name}): not a number: {v:?}"));
    }
    Ok(if x < 0.0 { None } else { Some(x) })
}

/// A whole-number field that must fit `max`.
fn whole(f: &[&str], n: usize, name: &str, max: f64) -> Result<Option<u64>, String> {
    match field(f, n, name)? {
        None => Ok(None),
        Some(x) if x > max => Err(format!("field {n} ({name}): {x} is out of range")),
        Some(x) => Ok(Some(x.round() as u64)),
    }
}

/// Seconds allowed in time fields (about 29 million years).
const SECONDS_MAX: f64 = 1.0e15;

/// The outcome for an SWF status code.
pub fn status_outcome(code: Option<u64>) -> Result<TraceOutcome, String> {
    match code {
        None | Some(2) => Ok(TraceOutcome::Unknown),
        Some(1) | Some(3) => Ok(TraceOutcome::Completed),
        Some(0) | Some(4) => Ok(TraceOutcome::Failed),
        Some(5) => Ok(TraceOutcome::Killed),
        Some(c) => Err(format!(
            "field 11 (status): unknown code {c} (SWF: 0 failed, 1 completed, 2-4 partial runs, 5 cancelled, -1 unknown)"
        )),
    }
}

/// MetaCentrum's extra fields, when the line has them.
struct Extras<'a> {
    queue: &'a str,
    pbs_spec: &'a str,
}

fn metacentrum_extras<'a>(f: &[&'a str]) -> Option<Extras<'a>> {
    if f.len() < 21 || !f[18].starts_with('{') {
        return None;
    }
    let close = (18..f.len()).find(|&i| f[i].ends_with('}'))?;
    Some(Extras {
        queue: f.get(close + 1).copied()?,
        pbs_spec: f.get(close + 2).copied().unwrap_or(""),
    })
}

/// The processors per node of the first chunk of a PBS spec (`2:ppn=8:x86_64` → 8).
fn pbs_ppn(spec: &str) -> Option<u64> {
    let first = spec.split('+').next()?;
    first.split(':').find_map(|part| {
        let v = part.strip_prefix("ppn=")?;
        let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u64>().ok().filter(|&p| p > 0)
    })
}

fn import_lines(lines: &mut LineReader, opts: &ImportOptions) -> Result<Workload, TraceError> {
    let mut header = SwfHeader::default();
    let mut jobs = Vec::new();
    let mut first_submit_s: Option<i64> = None;
    let mut skipped = Skipped::default();
    for_each_record(lines, opts, &mut skipped, |_, line| {
        let t = line.trim_start();
        if t.starts_with(';') {
            header.absorb(t);
            return Ok(());
        }
        // The fields in a buffer reused across lines (an SWF line has 18, MetaCentrum's a
        // few more).
        let mut f: [&str; 40] = [""; 40];
        let mut k = 0usize;
        let mut more = false;
        for x in t.split_ascii_whitespace() {
            if k == f.len() {
                more = true;
                break;
            }
            f[k] = x;
            k += 1;
        }
        let collected: Vec<&str>;
        let f: &[&str] = if more {
            collected = t.split_ascii_whitespace().collect();
            &collected
        } else {
            &f[..k]
        };
        if f.len() < FIELDS {
            return Err(format!("{} field(s), expected {FIELDS}", f.len()));
        }
        let job = parse_job(f, opts, &mut first_submit_s)?;
        jobs.push(job);
        Ok(())
    })?;
    let mut w = Workload {
        jobs,
        ..Workload::default()
    };
    w.epoch_unix_s = match (header.unix_start_time_s, first_submit_s) {
        (Some(start), first) => start.checked_add(first.unwrap_or(0)),
        (None, Some(first)) if first >= EPOCH_SUBMIT_MIN_S => Some(first),
        _ => None,
    };
    w.set_skipped(skipped);
    w.sort();
    Ok(w)
}

fn parse_job(
    f: &[&str],
    opts: &ImportOptions,
    first_submit_s: &mut Option<i64>,
) -> Result<TraceJob, String> {
    let id: u64 = f[0]
        .parse()
        .map_err(|_| format!("field 1 (job id): not a whole number >= 0: {:?}", f[0]))?;
    let submit_s = whole(f, 2, "submit time", SECONDS_MAX)?
        .ok_or("field 2 (submit time): unknown (-1)")? as i64;
    let run_s = whole(f, 4, "run time", SECONDS_MAX)?;
    let allocated = whole(f, 5, "allocated processors", u32::MAX as f64)?;
    let used_mem = field(f, 7, "used memory")?;
    let requested = whole(f, 8, "requested processors", u32::MAX as f64)?;
    let requested_s = whole(f, 9, "requested time", SECONDS_MAX)?;
    let requested_mem = field(f, 10, "requested memory")?;
    let status = whole(f, 11, "status", u32::MAX as f64)?;
    let queue = whole(f, 15, "queue", u32::MAX as f64)?;
    let procs = match (requested, allocated) {
        (Some(r), _) if r > 0 => r,
        (_, Some(a)) if a > 0 => a,
        _ => return Err("fields 8 and 5 (processors): both unknown or 0".into()),
    };
    let extras = metacentrum_extras(f);
    let unit = match opts.swf_memory {
        SwfMemory::Auto if extras.is_some() => SwfMemory::BytesPerNode,
        SwfMemory::Auto => SwfMemory::KibPerProcessor,
        other => other,
    };
    let mem_mib_per_proc = match requested_mem
        .filter(|&m| m > 0.0)
        .or(used_mem.filter(|&m| m > 0.0))
    {
        None => 0,
        Some(m) => {
            let mib = match unit {
                SwfMemory::BytesPerNode => {
                    let ppn = extras
                        .as_ref()
                        .and_then(|e| pbs_ppn(e.pbs_spec))
                        .unwrap_or(procs)
                        .min(procs);
                    m / ppn as f64 / (1024.0 * 1024.0)
                }
                _ => m / 1024.0,
            };
            if mib > 1.0e12 {
                return Err(format!("memory {m} is out of range"));
            }
            mib.ceil() as u64
        }
    };
    let outcome = status_outcome(status)?;
    let class = match (&extras, queue) {
        (Some(e), _) => e.queue.to_string(),
        (None, Some(q)) => q.to_string(),
        (None, None) => String::new(),
    };
    let first = *first_submit_s.get_or_insert(submit_s);
    let submit_ms = (submit_s - first)
        .checked_mul(1000)
        .ok_or("field 2 (submit time): out of range")?;
    Ok(TraceJob {
        id: JobId(id),
        name: f[0].to_string(),
        kind: WorkKind::Batch,
        tier: Tier::Flex,
        class,
        gang: true,
        groups: vec![TaskGroup {
            submit_ms,
            instances: procs as u32,
            shape: TaskShape::new(Resources::new(1000, mem_mib_per_proc, 0, 0)),
            duration_ms: run_s.map(|s| s * 1000),
            requested_runtime_ms: requested_s.filter(|&s| s > 0).map(|s| s * 1000),
            outcome,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn import_text(text: &str) -> Result<Workload, TraceError> {
        import_from(
            Cursor::new(text.as_bytes().to_vec()),
            "t.swf",
            &ImportOptions::default(),
        )
    }

    #[test]
    fn standard_lines_with_header() {
        let text = "; Version: 2.2\n; UnixStartTime: 1027839845\n; MaxNodes: 240\n; MaxProcs: 240\n;\n    1        0 308434  31405   30  31405    -1   30  37980    2048  1   1   1  -1 -1  1 -1 -1\n    2        8 308426     -1    4     -1 18432   -1     -1    -1  5   1   1  -1  3  1 -1 -1\n \n";
        let w = import_text(text).unwrap();
        assert_eq!(w.jobs.len(), 2);
        assert_eq!(w.epoch_unix_s, Some(1_027_839_845));
        let a = &w.jobs[0];
        assert!(a.gang);
        assert_eq!(
            (a.id, a.kind, a.tier, a.class.as_str()),
            (JobId(1), WorkKind::Batch, Tier::Flex, "")
        );
        let g = &a.groups[0];
        assert_eq!(
            (
                g.submit_ms,
                g.instances,
                g.duration_ms,
                g.requested_runtime_ms
            ),
            (0, 30, Some(31_405_000), Some(37_980_000))
        );
        assert_eq!(g.shape.resources, Resources::new(1000, 2, 0, 0));
        assert_eq!(g.outcome, TraceOutcome::Completed);
        let b = &w.jobs[1];
        let g = &b.groups[0];
        // Requested processors unknown: allocated (4); requested memory unknown: used (18432 KB).
        assert_eq!(
            (
                g.submit_ms,
                g.instances,
                g.duration_ms,
                g.requested_runtime_ms
            ),
            (8_000, 4, None, None)
        );
        assert_eq!(g.shape.resources.mem_mib, 18);
        assert_eq!(g.outcome, TraceOutcome::Killed);
        assert_eq!(b.class, "3");
    }

    #[test]
    fn metacentrum_lines_use_bytes_per_node_and_queue_names() {
        let text = "0 1356996147 0 56011 64 1 1024 64 86400 68719476736 1 62 1 1 -1 1 1 1 {1,1} q_1d 1:ppn=64:x86_64:cl_zewura#excl\n\
                    1 1356996695 71 100 64 1 1024 64 0 8589934592 0 101 1 1 -1 1 1 1 {5, 6} q_2w 8:ppn=8:x86_64\n\
                    2 1356996700 0 -1356996700 1 1 1024 1 0 419430400 1 24 1 1 -1 1 1 1 {1284} q_4d 1:ppn=1\n";
        let w = import_text(text).unwrap();
        assert_eq!(w.epoch_unix_s, Some(1_356_996_147));
        let g0 = &w.jobs[0].groups[0];
        assert_eq!(w.jobs[0].class, "q_1d");
        assert_eq!(
            g0.shape.resources.mem_mib, 1024,
            "64 GiB per node over 64 ppn"
        );
        let g1 = &w.jobs[1].groups[0];
        assert_eq!(
            w.jobs[1].class, "q_2w",
            "node list with a space is read to its closing brace"
        );
        assert_eq!(g1.submit_ms, 548_000);
        assert_eq!(
            g1.shape.resources.mem_mib, 1024,
            "8 GiB per node over 8 ppn"
        );
        assert_eq!(g1.outcome, TraceOutcome::Failed);
        assert_eq!(
            g1.requested_runtime_ms, None,
            "0 requested seconds means unknown"
        );
        let g2 = &w.jobs[2].groups[0];
        assert_eq!(
            g2.duration_ms, None,
            "a negative run time other than -1 is unknown too"
        );
        assert_eq!(g2.shape.resources.mem_mib, 400);
    }

    #[test]
    fn memory_units_can_be_forced() {
        let line = "1 0 0 10 2 -1 -1 2 -1 2097152 1 1 1 1 1 1 -1 -1\n";
        let opts = ImportOptions {
            swf_memory: SwfMemory::BytesPerNode,
            ..ImportOptions::default()
        };
        let w = import_from(Cursor::new(line.as_bytes().to_vec()), "t.swf", &opts).unwrap();
        assert_eq!(
            w.jobs[0].groups[0].shape.resources.mem_mib, 1,
            "2 MiB per node, 2 processors"
        );
        let w = import_text(line).unwrap();
        assert_eq!(
            w.jobs[0].groups[0].shape.resources.mem_mib, 2048,
            "2 GiB per processor in KB"
        );
    }

    #[test]
    fn bad_lines_name_field_and_line() {
        let e = import_text("1 0 0 10 2\n").unwrap_err().to_string();
        assert_eq!(e, "t.swf:1: 5 field(s), expected 18");
        let e = import_text("; c\n1 0 0 ten 2 -1 -1 2 -1 -1 1 1 1 1 1 1 -1 -1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.swf:2: field 4 (run time): not a number: \"ten\"");
        let e = import_text("1 0 0 10 -1 -1 -1 -1 -1 -1 1 1 1 1 1 1 -1 -1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.swf:1: fields 8 and 5 (processors): both unknown or 0");
        let e = import_text("1 0 0 10 1 -1 -1 1 -1 -1 9 1 1 1 1 1 -1 -1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.swf:1: field 11 (status): unknown code 9"),
            "{e}"
        );
        let e = import_text("1 -1 0 10 1 -1 -1 1 -1 -1 1 1 1 1 1 1 -1 -1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.swf:1: field 2 (submit time): unknown (-1)");
    }

    #[test]
    fn machines_file_makes_nodes() {
        let text = "0\tzewura\t20\t80\t1\t529426432\n1\tzegox\t48\t12\t1\t94035968\n";
        let (c, _) = import_machines_from(
            Cursor::new(text.as_bytes().to_vec()),
            "m",
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(c.len(), 68);
        assert_eq!(c.total_capacity().cpu_milli, 2_176_000);
        assert_eq!(c.nodes[0].capacity, Resources::new(80_000, 517_018, 0, 0));
        assert_eq!(c.nodes[20].name, "zegox-0");
        assert_eq!(c.nodes[20].attributes.pool, "zegox");
        let e = import_machines_from(
            Cursor::new(b"0 x 2\n".to_vec()),
            "m",
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("m:1: 3 field(s), expected 6"),
            "{e}"
        );
        let e = import_machines_from(
            Cursor::new(b"0 a 60000 1 1 1\n1 b 60000 1 1 1\n".to_vec()),
            "m",
            &ImportOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "m:2: nodes: 60000 more would make more than 100000 nodes in all"
        );
    }

    #[test]
    fn ppn_is_read_from_the_first_chunk() {
        assert_eq!(pbs_ppn("1:ppn=64:x86_64:cl_zewura#excl"), Some(64));
        assert_eq!(pbs_ppn("8:ppn=8#excl"), Some(8));
        assert_eq!(pbs_ppn("1:ppn=1+3:ppn=2"), Some(1));
        assert_eq!(pbs_ppn("2:infiniband"), None);
        assert_eq!(pbs_ppn("1:ppn=0"), None);
    }
}
