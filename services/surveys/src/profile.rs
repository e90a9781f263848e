//! Profiles from the profile service, which targeting is evaluated against.

use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_client::ProfileServiceClient;
use rtim_proto::profile::v1::{GetProfileRequest, Profile};
use rtim_runtime::auth;
use rtim_runtime::client::TracedChannel;

use crate::error::SurveyError;

/// A shopper as the request identifies them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shopper {
    User(String),
    Anonymous(String),
}

impl Shopper {
    /// Returns the shopper of a request: `user_id` when set, else
    /// `anonymous_id`, else `None`.
    pub fn from_ids(user_id: &str, anonymous_id: &str) -> Option<Shopper> {
        if !user_id.is_empty() {
            Some(Shopper::User(user_id.to_owned()))
        } else if !anonymous_id.is_empty() {
            Some(Shopper::Anonymous(anonymous_id.to_owned()))
        } else {
            None
        }
    }

    /// Returns the key that responses are stored under, which is the literal id.
    pub fn key(&self) -> &str {
        match self {
            Shopper::User(id) | Shopper::Anonymous(id) => id,
        }
    }
}

/// Reads profiles over gRPC.
#[derive(Clone, Debug)]
pub struct ProfileSource {
    client: ProfileServiceClient<TracedChannel>,
}

impl ProfileSource {
    pub fn new(channel: TracedChannel) -> Self {
        Self {
            client: ProfileServiceClient::new(channel),
        }
    }

    /// Fetches the shopper's profile with the credential of `incoming`, the
    /// request being served. A shopper without a profile gets an empty one.
    pub async fn fetch<T>(&self, incoming: &tonic::Request<T>, shopper: &Shopper) -> Result<Profile, SurveyError> {
        let lookup = match shopper {
            Shopper::User(id) => Lookup::UserId(id.clone()),
            Shopper::Anonymous(id) => Lookup::AnonymousId(id.clone()),
        };
        let request = auth::forward(
            incoming,
            tonic::Request::new(GetProfileRequest { lookup: Some(lookup) }),
        );
        match self.client.clone().get_profile(request).await {
            Ok(response) => Ok(response.into_inner().profile.unwrap_or_default()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(Profile::default()),
            Err(status) => Err(SurveyError::ProfileUnavailable { status }),
        }
    }
}
