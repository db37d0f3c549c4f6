//! Synthetic decisions shaped like a fleet's: exec and connect kinds, about
//! 5% denies, sessions that live an hour on one host, a few hundred users and
//! five roles. The fill and the simulated agents make them the same way, and
//! the query benchmark derives its filter values from the same constants.

use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, Destination, ExecDetail};

use crate::common::Rng;

/// Hosts in the filled store.
pub const FILL_HOSTS: u64 = 100;
pub const USERS: u64 = 300;
/// A session lives this long on its host; a few run side by side.
pub const SESSION_NS: i64 = 3_600_000_000_000;
pub const SESSIONS_AT_ONCE: u64 = 4;
/// (role, share in thousandths)
pub const ROLES: &[(&str, u64)] = &[("developer", 500), ("ci", 250), ("sre", 100), ("data-eng", 100), ("ops-admin", 50)];

const TOOLS: &[&[&str]] = &[
    &["git", "status"],
    &["git", "diff", "--stat", "HEAD~1"],
    &["cargo", "build", "--release"],
    &["ls", "-la", "src"],
    &["grep", "-rn", "TODO", "."],
    &["python3", "-m", "pytest", "-q", "tests/"],
    &["npm", "run", "lint"],
    &["kubectl", "get", "pods", "-n", "staging"],
    &["terraform", "plan", "-out", "plan.tfplan"],
    &["cat", "README.md"],
];
const DENIED: &[&[&str]] = &[&["terraform", "apply", "-auto-approve"], &["kubectl", "delete", "deployment", "api"], &["aws", "iam", "create-role", "--role-name", "admin"]];
/// The text search's needle: a denied command, about 1% of decisions.
pub const TEXT_NEEDLE: &str = "kubectl delete";

pub fn host_name(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:04}")
}

pub fn user_name(index: u64) -> String {
    format!("user{index:03}")
}

/// The session running on `host` in time slot `slot` (hours since the fill's start), number `k` of those side by side.
pub fn session_id(host: u64, slot: i64, k: u64) -> String {
    format!("s-{host:04}-{slot:05}-{k}")
}

pub fn role_of(user: u64) -> &'static str {
    // A user keeps a role; the shares hold over the user population.
    let mut point = (user * 7919) % 1000;
    for (role, share) in ROLES {
        if point < *share {
            return role;
        }
        point -= share;
    }
    ROLES[0].0
}

/// One decision of `host` at `t_ns`; `t0_ns` anchors the session slots.
pub fn decision(rng: &mut Rng, host: u64, host_label: &str, t_ns: i64, t0_ns: i64) -> Decision {
    let slot = (t_ns - t0_ns).max(0) / SESSION_NS;
    let k = rng.below(SESSIONS_AT_ONCE);
    // The users of a host: a handful, the same across its sessions.
    let user = (host * 3 + k) % USERS;
    let mut d = Decision {
        time_unix_nanos: t_ns,
        host: host_label.to_string(),
        session_id: session_id(host, slot, k),
        role: role_of(user).into(),
        agent: "claude".into(),
        uid: 1000 + user as u32,
        user: user_name(user),
        pid: 10_000 + rng.below(50_000) as u32,
        ppid: 9_000,
        backend: "lsm".into(),
        policy_generation: 1,
        cwd: format!("/home/{}/src/project-{}", user_name(user), slot % 37),
        ..Default::default()
    };
    let roll = rng.below(1_000);
    if roll < 680 {
        let argv = TOOLS[rng.below(TOOLS.len() as u64) as usize];
        exec(&mut d, argv, false);
    } else if roll < 720 {
        let argv = DENIED[rng.below(DENIED.len() as u64) as usize];
        exec(&mut d, argv, true);
    } else {
        let deny = roll >= 990;
        d.kind = "connect".into();
        d.decision = if deny { "deny" } else { "allow" }.into();
        d.reason = if deny { "rule" } else { "none" }.into();
        let address = if deny { format!("169.254.{}.{}", rng.below(256), rng.below(256)) } else { format!("140.82.{}.{}", rng.below(256), rng.below(256)) };
        d.detail = Some(Detail::Destination(Destination { address, port: 443, protocol: "tcp".into() }));
        d.argv = vec!["git".into(), "fetch".into(), "origin".into()];
        d.comm = "git".into();
        d.executable = "/usr/bin/git".into();
        if deny {
            d.policy = Some("cloud-metadata-block".into());
            d.rule = Some("169.254.0.0/16".into());
        }
    }
    d
}

fn exec(d: &mut Decision, argv: &[&str], deny: bool) {
    d.kind = "exec".into();
    d.decision = if deny { "deny" } else { "allow" }.into();
    d.reason = if deny { "rule" } else { "none" }.into();
    d.argv = argv.iter().map(|s| s.to_string()).collect();
    d.comm = argv[0].into();
    d.executable = format!("/usr/bin/{}", argv[0]);
    d.detail = Some(Detail::Exec(ExecDetail { filename: d.executable.clone(), stage: "new_image".into(), ..Default::default() }));
    if deny {
        d.policy = Some("infra-mutation-block".into());
        d.rule = Some(argv[..2].join(" "));
    }
}
