//! The gRPC edge: authenticates the scope, validates, and calls the rule
//! book and the store.

use std::sync::Arc;

use rtim_proto::gamification::v1::gamification_service_server::GamificationService;
use rtim_proto::gamification::v1::{
    GetBalanceRequest, GetBalanceResponse, ListPointRulesRequest, ListPointRulesResponse, PutPointRuleRequest,
    PutPointRuleResponse,
};
use rtim_runtime::auth::{self, Scope};
use rtim_runtime::errors;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::rulebook::RuleBook;
use crate::store;

pub struct Gamification {
    pub rules: Arc<RuleBook>,
    pub db: DatabaseConnection,
}

#[tonic::async_trait]
impl GamificationService for Gamification {
    #[tracing::instrument(name = "gamification.put_point_rule", skip_all, fields(tenant.id, rule.id))]
    async fn put_point_rule(
        &self,
        request: Request<PutPointRuleRequest>,
    ) -> Result<Response<PutPointRuleResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let rule = request
            .into_inner()
            .rule
            .ok_or_else(|| errors::invalid_field("rule", "is required"))?;
        tracing::Span::current()
            .record("tenant.id", tenant.as_str())
            .record("rule.id", rule.id.as_str());
        let rule = self.rules.put(&tenant, rule).await?;
        tracing::info!("point rule saved");
        Ok(Response::new(PutPointRuleResponse { rule: Some(rule) }))
    }

    async fn list_point_rules(
        &self,
        request: Request<ListPointRulesRequest>,
    ) -> Result<Response<ListPointRulesResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let rules = self.rules.list(&tenant).await?;
        Ok(Response::new(ListPointRulesResponse { rules }))
    }

    async fn get_balance(&self, request: Request<GetBalanceRequest>) -> Result<Response<GetBalanceResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Read)?.clone();
        let user_id = request.into_inner().user_id;
        if user_id.is_empty() {
            return Err(errors::invalid_field("user_id", "is required"));
        }
        errors::check_id("user_id", &user_id)?;
        let balance = store::balance(&self.db, tenant.as_str(), &user_id).await?;
        Ok(Response::new(GetBalanceResponse {
            user_id,
            balance: balance.points,
            entries: balance.entries,
        }))
    }
}
