//! Block messages: tells the governed process that was refused (or, when it
//! was killed, its parent in the same session) why, on its stderr, where an
//! AI agent reads the command's output. Best effort: a process that is gone or
//! whose stderr cannot be opened (a socket, a closed descriptor) gets nothing.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use airlock_api::v1::Decision;

use crate::approvals::Opened;

const INSTRUCTION: &str =
    "Stop. Do not retry this command, call the real binary, change PATH, use sudo, or try to bypass Airlock.";

/// The last line of every message: an agent without the MCP bridge learns it exists.
const MCP_LINE: &str = "airlock: mcp=explain_decision, check_command, request_approval, approval_status (airlock-agent mcp)\n";

/// The message for one denied exec.
pub fn block_message(record: &Decision) -> String {
    match record.reason.as_str() {
        "rate_limited" | "outside_time_window" => return limit_message(record),
        "security_block" => return security_message(record),
        _ => {}
    }
    let command = record.rule.clone().unwrap_or_else(|| record.argv.join(" "));
    let rule = record.policy.clone().unwrap_or_else(|| record.reason.clone());
    format!(
        "airlock: POLICY BLOCK\n\
         airlock: command={command}\n\
         airlock: rule={rule}\n\
         airlock: result=blocked; the real executable was not run.\n\
         airlock: ai_instruction={INSTRUCTION}\n\
         {MCP_LINE}"
    )
}

/// The message for an exec a rate limit or a closed time window refused: the
/// command is allowed, just not now.
fn limit_message(record: &Decision) -> String {
    let command = record.argv.join(" ");
    let limit = record.rule.clone().unwrap_or_default();
    let policy = record.policy.clone().unwrap_or_default();
    let (title, why, instruction) = if record.reason == "rate_limited" {
        (
            "RATE LIMITED",
            "this session has run commands this limit counts faster than it allows",
            "Stop. Do not retry in a loop or run it another way. Tell the user that the session reached its rate limit; it refills with time.",
        )
    } else {
        (
            "OUTSIDE TIME WINDOW",
            "this command may run only inside the time window the limit names",
            "Stop. Do not retry or run it another way. Tell the user that this command is allowed only inside its time window.",
        )
    };
    format!(
        "airlock: {title}\n\
         airlock: command={command}\n\
         airlock: limit={limit} [{policy}]\n\
         airlock: result=refused; {why}. The real executable was not run.\n\
         airlock: ai_instruction={instruction}\n\
         {MCP_LINE}"
    )
}

/// The message for an exec a security block refused: the session's activity
/// looked like an attack (a finding), so a person has to look first.
fn security_message(record: &Decision) -> String {
    let command = record.argv.join(" ");
    let block = if record.security_block.is_empty() { "(unknown)" } else { record.security_block.as_str() };
    format!(
        "airlock: SECURITY BLOCK\n\
         airlock: command={command}\n\
         airlock: block={block}\n\
         airlock: result=refused; a security block covers this session: its activity set off the anomaly detection. The real executable was not run.\n\
         airlock: ai_instruction=Stop all work. Do not retry, and do not try any other command or way. Tell the user that Airlock's security monitoring blocked this session ({block}) and that an administrator must review it.\n\
         {MCP_LINE}"
    )
}

/// The message for an exec an approval rule held.
pub fn approval_message(record: &Decision, opened: &Opened) -> String {
    let command = record.argv.join(" ");
    let rule = record.rule.clone().unwrap_or_default();
    match opened {
        Opened::New(request) | Opened::Reused(request) => {
            let id = &request.id;
            format!(
                "airlock: APPROVAL REQUIRED\n\
                 airlock: approval_request={id}\n\
                 airlock: command={command}\n\
                 airlock: rule={rule}\n\
                 airlock: result=held; the command did not run. A person must approve it (airlock-agent approvals approve {id}).\n\
                 airlock: ai_instruction=Do not run this command another way and do not change it. Tell the user that approval request {id} is waiting, wait for the decision (airlock-agent approvals wait {id} reports it), and once it is approved run exactly the same command again, unchanged. If it is rejected or expires, do not run it.\n\
                 {MCP_LINE}"
            )
        }
        Opened::Flood { pending } => format!(
            "airlock: APPROVAL REQUIRED\n\
             airlock: command={command}\n\
             airlock: rule={rule}\n\
             airlock: result=refused; this session already has {pending} approval requests waiting, so no new request was opened.\n\
             airlock: ai_instruction=Stop. Do not retry. Wait until the pending approval requests are decided.\n\
             {MCP_LINE}"
        ),
    }
}

/// Writes `message` to the stderr of the first of `pids` that is alive and in
/// `session`; returns the pid that got it.
pub fn tell(pids: &[u32], session_of: impl Fn(u32) -> Option<u64>, session: u64, message: &str) -> Option<u32> {
    for &pid in pids {
        if pid == 0 || session_of(pid) != Some(session) {
            continue;
        }
        let opened = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(format!("/proc/{pid}/fd/2"));
        if let Ok(mut stderr) = opened {
            if stderr.write_all(message.as_bytes()).is_ok() {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_ends_by_naming_the_mcp_tools() {
        let record = Decision { argv: vec!["terraform".into(), "apply".into()], rule: Some("terraform apply".into()), ..Default::default() };
        let request = airlock_api::v1::ApprovalRequest { id: "apr-00000000deadbeef".into(), ..Default::default() };
        let limited = Decision { reason: "rate_limited".into(), rule: Some("kubectl * 5/minute".into()), ..record.clone() };
        assert!(block_message(&limited).starts_with("airlock: RATE LIMITED\n"), "{}", block_message(&limited));
        let closed = Decision { reason: "outside_time_window".into(), ..record.clone() };
        assert!(block_message(&closed).starts_with("airlock: OUTSIDE TIME WINDOW\n"));
        let blocked = Decision { reason: "security_block".into(), security_block: "blk-00000000000000aa".into(), ..record.clone() };
        assert!(block_message(&blocked).contains("airlock: block=blk-00000000000000aa\n"), "{}", block_message(&blocked));
        let messages = [
            block_message(&blocked),
            block_message(&limited),
            block_message(&closed),
            block_message(&record),
            approval_message(&record, &Opened::New(request.clone())),
            approval_message(&record, &Opened::Reused(request)),
            approval_message(&record, &Opened::Flood { pending: 5 }),
        ];
        for m in messages {
            assert!(m.ends_with("\nairlock: mcp=explain_decision, check_command, request_approval, approval_status (airlock-agent mcp)\n"), "{m}");
            assert!(m.lines().all(|l| l.starts_with("airlock: ")), "{m}");
        }
    }

    #[test]
    fn a_message_reaches_a_process_stderr_and_only_in_its_session() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let in_session = |p: u32| (p == pid).then_some(7u64);
        assert_eq!(tell(&[pid], in_session, 8, "x\n"), None, "a process of another session was told");
        assert_eq!(tell(&[999_999_999, pid], in_session, 7, "airlock: POLICY BLOCK\n"), Some(pid));
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait for sleep");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "airlock: POLICY BLOCK\n");
    }
}
