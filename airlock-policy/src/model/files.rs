//! Protected files: the credential files a policy guards in each session
//! user's home, and the programs allowed to open them.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::limits::*;

/// A file under the session user's home, written `~/dir/name`. The
/// last component may end in `*` (a name prefix, as in `~/.ssh/id_*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HomePattern {
    /// The pattern as written (its hash names the file class in the kernel).
    pub text: String,
    /// The components after `~/`; the last without its trailing `*`.
    pub components: Vec<String>,
    /// The last component is a name prefix.
    pub prefix: bool,
}

/// Most components a protected path may have below the home directory.
pub const MAX_PROTECTED_DEPTH: usize = 16;

impl FromStr for HomePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("~/") else {
            return Err(format!(
                "protected file {s:?} must start with \"~/\" (a path in the session user's home directory)"
            ));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > MAX_PROTECTED_DEPTH {
            return Err(format!(
                "protected file {s:?} is {} levels deep; at most {MAX_PROTECTED_DEPTH} are allowed",
                parts.len()
            ));
        }
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() || *part == "." || *part == ".." {
                return Err(format!(
                    "protected file {s:?} has an empty, \".\" or \"..\" component; write a plain path such as \"~/.aws/credentials\""
                ));
            }
            if part.contains(['?', '[', ']', '\\', '\0']) || (part.contains('*') && (i + 1 < parts.len() || !part.ends_with('*') || part.matches('*').count() > 1)) {
                return Err(format!(
                    "protected file {s:?}: the only wildcard allowed is one '*' at the end of the file name (as in \"~/.ssh/id_*\")"
                ));
            }
            if part.len() > MAX_WORD_LEN {
                return Err(format!("a component of protected file {s:?} is longer than {MAX_WORD_LEN} bytes"));
            }
        }
        let mut components: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        let prefix = components.last().is_some_and(|l| l.ends_with('*'));
        if prefix {
            if let Some(last) = components.last_mut() {
                last.pop();
            }
        }
        Ok(HomePattern { text: s.to_owned(), components, prefix })
    }
}

impl<'de> Deserialize<'de> for HomePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A program allowed to open a protected file, by the name of its
/// executable file (symlinks resolved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProgramName(pub String);

impl<'de> Deserialize<'de> for ProgramName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        if s.is_empty() || s.contains('/') || s.contains('\0') || s.len() > MAX_WORD_LEN {
            return Err(de::Error::custom(format!(
                "allowed program {s:?} must be a plain executable name such as \"aws\" (no '/', at most {MAX_WORD_LEN} bytes)"
            )));
        }
        Ok(ProgramName(s))
    }
}

/// One `protected_files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedFile {
    pub path: HomePattern,
    /// Programs that may open it; empty: none may.
    pub allow: Vec<ProgramName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedFileObject {
    path: HomePattern,
    #[serde(default)]
    allow: Vec<ProgramName>,
}

impl<'de> Deserialize<'de> for ProtectedFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = ProtectedFile;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path such as \"~/.aws/credentials\" or an object {\"path\": ..., \"allow\": [...]}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProtectedFile, E> {
                Ok(ProtectedFile { path: v.parse().map_err(E::custom)?, allow: Vec::new() })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProtectedFile, A::Error> {
                let obj = ProtectedFileObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut allow = obj.allow;
                allow.sort();
                allow.dedup();
                Ok(ProtectedFile { path: obj.path, allow })
            }
        }

        deserializer.deserialize_any(V)
    }
}

/// What a policy protects when it says nothing about `protected_files`.
pub fn default_protected_files() -> Vec<ProtectedFile> {
    let entry = |path: &str, allow: &[&str]| ProtectedFile {
        path: path.parse().expect("the default protected files are valid patterns"),
        allow: allow.iter().map(|a| ProgramName((*a).to_owned())).collect(),
    };
    vec![
        entry("~/.aws/credentials", &["aws"]),
        entry("~/.kube/config", &["helm", "kubectl"]),
        entry("~/.ssh/id_*", &["scp", "sftp", "ssh", "ssh-add", "ssh-keygen"]),
        entry("~/.config/gh/hosts.yml", &["gh"]),
    ]
}

