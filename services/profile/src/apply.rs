//! The event consumer: resolves the shopper's identity, then applies the
//! event to the profile, in one transaction per batch.

use rtim_bus::worker::{BatchHandler, Incoming};
use rtim_proto::events::v1::{Event, EventType};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

use crate::state::{ProfileState, event_time};
use crate::store::{self, ANONYMOUS_ID, StoreError, USER_ID};

pub struct ProfileConsumer {
    db: DatabaseConnection,
}

impl ProfileConsumer {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl BatchHandler for ProfileConsumer {
    async fn handle(&self, batch: &[Incoming]) -> anyhow::Result<()> {
        let transaction = self.db.begin().await?;
        for incoming in batch {
            let Some(event) = incoming.envelope.event.as_ref() else {
                tracing::warn!(event.id = %incoming.message_id, "envelope without an event, skipping it");
                continue;
            };
            if !rtim_store::inbox::claim(&transaction, &incoming.tenant, &event.message_id).await? {
                continue;
            }
            apply_event(&transaction, &incoming.tenant, event).await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

/// Applies one event to the profile it belongs to.
pub async fn apply_event<C: ConnectionTrait>(db: &C, tenant: &str, event: &Event) -> Result<(), StoreError> {
    let mut state = match event.r#type() {
        EventType::Alias => resolve_alias(db, tenant, &event.user_id, &event.previous_id, event).await?,
        _ => resolve(db, tenant, &event.user_id, &event.anonymous_id, event).await?,
    };
    state.apply(event);
    store::save(db, tenant, &state).await?;
    Ok(())
}

/// Finds or creates the profile of a shopper, linking a user id and an
/// anonymous id that arrive together, and merging an anonymous profile into
/// the user's profile when both already exist.
async fn resolve<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    user_id: &str,
    anonymous_id: &str,
    event: &Event,
) -> Result<ProfileState, StoreError> {
    let by_user = store::find_identity(db, tenant, USER_ID, user_id).await?;
    let by_anonymous = store::find_identity(db, tenant, ANONYMOUS_ID, anonymous_id).await?;

    match (by_user, by_anonymous) {
        (Some(user_profile), Some(anonymous_profile)) if user_profile != anonymous_profile => {
            let mut state = load_existing(db, tenant, &user_profile, event).await?;
            if let Some(anonymous) = store::load(db, tenant, &anonymous_profile).await?
                && anonymous.user_id.is_none()
            {
                state.merge(anonymous);
                store::move_identities(db, tenant, &anonymous_profile, &user_profile).await?;
                store::delete(db, tenant, &anonymous_profile).await?;
                tracing::debug!(tenant.id = tenant, profile.id = %user_profile, "merged anonymous profile");
            }
            Ok(state)
        }
        (Some(profile_id), _) => {
            if !anonymous_id.is_empty() {
                store::link_identity(db, tenant, ANONYMOUS_ID, anonymous_id, &profile_id).await?;
            }
            load_existing(db, tenant, &profile_id, event).await
        }
        (None, Some(profile_id)) => {
            let state = load_existing(db, tenant, &profile_id, event).await?;
            match (&state.user_id, user_id.is_empty()) {
                // The anonymous profile belongs to another user: a shared device.
                (Some(owner), false) if owner != user_id => create(db, tenant, user_id, "", event).await,
                (_, false) => {
                    store::link_identity(db, tenant, USER_ID, user_id, &profile_id).await?;
                    Ok(state)
                }
                (_, true) => Ok(state),
            }
        }
        (None, None) => create(db, tenant, user_id, anonymous_id, event).await,
    }
}

/// Resolves an alias call: the profile known by `previous_id` (a user id or
/// an anonymous id) becomes part of the profile of `user_id`. This happens
/// even when it already had a user id, because an alias states that both
/// ids are one person.
async fn resolve_alias<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    user_id: &str,
    previous_id: &str,
    event: &Event,
) -> Result<ProfileState, StoreError> {
    let previous = match store::find_identity(db, tenant, USER_ID, previous_id).await? {
        Some(profile_id) => Some(profile_id),
        None => store::find_identity(db, tenant, ANONYMOUS_ID, previous_id).await?,
    };
    let target = store::find_identity(db, tenant, USER_ID, user_id).await?;

    match (target, previous) {
        (Some(target), Some(previous)) if target != previous => {
            let mut state = load_existing(db, tenant, &target, event).await?;
            if let Some(merged) = store::load(db, tenant, &previous).await? {
                state.merge(merged);
            }
            store::move_identities(db, tenant, &previous, &target).await?;
            store::delete(db, tenant, &previous).await?;
            Ok(state)
        }
        (Some(target), Some(_)) => load_existing(db, tenant, &target, event).await,
        (Some(target), None) => {
            store::link_identity(db, tenant, ANONYMOUS_ID, previous_id, &target).await?;
            load_existing(db, tenant, &target, event).await
        }
        (None, Some(previous)) => {
            store::link_identity(db, tenant, USER_ID, user_id, &previous).await?;
            let mut state = load_existing(db, tenant, &previous, event).await?;
            state.user_id = Some(user_id.to_owned());
            Ok(state)
        }
        (None, None) => create(db, tenant, user_id, previous_id, event).await,
    }
}

async fn load_existing<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    profile_id: &str,
    event: &Event,
) -> Result<ProfileState, StoreError> {
    Ok(store::load(db, tenant, profile_id)
        .await?
        .unwrap_or_else(|| ProfileState::new(profile_id.to_owned(), event_time(event))))
}

async fn create<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    user_id: &str,
    anonymous_id: &str,
    event: &Event,
) -> Result<ProfileState, StoreError> {
    let profile_id = uuid::Uuid::new_v4().to_string();
    if !user_id.is_empty() {
        store::link_identity(db, tenant, USER_ID, user_id, &profile_id).await?;
    }
    if !anonymous_id.is_empty() {
        store::link_identity(db, tenant, ANONYMOUS_ID, anonymous_id, &profile_id).await?;
    }
    Ok(ProfileState::new(profile_id, event_time(event)))
}
