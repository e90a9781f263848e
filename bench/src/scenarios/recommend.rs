//! `recommend`: Recommend calls alternating between a shopper and a product
//! of the data file.

use std::sync::Arc;

use prost::Message;
use rtim_proto::recommendations::v1::RecommendRequest;
use rtim_proto::recommendations::v1::recommendations_service_client::RecommendationsServiceClient;
use tonic::transport::Channel;

use super::{Baseline, Bench, Target, mean_size};
use crate::dataset::Dataset;
use crate::driver::{Call, Workload};
use crate::grpc::{Credential, label};

/// Items asked for per call.
const LIMIT: i32 = 10;

struct Recommend {
    clients: Vec<RecommendationsServiceClient<Channel>>,
    credential: Credential,
    dataset: Arc<Dataset>,
}

/// Request `index`: for a shopper when even, for a product when odd.
fn request(dataset: &Dataset, index: u64) -> RecommendRequest {
    let draw = index / 2;
    if index.is_multiple_of(2) {
        RecommendRequest {
            user_id: dataset.user(draw).to_owned(),
            limit: LIMIT,
            ..RecommendRequest::default()
        }
    } else {
        RecommendRequest {
            item_id: dataset.product(draw).to_owned(),
            limit: LIMIT,
            ..RecommendRequest::default()
        }
    }
}

impl Workload for Recommend {
    fn call(&self, index: u64) -> Call {
        let mut client = self.clients[(index % self.clients.len() as u64) as usize].clone();
        let request = self.credential.request(request(&self.dataset, index));
        Box::pin(async move {
            match client.recommend(request).await {
                Ok(_) => Ok(1),
                Err(status) => Err(label(&status)),
            }
        })
    }
}

pub fn target(bench: &Bench) -> anyhow::Result<Target> {
    let clients = bench
        .channels(&bench.endpoints.recommendations)?
        .into_iter()
        .map(RecommendationsServiceClient::new)
        .collect();
    let dataset = bench.dataset.clone();
    Ok(Target {
        name: "recommend",
        request_bytes: mean_size(|index| request(&dataset, index).encoded_len()),
        workload: Arc::new(Recommend {
            clients,
            credential: bench.credential.clone(),
            dataset,
        }),
        baseline: Baseline::Echo,
        counts_events: false,
    })
}
