//! What a governed process may ask the daemon about its own session, over
//! the launch socket: the session is the kernel's tag of the calling process
//! (SO_PEERCRED), never something the caller names, so a process learns
//! about its own session and no other. Nothing here approves, lifts,
//! reloads or revokes.

use anyhow::{bail, Result};

use super::agent::{Agent, Peer};
use crate::protocol::{Request, Response};

impl Agent {
    pub(super) fn session_request(&self, peer: &Peer, request: Request) -> Result<Response> {
        let Some(_tag) = self.kernel.maps().tag_of(peer.pid) else {
            bail!("process {} is not in a governed session: these questions are about the caller's own session", peer.pid);
        };
        match request {
            _ => bail!("not answered yet"),
        }
    }
}
