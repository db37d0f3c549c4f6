//! Hostname entries in `egress.deny` / `egress.allow`, and the per-role
//! `egress_default`: parsing, located errors, and what the compiler emits.

use std::collections::BTreeMap;
use std::net::IpAddr;

use airlock_common::abi::{ROLE_EGRESS_DEFAULT_DENY, EGRESS_FIXED_BITS};
use airlock_policy::{compile, host_entries, load_sources, parse_hostname, IdAllocator, PolicySource, RuleKind};

fn load(policy: &str, role: &str) -> Result<airlock_policy::LoadedPolicies, airlock_policy::PolicyErrors> {
    load_sources(vec![PolicySource::policy("policies/net.json", policy), PolicySource::role("roles/r.json", role)])
}

#[test]
fn hostnames_are_checked_and_normalised() {
    assert_eq!(parse_hostname("API.Example.COM.").unwrap(), "api.example.com");
    assert_eq!(parse_hostname("_svc.example.test").unwrap(), "_svc.example.test");
    for bad in ["", "a..b", "-a.b", "a-.b", "a b", "a/b", &"x".repeat(64)] {
        assert!(parse_hostname(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn deny_and_allow_take_hostnames_and_objects() {
    let policy = r#"{ "id": "net", "name": "N", "egress": {
        "deny": ["10.0.0.0/8", "Api.Example.com", { "host": "db.example.com", "ports": [5432, 5432] }],
        "allow": ["127.0.0.1", "pkg.example.com", { "cidr": "127.0.0.53/32", "ports": [53] }] } }"#;
    let role = r#"{ "id": "r", "name": "R", "policies": ["net"], "egress_default": "deny" }"#;
    let loaded = load(policy, role).expect("loads");
    let e = &loaded.policies[0].egress;
    assert_eq!(e.deny.len(), 1);
    assert_eq!(e.deny_hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), ["api.example.com", "db.example.com"]);
    assert_eq!(e.deny_hosts[1].ports, [5432]);
    assert_eq!(e.deny_hosts[1].text, "db.example.com ports 5432");
    assert_eq!(e.allow.len(), 2);
    assert_eq!(e.allow_hosts[0].host, "pkg.example.com");

    let c = compile(&loaded, &mut IdAllocator::new());
    let r = c.role("r").unwrap();
    assert!(r.egress_default_deny);
    let flags = c.role_sets.iter().find(|(id, _)| id == "r").unwrap().1.flags;
    assert_eq!(flags & ROLE_EGRESS_DEFAULT_DENY, ROLE_EGRESS_DEFAULT_DENY);
    assert_eq!(r.hosts.len(), 3);
    assert_eq!(r.hosts.iter().filter(|h| h.allow).count(), 1);
    // Every hostname and allow rule has its own id that names it in the audit.
    for h in &r.hosts {
        assert!(matches!(c.rule(h.rule_id).map(|x| &x.kind), Some(RuleKind::Egress { text }) if *text == h.text));
    }
    assert_eq!(r.allow.len(), 2);
    assert!(matches!(c.rule(r.allow[0].rule_id).map(|x| &x.kind), Some(RuleKind::Egress { text }) if text == "allow 127.0.0.1"));
    // Allow entries go to their own tables (with the IPv4-mapped form), never the deny tables.
    assert!(c.tables.allow4.iter().any(|(k, _)| k.addr == [127, 0, 0, 1] && k.prefixlen == EGRESS_FIXED_BITS + 32));
    assert!(!c.tables.egress4.iter().any(|(k, _)| k.addr == [127, 0, 0, 1]));
    assert!(!c.tables.allow6.is_empty());
    // A role without egress_default is not flagged.
    let loaded = load(policy, r#"{ "id": "r", "name": "R", "policies": ["net"] }"#).unwrap();
    let c = compile(&loaded, &mut IdAllocator::new());
    assert_eq!(c.role_sets[0].1.flags & ROLE_EGRESS_DEFAULT_DENY, 0);
}

#[test]
fn bad_entries_are_located() {
    let role = r#"{ "id": "r", "name": "R", "policies": ["net"] }"#;
    let cases = [
        (r#"{ "id": "net", "name": "N", "egress": { "deny": [ "a b" ] } }"#, "egress.deny[0]", "not a valid IP address, CIDR or hostname"),
        (r#"{ "id": "net", "name": "N", "egress": { "allow": [ { "host": "x.test", "cidr": "10.0.0.0/8", "ports": [1] } ] } }"#, "egress.allow[0]", "exactly one"),
        (r#"{ "id": "net", "name": "N", "egress": { "deny": [ { "host": "x.test", "ports": [] } ] } }"#, "egress.deny[0]", "must not be empty"),
    ];
    for (policy, field, want) in cases {
        let errs = load(policy, role).expect_err(policy);
        let d = &errs.errors[0];
        assert_eq!(d.field, field, "{d}");
        assert!(d.message.contains(want), "{d}");
        assert!(d.line.is_some(), "{d}");
    }
    let errs = load(r#"{ "id": "net", "name": "N" }"#, r#"{ "id": "r", "name": "R", "policies": ["net"], "egress_default": "block" }"#)
        .expect_err("bad default");
    assert_eq!(errs.errors[0].field, "egress_default", "{errs}");
}

#[test]
fn host_entries_cover_mapped_forms_and_keep_the_first_rule() {
    let mut v4 = BTreeMap::new();
    let mut v6 = BTreeMap::new();
    let a: IpAddr = "192.0.2.7".parse().unwrap();
    host_entries(3, 11, &[a], &[443], &mut v4, &mut v6);
    host_entries(3, 12, &[a], &[443], &mut v4, &mut v6);
    assert_eq!(v4.len(), 1);
    let (k, v) = v4.iter().next().unwrap();
    assert_eq!((k.set_id, k.addr, u16::from_be_bytes(k.port), v.rule_id), (3, [192, 0, 2, 7], 443, 11));
    // ::ffff:192.0.2.7 is covered too.
    assert!(v6.keys().any(|k| k.addr[10..] == [0xff, 0xff, 192, 0, 2, 7]));
}
