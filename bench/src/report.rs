//! Results of a `rtim bench` invocation: rows of measured runs, the ratio of
//! the scenario to its baseline, a table for the terminal and the same data
//! as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::driver::{Load, Measurement};
use crate::latency::LatencySummary;

/// The kind of run behind a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The scenario itself.
    Scenario,
    /// The baseline measured in the same invocation.
    Baseline,
    /// One rate step of a sweep.
    Step,
}

/// One measured run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Such as "decide", "echo" or "decide @ 800/s".
    pub name: String,
    pub role: Role,
    /// Open-loop target in requests per second; `None` for closed loop.
    pub target_rate: Option<f64>,
    pub concurrency: usize,
    /// Size of one encoded request, in bytes.
    pub request_bytes: usize,
    pub requests: u64,
    pub errors: u64,
    /// Requests never sent because the open-loop run fell behind its schedule.
    pub unsent: u64,
    pub elapsed_seconds: f64,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Events stored per second, for rows that send batches of events.
    pub events_per_second: Option<f64>,
    pub latency_micros: LatencySummary,
    /// Failed requests by error label.
    pub error_labels: BTreeMap<String, u64>,
}

impl Row {
    /// Builds a row from a measurement; `request_bytes` is the encoded size
    /// of one request.
    pub fn new(name: impl Into<String>, role: Role, load: &Load, request_bytes: usize, measured: &Measurement) -> Self {
        Self {
            name: name.into(),
            role,
            target_rate: load.rate,
            concurrency: load.concurrency,
            request_bytes,
            requests: measured.succeeded,
            errors: measured.error_count(),
            unsent: measured.scheduled.saturating_sub(measured.issued),
            elapsed_seconds: measured.elapsed.as_secs_f64(),
            requests_per_second: measured.requests_per_second(),
            events_per_second: None,
            latency_micros: measured.latency.summary(),
            error_labels: measured.errors.clone(),
        }
    }

    /// Shows the measurement's items as events per second.
    pub fn with_events(mut self, measured: &Measurement) -> Self {
        self.events_per_second = Some(measured.items_per_second());
        self
    }
}

/// A scenario's throughput divided by its baseline's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub value: f64,
    /// The quotient in words, such as "decide requests/s / echo requests/s".
    pub of: String,
}

impl Ratio {
    /// `scenario` over `baseline` in requests per second, or in events per
    /// second when both rows count events.
    pub fn between(scenario: &Row, scenario_rate: f64, baseline: &Row) -> Self {
        let (baseline_rate, unit) = match (scenario.events_per_second, baseline.events_per_second) {
            (Some(_), Some(events)) => (events, "events/s"),
            _ => (baseline.requests_per_second, "requests/s"),
        };
        Self {
            value: scenario_rate / baseline_rate.max(1e-9),
            of: format!("{} {unit} / {} {unit}", scenario.name, baseline.name),
        }
    }
}

/// The load settings of the invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub connections: usize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
}

/// Everything one invocation measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// ingest, decide, recommend, lag or sweep.
    pub scenario: String,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub ratio: Option<Ratio>,
    /// Sweep only: the best achieved rate, in requests per second.
    pub peak_rate: Option<f64>,
}

impl Report {
    /// Renders the rows as an aligned table, followed by the peak, the ratio
    /// and the error labels.
    pub fn table(&self) -> String {
        let with_events = self.rows.iter().any(|row| row.events_per_second.is_some());
        let mut out = String::new();
        let events_header = if with_events {
            format!(" {:>10}", "events/s")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<24} {:>11}{events_header} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "scenario", "requests/s", "p50", "p90", "p99", "p99.9", "max", "errors"
        );
        for row in &self.rows {
            let events = match (with_events, row.events_per_second) {
                (false, _) => String::new(),
                (true, Some(events)) => format!(" {events:>10.0}"),
                (true, None) => format!(" {:>10}", "-"),
            };
            let latency = row.latency_micros;
            let _ = writeln!(
                out,
                "{:<24} {:>11.1}{events} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
                row.name,
                row.requests_per_second,
                millis(latency.p50),
                millis(latency.p90),
                millis(latency.p99),
                millis(latency.p999),
                millis(latency.max),
                row.errors,
            );
        }
        if let Some(peak) = self.peak_rate {
            let _ = writeln!(out, "peak: {peak:.1} requests/s");
        }
        if let Some(ratio) = &self.ratio {
            let _ = writeln!(out, "ratio: {:.3} ({})", ratio.value, ratio.of);
        }
        for row in self.rows.iter().filter(|row| !row.error_labels.is_empty()) {
            for (label, count) in &row.error_labels {
                let _ = writeln!(out, "{}: {count} x {label}", row.name);
            }
        }
        out
    }

    /// Writes the report as pretty-printed JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Formats microseconds as milliseconds with two decimals.
fn millis(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::latency::Latency;

    fn measurement(succeeded: u64, items: u64, seconds: u64) -> Measurement {
        let mut latency = Latency::new();
        for micros in 1..=succeeded {
            latency.record(Duration::from_micros(micros));
        }
        Measurement {
            latency,
            issued: succeeded + 1,
            scheduled: succeeded + 3,
            succeeded,
            items,
            errors: BTreeMap::from([("Unavailable".to_owned(), 1)]),
            elapsed: Duration::from_secs(seconds),
        }
    }

    fn report() -> Report {
        let load = Load {
            concurrency: 32,
            rate: None,
            duration: Duration::from_secs(10),
            limit: None,
        };
        let ingest_run = measurement(1_000, 100_000, 10);
        let baseline_run = measurement(2_000, 200_000, 10);
        let ingest = Row::new("ingest", Role::Scenario, &load, 30_000, &ingest_run).with_events(&ingest_run);
        let baseline = Row::new("jetstream", Role::Baseline, &load, 30_000, &baseline_run).with_events(&baseline_run);
        let ratio = Ratio::between(&ingest, ingest.events_per_second.unwrap(), &baseline);
        Report {
            scenario: "ingest".to_owned(),
            settings: Settings {
                connections: 4,
                concurrency: 32,
                rate: None,
                warmup_seconds: 2.0,
                duration_seconds: 10.0,
            },
            rows: vec![baseline, ingest],
            ratio: Some(ratio),
            peak_rate: None,
        }
    }

    #[test]
    fn json_shape() {
        let report = report();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        report.write_json(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();

        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["scenario"], "ingest", "scenario");
        assert_eq!(value["settings"]["connections"], 4, "connections");
        assert_eq!(value["rows"][1]["role"], "scenario", "role of the scenario row");
        assert_eq!(value["rows"][0]["role"], "baseline", "role of the baseline row");
        assert_eq!(value["rows"][1]["requests"], 1_000, "requests");
        assert_eq!(value["rows"][1]["errors"], 1, "errors");
        assert_eq!(value["rows"][1]["unsent"], 2, "unsent");
        assert_eq!(value["rows"][1]["events_per_second"], 10_000.0, "events/s");
        assert!(value["rows"][1]["latency_micros"]["p99"].is_u64(), "p99 is an integer");
        assert_eq!(value["ratio"]["value"], 0.5, "ratio");
        assert_eq!(
            value["ratio"]["of"], "ingest events/s / jetstream events/s",
            "ratio label"
        );
        assert!(value["peak_rate"].is_null(), "no peak outside a sweep");

        let parsed: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, report, "round trip");
    }

    #[test]
    fn table_lists_rows_and_ratio() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("scenario"), "header: {}", lines[0]);
        assert!(lines[0].contains("events/s"), "events column: {}", lines[0]);
        assert!(lines[1].starts_with("jetstream"), "baseline row: {}", lines[1]);
        assert!(lines[2].starts_with("ingest"), "scenario row: {}", lines[2]);
        assert!(table.contains("ratio: 0.500"), "ratio line: {table}");
        assert!(table.contains("ingest: 1 x Unavailable"), "error labels: {table}");
    }

    #[test]
    fn ratio_in_requests_without_events() {
        let load = Load {
            concurrency: 1,
            rate: None,
            duration: Duration::from_secs(1),
            limit: None,
        };
        let decide = Row::new("decide", Role::Scenario, &load, 30, &measurement(300, 300, 1));
        let echo = Row::new("echo", Role::Baseline, &load, 30, &measurement(1_200, 1_200, 1));
        let ratio = Ratio::between(&decide, decide.requests_per_second, &echo);
        assert_eq!(ratio.value, 0.25, "ratio");
        assert_eq!(ratio.of, "decide requests/s / echo requests/s", "label");
    }
}
