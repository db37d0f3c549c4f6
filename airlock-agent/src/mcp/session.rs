//! A governed process's questions about its own session, over the launch
//! socket. The daemon finds the session from the caller's pid (SO_PEERCRED):
//! nothing here names a session, so a process can only ever learn about its
//! own. These calls block; the MCP server runs them on tokio's blocking pool.

use std::path::Path;

use anyhow::{bail, Context, Result};

use airlock_api::v1 as pb;

use super::render;
use crate::protocol::{call, CommandCheck, Explanation, Request, Response, SessionSelf};

/// `airlock-agent check`'s exit status for each verdict, and for a check
/// that could not be made (no daemon, not governed): a hook can tell "do not
/// run it" from "could not ask".
pub const CHECK_ALLOWED: i32 = 0;
pub const CHECK_BLOCKED: i32 = 1;
pub const CHECK_NEEDS_APPROVAL: i32 = 2;
pub const CHECK_FAILED: i32 = 3;

pub fn session_self(socket: &Path) -> Result<SessionSelf> {
    match call(socket, &Request::SessionSelf)? {
        Response::SessionSelf(s) => Ok(*s),
        other => unexpected("the session", other),
    }
}

pub fn explain(socket: &Path, decision_id: Option<u64>) -> Result<Explanation> {
    match call(socket, &Request::ExplainDecision { decision_id })? {
        Response::Explained(e) => Ok(*e),
        other => unexpected("the explanation", other),
    }
}

pub fn effective_policy(socket: &Path) -> Result<pb::EffectivePolicy> {
    match call(socket, &Request::EffectivePolicySelf)? {
        Response::EffectivePolicy(p) => Ok(*p),
        other => unexpected("the effective policy", other),
    }
}

/// Judges `argv` as this process would run it: the daemon looks the program
/// up in our PATH from our working directory, as our shell would.
pub fn check(socket: &Path, argv: Vec<String>) -> Result<CommandCheck> {
    let (cwd, path) = caller_context()?;
    match call(socket, &Request::CheckCommand { argv, cwd, path })? {
        Response::Checked(c) => Ok(*c),
        other => unexpected("the check", other),
    }
}

pub fn request_approval(socket: &Path, argv: Vec<String>, justification: String) -> Result<pb::ApprovalRequest> {
    let (cwd, path) = caller_context()?;
    match call(socket, &Request::RequestApproval { argv, cwd, path, justification })? {
        Response::Approval(r) => Ok(*r),
        other => unexpected("the approval request", other),
    }
}

pub fn approval_status(socket: &Path, id: String) -> Result<pb::ApprovalRequest> {
    match call(socket, &Request::ApprovalStatus { id })? {
        Response::Approval(r) => Ok(*r),
        other => unexpected("the approval request", other),
    }
}

fn caller_context() -> Result<(String, String)> {
    let cwd = std::env::current_dir().context("read the current directory")?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    Ok((cwd.display().to_string(), path.to_string_lossy().into_owned()))
}

fn unexpected<T>(what: &str, response: Response) -> Result<T> {
    bail!("the daemon answered the request for {what} with something else: {response:?}")
}

/// `airlock-agent check -- ARGV...`: prints the verdict, returns the exit status.
pub fn check_cli(socket: &Path, argv: Vec<String>) -> i32 {
    if argv.first().is_none_or(|p| p.is_empty()) {
        eprintln!("airlock-agent check: give the command after --, program first");
        return CHECK_FAILED;
    }
    match check(socket, argv.clone()) {
        Ok(c) => {
            println!("{}", render::check_text(&argv, &c));
            match c.verdict.as_str() {
                "allowed" => CHECK_ALLOWED,
                "blocked" => CHECK_BLOCKED,
                "needs_approval" => CHECK_NEEDS_APPROVAL,
                other => {
                    eprintln!("airlock-agent check: the daemon's verdict {other:?} is not one this command knows");
                    CHECK_FAILED
                }
            }
        }
        Err(e) => {
            eprintln!("airlock-agent check: could not check the command: {}", render::unavailable(&e));
            CHECK_FAILED
        }
    }
}
