//! Response validation and Net Promoter Score results.

use std::collections::{HashMap, HashSet};

use rtim_proto::surveys::v1::answer::Value;
use rtim_proto::surveys::v1::{Answer, NpsResult, QuestionType, Survey};
use rtim_runtime::errors::FieldViolation;

use crate::entity::response::StoredAnswer;

/// Lowest and highest NPS score.
pub const NPS_RANGE: std::ops::RangeInclusive<i32> = 0..=10;
/// Maximum length of a text answer, in characters.
pub const MAX_TEXT_ANSWER_CHARS: usize = 5000;

/// Checks `answers` against the questions of `survey` and returns them in
/// their stored form, or one violation per problem, each naming its field
/// (`answers[2].score`).
pub fn validate(survey: &Survey, answers: &[Answer]) -> Result<Vec<StoredAnswer>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut stored = Vec::with_capacity(answers.len());
    let mut answered = HashSet::new();
    for (index, answer) in answers.iter().enumerate() {
        let field = |name: &str| format!("answers[{index}].{name}");
        let Some(question) = survey
            .questions
            .iter()
            .find(|question| question.id == answer.question_id)
        else {
            let description = if answer.question_id.is_empty() {
                "missing".to_owned()
            } else {
                format!("unknown question '{}' in survey '{}'", answer.question_id, survey.id)
            };
            violations.push(FieldViolation::new(field("question_id"), description));
            continue;
        };
        if !answered.insert(question.id.as_str()) {
            violations.push(FieldViolation::new(
                field("question_id"),
                format!("question '{}' is answered more than once", question.id),
            ));
            continue;
        }
        match check_value(question.r#type(), &question.id, answer.value.as_ref()) {
            Ok(answer) => stored.push(answer),
            Err((name, description)) => violations.push(FieldViolation::new(field(name), description)),
        }
    }
    for question in &survey.questions {
        if question.required && !answered.contains(question.id.as_str()) {
            violations.push(FieldViolation::new(
                "answers",
                format!("missing an answer to required question '{}'", question.id),
            ));
        }
    }
    if violations.is_empty() {
        Ok(stored)
    } else {
        Err(violations)
    }
}

/// Checks one answer's value against its question type. An error carries the
/// name of the field within the answer and the description.
fn check_value(
    kind: QuestionType,
    question_id: &str,
    value: Option<&Value>,
) -> Result<StoredAnswer, (&'static str, String)> {
    let stored = |score, text| StoredAnswer {
        question_id: question_id.to_owned(),
        score,
        text,
    };
    match (kind, value) {
        (QuestionType::Nps, Some(Value::Score(score))) if NPS_RANGE.contains(score) => Ok(stored(Some(*score), None)),
        (QuestionType::Nps, Some(Value::Score(score))) => {
            Err(("score", format!("must be an integer from 0 to 10, got {score}")))
        }
        (QuestionType::Nps, _) => Err((
            "score",
            format!("missing: question '{question_id}' is an NPS question and needs a score from 0 to 10"),
        )),
        (QuestionType::Text, Some(Value::Text(text))) if text.trim().is_empty() => {
            Err(("text", "must not be empty".to_owned()))
        }
        (QuestionType::Text, Some(Value::Text(text))) => {
            let length = text.chars().count();
            if length > MAX_TEXT_ANSWER_CHARS {
                Err((
                    "text",
                    format!("{length} characters, at most {MAX_TEXT_ANSWER_CHARS} are allowed"),
                ))
            } else {
                Ok(stored(None, Some(text.clone())))
            }
        }
        (QuestionType::Text | QuestionType::Unspecified, _) => Err((
            "text",
            format!("missing: question '{question_id}' is a text question and needs a text answer"),
        )),
    }
}

/// Counts of one NPS question.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    promoters: i64,
    passives: i64,
    detractors: i64,
}

impl Tally {
    fn add(&mut self, score: i32) {
        match score {
            9..=10 => self.promoters += 1,
            7..=8 => self.passives += 1,
            _ => self.detractors += 1,
        }
    }

    /// Percentage of promoters minus percentage of detractors, rounded to two decimals.
    fn score(&self) -> f64 {
        let answered = self.promoters + self.passives + self.detractors;
        if answered == 0 {
            return 0.0;
        }
        let score = 100.0 * (self.promoters - self.detractors) as f64 / answered as f64;
        (score * 100.0).round() / 100.0
    }
}

/// NPS counts summed over responses, one entry per NPS question of the
/// survey in question order. Answers to questions that are no longer NPS
/// questions of the survey are ignored.
#[derive(Debug)]
pub struct NpsResults {
    order: Vec<String>,
    tallies: HashMap<String, Tally>,
}

impl NpsResults {
    pub fn new(survey: &Survey) -> NpsResults {
        let order: Vec<String> = survey
            .questions
            .iter()
            .filter(|question| question.r#type() == QuestionType::Nps)
            .map(|question| question.id.clone())
            .collect();
        let tallies = order.iter().map(|id| (id.clone(), Tally::default())).collect();
        NpsResults { order, tallies }
    }

    /// Adds the answers of one response.
    pub fn add(&mut self, answers: &[StoredAnswer]) {
        for answer in answers {
            if let (Some(tally), Some(score)) = (self.tallies.get_mut(&answer.question_id), answer.score) {
                tally.add(score);
            }
        }
    }

    pub fn finish(mut self) -> Vec<NpsResult> {
        self.order
            .into_iter()
            .map(|question_id| {
                let tally = self.tallies.remove(&question_id).unwrap_or_default();
                NpsResult {
                    score: tally.score(),
                    promoters: tally.promoters,
                    passives: tally.passives,
                    detractors: tally.detractors,
                    question_id,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rtim_proto::surveys::v1::Question;

    use super::*;

    fn survey() -> Survey {
        let question = |id: &str, kind: QuestionType, required: bool| Question {
            id: id.to_owned(),
            r#type: kind.into(),
            text: "?".to_owned(),
            required,
        };
        Survey {
            id: "nps".to_owned(),
            title: "NPS".to_owned(),
            questions: vec![
                question("likely", QuestionType::Nps, true),
                question("reason", QuestionType::Text, false),
            ],
            targeting: String::new(),
        }
    }

    fn score(question_id: &str, score: i32) -> Answer {
        Answer {
            question_id: question_id.to_owned(),
            value: Some(Value::Score(score)),
        }
    }

    fn text(question_id: &str, text: &str) -> Answer {
        Answer {
            question_id: question_id.to_owned(),
            value: Some(Value::Text(text.to_owned())),
        }
    }

    fn violations(answers: &[Answer]) -> Vec<(String, String)> {
        validate(&survey(), answers)
            .expect_err("the answers are invalid")
            .into_iter()
            .map(|violation| (violation.field, violation.description))
            .collect()
    }

    #[test]
    fn valid_answers_are_stored() {
        let stored = validate(&survey(), &[score("likely", 10), text("reason", "fast delivery")]).expect("valid");
        assert_eq!(stored[0].score, Some(10), "the score is kept");
        assert_eq!(stored[1].text.as_deref(), Some("fast delivery"), "the text is kept");
    }

    #[test]
    fn out_of_range_score_names_field() {
        let found = violations(&[score("likely", 11)]);
        assert_eq!(found[0].0, "answers[0].score", "the field is named");
        assert!(found[0].1.contains("11"), "the value is named: {}", found[0].1);
    }

    #[test]
    fn answer_problems_are_listed() {
        let long = "x".repeat(MAX_TEXT_ANSWER_CHARS + 1);
        let found = violations(&[text("likely", "ten"), text("reason", &long), score("other", 3)]);
        let fields: Vec<&str> = found.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(
            fields,
            ["answers[0].score", "answers[1].text", "answers[2].question_id"]
        );
        assert_eq!(
            violations(&[text("reason", "  ")])[0].0,
            "answers[0].text",
            "blank text is rejected"
        );
    }

    #[test]
    fn required_question_needs_answer() {
        let found = violations(&[text("reason", "nothing to add")]);
        assert_eq!(found[0].0, "answers", "a missing answer is reported on the list");
        assert!(found[0].1.contains("'likely'"), "the question is named: {}", found[0].1);
    }

    #[test]
    fn repeated_question_is_rejected() {
        let found = violations(&[score("likely", 3), score("likely", 4)]);
        assert_eq!(found[0].0, "answers[1].question_id");
    }

    #[test]
    fn nps_of_known_set() {
        let mut results = NpsResults::new(&survey());
        for value in [10, 9, 8, 6, 0] {
            results.add(&validate(&survey(), &[score("likely", value)]).expect("valid"));
        }
        let results = results.finish();
        assert_eq!(results.len(), 1, "one NPS question");
        assert_eq!(results[0].promoters, 2, "10 and 9 promote");
        assert_eq!(results[0].passives, 1, "8 is passive");
        assert_eq!(results[0].detractors, 2, "6 and 0 detract");
        assert_eq!(results[0].score, 0.0, "as many promoters as detractors");
    }

    #[test]
    fn nps_score_rounds_to_hundredths() {
        let mut results = NpsResults::new(&survey());
        for value in [10, 10, 7] {
            results.add(&validate(&survey(), &[score("likely", value)]).expect("valid"));
        }
        assert_eq!(results.finish()[0].score, 66.67, "200 / 3 rounded");
    }

    #[test]
    fn nps_without_answers_is_zero() {
        let results = NpsResults::new(&survey()).finish();
        assert_eq!(results[0].score, 0.0, "no division by zero");
        assert_eq!(results[0].promoters, 0, "nothing counted");
    }
}
