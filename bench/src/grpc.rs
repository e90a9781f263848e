//! Client plumbing shared by the scenarios: one channel per connection, the
//! API key as metadata, and short labels for failed calls.

use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Maximum length of the error message in a label, in characters.
const MAX_LABEL_CHARS: usize = 80;

/// Opens `count` channels to `url`, each its own HTTP/2 connection, with
/// `timeout` as the deadline of every call. Connections open on first use.
pub fn channels(url: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<Channel>> {
    (0..count.max(1))
        .map(|_| rtim_runtime::client::channel(url, timeout))
        .collect()
}

/// The `authorization` metadata of every request, parsed once.
#[derive(Clone, Debug)]
pub struct Credential {
    value: MetadataValue<Ascii>,
}

impl Credential {
    pub fn new(api_key: &str) -> anyhow::Result<Self> {
        let value = format!("Bearer {api_key}")
            .parse()
            .context("the API key contains characters not allowed in gRPC metadata")?;
        Ok(Self { value })
    }

    /// Wraps `message` in a request that carries the key.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.value.clone());
        request
    }
}

/// Builds a short label for a failed call: the gRPC code and the start of the message.
pub fn label(status: &Status) -> String {
    let message: String = status.message().chars().take(MAX_LABEL_CHARS).collect();
    format!("{:?}: {message}", status.code())
}
