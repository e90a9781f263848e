//! Output of a replay: the progress bar, one line per rejected row on
//! standard error, and the summary at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::source::{Location, ProgressUnit};

/// Rejected rows described one by one; later ones are only counted, so that
/// a file with many bad rows does not bury the summary.
const MAX_REPORTED_ROWS: u64 = 50;

/// Counts reported at the end of a replay.
#[derive(Debug, Default)]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    /// Rejected rows not described on standard error.
    pub unreported: u64,
}

impl Summary {
    /// Counts a rejected row without describing it, for the row that an
    /// error describes instead.
    pub fn count_rejected(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_owned()).or_insert(0) += 1;
    }

    /// Counts a rejected row and describes it on standard error, above the progress bar.
    pub fn reject(&mut self, reason: &str, location: &Location, message: &str, progress: &ProgressBar) {
        self.count_rejected(reason);
        let rejected: u64 = self.rejected.values().sum();
        if rejected <= MAX_REPORTED_ROWS {
            progress.suspend(|| eprintln!("{location}: {message}"));
        } else {
            self.unreported += 1;
        }
    }
}

pub fn progress_bar(length: u64, unit: ProgressUnit, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let counter = match unit {
        ProgressUnit::Bytes => "{bytes}/{total_bytes}",
        ProgressUnit::Events => "{human_pos}/{human_len} events",
    };
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {counter} ({{eta}} left)");
    let progress = ProgressBar::new(length);
    progress.set_style(ProgressStyle::with_template(&template).expect("both templates are constants and valid"));
    progress
}

pub fn print_summary(dataset: &str, summary: &Summary, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!("replayed {dataset} in {seconds:.2} s");
    println!("  sent        {}", summary.sent);
    println!("  accepted    {}", summary.accepted);
    println!("  duplicates  {} (accepted, already stored)", summary.duplicates);
    let rejected: u64 = summary.rejected.values().sum();
    println!("  rejected    {rejected}");
    for (reason, count) in &summary.rejected {
        println!("    {reason:<20} {count}");
    }
    if summary.unreported > 0 {
        println!(
            "  ({} rejected rows beyond the first {MAX_REPORTED_ROWS} were not described)",
            summary.unreported
        );
    }
    let unconfirmed = summary.sent.saturating_sub(summary.accepted + rejected);
    if unconfirmed > 0 {
        println!("  unconfirmed {unconfirmed} (sent, no answer from ingestion; replaying again stores them once)");
    }
    println!("  events/s    {:.0}", summary.sent as f64 / seconds.max(1e-9));
}
