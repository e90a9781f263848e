//! `GET /v1/points/{user_id}`: a shopper's point balance.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use rtim_proto::gamification::v1::GetBalanceRequest;
use rtim_proto::gamification::v1::gamification_service_client::GamificationServiceClient;
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;

use super::Api;
use crate::mapping::replies::BalanceReply;
use crate::mapping::requests;
use crate::problem::Problem;

type PointsApi = Api<GamificationServiceClient<TracedChannel>>;

pub fn router(api: PointsApi) -> Router {
    Router::new()
        .route("/v1/points/{user_id}", get(balance))
        .with_state(api)
}

async fn balance(
    State(api): State<PointsApi>,
    headers: HeaderMap,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Json<BalanceReply>, Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Read])?;
    let Path(user_id) = user_id?;
    requests::check_path_id("user_id", &user_id).map_err(Problem::invalid)?;
    let request = api.upstream.request(&caller, GetBalanceRequest { user_id })?;
    let response = api.upstream.call(api.client.clone().get_balance(request)).await?;
    Ok(Json(BalanceReply::from(response)))
}
