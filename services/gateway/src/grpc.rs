//! Calls to the services: lazily connected clients, the caller's key as
//! `authorization` metadata and the endpoint timeout as every call's deadline.

use std::future::Future;
use std::time::Duration;

use rtim_proto::decisioning::v1::decisioning_service_client::DecisioningServiceClient;
use rtim_proto::gamification::v1::gamification_service_client::GamificationServiceClient;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::profile::v1::profile_service_client::ProfileServiceClient;
use rtim_proto::recommendations::v1::recommendations_service_client::RecommendationsServiceClient;
use rtim_proto::surveys::v1::surveys_service_client::SurveysServiceClient;
use rtim_runtime::Settings;
use rtim_runtime::client::{TracedChannel, traced_channel, with_key};
use tonic::{Status, TimeoutExpired};

use crate::auth::Authorized;
use crate::problem::{self, Problem};

/// One client per service. The channels connect on first use, so the
/// gateway can start before the services, and trace every call.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ingestion: IngestionServiceClient<TracedChannel>,
    pub profile: ProfileServiceClient<TracedChannel>,
    pub decisioning: DecisioningServiceClient<TracedChannel>,
    pub recommendations: RecommendationsServiceClient<TracedChannel>,
    pub surveys: SurveysServiceClient<TracedChannel>,
    pub gamification: GamificationServiceClient<TracedChannel>,
}

impl Clients {
    pub fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let endpoints = &settings.endpoints;
        let size = settings.server.max_message_bytes;
        let open = |url: &str| traced_channel(url, endpoints.timeout);
        Ok(Self {
            ingestion: IngestionServiceClient::new(open(&endpoints.ingestion)?)
                .max_encoding_message_size(size)
                .max_decoding_message_size(size),
            profile: ProfileServiceClient::new(open(&endpoints.profile)?).max_decoding_message_size(size),
            decisioning: DecisioningServiceClient::new(open(&endpoints.decisioning)?).max_decoding_message_size(size),
            recommendations: RecommendationsServiceClient::new(open(&endpoints.recommendations)?)
                .max_decoding_message_size(size),
            surveys: SurveysServiceClient::new(open(&endpoints.surveys)?).max_decoding_message_size(size),
            gamification: GamificationServiceClient::new(open(&endpoints.gamification)?)
                .max_decoding_message_size(size),
        })
    }
}

/// The service behind an endpoint, named in logs and in problem details.
#[derive(Clone, Copy, Debug)]
pub struct Upstream {
    pub service: &'static str,
    pub timeout: Duration,
    /// `Retry-After` of the 503 response when the service is unavailable.
    pub retry_after: Duration,
}

impl Upstream {
    /// Wraps `message` with the caller's key and the deadline.
    pub fn request<T>(&self, caller: &Authorized, message: T) -> Result<tonic::Request<T>, Problem> {
        let mut request =
            with_key(tonic::Request::new(message), caller.key()).map_err(|status| self.problem(&status))?;
        request.set_timeout(self.timeout);
        Ok(request)
    }

    /// Awaits a call and maps a failure to a problem response.
    pub async fn call<T>(&self, call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Problem> {
        self.call_status(call).await.map_err(|status| self.problem(&status))
    }

    /// Awaits a call like [`Self::call`], with the fields of INVALID_ARGUMENT
    /// violations mapped by `rename` to the names the client sent.
    pub async fn call_renaming<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
        rename: impl Fn(&str) -> String,
    ) -> Result<T, Problem> {
        self.call_status(call).await.map_err(|status| {
            problem::from_status_renaming(self.service, &status, rename).with_retry_after(self.retry_after)
        })
    }

    /// Awaits a call and returns the status of a failure, for callers that
    /// act on particular codes. The deadline applies even if the channel's own
    /// timeout does not fire, and tonic's client-side timeout, which it
    /// reports as CANCELLED, becomes DEADLINE_EXCEEDED.
    pub async fn call_status<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let deadline_exceeded = || Status::deadline_exceeded(format!("no response within {:?}", self.timeout));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_client_timeout(&status) => Err(deadline_exceeded()),
            Ok(Err(status)) => Err(status),
            Err(_elapsed) => Err(deadline_exceeded()),
        }
    }

    pub fn problem(&self, status: &Status) -> Problem {
        problem::from_status(self.service, status).with_retry_after(self.retry_after)
    }
}

fn is_client_timeout(status: &Status) -> bool {
    status.code() == tonic::Code::Cancelled && status.message() == TimeoutExpired(()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_timeout_detected() {
        let status = Status::cancelled(TimeoutExpired(()).to_string());
        assert!(is_client_timeout(&status), "tonic timeout");
        assert!(
            !is_client_timeout(&Status::cancelled("client went away")),
            "other cancellation"
        );
    }

    #[tokio::test]
    async fn call_bounded_by_deadline() {
        let upstream = Upstream {
            service: "profile",
            timeout: Duration::from_millis(10),
            retry_after: Duration::from_secs(1),
        };
        let never = std::future::pending::<Result<tonic::Response<()>, Status>>();
        let status = upstream.call_status(never).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}
