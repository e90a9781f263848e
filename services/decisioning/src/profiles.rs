//! Reads shopper profiles from the profile service for Decide, through a
//! short-lived cache. [`ProfileReader::read`] returns no error: when the
//! profile service fails, the caller gets an empty profile and the reason.

use std::time::Duration;

use prost::Message;
use rtim_cache::Cache;
use rtim_proto::profile::v1::profile_service_client::ProfileServiceClient;
use rtim_proto::profile::v1::{GetProfileRequest, Profile, get_profile_request::Lookup};
use rtim_runtime::auth::{self, TenantId};
use rtim_runtime::client::TracedChannel;
use tonic::{Code, Request};

/// The shopper a decision is for, keyed as the caller sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shopper {
    User(String),
    Anonymous(String),
}

impl Shopper {
    /// Prefers the user id, which the profile service resolves across devices.
    pub fn new(user_id: &str, anonymous_id: &str) -> Self {
        if user_id.is_empty() {
            Shopper::Anonymous(anonymous_id.to_owned())
        } else {
            Shopper::User(user_id.to_owned())
        }
    }

    fn lookup(&self) -> Lookup {
        match self {
            Shopper::User(id) => Lookup::UserId(id.clone()),
            Shopper::Anonymous(id) => Lookup::AnonymousId(id.clone()),
        }
    }

    fn cache_key(&self, tenant: &TenantId) -> String {
        match self {
            Shopper::User(id) => format!("profile:{tenant}:user:{id}"),
            Shopper::Anonymous(id) => format!("profile:{tenant}:anonymous:{id}"),
        }
    }

    /// A profile with no history, for a shopper the profile service does not
    /// know or could not return.
    fn empty_profile(&self) -> Profile {
        match self {
            Shopper::User(id) => Profile {
                user_id: id.clone(),
                ..Profile::default()
            },
            Shopper::Anonymous(id) => Profile {
                anonymous_ids: vec![id.clone()],
                ..Profile::default()
            },
        }
    }
}

/// The profile a decision uses.
#[derive(Clone, Debug)]
pub struct ProfileRead {
    pub profile: Profile,
    /// Set when the profile service failed and `profile` is empty for that reason.
    pub degraded_reason: Option<String>,
}

#[derive(Clone)]
pub struct ProfileReader {
    client: ProfileServiceClient<TracedChannel>,
    cache: Cache,
    ttl: Duration,
}

impl ProfileReader {
    /// Builds a reader over `cache`, already scoped to the service, whose
    /// entries live for `ttl`.
    pub fn new(channel: TracedChannel, cache: Cache, ttl: Duration) -> Self {
        Self {
            client: ProfileServiceClient::new(channel),
            cache,
            ttl,
        }
    }

    /// Returns the shopper's profile, calling the profile service with the
    /// credential of `incoming` on a cache miss.
    pub async fn read<T>(&self, incoming: &Request<T>, tenant: &TenantId, shopper: &Shopper) -> ProfileRead {
        let key = shopper.cache_key(tenant);
        if let Some(profile) = self.cached(&key).await {
            metrics::counter!("rtim_decisioning_profile_reads_total", "source" => "cache").increment(1);
            return ProfileRead {
                profile,
                degraded_reason: None,
            };
        }

        let outgoing = auth::forward(
            incoming,
            Request::new(GetProfileRequest {
                lookup: Some(shopper.lookup()),
            }),
        );
        let profile = match self.client.clone().get_profile(outgoing).await {
            Ok(response) => {
                metrics::counter!("rtim_decisioning_profile_reads_total", "source" => "service").increment(1);
                response.into_inner().profile.unwrap_or_else(|| shopper.empty_profile())
            }
            Err(status) if status.code() == Code::NotFound => {
                metrics::counter!("rtim_decisioning_profile_reads_total", "source" => "unknown").increment(1);
                shopper.empty_profile()
            }
            Err(status) => return degraded(tenant, shopper, &status),
        };
        self.store(&key, &profile).await;
        ProfileRead {
            profile,
            degraded_reason: None,
        }
    }

    async fn cached(&self, key: &str) -> Option<Profile> {
        let bytes = match self.cache.get(key).await {
            Ok(bytes) => bytes?,
            Err(error) => {
                tracing::warn!(%error, "profile cache read failed, calling the profile service");
                return None;
            }
        };
        match Profile::decode(bytes.as_slice()) {
            Ok(profile) => Some(profile),
            Err(error) => {
                tracing::warn!(%error, "cached profile is undecodable, calling the profile service");
                None
            }
        }
    }

    async fn store(&self, key: &str, profile: &Profile) {
        if let Err(error) = self.cache.set(key, &profile.encode_to_vec(), self.ttl).await {
            tracing::warn!(%error, "profile cache write failed, the next decision reads the profile again");
        }
    }
}

fn degraded(tenant: &TenantId, shopper: &Shopper, status: &tonic::Status) -> ProfileRead {
    tracing::warn!(
        tenant.id = %tenant,
        grpc.code = ?status.code(),
        error = %status.message(),
        "profile read failed, deciding with an empty profile"
    );
    metrics::counter!("rtim_decisioning_profile_reads_total", "source" => "fallback").increment(1);
    ProfileRead {
        profile: shopper.empty_profile(),
        degraded_reason: Some(format!(
            "profile service failed with {:?}; decided with an empty profile",
            status.code()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_is_preferred() {
        assert_eq!(Shopper::new("u-1", "a-1"), Shopper::User("u-1".to_owned()));
        assert_eq!(Shopper::new("", "a-1"), Shopper::Anonymous("a-1".to_owned()));
    }

    #[test]
    fn cache_keys_separate_tenants_and_kinds() {
        let acme = TenantId("acme".to_owned());
        let other = TenantId("other".to_owned());
        let user = Shopper::User("x".to_owned());
        let anonymous = Shopper::Anonymous("x".to_owned());
        assert_ne!(user.cache_key(&acme), user.cache_key(&other), "tenants");
        assert_ne!(user.cache_key(&acme), anonymous.cache_key(&acme), "identity kinds");
    }
}
