//! `berth-gate`: the regression gate Berth's CI runs after the tests (see `benches/README.md`).
//!
//! ```text
//! berth-gate check [--baseline benches/baseline.json] [--tolerance 3%] [--update-baseline]
//!                  [--report-json FILE] [--no-instructions]
//! berth-gate figures            quality figures as JSON
//! berth-gate hot NAME [--setup-only]   one hot path, for callgrind
//! ```
//! Build it optimised: `cargo run --profile gate -p berth-benches --bin berth-gate -- check`.

use berth_benches::gate::{self, Baseline, Figure, Kind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  berth-gate check [--baseline FILE] [--tolerance 3%] [--update-baseline] [--report-json FILE] [--no-instructions]\n  \
         berth-gate figures\n  berth-gate hot NAME [--setup-only]\n\nhot paths: {}",
        gate::HOT_PATHS.join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("hot") => {
            let Some(name) = args.get(1) else {
                return usage();
            };
            let setup_only = args.iter().any(|a| a == "--setup-only");
            let Some(mut h) = gate::hot(name) else {
                eprintln!("unknown hot path `{name}`");
                return usage();
            };
            if !setup_only {
                h.run();
            }
            ExitCode::SUCCESS
        }
        Some("figures") => {
            let figs = gate::quality_figures(berth_benches::fixtures::openb_dir().as_deref());
            println!(
                "{}",
                serde_json::to_string_pretty(&figs).expect("figures serialise")
            );
            ExitCode::SUCCESS
        }
        Some("check") => match check(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        _ => usage(),
    }
}

struct CheckArgs {
    baseline: PathBuf,
    tolerance: f64,
    update: bool,
    report_json: Option<PathBuf>,
    instructions: bool,
}

fn parse_check(args: &[String]) -> Result<CheckArgs, String> {
    let mut a = CheckArgs {
        baseline: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/baseline.json")),
        tolerance: 0.03,
        update: false,
        report_json: None,
        instructions: true,
    };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match x.as_str() {
            "--baseline" => a.baseline = PathBuf::from(value("--baseline")?),
            "--tolerance" => {
                let t = value("--tolerance")?;
                let v = match t.strip_suffix('%') {
                    Some(p) => p.parse::<f64>().map(|v| v / 100.0),
                    None => t.parse::<f64>(),
                }
                .map_err(|_| format!("--tolerance `{t}`: expected 0.03 or 3%"))?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("--tolerance `{t}`: must be 0 or more"));
                }
                a.tolerance = v;
            }
            "--update-baseline" => a.update = true,
            "--report-json" => a.report_json = Some(PathBuf::from(value("--report-json")?)),
            "--no-instructions" => a.instructions = false,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn toolchain() -> String {
    Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Instructions of `berth-gate hot NAME [--setup-only]` under callgrind.
fn callgrind(exe: &Path, name: &str, setup_only: bool, dir: &Path) -> Result<u64, String> {
    let out = dir.join(format!(
        "callgrind.{name}{}.out",
        if setup_only { ".setup" } else { "" }
    ));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .arg("hot")
        .arg(name);
    if setup_only {
        cmd.arg("--setup-only");
    }
    let o = cmd
        .output()
        .map_err(|e| format!("running valgrind (is it installed?): {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "valgrind on hot path {name} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    gate::callgrind_total(&text).ok_or_else(|| format!("{}: no instruction total", out.display()))
}

fn check(args: &[String]) -> Result<ExitCode, String> {
    let a = parse_check(args)?;
    let openb = berth_benches::fixtures::openb_dir();
    if openb.is_none() {
        eprintln!(
            "note: ../shared/traces absent (or BERTH_TRACES_DIR unset): openb figures skipped"
        );
    }
    eprintln!("measuring quality figures …");
    let mut figs: BTreeMap<String, Figure> = gate::quality_figures(openb.as_deref());
    if a.instructions {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("berth-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for name in gate::HOT_PATHS {
            eprintln!("counting instructions of {name} …");
            let full = callgrind(&exe, name, false, &dir)?;
            let setup = callgrind(&exe, name, true, &dir)?;
            figs.insert(
                format!("instructions.{name}"),
                Figure {
                    value: full.saturating_sub(setup) as f64,
                    better: gate::Better::Lower,
                    kind: Kind::Instructions,
                },
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let tc = toolchain();
    if a.update {
        // Keep baseline figures this run could not measure (a trace absent here).
        let mut figures = match std::fs::read_to_string(&a.baseline) {
            Ok(text) => serde_json::from_str::<Baseline>(&text)
                .map(|b| b.figures)
                .unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        figures.extend(figs);
        let b = Baseline {
            toolchain: tc,
            figures,
        };
        let text = serde_json::to_string_pretty(&b).expect("baseline serialises") + "\n";
        std::fs::write(&a.baseline, text).map_err(|e| format!("{}: {e}", a.baseline.display()))?;
        println!(
            "wrote {} figures to {}; say why in the commit message",
            b.figures.len(),
            a.baseline.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text = std::fs::read_to_string(&a.baseline).map_err(|e| {
        format!(
            "{}: {e} (make one with --update-baseline)",
            a.baseline.display()
        )
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let mut base: Baseline = serde_path_to_error::deserialize(de)
        .map_err(|e| format!("{}: at `{}`: {}", a.baseline.display(), e.path(), e.inner()))?;
    if !a.instructions {
        base.figures.retain(|_, f| f.kind != Kind::Instructions);
    }
    let report = gate::compare(&base, &figs, &tc, a.tolerance);
    print!("{}", report.to_markdown());
    if let Some(p) = &a.report_json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
