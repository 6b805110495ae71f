//! Running a good_lp model on HiGHS with what good_lp does not expose: the MIP dual bound, the
//! model status, a warm start set on the raw model, and the options that make a run
//! reproducible (one thread, a fixed seed).
//!
//! Determinism: HiGHS with `threads = 1` and a fixed `random_seed` is deterministic for a given
//! model, except where a wall-clock `time_limit` stops it: then the incumbent depends on the
//! machine's speed. `node_limit` (HiGHS `mip_max_nodes`) is a work limit that does not.

use good_lp::solvers::highs::HighsProblem;
use good_lp::{ProblemVariables, Variable, VariableDefinition};
use highs::{HighsModelStatus, HighsSolutionStatus};

/// good_lp's variables with their column numbers: good_lp numbers columns in the order variables
/// are added but keeps `Variable::index` private, and HiGHS' warm start and solution are
/// per column.
pub(crate) struct Columns {
    vars: ProblemVariables,
    index: ColumnIndex,
}

/// Column number of each variable.
// Lookups only: the map is never iterated, so its order cannot reach a decision.
#[allow(clippy::disallowed_types)]
pub(crate) struct ColumnIndex(std::collections::HashMap<Variable, usize>); // tidy: lookup only

impl ColumnIndex {
    pub fn of<V: std::borrow::Borrow<Variable>>(&self, v: V) -> usize {
        self.0[v.borrow()]
    }
}

impl Columns {
    #[allow(clippy::disallowed_types)]
    pub fn new() -> Self {
        Columns {
            vars: ProblemVariables::new(),
            index: ColumnIndex(std::collections::HashMap::new()), // tidy: lookup only
        }
    }

    pub fn add(&mut self, def: VariableDefinition) -> Variable {
        let i = self.vars.len();
        let v = self.vars.add(def);
        self.index.0.insert(v, i);
        v
    }

    pub fn into_parts(self) -> (ProblemVariables, ColumnIndex) {
        (self.vars, self.index)
    }
}

/// Options of one run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunOptions {
    pub time_limit_s: f64,
    pub mip_rel_gap: f64,
    pub threads: u32,
    pub node_limit: Option<u64>,
    pub seed: i32,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunStatus {
    /// Proved optimal within `mip_rel_gap`.
    Optimal,
    /// Stopped by the time or node limit with an incumbent.
    Limit,
    /// Stopped without any feasible solution.
    NoSolution,
    /// The model is infeasible.
    Infeasible,
    /// HiGHS reported an error.
    Error,
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub(crate) struct RunResult {
    pub status: RunStatus,
    /// Objective of the incumbent (when there is one). Callers recompute the objective of the
    /// plan they build; this is HiGHS' own figure, checked by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub objective: f64,
    /// The best proven bound on the objective (a minimisation: objective >= bound).
    pub dual_bound: f64,
    /// Column values in good_lp's variable order (empty without an incumbent).
    pub values: Vec<f64>,
    /// HiGHS' message when `status == Error`.
    pub message: String,
}

/// Solves `problem` (a minimisation) with `options`, warm-started from `warm` (one value per
/// column in good_lp's variable order) when given.
pub(crate) fn run(problem: HighsProblem, options: &RunOptions, warm: Option<&[f64]>) -> RunResult {
    let fail = |status: RunStatus, message: String| RunResult {
        status,
        objective: f64::NAN,
        dual_bound: f64::NEG_INFINITY,
        values: Vec::new(),
        message,
    };
    let mut model = match problem.try_into_inner() {
        Ok(m) => m,
        Err(e) => return fail(RunStatus::Error, format!("{e:?}")),
    };
    let threads = i32::try_from(options.threads.max(1)).unwrap_or(1);
    let mut set = vec![
        model
            .try_set_option("time_limit", options.time_limit_s.max(0.0))
            .is_ok(),
        model
            .try_set_option("mip_rel_gap", options.mip_rel_gap.max(0.0))
            .is_ok(),
        model.try_set_option("threads", threads).is_ok(),
        model.try_set_option("random_seed", options.seed).is_ok(),
    ];
    if let Some(n) = options.node_limit {
        set.push(
            model
                .try_set_option("mip_max_nodes", i32::try_from(n).unwrap_or(i32::MAX))
                .is_ok(),
        );
    }
    if set.iter().any(|ok| !ok) {
        return fail(RunStatus::Error, "HiGHS refused an option".to_string());
    }
    if let Some(w) = warm {
        if model.try_set_solution(Some(w), None, None, None).is_err() {
            return fail(
                RunStatus::Error,
                format!("warm start of {} values refused", w.len()),
            );
        }
    }
    let solved = match model.try_solve() {
        Ok(s) => s,
        Err(e) => return fail(RunStatus::Error, format!("{e:?}")),
    };
    let model_status = solved.status();
    let has_incumbent = solved.primal_solution_status() == HighsSolutionStatus::Feasible;
    let status = match model_status {
        HighsModelStatus::Optimal => RunStatus::Optimal,
        HighsModelStatus::Infeasible => return fail(RunStatus::Infeasible, String::new()),
        HighsModelStatus::ReachedTimeLimit
        | HighsModelStatus::ReachedIterationLimit
        | HighsModelStatus::ReachedSolutionLimit
        | HighsModelStatus::ReachedInterrupt
        | HighsModelStatus::ReachedMemoryLimit
        | HighsModelStatus::ObjectiveBound
        | HighsModelStatus::ObjectiveTarget
        | HighsModelStatus::Unknown => RunStatus::Limit,
        other => return fail(RunStatus::Error, format!("model status {other:?}")),
    };
    if !has_incumbent {
        return fail(
            RunStatus::NoSolution,
            format!("model status {model_status:?}"),
        );
    }
    let objective = solved.objective_value();
    // For a pure LP HiGHS has no MIP dual bound; an optimal LP is its own bound.
    let dual_bound = match solved.double_info_value(c"mip_dual_bound") {
        Ok(b) if b.is_finite() => b,
        _ if status == RunStatus::Optimal => objective,
        _ => f64::NEG_INFINITY,
    };
    let values = solved.get_solution().columns().to_vec();
    RunResult {
        status,
        objective,
        dual_bound: dual_bound.min(objective),
        values,
        message: String::new(),
    }
}

/// Rounds a value HiGHS returned for an integer column, refusing one that is not within
/// `1e-6` of an integer (a wrapper once returned fractional values at a time limit).
pub(crate) fn integral(v: f64) -> Option<i64> {
    let r = v.round();
    ((v - r).abs() <= 1e-6 && r.is_finite()).then_some(r as i64)
}

/// Relative gap between an incumbent and a bound, HiGHS' definition:
/// `|objective - bound| / max(|objective|, tiny)`; 0 when they are equal.
pub fn relative_gap(objective: f64, bound: f64) -> f64 {
    if !objective.is_finite() || !bound.is_finite() {
        return f64::INFINITY;
    }
    let diff = (objective - bound).max(0.0);
    if diff <= 1e-12 {
        return 0.0;
    }
    diff / objective.abs().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use good_lp::{highs, variable, SolverModel};

    fn opts() -> RunOptions {
        RunOptions {
            time_limit_s: 30.0,
            mip_rel_gap: 0.0,
            threads: 1,
            node_limit: None,
            seed: 0,
        }
    }

    #[test]
    fn knapsack_reports_bound_and_values() {
        // max 5a + 4b + 3c s.t. 2a + 3b + c <= 5 (binary) -> a = c = 1 ... b: 2+3 = 5 -> a,b: 9;
        // a,c: 8; a,b,c: 6 > 5. Optimum 9 (a, b). As a minimisation of the negation: -9.
        let mut cols = Columns::new();
        let a = cols.add(variable().binary());
        let b = cols.add(variable().binary());
        let c = cols.add(variable().binary());
        let (vars, idx) = cols.into_parts();
        assert_eq!((idx.of(a), idx.of(b), idx.of(c)), (0, 1, 2));
        let mut p = vars.minimise(-5 * a - 4 * b - 3 * c).using(highs);
        p.add_constraint((2 * a + 3 * b + c).leq(5));
        let r = run(p, &opts(), None);
        assert_eq!(r.status, RunStatus::Optimal);
        assert!((r.objective + 9.0).abs() < 1e-9, "{}", r.objective);
        assert!(r.dual_bound <= r.objective + 1e-9);
        assert_eq!(
            r.values.iter().map(|&v| integral(v)).collect::<Vec<_>>(),
            [Some(1), Some(1), Some(0)]
        );
        assert_eq!(relative_gap(r.objective, r.dual_bound), 0.0);
    }

    #[test]
    fn warm_start_of_wrong_length_is_an_error() {
        let mut cols = Columns::new();
        let a = cols.add(variable().binary());
        let (vars, _) = cols.into_parts();
        let p = vars.minimise(a).using(highs);
        let r = run(p, &opts(), Some(&[0.0, 1.0]));
        assert_eq!(r.status, RunStatus::Error);
    }

    #[test]
    fn infeasible_is_reported() {
        let mut cols = Columns::new();
        let a = cols.add(variable().integer().min(0).max(1));
        let (vars, _) = cols.into_parts();
        let mut p = vars.minimise(a).using(highs);
        p.add_constraint((2 * a).eq(1));
        let r = run(p, &opts(), None);
        assert!(
            matches!(r.status, RunStatus::Infeasible | RunStatus::NoSolution),
            "{:?}",
            r.status
        );
    }

    #[test]
    fn integral_refuses_fractions() {
        assert_eq!(integral(2.0000000001), Some(2));
        assert_eq!(integral(-0.0), Some(0));
        assert_eq!(integral(0.5), None);
        assert_eq!(integral(f64::NAN), None);
    }

    #[test]
    fn gap_definition() {
        assert_eq!(relative_gap(10.0, 10.0), 0.0);
        assert!((relative_gap(10.0, 9.0) - 0.1).abs() < 1e-12);
        assert_eq!(relative_gap(10.0, f64::NEG_INFINITY), f64::INFINITY);
    }
}
