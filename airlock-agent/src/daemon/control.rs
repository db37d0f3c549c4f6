//! The control socket (`agent.sock`, mode 0666): `launch` and the few
//! requests any developer may make, one JSON request and one JSON response
//! per connection. Who asks is what the kernel says (SO_PEERCRED).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use airlock_common::abi::ProcTag;
use anyhow::{bail, Context, Result};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::agent::{lock, Agent, Peer};
use crate::protected::session_homes;
use crate::protocol::{Request, Response};
use crate::sessions::{format_session_id, new_session_id, SessionInfo, SessionState};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The launch socket: any user may govern their own processes; privileged
/// requests check the caller.
pub fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if UnixStream::connect(path).is_ok() {
        bail!("another Airlock daemon is already answering on {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("set the permissions of {}", path.display()))?;
    Ok(listener)
}

impl Agent {
    /// Serves the control socket until shutdown; one request per connection.
    pub fn control_loop(&self, listener: UnixListener) -> Result<()> {
        for stream in listener.incoming() {
            if self.shutdown.load(Ordering::SeqCst) {
                break;
            }
            match stream {
                Ok(stream) => {
                    if let Err(e) = self.serve(stream) {
                        tracing::warn!("control request: {e:#}");
                    }
                }
                Err(e) => tracing::warn!("accept: {e}"),
            }
        }
        Ok(())
    }

    fn serve(&self, stream: UnixStream) -> Result<()> {
        let creds = getsockopt(&stream, PeerCredentials).context("read SO_PEERCRED")?;
        let peer = Peer { pid: creds.pid() as u32, uid: creds.uid() };
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader.read_line(&mut line).context("read the request")?;
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => self.handle(&peer, request).unwrap_or_else(|e| Response::Error { message: format!("{e:#}") }),
            Err(e) => Response::Error { message: format!("malformed request: {e}") },
        };
        let mut out = serde_json::to_string(&response)?;
        out.push('\n');
        (&stream).write_all(out.as_bytes()).context("send the response")?;
        Ok(())
    }

    fn handle(&self, peer: &Peer, request: Request) -> Result<Response> {
        match request {
            Request::Launch { role, command, cwd, tty, path } => self.launch(peer, role, command, cwd, tty, path),
            Request::Status => Ok(Response::Status(Box::new(self.status_report(peer)?))),
            Request::Sessions => Ok(Response::Sessions { sessions: peer.visible(lock(&self.sessions).list()) }),
            Request::DefaultRole => Ok(Response::DefaultRole { role: self.default_role() }),
            Request::SetDefaultRole { role } => {
                require_root(peer, "set the default role")?;
                if !lock(&self.policy).has_role(&role) {
                    bail!("unknown role {role:?}; `airlock-agent policy show` lists the roles in force");
                }
                let path = self.default_role_file();
                std::fs::write(&path, format!("{role}\n")).with_context(|| format!("write {}", path.display()))?;
                Ok(Response::DefaultRole { role })
            }
            Request::Reload => {
                require_root(peer, "reload the policy")?;
                let (version, _) = self.reload_now()?;
                Ok(Response::Reloaded { version })
            }
            own => self.session_request(peer, own),
        }
    }

    /// Makes the caller the root of a new governed session: registered, its
    /// credential files protected, then tagged in the kernel. It is governed
    /// from the exec that follows.
    fn launch(&self, peer: &Peer, role: Option<String>, command: Vec<String>, cwd: String, tty: Option<String>, path: Option<String>) -> Result<Response> {
        if command.is_empty() {
            bail!("no command to launch");
        }
        let maps = self.kernel.maps();
        // A governed process may not start a second session to trade its role for another.
        if let Some(tag) = maps.tag_of(peer.pid) {
            bail!("process {} is already governed by session {}; a session cannot start another", peer.pid, format_session_id(tag.session_id));
        }
        let role = role.unwrap_or_else(|| self.default_role());
        let role_slot = {
            let store = lock(&self.policy);
            if !store.has_role(&role) {
                bail!("unknown role {role:?}; refusing to start an ungoverned session");
            }
            store.role_slot(&role).context("the role has no kernel slot")?
        };
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| peer.uid.to_string());
        if let Some(refusal) = self.launch_refusal(&user) {
            bail!("{refusal}");
        }
        let mut command = command;
        self.masking.mask_argv(&mut command);
        let id = new_session_id();
        let info = SessionInfo {
            id: format_session_id(id),
            role: role.clone(),
            role_slot,
            uid: peer.uid,
            user,
            root_pid: peer.pid,
            command,
            cwd,
            tty,
            started_at: crate::clock::now_rfc3339(),
            // Running once the daemon sees the agent's exec.
            state: SessionState::Ready,
            ended_at: None,
            revocation: None,
        };
        // The session's credential files are protected before its first instruction.
        {
            let mut protected = lock(&self.protected);
            for home in session_homes(peer.uid, peer.pid) {
                protected.add_home(&home);
            }
        }
        self.refresh_protected().context("could not protect the session's credential files; refusing to start it")?;
        // The programs its PATH finds are known by content before its first instruction.
        if let Some(path) = &path {
            self.learn_session_path(peer.pid, path, &info.cwd)?;
        }
        // The syscall tracepoints run before its first instruction, and stay
        // attached: the idle check cannot run until the tag is in place.
        let (on_demand, attached) = self.kernel.hold_on_demand().context("refusing to start a session that the syscall tracepoints would not govern")?;
        // Registered before tagging, so the first event already finds its session.
        lock(&self.sessions).insert(id, info.clone());
        maps.tag(peer.pid, &ProcTag { session_id: id, role_slot, flags: 0 })
            .context("could not tag the session's process; refusing to start it ungoverned")?;
        // Stored before the hold ends: an idle check cannot withdraw them first.
        super::fd_store::store_links(&self.fd_store, attached);
        drop(on_demand);
        tracing::info!(session = %info.id, role = %role, pid = peer.pid, uid = peer.uid, command = ?info.command, "session started");
        Ok(Response::Launched { session_id: info.id, role })
    }
}

fn require_root(peer: &Peer, what: &str) -> Result<()> {
    if peer.uid != 0 {
        bail!("only root may {what} (you are uid {})", peer.uid);
    }
    Ok(())
}
