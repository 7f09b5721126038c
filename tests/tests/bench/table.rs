//! The one table `tests/bench` prints: every benchmark reports its figures here, one row per
//! figure, each beside its baseline from the same run.
//!
//! A row is printed at once (so a run under `--nocapture` shows it as it comes) and, when
//! `LANYARD_BENCH_TABLE` names a file, appended to it as one tab-separated line; `tests/bench`
//! prints that file as the table at the end of the run.

use std::io::Write;

/// One figure of one benchmark.
pub struct Row<'a> {
    /// `P1`, `P1b`, `F2`, ...: the benchmark's id (the first column).
    pub id: &'a str,
    /// What is measured, in a few words.
    pub what: &'a str,
    /// The figure, with its unit.
    pub figure: String,
    /// The baseline it is compared with, with its unit and what it is.
    pub baseline: String,
    /// figure / baseline, where the two are comparable.
    pub ratio: Option<f64>,
    /// The goal, as text (`≥ 0.50`, `≤ 5 ms`, ...), empty when there is none.
    pub goal: &'a str,
    /// Whether the goal is met (None: no goal).
    pub met: Option<bool>,
}

const HEADER: [&str; 7] = [
    "id", "measure", "figure", "baseline", "ratio", "goal", "met",
];

impl Row<'_> {
    fn cells(&self) -> [String; 7] {
        [
            self.id.to_owned(),
            self.what.to_owned(),
            self.figure.clone(),
            self.baseline.clone(),
            // Small ratios (1 call per 10,000 vends) keep a significant digit.
            self.ratio.map_or_else(
                || "-".to_owned(),
                |r| {
                    if r != 0.0 && r.abs() < 0.1 {
                        format!("{r:.1e}")
                    } else {
                        format!("{r:.2}")
                    }
                },
            ),
            if self.goal.is_empty() {
                "-".to_owned()
            } else {
                self.goal.to_owned()
            },
            match self.met {
                None => "-".to_owned(),
                Some(true) => "yes".to_owned(),
                Some(false) => "NO".to_owned(),
            },
        ]
    }
}

/// Prints `row` and appends it to the run's table file, if any.
pub fn report(row: Row<'_>) {
    let cells = row.cells();
    println!("TABLE {}", cells.join(" | "));
    if let Some(path) = std::env::var_os("LANYARD_BENCH_TABLE") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(file, "{}", cells.join("\t")).unwrap();
    }
}

/// The header line of the table, for `tests/bench`.
#[allow(dead_code)]
pub fn header() -> String {
    HEADER.join("\t")
}

/// Milliseconds with two decimals.
pub fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1e3)
}

/// The value of environment variable `name` (a benchmark's knob), or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
