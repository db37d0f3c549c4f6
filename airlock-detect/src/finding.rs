//! What a detector reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::settings::{RuleName, Severity};

/// At most this many decision ids back a finding: enough to open the
/// decisions in question, few enough to keep a finding small.
pub const EVIDENCE_LIMIT: usize = 50;

/// Who or what a finding is about. Ordered users, sessions, tokens: the
/// order of findings of one rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    /// A decision's `user`; `uid:N` when the decision has no user name.
    User(String),
    /// A decision's `session_id`.
    Session(String),
    /// An API token as [`crate::TokenUse::token`] names it.
    Token(String),
}

impl Subject {
    /// "user", "session" or "token": the subject's kind as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::User(_) => "user",
            Subject::Session(_) => "session",
            Subject::Token(_) => "token",
        }
    }

    /// The user name, session id or token name.
    pub fn name(&self) -> &str {
        match self {
            Subject::User(name) | Subject::Session(name) | Subject::Token(name) => name,
        }
    }
}

impl Finding {
    /// The finding as the API's message, with the decision ids as the
    /// detector saw them; the holder adds the id, the time and the block.
    pub fn to_message(&self) -> airlock_api::v1::SecurityFinding {
        airlock_api::v1::SecurityFinding {
            rule: self.rule.as_str().into(),
            severity: self.severity.as_str().into(),
            subject_kind: self.subject.kind().into(),
            subject: self.subject.name().into(),
            window_start_unix_nanos: self.window_start_ns,
            window_end_unix_nanos: self.window_end_ns,
            values: self
                .values
                .iter()
                .map(|m| airlock_api::v1::Measure { name: m.name.clone(), observed: m.observed, threshold: m.threshold })
                .collect(),
            evidence: self.evidence.clone(),
            summary: self.summary.clone(),
            ..Default::default()
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(user) => write!(f, "user {user}"),
            Subject::Session(session) => write!(f, "session {session}"),
            Subject::Token(token) => write!(f, "token {token}"),
        }
    }
}

/// One value a detector observed, against the threshold it was held to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    /// What was counted, e.g. `denies`, `distinct_hosts`.
    pub name: String,
    pub observed: u64,
    pub threshold: u64,
}

impl Measure {
    pub fn new(name: &str, observed: u64, threshold: u64) -> Measure {
        Measure { name: name.to_string(), observed, threshold }
    }

    /// A measure fires at its threshold: `observed >= threshold`.
    pub fn fires(&self) -> bool {
        self.observed >= self.threshold
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: RuleName,
    pub severity: Severity,
    pub subject: Subject,
    /// The window is `(window_start_ns, window_end_ns]`: the start is excluded.
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// Every value the rule measured for the subject; at least one fired.
    pub values: Vec<Measure>,
    /// Ids of the decisions behind the finding, in (time, id) order, at most
    /// [`EVIDENCE_LIMIT`]. Empty for token findings (token uses have no id).
    pub evidence: Vec<u64>,
    /// One line for a person: what was seen, against which threshold.
    pub summary: String,
}
