//! The interface between the dataset readers and the replay: one event per
//! row, or the reason the row is skipped, with the file and line it came from.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rtim_proto::events::v1::Event;

/// A dataset reader.
pub trait Source {
    /// Reads the next row, or `None` at the end of the dataset.
    fn next_row(&mut self) -> Option<Row>;

    /// Returns how much of the dataset has been read, and its size, in [`Source::unit`].
    fn progress(&self) -> (u64, u64);

    fn unit(&self) -> ProgressUnit;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressUnit {
    Bytes,
    Events,
}

/// One row of a dataset: the event it maps to, or why it cannot be replayed.
#[derive(Debug)]
pub struct Row {
    pub location: Location,
    pub event: Result<Event, BadRow>,
}

/// The file and the 1-based line where a row starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: u64,
}

impl Location {
    pub fn new(file: &Arc<str>, line: u64) -> Self {
        Self {
            file: Arc::clone(file),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A row that cannot be mapped to an event: a machine-readable reason, the
/// column or field at fault, and a description that shows the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    pub reason: &'static str,
    pub field: String,
    pub detail: String,
}

impl BadRow {
    pub fn new(reason: &'static str, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.field, self.reason, self.detail)
    }
}

/// Returns the path as the user gave it, for messages.
pub fn label(path: &Path) -> Arc<str> {
    Arc::from(path.display().to_string())
}

/// Returns the file name alone. Message ids derive from it, so that they do
/// not change when the dataset moves to another folder.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Returns a UUID v5 message id that derives from `parts`, so that replaying
/// the same row again produces the same id and ingestion stores it once.
pub fn message_id(parts: &[&str]) -> String {
    let name = format!("rtim:replay:{}", parts.join(":"));
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

/// Shows at most 60 characters of a value in a message.
pub fn preview(value: &str) -> String {
    const MAX_CHARS: usize = 60;
    match value.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("'{}...'", &value[..end]),
        None => format!("'{value}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_keeps_rees46_ids() {
        // The REES46 reader produced ids from this name before the readers
        // shared this function: a replay after an upgrade still deduplicates.
        let expected = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"rtim:replay:rees46:events.csv:7");
        assert_eq!(message_id(&["rees46", "events.csv", "7"]), expected.to_string());
    }

    #[test]
    fn preview_shortens_long_values() {
        assert_eq!(preview("abc"), "'abc'");
        let long = "x".repeat(61);
        assert_eq!(preview(&long), format!("'{}...'", "x".repeat(60)));
    }

    #[test]
    fn location_reads_as_file_and_line() {
        let location = Location::new(&Arc::from("data/views.csv"), 12);
        assert_eq!(location.to_string(), "data/views.csv:12");
    }
}
