//! `airlock-agent approvals`: the operator's side of approval requests, a
//! client of the daemon's API. Root and the `airlock` group; a caller inside
//! a governed session is refused by the daemon.

use std::time::Duration;

use airlock_api::client::status_error;
use airlock_api::duration::format_duration;
use airlock_api::v1 as pb;
use anyhow::Result;

use clap::Subcommand;

use crate::operator::{print_list, short_time, with_client, ApiConn, ApiTarget};

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// From inside a governed session: ask for approval of a command before running it.
    /// Prints the request's id; once it is approved, run exactly the same command.
    Request {
        /// Why the command is needed, for the approver.
        #[arg(long, default_value = "")]
        justification: String,
        /// The daemon's launch socket.
        #[arg(long, default_value = crate::operator::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
        #[arg(long)]
        json: bool,
        /// The command, program first (after `--`).
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Requests, newest first.
    List {
        /// pending, approved, rejected, expired or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    /// Let the command run: once (the exact command, one run), or with --for, every
    /// command of its rule in that session for a while.
    Approve {
        id: String,
        /// e.g. 30m, 2h.
        #[arg(long = "for", value_name = "DURATION", value_parser = airlock_api::duration::parse_duration)]
        grant_for: Option<std::time::Duration>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    /// Wait for the decision: exit 0 approved, 1 rejected, expired or cancelled, 2 still pending at --timeout.
    Wait {
        id: String,
        /// e.g. 90s, 10m (default: until decided or expired).
        #[arg(long, value_parser = airlock_api::duration::parse_duration)]
        timeout: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
}

pub fn run(command: ApprovalsCommand) -> Result<i32> {
    match command {
        ApprovalsCommand::Request { justification, socket, json, argv } => request(&socket, argv, justification, json),
        ApprovalsCommand::List { state, session, json, conn } => list(&conn.target(), state, session, json),
        ApprovalsCommand::Show { id, json, conn } => show(&conn.target(), id, json),
        ApprovalsCommand::Approve { id, grant_for, reason, json, conn } => decide(&conn.target(), DecideArgs { id, approve: true, grant_for, reason, json }),
        ApprovalsCommand::Reject { id, reason, json, conn } => decide(&conn.target(), DecideArgs { id, approve: false, grant_for: None, reason, json }),
        ApprovalsCommand::Wait { id, timeout, json, conn } => wait(&conn.target(), id, timeout, json),
    }
}

/// `wait`'s exit status while the request is still pending at the timeout.
pub const STILL_PENDING: i32 = 2;

pub fn list(api: &ApiTarget, state: Option<String>, session: Option<String>, json: bool) -> Result<i32> {
    let list = with_client(api, async |mut c| {
        let ask = pb::ListApprovalsRequest { state: state.unwrap_or_default(), session_id: session.unwrap_or_default(), limit: 1000 };
        Ok(c.list_approvals(ask).await.map_err(status_error)?.into_inner().requests)
    })?;
    print_list(&list, json, "no approval requests", &["ID", "STATE", "CREATED", "SESSION", "USER", "RULE", "COMMAND"], |r| {
        let created = crate::clock::rfc3339_from_unix_nanos(r.created_unix_nanos.into());
        vec![r.id.clone(), r.state.clone(), short_time(&created), r.session_id.clone(), r.user.clone(), r.rule.clone(), r.argv.join(" ")]
    })
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

/// A governed process's own request, over the launch socket (it has no API access).
fn request(socket: &std::path::Path, argv: Vec<String>, justification: String, json: bool) -> Result<i32> {
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    let path = std::env::var("PATH").unwrap_or_default();
    let ask = crate::protocol::Request::RequestApproval { argv, cwd, path, justification };
    let crate::protocol::Response::Approval(r) = crate::protocol::call(socket, &ask)? else { anyhow::bail!("unexpected answer from the daemon") };
    print_request(&r, json)?;
    if !json {
        println!("once it is approved, run exactly the same command again, unchanged");
    }
    Ok(0)
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
    if !r.justification.is_empty() {
        println!("  why:      {}", r.justification);
    }
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
