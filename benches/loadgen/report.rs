//! Measurements (repetitions, median, spread), the targets checked against same-run baselines,
//! and the table and JSON they are reported as.

use serde_json::{Value, json};

/// One named figure and its repetitions.
#[derive(Debug, Clone)]
pub(crate) struct Measure {
    /// `scenario.name`, e.g. `upload.grpc_1_stream`.
    pub(crate) key: String,
    pub(crate) unit: &'static str,
    pub(crate) samples: Vec<f64>,
    /// What this figure is divided by in the table, if anything.
    pub(crate) baseline: Option<String>,
}

impl Measure {
    pub(crate) fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// A target: `value` compared with `limit`.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) target: String,
    pub(crate) value: f64,
    pub(crate) limit: f64,
    pub(crate) at_least: bool,
}

impl Check {
    pub(crate) fn met(&self) -> bool {
        if self.at_least { self.value >= self.limit } else { self.value <= self.limit }
    }
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) measures: Vec<Measure>,
    checks: Vec<Check>,
}

impl Report {
    /// Records `samples` under `key`, and prints the line at once (long runs show progress).
    pub(crate) fn add(
        &mut self,
        key: &str,
        unit: &'static str,
        samples: Vec<f64>,
        baseline: Option<&str>,
    ) {
        let m = Measure { key: key.into(), unit, samples, baseline: baseline.map(Into::into) };
        eprintln!("{}", self.line(&m));
        self.measures.push(m);
    }

    pub(crate) fn get(&self, key: &str) -> Option<f64> {
        self.measures.iter().find(|m| m.key == key).map(Measure::median)
    }

    /// Adds a target: `value` at least (or at most) `limit`.
    pub(crate) fn check(
        &mut self,
        target: impl Into<String>,
        value: f64,
        limit: f64,
        at_least: bool,
    ) {
        self.checks.push(Check { target: target.into(), value, limit, at_least });
    }

    /// Adds `target` if both figures were measured: `key`'s median against `factor` × `of`'s.
    pub(crate) fn ratio_check(
        &mut self,
        target: &str,
        key: &str,
        at_least: bool,
        factor: f64,
        of: f64,
    ) {
        if let Some(value) = self.get(key)
            && of.is_finite()
        {
            self.check(target, value, factor * of, at_least);
        }
    }

    fn line(&self, m: &Measure) -> String {
        let ratio = m
            .baseline
            .as_deref()
            .and_then(|b| self.get(b).map(|base| (b, m.median() / base)))
            .map(|(b, r)| format!("{r:>6.2} × {b}"))
            .unwrap_or_default();
        format!(
            "{:<36} {:>10.2} {:<8} [{:>9.2} … {:<9.2}] n={:<2} {ratio}",
            m.key,
            m.median(),
            m.unit,
            m.min(),
            m.max(),
            m.samples.len()
        )
    }

    /// The whole table, then the targets.
    pub(crate) fn print(&self) {
        println!(
            "\n{:<36} {:>10} {:<8} {:^23} {:<4} ratio",
            "measure", "median", "unit", "[min … max]", "n"
        );
        for m in &self.measures {
            println!("{}", self.line(m));
        }
        println!("\ntargets");
        for c in &self.checks {
            let cmp = if c.at_least { "≥" } else { "≤" };
            let verdict = if c.met() { "met" } else { "NOT MET" };
            println!("  {:<62} {:>10.2} {cmp} {:<10.2} {verdict}", c.target, c.value, c.limit);
        }
    }

    pub(crate) fn json(&self, settings: Value) -> Value {
        let measures: Vec<Value> = self
            .measures
            .iter()
            .map(|m| {
                json!({
                    "key": m.key, "unit": m.unit, "median": m.median(), "min": m.min(),
                    "max": m.max(), "samples": m.samples, "baseline": m.baseline,
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(
                |c| json!({"target": c.target, "value": c.value, "limit": c.limit, "met": c.met()}),
            )
            .collect();
        json!({ "settings": settings, "measures": measures, "targets": checks })
    }
}

/// MiB/s for `bytes` in `seconds`.
pub(crate) fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

/// The `p`th percentile of sorted `values`.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
