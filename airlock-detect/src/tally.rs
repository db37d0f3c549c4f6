//! Counting decisions per subject, with the ids that back the count.

use std::collections::{BTreeMap, BTreeSet};

use airlock_api::decision as kind;
use airlock_api::v1::Decision;

use crate::finding::{Subject, EVIDENCE_LIMIT};

/// The user a decision is about: its user name, else its uid.
pub fn user_of(d: &Decision) -> Subject {
    if d.user.is_empty() {
        Subject::User(format!("uid:{}", d.uid))
    } else {
        Subject::User(d.user.clone())
    }
}

/// The session a decision belongs to, if it was made in one.
pub fn session_of(d: &Decision) -> Option<Subject> {
    (!d.session_id.is_empty()).then(|| Subject::Session(d.session_id.clone()))
}

/// The subjects most rules judge a decision under: its session, then its user.
pub fn session_and_user(d: &Decision) -> impl Iterator<Item = Subject> {
    session_of(d).into_iter().chain(std::iter::once(user_of(d)))
}

/// A count and the first [`EVIDENCE_LIMIT`] decision ids behind it.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub count: u64,
    pub evidence: Vec<u64>,
}

impl Tally {
    pub fn add(&mut self, decision_id: u64) {
        self.count += 1;
        self.cite(decision_id);
    }

    /// Keeps an id as evidence without counting it (for distinct counts).
    pub fn cite(&mut self, decision_id: u64) {
        if self.evidence.len() < EVIDENCE_LIMIT {
            self.evidence.push(decision_id);
        }
    }
}

/// Per subject: how many decisions matched.
pub fn count_by_subject<'a, P, S, I>(decisions: &[&'a Decision], matches: P, subjects: S) -> BTreeMap<Subject, Tally>
where
    P: Fn(&Decision) -> bool,
    S: Fn(&'a Decision) -> I,
    I: Iterator<Item = Subject>,
{
    let mut tallies: BTreeMap<Subject, Tally> = BTreeMap::new();
    for d in decisions.iter().copied().filter(|d| matches(d)) {
        for subject in subjects(d) {
            tallies.entry(subject).or_default().add(d.id);
        }
    }
    tallies
}

/// Distinct values per subject, and the first decision of each value.
#[derive(Debug, Default, Clone)]
pub struct Distinct {
    pub values: BTreeSet<String>,
    pub first_seen: Tally,
}

impl Distinct {
    pub fn add(&mut self, value: &str, decision_id: u64) {
        if !self.values.contains(value) {
            self.values.insert(value.to_string());
            self.first_seen.add(decision_id);
        }
    }

    pub fn count(&self) -> u64 {
        self.values.len() as u64
    }
}

/// What counts as a request: an exec or an outgoing connection (or datagram).
pub const REQUEST_KINDS: [&str; 5] = [kind::EXEC, kind::CONNECT, kind::SENDMSG, kind::UNIX_CONNECT, kind::UNIX_SENDMSG];

/// Requests per subject among decisions already cut to the window (the
/// request-rate rule's count, and what its baseline learns from).
pub fn requests_by_subject(in_window: &[&Decision]) -> BTreeMap<Subject, Tally> {
    count_by_subject(in_window, |d| REQUEST_KINDS.contains(&d.kind.as_str()), session_and_user)
}
