//! `decide`: Decide calls on placement `bench` for shoppers of the data file,
//! over a catalog of 500 actions whose conditions read the profile. The
//! profiles come from an earlier replay of the same file.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use rtim_proto::decisioning::v1::decisioning_service_client::DecisioningServiceClient;
use rtim_proto::decisioning::v1::{Action, DecideRequest, ListActionsRequest, PutActionRequest};
use rtim_proto::json::json_to_struct;
use serde_json::json;
use tonic::transport::Channel;

use super::{Baseline, Bench, Target, mean_size};
use crate::dataset::Dataset;
use crate::driver::{Call, Workload};
use crate::grpc::{Credential, label};

pub const PLACEMENT: &str = "bench";
pub const CATALOG_SIZE: usize = 500;
/// Actions asked for per Decide call.
const LIMIT: i32 = 3;
/// PutAction calls in flight while the catalog is written.
const CATALOG_WRITERS: usize = 8;

/// Builds the benchmark's actions: `bench-000` to `bench-499` on placement `bench`,
/// with thresholds, values and priorities varied so that each shopper is
/// eligible for a different subset.
pub fn catalog() -> Vec<Action> {
    (0..CATALOG_SIZE).map(action).collect()
}

fn action(index: usize) -> Action {
    let threshold = (index % 50) as f64 * 20.0;
    let condition = match index % 3 {
        0 => format!("profile.cart_value > {threshold:.1} && 'Product Viewed' in profile.event_counts"),
        1 => format!(
            "profile.order_count >= {} || profile.cart_value > {threshold:.1}",
            index % 4 + 1
        ),
        _ => format!("'Product Added' in profile.event_counts && profile.total_spent >= {threshold:.1}"),
    };
    let serde_json::Value::Object(payload) = json!({
        "headline": format!("Benchmark offer {index}"),
        "coupon": format!("BENCH{index:03}"),
    }) else {
        unreachable!("the literal is an object");
    };
    Action {
        id: format!("bench-{index:03}"),
        name: format!("Benchmark action {index}"),
        placements: vec![PLACEMENT.to_owned()],
        condition,
        value: 1.0 + (index % 40) as f64,
        priority: 0.5 + (index % 5) as f64 * 0.25,
        payload: Some(json_to_struct(payload)),
    }
}

/// Writes the catalog's actions that are missing or differ from what
/// decisioning stores, and returns how many it wrote.
async fn ensure_catalog(client: &DecisioningServiceClient<Channel>, credential: &Credential) -> anyhow::Result<usize> {
    let stored = client
        .clone()
        .list_actions(credential.request(ListActionsRequest {
            placement: PLACEMENT.to_owned(),
        }))
        .await
        .map_err(|status| anyhow::anyhow!("{}", label(&status)))
        .context("cannot list the actions of placement 'bench' (the API key needs the admin scope)")?
        .into_inner()
        .actions;
    let stored: HashMap<String, Action> = stored.into_iter().map(|action| (action.id.clone(), action)).collect();
    let missing: Vec<Action> = catalog()
        .into_iter()
        .filter(|action| stored.get(&action.id) != Some(action))
        .collect();
    let written = missing.len();
    futures::stream::iter(missing)
        .map(|action| {
            let mut client = client.clone();
            let id = action.id.clone();
            let request = credential.request(PutActionRequest { action: Some(action) });
            async move {
                client
                    .put_action(request)
                    .await
                    .map_err(|status| anyhow::anyhow!("cannot save action {id}: {}", label(&status)))
            }
        })
        .buffer_unordered(CATALOG_WRITERS)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(written)
}

struct Decide {
    clients: Vec<DecisioningServiceClient<Channel>>,
    credential: Credential,
    dataset: Arc<Dataset>,
}

fn request(dataset: &Dataset, index: u64) -> DecideRequest {
    DecideRequest {
        placement: PLACEMENT.to_owned(),
        user_id: dataset.user(index).to_owned(),
        limit: LIMIT,
        ..DecideRequest::default()
    }
}

impl Workload for Decide {
    fn call(&self, index: u64) -> Call {
        let mut client = self.clients[(index % self.clients.len() as u64) as usize].clone();
        let request = self.credential.request(request(&self.dataset, index));
        Box::pin(async move {
            let response = client
                .decide(request)
                .await
                .map_err(|status| label(&status))?
                .into_inner();
            if response.degraded {
                return Err(format!("degraded: {}", response.degraded_reason));
            }
            Ok(1)
        })
    }
}

/// Ensures the catalog exists, then builds the target.
pub async fn target(bench: &Bench) -> anyhow::Result<Target> {
    let clients: Vec<_> = bench
        .channels(&bench.endpoints.decisioning)?
        .into_iter()
        .map(DecisioningServiceClient::new)
        .collect();
    let written = ensure_catalog(&clients[0], &bench.credential).await?;
    bench.note(&format!(
        "catalog: {CATALOG_SIZE} actions on placement '{PLACEMENT}', {written} written now"
    ));
    let dataset = bench.dataset.clone();
    Ok(Target {
        name: "decide",
        request_bytes: mean_size(|index| request(&dataset, index).encoded_len()),
        workload: Arc::new(Decide {
            clients,
            credential: bench.credential.clone(),
            dataset,
        }),
        baseline: Baseline::Echo,
        counts_events: false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rtim_rules::Rule;
    use serde_json::json;

    use super::*;

    #[test]
    fn catalog_ids_are_distinct() {
        let ids: HashSet<String> = catalog().into_iter().map(|action| action.id).collect();
        assert_eq!(ids.len(), CATALOG_SIZE, "distinct ids");
    }

    #[test]
    fn conditions_evaluate() {
        let profile = json!({
            "cart_value": 250.0,
            "order_count": 1,
            "total_spent": 120.0,
            "event_counts": {"Product Viewed": 3, "Product Added": 1},
        });
        let mut eligible = 0;
        for action in catalog() {
            let rule = Rule::compile(&action.condition, &["profile", "context"])
                .unwrap_or_else(|error| panic!("{} compiles: {error}", action.id));
            let holds = rule
                .eval_bool(&[("profile", &profile)])
                .unwrap_or_else(|error| panic!("{} evaluates: {error}", action.id));
            eligible += usize::from(holds);
        }
        assert!(eligible > 0, "some actions are eligible");
        assert!(eligible < CATALOG_SIZE, "some actions are not eligible");
    }
}
