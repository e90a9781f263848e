//! `GET /v1/profiles/{id}`: the id is tried as a user id, then as an
//! anonymous id.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use rtim_proto::profile::v1::GetProfileRequest;
use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_client::ProfileServiceClient;
use rtim_runtime::auth::Scope;
use rtim_runtime::client::TracedChannel;

use super::Api;
use crate::mapping::replies::ProfileReply;
use crate::mapping::requests;
use crate::problem::Problem;

type ProfilesApi = Api<ProfileServiceClient<TracedChannel>>;

pub fn router(api: ProfilesApi) -> Router {
    Router::new()
        .route("/v1/profiles/{id}", get(get_profile))
        .with_state(api)
}

async fn get_profile(
    State(api): State<ProfilesApi>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProfileReply>, Problem> {
    let caller = api.auth.authorize(&headers, &[Scope::Read])?;
    let Path(id) = id?;
    requests::check_path_id("id", &id).map_err(Problem::invalid)?;
    for lookup in [Lookup::UserId(id.clone()), Lookup::AnonymousId(id.clone())] {
        let request = api
            .upstream
            .request(&caller, GetProfileRequest { lookup: Some(lookup) })?;
        match api.upstream.call_status(api.client.clone().get_profile(request)).await {
            Ok(response) => {
                if let Some(profile) = response.profile {
                    return Ok(Json(ProfileReply::from(profile)));
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(api.upstream.problem(&status)),
        }
    }
    Err(Problem::not_found(format!(
        "no profile has the user id or anonymous id '{id}'"
    )))
}
