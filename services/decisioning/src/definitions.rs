//! The actions file: YAML with a `tenant` and a list of `actions`, upserted
//! at start through the same validation as PutAction.
//!
//! ```yaml
//! tenant: demo
//! actions:
//!   - id: free-shipping
//!     name: Free shipping
//!     placements: [cart]
//!     condition: profile.cart_value >= 300.0
//!     value: 12.0
//!     priority: 1.0
//!     payload: { headline: Shipping is on us }
//! ```

use std::path::{Path, PathBuf};

use rtim_proto::decisioning::v1::Action;
use rtim_proto::json::json_to_struct;
use rtim_runtime::auth::TenantId;
use serde::Deserialize;

use crate::catalog::Catalog;
use crate::error::DecisioningError;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error("cannot read actions file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid actions file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid actions file {}: tenant is required", path.display())]
    MissingTenant { path: PathBuf },
    #[error("invalid actions file {}: action '{id}': payload must be a mapping", path.display())]
    PayloadNotMapping { path: PathBuf, id: String },
    #[error("actions file {}: {source}", path.display())]
    Action {
        path: PathBuf,
        #[source]
        source: DecisioningError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionsFile {
    tenant: String,
    #[serde(default)]
    actions: Vec<ActionEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionEntry {
    id: String,
    #[serde(default)]
    name: String,
    placements: Vec<String>,
    #[serde(default)]
    condition: String,
    value: f64,
    priority: f64,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

/// Reads the file at `path` and upserts every action in it, stopping at the
/// first invalid one. Returns how many were applied.
pub async fn apply_file(catalog: &Catalog, path: &Path) -> Result<usize, DefinitionsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DefinitionsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (tenant, actions) = parse(path, &text)?;
    let count = actions.len();
    for action in actions {
        catalog
            .put(&tenant, action)
            .await
            .map_err(|source| DefinitionsError::Action {
                path: path.to_owned(),
                source,
            })?;
    }
    tracing::info!(tenant.id = %tenant, actions = count, file = %path.display(), "actions file applied");
    Ok(count)
}

fn parse(path: &Path, text: &str) -> Result<(TenantId, Vec<Action>), DefinitionsError> {
    let file: ActionsFile = serde_yaml::from_str(text).map_err(|source| DefinitionsError::Parse {
        path: path.to_owned(),
        source,
    })?;
    if file.tenant.trim().is_empty() {
        return Err(DefinitionsError::MissingTenant { path: path.to_owned() });
    }
    let actions = file
        .actions
        .into_iter()
        .map(|entry| entry.into_action(path))
        .collect::<Result<_, _>>()?;
    Ok((TenantId(file.tenant), actions))
}

impl ActionEntry {
    fn into_action(self, path: &Path) -> Result<Action, DefinitionsError> {
        let payload = match self.payload {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(object)) => Some(json_to_struct(object)),
            Some(_) => {
                return Err(DefinitionsError::PayloadNotMapping {
                    path: path.to_owned(),
                    id: self.id,
                });
            }
        };
        Ok(Action {
            id: self.id,
            name: self.name,
            placements: self.placements,
            condition: self.condition,
            value: self.value,
            priority: self.priority,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_actions() {
        let text = "tenant: demo\nactions:\n  - id: a\n    placements: [cart]\n    value: 2\n    priority: 1.5\n    payload: { headline: Hi, coupon: SAVE5 }\n";
        let (tenant, actions) = parse(Path::new("actions.yaml"), text).unwrap();
        assert_eq!(tenant.as_str(), "demo", "tenant");
        assert_eq!(actions.len(), 1, "count");
        assert_eq!(actions[0].value, 2.0, "value");
        assert_eq!(actions[0].condition, "", "condition defaults to empty");
        let payload = actions[0].payload.as_ref().unwrap();
        assert!(payload.fields.contains_key("coupon"), "payload: {payload:?}");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = "tenant: demo\nactions:\n  - id: a\n    placements: [cart]\n    value: 1\n    priority: 1\n    priorty: 2\n";
        let error = parse(Path::new("actions.yaml"), text).unwrap_err();
        assert!(error.to_string().contains("priorty"), "{error}");
    }

    #[test]
    fn scalar_payload_is_rejected() {
        let text = "tenant: demo\nactions:\n  - id: a\n    placements: [cart]\n    value: 1\n    priority: 1\n    payload: hello\n";
        let error = parse(Path::new("actions.yaml"), text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid actions file actions.yaml: action 'a': payload must be a mapping"
        );
    }

    #[test]
    fn tenant_is_required() {
        let error = parse(Path::new("actions.yaml"), "tenant: ''\nactions: []\n").unwrap_err();
        assert!(matches!(error, DefinitionsError::MissingTenant { .. }), "{error}");
    }
}
