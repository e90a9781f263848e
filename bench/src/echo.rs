//! The echo baseline: a bare tonic service started in this process on
//! loopback, called with payloads as large as the scenario's requests, so
//! the ratio isolates what the service does beyond a gRPC round trip.

use std::net::SocketAddr;
use std::sync::Arc;

use rtim_proto::bench::v1::echo_service_client::EchoServiceClient;
use rtim_proto::bench::v1::echo_service_server::{EchoService, EchoServiceServer};
use rtim_proto::bench::v1::{EchoRequest, EchoResponse};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::driver::{Call, Workload};
use crate::grpc::label;

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

/// The echo service running on `127.0.0.1` on a free port.
pub struct EchoServer {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        // Nagle's algorithm off on every accepted socket, as the services do:
        // tonic sets TCP_NODELAY only on listeners it binds itself, and
        // without it a response written in several frames waits for the
        // client's delayed ACK.
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            let stream = accepted?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        });
        let shutdown = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        Ok(Self {
            address,
            shutdown,
            task: tokio::spawn(server),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Echo calls whose encoded request is `request_bytes` long, spread over the
/// channels round robin.
pub struct EchoWorkload {
    clients: Vec<EchoServiceClient<Channel>>,
    payload: Arc<Vec<u8>>,
}

impl EchoWorkload {
    pub fn new(channels: &[Channel], request_bytes: usize) -> Self {
        Self {
            clients: channels.iter().cloned().map(EchoServiceClient::new).collect(),
            payload: Arc::new(vec![b'x'; payload_len(request_bytes)]),
        }
    }
}

impl Workload for EchoWorkload {
    fn call(&self, index: u64) -> Call {
        let mut client = self.clients[(index % self.clients.len() as u64) as usize].clone();
        let request = EchoRequest {
            payload: self.payload.as_ref().clone(),
        };
        Box::pin(async move {
            match client.echo(request).await {
                Ok(_) => Ok(1),
                Err(status) => Err(label(&status)),
            }
        })
    }
}

/// Returns the maximum payload length whose `EchoRequest` encodes to at most
/// `request_bytes`: one tag byte, the length as a varint, then the payload.
/// The encoded size is `request_bytes`, or one byte less where the length
/// prefix grows.
pub fn payload_len(request_bytes: usize) -> usize {
    (0..=request_bytes)
        .rev()
        .find(|len| 1 + prost::length_delimiter_len(*len) + len <= request_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn request_size_matches() {
        // A size just past a varint boundary cannot be hit exactly, because
        // the longer length prefix takes the byte: those come out one short.
        // An empty payload encodes to nothing at all, so sizes start at 3.
        for size in (3..2_000).chain([16_384, 35_000]) {
            let request = EchoRequest {
                payload: vec![0; payload_len(size)],
            };
            let encoded = request.encoded_len();
            assert!(encoded <= size, "encoded {encoded} within {size}");
            assert!(
                encoded + 1 >= size,
                "encoded {encoded} at most one byte short of {size}"
            );
        }
    }

    #[test]
    fn tiny_sizes_send_nothing() {
        assert_eq!(payload_len(0), 0, "zero bytes");
        assert_eq!(payload_len(1), 0, "one byte");
    }
}
