//! `airlock-agent approvals`: the operator's side of approval requests, a
//! client of the daemon's API. Root and the `airlock` group; a caller inside
//! a governed session is refused by the daemon.

use std::time::Duration;

use airlock_api::client::status_error;
use airlock_api::duration::format_duration;
use airlock_api::v1 as pb;
use anyhow::Result;

use crate::operator::{print_table, short_time, with_client, ApiTarget};

/// `wait`'s exit status while the request is still pending at the timeout.
pub const STILL_PENDING: i32 = 2;

pub fn list(api: &ApiTarget, state: Option<String>, session: Option<String>, json: bool) -> Result<i32> {
    let list = with_client(api, async |mut c| {
        let ask = pb::ListApprovalsRequest { state: state.unwrap_or_default(), session_id: session.unwrap_or_default(), limit: 1000 };
        Ok(c.list_approvals(ask).await.map_err(status_error)?.into_inner().requests)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if list.is_empty() {
        println!("no approval requests");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let created = crate::clock::rfc3339_from_unix_nanos(r.created_unix_nanos.into());
            vec![r.id.clone(), r.state.clone(), short_time(&created), r.session_id.clone(), r.user.clone(), r.rule.clone(), r.argv.join(" ")]
        })
        .collect();
    print_table(&["ID", "STATE", "CREATED", "SESSION", "USER", "RULE", "COMMAND"], &rows, &[]);
    Ok(0)
}

pub fn show(api: &ApiTarget, id: String, json: bool) -> Result<i32> {
    let r = with_client(api, async |mut c| Ok(c.get_approval(pb::GetApprovalRequest { id }).await.map_err(status_error)?.into_inner()))?;
    print_request(&r, json)?;
    Ok(0)
}

pub struct DecideArgs {
    pub id: String,
    pub approve: bool,
    pub grant_for: Option<Duration>,
    pub reason: Option<String>,
    pub json: bool,
}

pub fn decide(api: &ApiTarget, a: DecideArgs) -> Result<i32> {
    let ask = pb::DecideApprovalRequest {
        id: a.id,
        approve: a.approve,
        reason: a.reason.unwrap_or_default(),
        grant_seconds: a.grant_for.map(|d| d.as_secs().max(1)).unwrap_or(0),
    };
    let r = with_client(api, async |mut c| Ok(c.decide_approval(ask).await.map_err(status_error)?.into_inner()))?;
    print_request(&r, a.json)?;
    Ok(0)
}

/// Exit status: 0 approved, 1 rejected, expired or cancelled, 2 still pending at the timeout.
pub fn wait(api: &ApiTarget, id: String, timeout: Option<Duration>, json: bool) -> Result<i32> {
    let ask = pb::WaitApprovalRequest { id, timeout_seconds: timeout.map(|t| t.as_secs().max(1)).unwrap_or(0) };
    let r = with_client(api, async |mut c| Ok(c.wait_approval(ask).await.map_err(status_error)?.into_inner()))?;
    print_request(&r, json)?;
    Ok(match r.state.as_str() {
        crate::approvals::APPROVED => 0,
        crate::approvals::PENDING => STILL_PENDING,
        _ => 1,
    })
}

fn print_request(r: &pb::ApprovalRequest, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let time = |ns: i64| crate::clock::rfc3339_from_unix_nanos(ns.into());
    println!("approval request {}: {}", r.id, r.state);
    println!("  command:  {}", r.argv.join(" "));
    println!("  rule:     {} [{}]", r.rule, r.policy);
    println!("  session:  {} (role {}, user {} uid {}, agent {})", r.session_id, r.role, r.user, r.uid, r.agent);
    println!("  host:     {}", r.host);
    println!("  cwd:      {}", r.cwd);
    println!("  created:  {}; expires {}", time(r.created_unix_nanos), time(r.expires_unix_nanos));
    println!("  attempts: {}", r.attempts);
    if let Some(v) = &r.verdict {
        println!("  decided:  {} by {}{}", time(v.decided_unix_nanos), v.decided_by, if v.reason.is_empty() { String::new() } else { format!(": {}", v.reason) });
        match v.grant.as_str() {
            "once" => println!("  grant:    once: this exact command, one run, until {}", time(v.grant_expires_unix_nanos)),
            "for" => println!(
                "  grant:    for {}: every `{}` command in the session until {}",
                format_duration(Duration::from_secs(v.grant_seconds.max(0) as u64)),
                r.rule,
                time(v.grant_expires_unix_nanos)
            ),
            _ => {}
        }
    }
    Ok(())
}
