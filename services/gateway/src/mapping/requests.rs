//! The JSON bodies and query strings of the non-tracking endpoints, and
//! their conversion to gRPC requests. Ids are accepted in snake_case and in
//! Segment's camelCase.

use rtim_proto::decisioning::v1::DecideRequest;
use rtim_proto::json::json_to_struct;
use rtim_proto::recommendations::v1::RecommendRequest;
use rtim_proto::surveys::v1::{Answer, ListEligibleSurveysRequest, SubmitResponseRequest, answer};
use rtim_runtime::errors::FieldViolation;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Body of `POST /v1/decide`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DecideBody {
    pub placement: String,
    #[serde(alias = "userId")]
    pub user_id: String,
    #[serde(alias = "anonymousId")]
    pub anonymous_id: String,
    pub limit: i32,
    pub context: Option<Map<String, Value>>,
}

impl From<DecideBody> for DecideRequest {
    fn from(body: DecideBody) -> Self {
        Self {
            placement: body.placement,
            user_id: body.user_id,
            anonymous_id: body.anonymous_id,
            limit: body.limit,
            context: body.context.map(json_to_struct),
        }
    }
}

/// Query of `GET /v1/recommendations`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RecommendationsQuery {
    #[serde(alias = "itemId")]
    pub item_id: String,
    #[serde(alias = "userId")]
    pub user_id: String,
    #[serde(alias = "anonymousId")]
    pub anonymous_id: String,
    pub limit: i32,
}

impl From<RecommendationsQuery> for RecommendRequest {
    fn from(query: RecommendationsQuery) -> Self {
        Self {
            user_id: query.user_id,
            anonymous_id: query.anonymous_id,
            item_id: query.item_id,
            limit: query.limit,
        }
    }
}

/// Query of `GET /v1/surveys/eligible`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EligibleQuery {
    #[serde(alias = "userId")]
    pub user_id: String,
    #[serde(alias = "anonymousId")]
    pub anonymous_id: String,
}

impl From<EligibleQuery> for ListEligibleSurveysRequest {
    fn from(query: EligibleQuery) -> Self {
        Self {
            user_id: query.user_id,
            anonymous_id: query.anonymous_id,
        }
    }
}

/// Body of `POST /v1/surveys/{id}/responses`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SurveyResponseBody {
    #[serde(alias = "userId")]
    pub user_id: String,
    #[serde(alias = "anonymousId")]
    pub anonymous_id: String,
    pub answers: Vec<AnswerBody>,
}

/// One answer: a score for an NPS question or a text.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AnswerBody {
    #[serde(alias = "questionId")]
    pub question_id: String,
    pub score: Option<i32>,
    pub text: Option<String>,
}

impl SurveyResponseBody {
    /// Builds the request. Every answer must carry exactly one of `score` and `text`.
    pub fn into_request(self, survey_id: String) -> Result<SubmitResponseRequest, Vec<FieldViolation>> {
        let mut answers = Vec::with_capacity(self.answers.len());
        let mut violations = Vec::new();
        for (index, body) in self.answers.into_iter().enumerate() {
            let value = match (body.score, body.text) {
                (Some(score), None) => answer::Value::Score(score),
                (None, Some(text)) => answer::Value::Text(text),
                (Some(_), Some(_)) => {
                    violations.push(FieldViolation::new(
                        format!("answers[{index}]"),
                        "set score or text, not both",
                    ));
                    continue;
                }
                (None, None) => {
                    violations.push(FieldViolation::new(
                        format!("answers[{index}]"),
                        "missing score or text",
                    ));
                    continue;
                }
            };
            answers.push(Answer {
                question_id: body.question_id,
                value: Some(value),
            });
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(SubmitResponseRequest {
            survey_id,
            user_id: self.user_id,
            anonymous_id: self.anonymous_id,
            answers,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decide_body_aliases() {
        let body: DecideBody = serde_json::from_value(json!({
            "placement": "cart", "userId": "u1", "anonymousId": "a1", "limit": 3, "context": {"page": "cart"}
        }))
        .expect("valid body");
        let request = DecideRequest::from(body);
        assert_eq!(request.placement, "cart", "placement");
        assert_eq!(request.user_id, "u1", "user id");
        assert_eq!(request.anonymous_id, "a1", "anonymous id");
        assert_eq!(request.limit, 3, "limit");
        assert!(request.context.is_some(), "context");
    }

    #[test]
    fn answers_need_one_value() {
        let body: SurveyResponseBody = serde_json::from_value(json!({
            "user_id": "u1",
            "answers": [
                {"question_id": "nps", "score": 9},
                {"question_id": "why", "text": "fast delivery"},
                {"question_id": "both", "score": 1, "text": "x"},
                {"question_id": "none"},
            ]
        }))
        .expect("valid body");
        let violations = body.into_request("s1".to_owned()).unwrap_err();
        let fields: Vec<_> = violations.iter().map(|violation| violation.field.as_str()).collect();
        assert_eq!(fields, ["answers[2]", "answers[3]"]);
    }

    #[test]
    fn answers_convert() {
        let body: SurveyResponseBody = serde_json::from_value(json!({
            "anonymousId": "a1",
            "answers": [{"questionId": "nps", "score": 9}, {"question_id": "why", "text": "ok"}]
        }))
        .expect("valid body");
        let request = body.into_request("s1".to_owned()).expect("valid answers");
        assert_eq!(request.survey_id, "s1", "survey id");
        assert_eq!(request.anonymous_id, "a1", "anonymous id");
        assert_eq!(request.answers[0].value, Some(answer::Value::Score(9)), "score");
        assert_eq!(
            request.answers[1].value,
            Some(answer::Value::Text("ok".to_owned())),
            "text"
        );
    }
}
