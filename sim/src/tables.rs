//! The run's output tables as typed columns: the column types of `series.csv`, `nodes.csv`,
//! `pools.csv`, `tasks.csv` and `sweep.csv`, a CSV reader for them (what the HTML report and the tests
//! read), and (feature `parquet`) the Parquet copies written beside the CSVs.
//!
//! The Parquet files are made from the finished CSV files, so both hold the same columns and
//! the same values (an empty CSV field is a null). Every column is nullable: `tasks.csv` has
//! rows of tasks still open at the horizon with empty fields.

use crate::SimError;
use std::path::Path;

/// The type of one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Int64,
    Float64,
    Utf8,
}

use ColumnKind::{Float64 as F, Int64 as I, Utf8 as S};

/// `series.csv`: one row per sample.
pub const SERIES_COLUMNS: &[(&str, ColumnKind)] = &[
    ("t_ms", I),
    ("nodes", I),
    ("cpu_capacity_milli", I),
    ("cpu_alloc_milli", I),
    ("cpu_used_milli", I),
    ("mem_capacity_mib", I),
    ("mem_alloc_mib", I),
    ("mem_used_mib", I),
    ("gpu_capacity_milli", I),
    ("gpu_alloc_milli", I),
    ("gpu_used_milli", I),
    ("gpu_idle_on_partial_nodes_milli", I),
    ("pending_tasks", I),
    ("running_tasks", I),
    ("cost_usd", F),
];

/// `nodes.csv`: nodes in service per (sample, pool, instance type, zone).
pub const NODES_COLUMNS: &[(&str, ColumnKind)] = &[
    ("t_ms", I),
    ("pool", S),
    ("instance_type", S),
    ("zone", S),
    ("nodes", I),
];

/// `pools.csv`: one row per (sample, pool), every pool in every sample. The figures of
/// `series.csv` split by pool ([`crate::metrics::PoolFigures`]): at each sample each column
/// summed over the pools is the series column of the same name. Capacity, allocation and
/// running tasks are by the node's pool, utilisation by the pool of the running task's node,
/// pending tasks by the first pool that could serve them (see [`crate::metrics`]).
pub const POOLS_COLUMNS: &[(&str, ColumnKind)] = &[
    ("t_ms", I),
    ("pool", S),
    ("nodes", I),
    ("cpu_capacity_milli", I),
    ("cpu_alloc_milli", I),
    ("cpu_used_milli", I),
    ("mem_capacity_mib", I),
    ("mem_alloc_mib", I),
    ("mem_used_mib", I),
    ("gpu_capacity_milli", I),
    ("gpu_alloc_milli", I),
    ("gpu_used_milli", I),
    ("gpu_idle_on_partial_nodes_milli", I),
    ("pending_tasks", I),
    ("running_tasks", I),
];

/// `tasks.csv`: one row per task attempt.
pub const TASKS_COLUMNS: &[(&str, ColumnKind)] = &[
    ("task", I),
    ("job", I),
    ("slot", I),
    ("attempt", I),
    ("tier", S),
    ("submit_ms", I),
    ("start_ms", I),
    ("end_ms", I),
    ("reason", S),
    ("wait_ms", I),
    ("run_ms", I),
    ("slowdown", F),
    ("bounded_slowdown", F),
];

/// The output tables of one run and their columns.
pub const RUN_TABLES: &[(&str, &[(&str, ColumnKind)])] = &[
    ("series", SERIES_COLUMNS),
    ("nodes", NODES_COLUMNS),
    ("pools", POOLS_COLUMNS),
    ("tasks", TASKS_COLUMNS),
];

/// The CSV header line of a table (column names, comma-separated, with the newline).
pub fn header_line(cols: &[(&str, ColumnKind)]) -> String {
    let mut s = cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",");
    s.push('\n');
    s
}

/// A CSV file as rows of fields (the simulator's CSVs never quote: names hold no commas).
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    pub fn read(path: &Path) -> Result<CsvTable, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))?;
        Ok(CsvTable::parse(&text))
    }

    pub fn parse(text: &str) -> CsvTable {
        let mut lines = text.lines();
        let split = |l: &str| l.split(',').map(str::to_string).collect::<Vec<_>>();
        let header = lines.next().map(split).unwrap_or_default();
        let rows = lines.filter(|l| !l.is_empty()).map(split).collect();
        CsvTable { header, rows }
    }

    /// The index of a column.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// Writes `series.parquet`, `nodes.parquet`, `pools.parquet` and `tasks.parquet` from the CSVs
/// in `dir`.
#[cfg(feature = "parquet")]
pub fn write_run_parquet(dir: &Path) -> Result<(), SimError> {
    for (name, cols) in RUN_TABLES {
        let csv = dir.join(format!("{name}.csv"));
        // A table the run did not write (`tasks` with `metrics.per_task = false`) gets no copy.
        if !csv.exists() {
            continue;
        }
        let t = CsvTable::read(&csv)?;
        write_parquet(&dir.join(format!("{name}.parquet")), cols, &t)?;
    }
    Ok(())
}

#[cfg(feature = "parquet")]
fn pq_err(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `t` as a Parquet file (one row group, snappy, every column optional) with the given
/// column types, in the order of `cols`; a column missing from the CSV is an error.
#[cfg(feature = "parquet")]
pub fn write_parquet(
    path: &Path,
    cols: &[(&str, ColumnKind)],
    t: &CsvTable,
) -> Result<(), SimError> {
    use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, Type as Physical};
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;
    use std::sync::Arc;

    let mut fields = Vec::with_capacity(cols.len());
    let mut index = Vec::with_capacity(cols.len());
    for (name, kind) in cols {
        let i = t
            .col(name)
            .ok_or_else(|| pq_err(path, format!("the CSV has no column `{name}`")))?;
        index.push(i);
        let b = match kind {
            I => Type::primitive_type_builder(name, Physical::INT64),
            F => Type::primitive_type_builder(name, Physical::DOUBLE),
            S => Type::primitive_type_builder(name, Physical::BYTE_ARRAY)
                .with_logical_type(Some(LogicalType::String))
                .with_converted_type(ConvertedType::UTF8),
        };
        let f = b
            .with_repetition(Repetition::OPTIONAL)
            .build()
            .map_err(|e| pq_err(path, e))?;
        fields.push(Arc::new(f));
    }
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .map_err(|e| pq_err(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("berth-sim".to_string())
        .build();
    let file = std::fs::File::create(path).map_err(|e| SimError::io(path, e))?;
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
        .map_err(|e| pq_err(path, e))?;
    let mut rg = w.next_row_group().map_err(|e| pq_err(path, e))?;
    for ((name, kind), &ci) in cols.iter().zip(&index) {
        let mut col = rg
            .next_column()
            .map_err(|e| pq_err(path, e))?
            .ok_or_else(|| pq_err(path, "fewer column writers than columns"))?;
        let mut def = Vec::with_capacity(t.rows.len());
        let bad = |line: usize, v: &str| {
            pq_err(
                path,
                format!("row {line}: column `{name}`: `{v}` is not a {kind:?}"),
            )
        };
        match kind {
            I => {
                let mut vals = Vec::new();
                for (n, r) in t.rows.iter().enumerate() {
                    let v = cell(r, ci);
                    if v.is_empty() {
                        def.push(0);
                    } else {
                        def.push(1);
                        vals.push(v.parse::<i64>().map_err(|_| bad(n + 2, v))?);
                    }
                }
                col.typed::<Int64Type>()
                    .write_batch(&vals, Some(&def), None)
                    .map_err(|e| pq_err(path, e))?;
            }
            F => {
                let mut vals = Vec::new();
                for (n, r) in t.rows.iter().enumerate() {
                    let v = cell(r, ci);
                    if v.is_empty() {
                        def.push(0);
                    } else {
                        def.push(1);
                        vals.push(v.parse::<f64>().map_err(|_| bad(n + 2, v))?);
                    }
                }
                col.typed::<DoubleType>()
                    .write_batch(&vals, Some(&def), None)
                    .map_err(|e| pq_err(path, e))?;
            }
            S => {
                let mut vals: Vec<ByteArray> = Vec::new();
                for r in &t.rows {
                    let v = cell(r, ci);
                    if v.is_empty() {
                        def.push(0);
                    } else {
                        def.push(1);
                        vals.push(ByteArray::from(v));
                    }
                }
                col.typed::<ByteArrayType>()
                    .write_batch(&vals, Some(&def), None)
                    .map_err(|e| pq_err(path, e))?;
            }
        }
        col.close().map_err(|e| pq_err(path, e))?;
    }
    rg.close().map_err(|e| pq_err(path, e))?;
    w.close().map_err(|e| pq_err(path, e))?;
    Ok(())
}

#[cfg(feature = "parquet")]
fn cell(r: &[String], i: usize) -> &str {
    r.get(i).map(String::as_str).unwrap_or("")
}

/// Reads a Parquet file back as a header and rows of text fields, nulls as empty strings,
/// integers in decimal, doubles as Rust prints them (what the tests compare with the CSV).
#[cfg(feature = "parquet")]
pub fn read_parquet(path: &Path) -> Result<CsvTable, SimError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let file = std::fs::File::open(path).map_err(|e| SimError::io(path, e))?;
    let r = SerializedFileReader::new(file).map_err(|e| pq_err(path, e))?;
    let header = r
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut rows = Vec::new();
    for row in r.get_row_iter(None).map_err(|e| pq_err(path, e))? {
        let row = row.map_err(|e| pq_err(path, e))?;
        let fields = row
            .get_column_iter()
            .map(|(_, f)| match f {
                Field::Null => String::new(),
                Field::Long(v) => v.to_string(),
                Field::Double(v) => v.to_string(),
                Field::Str(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        rows.push(fields);
    }
    Ok(CsvTable { header, rows })
}

#[cfg(test)]
mod columns_tests {
    use super::*;

    #[test]
    fn series_and_pools_columns_are_the_pool_figures() {
        fn names(cols: &[(&'static str, ColumnKind)]) -> Vec<&'static str> {
            cols.iter().map(|(n, _)| *n).collect()
        }
        let figures = crate::metrics::PoolFigures::NAMES.to_vec();
        assert_eq!(names(&SERIES_COLUMNS[1..14]), figures);
        assert_eq!(names(&POOLS_COLUMNS[2..]), figures);
        let f = crate::metrics::PoolFigures::from_values(std::array::from_fn(|i| i as u64));
        assert_eq!(f.values(), std::array::from_fn::<u64, 13, _>(|i| i as u64));
        assert_eq!(f.csv(), "0,1,2,3,4,5,6,7,8,9,10,11,12");
    }
}
