//! `GET /v1/recommendations?item_id=..|user_id=..|anonymous_id=..&limit=..`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use rtim_proto::recommendations::v1::recommendations_service_client::RecommendationsServiceClient;
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;

use super::Api;
use crate::mapping::replies::{RecommendationReply, RecommendationsReply};
use crate::mapping::requests;
use crate::problem::Problem;

type RecommendationsApi = Api<RecommendationsServiceClient<TracedChannel>>;

pub fn router(api: RecommendationsApi) -> Router {
    Router::new()
        .route("/v1/recommendations", get(recommend))
        .with_state(api)
}

async fn recommend(
    State(api): State<RecommendationsApi>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<RecommendationsReply>, Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Read])?;
    let Query(query) = query?;
    let message = requests::recommend_request(query).map_err(Problem::invalid)?;
    let request = api.upstream.request(&caller, message)?;
    let response = api.upstream.call(api.client.clone().recommend(request)).await?;
    let recommendations = response
        .recommendations
        .into_iter()
        .map(RecommendationReply::from)
        .collect();
    Ok(Json(RecommendationsReply { recommendations }))
}
