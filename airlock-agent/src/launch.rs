//! `airlock-agent launch`: makes this process the root of a governed session,
//! then becomes the agent command. Fails closed: without the daemon's yes,
//! the command never starts.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::protocol::{call, Request, Response};

pub fn launch(socket: &Path, role: Option<String>, command: Vec<String>) -> Result<std::convert::Infallible> {
    let Some(program) = command.first() else {
        bail!("nothing to launch: give the agent command after --");
    };
    let cwd = std::env::current_dir().context("read the current directory")?;
    let tty = nix::unistd::ttyname(std::io::stdin()).ok().map(|p| p.display().to_string());
    let path = std::env::var_os("PATH").map(|p| p.to_string_lossy().into_owned());
    let request = Request::Launch { role, command: command.clone(), cwd: cwd.display().to_string(), tty, path };
    let response = call(socket, &request).context("refusing to start the command without Airlock governing it")?;
    let Response::Launched { session_id, role } = response else {
        bail!("the daemon answered the launch with something else: {response:?}");
    };
    std::env::set_var("AIRLOCK_SESSION_ID", &session_id);
    std::env::set_var("AIRLOCK_ROLE", &role);
    tracing::debug!(session = %session_id, role = %role, "governed session started");

    let args: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()).with_context(|| format!("argument {a:?} holds a NUL byte")))
        .collect::<Result<_>>()?;
    let path = CString::new(Path::new(program).as_os_str().as_bytes()).context("the program name holds a NUL byte")?;
    // The process is tagged now: this exec, and everything it starts, is governed.
    let err = nix::unistd::execvp(&path, &args).unwrap_err();
    // The errno stays in the chain: it decides launch's exit status (126/127).
    Err(anyhow::Error::new(err).context(format!("cannot run {program}")))
}
