//! Survey definitions: validation of a survey as a client sends it, and the
//! compiled form that the service evaluates targeting with.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rtim_proto::surveys::v1::{Question, QuestionType, Survey};
use rtim_rules::{Rule, RuleError};
use rtim_runtime::auth::TenantId;
use rtim_runtime::errors::FieldViolation;

use crate::entity::survey::{self, Questions, StoredQuestion, StoredQuestionKind};

/// Maximum length of a survey id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Maximum length of a title or question text, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Maximum number of questions in one survey.
pub const MAX_QUESTIONS: usize = 50;

/// The variables that targeting expressions may use.
const TARGETING_VARIABLES: &[&str] = &["profile"];

/// A validated survey with its targeting compiled.
#[derive(Clone, Debug)]
pub struct CompiledSurvey {
    pub survey: Survey,
    targeting: Targeting,
}

#[derive(Clone, Debug)]
enum Targeting {
    Everyone,
    Rule(Rule),
    /// A stored expression that no longer compiles, which targets nobody.
    Invalid,
}

impl CompiledSurvey {
    /// Validates `survey` and compiles its targeting. Each violation names
    /// its field under `survey.`, such as `survey.questions[1].type`.
    pub fn compile(mut survey: Survey) -> Result<CompiledSurvey, Vec<FieldViolation>> {
        survey.targeting = survey.targeting.trim().to_owned();
        let mut violations = validate(&survey);
        let targeting = match compile_targeting(&survey.targeting) {
            Ok(targeting) => targeting,
            Err(error) => {
                violations.push(FieldViolation::new("survey.targeting", error.to_string()));
                Targeting::Invalid
            }
        };
        if violations.is_empty() {
            Ok(CompiledSurvey { survey, targeting })
        } else {
            Err(violations)
        }
    }

    /// Rebuilds a stored survey. A targeting expression that no longer
    /// compiles is logged and makes the survey target nobody.
    pub fn from_model(model: survey::Model) -> CompiledSurvey {
        let targeting = compile_targeting(&model.targeting).unwrap_or_else(|error| {
            tracing::error!(tenant.id = %model.tenant_id, survey.id = %model.id, %error, "invalid stored targeting expression, the survey is offered to nobody until it is saved again");
            Targeting::Invalid
        });
        let questions = model.questions.0.into_iter().map(question_from_stored).collect();
        let survey = Survey {
            id: model.id,
            title: model.title,
            questions,
            targeting: model.targeting,
        };
        CompiledSurvey { survey, targeting }
    }

    /// Builds the row that stores this survey.
    pub fn to_model(&self, tenant: &TenantId, updated_at: DateTime<Utc>) -> survey::Model {
        let questions = self.survey.questions.iter().map(question_to_stored).collect();
        survey::Model {
            tenant_id: tenant.as_str().to_owned(),
            id: self.survey.id.clone(),
            title: self.survey.title.clone(),
            questions: Questions(questions),
            targeting: self.survey.targeting.clone(),
            updated_at,
        }
    }

    pub fn id(&self) -> &str {
        &self.survey.id
    }

    pub fn question(&self, id: &str) -> Option<&Question> {
        self.survey.questions.iter().find(|question| question.id == id)
    }

    /// Evaluates the targeting against `profile` as rules see it. An
    /// evaluation error, such as a missing map key, means not targeted.
    pub fn targets(&self, profile: &serde_json::Value) -> bool {
        match &self.targeting {
            Targeting::Everyone => true,
            Targeting::Invalid => false,
            Targeting::Rule(rule) => match rule.eval_bool(&[("profile", profile)]) {
                Ok(targeted) => targeted,
                Err(error) => {
                    tracing::debug!(survey.id = %self.survey.id, %error, "targeting evaluation failed, the shopper is not targeted");
                    false
                }
            },
        }
    }
}

fn compile_targeting(source: &str) -> Result<Targeting, RuleError> {
    if source.trim().is_empty() {
        return Ok(Targeting::Everyone);
    }
    Rule::compile(source, TARGETING_VARIABLES).map(Targeting::Rule)
}

/// Checks every field but the targeting and returns one violation per problem.
fn validate(survey: &Survey) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if let Err(description) = check_id(&survey.id) {
        violations.push(FieldViolation::new("survey.id", description));
    }
    if survey.title.trim().is_empty() {
        violations.push(FieldViolation::new("survey.title", "missing"));
    } else if survey.title.chars().count() > MAX_TEXT_CHARS {
        violations.push(FieldViolation::new(
            "survey.title",
            format!("longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    if survey.questions.is_empty() {
        violations.push(FieldViolation::new(
            "survey.questions",
            "missing: add at least one question",
        ));
    } else if survey.questions.len() > MAX_QUESTIONS {
        violations.push(FieldViolation::new(
            "survey.questions",
            format!(
                "{} questions, at most {MAX_QUESTIONS} are allowed",
                survey.questions.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (index, question) in survey.questions.iter().enumerate() {
        violations.extend(validate_question(index, question, &mut seen));
    }
    violations
}

/// Checks a survey id: letters, digits, '-' and '_', at most [`MAX_ID_CHARS`].
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("missing".to_owned());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!("longer than {MAX_ID_CHARS} characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "'{id}' contains '{bad}'; use ASCII letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

fn validate_question<'a>(index: usize, question: &'a Question, seen: &mut HashSet<&'a str>) -> Vec<FieldViolation> {
    let field = |name: &str| format!("survey.questions[{index}].{name}");
    let mut violations = Vec::new();
    if question.id.is_empty() {
        violations.push(FieldViolation::new(field("id"), "missing"));
    } else if !seen.insert(question.id.as_str()) {
        violations.push(FieldViolation::new(
            field("id"),
            format!(
                "'{}' is used by an earlier question; question ids must be unique",
                question.id
            ),
        ));
    }
    match QuestionType::try_from(question.r#type) {
        Ok(QuestionType::Nps | QuestionType::Text) => {}
        Ok(QuestionType::Unspecified) => violations.push(FieldViolation::new(
            field("type"),
            "missing: use QUESTION_TYPE_NPS or QUESTION_TYPE_TEXT",
        )),
        Err(_) => violations.push(FieldViolation::new(
            field("type"),
            format!(
                "unknown question type {}; use QUESTION_TYPE_NPS or QUESTION_TYPE_TEXT",
                question.r#type
            ),
        )),
    }
    if question.text.trim().is_empty() {
        violations.push(FieldViolation::new(field("text"), "missing"));
    } else if question.text.chars().count() > MAX_TEXT_CHARS {
        violations.push(FieldViolation::new(
            field("text"),
            format!("longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    violations
}

fn question_to_stored(question: &Question) -> StoredQuestion {
    // Validation admits only NPS and text questions.
    let kind = match question.r#type() {
        QuestionType::Nps => StoredQuestionKind::Nps,
        QuestionType::Text | QuestionType::Unspecified => StoredQuestionKind::Text,
    };
    StoredQuestion {
        id: question.id.clone(),
        kind,
        text: question.text.clone(),
        required: question.required,
    }
}

fn question_from_stored(question: StoredQuestion) -> Question {
    let kind = match question.kind {
        StoredQuestionKind::Nps => QuestionType::Nps,
        StoredQuestionKind::Text => QuestionType::Text,
    };
    Question {
        id: question.id,
        r#type: kind.into(),
        text: question.text,
        required: question.required,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn question(id: &str, kind: QuestionType) -> Question {
        Question {
            id: id.to_owned(),
            r#type: kind.into(),
            text: "How likely are you to recommend us to a friend?".to_owned(),
            required: true,
        }
    }

    fn survey(targeting: &str, questions: Vec<Question>) -> Survey {
        Survey {
            id: "post-purchase-nps".to_owned(),
            title: "After your order".to_owned(),
            questions,
            targeting: targeting.to_owned(),
        }
    }

    fn fields(result: Result<CompiledSurvey, Vec<FieldViolation>>) -> Vec<String> {
        result
            .expect_err("the survey is invalid")
            .into_iter()
            .map(|violation| violation.field)
            .collect()
    }

    #[test]
    fn targeting_selects_buyers() {
        let compiled = CompiledSurvey::compile(survey(
            " profile.order_count > 0 ",
            vec![question("q", QuestionType::Nps)],
        ))
        .expect("valid survey");
        assert_eq!(
            compiled.survey.targeting, "profile.order_count > 0",
            "targeting is trimmed"
        );
        assert!(compiled.targets(&json!({"order_count": 2})), "a buyer is targeted");
        assert!(
            !compiled.targets(&json!({"order_count": 0})),
            "a non-buyer is not targeted"
        );
        assert!(!compiled.targets(&json!({})), "an evaluation error means not targeted");
    }

    #[test]
    fn empty_targeting_targets_everyone() {
        let compiled = CompiledSurvey::compile(survey("", vec![question("q", QuestionType::Text)])).expect("valid");
        assert!(compiled.targets(&json!({})), "every shopper is targeted");
    }

    #[test]
    fn violations_name_fields() {
        let mut bad = survey(
            "profile.order_count >",
            vec![
                question("q", QuestionType::Nps),
                question("q", QuestionType::Unspecified),
                Question {
                    r#type: 9,
                    ..question("", QuestionType::Text)
                },
            ],
        );
        bad.id = "has space".to_owned();
        bad.title = " ".to_owned();
        assert_eq!(
            fields(CompiledSurvey::compile(bad)),
            [
                "survey.id",
                "survey.title",
                "survey.questions[1].id",
                "survey.questions[1].type",
                "survey.questions[2].id",
                "survey.questions[2].type",
                "survey.targeting",
            ]
        );
    }

    #[test]
    fn unknown_variable_is_rejected() {
        let result = CompiledSurvey::compile(survey("user.orders > 0", vec![question("q", QuestionType::Nps)]));
        assert_eq!(fields(result), ["survey.targeting"]);
    }

    #[test]
    fn no_questions_is_rejected() {
        assert_eq!(
            fields(CompiledSurvey::compile(survey("", vec![]))),
            ["survey.questions"]
        );
    }

    #[test]
    fn stored_survey_round_trips() {
        let original = survey("profile.order_count > 0", vec![question("q", QuestionType::Nps)]);
        let compiled = CompiledSurvey::compile(original.clone()).expect("valid");
        let model = compiled.to_model(&TenantId("demo".to_owned()), Utc::now());
        let restored = CompiledSurvey::from_model(model);
        assert_eq!(restored.survey, original, "every field survives storage");
        assert!(
            restored.targets(&json!({"order_count": 1})),
            "targeting is compiled again"
        );
    }
}
