//! Service responses to the JSON the endpoints return. Unset proto3 strings
//! and timestamps become `null`; maps are written with sorted keys.

use std::collections::BTreeMap;

use rtim_proto::decisioning::v1::DecideResponse;
use rtim_proto::gamification::v1::GetBalanceResponse;
use rtim_proto::ingestion::v1::{BatchResponse, EventResult};
use rtim_proto::json::struct_to_json;
use rtim_proto::profile::v1::Profile;
use rtim_proto::recommendations::v1::{Item, Recommendation, Strategy};
use rtim_proto::surveys::v1::{GetSurveyResultsResponse, NpsResult, Question, Survey};
use serde::Serialize;
use serde_json::Value;

use super::events::{self, Rejection};
use super::{format_timestamp, non_empty, paths};

/// Reply of the single tracking calls. Segment's libraries treat any 2xx
/// response as success and read no field; `success` is what Segment's API
/// returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracked {
    pub success: bool,
    pub message_id: String,
    pub duplicate: bool,
}

/// Reply of `/v1/batch`: `success` as in Segment's reply, then the outcome
/// of each item. The status is 200 even when items were rejected, because
/// Segment's and RudderStack's libraries resend a whole batch on a 5xx and
/// RudderStack's treats anything but 200 as a failure.
#[derive(Debug, Serialize)]
pub struct BatchReply {
    pub success: bool,
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<ItemResult>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub index: usize,
    pub message_id: Option<String>,
    pub accepted: bool,
    pub duplicate: bool,
    pub reason: Option<String>,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl BatchReply {
    /// Merges the items the gateway rejected with the service's results for
    /// the items it sent. `sent[i]` is the batch position of the i-th sent
    /// event, and `items` are the batch's items as the client sent them.
    /// Results come out in batch order.
    pub fn merge(
        rejections: Vec<(usize, Rejection)>,
        sent: &[usize],
        response: BatchResponse,
        items: &[Value],
    ) -> Self {
        let mut results: Vec<ItemResult> = rejections
            .into_iter()
            .map(|(index, rejection)| rejected_item(index, rejection))
            .collect();
        for result in response.results {
            match usize::try_from(result.index)
                .ok()
                .and_then(|position| sent.get(position))
            {
                Some(&index) => results.push(service_item(index, result, items.get(index))),
                None => tracing::warn!(
                    result.index = result.index,
                    "ingestion returned a result for an unknown index"
                ),
            }
        }
        results.sort_by_key(|result| result.index);
        let accepted = results.iter().filter(|result| result.accepted).count();
        Self {
            success: true,
            accepted,
            rejected: results.len() - accepted,
            results,
        }
    }
}

fn rejected_item(index: usize, rejection: Rejection) -> ItemResult {
    ItemResult {
        index,
        message_id: rejection.message_id,
        accepted: false,
        duplicate: false,
        reason: Some(rejection.reason.to_owned()),
        violations: rejection
            .violations
            .into_iter()
            .map(|violation| Violation {
                field: violation.field,
                description: violation.description,
            })
            .collect(),
    }
}

/// Violation fields from the service name `Event` fields, so they are
/// mapped to the item's keys under `batch[i].`. The service returns no
/// message id for an event it rejected, so the item's own is kept.
fn service_item(index: usize, result: EventResult, item: Option<&Value>) -> ItemResult {
    let message_id = non_empty(&result.message_id).or_else(|| item.and_then(events::message_id));
    ItemResult {
        index,
        message_id,
        accepted: result.accepted,
        duplicate: result.duplicate,
        reason: non_empty(&result.reason),
        violations: result
            .violations
            .into_iter()
            .map(|violation| Violation {
                field: paths::batch_item_field(index, &violation.field, item),
                description: violation.description,
            })
            .collect(),
    }
}

/// Reply of `GET /v1/profiles/{id}`.
#[derive(Debug, Serialize)]
pub struct ProfileReply {
    pub profile_id: String,
    pub user_id: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub event_counts: BTreeMap<String, i64>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub recently_viewed: Vec<String>,
    pub category_affinity: BTreeMap<String, f64>,
    pub brand_affinity: BTreeMap<String, f64>,
    pub cart_value: f64,
    pub total_spent: f64,
    pub order_count: i64,
    pub traits: Value,
    /// Traits of each group the shopper belongs to, by group id.
    pub groups: BTreeMap<String, Value>,
}

impl From<Profile> for ProfileReply {
    fn from(profile: Profile) -> Self {
        Self {
            user_id: non_empty(&profile.user_id),
            first_seen: format_timestamp(profile.first_seen.as_ref()),
            last_seen: format_timestamp(profile.last_seen.as_ref()),
            traits: struct_to_json(profile.traits.as_ref()),
            groups: profile
                .groups
                .into_iter()
                .map(|(group_id, traits)| (group_id, struct_to_json(Some(&traits))))
                .collect(),
            profile_id: profile.profile_id,
            anonymous_ids: profile.anonymous_ids,
            event_counts: profile.event_counts.into_iter().collect(),
            recently_viewed: profile.recently_viewed,
            category_affinity: profile.category_affinity.into_iter().collect(),
            brand_affinity: profile.brand_affinity.into_iter().collect(),
            cart_value: profile.cart_value,
            total_spent: profile.total_spent,
            order_count: profile.order_count,
        }
    }
}

/// Reply of `POST /v1/decide`.
#[derive(Debug, Serialize)]
pub struct DecisionReply {
    pub decision_id: String,
    pub degraded: bool,
    pub degraded_reason: Option<String>,
    pub actions: Vec<ActionReply>,
}

#[derive(Debug, Serialize)]
pub struct ActionReply {
    pub id: String,
    pub name: String,
    pub score: f64,
    pub value: f64,
    pub priority: f64,
    pub payload: Value,
}

impl From<DecideResponse> for DecisionReply {
    fn from(response: DecideResponse) -> Self {
        let actions = response
            .actions
            .into_iter()
            .map(|ranked| {
                let action = ranked.action.unwrap_or_default();
                ActionReply {
                    payload: struct_to_json(action.payload.as_ref()),
                    id: action.id,
                    name: action.name,
                    score: ranked.score,
                    value: action.value,
                    priority: action.priority,
                }
            })
            .collect();
        Self {
            degraded_reason: non_empty(&response.degraded_reason),
            decision_id: response.decision_id,
            degraded: response.degraded,
            actions,
        }
    }
}

/// Reply of `GET /v1/recommendations`.
#[derive(Debug, Serialize)]
pub struct RecommendationsReply {
    pub recommendations: Vec<RecommendationReply>,
}

#[derive(Debug, Serialize)]
pub struct RecommendationReply {
    pub item_id: String,
    pub score: f64,
    /// `co_visitation`, `popularity` or `unspecified`.
    pub strategy: String,
    pub item: Option<ItemReply>,
}

#[derive(Debug, Serialize)]
pub struct ItemReply {
    pub id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub brand: Option<String>,
    pub price: f64,
}

impl From<Recommendation> for RecommendationReply {
    fn from(recommendation: Recommendation) -> Self {
        Self {
            strategy: strategy_name(recommendation.strategy()),
            item_id: recommendation.item_id,
            score: recommendation.score,
            item: recommendation.item.map(ItemReply::from),
        }
    }
}

impl From<Item> for ItemReply {
    fn from(item: Item) -> Self {
        Self {
            name: non_empty(&item.name),
            category: non_empty(&item.category),
            brand: non_empty(&item.brand),
            id: item.id,
            price: item.price,
        }
    }
}

fn strategy_name(strategy: Strategy) -> String {
    let name = strategy.as_str_name();
    name.strip_prefix("STRATEGY_").unwrap_or(name).to_ascii_lowercase()
}

/// Reply of `GET /v1/surveys/eligible`.
#[derive(Debug, Serialize)]
pub struct SurveysReply {
    pub surveys: Vec<SurveyReply>,
}

/// A survey as shown to a shopper, without its targeting condition.
#[derive(Debug, Serialize)]
pub struct SurveyReply {
    pub id: String,
    pub title: String,
    pub questions: Vec<QuestionReply>,
}

#[derive(Debug, Serialize)]
pub struct QuestionReply {
    pub id: String,
    /// `nps`, `text` or `unspecified`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub required: bool,
}

impl From<Survey> for SurveyReply {
    fn from(survey: Survey) -> Self {
        Self {
            id: survey.id,
            title: survey.title,
            questions: survey.questions.into_iter().map(QuestionReply::from).collect(),
        }
    }
}

impl From<Question> for QuestionReply {
    fn from(question: Question) -> Self {
        let kind = question.r#type();
        let name = kind.as_str_name();
        Self {
            kind: name.strip_prefix("QUESTION_TYPE_").unwrap_or(name).to_ascii_lowercase(),
            id: question.id,
            text: question.text,
            required: question.required,
        }
    }
}

/// Reply of `POST /v1/surveys/{id}/responses`.
#[derive(Debug, Serialize)]
pub struct SubmittedReply {
    pub response_id: String,
}

/// Reply of `GET /v1/surveys/{id}/results`.
#[derive(Debug, Serialize)]
pub struct SurveyResultsReply {
    pub survey_id: String,
    pub responses: i64,
    pub nps: Vec<NpsReply>,
}

#[derive(Debug, Serialize)]
pub struct NpsReply {
    pub question_id: String,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    pub score: f64,
}

impl From<GetSurveyResultsResponse> for SurveyResultsReply {
    fn from(response: GetSurveyResultsResponse) -> Self {
        Self {
            survey_id: response.survey_id,
            responses: response.responses,
            nps: response.nps.into_iter().map(NpsReply::from).collect(),
        }
    }
}

impl From<NpsResult> for NpsReply {
    fn from(result: NpsResult) -> Self {
        Self {
            question_id: result.question_id,
            promoters: result.promoters,
            passives: result.passives,
            detractors: result.detractors,
            score: result.score,
        }
    }
}

/// Reply of `GET /v1/points/{user_id}`.
#[derive(Debug, Serialize)]
pub struct BalanceReply {
    pub user_id: String,
    pub balance: i64,
    pub entries: i64,
}

impl From<GetBalanceResponse> for BalanceReply {
    fn from(response: GetBalanceResponse) -> Self {
        Self {
            user_id: response.user_id,
            balance: response.balance,
            entries: response.entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use rtim_proto::ingestion::v1::FieldViolation as ProtoViolation;
    use rtim_runtime::errors::FieldViolation;
    use serde_json::json;

    use super::*;

    #[test]
    fn profile_json_shape() {
        let profile = Profile {
            profile_id: "p1".to_owned(),
            user_id: "u1".to_owned(),
            anonymous_ids: vec!["a1".to_owned()],
            event_counts: [("Product Viewed".to_owned(), 3)].into(),
            first_seen: Some(Timestamp {
                seconds: 1_796_378_400,
                nanos: 0,
            }),
            recently_viewed: vec!["p9".to_owned(), "p8".to_owned()],
            groups: [(
                "acme".to_owned(),
                rtim_proto::json::json_to_struct(
                    json!({"plan": "enterprise"}).as_object().cloned().unwrap_or_default(),
                ),
            )]
            .into(),
            ..Profile::default()
        };
        let value = serde_json::to_value(ProfileReply::from(profile)).expect("serializable");
        assert_eq!(value["user_id"], "u1", "user id");
        assert_eq!(value["event_counts"], json!({"Product Viewed": 3}), "event counts");
        assert_eq!(value["first_seen"], "2026-12-04T10:00:00.000Z", "first seen");
        assert_eq!(value["last_seen"], Value::Null, "unset last seen");
        assert_eq!(value["recently_viewed"], json!(["p9", "p8"]), "recently viewed order");
        assert_eq!(value["traits"], json!({}), "empty traits");
        assert_eq!(value["groups"], json!({"acme": {"plan": "enterprise"}}), "groups");
    }

    #[test]
    fn batch_merge_restores_positions() {
        let rejection = Rejection {
            message_id: Some("m1".to_owned()),
            reason: "INVALID_FIELD",
            violations: vec![FieldViolation::new("batch[1].timestamp", "invalid")],
        };
        let response = BatchResponse {
            results: vec![
                EventResult {
                    index: 0,
                    message_id: "m0".to_owned(),
                    accepted: true,
                    ..EventResult::default()
                },
                EventResult {
                    index: 1,
                    reason: "MISSING_IDENTITY".to_owned(),
                    violations: vec![ProtoViolation {
                        field: "events[1].user_id".to_owned(),
                        description: "missing".to_owned(),
                    }],
                    ..EventResult::default()
                },
            ],
            accepted: 1,
            rejected: 1,
        };
        let items = [
            json!({"type": "track", "userId": "u0", "messageId": "m0"}),
            json!({"type": "track", "userId": 7, "messageId": "m1"}),
            json!({"type": "track", "user_id": "", "messageId": "m2"}),
        ];
        let reply = BatchReply::merge(vec![(1, rejection)], &[0, 2], response, &items);
        let indexes: Vec<_> = reply.results.iter().map(|result| result.index).collect();
        assert_eq!(indexes, [0, 1, 2], "batch order");
        assert_eq!(reply.accepted, 1, "accepted");
        assert_eq!(reply.rejected, 2, "rejected");
        assert_eq!(
            reply.results[2].violations[0].field, "batch[2].user_id",
            "service field mapped to the item's key"
        );
        assert_eq!(
            reply.results[2].message_id.as_deref(),
            Some("m2"),
            "rejected item keeps the client's message id"
        );
        assert_eq!(
            reply.results[2].reason.as_deref(),
            Some("MISSING_IDENTITY"),
            "service reason"
        );
    }

    #[test]
    fn strategy_names() {
        assert_eq!(strategy_name(Strategy::CoVisitation), "co_visitation");
        assert_eq!(strategy_name(Strategy::Popularity), "popularity");
    }
}
