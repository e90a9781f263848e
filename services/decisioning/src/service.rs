//! The gRPC edge: authenticates the scope, validates, and calls the catalog,
//! the profile reader and the store.

use std::sync::Arc;

use rtim_proto::decisioning::v1::decisioning_service_server::DecisioningService;
use rtim_proto::decisioning::v1::{
    DecideRequest, DecideResponse, DeleteActionRequest, DeleteActionResponse, ListActionsRequest, ListActionsResponse,
    PutActionRequest, PutActionResponse, RankedAction,
};
use rtim_proto::json::struct_to_json;
use rtim_proto::profile::v1::Profile;
use rtim_runtime::auth::{self, Scope, TenantId};
use rtim_runtime::errors::{self, FieldViolation};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::decision_log::DecisionLog;
use crate::error::DecisioningError;
use crate::profiles::{ProfileReader, Shopper};
use crate::ranking::{self, Variables};
use crate::store::DecisionRecord;
use crate::validate::{self, CompiledAction};

pub struct Decisioning {
    pub catalog: Arc<Catalog>,
    pub profiles: ProfileReader,
    pub log: DecisionLog,
}

#[tonic::async_trait]
impl DecisioningService for Decisioning {
    #[tracing::instrument(name = "decisioning.decide", skip_all, fields(tenant.id, decision.id))]
    async fn decide(&self, request: Request<DecideRequest>) -> Result<Response<DecideResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Decide)?.clone();
        let span = tracing::Span::current();
        span.record("tenant.id", tenant.as_str());
        validate::check_decide(request.get_ref())
            .map_err(|violations| DecisioningError::InvalidRequest { violations })?;

        let body = request.get_ref();
        let shopper = Shopper::new(&body.user_id, &body.anonymous_id);
        let read = self.profiles.read(&request, &tenant, &shopper).await;
        let ranked = self.choose(&tenant, body, &read.profile);
        let degraded = read.degraded_reason.is_some();
        let decision_id = self.log_decision(&tenant, body, &ranked, degraded).await?;
        span.record("decision.id", decision_id.as_str());
        tracing::debug!(
            decision.actions = ranked.len(),
            decision.degraded = degraded,
            "decision made"
        );

        Ok(Response::new(DecideResponse {
            decision_id,
            actions: ranked
                .iter()
                .map(|action| RankedAction {
                    action: Some(action.action.clone()),
                    score: action.score,
                })
                .collect(),
            degraded,
            degraded_reason: read.degraded_reason.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "decisioning.put_action", skip_all, fields(tenant.id, action.id))]
    async fn put_action(&self, request: Request<PutActionRequest>) -> Result<Response<PutActionResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let action = request
            .into_inner()
            .action
            .ok_or_else(|| errors::invalid_argument(&[FieldViolation::new("action", "is required")]))?;
        tracing::Span::current()
            .record("tenant.id", tenant.as_str())
            .record("action.id", action.id.as_str());
        let action = self.catalog.put(&tenant, action).await?;
        tracing::info!("action saved");
        Ok(Response::new(PutActionResponse { action: Some(action) }))
    }

    async fn list_actions(
        &self,
        request: Request<ListActionsRequest>,
    ) -> Result<Response<ListActionsResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let placement = request.into_inner().placement;
        let mut violations = Vec::new();
        validate::check_text("placement", &placement, validate::MAX_ID_LEN, &mut violations);
        if !violations.is_empty() {
            return Err(errors::invalid_argument(&violations));
        }
        let placement = (!placement.is_empty()).then_some(placement.as_str());
        let actions = self.catalog.list(&tenant, placement).await?;
        Ok(Response::new(ListActionsResponse { actions }))
    }

    #[tracing::instrument(name = "decisioning.delete_action", skip_all, fields(tenant.id, action.id))]
    async fn delete_action(
        &self,
        request: Request<DeleteActionRequest>,
    ) -> Result<Response<DeleteActionResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let id = request.into_inner().id;
        let span = tracing::Span::current();
        span.record("tenant.id", tenant.as_str());
        let mut violations = Vec::new();
        validate::check_id("id", &id, &mut violations);
        if !violations.is_empty() {
            return Err(errors::invalid_argument(&violations));
        }
        span.record("action.id", id.as_str());
        self.catalog.delete(&tenant, &id).await?;
        tracing::info!("action deleted");
        Ok(Response::new(DeleteActionResponse {}))
    }
}

impl Decisioning {
    /// Returns the eligible actions of the request's placement, best first,
    /// at most `limit` of them (1 when the limit is 0).
    fn choose(&self, tenant: &TenantId, request: &DecideRequest, profile: &Profile) -> Vec<Arc<CompiledAction>> {
        let profile = rtim_rules::vars::profile(profile);
        let context = struct_to_json(request.context.as_ref());
        let variables = Variables {
            profile: &profile,
            context: &context,
        };
        let actions = self.catalog.tenant(tenant);
        let limit = usize::try_from(request.limit.max(1)).unwrap_or(1);
        ranking::rank(actions.for_placement(&request.placement), &variables, limit)
    }

    /// Stores the decision and returns its new id.
    async fn log_decision(
        &self,
        tenant: &TenantId,
        request: &DecideRequest,
        ranked: &[Arc<CompiledAction>],
        degraded: bool,
    ) -> Result<String, DecisioningError> {
        let record = DecisionRecord {
            decision_id: uuid::Uuid::new_v4().to_string(),
            placement: request.placement.clone(),
            user_id: request.user_id.clone(),
            anonymous_id: request.anonymous_id.clone(),
            ranked: ranked
                .iter()
                .map(|action| (action.id().to_owned(), action.score))
                .collect(),
            degraded,
        };
        let decision_id = record.decision_id.clone();
        self.log.append(tenant.as_str(), record).await?;
        Ok(decision_id)
    }
}
