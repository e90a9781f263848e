//! Segment's HTTP tracking API: `/v1/track`, `/v1/identify`, `/v1/page`,
//! `/v1/screen`, `/v1/alias`, `/v1/group`, and `/v1/batch` with its alias
//! `/v1/import`, forwarded to the ingestion service.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, post};
use axum::{Json, Router};
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{BatchRequest, BatchResponse, IdentifyRequest, PageRequest, TrackRequest};
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;
use rtim_runtime::errors::FieldViolation;
use serde_json::Value;

use super::Api;
use crate::auth::{Authorized, Credentials, header_key};
use crate::body;
use crate::mapping::events::{self, Rejection};
use crate::mapping::paths;
use crate::mapping::replies::{BatchReply, Tracked};
use crate::problem::Problem;

type IngestionApi = Api<IngestionServiceClient<TracedChannel>>;

/// Reason of an event that ingestion validated but could not store because
/// the event stream was unavailable. Such an event may be sent again.
const STREAM_UNAVAILABLE: &str = "STREAM_UNAVAILABLE";

/// State of the tracking handlers.
#[derive(Clone, Debug)]
pub struct Tracking {
    api: IngestionApi,
    /// `gateway.max_event_bytes`.
    max_event_bytes: usize,
}

pub fn router(api: IngestionApi, max_event_bytes: usize) -> Router {
    Router::new()
        .route("/v1/track", single_route(Call::Track))
        .route("/v1/identify", single_route(Call::Identify))
        .route("/v1/page", single_route(Call::Page))
        .route("/v1/screen", single_route(Call::Screen))
        .route("/v1/alias", single_route(Call::Alias))
        .route("/v1/group", single_route(Call::Group))
        .route("/v1/batch", post(batch))
        // Segment's API serves the same batch call under both paths.
        .route("/v1/import", post(batch))
        .with_state(Tracking { api, max_event_bytes })
}

/// The tracking calls that have their own endpoint.
#[derive(Clone, Copy, Debug)]
enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Alias,
    Group,
}

impl Call {
    fn event_type(self) -> EventType {
        match self {
            Call::Track => EventType::Track,
            Call::Identify => EventType::Identify,
            Call::Page => EventType::Page,
            Call::Screen => EventType::Screen,
            Call::Alias => EventType::Alias,
            Call::Group => EventType::Group,
        }
    }
}

fn single_route(call: Call) -> MethodRouter<Tracking> {
    post(move |State(tracking): State<Tracking>, request: Request| async move {
        single(&tracking, request, call).await.map(Json)
    })
}

async fn single(tracking: &Tracking, request: Request, call: Call) -> Result<Tracked, Problem> {
    let api = &tracking.api;
    let (caller, body) = authorize(api, request).await?;
    body::check_event_size(&body, tracking.max_event_bytes)?;
    let event = events::single(&body, call.event_type()).map_err(Problem::invalid)?;
    let (message_id, duplicate) = send_single(api, &caller, call, event, &body).await?;
    Ok(Tracked {
        success: true,
        message_id,
        duplicate,
    })
}

/// Sends one event with the call's RPC and returns its message id and
/// whether the stream already held it.
async fn send_single(
    api: &IngestionApi,
    caller: &Authorized,
    call: Call,
    event: Event,
    body: &Value,
) -> Result<(String, bool), Problem> {
    let upstream = &api.upstream;
    let mut client = api.client.clone();
    let rename = |field: &str| paths::single_field(field, body);
    let event = Some(event);
    match call {
        Call::Track => {
            let request = upstream.request(caller, TrackRequest { event })?;
            let response = upstream.call_renaming(client.track(request), rename).await?;
            Ok((response.message_id, response.duplicate))
        }
        Call::Identify => {
            let request = upstream.request(caller, IdentifyRequest { event })?;
            let response = upstream.call_renaming(client.identify(request), rename).await?;
            Ok((response.message_id, response.duplicate))
        }
        Call::Page => {
            let request = upstream.request(caller, PageRequest { event })?;
            let response = upstream.call_renaming(client.page(request), rename).await?;
            Ok((response.message_id, response.duplicate))
        }
        // The Batch RPC takes every event type, so these calls work with any
        // ingestion version, including one without Screen, Alias and Group RPCs.
        Call::Screen | Call::Alias | Call::Group => send_as_batch(api, caller, event, body).await,
    }
}

/// Sends one event as a batch of one and turns its result into the outcome
/// of a single call: a rejection becomes a 400 problem and an unstored
/// event a 503, as the unary RPCs' status codes would.
async fn send_as_batch(
    api: &IngestionApi,
    caller: &Authorized,
    event: Option<Event>,
    body: &Value,
) -> Result<(String, bool), Problem> {
    let upstream = &api.upstream;
    let rename = |field: &str| paths::single_field(field, body);
    let request = upstream.request(
        caller,
        BatchRequest {
            events: event.into_iter().collect(),
        },
    )?;
    let response = upstream
        .call_renaming(api.client.clone().batch(request), rename)
        .await?;
    let Some(result) = response.results.into_iter().next() else {
        tracing::error!(rpc.service = upstream.service, "batch of one event returned no result");
        return Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the ingestion call failed; see the gateway logs",
        ));
    };
    if result.accepted {
        return Ok((result.message_id, result.duplicate));
    }
    if result.reason == STREAM_UNAVAILABLE {
        return Err(unstored_problem(1, 1, upstream.retry_after));
    }
    let violations: Vec<FieldViolation> = result
        .violations
        .into_iter()
        .map(|violation| FieldViolation::new(rename(&violation.field), violation.description))
        .collect();
    if violations.is_empty() {
        return Err(Problem::bad_request(format!("event rejected: {}", result.reason)));
    }
    Err(Problem::invalid(violations))
}

/// Sends the valid items of a batch in one call and reports every item,
/// including those the gateway rejected itself. When the event stream could
/// not store some items, the whole batch gets a 503, so the library sends it
/// again. Items stored already are recognised by their message id.
///
/// NOTE: an item sent without a messageId gets a new id from ingestion on
/// each attempt, so resending it after a 503 can store it twice.
async fn batch(State(tracking): State<Tracking>, request: Request) -> Result<Json<BatchReply>, Problem> {
    let api = &tracking.api;
    let (caller, body) = authorize(api, request).await?;
    let items = events::batch(&body, tracking.max_event_bytes).map_err(Problem::invalid)?;
    let (events, sent, rejections) = split(items);
    tracing::debug!(
        tenant.id = %caller.tenant(),
        batch.sent = sent.len(),
        batch.rejected = rejections.len(),
        "forwarding batch"
    );

    // `events::batch` succeeded, so `batch` is an array.
    let batch_items = body["batch"].as_array().map(Vec::as_slice).unwrap_or_default();
    let response = if events.is_empty() {
        BatchResponse::default()
    } else {
        let request = api.upstream.request(&caller, BatchRequest { events })?;
        let rename = |field: &str| paths::batch_field(field, batch_items, &sent);
        api.upstream
            .call_renaming(api.client.clone().batch(request), rename)
            .await?
    };
    let reply = BatchReply::merge(rejections, &sent, response, batch_items);
    let unstored = reply
        .results
        .iter()
        .filter(|result| result.reason.as_deref() == Some(STREAM_UNAVAILABLE))
        .count();
    if unstored > 0 {
        return Err(unstored_problem(
            unstored,
            reply.results.len(),
            api.upstream.retry_after,
        ));
    }
    Ok(Json(reply))
}

/// Splits mapped batch items into the events to send, the batch position of
/// each, and the items the gateway rejected with their positions.
fn split(items: Vec<Result<Event, Rejection>>) -> (Vec<Event>, Vec<usize>, Vec<(usize, Rejection)>) {
    let mut events = Vec::with_capacity(items.len());
    let mut sent = Vec::with_capacity(items.len());
    let mut rejections = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Ok(event) => {
                sent.push(index);
                events.push(event);
            }
            Err(rejection) => rejections.push((index, rejection)),
        }
    }
    (events, sent, rejections)
}

fn unstored_problem(unstored: usize, total: usize, retry_after: Duration) -> Problem {
    tracing::warn!(
        batch.unstored = unstored,
        batch.size = total,
        "event stream did not store events"
    );
    Problem::unavailable(
        format!(
            "{unstored} of {total} events were not stored because the event stream is unavailable; \
             send them again after Retry-After (events stored already are recognised by their messageId)"
        ),
        retry_after,
    )
}

/// Authenticates a tracking request and returns it with its parsed body. A
/// key in the `Authorization` header is checked before the body is read,
/// and a `writeKey` in the body must then be the same key. Without the
/// header, the key is the body's `writeKey`, so the body is read first.
async fn authorize(api: &IngestionApi, request: Request) -> Result<(Authorized, Value), Problem> {
    let scopes = [Scope::Write];
    let from_header = match header_key(request.headers(), Credentials::Tracking)? {
        Some(_) => Some(api.auth.authorize_tracking(request.headers(), None, &scopes)?),
        None => None,
    };
    let (headers, bytes) = body::read_request(request, api.body_limit).await?;
    let parsed = body::parse(&bytes);
    let write_key = parsed.as_ref().ok().and_then(events::write_key);
    let caller = match from_header {
        Some(caller) => {
            caller.check_write_key(write_key)?;
            caller
        }
        None => api.auth.authorize_tracking(&headers, write_key, &scopes)?,
    };
    Ok((caller, parsed?))
}
