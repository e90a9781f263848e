//! Channels to other services of the mesh.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Builds a lazily connected channel with a per-call deadline, so a service
/// can start before the services it calls.
pub fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("invalid endpoint URL '{url}': {error}"))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Adds `authorization: Bearer KEY` to an outgoing request.
pub fn with_key<T>(mut request: tonic::Request<T>, key: &str) -> Result<tonic::Request<T>, tonic::Status> {
    let value = format!("Bearer {key}")
        .parse()
        .map_err(|_| tonic::Status::unauthenticated("API key contains characters not allowed in metadata"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
