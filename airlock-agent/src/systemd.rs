//! The systemd service protocol (sd_notify): READY, STOPPING, STATUS and the
//! watchdog, through the sd-notify crate. Outside systemd (no NOTIFY_SOCKET)
//! nothing is sent.

use sd_notify::NotifyState;

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
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    #[test]
    fn notify_sends_one_datagram_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("airlock-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // No other test in this binary reads NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify(&[NotifyState::Ready, NotifyState::Status("enforcing")]);
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=enforcing\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
