//! The CLI's tables.

use std::io::Write;

use airlock_api::gateway::v1::{FleetDecision, FleetSession, Host, PolicyVersion, SimulatePolicyResponse};
use anyhow::Result;
use serde::Serialize;

pub fn json_or<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human();
    }
    Ok(())
}

pub fn time(ns: i64) -> String {
    if ns <= 0 {
        return "-".into();
    }
    crate::rfc3339(ns)
}

pub fn ago(ns: i64) -> String {
    if ns <= 0 {
        return "never".into();
    }
    let secs = (crate::now_ns() - ns) / 1_000_000_000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

pub fn hosts(hosts: &[Host]) {
    println!("{:<20} {:<8} {:<10} {:<8} {:<12} {:<24} {:<10} {:<10} NOTE", "HOST", "STATE", "POLICY", "BACKEND", "LAST SEEN", "KERNEL", "SHIPPED", "LOST");
    for h in hosts {
        let state = if h.revoked { "revoked" } else if h.connected { "online" } else { "offline" };
        let policy = match (h.enforced_version, h.latest_version) {
            (0, _) => "none".to_string(),
            (v, l) if v == l => format!("v{v}"),
            (v, l) => format!("v{v}/v{l}"),
        };
        let note = if h.policy_error.is_empty() { String::new() } else { format!("refused the latest version: {}", h.policy_error.lines().next().unwrap_or("")) };
        println!(
            "{:<20} {:<8} {:<10} {:<8} {:<12} {:<24} {:<10} {:<10} {}",
            h.host_id, state, policy, h.backend, ago(h.last_contact_unix_nanos), h.kernel, h.shipped_seq, h.lost, note
        );
    }
}

pub fn history(versions: &[PolicyVersion]) {
    println!("{:<8} {:<20} {:<17} {:<28} COMMENT", "VERSION", "CREATED", "HASH", "AUTHOR");
    for v in versions {
        let comment = if v.rollback_of > 0 && v.comment.is_empty() { format!("rollback to {}", v.rollback_of) } else { v.comment.clone() };
        println!("{:<8} {:<20} {:<17} {:<28} {}", v.version, time(v.created_unix_nanos).get(..19).unwrap_or("-"), v.content_hash, v.author, comment);
    }
}

pub fn policy(v: &PolicyVersion) {
    println!("org {} version {} ({}) by {} at {}", v.org, v.version, v.content_hash, v.author, time(v.created_unix_nanos));
    if !v.comment.is_empty() {
        println!("comment: {}", v.comment);
    }
    for f in &v.files {
        println!("--- {} ({} bytes)", f.path, f.content.len());
        print!("{}", f.content);
        if !f.content.ends_with('\n') {
            println!();
        }
    }
    if !v.diff.is_empty() {
        println!("=== changes from the version before");
        print!("{}", v.diff);
    }
}

pub fn simulation(r: &SimulatePolicyResponse) {
    println!(
        "candidate {}: {} decision(s) replayed; {} would newly be denied, {} newly allowed, {} unchanged",
        r.content_hash, r.examined, r.newly_denied, r.newly_allowed, r.unchanged
    );
    if r.changes.is_empty() {
        return;
    }
    println!("{:<14} {:<7} {:<24} {:<36} {:<20} EXAMPLE", "CHANGE", "COUNT", "POLICY", "RULE", "HOST");
    for c in &r.changes {
        println!("{:<14} {:<7} {:<24} {:<36} {:<20} {}", c.change, c.count, c.policy, c.rule, c.host, c.example);
    }
}

pub fn decisions(list: &[FleetDecision], json: bool, header: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for d in list {
            writeln!(out, "{}", serde_json::to_string(d)?)?;
        }
        return Ok(out.flush()?);
    }
    if header {
        writeln!(out, "{:<20} {:<16} {:<6} {:<8} {:<16} {:<10} SUBJECT / REASON", "TIME", "HOST", "VERDICT", "KIND", "SESSION", "USER")?;
    }
    for fd in list {
        let Some(d) = &fd.decision else { continue };
        let subject = if d.argv.is_empty() { airlock_api::decision::subject_of(d) } else { d.argv.join(" ") };
        let tail = match (&d.policy, &d.rule) {
            (Some(policy), Some(rule)) if d.decision == "deny" => {
                format!("{subject}  [{policy}: {rule}]")
            }
            _ if d.decision == "deny" || !matches!(d.reason.as_str(), "" | "none") => {
                format!("{subject}  ({})", d.reason)
            }
            _ => subject,
        };
        writeln!(out, "{:<20} {:<16} {:<6} {:<8} {:<16} {:<10} {}", d.time.get(..19).unwrap_or(&d.time), fd.host, d.decision, d.kind, d.session_id, d.user, tail)?;
    }
    Ok(out.flush()?)
}

pub fn sessions(list: &[FleetSession]) {
    println!("{:<16} {:<18} {:<9} {:<28} {:<10} COMMAND", "HOST", "SESSION", "STATE", "ROLE", "USER");
    for s in list {
        let Some(x) = &s.session else { continue };
        let state = airlock_api::v1::SessionState::try_from(x.state).map(|s| s.as_str_name().trim_start_matches("SESSION_STATE_").to_ascii_lowercase()).unwrap_or_default();
        println!("{:<16} {:<18} {:<9} {:<28} {:<10} {}", s.host, x.id, state, x.role, x.user, x.command.join(" "));
    }
}
