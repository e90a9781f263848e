//! Cache for hot, rebuildable state: Redis (through deadpool-redis) in the
//! mesh, an in-process map in embedded mode. Keys are namespaced: a
//! [`Cache`] carries a prefix and [`Cache::scoped`] extends it, so each
//! service owns its own key space.
//!
//! Reads through a scoped cache count `rtim_cache_hits_total` and
//! `rtim_cache_misses_total`, labelled `cache` with the scope's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_redis::redis::AsyncCommands;
use metrics::Counter;

/// Reads that found a live value.
pub const HITS_TOTAL: &str = "rtim_cache_hits_total";
/// Reads that found no value or an expired one.
pub const MISSES_TOTAL: &str = "rtim_cache_misses_total";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid Redis configuration '{url}': {message}")]
    Config { url: String, message: String },
    #[error("Redis connection pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
}

#[derive(Clone)]
pub struct Cache {
    prefix: String,
    backend: Backend,
    hits: Counter,
    misses: Counter,
}

#[derive(Clone)]
enum Backend {
    Redis(deadpool_redis::Pool),
    Memory(Arc<Mutex<HashMap<String, Entry>>>),
}

#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        };
        f.debug_struct("Cache")
            .field("prefix", &self.prefix)
            .field("backend", &backend)
            .finish()
    }
}

impl Cache {
    /// Connects to `redis://...` with a pool of `pool_size`, or builds an
    /// in-process cache for `memory`. The Redis pool connects lazily.
    pub fn connect(url: &str, prefix: &str, pool_size: usize) -> Result<Cache, CacheError> {
        if url == "memory" {
            return Ok(Cache::memory(prefix));
        }
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(deadpool_redis::PoolConfig::new(pool_size));
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|error| CacheError::Config {
                url: url.to_owned(),
                message: error.to_string(),
            })?;
        Ok(Cache::new(prefix, Backend::Redis(pool)))
    }

    pub fn memory(prefix: &str) -> Cache {
        Cache::new(prefix, Backend::Memory(Arc::default()))
    }

    /// Builds a root cache, which counts no reads: only scopes have a name
    /// to label them with.
    fn new(prefix: &str, backend: Backend) -> Cache {
        Cache {
            prefix: prefix.to_owned(),
            backend,
            hits: Counter::noop(),
            misses: Counter::noop(),
        }
    }

    /// Returns a view of the same cache under `<prefix><suffix>`. Its reads
    /// are counted under `cache` = `suffix` without its trailing `:`, so
    /// scope once at start-up, not per request.
    pub fn scoped(&self, suffix: &str) -> Cache {
        let name = suffix.trim_end_matches(':').to_owned();
        Cache {
            prefix: format!("{}{}", self.prefix, suffix),
            backend: self.backend.clone(),
            hits: metrics::counter!(HITS_TOTAL, "cache" => name.clone()),
            misses: metrics::counter!(MISSES_TOTAL, "cache" => name),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Reads a value; counts a hit or a miss, and neither when the read fails.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let value = self.read(key).await?;
        match value {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        Ok(value)
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let key = self.key(key);
        match &self.backend {
            Backend::Redis(pool) => Ok(pool.get().await?.get(key).await?),
            Backend::Memory(map) => {
                let map = lock(map);
                Ok(map
                    .get(&key)
                    .filter(|entry| entry.live(Instant::now()))
                    .map(|entry| entry.value.clone()))
            }
        }
    }

    /// Stores `value` for `ttl`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let key = self.key(key);
        match &self.backend {
            Backend::Redis(pool) => {
                let millis = ttl.as_millis().max(1) as u64;
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut pool.get().await?)
                    .await?;
                Ok(())
            }
            Backend::Memory(map) => {
                let mut map = lock(map);
                prune(&mut map);
                map.insert(
                    key,
                    Entry {
                        value: value.to_vec(),
                        expires: Some(Instant::now() + ttl),
                    },
                );
                Ok(())
            }
        }
    }

    /// Stores `value` for `ttl` only when the key is absent; returns whether it did.
    pub async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let key = self.key(key);
        match &self.backend {
            Backend::Redis(pool) => {
                let millis = ttl.as_millis().max(1) as u64;
                let reply: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut pool.get().await?)
                    .await?;
                Ok(reply.is_some())
            }
            Backend::Memory(map) => {
                let mut map = lock(map);
                let now = Instant::now();
                if map.get(&key).is_some_and(|entry| entry.live(now)) {
                    return Ok(false);
                }
                map.insert(
                    key,
                    Entry {
                        value: value.to_vec(),
                        expires: Some(now + ttl),
                    },
                );
                Ok(true)
            }
        }
    }

    /// Does [`Cache::set_if_absent`] for every entry in one round trip and
    /// returns, per entry and in order, whether it was stored.
    pub async fn set_many_if_absent(
        &self,
        entries: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<Vec<bool>, CacheError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        match &self.backend {
            Backend::Redis(pool) => {
                let millis = ttl.as_millis().max(1) as u64;
                let mut pipe = redis::pipe();
                for (key, value) in entries {
                    pipe.cmd("SET")
                        .arg(self.key(key))
                        .arg(value)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis);
                }
                let replies: Vec<Option<String>> = pipe.query_async(&mut pool.get().await?).await?;
                Ok(replies.into_iter().map(|reply| reply.is_some()).collect())
            }
            Backend::Memory(map) => {
                let mut map = lock(map);
                let now = Instant::now();
                let stored = entries
                    .iter()
                    .map(|(key, value)| {
                        let key = self.key(key);
                        if map.get(&key).is_some_and(|entry| entry.live(now)) {
                            return false;
                        }
                        let entry = Entry {
                            value: value.clone(),
                            expires: Some(now + ttl),
                        };
                        map.insert(key, entry);
                        true
                    })
                    .collect();
                Ok(stored)
            }
        }
    }

    /// Returns the value of every key, in order, in one round trip.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        match &self.backend {
            Backend::Redis(pool) => {
                let mut command = redis::cmd("MGET");
                command.arg(&keys);
                Ok(command.query_async(&mut pool.get().await?).await?)
            }
            Backend::Memory(map) => {
                let map = lock(map);
                let now = Instant::now();
                let values = keys
                    .iter()
                    .map(|key| {
                        map.get(key)
                            .filter(|entry| entry.live(now))
                            .map(|entry| entry.value.clone())
                    })
                    .collect();
                Ok(values)
            }
        }
    }

    /// Stores every entry for `ttl` in one round trip.
    pub async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl: Duration) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Redis(pool) => {
                let millis = ttl.as_millis().max(1) as u64;
                let mut pipe = redis::pipe();
                for (key, value) in entries {
                    pipe.cmd("SET")
                        .arg(self.key(key))
                        .arg(value)
                        .arg("PX")
                        .arg(millis)
                        .ignore();
                }
                let () = pipe.query_async(&mut pool.get().await?).await?;
                Ok(())
            }
            Backend::Memory(map) => {
                let mut map = lock(map);
                prune(&mut map);
                let expires = Some(Instant::now() + ttl);
                for (key, value) in entries {
                    let entry = Entry {
                        value: value.clone(),
                        expires,
                    };
                    map.insert(self.key(key), entry);
                }
                Ok(())
            }
        }
    }

    /// Deletes every key in one round trip.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        match &self.backend {
            Backend::Redis(pool) => {
                let _removed: i64 = pool.get().await?.del(keys).await?;
                Ok(())
            }
            Backend::Memory(map) => {
                let mut map = lock(map);
                for key in &keys {
                    map.remove(key);
                }
                Ok(())
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let key = self.key(key);
        match &self.backend {
            Backend::Redis(pool) => {
                let _removed: i64 = pool.get().await?.del(key).await?;
                Ok(())
            }
            Backend::Memory(map) => {
                lock(map).remove(&key);
                Ok(())
            }
        }
    }

    /// Adds `delta` to an integer counter, creating it at 0, and returns the
    /// new value. The expiry is set when the counter is created.
    pub async fn increment(&self, key: &str, delta: i64, ttl: Duration) -> Result<i64, CacheError> {
        let key = self.key(key);
        match &self.backend {
            Backend::Redis(pool) => {
                let mut connection = pool.get().await?;
                let (value, _): (i64, i64) = redis::pipe()
                    .atomic()
                    .incr(&key, delta)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl.as_millis().max(1) as u64)
                    .arg("NX")
                    .query_async(&mut connection)
                    .await?;
                Ok(value)
            }
            Backend::Memory(map) => {
                let mut map = lock(map);
                let now = Instant::now();
                let entry = map
                    .entry(key)
                    .and_modify(|entry| {
                        if !entry.live(now) {
                            *entry = Entry {
                                value: b"0".to_vec(),
                                expires: Some(now + ttl),
                            };
                        }
                    })
                    .or_insert_with(|| Entry {
                        value: b"0".to_vec(),
                        expires: Some(now + ttl),
                    });
                let current: i64 = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(0);
                let next = current + delta;
                entry.value = next.to_string().into_bytes();
                Ok(next)
            }
        }
    }
}

fn lock(map: &Mutex<HashMap<String, Entry>>) -> MutexGuard<'_, HashMap<String, Entry>> {
    // The map contains plain values, so one left by a panicking writer is still consistent.
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drops expired entries once the map grows, so the in-process cache does
/// not keep dead keys forever.
fn prune(map: &mut HashMap<String, Entry>) {
    if map.len().is_multiple_of(1024) && !map.is_empty() {
        let now = Instant::now();
        map.retain(|_, entry| entry.live(now));
    }
}
