//! The regression gate Berth's CI runs (`berth-gate check`, after the tests in `.ci/run`).
//!
//! Two kinds of figure, neither of which can flake on a noisy shared machine:
//! - **quality**: deterministic results of fixed inputs on fixed seeds: GPU allocation per
//!   policy in the fragmentation experiment, nodes used over the lower bound on fixed packing
//!   instances, SLA figures of fixed simulation scenarios. Compared exactly: any move the bad
//!   way fails; a move the good way passes and asks for a baseline update.
//! - **instructions**: instruction counts of hot paths under `valgrind --tool=callgrind`, each
//!   measured as (setup + work) − (setup alone) so input building does not count. Repeatable
//!   for one binary and input whatever the machine's load; they change with the compiler, so
//!   the baseline records the toolchain. Compared with a tolerance (default 3 %).
//!
//! Figures that need `../shared/traces` are skipped, saying so, when the traces are absent.

use berth_solver::experiment::{self, ExperimentConfig};
use berth_solver::{bounds, ClusterView, Placer, Policy, TaskShape};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Which way is better: the simulator gate's notion, shared.
pub use berth_sim::gate::Better;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Quality,
    Instructions,
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    pub better: Better,
    pub kind: Kind,
}

/// The committed baseline (`benches/baseline.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// `rustc --version` of the build that measured the instruction counts.
    pub toolchain: String,
    pub figures: BTreeMap<String, Figure>,
}

/// The fixed packing instances: (name, cluster size, tasks, seed).
const PACKING: [(&str, usize, usize, u64); 2] =
    [("mix400", 400, 400, 1), ("mix1500", 1200, 1500, 2)];
/// Policies whose packing quality is gated.
const PACKING_POLICIES: [&str; 4] = ["first_fit", "best_fit", "dot_product", "berth"];
/// Policies whose fragmentation-experiment allocation is gated.
const FRAG_POLICIES: [&str; 4] = ["best_fit", "gpu_packing", "fgd", "berth"];

/// Every quality figure, by name. Trace-dependent ones only when `openb` is given (the openb
/// folder).
pub fn quality_figures(openb: Option<&std::path::Path>) -> BTreeMap<String, Figure> {
    let mut out = BTreeMap::new();
    let mut q = |name: String, value: f64, better: Better| {
        out.insert(
            name,
            Figure {
                value,
                better,
                kind: Kind::Quality,
            },
        );
    };

    // Packing: nodes used / lower bound, all tasks placed onto a big enough synthetic cluster.
    let shapes = crate::fixtures::shapes();
    for (name, nodes, tasks, seed) in PACKING {
        let spec = crate::fixtures::cluster(nodes);
        let reqs = crate::fixtures::requests(&shapes, tasks, seed);
        let mut demand: BTreeMap<usize, u64> = BTreeMap::new();
        for r in &reqs {
            let i = shapes
                .iter()
                .position(|s| *s == r.shape)
                .expect("a fixture shape");
            *demand.entry(i).or_default() += 1;
        }
        let demand: Vec<(TaskShape, u64)> = demand
            .into_iter()
            .map(|(i, n)| (shapes[i].clone(), n))
            .collect();
        let kinds = bounds::NodeKind::kinds_of_cluster(&spec);
        let lb = bounds::nodes_lower_bound(&demand, &kinds).nodes_min.max(1);
        for p in PACKING_POLICIES {
            let policy = Policy::preset(p).expect("preset");
            let mut view = ClusterView::new(&spec);
            let plan = berth_solver::place(&mut view, &reqs, &policy, &mut policy.rng())
                .expect("placement");
            let used: std::collections::BTreeSet<_> =
                plan.assignments.iter().map(|a| a.node).collect();
            q(
                format!("pack.{name}.{p}.nodes_over_bound"),
                used.len() as f64 / lb as f64,
                Better::Lower,
            );
            q(
                format!("pack.{name}.{p}.unplaced"),
                plan.unplaced.len() as f64,
                Better::Lower,
            );
        }
    }

    // Fragmentation experiment on a synthetic cluster (always) and on openb (with the trace).
    let cfg = ExperimentConfig::default();
    let synth_nodes = crate::fixtures::cluster(300);
    let synth_pods: Vec<TaskShape> = crate::fixtures::requests(&shapes, 2000, 3)
        .into_iter()
        .map(|r| r.shape)
        .collect();
    let mut frag = |set: &str, nodes: &berth_solver::ClusterSpec, pods: &[TaskShape]| {
        for p in FRAG_POLICIES {
            let policy = Policy::preset(p).expect("preset");
            let curve = experiment::run(nodes, pods, &policy, 42, &cfg).expect("experiment");
            for pct in [100, 130] {
                if let Some(pt) = curve.at(pct) {
                    q(
                        format!("frag.{set}.{p}.gpu_alloc_pct_at_{pct}"),
                        100.0 * pt.gpu_alloc_ratio,
                        Better::Higher,
                    );
                }
            }
        }
    };
    frag("synthetic", &synth_nodes, &synth_pods);
    if let Some(dir) = openb {
        let nodes = crate::fixtures::openb_nodes(&dir.join("openb_node_list_gpu_node.csv"));
        let pods = crate::fixtures::openb_pods(&dir.join("openb_pod_list_default.csv"));
        frag("openb", &nodes, &pods);
    }

    // The bundled simulation scenario's SLA figures.
    let s = berth_sim::Scenario::default_scenario();
    let r = berth_sim::run_scenario(&s, &mut |_| {}).expect("the default scenario runs");
    for (name, (v, def)) in berth_sim::gate::figures_of(&r) {
        q(format!("sim.default.{name}"), v, def.better);
    }
    out
}

/// The hot paths whose instruction counts are gated.
pub const HOT_PATHS: [&str; 5] = [
    "place_one_10k_best_fit",
    "place_one_10k_fgd",
    "place_batch_1500_berth",
    "frag_run_synthetic_fgd",
    "sim_default",
];

/// Prepared input of a hot path; `work` runs it.
pub struct Hot {
    work: Box<dyn FnMut()>,
}

impl Hot {
    pub fn run(&mut self) {
        (self.work)()
    }
}

/// Builds a hot path's input (the setup counted separately).
pub fn hot(name: &str) -> Option<Hot> {
    use berth_solver::{JobId, TaskId, TaskRequest};
    use rand_chacha::rand_core::SeedableRng;
    let one_decisions = |policy: &str| {
        let (view, types) = crate::fixtures::half_full(10_000);
        let mut placer = Placer::new(Policy::preset(policy).expect("preset"))
            .expect("policy")
            .with_typical_types(types);
        let shapes = crate::fixtures::shapes();
        Hot {
            work: Box::new(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
                // 100 decisions over the task mix, nothing applied: each sees the same view.
                for k in 0..100usize {
                    let r = TaskRequest::new(
                        TaskId(1 << 40),
                        JobId(1 << 40),
                        shapes[k % shapes.len()].clone(),
                    );
                    std::hint::black_box(placer.place_one(&view, &r, &mut rng).ok());
                }
            }),
        }
    };
    Some(match name {
        "place_one_10k_best_fit" => one_decisions("best_fit"),
        "place_one_10k_fgd" => one_decisions("fgd"),
        "place_batch_1500_berth" => {
            let spec = crate::fixtures::cluster(1200);
            let reqs = crate::fixtures::requests(&crate::fixtures::shapes(), 1500, 2);
            let policy = Policy::preset("berth").expect("preset");
            Hot {
                work: Box::new(move || {
                    let mut view = ClusterView::new(&spec);
                    std::hint::black_box(
                        berth_solver::place(&mut view, &reqs, &policy, &mut policy.rng())
                            .expect("placement"),
                    );
                }),
            }
        }
        "frag_run_synthetic_fgd" => {
            let nodes = crate::fixtures::cluster(300);
            let pods: Vec<TaskShape> =
                crate::fixtures::requests(&crate::fixtures::shapes(), 2000, 3)
                    .into_iter()
                    .map(|r| r.shape)
                    .collect();
            let policy = Policy::preset("fgd").expect("preset");
            let cfg = ExperimentConfig::default();
            Hot {
                work: Box::new(move || {
                    std::hint::black_box(
                        experiment::run(&nodes, &pods, &policy, 42, &cfg).expect("experiment"),
                    );
                }),
            }
        }
        "sim_default" => {
            let s = berth_sim::Scenario::default_scenario();
            Hot {
                work: Box::new(move || {
                    std::hint::black_box(
                        berth_sim::run_scenario(&s, &mut |_| {}).expect("the default scenario"),
                    );
                }),
            }
        }
        _ => return None,
    })
}

/// Reads the total instruction count from a callgrind output file.
pub fn callgrind_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Verdict on one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Same,
    /// Better: passes; update the baseline to lock the gain in.
    Better,
    /// Worse within the tolerance (instruction counts only).
    Within,
    Worse,
    /// In the baseline, not measured now (its trace is absent).
    Skipped,
    /// Measured, not in the baseline yet.
    New,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub figure: String,
    pub kind: Kind,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    pub delta_rel: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub instructions_tolerance: f64,
    pub baseline_toolchain: String,
    pub toolchain: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.verdict != Verdict::Worse)
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Berth regression gate: quality figures exact, instruction counts within {:.1} %",
            self.instructions_tolerance * 100.0
        );
        if self.baseline_toolchain != self.toolchain {
            let _ = writeln!(
                out,
                "note: baseline measured with `{}`, this run with `{}`; instruction counts move with the compiler",
                self.baseline_toolchain, self.toolchain
            );
        }
        let _ = writeln!(
            out,
            "\n| figure | kind | before | after | delta | verdict |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---|");
        for r in &self.rows {
            let f = |v: Option<f64>| match v {
                None => "-".to_string(),
                Some(v) if v.fract() == 0.0 => format!("{}", v as i64),
                Some(v) => format!("{v:.4}"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.figure,
                match r.kind {
                    Kind::Quality => "quality",
                    Kind::Instructions => "instructions",
                },
                f(r.baseline),
                f(r.current),
                r.delta_rel
                    .map_or("-".to_string(), |d| format!("{:+.2} %", d * 100.0)),
                match r.verdict {
                    Verdict::Same => "same",
                    Verdict::Better => "better (update the baseline)",
                    Verdict::Within => "within tolerance",
                    Verdict::Worse => "**WORSE**",
                    Verdict::Skipped => "skipped (trace absent)",
                    Verdict::New => "new (not in baseline)",
                },
            );
        }
        let worse = self
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Worse)
            .count();
        let _ = writeln!(
            out,
            "\n{}",
            if worse == 0 {
                "PASS".to_string()
            } else {
                format!("FAIL: {worse} figure(s) got worse")
            }
        );
        out
    }
}

/// Compares measured figures with the baseline.
pub fn compare(
    base: &Baseline,
    now: &BTreeMap<String, Figure>,
    toolchain: &str,
    instructions_tolerance: f64,
) -> Report {
    let mut names: Vec<&String> = base.figures.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    let rows = names
        .into_iter()
        .map(|name| {
            let b = base.figures.get(name);
            let c = now.get(name);
            let kind = c.or(b).map(|f| f.kind).expect("in one of the two");
            let (verdict, delta_rel) = match (b, c) {
                (Some(_), None) => (Verdict::Skipped, None),
                (None, Some(_)) => (Verdict::New, None),
                (Some(b), Some(c)) => {
                    let d = c.value - b.value;
                    let rel = (b.value != 0.0).then(|| d / b.value.abs());
                    let worse_by = match c.better {
                        Better::Lower => d,
                        Better::Higher => -d,
                    };
                    // JSON keeps a float to its last bit or one unit off: no change.
                    let eps = 1e-9 * b.value.abs().max(1.0);
                    let allowed = match kind {
                        Kind::Quality => eps,
                        Kind::Instructions => instructions_tolerance * b.value.abs(),
                    };
                    let v = if d.abs() <= eps {
                        Verdict::Same
                    } else if worse_by < 0.0 {
                        Verdict::Better
                    } else if worse_by <= allowed {
                        Verdict::Within
                    } else {
                        Verdict::Worse
                    };
                    (v, rel)
                }
                (None, None) => unreachable!("a name comes from one of the two maps"),
            };
            Row {
                figure: name.clone(),
                kind,
                baseline: b.map(|f| f.value),
                current: c.map(|f| f.value),
                delta_rel,
                verdict,
            }
        })
        .collect();
    Report {
        instructions_tolerance,
        baseline_toolchain: base.toolchain.clone(),
        toolchain: toolchain.to_string(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(value: f64, better: Better, kind: Kind) -> Figure {
        Figure {
            value,
            better,
            kind,
        }
    }

    #[test]
    fn compare_judges_each_kind_and_direction() {
        let base = Baseline {
            toolchain: "t".into(),
            figures: [
                ("a".to_string(), fig(0.9, Better::Higher, Kind::Quality)),
                ("b".to_string(), fig(1.10, Better::Lower, Kind::Quality)),
                (
                    "c".to_string(),
                    fig(1000.0, Better::Lower, Kind::Instructions),
                ),
                (
                    "d".to_string(),
                    fig(1000.0, Better::Lower, Kind::Instructions),
                ),
                ("e".to_string(), fig(5.0, Better::Lower, Kind::Quality)),
            ]
            .into_iter()
            .collect(),
        };
        let now: BTreeMap<String, Figure> = [
            ("a".to_string(), fig(0.8999, Better::Higher, Kind::Quality)),
            ("b".to_string(), fig(1.05, Better::Lower, Kind::Quality)),
            (
                "c".to_string(),
                fig(1020.0, Better::Lower, Kind::Instructions),
            ),
            (
                "d".to_string(),
                fig(1040.0, Better::Lower, Kind::Instructions),
            ),
            ("f".to_string(), fig(1.0, Better::Lower, Kind::Quality)),
        ]
        .into_iter()
        .collect();
        let r = compare(&base, &now, "t", 0.03);
        let v: Vec<(&str, Verdict)> = r
            .rows
            .iter()
            .map(|r| (r.figure.as_str(), r.verdict))
            .collect();
        assert_eq!(
            v,
            [
                ("a", Verdict::Worse),
                ("b", Verdict::Better),
                ("c", Verdict::Within),
                ("d", Verdict::Worse),
                ("e", Verdict::Skipped),
                ("f", Verdict::New),
            ]
        );
        assert!(!r.passed());
        let md = r.to_markdown();
        assert!(
            md.contains("| d | instructions | 1000 | 1040 | +4.00 % | **WORSE** |"),
            "{md}"
        );
        assert!(md.contains("FAIL: 2 figure(s) got worse"));
    }

    #[test]
    fn callgrind_totals_are_read() {
        let text =
            "version: 1\ncmd: x\nevents: Ir\nfl=(1) a.rs\n0 5\nsummary: 123456\ntotals: 123456\n";
        assert_eq!(callgrind_total(text), Some(123_456));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn quality_figures_are_deterministic_and_plausible() {
        // Without the trace: packing, synthetic fragmentation, the default scenario.
        let a = quality_figures(None);
        let b = quality_figures(None);
        assert_eq!(a, b);
        let ff = a["pack.mix400.first_fit.nodes_over_bound"].value;
        assert!(ff >= 1.0, "a plan never beats the lower bound: {ff}");
        for (name, f) in &a {
            assert!(f.value.is_finite(), "{name}");
        }
        assert!(a.contains_key("frag.synthetic.fgd.gpu_alloc_pct_at_100"));
        assert!(a.keys().any(|k| k.starts_with("sim.default.wait_ms_p99.")));
    }
}
