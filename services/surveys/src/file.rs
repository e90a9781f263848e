//! The surveys file: YAML with a top-level `tenant` and a `surveys` list,
//! upserted at start through the same validation as `PutSurvey`.
//!
//! ```yaml
//! tenant: demo
//! surveys:
//!   - id: post-purchase-nps
//!     title: After your order
//!     targeting: profile.order_count > 0
//!     questions:
//!       - id: likelihood
//!         type: nps
//!         text: How likely are you to recommend us to a friend?
//!         required: true
//! ```

use std::path::Path;

use rtim_proto::surveys::v1::{Question, QuestionType, Survey};
use rtim_runtime::auth::TenantId;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read surveys file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid surveys file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SurveysFile {
    tenant: String,
    surveys: Vec<SurveyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SurveyEntry {
    id: String,
    title: String,
    #[serde(default)]
    targeting: String,
    questions: Vec<QuestionEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionEntry {
    id: String,
    #[serde(rename = "type")]
    kind: QuestionKind,
    text: String,
    #[serde(default)]
    required: bool,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum QuestionKind {
    Nps,
    Text,
}

/// The surveys of a file, not yet validated.
#[derive(Clone, Debug)]
pub struct Definitions {
    pub tenant: TenantId,
    pub surveys: Vec<Survey>,
}

/// Reads and parses a surveys file.
pub fn load(path: &Path) -> Result<Definitions, FileError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: display.clone(),
        source,
    })?;
    parse(&text).map_err(|source| FileError::Parse { path: display, source })
}

fn parse(text: &str) -> Result<Definitions, serde_yaml::Error> {
    let file: SurveysFile = serde_yaml::from_str(text)?;
    let surveys = file.surveys.into_iter().map(to_survey).collect();
    Ok(Definitions {
        tenant: TenantId(file.tenant),
        surveys,
    })
}

fn to_survey(entry: SurveyEntry) -> Survey {
    let questions = entry
        .questions
        .into_iter()
        .map(|question| {
            let kind = match question.kind {
                QuestionKind::Nps => QuestionType::Nps,
                QuestionKind::Text => QuestionType::Text,
            };
            Question {
                id: question.id,
                r#type: kind.into(),
                text: question.text,
                required: question.required,
            }
        })
        .collect();
    Survey {
        id: entry.id,
        title: entry.title,
        questions,
        targeting: entry.targeting,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::definition::CompiledSurvey;

    #[test]
    fn example_file_compiles() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/surveys.yaml");
        let definitions = load(&path).expect("the example file parses");
        assert_eq!(definitions.tenant.as_str(), "demo", "the example tenant");
        let compiled: Vec<CompiledSurvey> = definitions
            .surveys
            .into_iter()
            .map(|survey| CompiledSurvey::compile(survey).expect("every example survey is valid"))
            .collect();
        let nps = compiled
            .iter()
            .find(|survey| survey.id() == "post-purchase-nps")
            .expect("the post-purchase survey is defined");
        assert!(nps.targets(&json!({"order_count": 1})), "a buyer is targeted");
        assert!(!nps.targets(&json!({"order_count": 0})), "a non-buyer is not targeted");

        let browse = compiled
            .iter()
            .find(|survey| survey.id() == "browse-feedback")
            .expect("the browse feedback survey is defined");
        let browser = json!({"order_count": 0, "event_counts": {"Product Viewed": 12}});
        let buyer = json!({"order_count": 1, "event_counts": {"Product Viewed": 12}});
        let newcomer = json!({"order_count": 0, "event_counts": {}});
        assert!(
            browse.targets(&browser),
            "a browser with 12 views and no order is targeted"
        );
        assert!(!browse.targets(&buyer), "a buyer is not targeted");
        assert!(!browse.targets(&newcomer), "a shopper without views is not targeted");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let error = parse("tenant: demo\nsurveys:\n  - id: a\n    title: A\n    questons: []\n").unwrap_err();
        assert!(error.to_string().contains("questons"), "{error}");
    }

    #[test]
    fn unknown_question_type_is_rejected() {
        let text =
            "tenant: demo\nsurveys:\n  - id: a\n    title: A\n    questions:\n      - {id: q, type: stars, text: Q}\n";
        let error = parse(text).unwrap_err();
        assert!(error.to_string().contains("stars"), "{error}");
    }
}
