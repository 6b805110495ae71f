//! A seeded synthetic workload generator.
//!
//! A [`SyntheticSpec`] (TOML-friendly, unknown fields refused) describes arrivals, durations,
//! task shapes and the mix of services, GPU jobs and critical jobs; [`SyntheticSpec::generate`]
//! turns it into a [`Workload`]. One seed gives one workload, bit for bit: all randomness comes
//! from one `ChaCha8Rng` seeded with [`SyntheticSpec::seed`], drawn in a fixed order per job.
//!
//! ```toml
//! seed = 7
//! jobs = 5000                     # or horizon_ms = 86_400_000, or both (first reached wins)
//! service_fraction = 0.2
//! critical_fraction = 0.3
//! gpu_share = 0.25
//! arrivals = { kind = "diurnal", mean_rate_per_hour = 600, peak_hour = 14, amplitude = 0.5 }
//! duration = { median_ms = 600_000, sigma = 1.2 }
//! tasks_per_job = { kind = "uniform", min = 1, max = 8 }
//!
//! [[shapes]]
//! weight = 3
//! cpu_milli = 1000
//! mem_mib = 2048
//!
//! [[shapes]]
//! weight = 1
//! cpu_milli = 8000
//! mem_mib = 32768
//! gpu = { whole = 1 }
//! gpu_models = ["T4", "A10"]
//! ```
//!
//! Each job has one task group of `tasks_per_job` identical instances. Services run until
//! removed: their `duration_ms` is [`SyntheticSpec::service_lifetime_ms`], by default `None`
//! (unbounded) with outcome [`TraceOutcome::Unfinished`], as a service still up at the end of a
//! trace; batch jobs complete after a log-normal duration.

use crate::workload::{TaskGroup, TraceJob, TraceOutcome, WorkKind, Workload};
use berth_solver::spec::{parse, SpecError, SpecFormat};
use berth_solver::{GpuDemand, GpuModel, JobId, Resources, TaskShape, Tier};
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};

/// The most jobs one spec may ask for (bounds memory: a job is ~200 bytes).
pub const SYNTHETIC_JOBS_MAX: u64 = 10_000_000;

/// Jobs generated when neither `jobs` nor `horizon_ms` is given.
pub const SYNTHETIC_JOBS_DEFAULT: u64 = 1000;

/// The longest duration drawn (the log-normal's tail is cut here): 10 years.
pub const SYNTHETIC_DURATION_MS_MAX: u64 = 10 * 365 * 24 * 3_600_000;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Everything the generator needs. Every field has a default (given in its doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Seed of the ChaCha8 RNG. Default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Number of jobs. Default: 1000 when `horizon_ms` is not given either, else no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// Only arrivals before this time (ms) are kept. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_ms: Option<u64>,
    /// The arrival process. Default: Poisson, 60 jobs per hour.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Batch durations: log-normal. Default: median 10 min, sigma 1.
    #[serde(default)]
    pub duration: Durations,
    /// What a task may look like, drawn by weight. Default: one shape, 1 core, 2 GiB.
    #[serde(default = "default_shapes")]
    pub shapes: Vec<WeightedShape>,
    /// How many tasks a job has. Default: 1.
    #[serde(default)]
    pub tasks_per_job: TasksPerJob,
    /// Probability that a job is a service (0..=1). Default 0.
    #[serde(default)]
    pub service_fraction: f64,
    /// Lifetime of a service in ms; `None` = unbounded (runs until the simulation ends).
    /// Default `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_lifetime_ms: Option<u64>,
    /// Probability that a job draws its shape among the GPU shapes (0..=1); the weights are then
    /// renormalised within the GPU or the CPU-only shapes. `None` = draw among all shapes by
    /// weight. Default `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_share: Option<f64>,
    /// Probability that a job is in the critical tier (0..=1), else flex. Default 0.
    #[serde(default)]
    pub critical_fraction: f64,
}

/// How jobs arrive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrivals {
    /// A Poisson process: exponential gaps, `rate_per_hour` on average.
    Poisson { rate_per_hour: f64 },
    /// A Poisson process whose rate follows the day:
    /// `rate(t) = mean_rate_per_hour × (1 + amplitude × cos(2π (hour(t) − peak_hour) / 24))`,
    /// with `hour(t)` the hour of day (time 0 = midnight), `amplitude` in 0..=1. Drawn by
    /// thinning (Lewis and Shedler): candidates at the peak rate, each kept with probability
    /// `rate(t) / peak rate`.
    Diurnal {
        mean_rate_per_hour: f64,
        peak_hour: f64,
        amplitude: f64,
    },
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals::Poisson {
            rate_per_hour: 60.0,
        }
    }
}

impl Arrivals {
    /// The rate (per hour) at time `t_ms`.
    pub fn rate_per_hour_at(&self, t_ms: f64) -> f64 {
        match *self {
            Arrivals::Poisson { rate_per_hour } => rate_per_hour,
            Arrivals::Diurnal {
                mean_rate_per_hour,
                peak_hour,
                amplitude,
            } => {
                let hour = (t_ms / MS_PER_HOUR).rem_euclid(24.0);
                let phase = 2.0 * std::f64::consts::PI * (hour - peak_hour) / 24.0;
                mean_rate_per_hour * (1.0 + amplitude * phase.cos())
            }
        }
    }

    /// The long-run mean rate per hour.
    pub fn mean_rate_per_hour(&self) -> f64 {
        match *self {
            Arrivals::Poisson { rate_per_hour } => rate_per_hour,
            Arrivals::Diurnal {
                mean_rate_per_hour, ..
            } => mean_rate_per_hour,
        }
    }

    fn peak_rate_per_hour(&self) -> f64 {
        match *self {
            Arrivals::Poisson { rate_per_hour } => rate_per_hour,
            Arrivals::Diurnal {
                mean_rate_per_hour,
                amplitude,
                ..
            } => mean_rate_per_hour * (1.0 + amplitude),
        }
    }
}

/// Log-normal durations: `ln(duration)` is normal with mean `ln(median_ms)` and deviation
/// `sigma`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durations {
    pub median_ms: u64,
    pub sigma: f64,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            median_ms: 600_000,
            sigma: 1.0,
        }
    }
}

/// A task shape and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedShape {
    /// Relative weight (> 0).
    pub weight: u32,
    #[serde(default)]
    pub cpu_milli: u64,
    #[serde(default)]
    pub mem_mib: u64,
    /// GPU demand, e.g. `{ whole = 2 }` or `{ milli = 500 }`. Default none.
    #[serde(default, skip_serializing_if = "GpuDemand::is_none")]
    pub gpu: GpuDemand,
    /// Accepted GPU models; empty = any. Default empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_models: Vec<GpuModel>,
}

impl WeightedShape {
    pub fn shape(&self) -> TaskShape {
        TaskShape::new(Resources::new(self.cpu_milli, self.mem_mib, 0, 0))
            .with_gpu(self.gpu)
            .with_gpu_models(self.gpu_models.clone())
    }
}

/// The number of tasks of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TasksPerJob {
    /// Always `count`.
    Fixed { count: u32 },
    /// Uniform in `min..=max`.
    Uniform { min: u32, max: u32 },
    /// `count` with probability proportional to `weight`.
    Weighted { choices: Vec<WeightedCount> },
}

impl Default for TasksPerJob {
    fn default() -> Self {
        TasksPerJob::Fixed { count: 1 }
    }
}

/// One choice of [`TasksPerJob::Weighted`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCount {
    pub weight: u32,
    pub count: u32,
}

fn default_seed() -> u64 {
    1
}

fn default_shapes() -> Vec<WeightedShape> {
    vec![WeightedShape {
        weight: 1,
        cpu_milli: 1000,
        mem_mib: 2048,
        gpu: GpuDemand::None,
        gpu_models: Vec::new(),
    }]
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            seed: default_seed(),
            jobs: None,
            horizon_ms: None,
            arrivals: Arrivals::default(),
            duration: Durations::default(),
            shapes: default_shapes(),
            tasks_per_job: TasksPerJob::default(),
            service_fraction: 0.0,
            service_lifetime_ms: None,
            gpu_share: None,
            critical_fraction: 0.0,
        }
    }
}

fn probability(v: f64, path: &str) -> Result<(), SpecError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(SpecError::new(path, format!("must be in 0..=1, got {v}")))
    }
}

fn positive_rate(v: f64, path: &str) -> Result<(), SpecError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(SpecError::new(
            path,
            format!("must be a positive number, got {v}"),
        ))
    }
}

impl SyntheticSpec {
    /// Parses a TOML spec and validates it; errors name the field.
    pub fn from_toml(text: &str) -> Result<SyntheticSpec, SpecError> {
        let spec: SyntheticSpec = parse(text, SpecFormat::Toml)?;
        spec.validate()?;
        Ok(spec)
    }

    /// The job limit in force (see [`SyntheticSpec::jobs`]).
    pub fn jobs_limit(&self) -> Option<u64> {
        match (self.jobs, self.horizon_ms) {
            (None, None) => Some(SYNTHETIC_JOBS_DEFAULT),
            (j, _) => j,
        }
    }

    /// Checks ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self.arrivals {
            Arrivals::Poisson { rate_per_hour } => {
                positive_rate(rate_per_hour, "arrivals.rate_per_hour")?
            }
            Arrivals::Diurnal {
                mean_rate_per_hour,
                peak_hour,
                amplitude,
            } => {
                positive_rate(mean_rate_per_hour, "arrivals.mean_rate_per_hour")?;
                if !(0.0..24.0).contains(&peak_hour) {
                    return Err(SpecError::new(
                        "arrivals.peak_hour",
                        format!("must be in 0..24, got {peak_hour}"),
                    ));
                }
                probability(amplitude, "arrivals.amplitude")?;
            }
        }
        // Bound the expected number of jobs so a spec cannot exhaust memory.
        let expected = match (self.jobs_limit(), self.horizon_ms) {
            (Some(j), _) => j as f64,
            (None, Some(h)) => self.arrivals.mean_rate_per_hour() * h as f64 / MS_PER_HOUR,
            (None, None) => unreachable!("jobs_limit is Some when horizon_ms is None"),
        };
        if expected > SYNTHETIC_JOBS_MAX as f64 {
            let path = if self.jobs.is_some() {
                "jobs"
            } else {
                "horizon_ms"
            };
            return Err(SpecError::new(
                path,
                format!("about {expected:.0} jobs, more than {SYNTHETIC_JOBS_MAX}"),
            ));
        }
        if self.duration.median_ms == 0 {
            return Err(SpecError::new("duration.median_ms", "must be at least 1"));
        }
        if !(self.duration.sigma.is_finite() && (0.0..=10.0).contains(&self.duration.sigma)) {
            return Err(SpecError::new(
                "duration.sigma",
                format!("must be in 0..=10, got {}", self.duration.sigma),
            ));
        }
        if self.shapes.is_empty() {
            return Err(SpecError::new("shapes", "give at least one shape"));
        }
        for (i, s) in self.shapes.iter().enumerate() {
            if s.weight == 0 {
                return Err(SpecError::new(
                    format!("shapes[{i}].weight"),
                    "must be at least 1",
                ));
            }
            if s.cpu_milli == 0 && s.mem_mib == 0 && s.gpu.is_none() {
                return Err(SpecError::new(
                    format!("shapes[{i}]"),
                    "asks for nothing: give cpu_milli, mem_mib or gpu",
                ));
            }
            s.gpu
                .validate()
                .map_err(|m| SpecError::new(format!("shapes[{i}].gpu"), m))?;
            if !s.gpu_models.is_empty() && s.gpu.is_none() {
                return Err(SpecError::new(
                    format!("shapes[{i}].gpu_models"),
                    "given without a gpu demand",
                ));
            }
        }
        match &self.tasks_per_job {
            TasksPerJob::Fixed { count } if *count == 0 => {
                return Err(SpecError::new("tasks_per_job.count", "must be at least 1"));
            }
            TasksPerJob::Uniform { min, max } if *min == 0 || min > max => {
                return Err(SpecError::new(
                    "tasks_per_job",
                    format!("expected 1 <= min <= max, got {min} / {max}"),
                ));
            }
            TasksPerJob::Weighted { choices } => {
                if choices.is_empty() {
                    return Err(SpecError::new(
                        "tasks_per_job.choices",
                        "give at least one choice",
                    ));
                }
                for (i, c) in choices.iter().enumerate() {
                    if c.weight == 0 || c.count == 0 {
                        return Err(SpecError::new(
                            format!("tasks_per_job.choices[{i}]"),
                            "weight and count must be at least 1",
                        ));
                    }
                }
            }
            _ => {}
        }
        probability(self.service_fraction, "service_fraction")?;
        probability(self.critical_fraction, "critical_fraction")?;
        if self.service_lifetime_ms == Some(0) {
            return Err(SpecError::new(
                "service_lifetime_ms",
                "must be at least 1 when given",
            ));
        }
        if let Some(g) = self.gpu_share {
            probability(g, "gpu_share")?;
            let has_gpu = self.shapes.iter().any(|s| !s.gpu.is_none());
            let has_cpu = self.shapes.iter().any(|s| s.gpu.is_none());
            if g > 0.0 && !has_gpu {
                return Err(SpecError::new(
                    "gpu_share",
                    "is above 0 but no shape asks for a GPU",
                ));
            }
            if g < 1.0 && !has_cpu {
                return Err(SpecError::new(
                    "gpu_share",
                    "is below 1 but every shape asks for a GPU",
                ));
            }
        }
        Ok(())
    }

    /// Generates the workload. Deterministic: the same spec gives the same workload.
    pub fn generate(&self) -> Result<Workload, SpecError> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let shape_pick = ShapePicker::new(&self.shapes, self.gpu_share);
        let tasks_pick = match &self.tasks_per_job {
            TasksPerJob::Weighted { choices } => Some(
                WeightedIndex::new(choices.iter().map(|c| c.weight))
                    .expect("validated: weights >= 1"),
            ),
            _ => None,
        };
        let duration_dist =
            LogNormal::new((self.duration.median_ms as f64).ln(), self.duration.sigma)
                .expect("validated: finite sigma >= 0");
        let peak_per_ms = self.arrivals.peak_rate_per_hour() / MS_PER_HOUR;
        let gap = Exp::new(peak_per_ms).expect("validated: positive rate");
        let jobs_limit = self.jobs_limit();
        let horizon = self.horizon_ms.map(|h| h as f64);

        let mut jobs = Vec::new();
        let mut t_ms = 0.0f64;
        let mut i: u64 = 0;
        loop {
            if jobs_limit.is_some_and(|n| i >= n) {
                break;
            }
            // 1. Arrival: next candidate, thinned to the current rate.
            loop {
                t_ms += gap.sample(&mut rng);
                let keep =
                    self.arrivals.rate_per_hour_at(t_ms) / self.arrivals.peak_rate_per_hour();
                if rng.random::<f64>() < keep {
                    break;
                }
            }
            if horizon.is_some_and(|h| t_ms >= h) {
                break;
            }
            // 2..6: kind, tier, shape, tasks, duration, always in this order.
            let service = rng.random::<f64>() < self.service_fraction;
            let critical = rng.random::<f64>() < self.critical_fraction;
            let shape = shape_pick.pick(&mut rng);
            let tasks = match &self.tasks_per_job {
                TasksPerJob::Fixed { count } => *count,
                TasksPerJob::Uniform { min, max } => rng.random_range(*min..=*max),
                TasksPerJob::Weighted { choices } => {
                    choices[tasks_pick
                        .as_ref()
                        .expect("built for weighted")
                        .sample(&mut rng)]
                    .count
                }
            };
            let drawn_ms = duration_dist
                .sample(&mut rng)
                .round()
                .clamp(1.0, SYNTHETIC_DURATION_MS_MAX as f64) as u64;
            let (kind, duration_ms, outcome) = if service {
                let outcome = if self.service_lifetime_ms.is_some() {
                    TraceOutcome::Completed
                } else {
                    TraceOutcome::Unfinished
                };
                (WorkKind::Service, self.service_lifetime_ms, outcome)
            } else {
                (WorkKind::Batch, Some(drawn_ms), TraceOutcome::Completed)
            };
            jobs.push(TraceJob {
                id: JobId(i),
                name: format!("syn-{i}"),
                kind,
                tier: if critical { Tier::Critical } else { Tier::Flex },
                class: String::new(),
                gang: false,
                groups: vec![TaskGroup {
                    submit_ms: t_ms.round() as i64,
                    instances: tasks,
                    shape: self.shapes[shape].shape(),
                    duration_ms,
                    requested_runtime_ms: None,
                    outcome,
                }],
            });
            i += 1;
        }
        let mut w = Workload {
            source: format!("synthetic (seed {})", self.seed),
            jobs,
            ..Workload::default()
        };
        w.sort();
        Ok(w)
    }
}

/// Draws a shape index: first GPU or not (when `gpu_share` is set), then by weight.
struct ShapePicker {
    all: WeightedIndex<u32>,
    split: Option<GpuSplit>,
}

/// The shapes split into GPU and CPU-only ones, each side with its own weights.
struct GpuSplit {
    gpu_share: f64,
    gpu: Side,
    cpu: Side,
}

/// Shape indices and a weighted draw among them (`None` when the side is empty).
struct Side {
    ids: Vec<usize>,
    index: Option<WeightedIndex<u32>>,
}

impl Side {
    fn new(shapes: &[WeightedShape], ids: Vec<usize>) -> Side {
        let index = WeightedIndex::new(ids.iter().map(|&i| shapes[i].weight)).ok();
        Side { ids, index }
    }
}

impl ShapePicker {
    fn new(shapes: &[WeightedShape], gpu_share: Option<f64>) -> ShapePicker {
        let all =
            WeightedIndex::new(shapes.iter().map(|s| s.weight)).expect("validated: weights >= 1");
        let split = gpu_share.map(|gpu_share| {
            let (gpu, cpu): (Vec<usize>, Vec<usize>) =
                (0..shapes.len()).partition(|&i| !shapes[i].gpu.is_none());
            GpuSplit {
                gpu_share,
                gpu: Side::new(shapes, gpu),
                cpu: Side::new(shapes, cpu),
            }
        });
        ShapePicker { all, split }
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> usize {
        let Some(split) = &self.split else {
            return self.all.sample(rng);
        };
        let side = if rng.random::<f64>() < split.gpu_share {
            &split.gpu
        } else {
            &split.cpu
        };
        // validate() guarantees that a side with a non-zero chance has shapes.
        match &side.index {
            Some(index) => side.ids[index.sample(rng)],
            None => self.all.sample(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> SyntheticSpec {
        SyntheticSpec::from_toml(text).unwrap()
    }

    #[test]
    fn same_seed_same_workload_different_seed_different() {
        let s = spec("seed = 3\njobs = 500\nservice_fraction = 0.3\ntasks_per_job = { kind = \"uniform\", min = 1, max = 5 }\n");
        let a = s.generate().unwrap();
        let b = s.generate().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.jobs.len(), 500);
        let c = SyntheticSpec { seed: 4, ..s }.generate().unwrap();
        assert_ne!(a.jobs, c.jobs);
    }

    #[test]
    fn poisson_rate_and_lognormal_median_match_their_parameters() {
        // 20,000 arrivals at 600/h: the measured rate's relative error has deviation
        // 1/sqrt(20000) = 0.7 %; 4 % is over 5 deviations. The sample median of log-normal
        // durations (sigma 1) has a log-deviation of 1.2533 / sqrt(20000) = 0.9 %; 5 % is over 5.
        let s = spec("seed = 11\njobs = 20000\narrivals = { kind = \"poisson\", rate_per_hour = 600 }\nduration = { median_ms = 120000, sigma = 1.0 }\n");
        let w = s.generate().unwrap();
        let last_ms = w.jobs.last().unwrap().submit_ms() as f64;
        let rate = w.jobs.len() as f64 / (last_ms / MS_PER_HOUR);
        assert!((rate / 600.0 - 1.0).abs() < 0.04, "rate {rate}");
        let mut d: Vec<u64> = w
            .jobs
            .iter()
            .map(|j| j.groups[0].duration_ms.unwrap())
            .collect();
        d.sort_unstable();
        let median = d[d.len() / 2] as f64;
        assert!((median / 120_000.0 - 1.0).abs() < 0.05, "median {median}");
    }

    #[test]
    fn diurnal_arrivals_peak_at_the_peak_hour() {
        // 30 days at a mean of 200/h, amplitude 0.8, peak at 14:00. Expected per-hour rate at
        // 14:00 is 360, at 02:00 40; the mean over whole days is 200.
        let s = spec("seed = 5\nhorizon_ms = 2592000000\narrivals = { kind = \"diurnal\", mean_rate_per_hour = 200, peak_hour = 14, amplitude = 0.8 }\n");
        let w = s.generate().unwrap();
        let n = w.jobs.len() as f64;
        let expected = 200.0 * 24.0 * 30.0;
        assert!(
            (n / expected - 1.0).abs() < 0.03,
            "jobs {n}, expected about {expected}"
        );
        let mut per_hour = [0f64; 24];
        for j in &w.jobs {
            per_hour[((j.submit_ms() as f64 / MS_PER_HOUR) as usize) % 24] += 1.0;
        }
        // The count in hour h of the day, per day, estimates the rate averaged over that hour.
        // Its deviation is at most sqrt(40 × 30) / 30 / 40 = 2.9 % (at the trough); 10 % is
        // over 3 deviations.
        let at = |h: usize| per_hour[h] / 30.0;
        let rate = |h: usize| {
            (0..60)
                .map(|m| {
                    s.arrivals
                        .rate_per_hour_at((h as f64 + (m as f64 + 0.5) / 60.0) * MS_PER_HOUR)
                })
                .sum::<f64>()
                / 60.0
        };
        for h in [2usize, 8, 14, 20] {
            assert!(
                (at(h) / rate(h) - 1.0).abs() < 0.10,
                "hour {h}: {} vs {}",
                at(h),
                rate(h)
            );
        }
        assert!(at(14) > 5.0 * at(2));
    }

    #[test]
    fn shares_of_services_gpu_and_critical_follow_the_spec() {
        let s = spec(
            "seed = 9\njobs = 10000\nservice_fraction = 0.25\ncritical_fraction = 0.4\ngpu_share = 0.1\n\
             [[shapes]]\nweight = 5\ncpu_milli = 500\nmem_mib = 1024\n\
             [[shapes]]\nweight = 1\ncpu_milli = 4000\nmem_mib = 16384\ngpu = { whole = 2 }\ngpu_models = [\"T4\"]\n",
        );
        let w = s.generate().unwrap();
        let frac = |f: &dyn Fn(&TraceJob) -> bool| {
            w.jobs.iter().filter(|j| f(j)).count() as f64 / 10_000.0
        };
        // Deviations: sqrt(p(1-p)/n) <= 0.5 %; 2.5 % is 5 of them.
        assert!((frac(&|j| j.kind == WorkKind::Service) - 0.25).abs() < 0.025);
        assert!((frac(&|j| j.tier == Tier::Critical) - 0.4).abs() < 0.025);
        assert!((frac(&|j| !j.groups[0].shape.gpu.is_none()) - 0.1).abs() < 0.015);
        for j in &w.jobs {
            let g = &j.groups[0];
            match j.kind {
                WorkKind::Service => {
                    assert_eq!((g.duration_ms, g.outcome), (None, TraceOutcome::Unfinished))
                }
                WorkKind::Batch => assert!(g.duration_ms.is_some_and(|d| d >= 1)),
            }
            if !g.shape.gpu.is_none() {
                assert_eq!(g.shape.gpu_models, vec![GpuModel::new("T4")]);
            }
        }
    }

    #[test]
    fn weighted_task_counts_and_horizon_limit() {
        let s = spec("seed = 2\njobs = 3000\nhorizon_ms = 3600000\narrivals = { kind = \"poisson\", rate_per_hour = 1000 }\ntasks_per_job = { kind = \"weighted\", choices = [{ weight = 1, count = 1 }, { weight = 3, count = 8 }] }\n");
        let w = s.generate().unwrap();
        // The horizon (1 h at 1000/h) ends generation before 3000 jobs.
        assert!(
            w.jobs.len() < 1200 && w.jobs.len() > 800,
            "{}",
            w.jobs.len()
        );
        assert!(w.jobs.iter().all(|j| j.submit_ms() < 3_600_000));
        let eights = w.jobs.iter().filter(|j| j.groups[0].instances == 8).count() as f64
            / w.jobs.len() as f64;
        assert!(w
            .jobs
            .iter()
            .all(|j| matches!(j.groups[0].instances, 1 | 8)));
        assert!((eights - 0.75).abs() < 0.07, "{eights}");
    }

    #[test]
    fn bad_specs_name_the_field() {
        let err = |t: &str| SyntheticSpec::from_toml(t).unwrap_err().to_string();
        assert!(err("jobs = 10\nunknown = 1\n").contains("unknown field `unknown`"));
        assert_eq!(
            err("service_fraction = 1.5\n"),
            "service_fraction: must be in 0..=1, got 1.5"
        );
        assert_eq!(
            err("[[shapes]]\nweight = 0\ncpu_milli = 1\n"),
            "shapes[0].weight: must be at least 1"
        );
        assert_eq!(
            err("gpu_share = 0.5\n"),
            "gpu_share: is above 0 but no shape asks for a GPU"
        );
        assert_eq!(
            err("arrivals = { kind = \"diurnal\", mean_rate_per_hour = 10, peak_hour = 25, amplitude = 0.5 }\n"),
            "arrivals.peak_hour: must be in 0..24, got 25"
        );
        assert!(err("jobs = 100000000\n").starts_with("jobs: about 100000000 jobs"));
        assert!(err("horizon_ms = 1000000000000\narrivals = { kind = \"poisson\", rate_per_hour = 100000 }\n").starts_with("horizon_ms: "));
        assert_eq!(
            err("tasks_per_job = { kind = \"uniform\", min = 3, max = 2 }\n"),
            "tasks_per_job: expected 1 <= min <= max, got 3 / 2"
        );
    }

    #[test]
    fn defaults_are_as_documented() {
        let s = SyntheticSpec::from_toml("").unwrap();
        assert_eq!(s, SyntheticSpec::default());
        assert_eq!(s.jobs_limit(), Some(SYNTHETIC_JOBS_DEFAULT));
        let w = s.generate().unwrap();
        assert_eq!(w.jobs.len(), 1000);
        assert!(w
            .jobs
            .iter()
            .all(|j| j.groups[0].shape.resources == Resources::new(1000, 2048, 0, 0)));
    }
}
