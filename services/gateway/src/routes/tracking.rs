//! Segment-style tracking: `/v1/track`, `/v1/identify`, `/v1/page` and
//! `/v1/batch`, forwarded to the ingestion service.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::post;
use axum::{Json, Router};
use rtim_proto::events::v1::EventType;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{BatchRequest, BatchResponse, IdentifyRequest, PageRequest, TrackRequest};
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;
use serde_json::Value;

use super::Api;
use crate::auth::Authorized;
use crate::body;
use crate::mapping::replies::{BatchReply, Tracked};
use crate::mapping::{events, paths};
use crate::problem::Problem;

type TrackingApi = Api<IngestionServiceClient<TracedChannel>>;

pub fn router(api: TrackingApi) -> Router {
    Router::new()
        .route("/v1/track", post(track))
        .route("/v1/identify", post(identify))
        .route("/v1/page", post(page))
        .route("/v1/batch", post(batch))
        .with_state(api)
}

/// The tracking calls that have their own endpoint and RPC.
#[derive(Clone, Copy, Debug)]
enum Call {
    Track,
    Identify,
    Page,
}

impl Call {
    fn event_type(self) -> EventType {
        match self {
            Call::Track => EventType::Track,
            Call::Identify => EventType::Identify,
            Call::Page => EventType::Page,
        }
    }
}

async fn track(State(api): State<TrackingApi>, headers: HeaderMap, body: Body) -> Result<Json<Tracked>, Problem> {
    single(&api, &headers, body, Call::Track).await.map(Json)
}

async fn identify(State(api): State<TrackingApi>, headers: HeaderMap, body: Body) -> Result<Json<Tracked>, Problem> {
    single(&api, &headers, body, Call::Identify).await.map(Json)
}

async fn page(State(api): State<TrackingApi>, headers: HeaderMap, body: Body) -> Result<Json<Tracked>, Problem> {
    single(&api, &headers, body, Call::Page).await.map(Json)
}

async fn single(api: &TrackingApi, headers: &HeaderMap, body: Body, call: Call) -> Result<Tracked, Problem> {
    let (caller, body) = authorize(api, headers, body).await?;
    let event = Some(events::single(&body, call.event_type()).map_err(Problem::invalid)?);
    let upstream = &api.upstream;
    let mut client = api.client.clone();
    let rename = |field: &str| paths::single_field(field, &body);
    let (message_id, duplicate) = match call {
        Call::Track => {
            let request = upstream.request(&caller, TrackRequest { event })?;
            let response = upstream.call_renaming(client.track(request), rename).await?;
            (response.message_id, response.duplicate)
        }
        Call::Identify => {
            let request = upstream.request(&caller, IdentifyRequest { event })?;
            let response = upstream.call_renaming(client.identify(request), rename).await?;
            (response.message_id, response.duplicate)
        }
        Call::Page => {
            let request = upstream.request(&caller, PageRequest { event })?;
            let response = upstream.call_renaming(client.page(request), rename).await?;
            (response.message_id, response.duplicate)
        }
    };
    Ok(Tracked {
        success: true,
        message_id,
        duplicate,
    })
}

/// Sends the valid items of a batch in one call and reports every item,
/// including those the gateway could not map.
async fn batch(State(api): State<TrackingApi>, headers: HeaderMap, body: Body) -> Result<Json<BatchReply>, Problem> {
    let (caller, body) = authorize(&api, &headers, body).await?;
    let items = events::batch(&body).map_err(Problem::invalid)?;

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
    Ok(Json(BatchReply::merge(rejections, &sent, response, batch_items)))
}

/// Authenticates a tracking request. A key in the `Authorization` header is
/// checked before the body is read. Without the header, the key may be the
/// body's `writeKey` field, so the body is read and parsed first.
async fn authorize(api: &TrackingApi, headers: &HeaderMap, body: Body) -> Result<(Authorized, Value), Problem> {
    if headers.contains_key(AUTHORIZATION) {
        let caller = api.auth.authorize_tracking(headers, None, &[Scope::Write])?;
        let body = body::json(body, api.body_limit).await?;
        return Ok((caller, body));
    }
    let bytes = body::read(body, api.body_limit).await?;
    let parsed = body::parse(&bytes);
    let write_key = parsed.as_ref().ok().and_then(events::write_key);
    let caller = api.auth.authorize_tracking(headers, write_key, &[Scope::Write])?;
    Ok((caller, parsed?))
}
