//! Samples, medians and the markdown report.

use std::fmt::Write as _;
use std::time::Duration;

/// Errors of the bench; `Send` so that they cross spawned tasks.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
pub type BenchResult<T> = Result<T, BenchError>;

/// Per-operation times, in nanoseconds.
#[derive(Default, Clone)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        let (_, x, _) = v.select_nth_unstable(i);
        Duration::from_nanos(*x)
    }
    /// The `q` quantile (1.0: the maximum).
    pub fn quantile_pub(&self, q: f64) -> Duration {
        self.quantile(q)
    }
    pub fn median(&self) -> Duration {
        self.quantile(0.5)
    }
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// `a / b` of two medians.
pub fn ratio(a: &Samples, b: &Samples) -> f64 {
    let b = b.median().as_nanos() as f64;
    if b == 0.0 {
        f64::NAN
    } else {
        a.median().as_nanos() as f64 / b
    }
}

/// A duration with a unit that keeps three significant digits or so.
pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// "median / p99" of a sample set.
pub fn fmt_med_p99(s: &Samples) -> String {
    format!("{} / {}", fmt_dur(s.median()), fmt_dur(s.p99()))
}

pub fn fmt_ratio(r: f64) -> String {
    format!("{r:.2}×")
}

/// The verdict on one target of the issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    Skipped(String),
}

impl Verdict {
    pub fn of(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }
    fn label(&self) -> String {
        match self {
            Verdict::Pass => "PASS".into(),
            Verdict::Miss => "MISS".into(),
            Verdict::Skipped(why) => format!("skipped ({why})"),
        }
    }
}

pub struct Check {
    pub goal: String,
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// One table of results.
pub struct Section {
    pub title: String,
    pub note: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Section {
    pub fn new(title: &str, note: &str, header: &[&str]) -> Self {
        Section {
            title: title.into(),
            note: note.into(),
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    /// A row for a target that could not be measured.
    pub fn skipped(&mut self, first: &[&str], why: &str) {
        let mut cells: Vec<String> = first.iter().map(|s| (*s).to_owned()).collect();
        while cells.len() < self.header.len() {
            cells.push(format!("skipped ({why})"));
        }
        self.rows.push(cells);
    }
}

/// Everything the run measured, printed as markdown.
#[derive(Default)]
pub struct Report {
    /// Printed first: what was measured where.
    pub preamble: String,
    pub sections: Vec<Section>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn check(&mut self, goal: &str, target: &str, measured: String, verdict: Verdict) {
        self.checks.push(Check {
            goal: goal.into(),
            target: target.into(),
            measured,
            verdict,
        });
    }

    pub fn markdown(&self) -> String {
        let mut out = self.preamble.clone();
        let _ = writeln!(out, "### Targets\n");
        let _ = writeln!(out, "| goal | target | measured | result |");
        let _ = writeln!(out, "|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                c.goal,
                c.target,
                c.measured,
                c.verdict.label()
            );
        }
        for s in &self.sections {
            let _ = writeln!(out, "\n### {}\n", s.title);
            if !s.note.is_empty() {
                let _ = writeln!(out, "{}\n", s.note);
            }
            let _ = writeln!(out, "| {} |", s.header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(s.header.len()));
            for r in &s.rows {
                let _ = writeln!(out, "| {} |", r.join(" | "));
            }
        }
        out
    }
}
