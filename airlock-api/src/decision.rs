//! What every holder of a [`Decision`] agrees on: the names of its kinds,
//! which filter class each kind falls in, the text a search looks in, and
//! whether a decision passes a [`DecisionFilter`]. The decision store's SQL
//! is the twin of [`matches`]; its tests check that both agree.

use crate::v1::{decision::Detail, Decision, DecisionFilter, DecisionKind, Verdict};

pub const EXEC: &str = "exec";
pub const CONNECT: &str = "connect";
pub const SENDMSG: &str = "sendmsg";
pub const UNIX_CONNECT: &str = "unix_connect";
pub const UNIX_SENDMSG: &str = "unix_sendmsg";
pub const TAMPER: &str = "tamper";
pub const FILE_OPEN: &str = "file_open";
pub const TAG_FAILURE: &str = "tag_failure";
pub const REVOKE: &str = "revoke";
pub const EVENTS_LOST: &str = "events_lost";
/// A raw (SOCK_RAW) or packet (AF_PACKET) socket a governed process tried to create.
pub const RAW_SOCKET: &str = "raw_socket";
/// The agent's spool to the gateway was full: decisions were counted, not shipped.
pub const SHIPPING_LOST: &str = "shipping_lost";
/// A step of an approval request (opened, decided, expired, cancelled, refused).
pub const APPROVAL: &str = "approval";

pub const ALLOW: &str = "allow";
pub const DENY: &str = "deny";

/// The kinds `DECISION_KIND_CONNECT` selects: traffic to an address.
pub const CONNECT_KINDS: [&str; 2] = [CONNECT, SENDMSG];

/// The filter class of a kind.
pub fn kind_class(kind: &str) -> DecisionKind {
    match kind {
        EXEC => DecisionKind::Exec,
        k if CONNECT_KINDS.contains(&k) => DecisionKind::Connect,
        _ => DecisionKind::Other,
    }
}

/// What a text filter is searched in: what was touched (the destination, the
/// Unix socket, the file) and the command line; lowercased (ASCII), as the
/// search is case-insensitive.
pub fn subject_of(d: &Decision) -> String {
    use std::fmt::Write;
    // Built in one buffer: the store computes it for every decision it keeps.
    let mut s = String::with_capacity(128);
    let has_target = match &d.detail {
        Some(Detail::Destination(dest)) => write!(s, "{}:{} {}", dest.address, dest.port, dest.protocol).is_ok(),
        Some(Detail::UnixSocket(u)) => {
            s.push_str(&u.path);
            true
        }
        Some(Detail::Guard(g)) => g.file.as_deref().map(|f| s.push_str(f)).is_some(),
        Some(Detail::RawSocket(r)) => write!(s, "{} {} {}", r.family, r.socket_type, r.protocol).is_ok(),
        _ => false,
    };
    let command_is_empty = match d.argv.as_slice() {
        [] => d.executable.is_empty(),
        [only] => only.is_empty(),
        _ => false,
    };
    if has_target && !command_is_empty {
        s.push(' ');
    }
    if d.argv.is_empty() {
        s.push_str(&d.executable);
    } else {
        for (i, word) in d.argv.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(word);
        }
    }
    s.make_ascii_lowercase();
    s
}

/// Does a decision pass a filter? (The live stream's filter; the store's SQL
/// selects the same decisions.)
pub fn matches(f: &DecisionFilter, d: &Decision) -> bool {
    let differs = |want: &str, have: &str| !want.trim().is_empty() && want.trim() != have;
    if differs(&f.session_id, &d.session_id) || differs(&f.role, &d.role) {
        return false;
    }
    let user = f.user.trim();
    if !user.is_empty() && user != d.user && user.parse::<u32>().ok() != Some(d.uid) {
        return false;
    }
    let kind = DecisionKind::try_from(f.kind).unwrap_or(DecisionKind::Unspecified);
    if kind != DecisionKind::Unspecified && kind != kind_class(&d.kind) {
        return false;
    }
    let verdict_ok = match Verdict::try_from(f.decision).unwrap_or(Verdict::Unspecified) {
        Verdict::Unspecified => true,
        Verdict::Allow => d.decision == ALLOW,
        Verdict::Deny => d.decision == DENY,
    };
    if !verdict_ok {
        return false;
    }
    if f.since_unix_nanos > 0 && d.time_unix_nanos < f.since_unix_nanos {
        return false;
    }
    if f.until_unix_nanos > 0 && d.time_unix_nanos >= f.until_unix_nanos {
        return false;
    }
    let text = f.text.trim();
    text.is_empty() || subject_of(d).contains(&text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Destination, ExecDetail, GuardDetail, RawSocket, UnixSocket};

    #[test]
    fn the_subject_holds_what_was_touched_and_the_command() {
        let mut d = Decision { argv: vec!["curl".into(), "X".into()], ..Default::default() };
        d.detail = Some(Detail::Destination(Destination { address: "10.0.0.1".into(), port: 443, protocol: "tcp".into() }));
        assert_eq!(subject_of(&d), "10.0.0.1:443 tcp curl x");
        d.detail = Some(Detail::UnixSocket(UnixSocket { path: "/run/Docker.sock".into(), ..Default::default() }));
        assert_eq!(subject_of(&d), "/run/docker.sock curl x");
        d.detail = Some(Detail::Exec(ExecDetail::default()));
        assert_eq!(subject_of(&d), "curl x");
        d.detail = Some(Detail::Guard(GuardDetail { file: Some("/Home/a/.aws/credentials".into()), ..Default::default() }));
        assert_eq!(subject_of(&d), "/home/a/.aws/credentials curl x");
        d.detail = Some(Detail::RawSocket(RawSocket { family: "AF_PACKET".into(), socket_type: "SOCK_RAW".into(), protocol: "3".into(), ..Default::default() }));
        assert_eq!(subject_of(&d), "af_packet sock_raw 3 curl x");
        // Without a command, the target alone; without either, the executable.
        d.argv = vec![String::new()];
        assert_eq!(subject_of(&d), "af_packet sock_raw 3");
        d.argv.clear();
        assert_eq!(subject_of(&d), "af_packet sock_raw 3");
        d.executable = "/usr/bin/Tool".into();
        assert_eq!(subject_of(&d), "af_packet sock_raw 3 /usr/bin/tool");
        d.detail = Some(Detail::Guard(GuardDetail::default()));
        assert_eq!(subject_of(&d), "/usr/bin/tool");
        d.detail = None;
        d.argv = vec!["a".into(), "".into(), "B".into()];
        assert_eq!(subject_of(&d), "a  b");
    }

    #[test]
    fn filters_select_by_every_field() {
        let d = Decision {
            kind: UNIX_CONNECT.into(),
            decision: DENY.into(),
            session_id: "s1".into(),
            user: "alice".into(),
            uid: 1000,
            role: "agent".into(),
            time_unix_nanos: 50,
            argv: vec!["python3".into()],
            detail: Some(Detail::UnixSocket(UnixSocket { path: "/run/docker.sock".into(), ..Default::default() })),
            ..Default::default()
        };
        let all = DecisionFilter::default();
        assert!(matches(&all, &d));
        assert!(matches(&DecisionFilter { kind: DecisionKind::Other as i32, ..all.clone() }, &d));
        assert!(!matches(&DecisionFilter { kind: DecisionKind::Connect as i32, ..all.clone() }, &d));
        assert!(matches(&DecisionFilter { user: "1000".into(), ..all.clone() }, &d));
        assert!(!matches(&DecisionFilter { user: "bob".into(), ..all.clone() }, &d));
        assert!(matches(&DecisionFilter { text: "DOCKER.SOCK".into(), ..all.clone() }, &d));
        assert!(!matches(&DecisionFilter { decision: Verdict::Allow as i32, ..all.clone() }, &d));
        assert!(matches(&DecisionFilter { since_unix_nanos: 50, until_unix_nanos: 51, ..all.clone() }, &d));
        assert!(!matches(&DecisionFilter { until_unix_nanos: 50, ..all }, &d));
    }

    #[test]
    fn the_json_form_puts_the_detail_under_its_kind_and_reads_back() {
        let d = Decision {
            id: 7,
            kind: EXEC.into(),
            argv: vec!["terraform".into(), "apply".into()],
            rule: Some("terraform apply".into()),
            detail: Some(Detail::Exec(ExecDetail { filename: "/usr/bin/terraform".into(), stage: "new_image".into(), ..Default::default() })),
            ..Default::default()
        };
        let json = serde_json::to_value(&d).expect("serialize");
        assert_eq!(json["exec"]["filename"], "/usr/bin/terraform");
        assert_eq!(json["rule"], "terraform apply");
        assert!(json.get("policy").is_none(), "an unset optional field is left out: {json}");
        assert!(json.get("detail").is_none(), "{json}");
        let back: Decision = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, d);
    }
}
