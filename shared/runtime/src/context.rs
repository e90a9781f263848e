//! The dependencies a service's `run` receives. In the mesh each process
//! builds its own from settings; in embedded mode one in-process bus and
//! cache are shared by every service.

use std::sync::Arc;

use rtim_bus::{Bus, BusConfig};
use rtim_cache::Cache;

use crate::auth::{ApiKeys, AuthConfigError};
use crate::settings::Settings;

#[derive(Clone, Debug)]
pub struct ServiceContext {
    pub settings: Arc<Settings>,
    pub keys: ApiKeys,
    pub bus: Bus,
    /// Root cache; each service scopes it with its own name.
    pub cache: Cache,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Bus(#[from] rtim_bus::BusError),
    #[error(transparent)]
    Cache(#[from] rtim_cache::CacheError),
}

impl ServiceContext {
    /// Connects the bus and cache named in `settings` and loads the API keys.
    pub async fn connect(settings: Settings) -> Result<Self, ContextError> {
        let keys = ApiKeys::from_settings(&settings.auth)?;
        if keys.is_empty() {
            tracing::warn!("no API keys configured, every request will be rejected");
        }
        let bus = Bus::connect(&bus_config(&settings)).await?;
        let cache = Cache::connect(&settings.cache.url, &settings.cache.prefix, settings.cache.pool_size)?;
        Ok(Self {
            settings: Arc::new(settings),
            keys,
            bus,
            cache,
        })
    }
}

/// Extracts the bus part of the settings.
pub fn bus_config(settings: &Settings) -> BusConfig {
    BusConfig {
        url: settings.bus.url.clone(),
        subject_prefix: settings.bus.subject_prefix.clone(),
        max_deliver: settings.bus.max_deliver,
        ack_wait: settings.bus.ack_wait,
        publish_timeout: settings.bus.publish_timeout,
        duplicate_window: settings.bus.duplicate_window,
        dead_letter_max_age: settings.bus.dead_letter_max_age,
        dead_letter_max_bytes: settings.bus.dead_letter_max_bytes,
    }
}
