//! The `RecommendationsService` gRPC handlers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use rtim_proto::recommendations::v1::recommendations_service_server::RecommendationsService;
use rtim_proto::recommendations::v1::{
    ImportCatalogRequest, ImportCatalogResponse, Item, RecommendRequest, RecommendResponse, Recommendation,
};
use rtim_runtime::auth::{self, Scope, TenantId};
use rtim_runtime::errors::{self, FieldViolation};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tonic::{Request, Response, Status};

use crate::error::RecommendError;
use crate::popular::PopularItems;
use crate::ranking;
use crate::store::{self, Candidate};

/// Items returned when the request leaves `limit` at 0.
pub const DEFAULT_LIMIT: usize = 10;
/// Largest `limit`; larger values are lowered to it.
pub const MAX_LIMIT: usize = 100;
/// Recently viewed items whose co-visits make a shopper's recommendations.
pub const SEED_COUNT: u64 = 5;
/// Maximum length of a catalog item id, in characters.
pub const MAX_ITEM_ID_CHARS: usize = 256;

/// The target of a recommendation: a product or a shopper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Item(String),
    /// A shopper, keyed by `user_id`, or by `anonymous_id` without one.
    Shopper(String),
}

/// Validates a recommend request and returns its target and limit.
pub fn parse_request(request: &RecommendRequest) -> Result<(Target, usize), RecommendError> {
    let shopper = [&request.user_id, &request.anonymous_id]
        .into_iter()
        .find(|id| !id.is_empty());
    let target = match (request.item_id.is_empty(), shopper) {
        (false, None) => Target::Item(request.item_id.clone()),
        (true, Some(shopper)) => Target::Shopper(shopper.clone()),
        (false, Some(_)) => {
            return Err(invalid(
                "item_id",
                "set either item_id or user_id/anonymous_id, not both".to_owned(),
            ));
        }
        (true, None) => {
            return Err(invalid(
                "item_id",
                "missing: set item_id to recommend for a product, or user_id or anonymous_id for a shopper".to_owned(),
            ));
        }
    };
    let limit = match request.limit {
        0 => DEFAULT_LIMIT,
        limit if limit < 0 => return Err(invalid("limit", format!("must not be negative, got {limit}"))),
        limit => (limit as usize).min(MAX_LIMIT),
    };
    Ok((target, limit))
}

fn invalid(field: &str, description: String) -> RecommendError {
    RecommendError::Invalid(vec![FieldViolation::new(field, description)])
}

/// Checks every catalog item and returns one violation per bad field.
pub fn validate_items(items: &[Item]) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if item.id.is_empty() {
            violations.push(FieldViolation::new(format!("items[{index}].id"), "missing"));
        } else if item.id.chars().count() > MAX_ITEM_ID_CHARS {
            violations.push(FieldViolation::new(
                format!("items[{index}].id"),
                format!("longer than {MAX_ITEM_ID_CHARS} characters"),
            ));
        }
        if !item.price.is_finite() || item.price < 0.0 {
            violations.push(FieldViolation::new(
                format!("items[{index}].price"),
                format!("must be a finite number of at least 0, got {}", item.price),
            ));
        }
    }
    violations
}

/// Keeps the last occurrence of each item id, in order of first appearance.
fn last_of_each_id(items: Vec<Item>) -> Vec<Item> {
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut unique: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        match position.get(&item.id) {
            Some(&index) => unique[index] = item,
            None => {
                position.insert(item.id.clone(), unique.len());
                unique.push(item);
            }
        }
    }
    unique
}

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct RecommendationsApi {
    db: DatabaseConnection,
    popular: PopularItems,
}

impl RecommendationsApi {
    pub fn new(db: DatabaseConnection, popular: PopularItems) -> Self {
        Self { db, popular }
    }

    /// Ranks co-visited items for the target and fills with popular items.
    /// Catalog entries come with the candidates, so a request for a product
    /// costs one query and one for a shopper two. The popular list is read
    /// from memory.
    async fn recommend_for(
        &self,
        tenant: &TenantId,
        target: &Target,
        limit: usize,
    ) -> Result<Vec<Recommendation>, RecommendError> {
        let (co_visited, excluded) = match target {
            Target::Item(item_id) => {
                let co_visited = store::co_visited(&self.db, tenant, item_id, limit as u64)
                    .await
                    .map_err(RecommendError::database("reading co-visits"))?;
                (co_visited, HashSet::from([item_id.clone()]))
            }
            Target::Shopper(shopper_key) => self.shopper_candidates(tenant, shopper_key, limit).await?,
        };
        let popular = if co_visited.len() < limit {
            self.popular
                .top(tenant)
                .await
                .map_err(RecommendError::database("reading popular items"))?
        } else {
            Arc::default()
        };
        let recommendations = ranking::merge(&co_visited, &popular, &excluded, limit)
            .into_iter()
            .map(|entry| Recommendation {
                item_id: entry.candidate.item_id.clone(),
                item: entry.candidate.item.clone(),
                score: entry.candidate.score as f64,
                strategy: entry.strategy.into(),
            })
            .collect();
        Ok(recommendations)
    }

    /// Returns the co-visits of the shopper's recent views and the items to
    /// exclude, which are those views and everything the shopper bought.
    async fn shopper_candidates(
        &self,
        tenant: &TenantId,
        shopper_key: &str,
        limit: usize,
    ) -> Result<(Vec<Candidate>, HashSet<String>), RecommendError> {
        let history = store::shopper_history(&self.db, tenant, shopper_key, SEED_COUNT)
            .await
            .map_err(RecommendError::database("reading the shopper's views and purchases"))?;
        let excluded: HashSet<String> = history.recent_views.iter().chain(&history.bought).cloned().collect();
        let co_visited = store::co_visited_with_any(&self.db, tenant, &history.recent_views, &excluded, limit as u64)
            .await
            .map_err(RecommendError::database("reading co-visits"))?;
        Ok((co_visited, excluded))
    }

    async fn import(&self, tenant: &TenantId, items: Vec<Item>) -> Result<usize, RecommendError> {
        let violations = validate_items(&items);
        if !violations.is_empty() {
            return Err(RecommendError::Invalid(violations));
        }
        let items = last_of_each_id(items);
        let transaction = self
            .db
            .begin()
            .await
            .map_err(RecommendError::database("starting a catalog import"))?;
        store::upsert_items(&transaction, tenant, &items, Utc::now())
            .await
            .map_err(RecommendError::database("writing catalog items"))?;
        transaction
            .commit()
            .await
            .map_err(RecommendError::database("committing a catalog import"))?;
        Ok(items.len())
    }
}

#[tonic::async_trait]
impl RecommendationsService for RecommendationsApi {
    #[tracing::instrument(name = "recommendations.recommend", skip_all, fields(tenant.id))]
    async fn recommend(&self, request: Request<RecommendRequest>) -> Result<Response<RecommendResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Read)?.clone();
        tracing::Span::current().record("tenant.id", tenant.as_str());
        for (field, value) in [
            ("user_id", &request.get_ref().user_id),
            ("anonymous_id", &request.get_ref().anonymous_id),
            ("item_id", &request.get_ref().item_id),
        ] {
            errors::check_id(field, value)?;
        }
        let (target, limit) = parse_request(request.get_ref())?;
        let recommendations = self.recommend_for(&tenant, &target, limit).await?;
        Ok(Response::new(RecommendResponse { recommendations }))
    }

    #[tracing::instrument(name = "recommendations.import_catalog", skip_all, fields(tenant.id, items.count))]
    async fn import_catalog(
        &self,
        request: Request<ImportCatalogRequest>,
    ) -> Result<Response<ImportCatalogResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let span = tracing::Span::current();
        span.record("tenant.id", tenant.as_str());
        let items = request.into_inner().items;
        span.record("items.count", items.len());
        let imported = self.import(&tenant, items).await?;
        tracing::info!(tenant.id = %tenant, items.imported = imported, "catalog imported");
        Ok(Response::new(ImportCatalogResponse {
            // The decoded request is bounded by the message size limit, far below i32::MAX items.
            imported: i32::try_from(imported).unwrap_or(i32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(item_id: &str, user_id: &str, limit: i32) -> RecommendRequest {
        RecommendRequest {
            item_id: item_id.to_owned(),
            user_id: user_id.to_owned(),
            anonymous_id: String::new(),
            limit,
        }
    }

    fn violation_fields(error: RecommendError) -> Vec<String> {
        match error {
            RecommendError::Invalid(violations) => violations.into_iter().map(|violation| violation.field).collect(),
            other => panic!("expected a validation error, got {other}"),
        }
    }

    #[test]
    fn limit_defaults_and_caps() {
        assert_eq!(
            parse_request(&request("a", "", 0)).unwrap().1,
            DEFAULT_LIMIT,
            "0 means the default"
        );
        assert_eq!(
            parse_request(&request("a", "", 500)).unwrap().1,
            MAX_LIMIT,
            "large limits are capped"
        );
        let error = parse_request(&request("a", "", -1)).unwrap_err();
        assert_eq!(violation_fields(error), ["limit"], "a negative limit is rejected");
    }

    #[test]
    fn target_needs_exactly_one() {
        assert_eq!(
            parse_request(&request("a", "", 0)).unwrap().0,
            Target::Item("a".to_owned())
        );
        assert_eq!(
            parse_request(&request("", "u1", 0)).unwrap().0,
            Target::Shopper("u1".to_owned())
        );
        assert_eq!(
            violation_fields(parse_request(&request("", "", 0)).unwrap_err()),
            ["item_id"],
            "neither"
        );
        assert_eq!(
            violation_fields(parse_request(&request("a", "u1", 0)).unwrap_err()),
            ["item_id"],
            "both"
        );
    }

    #[test]
    fn catalog_violations_name_fields() {
        let items = vec![
            Item {
                id: "ok".to_owned(),
                price: 1.0,
                ..Item::default()
            },
            Item {
                id: String::new(),
                price: f64::NAN,
                ..Item::default()
            },
            Item {
                id: "neg".to_owned(),
                price: -2.0,
                ..Item::default()
            },
        ];
        let fields: Vec<String> = validate_items(&items)
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(fields, ["items[1].id", "items[1].price", "items[2].price"]);
    }

    #[test]
    fn duplicate_ids_keep_last() {
        let item = |id: &str, price: f64| Item {
            id: id.to_owned(),
            price,
            ..Item::default()
        };
        let unique = last_of_each_id(vec![item("a", 1.0), item("b", 2.0), item("a", 3.0)]);
        assert_eq!(unique.len(), 2, "one row per id");
        assert_eq!(unique[0].price, 3.0, "the last occurrence of a wins");
    }
}
