//! Counters and histograms the agent keeps for `GET /metrics`, and their Prometheus text
//! form. Lock-free: recording is an atomic add on hot paths (every probe, every sync).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket upper bounds, in seconds, shared by every histogram here.
const BOUNDS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Tries at something that can fail, counted: pushes of the deploy results' git notes.
#[derive(Debug, Default)]
pub struct Attempts {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Attempts {
    pub fn record(&self, ok: bool) {
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(succeeded, failed)`.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A Prometheus histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    /// Cumulative counts are computed when rendering; each bucket counts only its own range.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..=BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the histogram in the text exposition format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_samples(out, name, None);
    }

    /// Appends the histogram's samples, labelled `label="value"` when given (the family's
    /// `HELP` and `TYPE` are the caller's, written once for every label value).
    pub fn render_samples(&self, out: &mut String, name: &str, label: Option<(&str, &str)>) {
        let label = label
            .map(|(l, v)| format!("{l}=\"{}\",", escape(v)))
            .unwrap_or_default();
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{label}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{label}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let plain = label.trim_end_matches(',');
        let braces = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum}\n{name}_count{braces} {}",
            self.count()
        );
    }
}

/// A label value in the text format's escaping.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends a gauge or counter family with one sample per label value.
pub fn render_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: &[(String, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value, n) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_kept() {
        let h = Histogram::default();
        for s in [0.0005, 0.003, 0.003, 0.2, 100.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "test");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.25\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"30\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_count 5\n"), "{out}");
        assert!(out.contains("x_seconds_sum 100.2065\n"), "{out}");
        let mut labelled = String::new();
        h.render_samples(&mut labelled, "x_seconds", Some(("backend", "a")));
        assert!(
            labelled.contains("x_seconds_bucket{backend=\"a\",le=\"+Inf\"} 5\n"),
            "{labelled}"
        );
        assert!(
            labelled.contains("x_seconds_count{backend=\"a\"} 5\n"),
            "{labelled}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        render_family(
            &mut out,
            "y",
            "gauge",
            "test",
            "state",
            &[("a\"b".into(), 2)],
        );
        assert!(out.ends_with("y{state=\"a\\\"b\"} 2\n"), "{out}");
    }
}
