//! Denied actions per session and per user: an agent that keeps hitting the
//! policy is trying to get somewhere it may not go.

use airlock_api::decision as kind;

use super::{count_findings, Run, ACTION_KINDS};
use crate::finding::Finding;
use crate::settings::{RuleName, RuleSettings};
use crate::tally::{count_by_subject, session_and_user};

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let denies = count_by_subject(
        &window.select(&run.decisions),
        |d| d.decision == kind::DENY && ACTION_KINDS.contains(&d.kind.as_str()),
        session_and_user,
    );
    count_findings(RuleName::RepeatedDenials, settings, window, denies, "denies", "denied actions")
}
