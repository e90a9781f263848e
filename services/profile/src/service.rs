//! `ProfileService`: reads profiles by user id or anonymous id.

use rtim_proto::json::{datetime_to_timestamp, json_to_struct};
use rtim_proto::profile::v1 as pb;
use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_server::ProfileService;
use rtim_runtime::auth::{self, Scope};
use rtim_runtime::errors;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::state::{ProfileState, shares};
use crate::store::{self, ANONYMOUS_ID, USER_ID};

pub struct Profiles {
    db: DatabaseConnection,
}

impl Profiles {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl ProfileService for Profiles {
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let tenant = auth::caller(&request)?
            .require_any(&[Scope::Read, Scope::Decide])?
            .clone();
        let (kind, value) = match request.into_inner().lookup {
            Some(Lookup::UserId(id)) if !id.is_empty() => (USER_ID, id),
            Some(Lookup::AnonymousId(id)) if !id.is_empty() => (ANONYMOUS_ID, id),
            _ => {
                return Err(errors::invalid_field(
                    "user_id",
                    "either user_id or anonymous_id is required",
                ));
            }
        };
        let profile_id = store::find_identity(&self.db, tenant.as_str(), kind, &value)
            .await
            .map_err(|error| errors::internal("look up identity", error))?
            .ok_or_else(|| errors::not_found("profile", &value))?;
        let state = store::load(&self.db, tenant.as_str(), &profile_id)
            .await
            .map_err(|error| errors::internal("load profile", error))?
            .ok_or_else(|| errors::not_found("profile", &value))?;
        let anonymous_ids = store::anonymous_ids(&self.db, tenant.as_str(), &profile_id)
            .await
            .map_err(|error| errors::internal("list anonymous ids", error))?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(to_proto(state, anonymous_ids)),
        }))
    }
}

fn to_proto(state: ProfileState, anonymous_ids: Vec<String>) -> pb::Profile {
    pb::Profile {
        category_affinity: shares(&state.category_counts),
        brand_affinity: shares(&state.brand_counts),
        profile_id: state.profile_id,
        user_id: state.user_id.unwrap_or_default(),
        anonymous_ids,
        event_counts: state.event_counts.into_iter().collect(),
        first_seen: Some(datetime_to_timestamp(state.first_seen)),
        last_seen: Some(datetime_to_timestamp(state.last_seen)),
        recently_viewed: state
            .recently_viewed
            .into_iter()
            .map(|viewed| viewed.product_id)
            .collect(),
        cart_value: state.cart_value,
        traits: Some(json_to_struct(state.traits)),
        groups: state
            .groups
            .into_iter()
            .map(|(group_id, traits)| (group_id, json_to_struct(traits)))
            .collect(),
        total_spent: state.total_spent,
        order_count: state.order_count,
    }
}
