//! The systemd service protocol (sd_notify): READY, STOPPING, STATUS and the
//! watchdog, written as one datagram to $NOTIFY_SOCKET. Outside systemd (no
//! NOTIFY_SOCKET) every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service manager.
/// Failure is logged, never fatal: enforcement does not depend on systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.first() {
        // A leading '@' names a socket in the abstract namespace.
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => SocketAddr::from_pathname(&path),
    };
    let result = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = result {
        tracing::warn!(socket = ?path, "sd_notify failed: {e}");
    }
}

/// The watchdog interval systemd expects pings within (WatchdogSec=), if it
/// is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_one_datagram_to_the_socket() {
        let dir = std::env::temp_dir().join(format!("airlock-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // SAFETY (of the test): no other test in this binary reads NOTIFY_SOCKET concurrently.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1\nSTATUS=enforcing");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=enforcing");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
