//! The event consumer: each track event earns the points of every rule of
//! its tenant that matches the event name and whose condition holds. The
//! inbox claim and the ledger's key (tenant, event id, rule id) make a
//! redelivered event pay once.

use std::sync::Arc;

use rtim_bus::worker::{BatchHandler, Incoming};
use rtim_proto::events::v1::{Event, EventType};
use rtim_rules::RuleError;
use rtim_store::inbox;
use sea_orm::{DatabaseConnection, TransactionTrait};

use crate::rulebook::RuleBook;
use crate::store::{self, Award};
use crate::validate::CompiledRule;

pub struct PointAwarder {
    pub db: DatabaseConnection,
    pub rules: Arc<RuleBook>,
}

/// A track event that at least one rule of its tenant applies to.
struct Candidate<'a> {
    tenant: &'a str,
    event_id: String,
    user_key: &'a str,
    event: &'a Event,
    rules: Vec<Arc<CompiledRule>>,
}

impl BatchHandler for PointAwarder {
    async fn handle(&self, batch: &[Incoming]) -> anyhow::Result<()> {
        let candidates: Vec<Candidate<'_>> = batch.iter().filter_map(|incoming| self.candidate(incoming)).collect();
        if candidates.is_empty() {
            return Ok(());
        }

        let txn = self.db.begin().await?;
        for candidate in &candidates {
            if !inbox::claim(&txn, candidate.tenant, &candidate.event_id).await? {
                tracing::debug!(tenant.id = %candidate.tenant, event.id = %candidate.event_id, "event already applied, skipping");
                continue;
            }
            for award in awards(candidate) {
                store::insert_award(&txn, candidate.tenant, &award).await?;
                metrics::counter!("rtim_gamification_ledger_entries_total").increment(1);
            }
        }
        txn.commit().await?;
        Ok(())
    }
}

impl PointAwarder {
    /// Returns the work for one event, or `None` when no rule applies to it.
    fn candidate<'a>(&self, incoming: &'a Incoming) -> Option<Candidate<'a>> {
        let event = incoming.envelope.event.as_ref()?;
        if event.r#type() != EventType::Track {
            return None;
        }
        let tenant = if incoming.tenant.is_empty() {
            incoming.envelope.tenant_id.as_str()
        } else {
            incoming.tenant.as_str()
        };
        let rules = self.rules.tenant(tenant).for_event(&event.event).to_vec();
        if rules.is_empty() {
            return None;
        }
        let user_key = if event.user_id.is_empty() {
            event.anonymous_id.as_str()
        } else {
            event.user_id.as_str()
        };
        if user_key.is_empty() {
            tracing::debug!(tenant.id = %tenant, event.id = %event.message_id, "event has no user or anonymous id, no points");
            return None;
        }
        let event_id = if event.message_id.is_empty() {
            incoming.message_id.clone()
        } else {
            event.message_id.clone()
        };
        Some(Candidate {
            tenant,
            event_id,
            user_key,
            event,
            rules,
        })
    }
}

/// Evaluates every rule of a candidate. A rule that fails to evaluate is
/// logged, counted in `rtim_gamification_rule_errors_total` and skipped, so one
/// bad rule does not hold back the stream. Zero points write no entry.
fn awards(candidate: &Candidate<'_>) -> Vec<Award> {
    let event = rtim_rules::vars::event(candidate.event);
    let variables = [("event", &event)];
    let mut awards = Vec::new();
    for compiled in &candidate.rules {
        match evaluate(compiled, &variables) {
            Ok(Some(points)) if points != 0 => awards.push(Award {
                event_id: candidate.event_id.clone(),
                rule_id: compiled.id().to_owned(),
                user_key: candidate.user_key.to_owned(),
                points,
            }),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(
                    tenant.id = %candidate.tenant,
                    rule.id = %compiled.id(),
                    event.id = %candidate.event_id,
                    %error,
                    "point rule failed to evaluate, skipping it for this event"
                );
                metrics::counter!("rtim_gamification_rule_errors_total").increment(1);
            }
        }
    }
    awards
}

/// Returns the points of one rule, or `None` when its condition is false.
fn evaluate(compiled: &CompiledRule, variables: &[(&str, &serde_json::Value)]) -> Result<Option<i64>, RuleError> {
    if let Some(condition) = &compiled.condition
        && !condition.eval_bool(variables)?
    {
        return Ok(None);
    }
    compiled.points.eval_integer(variables).map(Some)
}

#[cfg(test)]
mod tests {
    use rtim_proto::gamification::v1::PointRule;
    use rtim_proto::json::json_to_struct;
    use serde_json::json;

    use super::*;
    use crate::validate::compile_rule;

    fn rule(id: &str, condition: &str, points: &str) -> Arc<CompiledRule> {
        let rule = PointRule {
            id: id.to_owned(),
            event: "Order Completed".to_owned(),
            condition: condition.to_owned(),
            points: points.to_owned(),
            description: String::new(),
        };
        Arc::new(compile_rule(rule).unwrap())
    }

    fn order(price: serde_json::Value) -> Event {
        let serde_json::Value::Object(properties) = json!({"price": price}) else {
            unreachable!()
        };
        Event {
            message_id: "e-1".to_owned(),
            r#type: EventType::Track as i32,
            user_id: "u-1".to_owned(),
            event: "Order Completed".to_owned(),
            properties: Some(json_to_struct(properties)),
            ..Event::default()
        }
    }

    fn points_of(rules: Vec<Arc<CompiledRule>>, event: &Event) -> Vec<(String, i64)> {
        let candidate = Candidate {
            tenant: "demo",
            event_id: event.message_id.clone(),
            user_key: "u-1",
            event,
            rules,
        };
        awards(&candidate)
            .into_iter()
            .map(|award| (award.rule_id, award.points))
            .collect()
    }

    #[test]
    fn floor_of_price_is_awarded() {
        let rules = vec![rule("order", "", "math.floor(double(event.properties.price))")];
        let fraction = points_of(rules.clone(), &order(json!(35.79)));
        assert_eq!(fraction, [("order".to_owned(), 35)], "fraction");
        let whole = points_of(rules, &order(json!(120)));
        assert_eq!(whole, [("order".to_owned(), 120)], "whole price");
    }

    #[test]
    fn floor_of_whole_and_fractional_price() {
        // Event property numbers reach CEL as doubles, whole or not.
        let rules = vec![rule("order", "", "math.floor(event.properties.price)")];
        let fraction = points_of(rules.clone(), &order(json!(35.79)));
        assert_eq!(fraction, [("order".to_owned(), 35)], "fraction");
        assert_eq!(
            points_of(rules, &order(json!(120))),
            [("order".to_owned(), 120)],
            "whole price"
        );
    }

    #[test]
    fn condition_filters_rules() {
        let rules = vec![rule("big", "event.properties.price >= 100.0", "5")];
        assert_eq!(
            points_of(rules.clone(), &order(json!(150.5))),
            [("big".to_owned(), 5)],
            "double price"
        );
        assert_eq!(
            points_of(rules.clone(), &order(json!(100))),
            [("big".to_owned(), 5)],
            "whole price"
        );
        assert!(points_of(rules, &order(json!(99.99))).is_empty(), "below threshold");
    }

    #[test]
    fn failing_rule_is_skipped() {
        let rules = vec![
            rule("fraction", "", "event.properties.price"),
            rule("missing", "", "event.properties.quantity"),
            rule("fine", "", "1"),
        ];
        assert_eq!(points_of(rules, &order(json!(35.79))), [("fine".to_owned(), 1)]);
    }

    #[test]
    fn zero_points_write_nothing() {
        let rules = vec![rule("zero", "", "0")];
        assert!(points_of(rules, &order(json!(1))).is_empty());
    }
}
