//! CEL rules (Common Expression Language) for eligibility conditions, survey
//! targeting and point rules. A rule is compiled once when it is saved, with a
//! clear error for bad syntax or an unknown variable, and evaluated many
//! times against JSON-shaped variables such as `profile` and `event`.
//!
//! The standard library plus the `math` and `strings` extensions are
//! available, so `math.floor(event.properties.price)` works.

pub mod vars;

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};

const EXTENSION_NAMESPACES: &[&str] = &["math", "strings"];

/// Maximum expression length in bytes. CEL has no loops, so the length bounds the evaluation cost.
pub const MAX_SOURCE_LEN: usize = 4096;

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    cel::extensions::math(&mut env).expect("math extension registers on a fresh environment");
    cel::extensions::strings(&mut env).expect("strings extension registers on a fresh environment");
    Arc::new(env)
});

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    #[error("invalid CEL expression '{expression}': {message}")]
    Syntax { expression: String, message: String },
    #[error("CEL expression '{expression}' is longer than {MAX_SOURCE_LEN} characters")]
    TooLong { expression: String },
    #[error("CEL expression '{expression}' uses unknown variable '{name}'; available: {available}")]
    UnknownVariable {
        expression: String,
        name: String,
        available: String,
    },
    #[error("evaluating '{expression}' failed: {message}")]
    Evaluation { expression: String, message: String },
    #[error("'{expression}' returned {got}, expected {expected}")]
    WrongType {
        expression: String,
        got: String,
        expected: &'static str,
    },
}

/// A compiled expression.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Rule").field(&self.source).finish()
    }
}

impl Rule {
    /// Compiles `source`, which may refer only to the `variables` listed.
    pub fn compile(source: &str, variables: &[&str]) -> Result<Rule, RuleError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(RuleError::TooLong {
                expression: truncate(source),
            });
        }
        let program = ENV.compile(source).map_err(|errors| RuleError::Syntax {
            expression: source.to_owned(),
            message: errors.to_string(),
        })?;
        let references = program.references();
        let allowed: BTreeSet<&str> = variables.iter().copied().collect();
        for name in references.variables() {
            // Namespaced extension calls such as `math.floor(x)` are listed as references to `math`.
            if !allowed.contains(name) && !EXTENSION_NAMESPACES.contains(&name) {
                return Err(RuleError::UnknownVariable {
                    expression: source.to_owned(),
                    name: name.to_owned(),
                    available: variables.join(", "),
                });
            }
        }
        Ok(Rule {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn execute(&self, variables: &[(&str, &serde_json::Value)]) -> Result<Value, RuleError> {
        let bindings = Bindings::new(variables).map_err(|message| RuleError::Evaluation {
            expression: self.source.clone(),
            message,
        })?;
        self.execute_with(&bindings)
    }

    fn execute_with(&self, bindings: &Bindings) -> Result<Value, RuleError> {
        self.program
            .execute(&bindings.context)
            .map_err(|error| RuleError::Evaluation {
                expression: self.source.clone(),
                message: error.to_string(),
            })
    }

    /// Evaluates a condition.
    pub fn eval_bool(&self, variables: &[(&str, &serde_json::Value)]) -> Result<bool, RuleError> {
        self.bool_result(self.execute(variables)?)
    }

    /// Evaluates a condition against variables converted once with
    /// [`Bindings::new`], for evaluating many rules against one shopper.
    pub fn eval_bool_with(&self, bindings: &Bindings) -> Result<bool, RuleError> {
        self.bool_result(self.execute_with(bindings)?)
    }

    fn bool_result(&self, value: Value) -> Result<bool, RuleError> {
        match value {
            Value::Bool(value) => Ok(value),
            other => Err(self.wrong_type(&other, "a bool")),
        }
    }

    /// Evaluates an integer expression. A double is accepted only when it
    /// has no fractional part, so that rounding is always written out
    /// (`math.floor(x)`, `int(x)`) rather than happening silently.
    pub fn eval_integer(&self, variables: &[(&str, &serde_json::Value)]) -> Result<i64, RuleError> {
        match self.execute(variables)? {
            Value::Int(value) => Ok(value),
            Value::UInt(value) => i64::try_from(value).map_err(|_| self.wrong_type(&Value::UInt(value), "an int")),
            Value::Float(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => Ok(value as i64),
            other => Err(self.wrong_type(&other, "an int, or a whole double within the int range")),
        }
    }

    fn wrong_type(&self, value: &Value, expected: &'static str) -> RuleError {
        RuleError::WrongType {
            expression: self.source.clone(),
            got: format!("{value:?}"),
            expected,
        }
    }
}

/// Variables converted to CEL values once. Converting a profile costs far
/// more than evaluating a typical condition, so a caller that evaluates
/// many rules against one shopper builds the bindings once.
pub struct Bindings {
    context: Context<'static, 'static>,
}

impl Bindings {
    pub fn new(variables: &[(&str, &serde_json::Value)]) -> Result<Self, String> {
        let mut context = Context::with_env(ENV.clone());
        for (name, value) in variables {
            let value = cel::to_value(value).map_err(|error| format!("cannot convert '{name}': {error}"))?;
            context.add_variable_from_value(*name, value);
        }
        Ok(Self { context })
    }
}

fn truncate(source: &str) -> String {
    let mut end = 80.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &source[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn condition_over_profile() {
        let rule = Rule::compile(
            "profile.cart_value > 100.0 && 'Order Completed' in profile.event_counts",
            &["profile"],
        )
        .unwrap();
        let buyer = json!({"cart_value": 150.0, "event_counts": {"Order Completed": 1}});
        let browser = json!({"cart_value": 150.0, "event_counts": {"Product Viewed": 3}});
        assert!(rule.eval_bool(&[("profile", &buyer)]).unwrap());
        assert!(!rule.eval_bool(&[("profile", &browser)]).unwrap());
    }

    #[test]
    fn shared_bindings_give_same_results() {
        let profile = json!({"cart_value": 150.0, "order_count": 0});
        let bindings = Bindings::new(&[("profile", &profile)]).unwrap();
        for (source, expected) in [("profile.cart_value > 100.0", true), ("profile.order_count > 0", false)] {
            let rule = Rule::compile(source, &["profile"]).unwrap();
            assert_eq!(rule.eval_bool_with(&bindings).unwrap(), expected, "{source}");
            assert_eq!(rule.eval_bool(&[("profile", &profile)]).unwrap(), expected, "{source}");
        }
    }

    #[test]
    fn floor_of_price_is_integer() {
        let rule = Rule::compile("math.floor(event.properties.price)", &["event"]).unwrap();
        let event = json!({"properties": {"price": 35.79}});
        assert_eq!(rule.eval_integer(&[("event", &event)]).unwrap(), 35);
    }

    #[test]
    fn fractional_points_are_rejected() {
        let rule = Rule::compile("event.properties.price", &["event"]).unwrap();
        let event = json!({"properties": {"price": 35.79}});
        let error = rule.eval_integer(&[("event", &event)]).unwrap_err();
        assert!(matches!(error, RuleError::WrongType { .. }), "{error}");
    }

    #[test]
    fn syntax_error_names_expression() {
        let error = Rule::compile("profile.cart_value >", &["profile"]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid CEL expression 'profile.cart_value >'"),
            "{error}"
        );
    }

    #[test]
    fn unknown_variable_is_rejected_at_compile() {
        let error = Rule::compile("user.age > 3", &["profile"]).unwrap_err();
        assert_eq!(
            error,
            RuleError::UnknownVariable {
                expression: "user.age > 3".to_owned(),
                name: "user".to_owned(),
                available: "profile".to_owned(),
            }
        );
    }

    #[test]
    fn missing_key_is_an_evaluation_error() {
        let rule = Rule::compile("profile.event_counts['Order Completed'] > 0", &["profile"]).unwrap();
        let error = rule
            .eval_bool(&[("profile", &json!({"event_counts": {}}))])
            .unwrap_err();
        assert!(matches!(error, RuleError::Evaluation { .. }), "{error}");
    }
}
