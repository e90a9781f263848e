//! The point rules file: YAML with a `tenant` and a list of `rules`,
//! upserted at start through the same validation as PutPointRule.
//!
//! ```yaml
//! tenant: demo
//! rules:
//!   - id: order-points
//!     event: Order Completed
//!     points: math.floor(double(event.properties.price))
//!     description: one point per whole unit of price
//! ```

use std::path::{Path, PathBuf};

use rtim_proto::gamification::v1::PointRule;
use rtim_runtime::auth::TenantId;
use serde::Deserialize;

use crate::error::GamificationError;
use crate::rulebook::RuleBook;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error("cannot read point rules file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid point rules file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid point rules file {}: tenant is required", path.display())]
    MissingTenant { path: PathBuf },
    #[error("point rules file {}: {source}", path.display())]
    Rule {
        path: PathBuf,
        #[source]
        source: GamificationError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    tenant: String,
    #[serde(default)]
    rules: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    id: String,
    event: String,
    #[serde(default)]
    condition: String,
    points: String,
    #[serde(default)]
    description: String,
}

/// Reads the file at `path` and upserts every rule in it, stopping at the
/// first invalid one. Returns how many were applied.
pub async fn apply_file(rules: &RuleBook, path: &Path) -> Result<usize, DefinitionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DefinitionsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (tenant, entries) = parse(path, &text)?;
    let count = entries.len();
    for rule in entries {
        rules
            .put(&tenant, rule)
            .await
            .map_err(|source| DefinitionsError::Rule {
                path: path.to_owned(),
                source,
            })?;
    }
    tracing::info!(tenant.id = %tenant, rules = count, file = %path.display(), "point rules file applied");
    Ok(count)
}

fn parse(path: &Path, text: &str) -> Result<(TenantId, Vec<PointRule>), DefinitionsError> {
    let file: RulesFile = serde_yaml::from_str(text).map_err(|source| DefinitionsError::Parse {
        path: path.to_owned(),
        source,
    })?;
    if file.tenant.trim().is_empty() {
        return Err(DefinitionsError::MissingTenant { path: path.to_owned() });
    }
    let rules = file
        .rules
        .into_iter()
        .map(|entry| PointRule {
            id: entry.id,
            event: entry.event,
            condition: entry.condition,
            points: entry.points,
            description: entry.description,
        })
        .collect();
    Ok((TenantId(file.tenant), rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_rules() {
        let text = "tenant: demo\nrules:\n  - id: a\n    event: Order Completed\n    points: '10'\n";
        let (tenant, rules) = parse(Path::new("rules.yaml"), text).unwrap();
        assert_eq!(tenant.as_str(), "demo", "tenant");
        assert_eq!(rules.len(), 1, "count");
        assert_eq!(rules[0].points, "10", "points");
        assert_eq!(rules[0].condition, "", "condition defaults to empty");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = "tenant: demo\nrules:\n  - id: a\n    event: X\n    points: '1'\n    pionts: '2'\n";
        let error = parse(Path::new("rules.yaml"), text).unwrap_err();
        assert!(error.to_string().contains("pionts"), "{error}");
    }

    #[test]
    fn tenant_is_required() {
        let error = parse(Path::new("rules.yaml"), "tenant: ' '\n").unwrap_err();
        assert!(matches!(error, DefinitionsError::MissingTenant { .. }), "{error}");
    }
}
