//! Block messages: tells the governed process that was refused (or, when it
//! was killed, its parent in the same session) why, on its stderr, where an
//! AI agent reads the command's output. Best effort: a process that is gone or
//! whose stderr cannot be opened (a socket, a closed descriptor) gets nothing.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use airlock_api::v1::Decision;

const INSTRUCTION: &str =
    "Stop. Do not retry this command, call the real binary, change PATH, use sudo, or try to bypass Airlock.";

/// The message for one denied exec.
pub fn block_message(record: &Decision) -> String {
    let command = record.rule.clone().unwrap_or_else(|| record.argv.join(" "));
    let rule = record.policy.clone().unwrap_or_else(|| record.reason.clone());
    format!(
        "airlock: POLICY BLOCK\n\
         airlock: command={command}\n\
         airlock: rule={rule}\n\
         airlock: result=blocked; the real executable was not run.\n\
         airlock: ai_instruction={INSTRUCTION}\n"
    )
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
