//! The JSON bodies, query strings and path ids of the non-tracking
//! endpoints, checked and converted to gRPC requests. Ids are accepted in
//! snake_case and in Segment's camelCase, and a violation names the key the
//! client sent. Ids are checked here, before any service receives them:
//! see [`check_id`].

use rtim_proto::decisioning::v1::DecideRequest;
use rtim_proto::json::json_to_struct;
use rtim_proto::recommendations::v1::RecommendRequest;
use rtim_proto::surveys::v1::{Answer, ListEligibleSurveysRequest, SubmitResponseRequest, answer};
use rtim_runtime::errors::FieldViolation;
use serde_json::{Map, Value};

use super::fields::{Fields, check_id, kind_of};

const USER_ID: [&str; 2] = ["user_id", "userId"];
const ANONYMOUS_ID: [&str; 2] = ["anonymous_id", "anonymousId"];
const ITEM_ID: [&str; 2] = ["item_id", "itemId"];
const QUESTION_ID: [&str; 2] = ["question_id", "questionId"];

/// Largest `limit` accepted here: any value of the proto's int32 field
/// that is not negative. Each service applies its own maximum, if any.
const MAX_LIMIT: i32 = i32::MAX;
/// Accepted NPS scores, the range the surveys service enforces.
const SCORE_RANGE: (i32, i32) = (0, 10);

/// Checks an id taken from the URL path; `field` is the path parameter's name.
pub fn check_path_id(field: &str, id: &str) -> Result<(), Vec<FieldViolation>> {
    check_id(id).map_err(|description| vec![FieldViolation::new(field, description)])
}

/// Maps the body of `POST /v1/decide`.
pub fn decide_request(body: &Value) -> Result<DecideRequest, Vec<FieldViolation>> {
    let object = body_object(body)?;
    let mut fields = Fields::new(object, "");
    let request = DecideRequest {
        placement: fields.id(&["placement"]),
        user_id: fields.id(&USER_ID),
        anonymous_id: fields.id(&ANONYMOUS_ID),
        limit: limit(&mut fields),
        context: fields.object("context").map(json_to_struct),
    };
    fields.finish(request)
}

/// Maps the query of `GET /v1/recommendations`.
pub fn recommend_request(query: Vec<(String, String)>) -> Result<RecommendRequest, Vec<FieldViolation>> {
    let object = query_object(query, &["limit"])?;
    let mut fields = Fields::new(&object, "");
    let request = RecommendRequest {
        item_id: fields.id(&ITEM_ID),
        user_id: fields.id(&USER_ID),
        anonymous_id: fields.id(&ANONYMOUS_ID),
        limit: limit(&mut fields),
    };
    fields.finish(request)
}

/// Maps the query of `GET /v1/surveys/eligible`.
pub fn eligible_request(query: Vec<(String, String)>) -> Result<ListEligibleSurveysRequest, Vec<FieldViolation>> {
    let object = query_object(query, &[])?;
    let mut fields = Fields::new(&object, "");
    let request = ListEligibleSurveysRequest {
        user_id: fields.id(&USER_ID),
        anonymous_id: fields.id(&ANONYMOUS_ID),
    };
    fields.finish(request)
}

/// Maps the body of `POST /v1/surveys/{id}/responses`. Every answer must
/// carry exactly one of `score` and `text`.
pub fn survey_response(body: &Value, survey_id: String) -> Result<SubmitResponseRequest, Vec<FieldViolation>> {
    let object = body_object(body)?;
    let mut fields = Fields::new(object, "");
    let user_id = fields.id(&USER_ID);
    let anonymous_id = fields.id(&ANONYMOUS_ID);
    let items = fields.array("answers").map(Vec::as_slice).unwrap_or_default();
    let mut violations = fields.finish(()).err().unwrap_or_default();

    let mut answers = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match read_answer(index, item) {
            Ok(answer) => answers.push(answer),
            Err(answer_violations) => violations.extend(answer_violations),
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(SubmitResponseRequest {
        survey_id,
        user_id,
        anonymous_id,
        answers,
    })
}

fn read_answer(index: usize, item: &Value) -> Result<Answer, Vec<FieldViolation>> {
    let path = format!("answers[{index}]");
    let Some(object) = item.as_object() else {
        let description = format!("must be a JSON object, got {}", kind_of(item));
        return Err(vec![FieldViolation::new(path, description)]);
    };
    let prefix = format!("{path}.");
    let mut fields = Fields::new(object, &prefix);
    let has_score = fields.find(&["score"]).is_some();
    let has_text = fields.find(&["text"]).is_some();
    let question_id = fields.id(&QUESTION_ID);
    let (min, max) = SCORE_RANGE;
    let score = fields.integer("score", min, max, &format!("must be an integer from {min} to {max}"));
    let text = fields.free_text("text");
    let mut violations = fields.finish(()).err().unwrap_or_default();

    let value = match (has_score, has_text) {
        (true, true) => {
            violations.push(FieldViolation::new(path, "set score or text, not both"));
            None
        }
        (false, false) => {
            violations.push(FieldViolation::new(path, "missing score or text"));
            None
        }
        // `None` when the one value sent was rejected above.
        _ => score.map(answer::Value::Score).or(text.map(answer::Value::Text)),
    };
    match value {
        Some(value) if violations.is_empty() => Ok(Answer {
            question_id,
            value: Some(value),
        }),
        _ => Err(violations),
    }
}

fn body_object(body: &Value) -> Result<&Map<String, Value>, Vec<FieldViolation>> {
    body.as_object().ok_or_else(|| {
        let description = format!("must be a JSON object, got {}", kind_of(body));
        vec![FieldViolation::new("body", description)]
    })
}

fn limit(fields: &mut Fields<'_>) -> i32 {
    let expected = format!("must be an integer from 0 to {MAX_LIMIT}");
    fields.integer("limit", 0, MAX_LIMIT, &expected).unwrap_or_default()
}

/// Turns query parameters into a JSON object of strings, so that [`Fields`]
/// reads them like a body. The parameters named in `integers` become JSON
/// numbers when they parse as integers and stay strings otherwise, so that
/// `limit=abc` is reported as `got "abc"`. A parameter given twice is a
/// violation, because it is unclear which value the client meant.
fn query_object(query: Vec<(String, String)>, integers: &[&str]) -> Result<Map<String, Value>, Vec<FieldViolation>> {
    let mut object = Map::new();
    let mut violations = Vec::new();
    for (name, text) in query {
        let integer = integers
            .contains(&name.as_str())
            .then(|| text.trim().parse::<i64>().ok())
            .flatten();
        let value = integer.map_or_else(|| Value::String(text), Value::from);
        if object.contains_key(&name) {
            violations.push(FieldViolation::new(name, "must be given at most once"));
        } else {
            object.insert(name, value);
        }
    }
    if violations.is_empty() {
        Ok(object)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|violation| violation.field.as_str()).collect()
    }

    #[test]
    fn decide_body_aliases() {
        let body = json!({
            "placement": "cart", "userId": "u1", "anonymousId": "a1", "limit": 3, "context": {"page": "cart"}
        });
        let request = decide_request(&body).expect("valid body");
        assert_eq!(request.placement, "cart", "placement");
        assert_eq!(request.user_id, "u1", "user id");
        assert_eq!(request.anonymous_id, "a1", "anonymous id");
        assert_eq!(request.limit, 3, "limit");
        assert!(request.context.is_some(), "context");
    }

    #[test]
    fn decide_type_errors_named() {
        let cases = [
            (
                json!({"limit": "a"}),
                "limit",
                "must be an integer from 0 to 2147483647, got \"a\"",
            ),
            (
                json!({"limit": 1.5}),
                "limit",
                "must be an integer from 0 to 2147483647, got 1.5",
            ),
            (
                json!({"limit": 99_999_999_999_i64}),
                "limit",
                "must be an integer from 0 to 2147483647, got 99999999999",
            ),
            (
                json!({"limit": -1}),
                "limit",
                "must be an integer from 0 to 2147483647, got -1",
            ),
            (
                json!({"context": [1]}),
                "context",
                "must be a JSON object, got an array",
            ),
            (json!({"placement": 5}), "placement", "must be a string, got a number"),
            (json!({"userId": true}), "userId", "must be a string, got a boolean"),
        ];
        for (body, field, description) in cases {
            let violations = decide_request(&body).unwrap_err();
            assert_eq!(violations, [FieldViolation::new(field, description)], "body {body}");
        }
    }

    #[test]
    fn decide_ids_checked() {
        let body = json!({"placement": "cart", "user_id": "a\u{0}b"});
        let violations = decide_request(&body).unwrap_err();
        assert_eq!(fields(&violations), ["user_id"], "NUL in user id");
        let body = json!({"placement": "x".repeat(257), "anonymousId": "a1"});
        let violations = decide_request(&body).unwrap_err();
        assert_eq!(fields(&violations), ["placement"], "long placement");
        assert!(
            violations[0].description.contains("256 bytes"),
            "limit named: {}",
            violations[0].description
        );
    }

    #[test]
    fn body_must_be_object() {
        let violations = decide_request(&json!([1])).unwrap_err();
        assert_eq!(
            violations,
            [FieldViolation::new("body", "must be a JSON object, got an array")]
        );
    }

    #[test]
    fn recommendations_query_checked() {
        let request = recommend_request(query(&[("itemId", "p1"), ("limit", " 5")])).expect("valid query");
        assert_eq!(request.item_id, "p1", "item id");
        assert_eq!(request.limit, 5, "limit");

        let violations = recommend_request(query(&[("user_id", "u1"), ("limit", "abc")])).unwrap_err();
        let expected = FieldViolation::new("limit", "must be an integer from 0 to 2147483647, got \"abc\"");
        assert_eq!(violations, [expected], "limit not a number");
        let violations = recommend_request(query(&[("item_id", "a\u{0}b")])).unwrap_err();
        assert_eq!(fields(&violations), ["item_id"], "NUL in item id");
        let violations = recommend_request(query(&[("userId", "u1"), ("userId", "u2")])).unwrap_err();
        assert_eq!(fields(&violations), ["userId"], "repeated parameter");
    }

    #[test]
    fn numeric_query_id_is_text() {
        let request = recommend_request(query(&[("user_id", "42")])).expect("valid query");
        assert_eq!(request.user_id, "42");
    }

    #[test]
    fn eligible_query_checked() {
        let request = eligible_request(query(&[("anonymousId", "a1")])).expect("valid query");
        assert_eq!(request.anonymous_id, "a1", "anonymous id");
        let violations = eligible_request(query(&[("userId", "a\u{0}b")])).unwrap_err();
        assert_eq!(fields(&violations), ["userId"], "NUL in user id");
    }

    #[test]
    fn path_id_checked() {
        assert!(check_path_id("user_id", "u1").is_ok(), "plain id");
        let violations = check_path_id("user_id", "a\u{0}b").unwrap_err();
        assert_eq!(fields(&violations), ["user_id"], "NUL");
        let violations = check_path_id("id", &"u".repeat(300)).unwrap_err();
        assert_eq!(
            violations[0].description, "must be at most 256 bytes, got 300",
            "length"
        );
    }

    #[test]
    fn answers_need_one_value() {
        let body = json!({
            "user_id": "u1",
            "answers": [
                {"question_id": "nps", "score": 9},
                {"question_id": "why", "text": "fast delivery"},
                {"question_id": "both", "score": 1, "text": "x"},
                {"question_id": "none"},
            ]
        });
        let violations = survey_response(&body, "s1".to_owned()).unwrap_err();
        assert_eq!(fields(&violations), ["answers[2]", "answers[3]"]);
    }

    #[test]
    fn answer_type_errors_named() {
        let cases = [
            (json!({"answers": {}}), "answers", "must be an array, got an object"),
            (
                json!({"answers": [7]}),
                "answers[0]",
                "must be a JSON object, got a number",
            ),
            (
                json!({"answers": [{"questionId": "nps", "score": 5.5}]}),
                "answers[0].score",
                "must be an integer from 0 to 10, got 5.5",
            ),
            (
                json!({"answers": [{"questionId": "nps", "score": "9"}]}),
                "answers[0].score",
                "must be an integer from 0 to 10, got \"9\"",
            ),
            (
                json!({"answers": [{"questionId": "why", "text": 3}]}),
                "answers[0].text",
                "must be a string, got a number",
            ),
            (
                json!({"answers": [{"questionId": "why", "text": "a\u{0}b"}]}),
                "answers[0].text",
                "must not contain control characters, found U+0000 at byte 1",
            ),
        ];
        for (body, field, description) in cases {
            let violations = survey_response(&body, "s1".to_owned()).unwrap_err();
            assert_eq!(violations, [FieldViolation::new(field, description)], "body {body}");
        }
    }

    #[test]
    fn answer_ids_checked() {
        let body = json!({"userId": "a\u{0}b", "answers": [{"questionId": "n\u{0}", "score": 9}]});
        let violations = survey_response(&body, "s1".to_owned()).unwrap_err();
        assert_eq!(fields(&violations), ["userId", "answers[0].questionId"]);
    }

    #[test]
    fn answers_convert() {
        let body = json!({
            "anonymousId": "a1",
            "answers": [{"questionId": "nps", "score": 9}, {"question_id": "why", "text": "ok\nthanks"}]
        });
        let request = survey_response(&body, "s1".to_owned()).expect("valid answers");
        assert_eq!(request.survey_id, "s1", "survey id");
        assert_eq!(request.anonymous_id, "a1", "anonymous id");
        assert_eq!(request.answers[0].question_id, "nps", "question id");
        assert_eq!(request.answers[0].value, Some(answer::Value::Score(9)), "score");
        assert_eq!(
            request.answers[1].value,
            Some(answer::Value::Text("ok\nthanks".to_owned())),
            "text"
        );
    }
}
