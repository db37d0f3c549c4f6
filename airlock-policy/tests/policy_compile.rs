//! The exact kernel table entries the compiler emits.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use airlock_common::abi::{
    word_hash, Egress4Key, Egress6Key, ProgramKey, TrieKey, EGRESS_FIXED_BITS,
};
use airlock_policy::{
    compile, load_sources, CompiledPolicy, IdAllocator, LoadedPolicies, PolicySource, RuleKind,
};

fn load(policies: &[(&str, &str)], roles: &[(&str, &str)]) -> LoadedPolicies {
    let mut sources: Vec<PolicySource> = policies
        .iter()
        .map(|(n, c)| PolicySource::policy(*n, *c))
        .collect();
    sources.extend(roles.iter().map(|(n, c)| PolicySource::role(*n, *c)));
    load_sources(sources).unwrap_or_else(|e| panic!("{e}"))
}

fn program(c: &CompiledPolicy, set_id: u32, name: &str) -> airlock_common::abi::ProgramValue {
    let key = ProgramKey {
        set_id,
        pad: 0,
        name_hash: word_hash(name.as_bytes()),
    };
    c.tables.programs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no program {name}"))
}

fn trie(c: &CompiledPolicy, node: u32, word: &str) -> Option<airlock_common::abi::TrieValue> {
    let key = TrieKey {
        node,
        pad: 0,
        word_hash: word_hash(word.as_bytes()),
    };
    c.tables.trie.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn assert_unique_keys<K: Ord + std::fmt::Debug, V>(entries: &[(K, V)], what: &str) {
    let mut seen = BTreeSet::new();
    for (k, _) in entries {
        assert!(seen.insert(k), "duplicate {what} key {k:?}");
    }
}

#[test]
fn trie_merges_prefixes_and_marks_rules() {
    let loaded = load(
        &[(
            "p.json",
            r#"{"id": "p", "name": "P", "blocked_commands": [
                "kubectl delete namespace", "kubectl delete", "kubectl rollout undo", "kubectl", "kubectl", "kubectl delete"]}"#,
        )],
        &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)],
    );
    let c = compile(&loaded, &mut IdAllocator::new());
    let r = c.role("r").expect("role");
    let ids: Vec<u32> = r.commands.iter().map(|x| x.rule_id).collect();
    let prog = program(&c, r.set_id, "kubectl");
    assert_ne!(prog.root_node, 0);
    assert_eq!(prog.block_all_rule, ids[3], "first bare rule wins");

    let delete = trie(&c, prog.root_node, "delete").expect("delete entry");
    assert_ne!(delete.next_node, 0);
    assert_eq!(
        delete.rule_id, ids[1],
        "an entry can both continue and end a rule"
    );
    assert_eq!(
        trie(&c, delete.next_node, "namespace").map(|v| (v.next_node, v.rule_id)),
        Some((0, ids[0]))
    );
    let rollout = trie(&c, prog.root_node, "rollout").expect("rollout");
    assert_eq!(rollout.rule_id, 0);
    assert_eq!(
        trie(&c, rollout.next_node, "undo").map(|v| v.rule_id),
        Some(ids[2])
    );
    // The rest of the trie is the launchers' (npx kubectl ...), which lead into this one.
    let own = [prog.root_node, delete.next_node, rollout.next_node];
    assert_eq!(c.tables.trie.iter().filter(|(k, _)| own.contains(&k.node)).count(), 4);
    assert_unique_keys(&c.tables.trie, "trie");
    assert_unique_keys(&c.tables.programs, "program");
    for (_, v) in &c.tables.trie {
        assert!(
            v.next_node != 0 || v.rule_id != 0,
            "an entry must lead somewhere"
        );
    }
}

#[test]
fn roles_get_their_own_sets_and_rule_ids() {
    let loaded = load(
        &[
            (
                "a.json",
                r#"{"id": "a", "name": "A", "blocked_commands": ["terraform apply"], "egress": {"deny": ["10.0.0.0/8"]}}"#,
            ),
            (
                "b.json",
                r#"{"id": "b", "name": "B", "status": "draft", "blocked_commands": ["ls"]}"#,
            ),
        ],
        &[
            (
                "one.json",
                r#"{"id": "one", "name": "1", "policies": ["a", "b"]}"#,
            ),
            (
                "two.json",
                r#"{"id": "two", "name": "2", "policies": ["a"]}"#,
            ),
        ],
    );
    let mut ids = IdAllocator::new();
    let c = compile(&loaded, &mut ids);
    let (one, two) = (c.role("one").expect("one"), c.role("two").expect("two"));
    assert_ne!(one.set_id, two.set_id);
    assert!(one.set_id != 0 && two.set_id != 0);
    assert_eq!(
        one.policies,
        vec!["a".to_string()],
        "the draft policy is not enforced"
    );
    assert_ne!(
        one.commands[0].rule_id, two.commands[0].rule_id,
        "one rule id per (role, policy, rule)"
    );
    let rr = c.rule(two.commands[0].rule_id).expect("rule ref");
    assert_eq!((rr.policy_id.as_str(), rr.role_id.as_str()), ("a", "two"));
    assert_eq!(
        rr.kind,
        RuleKind::Command {
            text: "terraform apply".into()
        }
    );
    // Two commands, two egress rules, and each role's default protected files (guard).
    assert_eq!(
        c.rules.len(),
        4 + 2 * airlock_policy::default_protected_files().len()
    );
    assert_eq!(
        c.role_sets
            .iter()
            .map(|(n, s)| (n.as_str(), s.set_id))
            .collect::<Vec<_>>(),
        vec![("one", one.set_id), ("two", two.set_id)]
    );

    // A reload through the same allocator never reuses an id, so new entries
    // can sit beside the old ones until the switch.
    let again = compile(&loaded, &mut ids);
    assert_eq!(again.version, c.version);
    let old_sets: BTreeSet<u32> = c.role_sets.iter().map(|(_, s)| s.set_id).collect();
    assert!(again
        .role_sets
        .iter()
        .all(|(_, s)| !old_sets.contains(&s.set_id)));
    let old_rules: BTreeSet<u32> = c.rules.keys().copied().collect();
    assert!(again
        .rules
        .keys()
        .all(|k| !old_rules.contains(k) && *k > *old_rules.iter().max().expect("rules")));
    let old_nodes: BTreeSet<u32> = c.tables.programs.iter().map(|(_, v)| v.root_node).collect();
    assert!(again
        .tables
        .programs
        .iter()
        .all(|(_, v)| !old_nodes.contains(&v.root_node)));
}

#[test]
fn egress_keys_are_exact() {
    let loaded = load(
        &[(
            "p.json",
            r#"{"id": "p", "name": "P", "egress": {"deny": [
                "10.1.2.3/8", {"cidr": "127.0.0.2", "ports": [443, 22, 22]}, "fd00::/8", "::1", "10.0.0.0/8"]}}"#,
        )],
        &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)],
    );
    let c = compile(&loaded, &mut IdAllocator::new());
    let r = c.role("r").expect("role");
    let rid: Vec<u32> = r.egress.iter().map(|e| e.rule_id).collect();
    assert_eq!(r.egress[1].text, "127.0.0.2 ports 22,443");
    let k4 = |len: u32, port: u16, a: Ipv4Addr| Egress4Key {
        prefixlen: EGRESS_FIXED_BITS + len,
        set_id: r.set_id,
        port: port.to_be_bytes(),
        addr: a.octets(),
        pad: [0; 2],
    };
    let k6 = |len: u32, port: u16, a: Ipv6Addr| Egress6Key {
        prefixlen: EGRESS_FIXED_BITS + len,
        set_id: r.set_id,
        port: port.to_be_bytes(),
        addr: a.octets(),
        pad: [0; 2],
    };
    let v4: Vec<(Egress4Key, u32)> = c.tables.egress4.iter().map(|(k, v)| (*k, v.rule_id)).collect();
    let v6: Vec<(Egress6Key, u32)> = c.tables.egress6.iter().map(|(k, v)| (*k, v.rule_id)).collect();
    let ten = Ipv4Addr::new(10, 0, 0, 0);
    let lo2 = Ipv4Addr::new(127, 0, 0, 2);
    let mut want4 = vec![
        (k4(8, 0, ten), rid[0]), // host bits cleared; the later duplicate loses
        (k4(32, 22, lo2), rid[1]),
        (k4(32, 443, lo2), rid[1]),
        (k4(32, 22, Ipv4Addr::UNSPECIFIED), rid[1]),
        (k4(32, 443, Ipv4Addr::UNSPECIFIED), rid[1]),
    ];
    want4.sort();
    assert_eq!(v4, want4);
    let mut want6 = vec![
        (k6(104, 0, ten.to_ipv6_mapped()), rid[0]),
        (k6(128, 22, lo2.to_ipv6_mapped()), rid[1]),
        (k6(128, 443, lo2.to_ipv6_mapped()), rid[1]),
        (k6(128, 22, Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()), rid[1]),
        (k6(128, 443, Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()), rid[1]),
        (k6(8, 0, "fd00::".parse().expect("addr")), rid[2]),
        (k6(128, 0, Ipv6Addr::LOCALHOST), rid[3]),
        (k6(128, 0, Ipv6Addr::UNSPECIFIED), rid[3]),
    ];
    want6.sort();
    assert_eq!(v6, want6);
}

#[test]
fn version_tracks_content_not_file_names() {
    let p = r#"{"id": "p", "name": "P", "blocked_commands": ["terraform apply"]}"#;
    let r = r#"{"id": "r", "name": "R", "policies": ["p"]}"#;
    let a = load(&[("a.json", p)], &[("r.json", r)]).version();
    let b = load(&[("elsewhere.json", p)], &[("x.json", r)]).version();
    let changed = load(
        &[("a.json", &p.replace("apply", "destroy"))],
        &[("r.json", r)],
    )
    .version();
    assert_eq!(a, b);
    assert_ne!(a, changed);
    assert_eq!(a.len(), 16);
}

#[test]
fn yaml_and_json_compile_alike() {
    let json = load(
        &[(
            "p.json",
            r#"{"id": "p", "name": "P", "blocked_commands": ["aws iam create-role"], "egress": {"deny": ["fd00::/8", {"cidr": "10.0.0.0/8", "ports": [22]}]}}"#,
        )],
        &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)],
    );
    let yaml = load(
        &[("p.yaml", "id: p\nname: P\nblocked_commands:\n  - aws iam create-role\negress:\n  deny:\n    - fd00::/8\n    - cidr: 10.0.0.0/8\n      ports: [22]\n")],
        &[("r.yml", "id: r\nname: R\npolicies: [p]\n")],
    );
    let (a, b) = (
        compile(&json, &mut IdAllocator::new()),
        compile(&yaml, &mut IdAllocator::new()),
    );
    assert_eq!(a.version, b.version);
    assert_eq!(
        (a.tables.programs, a.tables.trie, a.tables.egress4, a.tables.egress6),
        (b.tables.programs, b.tables.trie, b.tables.egress4, b.tables.egress6)
    );
}

/// Restart: a daemon that adopts pinned maps compiles with ids above every id
/// live in them, so no new entry can overwrite or be mistaken for an old one.
#[test]
fn an_allocator_started_after_live_ids_never_reuses_them() {
    let loaded = load(
        &[(
            "p.json",
            r#"{"id": "p", "name": "P", "blocked_commands": ["terraform apply", "kubectl"], "egress": {"deny": ["10.0.0.0/8", "fd00::/8"]}}"#,
        )],
        &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)],
    );
    let (max_set, max_node, max_rule) = (40, 900, 77);
    let c = compile(&loaded, &mut IdAllocator::starting_after(max_set, max_node, max_rule));
    assert!(c.role_sets.iter().all(|(_, s)| s.set_id > max_set), "{:?}", c.role_sets);
    assert!(c.tables.programs.iter().all(|(k, v)| k.set_id > max_set && (v.root_node == 0 || v.root_node > max_node)));
    assert!(c.tables.trie.iter().all(|(k, v)| k.node > max_node && (v.next_node == 0 || v.next_node > max_node)));
    assert!(c.rules.keys().all(|id| *id > max_rule), "{:?}", c.rules.keys());
    assert!(c.tables.egress4.iter().all(|(k, v)| k.set_id > max_set && v.rule_id > max_rule));
    assert!(c.tables.egress6.iter().all(|(k, v)| k.set_id > max_set && v.rule_id > max_rule));
    assert!(!c.tables.trie.is_empty() && !c.tables.egress4.is_empty() && !c.tables.egress6.is_empty());
}

/// The fileless and direct-loader switches default to deny, and
/// a role allows one only when every active policy of it turns it off.
#[test]
fn exec_switches_become_role_flags() {
    use airlock_common::abi::{ROLE_ALLOW_FILELESS, ROLE_ALLOW_LOADER};
    let loaded = load(
        &[
            ("default.json", r#"{"id": "default", "name": "D", "blocked_commands": ["terraform apply"]}"#),
            (
                "open.json",
                r#"{"id": "open", "name": "O", "exec": {"deny_fileless": false, "deny_direct_loader": false}}"#,
            ),
            ("loader.json", r#"{"id": "loader", "name": "L", "exec": {"deny_direct_loader": false}}"#),
            (
                "draft.json",
                r#"{"id": "draft", "name": "Dr", "status": "draft", "exec": {"deny_fileless": true}}"#,
            ),
        ],
        &[
            ("a.json", r#"{"id": "a", "name": "A", "policies": ["default"]}"#),
            ("b.json", r#"{"id": "b", "name": "B", "policies": ["open"]}"#),
            ("c.json", r#"{"id": "c", "name": "C", "policies": ["open", "default"]}"#),
            ("d.json", r#"{"id": "d", "name": "D", "policies": ["open", "loader", "draft"]}"#),
            ("e.json", r#"{"id": "e", "name": "E", "policies": []}"#),
        ],
    );
    let c = compile(&loaded, &mut IdAllocator::new());
    let flags = |role: &str| {
        c.role_sets
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, s)| s.flags)
            .unwrap_or_else(|| panic!("no role {role}"))
    };
    assert_eq!(flags("a"), 0, "defaults deny both");
    assert_eq!(flags("b"), ROLE_ALLOW_FILELESS | ROLE_ALLOW_LOADER);
    assert_eq!(flags("c"), 0, "one policy that denies is enough");
    // The draft policy is not in force, so its deny does not count.
    assert_eq!(flags("d"), ROLE_ALLOW_LOADER, "loader.json keeps deny_fileless on");
    assert_eq!(flags("e"), 0, "a role without policies keeps the defaults");
}

#[test]
fn approval_rules_are_a_rule_set_of_their_own() {
    use airlock_policy::matcher::{ExecInput, TableMatcher};
    let p = r#"{"id": "p", "name": "P", "blocked_commands": ["terraform destroy"], "approval_commands": ["terraform apply", "terraform destroy"]}"#;
    let loaded = load(&[("p.json", p)], &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)]);
    let c = compile(&loaded, &mut IdAllocator::new());
    let role = c.role("r").expect("role r");
    assert_ne!(role.approval_set_id, 0);
    assert_ne!(role.approval_set_id, role.set_id);
    assert_eq!(role.approvals.len(), 2);
    let (_, set) = c.role_sets.iter().find(|(r, _)| r == "r").expect("role set");
    assert_eq!(set.approval_set_id, role.approval_set_id);
    let m = TableMatcher::new(&c);
    let apply = ExecInput::new("terraform", &["terraform", "apply", "-auto-approve"]);
    assert!(!m.match_exec(role.set_id, &apply).is_deny(), "an approval rule is not a block rule");
    assert!(m.match_exec(role.approval_set_id, &apply).is_deny(), "the approval set names terraform apply");
    let destroy = ExecInput::new("terraform", &["terraform", "destroy"]);
    assert!(m.match_exec(role.set_id, &destroy).is_deny(), "the block rule still blocks");
    let rule = role.approvals.iter().find(|a| a.text == "terraform apply").expect("rule");
    assert!(matches!(c.rule(rule.rule_id).map(|r| &r.kind), Some(RuleKind::Approval { text }) if text == "terraform apply"));
    let changed = load(&[("p.json", &p.replace("\"terraform apply\", ", ""))], &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)]);
    assert_ne!(loaded.version(), changed.version(), "approval rules are part of the policy's version");
}

#[test]
fn rate_limits_and_time_windows_are_a_limit_set_with_kernel_entries() {
    use airlock_common::abi::LIMIT_CLOSED;
    use airlock_policy::matcher::{ExecInput, TableMatcher};
    use chrono::{DateTime, Utc};
    let p = r#"{"id": "p", "name": "P", "blocked_commands": ["terraform destroy"],
      "rate_limits": {"kubectl *": "100/minute", "*": "1000/hour", "terraform apply": "10/hour"},
      "time_windows": {"terraform apply": "Mon-Fri 09:00-17:00 Europe/Berlin"}}"#;
    let q = r#"{"id": "q", "name": "Q", "rate_limits": {"kubectl": "5/minute", "terraform apply": "20/hour"},
      "time_windows": {"terraform apply": "Mon-Fri 08:00-12:00 Europe/Berlin"}}"#;
    let loaded = load(&[("p.json", p), ("q.json", q)], &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p", "q"]}"#)]);
    let c = compile(&loaded, &mut IdAllocator::new());
    let role = c.role("r").expect("role r");
    assert_ne!(role.limit_set_id, 0);
    assert!(role.limit_set_id != role.set_id && role.limit_set_id != role.approval_set_id);
    // One rule per pattern across the role's policies: the strictest rate, every window.
    assert_eq!(role.limits.len(), 3, "{:#?}", role.limits);
    let text = |pattern: &str| {
        let l = role.limits.iter().find(|l| l.pattern.text() == pattern).unwrap_or_else(|| panic!("no limit {pattern}"));
        match c.rule(l.rule_id).map(|r| &r.kind) {
            Some(RuleKind::Limit { text }) => text.clone(),
            other => panic!("limit {pattern} is named {other:?}"),
        }
    };
    assert_eq!(text("kubectl *"), "kubectl * 5/minute");
    assert_eq!(text("*"), "* 1000/hour");
    assert_eq!(text("terraform apply"), "terraform apply 10/hour; Mon-Fri 09:00-17:00 Europe/Berlin; Mon-Fri 08:00-12:00 Europe/Berlin");

    let (_, set) = c.role_sets.iter().find(|(r, _)| r == "r").expect("role set");
    assert_eq!(set.limit_set_id, role.limit_set_id);
    let every = role.limits.iter().find(|l| l.pattern.text() == "*").expect("*");
    assert_eq!(set.every_exec_rule, every.rule_id);

    // The limit set's tries name the commands, as the block set's do.
    let m = TableMatcher::new(&c);
    assert!(m.match_exec(role.limit_set_id, &ExecInput::new("kubectl", &["kubectl", "get", "pods"])).is_deny());
    assert!(m.match_exec(role.limit_set_id, &ExecInput::new("terraform", &["terraform", "-chdir=x", "apply"])).is_deny());
    assert!(!m.match_exec(role.limit_set_id, &ExecInput::new("terraform", &["terraform", "plan"])).is_deny());

    // Entries: rate as GCRA, a window open only inside every one of its windows.
    let apply = role.limits.iter().find(|l| l.pattern.text() == "terraform apply").expect("apply");
    let at = |s: &str| s.parse::<DateTime<Utc>>().expect("instant");
    let entry = |when: &str| c.limit_entries_at(at(when)).into_iter().find(|(id, _)| *id == apply.rule_id).expect("entry").1;
    assert_eq!(entry("2026-11-27T09:30:00Z").interval_ns, 360 * 1_000_000_000);
    assert_eq!(entry("2026-11-27T09:30:00Z").burst_ns, 9 * 360 * 1_000_000_000);
    assert_eq!(entry("2026-11-27T09:30:00Z").flags, 0, "Friday 10:30 in Berlin is inside both windows");
    assert_eq!(entry("2026-11-27T11:30:00Z").flags, LIMIT_CLOSED, "12:30 in Berlin is past the second window");
    assert_eq!(entry("2026-11-28T09:30:00Z").flags, LIMIT_CLOSED, "Saturday");
    assert_eq!(c.next_window_change(at("2026-11-27T09:30:00Z")), Some(at("2026-11-27T11:00:00Z")));
    // Before a clock is read, a windowed rule is closed and the others open.
    for (id, v) in &c.tables.rule_limits {
        let windowed = role.limits.iter().any(|l| l.rule_id == *id && !l.windows.is_empty());
        assert_eq!(v.flags, if windowed { LIMIT_CLOSED } else { 0 }, "rule {id}");
    }

    let changed = load(&[("p.json", &p.replace("10/hour", "11/hour")), ("q.json", q)], &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p", "q"]}"#)]);
    assert_ne!(loaded.version(), changed.version(), "limits are part of the policy's version");
}
