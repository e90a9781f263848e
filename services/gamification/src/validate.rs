//! Validation of point rules. A rule's expressions are compiled here, once,
//! so that the consumer only evaluates.

use rtim_proto::gamification::v1::PointRule;
use rtim_rules::Rule;
use rtim_runtime::errors::FieldViolation;

/// Maximum length of a rule id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Variables that a rule's condition and points may use.
pub const RULE_VARIABLES: [&str; 1] = ["event"];

/// A rule ready for the consumer.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub rule: PointRule,
    /// `None` for an empty condition, which always holds.
    pub condition: Option<Rule>,
    pub points: Rule,
}

impl CompiledRule {
    pub fn id(&self) -> &str {
        &self.rule.id
    }
}

/// Checks every field of `rule` and compiles its expressions. The error
/// lists every violation, with field names under `rule.`.
pub fn compile_rule(rule: PointRule) -> Result<CompiledRule, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    check_id(&rule.id, &mut violations);
    if rule.event.trim().is_empty() {
        violations.push(FieldViolation::new(
            "rule.event",
            "is required, such as 'Order Completed'",
        ));
    }
    let condition = if rule.condition.trim().is_empty() {
        None
    } else {
        compile("rule.condition", &rule.condition, &mut violations)
    };
    let points = if rule.points.trim().is_empty() {
        violations.push(FieldViolation::new(
            "rule.points",
            "is required, such as 'math.floor(event.properties.price)'",
        ));
        None
    } else {
        compile("rule.points", &rule.points, &mut violations)
    };
    match points {
        Some(points) if violations.is_empty() => Ok(CompiledRule {
            rule,
            condition,
            points,
        }),
        _ => Err(violations),
    }
}

fn check_id(id: &str, violations: &mut Vec<FieldViolation>) {
    if id.is_empty() {
        violations.push(FieldViolation::new("rule.id", "is required"));
    } else if id.len() > MAX_ID_LEN {
        violations.push(FieldViolation::new(
            "rule.id",
            format!("must be at most {MAX_ID_LEN} bytes long, got {}", id.len()),
        ));
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        violations.push(FieldViolation::new(
            "rule.id",
            format!("'{id}' may contain only letters, digits, '-' and '_'"),
        ));
    }
}

fn compile(field: &str, source: &str, violations: &mut Vec<FieldViolation>) -> Option<Rule> {
    match Rule::compile(source, &RULE_VARIABLES) {
        Ok(rule) => Some(rule),
        Err(error) => {
            violations.push(FieldViolation::new(field, error.to_string()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str) -> PointRule {
        PointRule {
            id: id.to_owned(),
            event: "Order Completed".to_owned(),
            condition: "event.properties.price >= 100.0".to_owned(),
            points: "math.floor(event.properties.price)".to_owned(),
            description: "one point per whole unit of price".to_owned(),
        }
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|violation| violation.field.as_str()).collect()
    }

    #[test]
    fn valid_rule_compiles() {
        let compiled = compile_rule(rule("order-points")).unwrap();
        assert_eq!(compiled.id(), "order-points", "id");
        assert!(compiled.condition.is_some(), "condition compiled");
    }

    #[test]
    fn empty_condition_always_holds() {
        let compiled = compile_rule(PointRule {
            condition: String::new(),
            ..rule("a")
        })
        .unwrap();
        assert!(compiled.condition.is_none());
    }

    #[test]
    fn id_format_is_checked() {
        for bad in ["", "has space", "dot.ted"] {
            let violations = compile_rule(rule(bad)).unwrap_err();
            assert_eq!(fields(&violations), ["rule.id"], "id {bad:?}");
        }
    }

    #[test]
    fn event_and_points_are_required() {
        let violations = compile_rule(PointRule {
            event: " ".to_owned(),
            points: String::new(),
            ..rule("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["rule.event", "rule.points"]);
    }

    #[test]
    fn bad_expressions_name_field() {
        let violations = compile_rule(PointRule {
            condition: "profile.order_count > 0".to_owned(),
            points: "math.floor(".to_owned(),
            ..rule("a")
        })
        .unwrap_err();
        assert_eq!(fields(&violations), ["rule.condition", "rule.points"]);
        assert!(
            violations[0].description.contains("'profile'"),
            "unknown variable named: {violations:?}"
        );
    }
}
