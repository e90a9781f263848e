//! `rtim bench`: drives the running services over gRPC and reports
//! throughput and latency percentiles beside a baseline measured in the same
//! process, as a table and as JSON.
//!
//! - [`args`]: the command-line options, one subcommand per scenario.
//! - [`driver`]: open- and closed-loop load, timed without coordinated omission.
//! - [`latency`]: HDR histograms in microseconds.
//! - [`report`]: rows, the scenario-to-baseline ratio, table and JSON.
//! - [`scenarios`]: ingest, decide, recommend, lag and sweep.
//! - [`echo`] and [`jetstream`]: the two baselines.
//! - [`dataset`]: the events that payloads and ids come from.
//! - [`endpoints`] and [`grpc`]: where the services are and how to call them.

pub mod args;
pub mod dataset;
pub mod driver;
pub mod echo;
pub mod endpoints;
pub mod grpc;
pub mod jetstream;
pub mod latency;
pub mod report;
pub mod scenarios;

pub use args::BenchArgs;
pub use dataset::Dataset;
pub use report::Report;

use args::ScenarioCommand;
use scenarios::{Bench, decide, ingest, lag, recommend, sweep};

/// Runs the scenario of `args` with payloads and ids from `dataset`, prints
/// the table, writes the JSON file when asked, and returns the report.
pub async fn run(args: BenchArgs, dataset: Dataset) -> anyhow::Result<Report> {
    let bench = Bench::new(args.common().clone(), dataset)?;
    let load = bench.load(bench.common.rate, bench.common.duration);
    let report = match &args.scenario {
        ScenarioCommand::Ingest(ingest_args) => {
            bench.compare(&ingest::target(&bench, ingest_args.path)?, &load).await?
        }
        ScenarioCommand::Decide(_) => bench.compare(&decide::target(&bench).await?, &load).await?,
        ScenarioCommand::Recommend(_) => bench.compare(&recommend::target(&bench)?, &load).await?,
        ScenarioCommand::Lag(_) => lag::run(&bench).await?,
        ScenarioCommand::Sweep(sweep_args) => sweep::run(&bench, sweep_args).await?,
    };
    print!("{}", report.table());
    if let Some(path) = &bench.common.json {
        report.write_json(path)?;
    }
    Ok(report)
}
