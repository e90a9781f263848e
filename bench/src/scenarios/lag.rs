//! `lag`: how long an event takes to show in the shopper's profile. Each
//! request sends a Track call for a shopper no earlier request used, then
//! polls GetProfile until the profile exists. The open-loop driver times it
//! from the moment the Track call was due.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prost::Message;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1::TrackRequest;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::json::datetime_to_timestamp;
use rtim_proto::profile::v1::GetProfileRequest;
use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_client::ProfileServiceClient;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use super::Bench;
use crate::dataset::Dataset;
use crate::driver::{Call, Workload};
use crate::grpc::{Credential, label};
use crate::report::{Report, Role, Row};

/// Track calls per second when `--rate` is not given.
pub const DEFAULT_RATE: f64 = 50.0;
/// Pause between two GetProfile calls for the same shopper.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How long a profile may take to show before the request counts as failed.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

struct Lag {
    ingestion: Vec<IngestionServiceClient<Channel>>,
    profiles: Vec<ProfileServiceClient<Channel>>,
    credential: Credential,
    dataset: Arc<Dataset>,
    /// Makes the shopper ids of this run unlike those of any other.
    run_id: String,
}

impl Lag {
    fn event(&self, index: u64, user_id: &str) -> Event {
        let source = self.dataset.event(index);
        Event {
            message_id: uuid::Uuid::new_v4().to_string(),
            r#type: EventType::Track as i32,
            user_id: user_id.to_owned(),
            event: "Product Viewed".to_owned(),
            properties: source.properties.clone(),
            timestamp: Some(datetime_to_timestamp(Utc::now())),
            ..Event::default()
        }
    }
}

impl Workload for Lag {
    fn call(&self, index: u64) -> Call {
        let slot = (index % self.ingestion.len() as u64) as usize;
        let mut ingestion = self.ingestion[slot].clone();
        let profiles = self.profiles[slot].clone();
        let credential = self.credential.clone();
        let user_id = format!("bench-lag-{}-{index}", self.run_id);
        let track = credential.request(TrackRequest {
            event: Some(self.event(index, &user_id)),
        });
        Box::pin(async move {
            ingestion.track(track).await.map_err(|status| label(&status))?;
            wait_until_visible(profiles, &credential, user_id).await
        })
    }
}

/// Polls GetProfile until the profile of `user_id` exists.
async fn wait_until_visible(
    mut profiles: ProfileServiceClient<Channel>,
    credential: &Credential,
    user_id: String,
) -> Result<u64, String> {
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    loop {
        let request = credential.request(GetProfileRequest {
            lookup: Some(Lookup::UserId(user_id.clone())),
        });
        match profiles.get_profile(request).await {
            Ok(_) => return Ok(1),
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(label(&status)),
        }
        if Instant::now() >= deadline {
            return Err(format!("profile not visible within {VISIBLE_TIMEOUT:?}"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub async fn run(bench: &Bench) -> anyhow::Result<Report> {
    let lag = Lag {
        ingestion: bench
            .channels(&bench.endpoints.ingestion)?
            .into_iter()
            .map(IngestionServiceClient::new)
            .collect(),
        profiles: bench
            .channels(&bench.endpoints.profile)?
            .into_iter()
            .map(ProfileServiceClient::new)
            .collect(),
        credential: bench.credential.clone(),
        dataset: bench.dataset.clone(),
        run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
    };
    let request_bytes = TrackRequest {
        event: Some(lag.event(0, &format!("bench-lag-{}-0", lag.run_id))),
    }
    .encoded_len();
    let workload: Arc<dyn Workload> = Arc::new(lag);
    let rate = bench.common.rate.unwrap_or(DEFAULT_RATE);
    let load = bench.load(Some(rate), bench.common.duration);
    let measured = bench.measure("lag", &workload, &load, bench.common.warmup).await?;
    let row = Row::new("lag", Role::Scenario, &load, request_bytes, &measured);
    let mut report = bench.report("lag", vec![row], None, None);
    report.settings.rate = Some(rate);
    Ok(report)
}
