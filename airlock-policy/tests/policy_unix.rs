//! `egress.unix_deny`: Unix socket patterns (broker escapes). Bad patterns are
//! refused with file, line and field; good ones compile to unix_rules keys
//! whose LPM semantics (exact path vs prefix) are checked here against a
//! reference longest-prefix match over the same bytes.

use airlock_common::abi::{ROLE_UNIX_RULES, UNIX_FIXED_BITS, UNIX_PATH_MAX};
use airlock_policy::{compile, load_sources, unix_key, IdAllocator, PolicySource, RuleKind};

fn policy(unix_deny: &str) -> String {
    // One entry a line, then a good one, so the reported line is the entry's own.
    let unix_deny = format!("{},\n      \"/run/last.sock\"", unix_deny.replace(", ", ",\n      "));
    format!("{{\n  \"id\": \"brokers\",\n  \"name\": \"B\",\n  \"egress\": {{\n    \"unix_deny\": [\n      {unix_deny}\n    ]\n  }}\n}}\n")
}

fn sources(unix_deny: &str) -> Vec<PolicySource> {
    vec![
        PolicySource::policy("policies/brokers.json", policy(unix_deny)),
        PolicySource::role("roles/r.json", r#"{"id":"r","name":"R","policies":["brokers"]}"#),
        PolicySource::policy("policies/none.json", r#"{"id":"none","name":"N"}"#),
        PolicySource::role("roles/plain.json", r#"{"id":"plain","name":"P","policies":["none"]}"#),
    ]
}

#[test]
fn bad_patterns_are_refused_with_file_line_and_field() {
    let cases = [
        ("\"/run/docker.sock\", \"run/docker.sock\"", "neither an absolute socket path"),
        ("\"/run/docker.sock\", \"/run//docker.sock\"", "not a canonical path"),
        ("\"/run/docker.sock\", \"/run/./docker.sock\"", "not a canonical path"),
        ("\"/run/docker.sock\", \"/run/../docker.sock\"", "not a canonical path"),
        ("\"/run/docker.sock\", \"/run/\"", "not a canonical path"),
        ("\"/run/docker.sock\", \"/run/*/bus\"", "'*' may only end a pattern"),
        ("\"/run/docker.sock\", \"@\"", "must not be empty"),
        ("\"/run/docker.sock\", 7", "invalid type"),
    ];
    for (list, want) in cases {
        let errs = load_sources(sources(list)).expect_err(list);
        let d = errs.errors.iter().find(|d| d.field == "egress.unix_deny[1]").unwrap_or_else(|| panic!("{list}: {errs}"));
        assert!(d.file.ends_with("policies/brokers.json"), "{d}");
        // The entry's line, or where the parser stopped: the start of the next entry.
        assert!(matches!(d.line, Some(7) | Some(8)), "{list}: {d}");
        assert!(d.message.contains(want), "{list}: {d}");
    }
    let long = format!("\"/{}\"", "a".repeat(126));
    let errs = load_sources(sources(&long)).expect_err("too long");
    assert!(errs.to_string().contains("at most 126"), "{errs}");
    // 126 bytes fit.
    load_sources(sources(&format!("\"/{}\"", "a".repeat(125)))).expect("126 bytes fit");
}

/// The bits a stored key covers, as bytes matched (prefixlen past the set id).
fn matches(key: &airlock_common::abi::UnixKey, set_id: u32, path: &[u8]) -> bool {
    let mut lookup = [0u8; UNIX_PATH_MAX];
    let n = path.len().min(UNIX_PATH_MAX - 1);
    lookup[..n].copy_from_slice(&path[..n]);
    let bytes = ((key.prefixlen - UNIX_FIXED_BITS) / 8) as usize;
    key.set_id == set_id && key.path[..bytes] == lookup[..bytes]
}

#[test]
fn patterns_compile_to_exact_and_prefix_keys() {
    let loaded = load_sources(sources("\"/run/docker.sock\", \"/tmp/tmux-*\", \"@broker\", \"@pfx*\", \"/run/user/*\"")).expect("loads");
    let c = compile(&loaded, &mut IdAllocator::new());
    let r = c.role("r").expect("role r");
    assert_eq!(r.unix.len(), 6, "five patterns and the helper's /run/last.sock");
    let flags = c.role_sets.iter().find(|(id, _)| id == "r").unwrap().1.flags;
    assert_eq!(flags & ROLE_UNIX_RULES, ROLE_UNIX_RULES, "a role with Unix rules is flagged");
    let plain = c.role_sets.iter().find(|(id, _)| id == "plain").unwrap().1.flags;
    assert_eq!(plain & ROLE_UNIX_RULES, 0, "a role without Unix rules is not");
    assert_eq!(c.tables.unix.len(), 6);
    for rule in &r.unix {
        assert!(matches!(c.rule(rule.rule_id).map(|x| &x.kind), Some(RuleKind::Unix { text }) if *text == rule.text));
    }
    let set = r.set_id;
    let hit = |path: &str| c.tables.unix.iter().filter(|(k, _)| matches(k, set, path.as_bytes())).map(|(_, v)| v.rule_id).max();
    let rule_of = |text: &str| r.unix.iter().find(|u| u.text == text).unwrap().rule_id;
    assert_eq!(hit("/run/docker.sock"), Some(rule_of("/run/docker.sock")));
    assert_eq!(hit("/run/docker.sock.1"), None, "an exact rule covers its path only");
    assert_eq!(hit("/run/docker"), None);
    assert_eq!(hit("/tmp/tmux-0/default"), Some(rule_of("/tmp/tmux-*")));
    assert_eq!(hit("/tmp/tmux"), None);
    assert_eq!(hit("@broker"), Some(rule_of("@broker")));
    assert_eq!(hit("@broker2"), None);
    assert_eq!(hit("@pfx-anything"), Some(rule_of("@pfx*")));
    assert_eq!(hit("/run/user/1000/bus"), Some(rule_of("/run/user/*")));
    // Another rule set's keys never match.
    assert!(!c.tables.unix.iter().any(|(k, _)| matches(k, set + 1000, b"/run/docker.sock")));
}

#[test]
fn unix_key_layout() {
    let k = unix_key(7, b"/run/docker.sock", false);
    assert_eq!(k.prefixlen, UNIX_FIXED_BITS + 8 * 17, "the NUL is part of an exact match");
    let p = unix_key(7, b"/tmp/tmux-", true);
    assert_eq!(p.prefixlen, UNIX_FIXED_BITS + 8 * 10);
    assert_eq!(&p.path[..10], b"/tmp/tmux-");
    assert!(p.path[10..].iter().all(|&b| b == 0));
}
