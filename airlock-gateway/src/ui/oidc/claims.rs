//! Reading the claims: a claim by (dotted) name, its values, and the role
//! they map to.

use serde_json::{Map, Value};

use super::OidcError;
use crate::tokens::Role;

/// A claim by name; a dotted name that is not itself a claim walks objects.
pub(super) fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

/// A claim's value(s) as strings: a string, or the strings of an array.
pub(super) fn claim_values(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// The highest role any value maps to, else the default, else refused.
pub(super) fn map_role(roles: &[(String, Role)], default_role: Option<Role>, claim_name: &str, values: &[String]) -> Result<Role, OidcError> {
    roles
        .iter()
        .filter(|(value, _)| values.contains(value))
        .map(|(_, role)| *role)
        .max()
        .or(default_role)
        .ok_or_else(|| OidcError::NoRole { claim: claim_name.to_string(), values: values.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_highest_wins_default_and_refusal() {
        let roles = vec![("ops".to_string(), Role::Viewer), ("sec".to_string(), Role::Admin), ("leads".to_string(), Role::Approver)];
        let values = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(map_role(&roles, None, "groups", &values(&["ops", "leads"])).unwrap(), Role::Approver);
        assert_eq!(map_role(&roles, None, "groups", &values(&["sec", "ops"])).unwrap(), Role::Admin);
        assert_eq!(map_role(&roles, Some(Role::Viewer), "groups", &values(&["other"])).unwrap(), Role::Viewer);
        let refused = map_role(&roles, None, "groups", &values(&["other"])).unwrap_err().to_string();
        assert!(refused.contains("\"groups\"") && refused.contains("\"other\""), "{refused}");
        let absent = map_role(&roles, None, "groups", &[]).unwrap_err().to_string();
        assert!(absent.contains("absent"), "{absent}");
    }

    #[test]
    fn claims_string_array_and_dotted() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"role":"admin","groups":["a",1,"b"],"realm_access":{"roles":["x"]},"dot.ted":"top"}"#,
        )
        .unwrap();
        assert_eq!(claim_values(claim(&claims, "role")), vec!["admin"]);
        assert_eq!(claim_values(claim(&claims, "groups")), vec!["a", "b"]);
        assert_eq!(claim_values(claim(&claims, "realm_access.roles")), vec!["x"]);
        assert_eq!(claim_values(claim(&claims, "dot.ted")), vec!["top"]);
        assert!(claim_values(claim(&claims, "missing.claim")).is_empty());
    }
}
