//! Import throughput of each trace importer on the real shared traces (rows per second).
//!
//! Run: `cargo bench -p berth-benches --bench import` (add `-- --quick` for a short run).
//! Traces are looked up in `$BERTH_TRACES_DIR`, else `<workspace>/../shared/traces`; a trace
//! that is absent is reported and skipped.

use berth_traces::{alibaba_2017, alibaba_gpu, shared_traces_dir, swf, ImportOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Data lines of a file (non-blank, not a `;` comment, not the CSV header).
fn data_rows(path: &Path, has_header: bool) -> u64 {
    let text = std::fs::read_to_string(path).expect("readable trace");
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with(';'))
        .count() as u64;
    rows - has_header as u64
}

type Import = fn(&Path, &ImportOptions) -> u64;

fn bench_imports(c: &mut Criterion) {
    let Some(dir) = shared_traces_dir() else {
        eprintln!("SKIPPED: shared traces not found (set BERTH_TRACES_DIR or put them in ../shared/traces)");
        return;
    };
    let cases: [(&str, &str, bool, Import); 4] = [
        (
            "openb_pods_default",
            "alibaba-cluster-trace-gpu-v2023/openb_pod_list_default.csv",
            true,
            |p, o| alibaba_gpu::import_pods(p, o).expect("import").jobs.len() as u64,
        ),
        (
            "alibaba_2017_batch_task",
            "alibaba-cluster-trace-v2017/batch_task.csv",
            true,
            |p, o| alibaba_2017::import(p, o).expect("import").task_groups(),
        ),
        (
            "swf_wagap_2013",
            "metacentrum-alea/wagap-2013.swf",
            false,
            |p, o| swf::import(p, o).expect("import").jobs.len() as u64,
        ),
        ("swf_hpc2n", "metacentrum-alea/hpc2n.swf", false, |p, o| {
            swf::import(p, o).expect("import").jobs.len() as u64
        }),
    ];
    let opts = ImportOptions::default();
    let mut group = c.benchmark_group("import");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, rel, header, import) in cases {
        let path: PathBuf = dir.join(rel);
        if !path.is_file() {
            eprintln!("SKIPPED: {} not found", path.display());
            continue;
        }
        group.throughput(Throughput::Elements(data_rows(&path, header)));
        group.bench_function(name, |b| {
            b.iter(|| black_box(import(black_box(&path), &opts)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_imports);
criterion_main!(benches);
