//! `rtim replay`: streams a dataset through ingestion over gRPC, in file
//! order, in batches, as fast as ingestion accepts them or at a multiple of
//! real time.

pub(crate) mod rees46;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rtim_proto::events::v1::Event;
use rtim_proto::ingestion::v1::BatchRequest;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// REES46 e-commerce events CSV (event_time, event_type, product_id, ...).
    Rees46,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Dataset file.
    file: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    /// API key with the write scope; defaults to the key `rtim up` wrote in its data folder.
    #[arg(long, env = "RTIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Data folder whose `api-key` file is read when no key is given.
    #[arg(long, default_value_os_t = super::default_data_dir())]
    data_dir: PathBuf,
    /// gRPC address of ingestion, such as http://127.0.0.1:50051. Defaults to
    /// the address in the data folder's `endpoints.json`, written by `rtim up`,
    /// else http://127.0.0.1:50051.
    #[arg(long)]
    ingestion: Option<String>,
    /// Replay at this multiple of real time, keeping the gaps between
    /// events; without it, events go as fast as ingestion accepts them.
    #[arg(long)]
    speed: Option<f64>,
    /// Events per Batch call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch_size: u32,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Counts reported at the end of a replay.
#[derive(Debug, Default)]
struct Summary {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    rejected: BTreeMap<String, u64>,
}

impl Summary {
    fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_owned()).or_insert(0) += 1;
    }
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(speed) = args.speed
        && !(speed.is_finite() && speed > 0.0)
    {
        anyhow::bail!("invalid --speed {speed}: expected a positive number");
    }
    let key = api_key(&args)?;
    let ingestion = ingestion_url(&args);
    let channel = Channel::from_shared(ingestion.clone())
        .with_context(|| format!("invalid ingestion address '{ingestion}'"))?
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to ingestion at {ingestion}"))?;
    let mut client = IngestionServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);

    let file_len = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let progress = progress_bar(file_len, args.quiet);
    let mut rows = match args.format {
        Format::Rees46 => rees46::Reader::open(&args.file)?,
    };

    let started = Instant::now();
    let mut summary = Summary::default();
    let result = stream(&args, &mut rows, &mut client, &key, &progress, &mut summary).await;
    progress.finish_and_clear();
    // The summary of what was sent is printed even when the replay stops early.
    print_summary(&args, &summary, started.elapsed());
    result
}

/// Sends every row of the file, in order, and counts the outcomes.
async fn stream(
    args: &ReplayArgs,
    rows: &mut rees46::Reader,
    client: &mut IngestionServiceClient<Channel>,
    key: &str,
    progress: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut pacer = args.speed.map(Pacer::new);
    let mut batch = Vec::with_capacity(args.batch_size as usize);
    while let Some(row) = rows.next_event() {
        progress.set_position(rows.byte_position());
        let event = match row {
            Ok(event) => event,
            Err(reason) => {
                summary.sent += 1;
                summary.reject(reason);
                continue;
            }
        };
        if let Some(pacer) = &mut pacer
            && let Some(wait) = pacer.wait_for(&event)
        {
            send(client, key, &mut batch, summary).await?;
            tokio::time::sleep(wait).await;
        }
        batch.push(event);
        if batch.len() >= args.batch_size as usize {
            send(client, key, &mut batch, summary).await?;
        }
    }
    send(client, key, &mut batch, summary).await
}

/// Chooses the ingestion address: the flag, else `endpoints.json` in the data
/// folder, else the default port. An address without a scheme gets `http://`.
fn ingestion_url(args: &ReplayArgs) -> String {
    let address = args.ingestion.clone().or_else(|| {
        let text = std::fs::read_to_string(args.data_dir.join("endpoints.json")).ok()?;
        let endpoints: serde_json::Value = serde_json::from_str(&text).ok()?;
        endpoints["ingestion"].as_str().map(str::to_owned)
    });
    let address = address.unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    if address.contains("://") {
        address
    } else {
        format!("http://{address}")
    }
}

fn api_key(args: &ReplayArgs) -> anyhow::Result<String> {
    if let Some(key) = &args.api_key {
        return Ok(key.clone());
    }
    let path = args.data_dir.join("api-key");
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no --api-key given and cannot read {}; start `rtim up` first or pass --api-key",
            path.display()
        )
    })?;
    Ok(key.trim().to_owned())
}

fn progress_bar(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let progress = ProgressBar::new(len);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta} left)")
            .expect("the template is a constant and valid"),
    );
    progress
}

async fn send(
    client: &mut IngestionServiceClient<Channel>,
    key: &str,
    batch: &mut Vec<Event>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(batch);
    summary.sent += events.len() as u64;
    let request = rtim_runtime::client::with_key(tonic::Request::new(BatchRequest { events }), key)?;
    let response = client.batch(request).await.map_err(describe_failure)?.into_inner();
    for result in response.results {
        if result.accepted {
            summary.accepted += 1;
            summary.duplicates += u64::from(result.duplicate);
        } else {
            summary.reject(&result.reason);
        }
    }
    Ok(())
}

fn describe_failure(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            anyhow::anyhow!("ingestion is unreachable, the replay stopped: {}", status.message())
        }
        code => anyhow::anyhow!("ingestion rejected a batch ({code}): {}", status.message()),
    }
}

fn print_summary(args: &ReplayArgs, summary: &Summary, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!("replayed {} in {seconds:.2} s", args.file.display());
    println!("  sent        {}", summary.sent);
    println!("  accepted    {}", summary.accepted);
    println!("  duplicates  {} (accepted, already stored)", summary.duplicates);
    let rejected: u64 = summary.rejected.values().sum();
    println!("  rejected    {rejected}");
    for (reason, count) in &summary.rejected {
        println!("    {reason:<20} {count}");
    }
    let unconfirmed = summary.sent.saturating_sub(summary.accepted + rejected);
    if unconfirmed > 0 {
        println!("  unconfirmed {unconfirmed} (sent, no answer from ingestion; replaying again stores them once)");
    }
    println!("  events/s    {:.0}", summary.sent as f64 / seconds.max(1e-9));
}

/// Spaces events out by their own timestamps, divided by the speed.
struct Pacer {
    speed: f64,
    start: Option<(Instant, i64)>,
}

impl Pacer {
    fn new(speed: f64) -> Self {
        Self { speed, start: None }
    }

    /// Returns how long to wait before `event` is due, if it is not due yet.
    fn wait_for(&mut self, event: &Event) -> Option<Duration> {
        let at = event
            .timestamp
            .as_ref()
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)?;
        let (started, first) = *self.start.get_or_insert((Instant::now(), at));
        let due = Duration::from_secs_f64(((at - first).max(0) as f64 / 1000.0) / self.speed);
        due.checked_sub(started.elapsed()).filter(|wait| !wait.is_zero())
    }
}
