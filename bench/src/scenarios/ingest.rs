//! `ingest`: Batch calls of 100 events from the data file, each with new
//! message ids, timed until ingestion returns, which it does only after
//! JetStream has acknowledged every event.

use std::sync::Arc;

use prost::Message;
use rtim_proto::ingestion::v1::BatchRequest;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use tonic::transport::Channel;

use super::{BATCH_SIZE, Baseline, Bench, Target};
use crate::dataset::Dataset;
use crate::driver::{Call, Workload};
use crate::grpc::{Credential, label};

/// Largest response ingestion may send for a batch, in bytes.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

struct Ingest {
    clients: Vec<IngestionServiceClient<Channel>>,
    credential: Credential,
    dataset: Arc<Dataset>,
}

impl Workload for Ingest {
    fn call(&self, index: u64) -> Call {
        let mut client = self.clients[(index % self.clients.len() as u64) as usize].clone();
        let request = self.credential.request(BatchRequest {
            events: self.dataset.batch(index, BATCH_SIZE),
        });
        Box::pin(async move {
            let response = client
                .batch(request)
                .await
                .map_err(|status| label(&status))?
                .into_inner();
            if let Some(rejected) = response.results.iter().find(|result| !result.accepted) {
                return Err(format!("event rejected: {}", rejected.reason));
            }
            if response.results.iter().any(|result| result.duplicate) {
                return Err("event stored as a duplicate".to_owned());
            }
            Ok(response.accepted as u64)
        })
    }
}

pub fn target(bench: &Bench) -> anyhow::Result<Target> {
    let clients = bench
        .channels(&bench.endpoints.ingestion)?
        .into_iter()
        .map(|channel| IngestionServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
        .collect();
    let request_bytes = BatchRequest {
        events: bench.dataset.batch(0, BATCH_SIZE),
    }
    .encoded_len();
    Ok(Target {
        name: "ingest",
        workload: Arc::new(Ingest {
            clients,
            credential: bench.credential.clone(),
            dataset: bench.dataset.clone(),
        }),
        request_bytes,
        baseline: Baseline::JetStream,
        counts_events: true,
    })
}
