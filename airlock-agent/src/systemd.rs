//! The systemd service protocol (sd_notify): READY, STOPPING, STATUS, the
//! watchdog and the file descriptor store (FDSTORE, FDSTOREREMOVE, and the
//! descriptors handed back in LISTEN_FDS), through the sd-notify crate.
//! Outside systemd (no NOTIFY_SOCKET) nothing is sent and nothing is taken.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use sd_notify::NotifyState;

/// Whether a service manager listens (systemd sets NOTIFY_SOCKET for Type=notify units).
pub fn under_service_manager() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The descriptors the service manager passed (LISTEN_FDS, from fd 3 on)
/// with their names (LISTEN_FDNAMES), as owned descriptors marked
/// close-on-exec. Always clears LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, so
/// no child inherits them. Call before any thread starts (it edits the
/// environment). Descriptors meant for another process (LISTEN_PID is not
/// ours) are not taken; outside a service manager nothing is.
pub fn take_listen_fds() -> Vec<(String, OwnedFd)> {
    let passed = std::env::var_os("LISTEN_FDS").is_some();
    let taken = if !passed {
        Vec::new()
    } else if !under_service_manager() {
        tracing::warn!("LISTEN_FDS is set but no service manager listens (no NOTIFY_SOCKET): the descriptors are not taken");
        Vec::new()
    } else {
        match sd_notify::listen_fds_with_names() {
            // SAFETY: sd-notify hands out fds 3..3+LISTEN_FDS, which the
            // service manager passed to this process (LISTEN_PID checked) and
            // nothing else owns.
            Ok(fds) => fds.map(|(fd, name)| (name, unsafe { OwnedFd::from_raw_fd(fd) })).collect(),
            Err(e) => {
                tracing::error!("the descriptors systemd passed cannot be taken: {e}");
                Vec::new()
            }
        }
    };
    // Edition 2021: remove_var is safe; no other thread runs yet (see above).
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    taken
}

/// Stores `fd` under `name` in the service manager's file descriptor store.
/// FDPOLL=0: systemd otherwise polls stored descriptors and drops one that
/// reports an error, and a BPF map that is not a ring buffer always does.
pub fn fd_store_add(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name), NotifyState::Custom("FDPOLL=0")], &[fd])
}

/// Removes every descriptor stored under `name`.
pub fn fd_store_remove(name: &str) -> std::io::Result<()> {
    sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)])
}

/// Sends state changes to the service manager. A failure is logged, never
/// fatal: enforcement does not depend on systemd.
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(socket = ?std::env::var_os("NOTIFY_SOCKET"), "sd_notify failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

    /// One datagram and the descriptors it carried.
    fn receive(server: &UnixDatagram) -> (String, Vec<OwnedFd>) {
        let mut buf = [0u8; 512];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(server.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).unwrap();
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel installed these descriptors for us.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
    }

    /// The environment is the process's: every case that sets it runs in this one test.
    #[test]
    fn the_notify_protocol_as_systemd_reads_it() {
        let dir = std::env::temp_dir().join(format!("airlock-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

        // Outside a service manager nothing is sent and nothing is taken.
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!under_service_manager());
        std::env::set_var("LISTEN_PID", std::process::id().to_string());
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "airlock.set-1-2-3.meta");
        assert!(take_listen_fds().is_empty(), "descriptors taken without a service manager");
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            assert!(std::env::var_os(var).is_none(), "{var} left for children to inherit");
        }

        std::env::set_var("NOTIFY_SOCKET", &path);
        notify(&[NotifyState::Ready, NotifyState::Status("enforcing")]);
        assert_eq!(receive(&server).0, "READY=1\nSTATUS=enforcing\n");

        // Descriptors meant for another process are not taken, and the variables still go.
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "2");
        assert!(take_listen_fds().is_empty());
        assert!(std::env::var_os("LISTEN_FDS").is_none());

        // FDSTORE with the name, FDPOLL=0 and the descriptor itself.
        let (mine, _other_end) = std::os::unix::net::UnixStream::pair().unwrap();
        fd_store_add("airlock.set-1-2-3.link.airlock_fork", mine.as_fd()).unwrap();
        let (text, fds) = receive(&server);
        assert_eq!(text, "FDSTORE=1\nFDNAME=airlock.set-1-2-3.link.airlock_fork\nFDPOLL=0\n");
        assert_eq!(fds.len(), 1, "the descriptor did not travel with the message");
        fd_store_remove("airlock.set-1-2-3.link.airlock_fork").unwrap();
        let (text, fds) = receive(&server);
        assert_eq!(text, "FDSTOREREMOVE=1\nFDNAME=airlock.set-1-2-3.link.airlock_fork\n");
        assert!(fds.is_empty());

        std::env::remove_var("NOTIFY_SOCKET");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
