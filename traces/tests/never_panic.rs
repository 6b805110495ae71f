//! Importers never panic: arbitrary bytes, and valid lines with arbitrary mutations, give
//! `Ok` or `Err`, and with `skip_bad` every line is either imported or counted.

use berth_traces::{alibaba_2017, alibaba_gpu, swf, ImportOptions, TraceError, Workload};
use proptest::prelude::*;
use std::io::Cursor;

const POD_HEADER: &str =
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n";
const POD_LINES: [&str; 3] = [
    "openb-pod-0001,6000,12288,1,460,,LS,Running,427061,12902960,427061",
    "p,12000,24576,8,1000,V100M16|V100M32,BE,Pending,10,20,",
    "q,500,1024,0,0,,Burstable,Succeeded,0,5,1",
];
const NODE_HEADER: &str = "sn,cpu_milli,memory_mib,gpu,model\n";
const NODE_LINES: [&str; 2] = ["openb-node-0000,64000,262144,2,P100", "n,32000,262144,0,"];
const BATCH_HEADER: &str = "task_create_time, task_end_time, job_id, task_id,number_of_instances, status, number_of_cpus_requested_per_instance_in_the_task,normalized_memory_requested_per_instance_in_the_task\r\n";
const BATCH_LINES: [&str; 3] = [
    "6459,6524,3,4,15740,Terminated,50,0.007956928",
    "6036,6046,4,7,393,Waiting,,",
    "-60,-55,6168,37197,1,Failed,50,0.00406906",
];
const SWF_LINES: [&str; 3] = [
    "    1        0 308434  31405   30  31405    -1   30  37980    -1  1   1   1  -1 -1  1 -1 -1",
    "; UnixStartTime: 1027839845",
    "0 1356996147 0 56011 64 1 1024 64 86400 68719476736 1 62 1 1 -1 1 1 1 {1241,1241} q_1d 1:ppn=64:x86_64",
];

type Importer = fn(Vec<u8>, &ImportOptions) -> Result<Workload, TraceError>;

fn pods(b: Vec<u8>, o: &ImportOptions) -> Result<Workload, TraceError> {
    alibaba_gpu::import_pods_from(Cursor::new(b), "p.csv", o)
}
fn nodes(b: Vec<u8>, o: &ImportOptions) -> Result<Workload, TraceError> {
    alibaba_gpu::import_nodes_from(Cursor::new(b), "n.csv", o).map(with_cluster)
}
fn batch(b: Vec<u8>, o: &ImportOptions) -> Result<Workload, TraceError> {
    alibaba_2017::import_from(Cursor::new(b), "b.csv", o)
}
fn swf_jobs(b: Vec<u8>, o: &ImportOptions) -> Result<Workload, TraceError> {
    swf::import_from(Cursor::new(b), "s.swf", o)
}
fn machines(b: Vec<u8>, o: &ImportOptions) -> Result<Workload, TraceError> {
    swf::import_machines_from(Cursor::new(b), "m", o).map(with_cluster)
}
fn with_cluster((c, skipped): (berth_solver::ClusterSpec, berth_traces::Skipped)) -> Workload {
    let mut w = Workload {
        cluster: Some(c),
        ..Workload::default()
    };
    w.set_skipped(skipped);
    w
}

const IMPORTERS: [Importer; 5] = [pods, nodes, batch, swf_jobs, machines];

/// One edit of a line: replace, insert or delete a character, or cut the line.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Characters that matter to the parsers, plus any character.
    let ch = prop_oneof![
        prop::sample::select(vec![
            ',', ' ', '\t', '-', '.', '|', '{', '}', ';', '0', '9', 'e', '\r', '\n'
        ]),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(line: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = line.chars().collect();
    for e in edits {
        let n = chars.len();
        match *e {
            Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
            Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
            Edit::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            Edit::Truncate(i) => chars.truncate(i % (n + 1)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn check_all(bytes: &[u8]) {
    for imp in IMPORTERS {
        let _ = imp(bytes.to_vec(), &ImportOptions::default());
        if let Ok(w) = imp(bytes.to_vec(), &ImportOptions::skipping_bad_lines()) {
            assert!(w.first_errors.len() as u64 <= w.skipped_lines);
            assert!(w.first_errors.len() <= 10);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_all(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(which in 0usize..3, bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let header = [POD_HEADER, NODE_HEADER, BATCH_HEADER][which];
        let mut all = header.as_bytes().to_vec();
        all.extend_from_slice(&bytes);
        check_all(&all);
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        which in 0usize..4,
        picks in prop::collection::vec((0usize..3, prop::collection::vec(edit(), 0..4)), 1..6),
    ) {
        let (header, lines): (&str, &[&str]) = match which {
            0 => (POD_HEADER, &POD_LINES),
            1 => (NODE_HEADER, &NODE_LINES),
            2 => (BATCH_HEADER, &BATCH_LINES),
            _ => ("", &SWF_LINES),
        };
        let mut text = header.to_string();
        for (i, edits) in &picks {
            text.push_str(&apply(lines[i % lines.len()], edits));
            text.push('\n');
        }
        check_all(text.as_bytes());
        // Under skip_bad the import succeeds (only lines were edited, the header is intact) and
        // every non-blank data line is either imported or counted as skipped.
        let data_lines = text[header.len()..]
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.trim().is_empty())
            .filter(|l| which != 3 || !l.trim_start().starts_with(';'))
            .count() as u64;
        let w = IMPORTERS[which](text.into_bytes(), &ImportOptions::skipping_bad_lines());
        prop_assert!(w.is_ok(), "{:?}", w.err().map(|e| e.to_string()));
        let w = w.unwrap();
        let imported = match which {
            1 => w.cluster.as_ref().map_or(0, |c| c.len() as u64),
            2 => w.task_groups(),
            _ => w.jobs.len() as u64,
        };
        prop_assert_eq!(imported + w.skipped_lines, data_lines);
    }

    #[test]
    fn gzip_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), cut in any::<usize>()) {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        let mut z = enc.finish().unwrap();
        let keep = cut % (z.len() + 1);
        z.truncate(keep.max(2));
        check_all(&z);
    }
}
