//! Reaching for root: execs of the programs that change who a process is or
//! what the machine allows, and any attempt on Airlock itself.
//!
//! Per session and per user, the rule fires when
//! - the subject made any `tamper` decision (allowed or denied): Critical,
//!   whatever the threshold and the configured severity; or
//! - it ran at least `threshold` execs of [`sensitive_family`] programs, at
//!   least one of them denied: the configured severity. Allowed ones alone
//!   are an administrator at work; a denied one among them is a probe.

use std::collections::BTreeMap;

use airlock_api::decision as kind;
use airlock_api::v1::Decision;

use super::{program_of, Draft, Run};
use crate::finding::{Finding, Measure, Subject};
use crate::settings::{RuleName, RuleSettings, Severity};
use crate::tally::{session_and_user, Tally};

/// Programs that are sensitive by name alone, with their family.
pub const SENSITIVE_PROGRAMS: [(&str, &str); 29] = [
    ("sudo", "switch_user"),
    ("su", "switch_user"),
    ("doas", "switch_user"),
    ("pkexec", "switch_user"),
    ("runuser", "switch_user"),
    ("setcap", "capabilities"),
    ("passwd", "accounts"),
    ("chpasswd", "accounts"),
    ("useradd", "accounts"),
    ("usermod", "accounts"),
    ("userdel", "accounts"),
    ("adduser", "accounts"),
    ("deluser", "accounts"),
    ("groupadd", "accounts"),
    ("groupmod", "accounts"),
    ("gpasswd", "accounts"),
    ("vipw", "accounts"),
    ("visudo", "sudoers"),
    ("nft", "firewall"),
    ("ebtables", "firewall"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("insmod", "kernel_modules"),
    ("modprobe", "kernel_modules"),
    ("rmmod", "kernel_modules"),
    ("nsenter", "namespaces"),
    ("unshare", "namespaces"),
    ("chroot", "namespaces"),
    ("capsh", "capabilities"),
];

/// Program name prefixes of the firewall family (`iptables-legacy`, `ip6tables-restore`, ...).
pub const FIREWALL_PREFIXES: [&str; 2] = ["iptables", "ip6tables"];

/// The sensitive family of an exec, if it is one: a program of
/// [`SENSITIVE_PROGRAMS`] or [`FIREWALL_PREFIXES`]; `chmod` setting a setuid or
/// setgid bit (`u+s`, `g=rxs`, `4755`, `2755`) ("setuid_bit"); `chown` to
/// root (`root`, `root:wheel`, `0:0`) ("root_ownership").
pub fn sensitive_family(program: &str, argv: &[String]) -> Option<&'static str> {
    if let Some((_, family)) = SENSITIVE_PROGRAMS.iter().find(|(name, _)| *name == program) {
        return Some(family);
    }
    if FIREWALL_PREFIXES.iter().any(|prefix| program.starts_with(prefix)) {
        return Some("firewall");
    }
    let operands = || argv.iter().skip(1).filter(|arg| !arg.starts_with('-'));
    match program {
        "chmod" if operands().any(|arg| sets_setuid_bit(arg)) => Some("setuid_bit"),
        "chown" if operands().next().is_some_and(|owner| names_root(owner)) => Some("root_ownership"),
        _ => None,
    }
}

fn sets_setuid_bit(mode: &str) -> bool {
    if !mode.is_empty() && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        // Octal: 4000 is setuid, 2000 setgid; "755" has neither.
        return u32::from_str_radix(mode, 8).is_ok_and(|bits| bits & 0o6000 != 0);
    }
    mode.split(',').any(|clause| {
        let mut adding = false;
        clause.chars().any(|c| {
            match c {
                '+' | '=' => adding = true,
                '-' => adding = false,
                _ => {}
            }
            adding && c == 's'
        })
    })
}

fn names_root(owner_spec: &str) -> bool {
    let owner = owner_spec.split([':', '.']).next().unwrap_or_default();
    owner == "root" || owner == "0"
}

fn is_sensitive_exec(d: &Decision) -> bool {
    d.kind == kind::EXEC && program_of(d).is_some_and(|program| sensitive_family(program, &d.argv).is_some())
}

#[derive(Default)]
struct Probes {
    sensitive: u64,
    sensitive_denies: u64,
    tamper: u64,
    evidence: Tally,
}

pub fn detect(run: &Run<'_>, settings: &RuleSettings) -> Vec<Finding> {
    let window = run.window(settings);
    let mut by_subject: BTreeMap<Subject, Probes> = BTreeMap::new();
    for d in window.select(&run.decisions) {
        let tamper = d.kind == kind::TAMPER;
        let sensitive = is_sensitive_exec(d);
        if !tamper && !sensitive {
            continue;
        }
        for subject in session_and_user(d) {
            let probes = by_subject.entry(subject).or_default();
            probes.evidence.add(d.id);
            if tamper {
                probes.tamper += 1;
            } else {
                probes.sensitive += 1;
                probes.sensitive_denies += u64::from(d.decision == kind::DENY);
            }
        }
    }
    let mut findings = Vec::new();
    for (subject, probes) in by_subject {
        let tampered = probes.tamper >= 1;
        let probing = probes.sensitive >= settings.threshold && probes.sensitive_denies >= 1;
        if !tampered && !probing {
            continue;
        }
        let severity = if tampered { Severity::Critical } else { settings.severity };
        let values = vec![
            Measure::new("tamper", probes.tamper, 1),
            Measure::new("sensitive_execs", probes.sensitive, settings.threshold),
            Measure::new("sensitive_denies", probes.sensitive_denies, 1),
        ];
        let summary = format!(
            "{subject}: {} tamper attempts, {} sensitive execs ({} denied) in {} s (threshold {} with a deny)",
            probes.tamper,
            probes.sensitive,
            probes.sensitive_denies,
            window.secs(),
            settings.threshold
        );
        let draft = Draft { severity, subject, values, evidence: probes.evidence.evidence, summary };
        findings.push(draft.into_finding(RuleName::EscalationProbing, window));
    }
    findings
}
