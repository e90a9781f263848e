//! Latency histograms: HDR histograms in microseconds with 3 significant
//! digits, so every percentile is within 0.1% of the recorded value.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Maximum latency the histogram resolves, in microseconds (one hour).
/// Longer latencies are recorded as this value.
const MAX_MICROS: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies of successful requests.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_DIGITS)
            .expect("the bounds are constants with 1 <= low and high >= 2 * low");
        Self { histogram }
    }

    /// Records one latency, rounded down to whole microseconds; anything
    /// under a microsecond counts as one.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(micros);
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Adds every latency recorded in `other`.
    pub fn merge(&mut self, other: &Latency) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms built by Latency::new share their bounds");
    }

    /// Returns the latency at `quantile` (0.5 for the median) in
    /// microseconds, or 0 when nothing was recorded.
    pub fn quantile_micros(&self, quantile: f64) -> u64 {
        if self.histogram.is_empty() {
            return 0;
        }
        self.histogram.value_at_quantile(quantile)
    }

    /// Returns the percentiles that reports show.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50: self.quantile_micros(0.5),
            p90: self.quantile_micros(0.9),
            p99: self.quantile_micros(0.99),
            p999: self.quantile_micros(0.999),
            max: if self.histogram.is_empty() {
                0
            } else {
                self.histogram.max()
            },
            mean: if self.histogram.is_empty() {
                0.0
            } else {
                self.histogram.mean()
            },
        }
    }
}

/// Percentiles of one run, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative difference between two values.
    fn off(actual: u64, expected: u64) -> f64 {
        (actual as f64 - expected as f64).abs() / expected as f64
    }

    #[test]
    fn percentiles_of_uniform_values() {
        let mut latency = Latency::new();
        for micros in 1..=10_000 {
            latency.record(Duration::from_micros(micros));
        }
        let summary = latency.summary();
        assert_eq!(latency.count(), 10_000, "count");
        assert!(off(summary.p50, 5_000) < 0.001, "p50 {} near 5000", summary.p50);
        assert!(off(summary.p90, 9_000) < 0.001, "p90 {} near 9000", summary.p90);
        assert!(off(summary.p99, 9_900) < 0.001, "p99 {} near 9900", summary.p99);
        assert!(off(summary.p999, 9_990) < 0.001, "p99.9 {} near 9990", summary.p999);
        assert!(off(summary.max, 10_000) < 0.001, "max {} near 10000", summary.max);
        assert!(
            (summary.mean - 5_000.5).abs() < 5.0,
            "mean {} near 5000.5",
            summary.mean
        );
    }

    #[test]
    fn percentiles_of_two_modes() {
        // 99% of requests take 1 ms and 1% take 100 ms: the p99 stays at the
        // fast mode and the p99.9 lands in the slow one.
        let mut latency = Latency::new();
        for _ in 0..9_900 {
            latency.record(Duration::from_millis(1));
        }
        for _ in 0..100 {
            latency.record(Duration::from_millis(100));
        }
        let summary = latency.summary();
        assert!(off(summary.p50, 1_000) < 0.001, "p50 {}", summary.p50);
        assert!(off(summary.p99, 1_000) < 0.001, "p99 {}", summary.p99);
        assert!(off(summary.p999, 100_000) < 0.001, "p99.9 {}", summary.p999);
        assert!(off(summary.max, 100_000) < 0.001, "max {}", summary.max);
    }

    #[test]
    fn empty_summary_is_zero() {
        let summary = Latency::new().summary();
        assert_eq!(summary, LatencySummary::default(), "summary of no latencies");
    }

    #[test]
    fn merge_adds_counts() {
        let mut first = Latency::new();
        let mut second = Latency::new();
        first.record(Duration::from_millis(2));
        second.record(Duration::from_millis(4));
        second.record(Duration::from_secs(7_200));
        first.merge(&second);
        assert_eq!(first.count(), 3, "merged count");
        assert!(
            off(first.summary().max, MAX_MICROS) < 0.001,
            "an over-long latency saturates"
        );
    }

    #[test]
    fn sub_microsecond_counts_as_one() {
        let mut latency = Latency::new();
        latency.record(Duration::from_nanos(10));
        assert_eq!(latency.summary().max, 1, "max");
    }
}
