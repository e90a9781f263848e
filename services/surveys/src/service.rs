//! The `SurveysService` gRPC handlers.

use chrono::Utc;
use rtim_proto::surveys::v1::surveys_service_server::SurveysService;
use rtim_proto::surveys::v1::{
    GetSurveyResultsRequest, GetSurveyResultsResponse, ListEligibleSurveysRequest, ListEligibleSurveysResponse,
    ListSurveysRequest, ListSurveysResponse, PutSurveyRequest, PutSurveyResponse, SubmitResponseRequest,
    SubmitResponseResponse, Survey,
};
use rtim_runtime::auth::{self, Scope, TenantId};
use rtim_runtime::errors::{self, FieldViolation};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::answers::{self, NpsResults};
use crate::definition::CompiledSurvey;
use crate::entity::response::{self, Answers};
use crate::error::SurveyError;
use crate::profile::{ProfileSource, Shopper};
use crate::registry::SurveyRegistry;
use crate::store;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct SurveysApi {
    db: DatabaseConnection,
    registry: SurveyRegistry,
    profiles: ProfileSource,
}

impl SurveysApi {
    pub fn new(db: DatabaseConnection, profiles: ProfileSource) -> Self {
        let registry = SurveyRegistry::new(db.clone());
        Self { db, registry, profiles }
    }

    /// Validates, compiles and stores a survey, for `PutSurvey` and the
    /// surveys file alike. Returns the survey as stored.
    pub async fn put(&self, tenant: &TenantId, survey: Survey) -> Result<Survey, SurveyError> {
        let compiled = CompiledSurvey::compile(survey).map_err(SurveyError::Invalid)?;
        store::upsert_survey(&self.db, compiled.to_model(tenant, Utc::now()))
            .await
            .map_err(SurveyError::database("saving a survey"))?;
        self.registry.invalidate(tenant);
        tracing::info!(tenant.id = %tenant, survey.id = %compiled.id(), "survey saved");
        Ok(compiled.survey)
    }

    async fn list(&self, tenant: &TenantId) -> Result<Vec<Survey>, SurveyError> {
        let surveys = self
            .registry
            .surveys(tenant)
            .await
            .map_err(SurveyError::database("reading surveys"))?;
        Ok(surveys.values().map(|compiled| compiled.survey.clone()).collect())
    }

    /// Returns the surveys whose targeting holds for the shopper and that the
    /// shopper has not responded to, by id.
    async fn eligible(
        &self,
        tenant: &TenantId,
        request: &Request<ListEligibleSurveysRequest>,
    ) -> Result<Vec<Survey>, SurveyError> {
        let message = request.get_ref();
        let shopper = Shopper::from_ids(&message.user_id, &message.anonymous_id)
            .ok_or_else(|| SurveyError::invalid("user_id", "missing: set user_id or anonymous_id"))?;
        let surveys = self
            .registry
            .surveys(tenant)
            .await
            .map_err(SurveyError::database("reading surveys"))?;
        if surveys.is_empty() {
            return Ok(Vec::new());
        }

        let responded = store::responded_surveys(&self.db, tenant, shopper.key())
            .await
            .map_err(SurveyError::database("reading responses"))?;
        let candidates: Vec<&CompiledSurvey> = surveys
            .values()
            .filter(|compiled| !responded.contains(compiled.id()))
            .map(|compiled| compiled.as_ref())
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }

        let profile = self.profiles.fetch(request, &shopper).await?;
        let profile = rtim_rules::vars::profile(&profile);
        Ok(candidates
            .into_iter()
            .filter(|compiled| compiled.targets(&profile))
            .map(|compiled| compiled.survey.clone())
            .collect())
    }

    /// Validates and stores a response; returns its id.
    async fn submit(&self, tenant: &TenantId, request: SubmitResponseRequest) -> Result<String, SurveyError> {
        let mut violations = Vec::new();
        if request.survey_id.is_empty() {
            violations.push(FieldViolation::new("survey_id", "missing"));
        }
        let shopper = Shopper::from_ids(&request.user_id, &request.anonymous_id);
        if shopper.is_none() {
            violations.push(FieldViolation::new("user_id", "missing: set user_id or anonymous_id"));
        }
        let Some(shopper) = shopper.filter(|_| violations.is_empty()) else {
            return Err(SurveyError::Invalid(violations));
        };

        let compiled = self.find(tenant, &request.survey_id).await?;
        let answers = answers::validate(&compiled.survey, &request.answers).map_err(SurveyError::Invalid)?;
        let response_id = uuid::Uuid::new_v4().to_string();
        let model = response::Model {
            tenant_id: tenant.as_str().to_owned(),
            response_id: response_id.clone(),
            survey_id: request.survey_id.clone(),
            respondent_key: shopper.key().to_owned(),
            answers: Answers(answers),
            created_at: Utc::now(),
        };
        let inserted = store::insert_response(&self.db, model)
            .await
            .map_err(SurveyError::database("saving a response"))?;
        if !inserted {
            return Err(SurveyError::AlreadyResponded {
                survey_id: request.survey_id,
                respondent_key: shopper.key().to_owned(),
            });
        }
        Ok(response_id)
    }

    async fn results(&self, tenant: &TenantId, survey_id: String) -> Result<GetSurveyResultsResponse, SurveyError> {
        if survey_id.is_empty() {
            return Err(SurveyError::invalid("survey_id", "missing"));
        }
        let compiled = self.find(tenant, &survey_id).await?;
        let mut nps = NpsResults::new(&compiled.survey);
        let responses = store::visit_answers(&self.db, tenant, &survey_id, |answers| nps.add(&answers.0))
            .await
            .map_err(SurveyError::database("reading responses"))?;
        Ok(GetSurveyResultsResponse {
            survey_id,
            responses,
            nps: nps.finish(),
        })
    }

    async fn find(&self, tenant: &TenantId, survey_id: &str) -> Result<std::sync::Arc<CompiledSurvey>, SurveyError> {
        self.registry
            .survey(tenant, survey_id)
            .await
            .map_err(SurveyError::database("reading surveys"))?
            .ok_or_else(|| SurveyError::NotFound {
                survey_id: survey_id.to_owned(),
            })
    }
}

#[tonic::async_trait]
impl SurveysService for SurveysApi {
    #[tracing::instrument(name = "surveys.put_survey", skip_all, fields(tenant.id))]
    async fn put_survey(&self, request: Request<PutSurveyRequest>) -> Result<Response<PutSurveyResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        tracing::Span::current().record("tenant.id", tenant.as_str());
        let survey = request
            .into_inner()
            .survey
            .ok_or_else(|| SurveyError::invalid("survey", "missing"))?;
        let survey = self.put(&tenant, survey).await?;
        Ok(Response::new(PutSurveyResponse { survey: Some(survey) }))
    }

    #[tracing::instrument(name = "surveys.list_surveys", skip_all, fields(tenant.id))]
    async fn list_surveys(
        &self,
        request: Request<ListSurveysRequest>,
    ) -> Result<Response<ListSurveysResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        tracing::Span::current().record("tenant.id", tenant.as_str());
        let surveys = self.list(&tenant).await?;
        Ok(Response::new(ListSurveysResponse { surveys }))
    }

    #[tracing::instrument(name = "surveys.list_eligible_surveys", skip_all, fields(tenant.id))]
    async fn list_eligible_surveys(
        &self,
        request: Request<ListEligibleSurveysRequest>,
    ) -> Result<Response<ListEligibleSurveysResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Read)?.clone();
        tracing::Span::current().record("tenant.id", tenant.as_str());
        errors::check_id("user_id", &request.get_ref().user_id)?;
        errors::check_id("anonymous_id", &request.get_ref().anonymous_id)?;
        let surveys = self.eligible(&tenant, &request).await?;
        Ok(Response::new(ListEligibleSurveysResponse { surveys }))
    }

    #[tracing::instrument(name = "surveys.submit_response", skip_all, fields(tenant.id, survey.id))]
    async fn submit_response(
        &self,
        request: Request<SubmitResponseRequest>,
    ) -> Result<Response<SubmitResponseResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Read)?.clone();
        let span = tracing::Span::current();
        span.record("tenant.id", tenant.as_str());
        let request = request.into_inner();
        span.record("survey.id", request.survey_id.as_str());
        errors::check_id("survey_id", &request.survey_id)?;
        errors::check_id("user_id", &request.user_id)?;
        errors::check_id("anonymous_id", &request.anonymous_id)?;
        for (index, answer) in request.answers.iter().enumerate() {
            if let Some(text) = answer_text(answer)
                && text.contains('\0')
            {
                return Err(errors::invalid_field(
                    &format!("answers[{index}].text"),
                    "contains a NUL character",
                ));
            }
        }
        let response_id = self.submit(&tenant, request).await?;
        Ok(Response::new(SubmitResponseResponse { response_id }))
    }

    #[tracing::instrument(name = "surveys.get_survey_results", skip_all, fields(tenant.id, survey.id))]
    async fn get_survey_results(
        &self,
        request: Request<GetSurveyResultsRequest>,
    ) -> Result<Response<GetSurveyResultsResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Read)?.clone();
        let span = tracing::Span::current();
        span.record("tenant.id", tenant.as_str());
        let survey_id = request.into_inner().survey_id;
        span.record("survey.id", survey_id.as_str());
        let results = self.results(&tenant, survey_id).await?;
        Ok(Response::new(results))
    }
}

fn answer_text(answer: &rtim_proto::surveys::v1::Answer) -> Option<&str> {
    match &answer.value {
        Some(rtim_proto::surveys::v1::answer::Value::Text(text)) => Some(text),
        _ => None,
    }
}
