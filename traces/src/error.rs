//! Errors and import options shared by every importer.
//!
//! An importer reads a file line by line. A line it cannot make sense of is a [`TraceError`] that
//! names the place: `file:line: what is wrong` (line numbers are 1-based and count lines of the
//! decompressed text for gzip files). By default the import stops at the first bad line; with
//! [`ImportOptions::skip_bad`] it skips bad lines, counts them and keeps the first few messages
//! ([`Skipped`]), which end up in [`crate::Workload::skipped_lines`] and
//! [`crate::Workload::first_errors`].
//!
//! Problems that concern the whole file (it cannot be opened, its header lacks a column, its
//! format is not recognised) are never skipped.

use std::fmt;

/// How many messages about skipped lines are kept by default.
pub const FIRST_ERRORS_MAX_DEFAULT: usize = 10;

/// The default memory of one Alibaba 2017 machine, used to turn the trace's normalised memory
/// (0..1 of one machine) into MiB: 128 GiB.
///
/// Alibaba does not publish the machines' memory: the trace documentation
/// (github.com/alibaba/clusterdata, `cluster-trace-v2017/trace_201708.md`) says memory and disk
/// are normalised and that the machines have 64 CPUs (cpusets 0..63 over two packages). 128 GiB
/// (2 GiB per logical CPU) is our assumption, not a published figure; set
/// [`ImportOptions::machine_mem_mib`] to what the cluster you simulate has.
pub const ALIBABA_2017_MACHINE_MEM_MIB_DEFAULT: u64 = 128 * 1024;

/// Where an import went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// One line is wrong. Displayed as `file:line: message`.
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: u64,
        message: String,
    },
    /// The file as a whole is wrong (unknown format, missing header column, no data).
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// Reading failed: the file is missing, unreadable, or its gzip stream is corrupt. `line` is
    /// the last line read successfully (0 = before the first line).
    #[error("{file}{}: {source}", if *line > 0 { format!(":{line}") } else { String::new() })]
    Io {
        file: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
}

impl TraceError {
    pub fn line(file: impl Into<String>, line: u64, message: impl Into<String>) -> Self {
        TraceError::Line {
            file: file.into(),
            line,
            message: message.into(),
        }
    }

    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        TraceError::File {
            file: file.into(),
            message: message.into(),
        }
    }

    pub fn io(file: impl Into<String>, line: u64, source: std::io::Error) -> Self {
        TraceError::Io {
            file: file.into(),
            line,
            source,
        }
    }

    /// True for errors about one line, which [`ImportOptions::skip_bad`] may skip.
    pub fn is_line_error(&self) -> bool {
        matches!(self, TraceError::Line { .. })
    }
}

/// What to do with Alibaba 2017 rows whose CPU or memory cell is empty (9,017 rows of the
/// public `batch_task.csv`, mostly `Waiting` tasks, 849,617 instances).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingRequest {
    /// Keep the row with a zero request (`cpu_milli = 0`, `mem_mib = 0`): the instance count
    /// stays that of the trace, and [`crate::stats::TraceStats`] counts such groups as
    /// "unknown request". The default.
    #[default]
    Zero,
    /// Drop the row and count it in [`crate::Workload::skipped_lines`] (no message is kept:
    /// the row is not malformed).
    Skip,
}

/// How to read SWF field 10 (requested memory) and field 7 (used memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SwfMemory {
    /// Per line: a MetaCentrum line (at least 21 fields, field 19 a `{node list}`) is read as
    /// [`SwfMemory::BytesPerNode`], any other line as [`SwfMemory::KibPerProcessor`].
    #[default]
    Auto,
    /// The SWF standard: KB (KiB) per processor.
    KibPerProcessor,
    /// MetaCentrum's extended SWF: bytes per node (PBS `mem`), the node running `ppn`
    /// processors of the job (from the PBS spec in field 21, else all of its processors).
    BytesPerNode,
}

/// Options for every importer. `ImportOptions::default()` stops at the first bad line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Skip bad lines (counting them) instead of stopping at the first one.
    pub skip_bad: bool,
    /// How many messages about skipped lines to keep (default [`FIRST_ERRORS_MAX_DEFAULT`]).
    pub first_errors_max: usize,
    /// Memory of one Alibaba 2017 machine in MiB (default
    /// [`ALIBABA_2017_MACHINE_MEM_MIB_DEFAULT`]); the trace's memory is a fraction of it.
    pub machine_mem_mib: u64,
    /// Alibaba 2017 rows with an empty CPU or memory cell.
    pub missing_request: MissingRequest,
    /// Units of SWF memory fields.
    pub swf_memory: SwfMemory,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            skip_bad: false,
            first_errors_max: FIRST_ERRORS_MAX_DEFAULT,
            machine_mem_mib: ALIBABA_2017_MACHINE_MEM_MIB_DEFAULT,
            missing_request: MissingRequest::default(),
            swf_memory: SwfMemory::default(),
        }
    }
}

impl ImportOptions {
    /// The defaults with `skip_bad` on.
    pub fn skipping_bad_lines() -> Self {
        ImportOptions {
            skip_bad: true,
            ..ImportOptions::default()
        }
    }
}

/// Lines an import skipped: how many, and the first messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub lines: u64,
    pub first_errors: Vec<String>,
}

impl Skipped {
    /// Takes a line error: records it when `opts.skip_bad` is on, else hands it back.
    /// Errors that are not about one line are always handed back.
    pub(crate) fn absorb(
        &mut self,
        err: TraceError,
        opts: &ImportOptions,
    ) -> Result<(), TraceError> {
        if !opts.skip_bad || !err.is_line_error() {
            return Err(err);
        }
        self.lines += 1;
        if self.first_errors.len() < opts.first_errors_max {
            self.first_errors.push(err.to_string());
        }
        Ok(())
    }

    /// Counts a line dropped on purpose (not malformed): no message.
    pub(crate) fn count_dropped(&mut self) {
        self.lines += 1;
    }

    /// Adds another file's skips (e.g. the node list's to the pod list's).
    pub(crate) fn merge(&mut self, other: Skipped, opts: &ImportOptions) {
        self.lines += other.lines;
        for e in other.first_errors {
            if self.first_errors.len() < opts.first_errors_max {
                self.first_errors.push(e);
            }
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line(s) skipped", self.lines)?;
        for e in &self.first_errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_line() {
        let e = TraceError::line("a.csv", 7, "cpu_milli: not a number: \"x\"");
        assert_eq!(e.to_string(), "a.csv:7: cpu_milli: not a number: \"x\"");
        let e = TraceError::file("a.csv", "missing column num_gpu");
        assert_eq!(e.to_string(), "a.csv: missing column num_gpu");
        let e = TraceError::io(
            "a.gz",
            3,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt deflate stream"),
        );
        assert_eq!(e.to_string(), "a.gz:3: corrupt deflate stream");
        let e = TraceError::io(
            "a.gz",
            0,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(e.to_string(), "a.gz: no such file");
    }

    #[test]
    fn skipped_keeps_first_messages_only_and_never_swallows_file_errors() {
        let opts = ImportOptions {
            first_errors_max: 2,
            ..ImportOptions::skipping_bad_lines()
        };
        let mut s = Skipped::default();
        for i in 1..=5 {
            s.absorb(TraceError::line("f", i, "bad"), &opts).unwrap();
        }
        assert_eq!(s.lines, 5);
        assert_eq!(
            s.first_errors,
            vec!["f:1: bad".to_string(), "f:2: bad".to_string()]
        );
        assert!(s.absorb(TraceError::file("f", "no header"), &opts).is_err());
        let strict = ImportOptions::default();
        assert!(Skipped::default()
            .absorb(TraceError::line("f", 1, "bad"), &strict)
            .is_err());
    }
}
