//! Validation of actions and of Decide requests. An action is compiled here,
//! once, so that Decide only evaluates.

use rtim_proto::decisioning::v1::{Action, DecideRequest};
use rtim_rules::Rule;
use rtim_runtime::errors::FieldViolation;

/// Maximum length of an action id or a placement name, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Maximum length of a Decide request's placement, user id and anonymous id,
/// in bytes: the id limit of the ingestion service, so that any shopper id it
/// accepts can be decided for.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// Variables that an action condition may use.
pub const CONDITION_VARIABLES: [&str; 2] = ["profile", "context"];

/// An action ready for Decide: its condition compiled and its score known.
#[derive(Clone, Debug)]
pub struct CompiledAction {
    pub action: Action,
    /// `None` for an empty condition, which always holds.
    pub condition: Option<Rule>,
    /// value x priority, the ranking key.
    pub score: f64,
}

impl CompiledAction {
    pub fn id(&self) -> &str {
        &self.action.id
    }
}

/// Checks every field of `action` and compiles its condition. The error lists
/// every violation, with field names under `action.`.
pub fn compile_action(action: Action) -> Result<CompiledAction, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    check_id("action.id", &action.id, &mut violations);
    check_placements(&action.placements, &mut violations);
    check_amount("action.value", action.value, &mut violations);
    check_amount("action.priority", action.priority, &mut violations);
    let condition = compile_condition(&action.condition, &mut violations);
    if !violations.is_empty() {
        return Err(violations);
    }
    let score = action.value * action.priority;
    Ok(CompiledAction {
        action,
        condition,
        score,
    })
}

/// Checks that an id is non-empty, at most [`MAX_ID_LEN`] long and made of
/// ASCII letters, digits, '-' and '_'.
pub fn check_id(field: &str, id: &str, violations: &mut Vec<FieldViolation>) {
    if id.is_empty() {
        violations.push(FieldViolation::new(field, "is required"));
    } else if id.len() > MAX_ID_LEN {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {MAX_ID_LEN} bytes long, got {}", id.len()),
        ));
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        violations.push(FieldViolation::new(
            field,
            format!("'{id}' may contain only letters, digits, '-' and '_'"),
        ));
    }
}

fn check_placements(placements: &[String], violations: &mut Vec<FieldViolation>) {
    if placements.is_empty() {
        violations.push(FieldViolation::new(
            "action.placements",
            "at least one placement is required",
        ));
    }
    for (index, placement) in placements.iter().enumerate() {
        let field = format!("action.placements[{index}]");
        if placement.trim().is_empty() {
            violations.push(FieldViolation::new(field, "must not be empty"));
        } else {
            check_text(&field, placement, MAX_ID_LEN, violations);
        }
    }
}

/// Checks that `text` is at most `max_len` bytes long and contains no
/// control character (U+0000 to U+001F and U+007F to U+009F), which
/// PostgreSQL text columns reject (NUL) or logs would print raw.
pub fn check_text(field: &str, text: &str, max_len: usize, violations: &mut Vec<FieldViolation>) {
    if text.len() > max_len {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {max_len} bytes long, got {}", text.len()),
        ));
    } else if let Some((position, control)) = text.char_indices().find(|(_, c)| c.is_control()) {
        violations.push(FieldViolation::new(
            field,
            format!(
                "must not contain control characters, found U+{:04X} at byte {position}",
                u32::from(control)
            ),
        ));
    }
}

fn check_amount(field: &str, amount: f64, violations: &mut Vec<FieldViolation>) {
    if !amount.is_finite() {
        violations.push(FieldViolation::new(
            field,
            format!("must be a finite number, got {amount}"),
        ));
    } else if amount < 0.0 {
        violations.push(FieldViolation::new(field, format!("must be >= 0, got {amount}")));
    }
}

fn compile_condition(source: &str, violations: &mut Vec<FieldViolation>) -> Option<Rule> {
    if source.trim().is_empty() {
        return None;
    }
    match Rule::compile(source, &CONDITION_VARIABLES) {
        Ok(rule) => Some(rule),
        Err(error) => {
            violations.push(FieldViolation::new("action.condition", error.to_string()));
            None
        }
    }
}

/// Checks a Decide request: a placement, an identity, ids of at most
/// [`MAX_REQUEST_ID_LEN`] bytes without control characters and a
/// non-negative limit.
pub fn check_decide(request: &DecideRequest) -> Result<(), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if request.placement.trim().is_empty() {
        violations.push(FieldViolation::new("placement", "is required"));
    }
    if request.user_id.is_empty() && request.anonymous_id.is_empty() {
        violations.push(FieldViolation::new("user_id", "user_id or anonymous_id is required"));
    }
    for (field, text) in [
        ("placement", &request.placement),
        ("user_id", &request.user_id),
        ("anonymous_id", &request.anonymous_id),
    ] {
        check_text(field, text, MAX_REQUEST_ID_LEN, &mut violations);
    }
    if request.limit < 0 {
        violations.push(FieldViolation::new(
            "limit",
            format!("must be >= 0, got {}", request.limit),
        ));
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str) -> Action {
        Action {
            id: id.to_owned(),
            name: "Test".to_owned(),
            placements: vec!["cart".to_owned()],
            condition: "profile.order_count > 0".to_owned(),
            value: 10.0,
            priority: 2.0,
            payload: None,
        }
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|violation| violation.field.as_str()).collect()
    }

    #[test]
    fn valid_action_compiles() {
        let compiled = compile_action(action("free-shipping_2")).unwrap();
        assert_eq!(compiled.score, 20.0, "score is value x priority");
        assert!(compiled.condition.is_some(), "condition compiled");
    }

    #[test]
    fn empty_condition_always_holds() {
        let compiled = compile_action(Action {
            condition: "  ".to_owned(),
            ..action("welcome")
        })
        .unwrap();
        assert!(compiled.condition.is_none());
    }

    #[test]
    fn id_format_is_checked() {
        for bad in ["", "has space", "dot.ted", "slash/ed"] {
            let violations = compile_action(action(bad)).unwrap_err();
            assert_eq!(fields(&violations), ["action.id"], "id {bad:?}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            fields(&compile_action(action(&long)).unwrap_err()),
            ["action.id"],
            "long id"
        );
    }

    #[test]
    fn placements_are_required() {
        let violations = compile_action(Action {
            placements: vec![],
            ..action("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["action.placements"], "no placement");
        let violations = compile_action(Action {
            placements: vec!["cart".to_owned(), "".to_owned()],
            ..action("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["action.placements[1]"], "empty placement");
        let violations = compile_action(Action {
            placements: vec!["ca\0rt".to_owned()],
            ..action("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["action.placements[0]"], "placement with NUL");
    }

    #[test]
    fn amounts_are_finite_and_positive() {
        let violations = compile_action(Action {
            value: f64::NAN,
            priority: -1.0,
            ..action("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["action.value", "action.priority"]);
        let violations = compile_action(Action {
            value: f64::INFINITY,
            ..action("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["action.value"], "infinite value");
    }

    #[test]
    fn bad_condition_names_field() {
        for bad in ["profile.order_count >", "shopper.order_count > 0"] {
            let violations = compile_action(Action {
                condition: bad.to_owned(),
                ..action("a")
            })
            .unwrap_err();
            assert_eq!(fields(&violations), ["action.condition"], "condition {bad:?}");
            assert!(
                violations[0].description.contains(bad),
                "description names the expression: {violations:?}"
            );
        }
    }

    #[test]
    fn decide_needs_placement_and_identity() {
        let violations = check_decide(&DecideRequest {
            limit: -1,
            ..DecideRequest::default()
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["placement", "user_id", "limit"]);
        let anonymous = DecideRequest {
            placement: "cart".to_owned(),
            anonymous_id: "a-1".to_owned(),
            ..DecideRequest::default()
        };
        assert!(check_decide(&anonymous).is_ok(), "anonymous id is enough");
    }

    #[test]
    fn decide_ids_are_bounded() {
        let valid = DecideRequest {
            placement: "cart".to_owned(),
            user_id: "u-1".to_owned(),
            ..DecideRequest::default()
        };
        let long = "p".repeat(MAX_REQUEST_ID_LEN + 1);
        let cases = [
            (
                DecideRequest {
                    placement: long.clone(),
                    ..valid.clone()
                },
                "placement",
            ),
            (
                DecideRequest {
                    placement: "ca\0rt".to_owned(),
                    ..valid.clone()
                },
                "placement",
            ),
            (
                DecideRequest {
                    user_id: long.clone(),
                    ..valid.clone()
                },
                "user_id",
            ),
            (
                DecideRequest {
                    user_id: "a\0b".to_owned(),
                    ..valid.clone()
                },
                "user_id",
            ),
            (
                DecideRequest {
                    anonymous_id: long,
                    ..valid.clone()
                },
                "anonymous_id",
            ),
            (
                DecideRequest {
                    anonymous_id: "a\u{7f}".to_owned(),
                    ..valid.clone()
                },
                "anonymous_id",
            ),
        ];
        for (request, field) in cases {
            let violations = check_decide(&request).unwrap_err();
            assert_eq!(fields(&violations), [field], "request {request:?}");
        }
        let at_limit = DecideRequest {
            user_id: "u".repeat(MAX_REQUEST_ID_LEN),
            ..valid
        };
        assert!(check_decide(&at_limit).is_ok(), "id at the limit");
    }

    #[test]
    fn control_character_is_named() {
        let mut violations = Vec::new();
        check_text("user_id", "a\0b", MAX_REQUEST_ID_LEN, &mut violations);
        assert_eq!(
            violations[0].description, "must not contain control characters, found U+0000 at byte 1",
            "description"
        );
    }
}
