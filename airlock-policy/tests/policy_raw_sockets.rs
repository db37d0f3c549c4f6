//! `egress.raw_sockets`: denied by default, allowed for a role only when every
//! active policy of it says "allow", and refused with the file and field when
//! it is neither.

use airlock_common::abi::ROLE_ALLOW_RAW_SOCKETS;
use airlock_policy::{load_dir, CompiledPolicy, PolicyErrors, RawSockets};

mod common;

use common::{role_flags, Scratch};

fn scratch(tag: &str, policies: &[(&str, &str)], roles: &[(&str, &str)]) -> Scratch {
    Scratch::new("raw", tag, policies, roles)
}

fn compiled(s: &Scratch) -> CompiledPolicy {
    s.compiled()
}

const PLAIN: &str = r#"{ "id": "plain", "name": "Plain", "egress": { "deny": ["10.0.0.0/8"] } }"#;
const ALLOW: &str = r#"{ "id": "rawok", "name": "Raw ok", "egress": { "raw_sockets": "allow" } }"#;
const DENY: &str = r#"{ "id": "rawno", "name": "Raw no", "egress": { "raw_sockets": "deny" } }"#;

#[test]
fn raw_sockets_are_denied_unless_every_policy_of_the_role_allows_them() {
    let s = scratch(
        "flags",
        &[("plain.json", PLAIN), ("rawok.json", ALLOW), ("rawno.json", DENY)],
        &[
            ("default.json", r#"{"id":"default","name":"D","policies":["plain"]}"#),
            ("allowed.json", r#"{"id":"allowed","name":"A","policies":["rawok"]}"#),
            ("mixed.json", r#"{"id":"mixed","name":"M","policies":["rawok","plain"]}"#),
            ("explicit.json", r#"{"id":"explicit","name":"E","policies":["rawok","rawno"]}"#),
            ("bare.json", r#"{"id":"bare","name":"B"}"#),
        ],
    );
    let loaded = load_dir(&s.0).unwrap_or_else(|e| panic!("{e}"));
    let policy = |id: &str| loaded.policies.iter().find(|p| p.id.as_str() == id).expect("policy loaded").egress.raw_sockets;
    assert_eq!(policy("plain"), RawSockets::Deny, "absent means deny");
    assert_eq!(policy("rawok"), RawSockets::Allow);
    assert_eq!(policy("rawno"), RawSockets::Deny);

    let compiled = compiled(&s);
    let allowed = |role: &str| role_flags(&compiled, role) & ROLE_ALLOW_RAW_SOCKETS != 0;
    assert!(!allowed("default"));
    assert!(allowed("allowed"));
    assert!(!allowed("mixed"), "one policy that does not allow them denies them");
    assert!(!allowed("explicit"));
    assert!(!allowed("bare"), "a role without policies denies them");
}

#[test]
fn a_bad_value_is_refused_with_file_and_field() {
    let s = scratch(
        "bad",
        &[("p.json", "{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"egress\": {\n    \"raw_sockets\": \"sometimes\"\n  }\n}\n")],
        &[("r.json", r#"{"id":"r","name":"R","policies":["p"]}"#)],
    );
    let errs: PolicyErrors = match load_dir(&s.0) {
        Ok(_) => panic!("the directory loaded; an error was expected"),
        Err(e) => e,
    };
    let d = errs
        .errors
        .iter()
        .find(|d| d.file.ends_with("policies/p.json") && d.field == "egress.raw_sockets")
        .unwrap_or_else(|| panic!("no error for policies/p.json egress.raw_sockets in:\n{errs}"));
    assert_eq!(d.line, Some(5), "{d}");
    assert!(errs.to_string().contains("sometimes"), "{errs}");
}

#[test]
fn allowing_raw_sockets_changes_the_policy_version() {
    let plain = scratch("v1", &[("p.json", r#"{"id":"p","name":"P"}"#)], &[]);
    let allow = scratch("v2", &[("p.json", r#"{"id":"p","name":"P","egress":{"raw_sockets":"allow"}}"#)], &[]);
    let version = |s: &Scratch| load_dir(&s.0).unwrap_or_else(|e| panic!("{e}")).version();
    assert_ne!(version(&plain), version(&allow));
}
