//! Handlers, one module per area. Each area's router holds only the client
//! of the service it calls.

pub mod decide;
pub mod ops;
pub mod points;
pub mod profiles;
pub mod recommendations;
pub mod surveys;
pub mod tracking;

use std::time::Duration;

use crate::auth::Auth;
use crate::grpc::Upstream;

/// State of one area's handlers.
#[derive(Clone, Debug)]
pub struct Api<C> {
    pub client: C,
    pub upstream: Upstream,
    pub auth: Auth,
    /// Largest decoded request body, in bytes.
    pub body_limit: usize,
}

/// The parts of [`Api`] that every area shares.
#[derive(Clone, Debug)]
pub struct Shared {
    pub auth: Auth,
    /// Deadline of each call to a service.
    pub timeout: Duration,
    /// `Retry-After` of a 503 response.
    pub retry_after: Duration,
    pub body_limit: usize,
}

impl Shared {
    pub fn api<C>(&self, service: &'static str, client: C) -> Api<C> {
        Api {
            client,
            upstream: Upstream {
                service,
                timeout: self.timeout,
                retry_after: self.retry_after,
            },
            auth: self.auth.clone(),
            body_limit: self.body_limit,
        }
    }
}
