//! `sweep`: open-loop steps of one scenario at doubling rates, from
//! `--start-rate`, until a step achieves less than 90% of its target or has
//! errors. The peak is the best achieved rate. A last run at half the peak
//! measures latency under a load the service sustains, and the baseline runs
//! closed loop, so the ratio compares capacities.

use std::time::Duration;

use crate::args::{SweepArgs, SweepTarget};
use crate::report::{Ratio, Report, Role, Row};

use super::{Bench, Target, decide, ingest, recommend};

/// Share of the target rate a step must achieve for the sweep to go on.
const KEEP_UP: f64 = 0.9;
/// Steps at most, so the sweep ends even against a service that keeps up
/// at any rate: 100/s doubled 15 times is about 3.3 million/s.
const MAX_STEPS: usize = 16;

pub async fn run(bench: &Bench, sweep: &SweepArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        bench.common.rate.is_none(),
        "--rate does not apply to sweep: set the first step with --start-rate"
    );
    let target = match sweep.scenario {
        SweepTarget::Decide => decide::target(bench).await?,
        SweepTarget::Recommend => recommend::target(bench)?,
        SweepTarget::Ingest => ingest::target(bench, sweep.path)?,
    };
    let mut rows = steps(bench, &target, sweep).await?;
    let peak_row = rows
        .iter()
        .max_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second))
        .cloned()
        .expect("a sweep runs at least one step");
    let peak = peak_row.requests_per_second;
    if peak <= 0.0 {
        let labels: Vec<&String> = peak_row.error_labels.keys().collect();
        anyhow::bail!("no request succeeded at {:.0}/s: {labels:?}", sweep.start_rate);
    }

    let half = bench.load(Some(peak / 2.0), bench.common.duration);
    let name = format!("{} @ {:.0}/s", target.name, peak / 2.0);
    let measured = bench.measure(&name, &target.workload, &half, Duration::ZERO).await?;
    rows.push(target.row(name, Role::Scenario, &half, &measured));

    let baseline = bench
        .baseline(&target, &bench.load(None, bench.common.duration))
        .await?;
    let peak_throughput = peak_row.events_per_second.unwrap_or(peak);
    let peak_row = Row {
        name: format!("peak {}", target.name),
        ..peak_row
    };
    let ratio = Ratio::between(&peak_row, peak_throughput, &baseline);
    rows.push(baseline);
    Ok(bench.report("sweep", rows, Some(ratio), Some(peak)))
}

/// Runs the rate steps, warming up once at the first rate.
async fn steps(bench: &Bench, target: &Target, sweep: &SweepArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut rate = sweep.start_rate;
    for step in 0..MAX_STEPS {
        let load = bench.load(Some(rate), sweep.step);
        let warmup = if step == 0 { bench.common.warmup } else { Duration::ZERO };
        let name = format!("{} @ {rate:.0}/s", target.name);
        let measured = bench.measure(&name, &target.workload, &load, warmup).await?;
        let row = target.row(name, Role::Step, &load, &measured);
        let keeps_up = row.requests_per_second >= KEEP_UP * rate && row.errors == 0;
        rows.push(row);
        if !keeps_up {
            break;
        }
        rate *= 2.0;
    }
    Ok(rows)
}
