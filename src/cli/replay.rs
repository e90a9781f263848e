//! `rtim replay`: streams a dataset through ingestion over gRPC, in batches,
//! as fast as ingestion accepts them or at a multiple of real time. Rows that
//! cannot be mapped, and events that ingestion rejects, are reported with
//! their file and line and skipped, or stop the replay with `--strict`.

mod diginetica;
pub(crate) mod rees46;
mod report;
mod segment;
pub(crate) mod source;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use rtim_proto::events::v1::Event;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{BatchRequest, EventResult};
use tonic::transport::Channel;

use report::Summary;
use source::{Location, Source};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// REES46 e-commerce events CSV (event_time, event_type, product_id, ...).
    Rees46,
    /// DIGINETICA CIKM Cup 2016 item views and purchases, merged in time order.
    Diginetica,
    /// Segment JSON lines: one track, identify, page, screen, alias or group call per line.
    Segment,
}

const FORMATS_HELP: &str = "\
Formats:
  rees46      FILE is one events CSV. view, cart, remove_from_cart and purchase become
              Product Viewed, Product Added, Product Removed and Order Completed.
  diginetica  FILE is the dataset folder, which contains train-item-views.csv (or
              sample_train-item-views.csv), train-purchases.csv and
              product-categories.csv; or FILE is the views or the purchases file, with
              --purchases and --categories naming the other files. Each view becomes a
              Product Viewed and each order one Order Completed with its products.
              Shoppers without a user id (NA) get the anonymous id
              diginetica-session-<sessionId>. timeframe is read as milliseconds since
              the session started and eventdate as the UTC date of the event, so each
              session starts at the latest time that puts all its rows on their dates.
  segment     FILE has one Segment call per line, as JSON with the fields of Segment's
              HTTP API and exports (type, messageId, userId, anonymousId, event,
              properties, traits, context, integrations, timestamp, ...). The time is
              timestamp, else originalTimestamp corrected with sentAt and receivedAt.

Message ids are kept where the file has them and otherwise derive from the file name
and row, so replaying a file again stores nothing twice.";

#[derive(Debug, Args)]
#[command(after_long_help = FORMATS_HELP)]
pub struct ReplayArgs {
    /// Dataset file, or for diginetica the dataset folder (see --help).
    file: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    /// diginetica only: the purchases file, when it is not train-purchases.csv in the
    /// dataset folder.
    #[arg(long, value_name = "FILE")]
    purchases: Option<PathBuf>,
    /// diginetica only: the product categories file, when it is not
    /// product-categories.csv in the dataset folder.
    #[arg(long, value_name = "FILE")]
    categories: Option<PathBuf>,
    /// Stop at the first row that cannot be mapped or that ingestion rejects, after
    /// sending the rows before it. Without it, such rows are reported and skipped.
    #[arg(long)]
    strict: bool,
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

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    check(&args)?;
    let mut source = open(&args)?;
    let key = api_key(&args)?;
    let mut client = connect(&ingestion_url(&args)).await?;

    let (_, length) = source.progress();
    let progress = report::progress_bar(length, source.unit(), args.quiet);
    let started = Instant::now();
    let mut summary = Summary::default();
    let result = stream(&args, source.as_mut(), &mut client, &key, &progress, &mut summary).await;
    progress.finish_and_clear();
    // The summary of what was sent is printed even when the replay stops early.
    report::print_summary(&args.file.display().to_string(), &summary, started.elapsed());
    result
}

fn check(args: &ReplayArgs) -> anyhow::Result<()> {
    if let Some(speed) = args.speed
        && !(speed.is_finite() && speed > 0.0)
    {
        anyhow::bail!("invalid --speed {speed}: expected a positive number");
    }
    if args.format != Format::Diginetica && (args.purchases.is_some() || args.categories.is_some()) {
        anyhow::bail!("--purchases and --categories apply to --format diginetica only");
    }
    Ok(())
}

/// Opens the dataset before connecting, so that a wrong path fails without a running platform.
fn open(args: &ReplayArgs) -> anyhow::Result<Box<dyn Source>> {
    Ok(match args.format {
        Format::Rees46 => Box::new(rees46::Reader::open(&args.file)?),
        Format::Diginetica => {
            let files = diginetica::Files::locate(&args.file, args.purchases.as_deref(), args.categories.as_deref())?;
            let dataset = diginetica::Replay::load(&files)?;
            println!("{}", dataset.description());
            Box::new(dataset)
        }
        Format::Segment => Box::new(segment::Reader::open(&args.file)?),
    })
}

async fn connect(ingestion: &str) -> anyhow::Result<IngestionServiceClient<Channel>> {
    let channel = Channel::from_shared(ingestion.to_owned())
        .with_context(|| format!("invalid ingestion address '{ingestion}'"))?
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to ingestion at {ingestion}"))?;
    Ok(IngestionServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
}

/// Events waiting to be sent, with the rows they came from.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    locations: Vec<Location>,
}

/// Sends every row of the dataset, in order, and counts the outcomes.
async fn stream(
    args: &ReplayArgs,
    source: &mut dyn Source,
    client: &mut IngestionServiceClient<Channel>,
    key: &str,
    progress: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut sender = Sender {
        client,
        key,
        progress,
        strict: args.strict,
    };
    let mut pacer = args.speed.map(Pacer::new);
    let mut batch = Batch::default();
    while let Some(row) = source.next_row() {
        progress.set_position(source.progress().0);
        let event = match row.event {
            Ok(event) => event,
            Err(bad) if args.strict => {
                summary.sent += 1;
                summary.count_rejected(bad.reason);
                sender.send(&mut batch, summary).await?;
                anyhow::bail!("{}: {bad}; stopped by --strict", row.location);
            }
            Err(bad) => {
                summary.sent += 1;
                summary.reject(bad.reason, &row.location, &bad.to_string(), progress);
                continue;
            }
        };
        if let Some(pacer) = &mut pacer
            && let Some(wait) = pacer.wait_for(&event)
        {
            sender.send(&mut batch, summary).await?;
            tokio::time::sleep(wait).await;
        }
        batch.events.push(event);
        batch.locations.push(row.location);
        if batch.events.len() >= args.batch_size as usize {
            sender.send(&mut batch, summary).await?;
        }
    }
    sender.send(&mut batch, summary).await
}

struct Sender<'a> {
    client: &'a mut IngestionServiceClient<Channel>,
    key: &'a str,
    progress: &'a ProgressBar,
    strict: bool,
}

impl Sender<'_> {
    /// Sends the batch, empties it and counts each event's result.
    async fn send(&mut self, batch: &mut Batch, summary: &mut Summary) -> anyhow::Result<()> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut batch.events);
        let locations = std::mem::take(&mut batch.locations);
        summary.sent += events.len() as u64;
        let request = rtim_runtime::client::with_key(tonic::Request::new(BatchRequest { events }), self.key)?;
        let response = self.client.batch(request).await.map_err(describe_failure)?.into_inner();
        let mut first_rejection = None;
        for result in response.results {
            if result.accepted {
                summary.accepted += 1;
                summary.duplicates += u64::from(result.duplicate);
                continue;
            }
            let location = usize::try_from(result.index)
                .ok()
                .and_then(|index| locations.get(index))
                .cloned()
                .unwrap_or_else(|| Location::new(&"(row not in the batch)".into(), 0));
            let message = describe_rejection(&result);
            if self.strict && first_rejection.is_none() {
                summary.count_rejected(&result.reason);
                first_rejection = Some((location, message));
            } else {
                summary.reject(&result.reason, &location, &message, self.progress);
            }
        }
        match first_rejection {
            Some((location, message)) => anyhow::bail!("{location}: {message}; stopped by --strict"),
            None => Ok(()),
        }
    }
}

/// Describes an event that ingestion did not accept, naming each field at fault.
fn describe_rejection(result: &EventResult) -> String {
    let prefix = format!("events[{}].", result.index);
    let violations: Vec<String> = result
        .violations
        .iter()
        .map(|violation| {
            let field = violation.field.strip_prefix(&prefix).unwrap_or(&violation.field);
            format!("{field}: {}", violation.description)
        })
        .collect();
    if violations.is_empty() {
        format!("rejected by ingestion ({})", result.reason)
    } else {
        format!("rejected by ingestion ({}): {}", result.reason, violations.join("; "))
    }
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
            "no --api-key given and cannot read {}; start `rtim up` first, pass the folder it was \
             given with --data-dir, or pass --api-key",
            path.display()
        )
    })?;
    Ok(key.trim().to_owned())
}

fn describe_failure(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            anyhow::anyhow!("ingestion is unreachable, the replay stopped: {}", status.message())
        }
        code => anyhow::anyhow!("ingestion rejected a batch ({code}): {}", status.message()),
    }
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
