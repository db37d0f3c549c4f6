//! A pushed policy set: validated with the agent's own loader (the same
//! file, field and line diagnostics as `airlock-agent policy check`), named
//! by its content hash, and compared with the version before it.

use airlock_api::gateway::v1::PolicyFile;
use airlock_policy::LoadedPolicies;
use similar::TextDiff;

/// At most this much policy text per version.
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;

/// Loads a bundle the way an agent will; the error text lists every problem.
pub fn validate(files: &[PolicyFile]) -> Result<LoadedPolicies, String> {
    if files.is_empty() {
        return Err("the policy set has no files (a policy directory has policies/ and roles/)".into());
    }
    let size: usize = files.iter().map(|f| f.path.len() + f.content.len()).sum();
    if size > MAX_BUNDLE_BYTES {
        return Err(format!("the policy set is {size} bytes; at most {MAX_BUNDLE_BYTES}"));
    }
    let sources = airlock_policy::sources_from_bundle(files.iter().map(|f| (f.path.as_str(), f.content.as_str()))).map_err(|e| e.to_string())?;
    airlock_policy::load_sources(sources).map_err(|e| e.to_string())
}

/// A unified diff of every file, from `old` to `new` (paths sorted).
pub fn diff(old: &[(String, String)], new: &[(String, String)]) -> String {
    let mut paths: Vec<&str> = old.iter().chain(new.iter()).map(|(p, _)| p.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let find = |set: &[(String, String)], path: &str| set.iter().find(|(p, _)| p == path).map(|(_, c)| c.clone());
    let mut out = String::new();
    for path in paths {
        let (before, after) = (find(old, path), find(new, path));
        if before == after {
            continue;
        }
        let (a, b) = (before.unwrap_or_default(), after.unwrap_or_default());
        let text = TextDiff::from_lines(&a, &b);
        out.push_str(&text.unified_diff().context_radius(3).header(&format!("a/{path}"), &format!("b/{path}")).to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_each_changed_file_and_line() {
        let old = vec![("policies/a.json".to_string(), "one\ntwo\n".to_string()), ("roles/r.json".to_string(), "same\n".to_string())];
        let new = vec![("policies/a.json".to_string(), "one\nthree\n".to_string()), ("roles/r.json".to_string(), "same\n".to_string())];
        let d = diff(&old, &new);
        assert!(d.contains("--- a/policies/a.json") && d.contains("-two") && d.contains("+three"), "{d}");
        assert!(!d.contains("roles/r.json"), "{d}");
        assert_eq!(diff(&old, &old), "");
    }

    #[test]
    fn an_invalid_set_is_refused_with_the_file_and_field() {
        let files = vec![
            PolicyFile { path: "policies/p.json".into(), content: "{\"id\": \"p\", \"name\": \"p\", \"blocked_commands\": 3}".into() },
            PolicyFile { path: "roles/default.json".into(), content: "{}".into() },
        ];
        let err = validate(&files).unwrap_err();
        assert!(err.contains("policies/p.json"), "{err}");
        assert!(validate(&[]).is_err());
    }
}
