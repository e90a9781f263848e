//! `rtim bench`: reads the REES46 file with the mapping of `rtim replay` and
//! hands its events to the load tool.

use std::path::Path;

use anyhow::Context;
use rtim_bench::{BenchArgs, Dataset};

use super::replay::rees46;
use super::replay::source::Source;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dataset = load(&args.common().data)?;
    rtim_bench::run(args, dataset).await?;
    Ok(())
}

/// Reads every row of the file that maps to an event, skipping the others.
fn load(path: &Path) -> anyhow::Result<Dataset> {
    let mut reader = rees46::Reader::open(path).context("pass --data with a REES46 events CSV")?;
    let mut events = Vec::new();
    while let Some(row) = reader.next_row() {
        if let Ok(event) = row.event {
            events.push(event);
        }
    }
    Dataset::new(events).with_context(|| format!("no usable rows in {}", path.display()))
}
