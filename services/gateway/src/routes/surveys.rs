//! Surveys: the surveys a shopper is eligible for, response submission and
//! NPS results.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use rtim_proto::surveys::v1::GetSurveyResultsRequest;
use rtim_proto::surveys::v1::surveys_service_client::SurveysServiceClient;
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;

use super::Api;
use crate::body;
use crate::mapping::replies::{SubmittedReply, SurveyReply, SurveyResultsReply, SurveysReply};
use crate::mapping::requests;
use crate::problem::Problem;

type SurveysApi = Api<SurveysServiceClient<TracedChannel>>;

pub fn router(api: SurveysApi) -> Router {
    Router::new()
        .route("/v1/surveys/eligible", get(eligible))
        .route("/v1/surveys/{id}/responses", post(submit))
        .route("/v1/surveys/{id}/results", get(results))
        .with_state(api)
}

async fn eligible(
    State(api): State<SurveysApi>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SurveysReply>, Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Read])?;
    let Query(query) = query?;
    let message = requests::eligible_request(query).map_err(Problem::invalid)?;
    let request = api.upstream.request(&caller, message)?;
    let response = api
        .upstream
        .call(api.client.clone().list_eligible_surveys(request))
        .await?;
    let surveys = response.surveys.into_iter().map(SurveyReply::from).collect();
    Ok(Json(SurveysReply { surveys }))
}

async fn submit(
    State(api): State<SurveysApi>,
    headers: HeaderMap,
    survey_id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<(StatusCode, Json<SubmittedReply>), Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Read])?;
    let Path(survey_id) = survey_id?;
    requests::check_path_id("id", &survey_id).map_err(Problem::invalid)?;
    let body = body::json(body, api.body_limit).await?;
    let message = requests::survey_response(&body, survey_id).map_err(Problem::invalid)?;
    let request = api.upstream.request(&caller, message)?;
    let response = api.upstream.call(api.client.clone().submit_response(request)).await?;
    let reply = SubmittedReply {
        response_id: response.response_id,
    };
    Ok((StatusCode::CREATED, Json(reply)))
}

/// Results are for the shop's own staff as much as for its pages, so an
/// admin key may read them too.
async fn results(
    State(api): State<SurveysApi>,
    headers: HeaderMap,
    survey_id: Result<Path<String>, PathRejection>,
) -> Result<Json<SurveyResultsReply>, Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Read, Scope::Admin])?;
    let Path(survey_id) = survey_id?;
    requests::check_path_id("id", &survey_id).map_err(Problem::invalid)?;
    let request = api.upstream.request(&caller, GetSurveyResultsRequest { survey_id })?;
    let response = api
        .upstream
        .call(api.client.clone().get_survey_results(request))
        .await?;
    Ok(Json(SurveyResultsReply::from(response)))
}
