//! Command-line options of `rtim bench`: one subcommand per scenario, each
//! with the same load, connection and output options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

/// The REES46 file that `rtim bench` reads when `--data` is not given,
/// relative to the current folder.
pub const DEFAULT_DATA: &str = "../shared/data/rees46_ecommerce_oct2019/events_2019-10-01_0000-0249UTC.csv";

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: ScenarioCommand,
}

impl BenchArgs {
    pub fn common(&self) -> &CommonArgs {
        match &self.scenario {
            ScenarioCommand::Ingest(ingest) => &ingest.common,
            ScenarioCommand::Decide(common) | ScenarioCommand::Recommend(common) | ScenarioCommand::Lag(common) => {
                common
            }
            ScenarioCommand::Sweep(sweep) => &sweep.common,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Batches of 100 events to ingestion, each timed until the JetStream
    /// ack; baseline: publishing the same events straight to JetStream.
    Ingest(IngestArgs),
    /// Decide on placement `bench` over a catalog of 500 actions, for shoppers
    /// of the data file; baseline: a bare gRPC echo of the same size.
    Decide(CommonArgs),
    /// Recommend for shoppers and for products of the data file; baseline: a
    /// bare gRPC echo of the same size.
    Recommend(CommonArgs),
    /// Time from a Track call until GetProfile returns the new shopper, at
    /// `--rate` (default 50/s).
    Lag(CommonArgs),
    /// Double the open-loop rate until the service falls behind or fails,
    /// then measure latency at half of the peak.
    Sweep(SweepArgs),
}

#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    /// gRPC connections to each service, requests spread over them round robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
    /// Requests in flight at most, over all connections.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Target requests per second, open loop: request i is due at
    /// start + i / RATE and timed from then. Without it, closed loop at
    /// `--concurrency`. The baseline runs at the same rate, so leave it out
    /// to compare capacities. Does not apply to sweep.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Warm-up before each measured run, not recorded, such as 2s or 500ms.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Length of each measured run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Deadline of each gRPC call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// API key with the write, read, decide and admin scopes; defaults to the
    /// key in `DATA_DIR/api-key`.
    #[arg(long, env = "RTIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Data folder whose `api-key` file is read when no key is given.
    #[arg(long, default_value = ".rtim")]
    pub data_dir: PathBuf,
    /// Service addresses as written by `rtim up`: a JSON object of service
    /// name to host:port. The per-service flags override it.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// gRPC address of ingestion [default: http://127.0.0.1:50051]
    #[arg(long)]
    pub ingestion: Option<String>,
    /// gRPC address of profile [default: http://127.0.0.1:50052]
    #[arg(long)]
    pub profile: Option<String>,
    /// gRPC address of decisioning [default: http://127.0.0.1:50053]
    #[arg(long)]
    pub decisioning: Option<String>,
    /// gRPC address of recommendations [default: http://127.0.0.1:50054]
    #[arg(long)]
    pub recommendations: Option<String>,
    /// HTTP address of the gateway [default: http://127.0.0.1:8080]
    #[arg(long)]
    pub gateway: Option<String>,
    /// NATS server of the JetStream baseline.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// REES46 events CSV that payloads, shopper ids and product ids come from.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    /// Hide the progress spinner.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Route of the batches to ingestion.
    #[arg(long, value_enum, default_value_t = IngestPath::Grpc)]
    pub path: IngestPath,
}

/// The ways a client can send events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IngestPath {
    /// The ingestion service's unary `Batch` RPC.
    Grpc,
    /// The ingestion service's bidirectional `Stream` RPC, one stream per connection.
    Stream,
    /// The gateway's Segment-compatible `POST /v1/batch`, as JSON.
    Rest,
}

#[derive(Clone, Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Scenario whose rate is raised.
    #[arg(long, value_enum, default_value_t = SweepTarget::Decide)]
    pub scenario: SweepTarget,
    /// Rate of the first step, in requests per second; each step doubles it.
    #[arg(long, default_value_t = 100.0, value_parser = positive_rate)]
    pub start_rate: f64,
    /// Length of each rate step.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub step: Duration,
    /// Route of the batches to ingestion, when the scenario is ingest.
    #[arg(long, value_enum, default_value_t = IngestPath::Grpc)]
    pub path: IngestPath,
}

/// The scenarios a sweep can raise the rate of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SweepTarget {
    Decide,
    Recommend,
    Ingest,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text)
        .map_err(|error| format!("invalid duration '{text}' ({error}); write it like 2s, 500ms or 1m"))
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "invalid rate '{text}': expected a positive number of requests per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["bench", "decide"]).unwrap();
        let common = cli.bench.common();
        assert_eq!(common.connections, 4, "connections");
        assert_eq!(common.concurrency, 32, "concurrency");
        assert_eq!(common.rate, None, "closed loop");
        assert_eq!(common.warmup, Duration::from_secs(2), "warm-up");
        assert_eq!(common.duration, Duration::from_secs(10), "duration");
        assert_eq!(common.data, PathBuf::from(DEFAULT_DATA), "data file");
    }

    #[test]
    fn sweep_options() {
        let cli = Cli::try_parse_from([
            "bench",
            "sweep",
            "--scenario",
            "recommend",
            "--start-rate",
            "250",
            "--step",
            "1500ms",
        ])
        .unwrap();
        let ScenarioCommand::Sweep(sweep) = cli.bench.scenario else {
            panic!("parsed as {:?}", cli.bench.scenario);
        };
        assert_eq!(sweep.scenario, SweepTarget::Recommend, "inner scenario");
        assert_eq!(sweep.start_rate, 250.0, "start rate");
        assert_eq!(sweep.step, Duration::from_millis(1500), "step");
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            ["bench", "decide", "--rate", "0"],
            ["bench", "decide", "--rate", "fast"],
            ["bench", "decide", "--duration", "ten"],
            ["bench", "decide", "--connections", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} is rejected");
        }
    }
}
