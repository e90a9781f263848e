//! The scenarios and their baselines. Each scenario builds a [`Target`]: the
//! workload it drives and how its requests compare to a baseline. The
//! baseline runs first, in the same process, with the same load and the same
//! request size.

pub mod decide;
pub mod ingest;
pub mod lag;
pub mod recommend;
pub mod sweep;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;

use crate::args::CommonArgs;
use crate::dataset::Dataset;
use crate::driver::{Load, Measurement, Workload, drive};
use crate::echo::{EchoServer, EchoWorkload};
use crate::endpoints::{Endpoints, Overrides};
use crate::grpc::{self, Credential};
use crate::jetstream::ThrowawayStream;
use crate::report::{Ratio, Report, Role, Row, Settings};

/// Events per ingest batch, in the scenario and in the JetStream baseline.
pub const BATCH_SIZE: usize = 100;

/// The run that a scenario's throughput is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// A bare gRPC round trip of the same size, served in this process.
    Echo,
    /// Publishing the same events straight to JetStream.
    JetStream,
}

/// A scenario ready to be driven.
pub struct Target {
    pub name: &'static str,
    pub workload: Arc<dyn Workload>,
    /// Encoded size of one request, in bytes.
    pub request_bytes: usize,
    pub baseline: Baseline,
    /// True when each request carries events, so rows show events per second.
    pub counts_events: bool,
}

impl Target {
    pub fn row(&self, name: impl Into<String>, role: Role, load: &Load, measured: &Measurement) -> Row {
        let row = Row::new(name, role, load, self.request_bytes, measured);
        if self.counts_events {
            row.with_events(measured)
        } else {
            row
        }
    }
}

/// Settings and clients that every scenario of one invocation shares.
pub struct Bench {
    pub common: CommonArgs,
    pub endpoints: Endpoints,
    pub credential: Credential,
    /// The key itself, for the gateway's HTTP calls.
    pub api_key: String,
    pub dataset: Arc<Dataset>,
}

impl Bench {
    pub fn new(common: CommonArgs, dataset: Dataset) -> anyhow::Result<Self> {
        let overrides = Overrides {
            ingestion: common.ingestion.clone(),
            profile: common.profile.clone(),
            decisioning: common.decisioning.clone(),
            recommendations: common.recommendations.clone(),
            gateway: common.gateway.clone(),
        };
        let endpoints = Endpoints::resolve(common.endpoints.as_deref(), &overrides)?;
        let api_key = api_key(&common)?;
        let credential = Credential::new(&api_key)?;
        Ok(Self {
            common,
            endpoints,
            credential,
            api_key,
            dataset: Arc::new(dataset),
        })
    }

    /// Builds the invocation's load with `rate` and a run of `duration`.
    pub fn load(&self, rate: Option<f64>, duration: Duration) -> Load {
        Load {
            concurrency: self.common.concurrency as usize,
            rate,
            duration,
            limit: None,
        }
    }

    pub fn channels(&self, url: &str) -> anyhow::Result<Vec<Channel>> {
        grpc::channels(url, self.common.connections as usize, self.common.timeout)
    }

    /// Runs `warmup` unrecorded, then measures a run with `load`. Fails when
    /// every request of the warm-up failed, such as when the service is down.
    pub async fn measure(
        &self,
        name: &str,
        workload: &Arc<dyn Workload>,
        load: &Load,
        warmup: Duration,
    ) -> anyhow::Result<Measurement> {
        let progress = self.spinner();
        if !warmup.is_zero() {
            progress.set_message(format!("{name}: warming up"));
            let warm = Load {
                duration: warmup,
                ..load.clone()
            };
            let warmed = drive(workload.clone(), &warm, &progress).await;
            if warmed.succeeded == 0 && warmed.error_count() > 0 {
                progress.finish_and_clear();
                let labels: Vec<&String> = warmed.errors.keys().collect();
                anyhow::bail!("{name}: every request of the warm-up failed: {labels:?}");
            }
        }
        progress.set_position(0);
        progress.set_message(format!("{name}: measuring"));
        let measured = drive(workload.clone(), load, &progress).await;
        progress.finish_and_clear();
        Ok(measured)
    }

    /// Measures `target` beside its baseline, both with `load`.
    pub async fn compare(&self, target: &Target, load: &Load) -> anyhow::Result<Report> {
        let baseline = self.baseline(target, load).await?;
        let measured = self
            .measure(target.name, &target.workload, load, self.common.warmup)
            .await?;
        let row = target.row(target.name, Role::Scenario, load, &measured);
        let rate = row.events_per_second.unwrap_or(row.requests_per_second);
        let ratio = Ratio::between(&row, rate, &baseline);
        Ok(self.report(target.name, vec![row, baseline], Some(ratio), None))
    }

    /// Measures the baseline of `target` with `load`.
    pub async fn baseline(&self, target: &Target, load: &Load) -> anyhow::Result<Row> {
        match target.baseline {
            Baseline::Echo => self.echo_baseline(target.request_bytes, load).await,
            Baseline::JetStream => self.jetstream_baseline(load).await,
        }
    }

    async fn echo_baseline(&self, request_bytes: usize, load: &Load) -> anyhow::Result<Row> {
        let server = EchoServer::start().await.context("cannot start the echo baseline")?;
        let workload: Arc<dyn Workload> = Arc::new(EchoWorkload::new(&self.channels(&server.url())?, request_bytes));
        let measured = self.measure("echo", &workload, load, self.common.warmup).await;
        server.stop().await?;
        let measured = measured?;
        Ok(Row::new("echo", Role::Baseline, load, request_bytes, &measured))
    }

    async fn jetstream_baseline(&self, load: &Load) -> anyhow::Result<Row> {
        let stream = ThrowawayStream::create(&self.common.nats, self.common.connections as usize).await?;
        let workload = stream.workload(self.dataset.clone(), BATCH_SIZE);
        let request_bytes = workload.batch_bytes();
        let workload: Arc<dyn Workload> = Arc::new(workload);
        let measured = self.measure("jetstream", &workload, load, self.common.warmup).await;
        stream.delete().await?;
        let measured = measured?;
        Ok(Row::new("jetstream", Role::Baseline, load, request_bytes, &measured).with_events(&measured))
    }

    pub fn report(&self, scenario: &str, rows: Vec<Row>, ratio: Option<Ratio>, peak_rate: Option<f64>) -> Report {
        Report {
            scenario: scenario.to_owned(),
            settings: Settings {
                connections: self.common.connections as usize,
                concurrency: self.common.concurrency as usize,
                rate: self.common.rate,
                warmup_seconds: self.common.warmup.as_secs_f64(),
                duration_seconds: self.common.duration.as_secs_f64(),
            },
            rows,
            ratio,
            peak_rate,
        }
    }

    /// Prints a note on standard error unless `--quiet` is given.
    pub fn note(&self, text: &str) {
        if !self.common.quiet {
            eprintln!("{text}");
        }
    }

    fn spinner(&self) -> ProgressBar {
        if self.common.quiet {
            return ProgressBar::hidden();
        }
        let spinner = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}: {pos} requests ({per_sec})")
                .expect("the template is a constant and valid"),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    }
}

/// Returns the API key: `--api-key`, else the contents of `DATA_DIR/api-key`.
fn api_key(common: &CommonArgs) -> anyhow::Result<String> {
    if let Some(key) = &common.api_key {
        return Ok(key.clone());
    }
    read_key(&common.data_dir.join("api-key"))
}

fn read_key(path: &Path) -> anyhow::Result<String> {
    let key = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no --api-key given and cannot read {}; start `rtim up` first or pass --api-key",
            path.display()
        )
    })?;
    Ok(key.trim().to_owned())
}

/// Returns the mean encoded size of the first hundred requests that `build` makes.
pub fn mean_size(build: impl Fn(u64) -> usize) -> usize {
    const SAMPLES: u64 = 100;
    let total: usize = (0..SAMPLES).map(build).sum();
    (total as f64 / SAMPLES as f64).round() as usize
}
