//! The gateway binary and its CLI, as an operator uses them, with no agent
//! and no root: start on SQLite, orgs, tokens, policy versions, bad input,
//! and a clean stop. (The fleet with real agents is airlock-agent's
//! `kernel_gateway` suite.)

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::{Gateway, Scratch, GATEWAY};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

#[test]
fn an_operator_manages_orgs_tokens_and_policy_versions() {
    let scratch = Scratch::new("versions");
    let mut gw = Gateway::start(&scratch.0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(gw.data.join("admin.token")).expect("admin.token").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin token is readable by others");

    gw.ok(&["org", "create", "acme"]);
    assert!(gw.err(&["org", "create", "acme"]).contains("acme"));
    assert!(gw.err(&["org", "create", "Not An Org"]).contains("lowercase"));
    let orgs: serde_json::Value = serde_json::from_str(&gw.ok(&["org", "list", "--json"])).expect("JSON");
    let names: Vec<&str> = orgs["orgs"].as_array().expect("orgs").iter().filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(names, ["acme", "default"]);
    assert!(gw.ok(&["token", "create", "--role", "approver", "--org", "acme"]).trim().starts_with("alk_api_"));
    assert!(gw.err(&["token", "create", "--role", "root"]).contains("unknown role"));
    assert!(gw.err(&["token", "create", "--join", "--ttl", "soon"]).contains("--ttl"));
    assert!(gw.err(&["hosts", "--org", "nowhere"]).contains("org \"nowhere\" not found"));

    let policies = policies_dir();
    let first: serde_json::Value = serde_json::from_str(&gw.ok(&["policy", "push", policies.to_str().unwrap(), "--comment", "shipped", "--json"])).expect("JSON");
    assert_eq!(first["version"], 1);
    // The content hash is the version string `airlock-agent policy check` prints for the same directory.
    let loaded = airlock_policy_version(&policies);
    assert_eq!(first["content_hash"].as_str(), Some(loaded.as_str()));

    // An invalid set: refused with the file and field, and the history does not move.
    let bad = scratch.0.join("bad");
    std::fs::create_dir_all(bad.join("policies")).unwrap();
    std::fs::create_dir_all(bad.join("roles")).unwrap();
    std::fs::write(bad.join("policies/p.json"), "{ \"id\": \"p\", \"name\": \"P\", \"egress\": { \"deny\": [\"10.0.0.0/33\"] } }").unwrap();
    std::fs::write(bad.join("roles/r.json"), "{ \"id\": \"r\", \"name\": \"R\", \"policies\": [\"p\"] }").unwrap();
    let err = gw.err(&["policy", "push", bad.to_str().unwrap()]);
    assert!(err.contains("p.json") && err.contains("egress.deny"), "{err}");
    let rollback: serde_json::Value = serde_json::from_str(&gw.ok(&["policy", "rollback", "1", "--json"])).expect("JSON");
    assert_eq!((rollback["version"].as_u64(), rollback["rollback_of"].as_u64()), (Some(2), Some(1)));
    assert!(gw.err(&["policy", "rollback", "9"]).contains("no policy version 9"));
    let history = gw.ok(&["policy", "history"]);
    assert!(history.lines().count() == 3 && history.contains("shipped"), "{history}");

    // A clean stop, promptly.
    nix_term(&gw.child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(status)) = gw.child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn bad_settings_are_refused_by_name() {
    let scratch = Scratch::new("settings");
    let config = scratch.0.join("gateway.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\ndatabse_url = \"postgresql://x\"\n").unwrap();
    let out = Command::new(GATEWAY).args(["run", "--config"]).arg(&config).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("gateway.toml") && err.contains("databse_url"), "{err}");
    let out = Command::new(GATEWAY).args(["run", "--data-dir"]).arg(scratch.0.join("d")).args(["--database-url", "mysql://x/y", "--listen", "127.0.0.1:0"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("mysql"), "{err}");
    let out = Command::new(GATEWAY).args(["hosts", "--server", "http://127.0.0.1:1", "--token", "alk_api_x"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("TLS only"), "{err}");
}

fn airlock_policy_version(dir: &Path) -> String {
    airlock_policy::load_dir(dir).expect("the shipped policies load").version()
}

fn nix_term(child: &Child) {
    // SAFETY: a signal to the child this test started, by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Under systemd (`Type=notify`, the packaged unit) the gateway says READY=1
/// only once it serves: the URL file is written and the CLI gets an answer as
/// soon as READY arrives; SIGTERM is announced with STOPPING=1.
#[test]
fn tells_the_service_manager_when_it_is_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let scratch = Scratch::new("notify");
    let socket_path = scratch.0.join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    // A generous bound for a slow CI machine, not a measurement.
    manager.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let data = scratch.0.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = KillOnDrop(Command::new(GATEWAY)
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the gateway"));
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).expect("no READY=1 from the gateway");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains(&format!("STATUS=serving on https://127.0.0.1:{port}")), "{ready:?}");
    // READY means serving: nothing to wait for.
    assert!(data.join("url").exists() && data.join("admin.token").exists() && data.join("ca.pem").exists());
    let out = Command::new(GATEWAY).args(["hosts", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "the CLI right after READY: {}", String::from_utf8_lossy(&out.stderr));

    nix_term(&child.0);
    let n = manager.recv(&mut buf).expect("no STOPPING=1 from the gateway");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1\n");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A gateway this test started, killed if an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
