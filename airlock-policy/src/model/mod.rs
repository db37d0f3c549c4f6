//! The policy and role documents, as typed values.
//!
//! Every leaf type checks itself inside its `Deserialize` impl, so a bad value
//! is reported by serde together with the position the parser was at and,
//! through `serde_path_to_error`, the field path that led to it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

mod egress;
mod files;
mod limit_rules;
mod limits;
mod programs;
mod schedule;

pub use egress::{parse_hostname, Cidr, Egress, EgressRule, HostRule, RawSockets, UnixRule, MAX_UNIX_PATTERN_LEN};
pub use files::{default_protected_files, HomePattern, ProgramName, ProtectedFile, MAX_PROTECTED_DEPTH};
pub use limit_rules::{LimitMap, LimitPattern};
pub use limits::{MAX_COMMAND_WORDS, MAX_ID_LEN, MAX_WORD_LEN};
pub use programs::{AliasedProgram, ProgramForms, ProgramFormsMap, PythonModule};
pub use schedule::{gcra_admit, RateLimit, TimeWindow};

/// Deserializes a value from a string through `FromStr`. The parse fails
/// inside the string's own deserialization, so the parser reports the line of
/// the string itself, not of the map or list around it.
pub(crate) fn deserialize_from_str<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct FromStrVisitor<T>(&'static str, std::marker::PhantomData<T>);

    impl<T: FromStr<Err = String>> de::Visitor<'_> for FromStrVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }

    deserializer.deserialize_str(FromStrVisitor(expecting, std::marker::PhantomData))
}

/// A policy or role id: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Id {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("id must not be empty".into());
        }
        if s.len() > MAX_ID_LEN {
            return Err(format!(
                "id is {} bytes long; at most {MAX_ID_LEN} are allowed",
                s.len()
            ));
        }
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok {
            return Err(format!(
                "invalid id {s:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
            ));
        }
        Ok(Id(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Whether a policy is enforced. Only `Active` policies reach the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Active,
    Inactive,
    Draft,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Draft => "draft",
        }
    }
}

/// One blocked command: a program and the words that must follow it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    /// The command as written, with runs of whitespace collapsed.
    pub text: String,
    /// Basename of the first word: the kernel only knows the executed file's name.
    pub program: String,
    /// The words after the program; empty means every run of the program is blocked.
    pub words: Vec<String>,
}

impl FromStr for CommandPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(c) = s.chars().find(|c| matches!(c, '"' | '\'' | '`' | '\0')) {
            let what = if c == '\0' {
                "a NUL byte".to_owned()
            } else {
                format!("the quote character {c}")
            };
            return Err(format!(
                "blocked command {s:?} contains {what}; write plain words separated by spaces \
                 (the kernel compares argv words, no shell quoting takes place)"
            ));
        }
        let all: Vec<&str> = s.split_ascii_whitespace().collect();
        let Some((first, rest)) = all.split_first() else {
            return Err("blocked command is empty".into());
        };
        if all.len() > MAX_COMMAND_WORDS {
            return Err(format!(
                "blocked command {s:?} has {} words; at most {MAX_COMMAND_WORDS} are allowed",
                all.len()
            ));
        }
        if let Some(long) = all.iter().find(|w| w.len() > MAX_WORD_LEN) {
            return Err(format!(
                "a word of blocked command {s:?} is {} bytes long; at most {MAX_WORD_LEN} are allowed",
                long.len()
            ));
        }
        if let Some(opt) = rest.iter().find(|w| w.starts_with('-')) {
            return Err(format!(
                "blocked command {s:?} requires the option word {opt:?}, but option words \
                 (starting with '-') are skipped when matching, so a rule cannot require one; \
                 remove {opt:?} (the remaining words still match with or without options)"
            ));
        }
        let program = first.rsplit('/').next().unwrap_or(first);
        if program.is_empty() {
            return Err(format!(
                "blocked command {s:?} names a directory, not a program"
            ));
        }
        Ok(CommandPattern {
            text: all.join(" "),
            program: program.to_owned(),
            words: rest.iter().map(|w| (*w).to_owned()).collect(),
        })
    }
}

impl<'de> Deserialize<'de> for CommandPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

fn enabled() -> bool {
    true
}

/// Exec switches a name cannot decide (exec identity). Both default to on: a
/// policy that does not mention them denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    /// Deny executing a file that has no name on disk (memfd, a deleted file, O_TMPFILE).
    #[serde(default = "enabled")]
    pub deny_fileless: bool,
    /// Deny running the dynamic loader (`ld-linux-x86-64.so.2 PROGRAM`) directly.
    #[serde(default = "enabled")]
    pub deny_direct_loader: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            deny_fileless: true,
            deny_direct_loader: true,
        }
    }
}

/// A policy file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub id: Id,
    pub name: String,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub blocked_commands: Vec<CommandPattern>,
    /// Commands that run only once a person approves them (same grammar and
    /// matcher as `blocked_commands`; a block rule wins over an approval rule).
    #[serde(default)]
    pub approval_commands: Vec<CommandPattern>,
    /// Exec rates per session, enforced in the kernel:
    /// `{"kubectl *": "100/minute", "*": "1000/hour"}`.
    #[serde(default)]
    pub rate_limits: LimitMap<RateLimit>,
    /// When commands may run at all: `{"terraform apply": "Mon-Fri 09:00-17:00 Europe/Berlin"}`.
    #[serde(default)]
    pub time_windows: LimitMap<TimeWindow>,
    #[serde(default)]
    pub egress: Egress,
    /// The upstream control plane's rule language; carried but not enforced here.
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
    /// Exec switches (exec identity); absent means both on.
    #[serde(default)]
    pub exec: ExecOptions,
    /// Credential files only the listed programs may open (defaults when absent; `[]` for none).
    #[serde(default = "default_protected_files")]
    pub protected_files: Vec<ProtectedFile>,
    /// Other forms the programs its rules name run in (`python3 -m MODULE`),
    /// besides the ones Airlock ships and finds on the host.
    #[serde(default)]
    pub programs: ProgramFormsMap,
    /// Where the policy came from (display name), for diagnostics and audit.
    #[serde(skip)]
    pub source: PathBuf,
}

/// A role file: the policies a governed session runs under.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub id: Id,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub policies: Vec<Id>,
    /// What happens to a destination no rule names: `allow` (the default) or
    /// `deny`, in which case only the policies' `egress.allow` entries are reachable.
    #[serde(default)]
    pub egress_default: EgressDefault,
    /// Exec switches of the role itself (strict sessions).
    #[serde(default)]
    pub exec: RoleExecOptions,
    #[serde(skip)]
    pub source: PathBuf,
}

/// A role's exec switches. Off by default: they cost the role's sessions
/// work on every open for writing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleExecOptions {
    /// The role's sessions cannot execute a file they created or modified
    /// (copies, downloads, builds, scripts run as `./script`).
    #[serde(default)]
    pub deny_session_written: bool,
}

/// A role's egress default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressDefault {
    #[default]
    Allow,
    Deny,
}
