//! The bypass catalogue, as tables: every row is run through the naive
//! matcher and the kernel-table walk, and both must give the expected answer.

use std::net::IpAddr;

use airlock_common::abi::{MAX_ACTIVE, MAX_WORDS};
use airlock_policy::matcher::{
    egress_allowing_rules, egress_denying_rules, match_exec_naive, Decision, DenyReason, EgressDecision, EgressInput,
    ExecInput, MatchVia, TableMatcher,
};
use airlock_policy::{
    compile, load_sources, CompiledPolicy, IdAllocator, PolicySource, RuleKind,
};

const INFRA: &str = r#"{
  "id": "infra", "name": "Infra",
  "blocked_commands": ["terraform apply", "terraform destroy", "kubectl delete", "aws iam create-role",
                       "helm uninstall", "pulumi destroy"],
  "egress": { "deny": ["10.0.0.0/8", "169.254.169.254", "fd00::/8", {"cidr": "127.0.0.2/32", "ports": [8080]}] }
}"#;
const NUKE: &str = r#"{ "id": "nuke", "name": "Nuke", "blocked_commands": ["rm-everything"] }"#;
const PARKED: &str = r#"{ "id": "parked", "name": "Parked", "status": "inactive",
  "blocked_commands": ["terraform apply"], "egress": {"deny": ["0.0.0.0/0"]} }"#;

fn fixture() -> CompiledPolicy {
    let loaded = load_sources(vec![
        PolicySource::policy("infra.json", INFRA),
        PolicySource::policy("nuke.json", NUKE),
        PolicySource::policy("parked.json", PARKED),
        PolicySource::role(
            "agent.json",
            r#"{"id": "agent", "name": "A", "policies": ["infra", "nuke"]}"#,
        ),
        PolicySource::role(
            "lazy.json",
            r#"{"id": "lazy", "name": "L", "policies": ["parked"]}"#,
        ),
    ])
    .unwrap_or_else(|e| panic!("fixture must load:\n{e}"));
    compile(&loaded, &mut IdAllocator::new())
}

fn exec(exe: &str, argv: &[&str]) -> ExecInput {
    ExecInput::new(exe, argv)
}

/// Which rule text a decision names, so rows read like the catalogue.
fn explain(c: &CompiledPolicy, d: Decision) -> String {
    match d {
        Decision::Allow => "allow".into(),
        Decision::Deny {
            rule_id,
            reason: DenyReason::Rule,
            via,
        } => match c.rule(rule_id).map(|r| &r.kind) {
            Some(RuleKind::Command { text }) => format!("deny {text} via {via:?}"),
            other => panic!("rule {rule_id} is not a command rule: {other:?}"),
        },
        Decision::Deny { reason, via, .. } => format!("deny {reason:?} via {via:?}"),
    }
}

fn long_argv(program: &str, first: &str, n: usize) -> Vec<String> {
    let mut v = vec![program.to_string(), first.to_string()];
    v.extend((v.len()..n).map(|i| format!("-var=x{i}")));
    v
}

#[test]
fn exec_bypass_catalogue() {
    let c = fixture();
    let m = TableMatcher::new(&c);
    let tf70 = long_argv("terraform", "plan", 70);
    let ls70 = long_argv("ls", "-l", 70);
    let tf70: Vec<&str> = tf70.iter().map(String::as_str).collect();
    let ls70: Vec<&str> = ls70.iter().map(String::as_str).collect();

    let cases: Vec<(&str, &str, ExecInput, &str)> = vec![
        // (why, role, input, expected)
        (
            "plain",
            "agent",
            exec("terraform", &["terraform", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "absolute path",
            "agent",
            exec("terraform", &["/opt/homebrew/bin/terraform", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "relative path",
            "agent",
            exec("terraform", &["./terraform", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "option before",
            "agent",
            exec("terraform", &["terraform", "-chdir=infra", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "flag before",
            "agent",
            exec("terraform", &["terraform", "-auto-approve", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "option with value",
            "agent",
            exec(
                "kubectl",
                &["kubectl", "--context", "prod", "delete", "pod", "x"],
            ),
            "deny kubectl delete via Executable",
        ),
        (
            "namespace flag",
            "agent",
            exec(
                "kubectl",
                &["kubectl", "-n", "default", "delete", "pod", "x"],
            ),
            "deny kubectl delete via Executable",
        ),
        (
            "renamed symlink",
            "agent",
            exec("terraform", &["tf", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "multi-call binary",
            "agent",
            exec("busybox", &["/tmp/terraform", "apply"]),
            "deny terraform apply via Argv0",
        ),
        (
            "after env exec",
            "agent",
            exec("terraform", &["terraform", "apply"]),
            "deny terraform apply via Executable",
        ),
        (
            "helm",
            "agent",
            exec("helm", &["helm", "uninstall", "web"]),
            "deny helm uninstall via Executable",
        ),
        (
            "pulumi",
            "agent",
            exec("pulumi", &["pulumi", "destroy", "--yes"]),
            "deny pulumi destroy via Executable",
        ),
        (
            "interpreted script",
            "agent",
            exec(
                "python3",
                &[
                    "/usr/bin/python3",
                    "/usr/local/bin/aws",
                    "iam",
                    "create-role",
                    "--role-name",
                    "x",
                ],
            )
            .with_script("/usr/local/bin/aws"),
            "deny aws iam create-role via Script",
        ),
        (
            "env shebang",
            "agent",
            exec(
                "env",
                &[
                    "/usr/bin/env",
                    "python3",
                    "/usr/local/bin/aws",
                    "iam",
                    "create-role",
                ],
            )
            .with_script("/usr/local/bin/aws"),
            "deny aws iam create-role via Script",
        ),
        (
            "script path not in argv",
            "agent",
            exec("python3", &["aws", "iam", "create-role"]).with_script("/usr/local/bin/aws"),
            "deny aws iam create-role via Argv0",
        ),
        (
            "too long to inspect",
            "agent",
            exec("terraform", &tf70),
            "deny ArgvTooLong via Executable",
        ),
        (
            "bare program",
            "agent",
            exec("rm-everything", &["rm-everything", "--help"]),
            "deny rm-everything via Executable",
        ),
        (
            "bare program, no args",
            "agent",
            exec("rm-everything", &["rm-everything"]),
            "deny rm-everything via Executable",
        ),
        (
            "bare program, empty argv",
            "agent",
            exec("rm-everything", &[]),
            "deny rm-everything via Executable",
        ),
        (
            "words apart",
            "agent",
            exec(
                "aws",
                &[
                    "aws",
                    "--profile",
                    "p",
                    "iam",
                    "--region",
                    "x",
                    "create-role",
                ],
            ),
            "deny aws iam create-role via Executable",
        ),
        // allowed
        (
            "plan",
            "agent",
            exec("terraform", &["terraform", "plan"]),
            "allow",
        ),
        (
            "init",
            "agent",
            exec("terraform", &["terraform", "init"]),
            "allow",
        ),
        (
            "word inside an argument",
            "agent",
            exec("terraform", &["terraform", "show", "plan-apply.out"]),
            "allow",
        ),
        (
            "read only",
            "agent",
            exec("kubectl", &["kubectl", "get", "pods"]),
            "allow",
        ),
        (
            "other program",
            "agent",
            exec("echo", &["echo", "terraform", "apply"]),
            "allow",
        ),
        ("long, no rules", "agent", exec("ls", &ls70), "allow"),
        (
            "inactive policy",
            "lazy",
            exec("terraform", &["terraform", "apply"]),
            "allow",
        ),
        (
            "words out of order",
            "agent",
            exec("aws", &["aws", "create-role", "iam"]),
            "allow",
        ),
        (
            "option spelling of a word",
            "agent",
            exec("terraform", &["terraform", "--apply"]),
            "allow",
        ),
        ("empty argv", "agent", exec("terraform", &[]), "allow"),
        (
            "script, harmless",
            "agent",
            exec("python3", &["python3", "/usr/local/bin/aws", "s3", "ls"])
                .with_script("/usr/local/bin/aws"),
            "allow",
        ),
    ];

    let mut failures = Vec::new();
    for (why, role, input, want) in &cases {
        let r = c.role(role).unwrap_or_else(|| panic!("no role {role}"));
        let naive = explain(&c, match_exec_naive(r, input));
        let table = explain(&c, m.match_exec(r.set_id, input));
        if naive != *want || table != *want {
            failures.push(format!(
                "{why}: want {want:?}, naive {naive:?}, table {table:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn argv_bytes_limit_is_a_deny_too() {
    let c = fixture();
    let r = c.role("agent").expect("role");
    let mut input = exec("terraform", &["terraform", "plan"]);
    input.argv_bytes = 5000;
    let want = Decision::Deny {
        rule_id: 0,
        reason: DenyReason::ArgvTooLong,
        via: MatchVia::Executable,
    };
    assert_eq!(match_exec_naive(r, &input), want);
    assert_eq!(TableMatcher::new(&c).match_exec(r.set_id, &input), want);
    // Exactly at the limit the argv is still inspected.
    let mut at_limit: Vec<String> = vec!["terraform".into()];
    at_limit.extend((1..MAX_WORDS).map(|i| format!("w{i}")));
    let refs: Vec<&str> = at_limit.iter().map(String::as_str).collect();
    assert_eq!(
        TableMatcher::new(&c).match_exec(r.set_id, &exec("terraform", &refs)),
        Decision::Allow
    );
}

#[test]
fn egress_catalogue() {
    let c = fixture();
    let m = TableMatcher::new(&c);
    let agent = c.role("agent").expect("role");
    let lazy = c.role("lazy").expect("role");
    let cases: Vec<(&str, u16, Option<&str>)> = vec![
        ("10.1.2.3", 443, Some("10.0.0.0/8")),
        ("::ffff:10.1.2.3", 443, Some("10.0.0.0/8")),
        ("fd00::1", 443, Some("fd00::/8")),
        ("127.0.0.2", 8080, Some("127.0.0.2/32 ports 8080")),
        ("::ffff:127.0.0.2", 8080, Some("127.0.0.2/32 ports 8080")),
        ("127.0.0.2", 8081, None),
        ("0.0.0.0", 8080, Some("127.0.0.2/32 ports 8080")),
        ("::ffff:0.0.0.0", 8080, Some("127.0.0.2/32 ports 8080")),
        ("0.0.0.0", 80, None),
        ("127.0.0.1", 80, None),
        ("169.254.169.254", 80, Some("169.254.169.254")),
        ("::ffff:169.254.169.254", 80, Some("169.254.169.254")),
        ("11.0.0.1", 443, None),
        ("fe80::1", 443, None),
        ("::1", 8080, None),
    ];
    let mut failures = Vec::new();
    for (addr, port, want) in &cases {
        let ip: IpAddr = addr.parse().expect("test address");
        let input = EgressInput::new(ip, *port);
        let got = match m.match_egress(agent.set_id, &input) {
            EgressDecision::Allow => None,
            EgressDecision::Deny { rule_id } => match c.rule(rule_id).map(|r| &r.kind) {
                Some(RuleKind::Egress { text }) => Some(text.clone()),
                other => panic!("rule {rule_id} is not an egress rule: {other:?}"),
            },
            other => panic!("{addr}: a default-allow role got {other:?}"),
        };
        let naive = egress_denying_rules(agent, &input);
        if got.as_deref() != *want || naive.is_empty() == want.is_some() {
            failures.push(format!(
                "{addr} port {port}: want {want:?}, table {got:?}, naive rules {naive:?}"
            ));
        }
        assert_eq!(
            m.match_egress(lazy.set_id, &input),
            EgressDecision::Allow,
            "inactive policy enforced for {addr}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn egress_loopback_aliases_for_v6_and_wide_rules() {
    let loaded = load_sources(vec![
        PolicySource::policy(
            "p.json",
            r#"{"id": "p", "name": "P", "egress": {"deny": ["::1", "127.0.0.0/8", "::ffff:192.168.0.0/112"]}}"#,
        ),
        PolicySource::role("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#),
    ])
    .expect("loads");
    let c = compile(&loaded, &mut IdAllocator::new());
    let m = TableMatcher::new(&c);
    let r = c.role("r").expect("role");
    for (addr, deny) in [
        ("::", true),
        ("::1", true),
        ("0.0.0.0", true),
        ("127.9.9.9", true),
        ("::ffff:127.9.9.9", true),
        ("192.168.4.4", true),
        ("::ffff:192.168.4.4", true),
        ("192.169.0.1", false),
        ("::2", false),
    ] {
        let input = EgressInput::new(addr.parse().expect("addr"), 1234);
        assert_eq!(
            m.match_egress(r.set_id, &input).is_deny(),
            deny,
            "table, {addr}"
        );
        assert_eq!(
            !egress_denying_rules(r, &input).is_empty(),
            deny,
            "naive, {addr}"
        );
    }
}

/// A tiny xorshift so the fuzz below is reproducible without extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Distinct rule prefixes that own a trie node (all but the last word) and
/// appear in order among `args`: what the kernel's active set would hold.
fn reachable_nodes(c: &CompiledPolicy, role: &str, program: &[u8], args: &[Vec<u8>]) -> usize {
    let r = c.role(role).expect("role");
    let mut prefixes = std::collections::BTreeSet::new();
    for rule in r
        .commands
        .iter()
        .filter(|x| x.program.as_bytes() == program)
    {
        for len in 1..rule.words.len() {
            let p = &rule.words[..len];
            let mut it = args.iter();
            if p.iter().all(|w| it.any(|a| a.as_slice() == w.as_bytes())) {
                prefixes.insert(p.to_vec());
            }
        }
    }
    prefixes.len() + 1
}

fn agree_on_random_argv(
    c: &CompiledPolicy,
    role: &str,
    vocabulary: &[&str],
    seed: u64,
    rounds: usize,
) -> (usize, usize) {
    let m = TableMatcher::new(c);
    let r = c.role(role).expect("role");
    let programs: Vec<&str> = r
        .commands
        .iter()
        .map(|x| x.program.as_str())
        .chain(["echo", "python3"])
        .collect();
    let mut rng = XorShift(seed);
    let (mut denies, mut overflows) = (0, 0);
    for round in 0..rounds {
        let program = programs[rng.below(programs.len())];
        let n = rng.below(12);
        let mut argv = vec![program.to_string()];
        for _ in 0..n {
            argv.push(vocabulary[rng.below(vocabulary.len())].to_string());
        }
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let exe = if rng.below(4) == 0 {
            "busybox"
        } else {
            program
        };
        let input = exec(exe, &refs);
        let naive = match_exec_naive(r, &input);
        let table = m.match_exec(r.set_id, &input);
        if let Decision::Deny {
            reason: DenyReason::MatchOverflow,
            ..
        } = table
        {
            overflows += 1;
            let args = &input.argv[1..];
            let nodes = reachable_nodes(c, role, program.as_bytes(), args);
            assert!(
                nodes > MAX_ACTIVE,
                "round {round}: overflow with only {nodes} nodes reachable: {argv:?}"
            );
            continue;
        }
        assert_eq!(naive, table, "round {round}: {argv:?} (exe {exe})");
        if table.is_deny() {
            denies += 1;
        }
    }
    (denies, overflows)
}

#[test]
fn naive_and_table_agree_on_random_argv() {
    let c = fixture();
    let vocab = [
        "apply",
        "destroy",
        "delete",
        "iam",
        "create-role",
        "uninstall",
        "plan",
        "pod",
        "x",
        "-auto-approve",
        "--context",
        "prod",
        "terraform",
        "kubectl",
        "aws",
        "",
    ];
    let (denies, _) = agree_on_random_argv(&c, "agent", &vocab, 0x9e37_79b9_7f4a_7c15, 20_000);
    assert!(
        denies > 1000,
        "the fuzz must exercise denies too, got {denies}"
    );
}

#[test]
fn naive_and_table_agree_on_shared_prefixes_and_repeats() {
    let policy = r#"{"id": "p", "name": "P", "blocked_commands": [
        "kubectl delete", "kubectl delete namespace", "kubectl rollout undo", "kubectl rollout restart deployment",
        "x a a", "x a b a", "x b a", "x a b c d e f", "x c", "x a b", "x a b"
    ]}"#;
    let loaded = load_sources(vec![
        PolicySource::policy("p.json", policy),
        PolicySource::role("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#),
    ])
    .expect("loads");
    let c = compile(&loaded, &mut IdAllocator::new());
    let vocab = [
        "delete",
        "namespace",
        "rollout",
        "undo",
        "restart",
        "deployment",
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
        "-a",
        "z",
    ];
    let (denies, _) = agree_on_random_argv(&c, "r", &vocab, 42, 20_000);
    assert!(denies > 1000);

    // A single "a" must not satisfy "x a a".
    let r = c.role("r").expect("role");
    let m = TableMatcher::new(&c);
    assert_eq!(
        m.match_exec(r.set_id, &exec("x", &["x", "a"])),
        Decision::Allow
    );
    assert!(m
        .match_exec(r.set_id, &exec("x", &["x", "a", "z", "a"]))
        .is_deny());
}

#[test]
fn active_set_overflow_is_a_fail_closed_deny() {
    // 20 rules "p wN end": after seeing all wN the walk tracks 21 nodes.
    let cmds: Vec<String> = (0..20).map(|i| format!("\"p w{i} end\"")).collect();
    let policy = format!(
        r#"{{"id": "p", "name": "P", "blocked_commands": [{}]}}"#,
        cmds.join(",")
    );
    let loaded = load_sources(vec![
        PolicySource::policy("p.json", policy),
        PolicySource::role("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#),
    ])
    .expect("loads");
    let c = compile(&loaded, &mut IdAllocator::new());
    let r = c.role("r").expect("role");
    let m = TableMatcher::new(&c);
    let mut argv: Vec<String> = vec!["p".into()];
    argv.extend((0..20).map(|i| format!("w{i}")));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_eq!(
        m.match_exec(r.set_id, &exec("p", &refs)),
        Decision::Deny {
            rule_id: 0,
            reason: DenyReason::MatchOverflow,
            via: MatchVia::Executable
        }
    );
    // Fewer distinct prefixes than the limit are tracked without loss.
    let few: Vec<&str> = refs[..MAX_ACTIVE].to_vec();
    assert_eq!(m.match_exec(r.set_id, &exec("p", &few)), Decision::Allow);
    let mut few_then_end = few.clone();
    few_then_end.push("end");
    assert!(matches!(
        m.match_exec(r.set_id, &exec("p", &few_then_end)),
        Decision::Deny {
            reason: DenyReason::Rule,
            ..
        }
    ));

    let vocab: Vec<String> = (0..20)
        .map(|i| format!("w{i}"))
        .chain(["end".to_string()])
        .collect();
    let vocab: Vec<&str> = vocab.iter().map(String::as_str).collect();
    agree_on_random_argv(&c, "r", &vocab, 7, 5_000);
}

#[test]
fn naive_and_table_agree_on_random_egress() {
    let c = fixture();
    let m = TableMatcher::new(&c);
    let r = c.role("agent").expect("role");
    let mut rng = XorShift(0xdead_beef);
    let ports = [0u16, 22, 80, 443, 8080, 8081];
    let mut denies = 0;
    for _ in 0..20_000 {
        let pick = rng.below(6);
        let v4 = [
            [
                10,
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ],
            [127, 0, 0, rng.below(4) as u8],
            [0, 0, 0, rng.below(2) as u8],
            [169, 254, 169, 253 + rng.below(3) as u8],
            [
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ],
            [11, 0, 0, 1],
        ][pick];
        let ip4 = std::net::Ipv4Addr::from(v4);
        let addr: IpAddr = match rng.below(3) {
            0 => ip4.into(),
            1 => ip4.to_ipv6_mapped().into(),
            _ => {
                let mut b = [0u8; 16];
                b[0] = [0xfd, 0xfc, 0x00][rng.below(3)];
                b[15] = rng.below(3) as u8;
                std::net::Ipv6Addr::from(b).into()
            }
        };
        let input = EgressInput::new(addr, ports[rng.below(ports.len())]);
        let naive = egress_denying_rules(r, &input);
        match m.match_egress(r.set_id, &input) {
            EgressDecision::Allow => {
                assert!(naive.is_empty(), "{input:?}: naive denies by {naive:?}")
            }
            EgressDecision::Deny { rule_id } => {
                denies += 1;
                assert!(
                    naive.contains(&rule_id),
                    "{input:?}: table rule {rule_id}, naive {naive:?}"
                );
            }
            other => panic!("{input:?}: a default-allow role got {other:?}"),
        }
    }
    assert!(denies > 1000);
}

const FENCED: &str = r#"{ "id": "fenced", "name": "Fenced", "egress": {
  "allow": ["10.1.0.0/16", {"cidr": "127.0.0.0/8", "ports": [443]}, "fd00::/16", "::ffff:192.168.1.0/120"],
  "deny": ["10.1.2.0/24", {"cidr": "127.0.0.5/32", "ports": [443]}, "169.254.169.254", "fd00:0:0:1::/64"] } }"#;

/// One policy with allow and deny entries, under a default-deny role and a
/// default-allow role.
fn fenced() -> CompiledPolicy {
    let loaded = load_sources(vec![
        PolicySource::policy("fenced.json", FENCED),
        PolicySource::role(
            "strict.json",
            r#"{"id": "strict", "name": "S", "policies": ["fenced"], "egress_default": "deny"}"#,
        ),
        PolicySource::role("open.json", r#"{"id": "open", "name": "O", "policies": ["fenced"]}"#),
    ])
    .unwrap_or_else(|e| panic!("fixture must load:\n{e}"));
    compile(&loaded, &mut IdAllocator::new())
}

/// The reference semantics of a role's egress: a deny rule wins; a role whose
/// default is deny then needs an allow rule; otherwise the destination is allowed.
fn egress_naive(role: &airlock_policy::CompiledRole, input: &EgressInput) -> (&'static str, Vec<u32>) {
    let denying = egress_denying_rules(role, input);
    if !denying.is_empty() {
        return ("deny", denying);
    }
    if !role.egress_default_deny {
        return ("allow", Vec::new());
    }
    let allowing = egress_allowing_rules(role, input);
    if allowing.is_empty() {
        ("default-deny", Vec::new())
    } else {
        ("allowed-by", allowing)
    }
}

/// The table walk and the reference agree, and the decision names the rule
/// (or its absence) the row expects.
fn agrees(c: &CompiledPolicy, m: &TableMatcher, role: &str, input: &EgressInput) -> String {
    let r = c.role(role).expect("role");
    let (kind, rules) = egress_naive(r, input);
    let got = m.match_egress(r.set_id, input);
    let (table_kind, table_rule) = match got {
        EgressDecision::Allow => ("allow", None),
        EgressDecision::Deny { rule_id } => ("deny", Some(rule_id)),
        EgressDecision::AllowedBy { rule_id } => ("allowed-by", Some(rule_id)),
        EgressDecision::DefaultDeny => ("default-deny", None),
    };
    assert_eq!(kind, table_kind, "{role} {input:?}: reference {kind} {rules:?}, table {got:?}");
    match table_rule {
        Some(id) => {
            assert!(rules.contains(&id), "{role} {input:?}: table rule {id}, reference {rules:?}");
            let text = match c.rule(id).map(|r| &r.kind) {
                Some(RuleKind::Egress { text }) => text.clone(),
                other => panic!("rule {id} is not an egress rule: {other:?}"),
            };
            // Allow rules are named "allow <entry>" already.
            if kind == "allowed-by" { text } else { format!("{kind} {text}") }
        }
        None => kind.to_string(),
    }
}

#[test]
fn egress_default_deny_catalogue() {
    let c = fenced();
    let m = TableMatcher::new(&c);
    let cases: Vec<(&str, u16, &str, &str)> = vec![
        ("10.1.9.9", 80, "allow 10.1.0.0/16", "allow"),
        ("::ffff:10.1.9.9", 80, "allow 10.1.0.0/16", "allow"),
        ("10.1.2.3", 80, "deny 10.1.2.0/24", "deny 10.1.2.0/24"),
        ("10.2.0.1", 80, "default-deny", "allow"),
        ("127.0.0.1", 443, "allow 127.0.0.0/8 ports 443", "allow"),
        ("127.0.0.1", 80, "default-deny", "allow"),
        ("127.0.0.5", 443, "deny 127.0.0.5/32 ports 443", "deny 127.0.0.5/32 ports 443"),
        ("fd00:0:0:2::1", 22, "allow fd00::/16", "allow"),
        ("fd00:0:0:1::1", 22, "deny fd00:0:0:1::/64", "deny fd00:0:0:1::/64"),
        ("fd01::1", 22, "default-deny", "allow"),
        ("192.168.1.7", 80, "allow ::ffff:192.168.1.0/120", "allow"),
        ("192.168.2.7", 80, "default-deny", "allow"),
        ("169.254.169.254", 80, "deny 169.254.169.254", "deny 169.254.169.254"),
        ("::1", 443, "default-deny", "allow"),
    ];
    let mut failures = Vec::new();
    for (addr, port, strict, open) in cases {
        let input = EgressInput::new(addr.parse().expect("test address"), port);
        let got = (agrees(&c, &m, "strict", &input), agrees(&c, &m, "open", &input));
        if (got.0.as_str(), got.1.as_str()) != (strict, open) {
            failures.push(format!("{addr} port {port}: want ({strict}, {open}), got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn naive_and_table_agree_on_random_egress_under_a_default_deny_role() {
    let c = fenced();
    let m = TableMatcher::new(&c);
    let mut rng = XorShift(0x5eed_f00d);
    let ports = [0u16, 22, 80, 443];
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..20_000 {
        let v4 = [
            [10, rng.below(3) as u8, rng.below(4) as u8, rng.below(256) as u8],
            [127, 0, 0, rng.below(8) as u8],
            [0, 0, 0, 0],
            [192, 168, rng.below(3) as u8, rng.below(256) as u8],
            [169, 254, 169, 253 + rng.below(3) as u8],
            [rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8],
        ][rng.below(6)];
        let ip4 = std::net::Ipv4Addr::from(v4);
        let addr: IpAddr = match rng.below(3) {
            0 => ip4.into(),
            1 => ip4.to_ipv6_mapped().into(),
            _ => {
                let mut b = [0u8; 16];
                b[0] = [0xfd, 0xfd, 0xfe, 0x00][rng.below(4)];
                b[1] = rng.below(2) as u8;
                b[7] = rng.below(3) as u8;
                b[15] = rng.below(3) as u8;
                std::net::Ipv6Addr::from(b).into()
            }
        };
        let input = EgressInput::new(addr, ports[rng.below(ports.len())]);
        for role in ["strict", "open"] {
            agrees(&c, &m, role, &input);
            let kind = egress_naive(c.role(role).expect("role"), &input).0.to_string();
            *seen.entry((role, kind)).or_insert(0u32) += 1;
        }
    }
    // Every outcome was reached often enough to mean something.
    for (role, kind) in [("strict", "deny"), ("strict", "allowed-by"), ("strict", "default-deny"), ("open", "deny"), ("open", "allow")] {
        let n = seen.get(&(role, kind.to_string())).copied().unwrap_or(0);
        assert!(n > 200, "{role}/{kind} reached {n} times: {seen:?}");
    }
}
