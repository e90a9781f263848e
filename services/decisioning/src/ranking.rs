//! Eligibility and ranking: the actions whose condition holds, best first.

use std::sync::Arc;

use rtim_rules::Bindings;

use crate::validate::CompiledAction;

/// The JSON values that conditions see.
pub struct Variables<'a> {
    pub profile: &'a serde_json::Value,
    pub context: &'a serde_json::Value,
}

/// Returns up to `limit` eligible actions ordered by score (value x priority)
/// descending, ties broken by id ascending. An action whose condition is
/// false or fails to evaluate is not eligible. A failure is logged at debug
/// level and counted in `rtim_decisioning_condition_errors_total`.
pub fn rank(candidates: &[Arc<CompiledAction>], variables: &Variables<'_>, limit: usize) -> Vec<Arc<CompiledAction>> {
    // Converting the profile to CEL values once, instead of once per action,
    // is what keeps a 500-action placement cheap.
    let bindings = match Bindings::new(&[("profile", variables.profile), ("context", variables.context)]) {
        Ok(bindings) => bindings,
        Err(error) => {
            tracing::warn!(%error, "profile cannot be converted for conditions, only unconditional actions are eligible");
            metrics::counter!("rtim_decisioning_condition_errors_total").increment(1);
            return rank_unconditional(candidates, limit);
        }
    };
    let mut eligible: Vec<Arc<CompiledAction>> = candidates
        .iter()
        .filter(|candidate| is_eligible(candidate, &bindings))
        .cloned()
        .collect();
    eligible.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id().cmp(b.id())));
    eligible.truncate(limit);
    eligible
}

fn rank_unconditional(candidates: &[Arc<CompiledAction>], limit: usize) -> Vec<Arc<CompiledAction>> {
    let mut eligible: Vec<Arc<CompiledAction>> = candidates
        .iter()
        .filter(|candidate| candidate.condition.is_none())
        .cloned()
        .collect();
    eligible.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id().cmp(b.id())));
    eligible.truncate(limit);
    eligible
}

fn is_eligible(candidate: &CompiledAction, bindings: &Bindings) -> bool {
    let Some(condition) = &candidate.condition else {
        return true;
    };
    match condition.eval_bool_with(bindings) {
        Ok(holds) => holds,
        Err(error) => {
            tracing::debug!(action.id = %candidate.id(), %error, "condition failed to evaluate, action not eligible");
            metrics::counter!("rtim_decisioning_condition_errors_total").increment(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use rtim_proto::decisioning::v1::Action;
    use rtim_proto::profile::v1::Profile;
    use serde_json::json;

    use super::*;
    use crate::validate::compile_action;

    fn compiled(id: &str, condition: &str, value: f64, priority: f64) -> Arc<CompiledAction> {
        let action = Action {
            id: id.to_owned(),
            placements: vec!["cart".to_owned()],
            condition: condition.to_owned(),
            value,
            priority,
            ..Action::default()
        };
        Arc::new(compile_action(action).unwrap())
    }

    fn ids(ranked: &[Arc<CompiledAction>]) -> Vec<&str> {
        ranked.iter().map(|action| action.id()).collect()
    }

    #[test]
    fn ranks_by_score_then_id() {
        let candidates = [
            compiled("b", "", 10.0, 1.0),
            compiled("a", "", 5.0, 2.0),
            compiled("c", "", 30.0, 1.0),
            compiled("d", "", 1.0, 1.0),
        ];
        let variables = Variables {
            profile: &json!({}),
            context: &json!({}),
        };
        assert_eq!(ids(&rank(&candidates, &variables, 10)), ["c", "a", "b", "d"], "all");
        assert_eq!(ids(&rank(&candidates, &variables, 2)), ["c", "a"], "limited");
    }

    #[test]
    fn false_or_failing_condition_is_not_eligible() {
        let candidates = [
            compiled("holds", "profile.order_count > 0", 1.0, 1.0),
            compiled("false", "profile.order_count > 5", 1.0, 1.0),
            compiled("fails", "profile.event_counts['Order Completed'] > 0", 1.0, 1.0),
            compiled("context", "context.page == 'cart'", 1.0, 1.0),
        ];
        let profile = rtim_rules::vars::profile(&Profile {
            order_count: 2,
            ..Profile::default()
        });
        let variables = Variables {
            profile: &profile,
            context: &json!({"page": "cart"}),
        };
        assert_eq!(ids(&rank(&candidates, &variables, 10)), ["context", "holds"]);
    }

    #[test]
    fn double_comparisons_work_on_profile_json() {
        let candidates = [
            compiled(
                "big",
                "profile.order_count == 0 && profile.cart_value >= 300.0",
                1.0,
                1.0,
            ),
            compiled(
                "small",
                "profile.order_count == 0 && profile.cart_value > 0.0 && profile.cart_value < 300.0",
                1.0,
                1.0,
            ),
        ];
        for (cart_value, expected) in [
            (0.0, vec![]),
            (120.5, vec!["small"]),
            (300.0, vec!["big"]),
            (450.25, vec!["big"]),
        ] {
            let profile = rtim_rules::vars::profile(&Profile {
                cart_value,
                ..Profile::default()
            });
            let variables = Variables {
                profile: &profile,
                context: &json!({}),
            };
            assert_eq!(
                ids(&rank(&candidates, &variables, 10)),
                expected,
                "cart value {cart_value}"
            );
        }
    }
}
