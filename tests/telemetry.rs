//! Telemetry end to end. One trace runs from a gateway request through
//! ingestion and the bus into every consumer, and is exported over OTLP to a
//! receiver in this test. Every service serves its Prometheus series on
//! `/metrics`, and the Grafana dashboard uses only those series.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::embedded::{Embedded, start_embedded, start_embedded_with};
use common::mesh::{Mesh, SERVICES, backends, wait_for_health};
use common::{Gateway, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;

/// The services with a durable consumer on the event stream.
const CONSUMERS: [&str; 5] = ["profile", "decisioning", "recommendations", "surveys", "gamification"];

/// A span as the receiver got it, with the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/gRPC trace receiver that keeps every span in memory.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans.resource.map(|resource| resource.attributes);
            let service =
                string_attribute(attributes.as_deref().unwrap_or_default(), "service.name").unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans.into_iter().map(|span| Received {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves the receiver on a loopback port and returns its address.
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    fn spans_of_trace(&self, trace_id: &[u8]) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|received| received.span.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            any_value::Value::StringValue(text) => Some(text.clone()),
            _ => None,
        })
}

/// Finds the one span of `kind` named `name` for which `also` holds.
fn one_span<'a>(spans: &'a [Received], name: &str, kind: SpanKind, also: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|received| &received.span)
        .filter(|span| span.name == name && span.kind == kind as i32 && also(span))
        .collect();
    let names: Vec<(&str, i32)> = spans.iter().map(|r| (r.span.name.as_str(), r.span.kind)).collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind:?} span named {name}; the trace has {names:?}"
    );
    found[0]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
        .collect()
}

/// Scrapes and parses the `/metrics` of `address` (`host:port`).
async fn scrape(address: &str) -> Scrape {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("metrics endpoint answers")
        .text()
        .await
        .expect("metrics body");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("exposition text parses")
}

fn counter_value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name && has_labels(sample, labels))
        .find_map(|sample| match sample.value {
            Sample::Counter(value) => Some(value),
            _ => None,
        })
}

fn has_labels(sample: &prometheus_parse::Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(name, value)| sample.labels.get(name) == Some(*value))
}

/// Waits until every consumer counted `events` processed events.
async fn wait_for_consumers(address: &str, events: f64) {
    for consumer in CONSUMERS {
        wait_until(
            &format!("{consumer} to process {events} events"),
            Duration::from_secs(60),
            || async {
                let scrape = scrape(address).await;
                let processed = counter_value(&scrape, "rtim_consumer_processed_total", &[("consumer", consumer)])?;
                (processed >= events).then_some(())
            },
        )
        .await;
    }
}

/// Sends SIGTERM and waits for the process to exit, which it does only
/// after it drained and shut the trace exporter down.
fn terminate(mesh: &mut Embedded) -> std::process::ExitStatus {
    let pid = mesh.process.pid().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|status| status.success()), "SIGTERM sent to {pid}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = mesh.process.child.try_wait().expect("child status") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rtim up exits within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_gateway_to_every_consumer() {
    let receiver = Receiver::default();
    let otlp = format!("http://{}", receiver.start().await);
    let mut mesh = start_embedded_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)]).await;
    let gateway = Gateway::new(mesh.address("gateway"), &mesh.key);

    // The client's own trace context, which the gateway must continue.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let client_span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let user = format!("traced-{}", &trace_id[..8]);
    let response = gateway
        .http
        .post(format!("{}/v1/track", gateway.base))
        .bearer_auth(&gateway.key)
        .header("traceparent", format!("00-{trace_id}-{client_span_id}-01"))
        .json(&json!({"userId": user, "event": "Product Viewed", "properties": {"product_id": "p-1"}}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 200, "track accepted");

    wait_until("the event in the profile", Duration::from_secs(60), || {
        gateway.profile_with_total(&user, 1)
    })
    .await;
    wait_for_consumers(mesh.address("gateway"), 1.0).await;
    let status = terminate(&mut mesh);
    assert!(status.success(), "rtim up exits cleanly on SIGTERM: {status}");

    let spans = receiver.spans_of_trace(&decode_hex(&trace_id));
    assert!(
        spans.iter().all(|received| received.service == "rtim-embedded"),
        "service.name defaults to rtim-embedded: {:?}",
        spans.iter().map(|received| &received.service).collect::<Vec<_>>()
    );

    let http = one_span(&spans, "POST /v1/track", SpanKind::Server, |_| true);
    assert_eq!(
        hex(&http.parent_span_id),
        client_span_id,
        "gateway span continues the client's trace"
    );
    let rpc = "rtim.ingestion.v1.IngestionService/Track";
    let call = one_span(&spans, rpc, SpanKind::Client, |_| true);
    assert_eq!(
        call.parent_span_id, http.span_id,
        "gRPC call is a child of the HTTP span"
    );
    let ingestion = one_span(&spans, rpc, SpanKind::Server, |_| true);
    assert_eq!(
        ingestion.parent_span_id, call.span_id,
        "ingestion span is a child of the call"
    );
    let publish = one_span(&spans, "bus.publish", SpanKind::Producer, |_| true);
    assert_eq!(
        publish.parent_span_id, ingestion.span_id,
        "publish span is a child of ingestion"
    );
    for consumer in CONSUMERS {
        let process = one_span(&spans, "bus.process", SpanKind::Consumer, |span| {
            string_attribute(&span.attributes, "messaging.consumer.group.name").as_deref() == Some(consumer)
        });
        assert_eq!(
            process.parent_span_id, publish.span_id,
            "{consumer} span is a child of the publish span"
        );
    }
}

/// Kinds of Prometheus series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A series that must be on a service's `/metrics`.
struct Expected {
    name: &'static str,
    kind: Kind,
    labels: Vec<(&'static str, &'static str)>,
}

fn expect(name: &'static str, kind: Kind, labels: &[(&'static str, &'static str)]) -> Expected {
    Expected {
        name,
        kind,
        labels: labels.to_vec(),
    }
}

/// Returns the series that `service` serves after the traffic of
/// [`drive_traffic`]. In embedded mode every port serves every series.
fn expected_series(service: &'static str) -> Vec<Expected> {
    let grpc_service = match service {
        "ingestion" => "rtim.ingestion.v1.IngestionService",
        "profile" => "rtim.profile.v1.ProfileService",
        "decisioning" => "rtim.decisioning.v1.DecisioningService",
        "recommendations" => "rtim.recommendations.v1.RecommendationsService",
        "surveys" => "rtim.surveys.v1.SurveysService",
        "gamification" => "rtim.gamification.v1.GamificationService",
        _ => {
            return vec![expect(
                "http_server_request_duration_seconds",
                Kind::Histogram,
                &[
                    ("http_request_method", "POST"),
                    ("http_route", "/v1/track"),
                    ("http_response_status_code", "200"),
                ],
            )];
        }
    };
    let mut series = vec![
        expect(
            "grpc_server_handled_total",
            Kind::Counter,
            &[("grpc_service", grpc_service), ("grpc_code", "OK")],
        ),
        expect(
            "grpc_server_handling_seconds",
            Kind::Histogram,
            &[("grpc_service", grpc_service)],
        ),
    ];
    if service == "ingestion" {
        series.push(expect(
            "rtim_ingestion_events_total",
            Kind::Counter,
            &[("outcome", "accepted")],
        ));
        return series;
    }
    let consumer = [("consumer", service)];
    series.extend([
        expect("rtim_consumer_processed_total", Kind::Counter, &consumer),
        expect("rtim_consumer_failed_total", Kind::Counter, &consumer),
        expect("rtim_consumer_redelivered_total", Kind::Counter, &consumer),
        expect(
            "rtim_consumer_dead_lettered_total",
            Kind::Counter,
            &[("consumer", service), ("reason", "max_deliver")],
        ),
        expect("rtim_consumer_pending_messages", Kind::Gauge, &consumer),
        expect("rtim_consumer_ack_pending_messages", Kind::Gauge, &consumer),
        expect("rtim_consumer_batch_duration_seconds", Kind::Histogram, &consumer),
        expect(
            "rtim_db_pool_connections",
            Kind::Gauge,
            &[("service", service), ("state", "in_use")],
        ),
        expect(
            "rtim_db_pool_connections",
            Kind::Gauge,
            &[("service", service), ("state", "idle")],
        ),
        expect("rtim_db_pool_max_connections", Kind::Gauge, &[("service", service)]),
    ]);
    if service == "decisioning" {
        series.push(expect("rtim_cache_hits_total", Kind::Counter, &[("cache", service)]));
        series.push(expect("rtim_cache_misses_total", Kind::Counter, &[("cache", service)]));
    }
    series
}

/// Checks that `scrape` contains every series `service` must serve, with the
/// right type.
fn check_series(service: &'static str, scrape: &Scrape) {
    for expected in expected_series(service) {
        let sample = scrape
            .samples
            .iter()
            .find(|sample| sample.metric == expected.name && has_labels(sample, &expected.labels));
        let Some(sample) = sample else {
            panic!(
                "{service}: no {} series with labels {:?}",
                expected.name, expected.labels
            );
        };
        let kind = match sample.value {
            Sample::Counter(_) => Some(Kind::Counter),
            Sample::Gauge(_) => Some(Kind::Gauge),
            Sample::Histogram(_) => Some(Kind::Histogram),
            _ => None,
        };
        assert_eq!(kind, Some(expected.kind), "{service}: type of {}", expected.name);
    }
}

/// Sends events and reads through every service, so that each records its
/// series. Returns the number of events sent.
async fn drive_traffic(gateway: &Gateway) -> f64 {
    let user = format!("metrics-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let events = [
        json!({"userId": user, "event": "Product Viewed", "properties": {"product_id": "p-1", "price": 20.0}}),
        json!({"userId": user, "event": "Product Added", "properties": {"product_id": "p-1", "price": 20.0}}),
        json!({"userId": user, "event": "Product Viewed", "properties": {"product_id": "p-2", "price": 30.0}}),
    ];
    for event in &events {
        // Retried because in the mesh ingestion may still be starting.
        wait_until("an accepted track call", Duration::from_secs(60), || async {
            let (status, _) = gateway.post("/v1/track", event).await;
            (status == 200).then_some(())
        })
        .await;
    }
    wait_until("the events in the profile", Duration::from_secs(60), || {
        gateway.profile_with_total(&user, events.len() as i64)
    })
    .await;

    // Two decisions within the profile cache's lifetime: a miss, then a hit.
    for _ in 0..2 {
        let (status, body) = gateway
            .post("/v1/decide", &json!({"placement": "cart", "user_id": user}))
            .await;
        assert_eq!(status, 200, "decide: {body}");
    }
    for path in [
        "/v1/recommendations?item_id=p-1".to_owned(),
        format!("/v1/recommendations?user_id={user}"),
        format!("/v1/surveys/eligible?user_id={user}"),
        format!("/v1/points/{user}"),
    ] {
        let (status, body) = gateway.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    events.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_embedded_services() {
    let mesh = start_embedded().await;
    let gateway = Gateway::new(mesh.address("gateway"), &mesh.key);
    let events = drive_traffic(&gateway).await;
    wait_for_consumers(mesh.address("gateway"), events).await;

    for service in SERVICES {
        let scrape = scrape(mesh.address(service)).await;
        check_series(service, &scrape);
    }
    let served = served_names(mesh.address("gateway")).await;
    check_dashboard(&served);

    let scrape = scrape(mesh.address("decisioning")).await;
    let misses = counter_value(&scrape, "rtim_cache_misses_total", &[("cache", "decisioning")]);
    assert!(
        misses.is_some_and(|misses| misses >= 1.0),
        "first decision misses the cache: {misses:?}"
    );
    let hits = counter_value(&scrape, "rtim_cache_hits_total", &[("cache", "decisioning")]);
    assert!(
        hits.is_some_and(|hits| hits >= 1.0),
        "second decision hits the cache: {hits:?}"
    );
}

/// Returns the name of every sample line on `/metrics` of `address`, with
/// the `_bucket`, `_sum` and `_count` series of histograms as they are.
async fn served_names(address: &str) -> std::collections::HashSet<String> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("metrics endpoint answers")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Checks that every PromQL expression of the Grafana dashboard names only
/// series that a service serves.
fn check_dashboard(served: &std::collections::HashSet<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/rtim-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("dashboard has panels");
    let mut expressions = 0;
    for panel in panels {
        for target in panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let expression = target["expr"].as_str().expect("every target has a PromQL expression");
            let names = metric_names(expression);
            assert!(!names.is_empty(), "{expression} names a metric");
            for name in names {
                assert!(
                    served.contains(&name),
                    "dashboard panel {} uses {name}, which no service serves",
                    panel["title"]
                );
            }
            expressions += 1;
        }
    }
    assert!(
        expressions >= 10,
        "the dashboard has its panels: {expressions} expressions"
    );
}

/// Returns the metric names in a PromQL expression: the identifiers left
/// once strings, label matchers, range selectors and grouping clauses are
/// removed, other than functions, aggregations and keywords.
fn metric_names(expression: &str) -> Vec<String> {
    const KEYWORDS: [&str; 11] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut cleaned = String::with_capacity(expression.len());
    let mut closing = None;
    for character in expression.chars() {
        match (closing, character) {
            (None, '{') => closing = Some('}'),
            (None, '[') => closing = Some(']'),
            (None, '"') => closing = Some('"'),
            (None, other) => cleaned.push(other),
            (Some(end), other) if other == end => {
                closing = None;
                cleaned.push(' ');
            }
            (Some(_), _) => {}
        }
    }
    // Grouping clauses list label names, not metrics.
    for keyword in ["by", "without", "on", "ignoring"] {
        while let Some(start) = find_clause(&cleaned, keyword) {
            let end = cleaned[start..]
                .find(')')
                .map_or(cleaned.len(), |offset| start + offset + 1);
            cleaned.replace_range(start..end, " ");
        }
    }

    let mut names = Vec::new();
    let mut rest = cleaned.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        let after = tail[end..].trim_start();
        let preceded_by_digit = rest[..start].ends_with(|c: char| c.is_ascii_digit() || c == '.');
        if !after.starts_with('(') && !KEYWORDS.contains(&word) && !preceded_by_digit {
            names.push(word.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Finds `keyword (` as a whole word in `text`.
fn find_clause(text: &str, keyword: &str) -> Option<usize> {
    text.match_indices(keyword).map(|(index, _)| index).find(|&index| {
        let before = text[..index].chars().next_back();
        let after = text[index + keyword.len()..].trim_start();
        before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_')) && after.starts_with('(')
    })
}

#[test]
fn promql_metric_names_are_found() {
    let expression = r#"sum by (le, grpc_service) (rate(grpc_server_handling_seconds_bucket{grpc_code!="OK"}[$__rate_interval])) / on (x) max(rtim_db_pool_max_connections) and 0.5"#;
    assert_eq!(
        metric_names(expression),
        ["grpc_server_handling_seconds_bucket", "rtim_db_pool_max_connections"]
    );
    assert_eq!(metric_names("histogram_quantile(0.99, up)"), ["up"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_mesh_services() {
    let Some(backends) = backends() else {
        return;
    };
    let mut mesh = Mesh::new(&backends);
    for service in SERVICES {
        mesh.start(service);
    }
    let gateway = mesh.gateway();
    wait_for_health(&gateway).await;
    let events = drive_traffic(&gateway).await;

    let address = |service: &str| format!("127.0.0.1:{}", mesh.ports[service]);
    for consumer in CONSUMERS {
        wait_for_consumers_of(&address(consumer), consumer, events).await;
    }
    let mut foreign_series = HashMap::new();
    for service in SERVICES {
        let scrape = scrape(&address(service)).await;
        check_series(service, &scrape);
        // Each process serves only its own consumer's series.
        let foreign = scrape
            .samples
            .iter()
            .filter(|sample| {
                sample
                    .labels
                    .get("consumer")
                    .is_some_and(|consumer| consumer != service)
            })
            .count();
        foreign_series.insert(service, foreign);
    }
    assert!(
        foreign_series.values().all(|foreign| *foreign == 0),
        "consumer series of other services: {foreign_series:?}"
    );
}

/// Waits until the consumer of one mesh process counted `events` processed events.
async fn wait_for_consumers_of(address: &str, consumer: &str, events: f64) {
    wait_until(
        &format!("{consumer} to process {events} events"),
        Duration::from_secs(60),
        || async {
            let scrape = scrape(address).await;
            let processed = counter_value(&scrape, "rtim_consumer_processed_total", &[("consumer", consumer)])?;
            (processed >= events).then_some(())
        },
    )
    .await;
}
