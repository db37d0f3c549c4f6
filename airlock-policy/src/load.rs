//! Reading policy and role documents from a directory or from embedded text,
//! and checking the references between them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::diag::{line_col, locate, Diagnostic, PolicyErrors};
use crate::model::{Policy, Role, Status};
use airlock_common::abi::{word_hash, MAX_ROLES};

/// What a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Policy,
    Role,
}

/// How a source is written; chosen by the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `.json`, `.yaml` and `.yml`, in any letter case; anything else is `None`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// One document to load. `path` is only a display name (it is never opened),
/// so an embedded default set can name the file it was compiled from; its
/// extension picks the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub kind: SourceKind,
    pub path: PathBuf,
    pub content: String,
}

impl PolicySource {
    pub fn policy(path: impl Into<PathBuf>, content: impl Into<String>) -> Self {
        PolicySource {
            kind: SourceKind::Policy,
            path: path.into(),
            content: content.into(),
        }
    }

    pub fn role(path: impl Into<PathBuf>, content: impl Into<String>) -> Self {
        PolicySource {
            kind: SourceKind::Role,
            path: path.into(),
            content: content.into(),
        }
    }
}

/// A checked set of policies and roles, each list sorted by source path so
/// that compiling it is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPolicies {
    pub policies: Vec<Policy>,
    pub roles: Vec<Role>,
    pub warnings: Vec<Diagnostic>,
}

impl LoadedPolicies {
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.id.as_str() == id)
    }

    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id.as_str() == id)
    }

    /// A short fingerprint of the content (not of file names or order), so
    /// status output can say which policy set is in force.
    pub fn version(&self) -> String {
        let mut canon = String::new();
        let mut field = |s: &str| {
            // Length prefixes keep ("ab","c") and ("a","bc") apart.
            canon.push_str(&s.len().to_string());
            canon.push(':');
            canon.push_str(s);
        };
        let mut policies: Vec<&Policy> = self.policies.iter().collect();
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        for p in policies {
            field("policy");
            field(p.id.as_str());
            field(&p.name);
            field(p.status.as_str());
            field(p.description.as_deref().unwrap_or(""));
            for c in &p.blocked_commands {
                field("cmd");
                field(&c.text);
            }
            for c in &p.approval_commands {
                field("approve");
                field(&c.text);
            }
            for (pattern, rate) in p.rate_limits.iter() {
                field("rate");
                field(pattern.text());
                field(&rate.to_string());
            }
            for (pattern, window) in p.time_windows.iter() {
                field("window");
                field(pattern.text());
                field(&window.to_string());
            }
            for e in &p.egress.deny {
                field("egress");
                field(&e.net.to_string());
                field(
                    &e.ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            for (what, hosts) in [("deny_host", &p.egress.deny_hosts), ("allow_host", &p.egress.allow_hosts)] {
                for h in hosts {
                    field(what);
                    field(&h.host);
                    field(&h.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","));
                }
            }
            for a in &p.egress.allow {
                field("allow");
                field(&a.net.to_string());
                field(&a.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","));
            }
            for u in &p.egress.unix_deny {
                field("unix");
                field(&u.text);
            }
            if p.egress.raw_sockets == super::model::RawSockets::Allow {
                field("raw_sockets=allow");
            }
            for r in &p.rules {
                field("rule");
                field(&r.to_string());
            }
            for f in &p.protected_files {
                field("protected_file");
                field(&f.path.text);
                for a in &f.allow {
                    field(&a.0);
                }
            }
        }
        let mut roles: Vec<&Role> = self.roles.iter().collect();
        roles.sort_by(|a, b| a.id.cmp(&b.id));
        for r in roles {
            field("role");
            field(r.id.as_str());
            field(&r.name);
            field(r.description.as_deref().unwrap_or(""));
            for p in &r.policies {
                field(p.as_str());
            }
            if r.egress_default == super::model::EgressDefault::Deny {
                field("egress_default=deny");
            }
        }
        format!("{:016x}", word_hash(canon.as_bytes()))
    }
}

/// Loads `DIR/policies/*` and `DIR/roles/*`, reporting every problem found in
/// every file rather than stopping at the first.
pub fn load_dir(dir: &Path) -> Result<LoadedPolicies, PolicyErrors> {
    let (sources, warnings) = read_dir_sources(dir)?;
    load_all(sources, Vec::new(), warnings)
}

/// The documents of `DIR/policies/*` and `DIR/roles/*`, read but not parsed,
/// and warnings about files that are not policy documents.
pub fn read_dir_sources(dir: &Path) -> Result<(Vec<PolicySource>, Vec<Diagnostic>), PolicyErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => errors.push(Diagnostic::new(
            dir,
            "",
            "policy directory is not a directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            errors.push(Diagnostic::new(dir, "", "policy directory does not exist"))
        }
        Err(e) => errors.push(Diagnostic::new(
            dir,
            "",
            format!("cannot read policy directory: {e}"),
        )),
    }
    if !errors.is_empty() {
        return Err(PolicyErrors { errors, warnings });
    }

    let mut sources = Vec::new();
    for (sub, kind) in [
        ("policies", SourceKind::Policy),
        ("roles", SourceKind::Role),
    ] {
        let subdir = dir.join(sub);
        let read = match fs::read_dir(&subdir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                errors.push(Diagnostic::new(
                    &subdir,
                    "",
                    format!("missing: a policy directory needs a {sub}/ subdirectory"),
                ));
                continue;
            }
            Err(e) => {
                errors.push(Diagnostic::new(
                    &subdir,
                    "",
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        let mut paths = Vec::new();
        for entry in read {
            match entry {
                Ok(entry) => paths.push(entry.path()),
                Err(e) => errors.push(Diagnostic::new(
                    &subdir,
                    "",
                    format!("cannot list directory: {e}"),
                )),
            }
        }
        paths.sort();
        for path in paths {
            if path.is_dir() {
                warnings.push(Diagnostic::new(
                    &path,
                    "",
                    "ignored: subdirectories are not searched",
                ));
                continue;
            }
            if Format::from_path(&path).is_none() {
                warnings.push(Diagnostic::new(
                    &path,
                    "",
                    "ignored: not a .json, .yaml or .yml file",
                ));
                continue;
            }
            match fs::read_to_string(&path) {
                Ok(content) => sources.push(PolicySource {
                    kind,
                    path,
                    content,
                }),
                Err(e) => errors.push(Diagnostic::new(&path, "", format!("cannot read file: {e}"))),
            }
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors { errors, warnings });
    }
    Ok((sources, warnings))
}

/// Loads documents handed over in memory, e.g. a default set compiled into
/// the binary. Sources are ordered by kind and path first, as `load_dir` does.
pub fn load_sources(sources: Vec<PolicySource>) -> Result<LoadedPolicies, PolicyErrors> {
    load_all(sources, Vec::new(), Vec::new())
}

struct Parsed<T> {
    value: T,
    content: String,
}

fn load_all(
    mut sources: Vec<PolicySource>,
    mut errors: Vec<Diagnostic>,
    mut warnings: Vec<Diagnostic>,
) -> Result<LoadedPolicies, PolicyErrors> {
    sources.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));

    let mut policies: Vec<Parsed<Policy>> = Vec::new();
    let mut roles: Vec<Parsed<Role>> = Vec::new();
    // Ids of files that failed to parse: a role naming one of them should not
    // pile a second, misleading "unknown policy" error on top.
    let mut broken_policy_ids = BTreeSet::new();

    for src in sources {
        let Some(format) = Format::from_path(&src.path) else {
            errors.push(Diagnostic::new(
                &src.path,
                "",
                "unknown format: use a .json, .yaml or .yml name",
            ));
            continue;
        };
        match src.kind {
            SourceKind::Policy => match parse::<Policy>(&src, format) {
                Ok(mut value) => {
                    value.source = src.path.clone();
                    if !value.rules.is_empty() {
                        let pos = super::diag::find_key(&src.content, "rules")
                            .map(|i| line_col(&src.content, i));
                        warnings.push(
                            Diagnostic::new(
                                &src.path,
                                "rules",
                                "rules[] is not enforced by this agent",
                            )
                            .at(pos),
                        );
                    }
                    policies.push(Parsed {
                        value,
                        content: src.content,
                    });
                }
                Err(d) => {
                    if let Some(id) = loose_id(&src.content, format) {
                        broken_policy_ids.insert(id);
                    }
                    errors.push(d);
                }
            },
            SourceKind::Role => match parse::<Role>(&src, format) {
                Ok(mut value) => {
                    value.source = src.path.clone();
                    roles.push(Parsed {
                        value,
                        content: src.content,
                    });
                }
                Err(d) => errors.push(d),
            },
        }
    }

    check_unique_ids(
        &policies,
        |p| p.id.as_str(),
        |p| &p.source,
        "policy",
        &mut errors,
    );
    check_unique_ids(
        &roles,
        |r| r.id.as_str(),
        |r| &r.source,
        "role",
        &mut errors,
    );

    let status_of: BTreeMap<&str, Status> = policies
        .iter()
        .map(|p| (p.value.id.as_str(), p.value.status))
        .collect();
    for role in &roles {
        let r = &role.value;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut any_active = false;
        for (i, pid) in r.policies.iter().enumerate() {
            let nth = r.policies[..i].iter().filter(|p| *p == pid).count();
            let pos = locate(&role.content, "policies", pid.as_str(), nth);
            let field = format!("policies[{i}]");
            if let Some(first) = seen.get(pid.as_str()) {
                errors.push(
                    Diagnostic::new(
                        &r.source,
                        field,
                        format!(
                            "policy {:?} is already listed as policies[{first}]",
                            pid.as_str()
                        ),
                    )
                    .at(pos),
                );
                continue;
            }
            seen.insert(pid.as_str(), i);
            match status_of.get(pid.as_str()) {
                Some(Status::Active) => any_active = true,
                Some(_) => {}
                // Its status is unknown and its own error already says what to
                // fix, so neither an "unknown policy" nor a "blocks nothing" note.
                None if broken_policy_ids.contains(pid.as_str()) => any_active = true,
                None => errors.push(
                    Diagnostic::new(
                        &r.source,
                        field,
                        format!(
                            "unknown policy {:?}: no policy file has this id",
                            pid.as_str()
                        ),
                    )
                    .at(pos),
                ),
            }
        }
        if !any_active {
            let pos = super::diag::find_key(&role.content, "policies")
                .map(|i| line_col(&role.content, i));
            warnings.push(
                Diagnostic::new(
                    &r.source,
                    "policies",
                    "the role lists no active policy, so it blocks nothing",
                )
                .at(pos),
            );
        }
    }

    if roles.len() > MAX_ROLES as usize {
        errors.push(Diagnostic::new(
            roles
                .last()
                .map(|r| r.value.source.clone())
                .unwrap_or_default(),
            "",
            format!(
                "{} roles are defined; the kernel tables hold at most {MAX_ROLES}",
                roles.len()
            ),
        ));
    }

    if errors.is_empty() {
        Ok(LoadedPolicies {
            policies: policies.into_iter().map(|p| p.value).collect(),
            roles: roles.into_iter().map(|r| r.value).collect(),
            warnings,
        })
    } else {
        Err(PolicyErrors { errors, warnings })
    }
}

fn check_unique_ids<T>(
    items: &[Parsed<T>],
    id: impl Fn(&T) -> &str,
    source: impl Fn(&T) -> &PathBuf,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) {
    let mut first: BTreeMap<&str, &Parsed<T>> = BTreeMap::new();
    for item in items {
        let this = id(&item.value);
        match first.get(this) {
            None => {
                first.insert(this, item);
            }
            Some(earlier) => {
                let earlier_pos = locate(&earlier.content, "id", this, 0);
                let mut at = source(&earlier.value).display().to_string();
                if let Some((line, _)) = earlier_pos {
                    at.push_str(&format!(":{line}"));
                }
                errors.push(
                    Diagnostic::new(
                        source(&item.value),
                        "id",
                        format!("duplicate {what} id {this:?}: also defined in {at}"),
                    )
                    .at(locate(&item.content, "id", this, 0)),
                );
            }
        }
    }
}

fn parse<T: DeserializeOwned>(src: &PolicySource, format: Format) -> Result<T, Diagnostic> {
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(&src.content);
            let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
                let field = field_name(e.path(), &e.inner().to_string());
                json_diag(&src.path, field, e.inner())
            })?;
            de.end()
                .map_err(|e| json_diag(&src.path, String::new(), &e))?;
            Ok(value)
        }
        Format::Yaml => {
            let de = serde_norway::Deserializer::from_str(&src.content);
            serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                let field = field_name(e.path(), &e.inner().to_string());
                let inner = e.inner();
                let loc = inner.location();
                let mut message = strip_position(&inner.to_string());
                if let Some(l) = &loc {
                    // libyaml puts the problem's position mid-sentence.
                    message = message.replacen(
                        &format!(" at line {} column {}", l.line(), l.column()),
                        "",
                        1,
                    );
                }
                // The YAML parser prefixes its own idea of the path; ours is in `field`.
                if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
                    message = rest.to_owned();
                }
                Diagnostic {
                    file: src.path.clone(),
                    line: loc.as_ref().map(serde_norway::Location::line),
                    column: loc.as_ref().map(serde_norway::Location::column),
                    field,
                    message,
                }
            })
        }
    }
}

fn json_diag(file: &Path, field: String, e: &serde_json::Error) -> Diagnostic {
    // serde_json reports line 0 when it has no position.
    let (line, column) = if e.line() == 0 {
        (None, None)
    } else {
        (Some(e.line()), Some(e.column()))
    };
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message: strip_position(&e.to_string()),
    }
}

/// The field path as a user writes it; an unknown key is named in the path
/// too, since that key is the thing to fix.
fn field_name(path: &serde_path_to_error::Path, message: &str) -> String {
    let mut field = path.to_string();
    // A syntax error has no meaningful path; serde_path_to_error shows "?" or ".".
    while field.ends_with('?') {
        field.pop();
        if field.ends_with('.') {
            field.pop();
        }
    }
    if field == "." {
        field.clear();
    }
    if let Some(rest) = message.strip_prefix("unknown field `").or_else(|| {
        message
            .find(": unknown field `")
            .and_then(|i| message.get(i + ": unknown field `".len()..))
    }) {
        if let Some(end) = rest.find('`') {
            let key = &rest[..end];
            if !field.ends_with(key) {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
        }
    }
    field
}

/// Drops serde's trailing " at line L column C": the diagnostic carries those.
fn strip_position(message: &str) -> String {
    if let Some(i) = message.rfind(" at line ") {
        let tail = &message[i + " at line ".len()..];
        let mut parts = tail.splitn(3, ' ');
        let l = parts
            .next()
            .is_some_and(|s| s.chars().all(|c| c.is_ascii_digit()));
        let kw = parts.next() == Some("column");
        let c = parts
            .next()
            .is_some_and(|s| s.chars().all(|c| c.is_ascii_digit()));
        if l && kw && c {
            return message[..i].to_owned();
        }
    }
    message.to_owned()
}

/// The `id` of a document that failed typed parsing, if it is readable at all.
fn loose_id(content: &str, format: Format) -> Option<String> {
    let value: serde_json::Value = match format {
        Format::Json => serde_json::from_str(content).ok()?,
        Format::Yaml => serde_norway::from_str(content).ok()?,
    };
    value.get("id")?.as_str().map(str::to_owned)
}
