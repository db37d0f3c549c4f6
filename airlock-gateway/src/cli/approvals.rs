//! `airlock-gateway approvals`: the fleet's approval requests, listed,
//! shown, approved or rejected, and waited on. `wait` says how it ended in
//! its exit code: 0 approved, 1 rejected, expired or cancelled, 2 still
//! pending when the timeout passed.

use airlock_api::gateway::v1::{DecideFleetApprovalRequest, FleetApproval, GetFleetApprovalRequest, ListFleetApprovalsRequest, WaitFleetApprovalRequest};
use anyhow::{anyhow, Result};
use clap::Subcommand;

use super::client::connect;
use super::commands::status;
use super::print::{ago, json_or, time};
use super::Conn;

/// `wait`'s exit code for a request still pending at the timeout.
pub const EXIT_STILL_PENDING: i32 = 2;
/// `wait`'s exit code for a request rejected, expired or cancelled.
pub const EXIT_NOT_APPROVED: i32 = 1;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Requests of every host, newest first.
    List {
        /// pending, approved, rejected, expired or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// At most this many (the newest; at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// One request, with every attempt to decide it through the gateway.
    Show {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Let the held command run: once (the exact command line), or with
    /// --for the rule's command in that session until the grant expires.
    Approve {
        id: String,
        /// How long the grant lasts: 90s, 30m, 2h (default: once).
        #[arg(long = "for")]
        for_: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Until the request's host reports it decided. Exit code: 0 approved;
    /// 1 rejected, expired or cancelled; 2 still pending at the timeout.
    Wait {
        id: String,
        /// Give up after this long: 90s, 30m, 2h (default: never).
        #[arg(long)]
        timeout: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs the command; its exit code.
pub async fn run(command: ApprovalsCommand) -> Result<i32> {
    match command {
        ApprovalsCommand::List { state, host, session, limit, conn } => {
            let ask = ListFleetApprovalsRequest {
                org: org(&conn),
                state: state.unwrap_or_default(),
                host: host.unwrap_or_default(),
                session_id: session.unwrap_or_default(),
                limit,
            };
            let list = connect(&conn).await?.list_approvals(ask).await.map_err(status)?.into_inner();
            json_or(conn.json, &list, || table(&list.approvals))?;
        }
        ApprovalsCommand::Show { id, conn } => {
            let a = connect(&conn).await?.get_approval(GetFleetApprovalRequest { org: org(&conn), id }).await.map_err(status)?.into_inner();
            json_or(conn.json, &a, || details(&a))?;
        }
        ApprovalsCommand::Approve { id, for_, reason, conn } => {
            let grant_seconds = for_.as_deref().map(|t| duration_flag("--for", t)).transpose()?.unwrap_or(0);
            decide(&conn, DecideFleetApprovalRequest { org: org(&conn), id, approve: true, reason, grant_seconds }).await?;
        }
        ApprovalsCommand::Reject { id, reason, conn } => {
            decide(&conn, DecideFleetApprovalRequest { org: org(&conn), id, approve: false, reason, grant_seconds: 0 }).await?;
        }
        ApprovalsCommand::Wait { id, timeout, conn } => {
            let timeout_seconds = timeout.as_deref().map(|t| duration_flag("--timeout", t)).transpose()?.unwrap_or(0);
            let a = connect(&conn).await?.wait_approval(WaitFleetApprovalRequest { org: org(&conn), id, timeout_seconds }).await.map_err(status)?.into_inner();
            json_or(conn.json, &a, || println!("{}", summary(&a)))?;
            return Ok(match state(&a) {
                "approved" => 0,
                "pending" => EXIT_STILL_PENDING,
                _ => EXIT_NOT_APPROVED,
            });
        }
    }
    Ok(0)
}

async fn decide(conn: &Conn, ask: DecideFleetApprovalRequest) -> Result<()> {
    let a = connect(conn).await?.decide_approval(ask).await.map_err(status)?.into_inner();
    json_or(conn.json, &a, || {
        let r = a.request.clone().unwrap_or_default();
        let verdict = a.audit.iter().rev().find(|t| t.outcome == "decided").map(|t| t.action.clone()).unwrap_or_default();
        println!("request {} ({}): {verdict} given at the gateway; delivery to host {}: {}", r.id, r.argv.join(" "), r.host, a.delivery);
        println!("`airlock-gateway approvals wait {}` returns once the host has applied it", r.id);
    })
}

/// A duration flag in seconds; the error names the flag.
fn duration_flag(flag: &str, text: &str) -> Result<u64> {
    airlock_api::duration::parse_duration(text).map(|d| d.as_secs()).map_err(|e| anyhow!("{flag}: {e}"))
}

fn org(conn: &Conn) -> String {
    conn.org.clone().unwrap_or_default()
}

fn state(a: &FleetApproval) -> &str {
    a.request.as_ref().map(|r| r.state.as_str()).unwrap_or("")
}

/// "30m", "2h", "90s": the shortest exact form.
fn span(seconds: i64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// One line: the request, its state, and who decided it.
fn summary(a: &FleetApproval) -> String {
    let r = a.request.clone().unwrap_or_default();
    let mut line = format!("request {} on {}: {}", r.id, r.host, r.state);
    if let Some(v) = r.verdict.as_ref().filter(|_| r.state != "pending") {
        if !v.decided_by.is_empty() {
            line.push_str(&format!(" by {}", v.decided_by));
        }
        if v.decided_unix_nanos > 0 {
            line.push_str(&format!(" at {}", time(v.decided_unix_nanos)));
        }
        match v.grant.as_str() {
            "for" => line.push_str(&format!(" (for {}, until {})", span(v.grant_seconds), time(v.grant_expires_unix_nanos))),
            "once" => line.push_str(" (once)"),
            _ => {}
        }
        if !v.reason.is_empty() {
            line.push_str(&format!(": {}", v.reason));
        }
    }
    if !a.delivery.is_empty() {
        line.push_str(&format!("; gateway verdict {}", a.delivery));
    }
    line
}

fn table(list: &[FleetApproval]) {
    println!("{:<21} {:<16} {:<18} {:<9} {:<9} {:<10} {:<12} COMMAND", "ID", "HOST", "SESSION", "STATE", "OPENED", "USER", "DELIVERY");
    for a in list {
        let Some(r) = &a.request else { continue };
        let delivery = if a.delivery.starts_with("failed") { "failed" } else if a.delivery.is_empty() { "-" } else { a.delivery.as_str() };
        println!(
            "{:<21} {:<16} {:<18} {:<9} {:<9} {:<10} {:<12} {}",
            r.id,
            r.host,
            r.session_id,
            r.state,
            ago(r.created_unix_nanos),
            r.user,
            delivery,
            r.argv.join(" ")
        );
    }
}

fn details(a: &FleetApproval) {
    let r = a.request.clone().unwrap_or_default();
    println!("{}", summary(a));
    println!("  org:       {}", a.org);
    println!("  command:   {}", r.argv.join(" "));
    println!("  session:   {} (user {}, uid {}, role {}, agent {})", r.session_id, r.user, r.uid, r.role, r.agent);
    println!("  cwd:       {}   executable: {}", r.cwd, r.executable);
    println!("  rule:      {}: {}", r.policy, r.rule);
    println!("  opened:    {}   expires: {}   blocked attempts: {}", time(r.created_unix_nanos), time(r.expires_unix_nanos), r.attempts);
    if !a.delivery.is_empty() {
        println!("  delivery:  {}", a.delivery);
    }
    if a.audit.is_empty() {
        println!("  no decision attempts through the gateway");
        return;
    }
    println!("  decision attempts through the gateway:");
    for t in &a.audit {
        let reason = if t.reason.is_empty() { String::new() } else { format!(" ({})", t.reason) };
        println!("    {}  {}: {}{reason} -> {}", time(t.at_unix_nanos), t.caller, t.action, t.outcome);
    }
}
