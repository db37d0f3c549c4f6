//! The service manager's side of systemd's notify protocol, as far as the
//! daemon uses it, so a kernel test can play systemd: a NOTIFY_SOCKET
//! datagram socket that receives READY/STATUS and FDSTORE/FDSTOREREMOVE
//! messages from the main process only (SCM_CREDENTIALS, as NotifyAccess=main),
//! keeps the file descriptor store as systemd 252 does (descriptors by
//! SCM_RIGHTS, one open file stored once, polled unless FDPOLL=0 and dropped
//! on POLLERR/POLLHUP, at most FileDescriptorStoreMax= of the shipped unit),
//! and starts a daemon with the stored descriptors from fd 3 on, LISTEN_FDS,
//! LISTEN_FDNAMES and LISTEN_PID (written in the child, before exec, with its
//! own pid, as systemd does).

use std::ffi::{CString, OsStr};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

/// FileDescriptorStoreMax= of packaging/airlock-agent.service.
pub fn unit_fd_store_max() -> usize {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/airlock-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("read {}: {e}", unit.display()));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("FileDescriptorStoreMax="))
        .unwrap_or_else(|| panic!("{} sets no FileDescriptorStoreMax=", unit.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: FileDescriptorStoreMax= is not a number: {e}", unit.display()))
}

#[derive(Default)]
struct State {
    store: Vec<(String, OwnedFd)>,
    /// Every message accepted, in order.
    messages: Vec<String>,
    /// What was refused or dropped, and why.
    refused: Vec<String>,
}

pub struct ServiceManager {
    pub socket: PathBuf,
    max: usize,
    main_pid: Arc<AtomicU32>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServiceManager {
    /// Listens on `dir/notify.sock`, with the shipped unit's store limit.
    pub fn new(dir: &Path) -> ServiceManager {
        let socket = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&socket).unwrap_or_else(|e| panic!("bind {}: {e}", socket.display()));
        setsockopt(&sock, sockopt::PassCred, &true).expect("SO_PASSCRED");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let (main_pid, state, stop) = (Arc::new(AtomicU32::new(0)), Arc::new(Mutex::new(State::default())), Arc::new(AtomicBool::new(false)));
        let max = unit_fd_store_max();
        let thread = {
            let (main_pid, state, stop) = (main_pid.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((pid, text, fds)) = receive(&sock) {
                        handle(&mut state.lock().unwrap(), main_pid.load(Ordering::Relaxed), max, pid, text, fds);
                    }
                }
            })
        };
        ServiceManager { socket, max, main_pid, state, stop, thread: Some(thread) }
    }

    /// The names in the store now, in order.
    pub fn stored_names(&self) -> Vec<String> {
        self.state.lock().unwrap().store.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The kernel's ids of the stored objects (links and maps), by name.
    pub fn stored_ids(&self) -> Vec<(String, u32)> {
        let state = self.state.lock().unwrap();
        state.store.iter().map(|(n, fd)| (n.clone(), fdinfo_id(fd.as_raw_fd()))).collect()
    }

    pub fn messages(&self) -> Vec<String> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Puts a descriptor in the store as if the daemon had (to hand a restarted daemon something bogus).
    pub fn plant(&self, name: &str, fd: OwnedFd) {
        self.state.lock().unwrap().store.push((name.to_string(), fd));
    }

    /// A duplicate of a stored descriptor.
    pub fn dup_of(&self, name: &str) -> OwnedFd {
        let state = self.state.lock().unwrap();
        let (_, fd) = state.store.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} is not stored"));
        fd.try_clone().expect("dup a stored descriptor")
    }

    /// What systemd 252 does when the unit is stopped: the store is emptied.
    pub fn flush(&self) {
        self.state.lock().unwrap().store.clear();
    }

    /// Waits (bounded) until `pred` holds for the messages and the store.
    pub fn wait(&self, what: &str, pred: impl Fn(&[String], &[String]) -> bool) {
        let deadline = std::time::Instant::now() + super::seconds(30);
        loop {
            {
                let state = self.state.lock().unwrap();
                let names: Vec<String> = state.store.iter().map(|(n, _)| n.clone()).collect();
                if pred(&state.messages, &names) {
                    return;
                }
                if std::time::Instant::now() > deadline {
                    panic!("the service manager never saw {what}; messages: {:#?}\nstore: {names:#?}\nrefused: {:#?}", state.messages, state.refused);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `program args` as the unit's main process: NOTIFY_SOCKET, and the
    /// store's descriptors from fd 3 on with LISTEN_FDS, LISTEN_FDNAMES and
    /// LISTEN_PID, the last written in the child before exec.
    pub fn spawn(&self, program: &str, args: &[std::ffi::OsString], env: &[(&str, &str)], stderr: std::fs::File) -> Child {
        let state = self.state.lock().unwrap();
        let n = state.store.len();
        // Duplicated above the target range first, so placing fd 3+i never
        // overwrites a source still to be placed. CLOEXEC: only this child gets them.
        let high: Vec<RawFd> = state
            .store
            .iter()
            .map(|(_, fd)| {
                // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
                let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, (3 + n + 16) as libc::c_int) };
                assert!(dup >= 0, "dup a stored descriptor: {}", std::io::Error::last_os_error());
                dup
            })
            .collect();
        let names: Vec<String> = state.store.iter().map(|(n, _)| n.clone()).collect();
        drop(state);

        let cstr = |s: &OsStr| CString::new(s.as_bytes()).expect("no NUL in the command line");
        let path = cstr(OsStr::new(program));
        let argv: Vec<CString> = std::iter::once(path.clone()).chain(args.iter().map(|a| cstr(a))).collect();
        let overridden = ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"];
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| !overridden.iter().any(|o| OsStr::new(o) == k) && !env.iter().any(|(e, _)| OsStr::new(e) == k))
            .map(|(k, v)| cstr(OsStr::from_bytes(&[k.as_bytes(), b"=", v.as_bytes()].concat())))
            .collect();
        envp.extend(env.iter().map(|(k, v)| cstr(OsStr::new(&format!("{k}={v}")))));
        envp.push(cstr(OsStr::new(&format!("NOTIFY_SOCKET={}", self.socket.display()))));
        // LISTEN_PID's value is written by the child: room for any pid, NUL-terminated after the digits.
        let mut listen_pid = b"LISTEN_PID=".to_vec();
        listen_pid.resize(listen_pid.len() + 24, 0);
        if n > 0 {
            envp.push(cstr(OsStr::new(&format!("LISTEN_FDS={n}"))));
            envp.push(cstr(OsStr::new(&format!("LISTEN_FDNAMES={}", names.join(":")))));
        }
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        if n > 0 {
            envp_ptrs.push(listen_pid.as_ptr().cast());
        }
        envp_ptrs.push(std::ptr::null());

        let exec = Exec { path: path.as_ptr(), argv: argv_ptrs.as_ptr(), envp: envp_ptrs.as_ptr(), listen_pid: listen_pid.as_mut_ptr(), high: high.clone() };
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: only async-signal-safe calls (dup2, getpid, execve) and writes
        // to memory this child owns after fork; every pointer outlives spawn().
        unsafe {
            cmd.pre_exec(move || exec.run());
        }
        let child = cmd.spawn().expect("start the daemon as the unit's main process");
        self.main_pid.store(child.id(), Ordering::Relaxed);
        for fd in high {
            // SAFETY: closing the parent's duplicates made above.
            unsafe { libc::close(fd) };
        }
        drop((argv, envp, listen_pid));
        child
    }
}

/// What the child does between fork and exec.
struct Exec {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    listen_pid: *mut u8,
    high: Vec<RawFd>,
}

// SAFETY: the pointers are only used in the forked child, which has its own copy of the memory.
unsafe impl Send for Exec {}
unsafe impl Sync for Exec {}

impl Exec {
    fn run(&self) -> std::io::Result<()> {
        for (i, fd) in self.high.iter().enumerate() {
            // SAFETY: dup2 is async-signal-safe; the target loses CLOEXEC, as a passed descriptor must.
            if unsafe { libc::dup2(*fd, 3 + i as libc::c_int) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if !self.high.is_empty() {
            // SAFETY: getpid is async-signal-safe; the buffer has 24 bytes after "LISTEN_PID=".
            let mut pid = unsafe { libc::getpid() } as u32;
            let mut digits = [0u8; 10];
            let mut len = 0;
            loop {
                digits[len] = b'0' + (pid % 10) as u8;
                len += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let value = unsafe { self.listen_pid.add("LISTEN_PID=".len()) };
            for i in 0..len {
                // SAFETY: i < 10 < 24.
                unsafe { *value.add(i) = digits[len - 1 - i] };
            }
            // SAFETY: len < 24; the byte after the digits ends the string.
            unsafe { *value.add(len) = 0 };
        }
        // SAFETY: NUL-terminated strings and NULL-terminated arrays built before fork.
        unsafe { libc::execve(self.path, self.argv, self.envp) };
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for ServiceManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One datagram: the sender's pid, its text and the descriptors it carried.
fn receive(sock: &UnixDatagram) -> Option<(u32, String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(libc::ucred, [RawFd; 16]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    let (mut pid, mut fds) = (0, Vec::new());
    for c in msg.cmsgs().ok()? {
        match c {
            // SAFETY: the kernel installed these descriptors for us.
            ControlMessageOwned::ScmRights(raw) => fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })),
            ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid() as u32,
            _ => {}
        }
    }
    let n = msg.bytes;
    Some((pid, String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

/// systemd's handling of one notification (service_notify_message, 252).
fn handle(state: &mut State, main_pid: u32, max: usize, pid: u32, text: String, fds: Vec<OwnedFd>) {
    if pid == 0 || pid != main_pid {
        state.refused.push(format!("from pid {pid}, not the main process {main_pid} (NotifyAccess=main): {text:?}"));
        return;
    }
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
    if field("FDSTOREREMOVE=").as_deref() == Some("1") {
        match field("FDNAME=") {
            Some(name) => state.store.retain(|(n, _)| *n != name),
            None => state.refused.push(format!("FDSTOREREMOVE=1 without FDNAME=: {text:?}")),
        }
    }
    if field("FDSTORE=").as_deref() == Some("1") {
        let name = field("FDNAME=").unwrap_or_else(|| "stored".to_string());
        let poll = field("FDPOLL=").as_deref() != Some("0");
        for fd in fds {
            if state.store.iter().any(|(_, held)| same_file(held.as_raw_fd(), fd.as_raw_fd())) {
                continue;
            }
            if poll && poll_error(fd.as_raw_fd()) {
                // systemd watches stored descriptors and drops one at POLLERR/POLLHUP.
                state.refused.push(format!("{name}: dropped, it reports POLLERR/POLLHUP and FDPOLL=0 was not given"));
                continue;
            }
            if state.store.len() >= max {
                state.refused.push(format!("{name}: the store is full (FileDescriptorStoreMax={max})"));
                continue;
            }
            state.store.push((name.clone(), fd));
        }
    } else if !fds.is_empty() {
        state.refused.push(format!("descriptors without FDSTORE=1 closed: {text:?}"));
    }
    state.messages.push(text);
}

/// systemd's same_fd(): the same open file description (kcmp KCMP_FILE).
fn same_file(a: RawFd, b: RawFd) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: plain syscall on our own descriptors.
    let pid = unsafe { libc::getpid() } as libc::c_long;
    unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a as libc::c_long, b as libc::c_long) == 0 }
}

fn poll_error(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: one pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// The link_id or map_id a descriptor's fdinfo shows (0 for anything else).
fn fdinfo_id(fd: RawFd) -> u32 {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("link_id:").or_else(|| l.strip_prefix("map_id:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
