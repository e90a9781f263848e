//! `POST /v1/decide`: the best actions for a shopper on a placement.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use rtim_proto::decisioning::v1::decisioning_service_client::DecisioningServiceClient;
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;

use super::Api;
use crate::body;
use crate::mapping::replies::DecisionReply;
use crate::mapping::requests;
use crate::problem::Problem;

type DecideApi = Api<DecisioningServiceClient<TracedChannel>>;

pub fn router(api: DecideApi) -> Router {
    Router::new().route("/v1/decide", post(decide)).with_state(api)
}

async fn decide(State(api): State<DecideApi>, headers: HeaderMap, body: Body) -> Result<Json<DecisionReply>, Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Decide])?;
    let body = body::json(body, api.body_limit).await?;
    let message = requests::decide_request(&body).map_err(Problem::invalid)?;
    let request = api.upstream.request(&caller, message)?;
    let response = api.upstream.call(api.client.clone().decide(request)).await?;
    Ok(Json(DecisionReply::from(response)))
}
