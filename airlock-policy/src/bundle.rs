//! A policy set as a bundle of files: what the gateway stores per version and
//! sends to agents. A file's path is `policies/NAME` or `roles/NAME` (its
//! directory says what it is, its extension its format), exactly as in a
//! policy directory, so diagnostics name the same files either way.

use std::path::{Component, Path};

use crate::diag::{Diagnostic, PolicyErrors};
use crate::load::{read_dir_sources, Format, PolicySource, SourceKind};

/// The files of a policy directory as bundle paths and contents, in order.
pub fn bundle_from_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyErrors> {
    let (sources, _) = read_dir_sources(dir)?;
    let mut files: Vec<(String, String)> = sources.into_iter().filter_map(|s| Some((bundle_path(&s)?, s.content))).collect();
    files.sort();
    Ok(files)
}

/// `policies/NAME` or `roles/NAME` for a source; None for a path with no file name.
pub fn bundle_path(source: &PolicySource) -> Option<String> {
    let name = source.path.file_name()?.to_str()?;
    let dir = match source.kind {
        SourceKind::Policy => "policies",
        SourceKind::Role => "roles",
    };
    Some(format!("{dir}/{name}"))
}

/// A bundle's files as sources to load, refusing paths that are not
/// `policies/NAME.{json,yaml,yml}` or `roles/NAME.{...}` and duplicates.
pub fn sources_from_bundle<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Vec<PolicySource>, PolicyErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (path, content) in files {
        let parts: Vec<Component<'_>> = Path::new(path).components().collect();
        let kind = match parts.as_slice() {
            [Component::Normal(dir), Component::Normal(_)] if *dir == "policies" => Some(SourceKind::Policy),
            [Component::Normal(dir), Component::Normal(_)] if *dir == "roles" => Some(SourceKind::Role),
            _ => None,
        };
        let Some(kind) = kind else {
            errors.push(Diagnostic::new(path, "", "a bundle file's path must be policies/NAME or roles/NAME"));
            continue;
        };
        if Format::from_path(Path::new(path)).is_none() {
            errors.push(Diagnostic::new(path, "", "not a .json, .yaml or .yml file"));
            continue;
        }
        if !seen.insert(path.to_string()) {
            errors.push(Diagnostic::new(path, "", "the bundle has this file twice"));
            continue;
        }
        sources.push(PolicySource { kind, path: path.into(), content: content.to_string() });
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(PolicyErrors { errors, warnings: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_name_the_directory_and_refuse_anything_else() {
        let ok = sources_from_bundle([("policies/a.json", "{}"), ("roles/default.yaml", "x: 1")]).unwrap();
        assert_eq!(ok[0].kind, SourceKind::Policy);
        assert_eq!(ok[1].kind, SourceKind::Role);
        assert_eq!(bundle_path(&ok[1]).as_deref(), Some("roles/default.yaml"));
        for bad in ["../etc/passwd.json", "policies/../../x.json", "/policies/a.json", "policies/sub/a.json", "other/a.json", "policies/a.txt"] {
            let err = sources_from_bundle([(bad, "{}")]).unwrap_err();
            assert_eq!(err.errors[0].file, Path::new(bad), "{bad}");
        }
        let twice = sources_from_bundle([("policies/a.json", "{}"), ("policies/a.json", "{}")]).unwrap_err();
        assert!(twice.errors[0].message.contains("twice"));
    }

    #[test]
    fn the_shipped_directory_round_trips_through_a_bundle() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let files = bundle_from_dir(&dir).unwrap();
        assert!(files.iter().any(|(p, _)| p == "roles/default.json"), "{files:?}");
        let from_dir = crate::load_dir(&dir).unwrap();
        let from_bundle = crate::load_sources(sources_from_bundle(files.iter().map(|(p, c)| (p.as_str(), c.as_str()))).unwrap()).unwrap();
        assert_eq!(from_dir.version(), from_bundle.version());
    }
}
