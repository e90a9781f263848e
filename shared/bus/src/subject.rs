//! Subject construction and NATS-style wildcard matching.

use crate::BusError;

/// Checks that `token` can stand alone between dots in a subject.
pub fn check_token(token: &str) -> Result<(), BusError> {
    let invalid = token.is_empty()
        || token
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control());
    if invalid {
        Err(BusError::InvalidToken(token.to_owned()))
    } else {
        Ok(())
    }
}

/// Builds `<prefix>.<domain>.<tenant>.<kind>`.
pub fn build(prefix: &str, domain: &str, tenant: &str, kind: &str) -> Result<String, BusError> {
    check_token(tenant)?;
    check_token(kind)?;
    Ok(format!("{prefix}.{domain}.{tenant}.{kind}"))
}

/// Matches a subject against a filter where `*` stands for one token and a
/// final `>` for one or more.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for filter_token in filter.split('.') {
        match (filter_token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(actual)) if expected == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("rtim.events.*.*", "rtim.events.acme.track"));
        assert!(!matches("rtim.events.*.*", "rtim.events.acme"));
        assert!(!matches("rtim.events.*", "rtim.events.acme.track"));
        assert!(matches("rtim.events.>", "rtim.events.acme.track"));
        assert!(!matches("rtim.events.>", "rtim.events"));
        assert!(!matches("rtim.profile.*.*", "rtim.events.acme.track"));
    }

    #[test]
    fn tenant_with_dot_is_rejected() {
        assert!(build("rtim", "events", "a.b", "track").is_err());
        assert!(build("rtim", "events", "acme", "track").is_ok());
    }
}
