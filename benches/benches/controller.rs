//! Controller step throughput (events per second): a recorded event stream (see
//! `berth_benches::stream`: submissions, starts, exits with retries, service kills, a node loss
//! and its replacement, ticks) replayed into a fresh `Controller` through `Controller::step`.
//! Building the controller and copying the stream are outside the timing.
//!
//! `cargo bench -p berth-benches --bench controller`

use berth_benches::stream::{record, StreamSpec};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("controller_step");
    g.sample_size(10);
    // (jobs, nodes, schedule_interval_ms): a pass per step on 100 and 1,000 nodes, and passes
    // batched once a second (as the Alibaba 2017 scenario runs) on 1,000 nodes.
    for (jobs, nodes, interval) in [
        (1_000usize, 100usize, 0u64),
        (2_000, 1_000, 0),
        (2_000, 1_000, 1_000),
    ] {
        let rec = record(StreamSpec {
            jobs,
            nodes,
            seed: 42,
            schedule_interval_ms: interval,
        });
        let name = match interval {
            0 => format!("{jobs}_jobs_{nodes}_nodes"),
            ms => format!("{jobs}_jobs_{nodes}_nodes_pass_every_{ms}_ms"),
        };
        // The stream is only worth timing if a replay makes the recorded decisions.
        let mut check = rec.controller();
        assert_eq!(
            rec.replay(&mut check, rec.events.clone()),
            rec.commands,
            "a replay of the recorded stream must give the recorded commands"
        );
        eprintln!(
            "controller_step/{name}: {} events, {} commands, {} launches; {:?}",
            rec.events.len(),
            rec.commands,
            rec.launches,
            rec.kinds()
        );
        g.throughput(Throughput::Elements(rec.events.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || (rec.controller(), rec.events.clone()),
                |(mut ctl, events)| black_box(rec.replay(&mut ctl, events)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
