//! Module aliases and launchers: `npx cdk deploy`, `uv tool run aws ...` and a
//! program run under a module's name are judged as the program, by both
//! reference matchers (the rule semantics and the kernel's table walk).

use airlock_policy::matcher::{match_exec_naive, Decision, ExecInput, TableMatcher};
use airlock_policy::{
    compile, compile_with_aliases, load_sources, CompiledPolicy, IdAllocator, LoadedPolicies, PolicySource, ProgramAliases,
    RuleKind,
};

fn load(policy: &str) -> LoadedPolicies {
    load_sources(vec![
        PolicySource::policy("p.json", policy),
        PolicySource::role("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The rule text both matchers deny `argv` with, or "allow"; panics when they disagree.
fn judge(c: &CompiledPolicy, argv: &[&str]) -> String {
    let role = c.role("r").expect("role r");
    let input = ExecInput::new(argv[0], argv);
    let naive = match_exec_naive(role, &input);
    let table = TableMatcher::new(c).match_exec(role.set_id, &input);
    assert_eq!(naive, table, "the matchers disagree on {argv:?}");
    match table {
        Decision::Allow => "allow".to_string(),
        Decision::Deny { rule_id, .. } => c.rule(rule_id).map_or_else(|| format!("rule {rule_id}"), |r| r.kind.text().to_string()),
    }
}

const POLICY: &str = r#"{"id": "p", "name": "P", "blocked_commands": [
    "aws iam create-role", "cdk deploy", "terraform", "npx cdk destroy"],
    "approval_commands": ["kubectl delete"],
    "programs": {"terraform": {"python_module": ["tfwrap", "tf.cli"]}}}"#;

#[test]
fn launchers_run_the_program_their_operand_names() {
    let c = compile(&load(POLICY), &mut IdAllocator::new());
    let rows: &[(&[&str], &str)] = &[
        (&["npx", "cdk", "deploy"], "cdk deploy"),
        (&["npx", "--yes", "-p", "aws-cdk", "cdk", "deploy", "--all"], "cdk deploy"),
        (&["npx", "cdk", "synth"], "allow"),
        // The policy's own rule under npx and the linked program's rules both hold.
        (&["npx", "cdk", "destroy"], "npx cdk destroy"),
        (&["npm", "exec", "--", "cdk", "deploy"], "cdk deploy"),
        (&["npm", "x", "cdk", "deploy"], "cdk deploy"),
        (&["npm", "install", "cdk", "deploy"], "allow"),
        (&["pnpm", "dlx", "aws", "iam", "create-role"], "aws iam create-role"),
        (&["yarn", "dlx", "terraform", "plan"], "terraform"),
        (&["bunx", "terraform"], "terraform"),
        (&["pipx", "run", "--spec", "awscli", "aws", "iam", "create-role"], "aws iam create-role"),
        (&["uvx", "--from", "awscli", "aws", "iam", "create-role"], "aws iam create-role"),
        (&["uv", "run", "aws", "iam", "list-roles"], "allow"),
        (&["uv", "tool", "run", "aws", "iam", "create-role"], "aws iam create-role"),
        (&["uv", "pip", "install", "aws", "iam", "create-role"], "allow"),
        // Module names, as programs and under launchers.
        (&["awscli", "iam", "create-role"], "aws iam create-role"),
        (&["uvx", "awscli", "iam", "create-role"], "aws iam create-role"),
        (&["tfwrap", "apply"], "terraform"),
        (&["tf.cli"], "terraform"),
        (&["awscli", "s3", "ls"], "allow"),
        // Approval rules are not linked: the program the launcher starts is asked for once.
        (&["npx", "kubectl", "delete", "pod"], "allow"),
    ];
    let mut failures = Vec::new();
    for (argv, want) in rows {
        let got = judge(&c, argv);
        if got != *want {
            failures.push(format!("{argv:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn aliases_found_on_the_host_join_the_shipped_ones() {
    let loaded = load(r#"{"id": "p", "name": "P", "blocked_commands": ["gcloud compute instances delete"]}"#);
    let bare = compile(&loaded, &mut IdAllocator::new());
    assert_eq!(judge(&bare, &["googlecloudsdk", "compute", "instances", "delete"]), "allow");
    let mut found = ProgramAliases::default();
    found.add("gcloud", "googlecloudsdk");
    let c = compile_with_aliases(&loaded, &mut IdAllocator::new(), &found);
    assert_eq!(judge(&c, &["googlecloudsdk", "compute", "instances", "delete"]), "gcloud compute instances delete");
    assert_eq!(judge(&c, &["uv", "run", "googlecloudsdk", "compute", "instances", "delete"]), "gcloud compute instances delete");
    let role = c.role("r").expect("role");
    assert_eq!(role.aliases.of("gcloud").collect::<Vec<_>>(), vec!["googlecloudsdk"]);
    assert!(matches!(c.rules.values().next().map(|r| &r.kind), Some(RuleKind::Command { .. })));
}

#[test]
fn a_bad_programs_entry_is_refused_with_its_place() {
    let err = load_sources(vec![PolicySource::policy(
        "p.json",
        "{\"id\": \"p\", \"name\": \"P\",\n \"programs\": {\"aws\": {\"python_module\": \"aws cli\"}}}",
    )])
    .expect_err("a module name with a space");
    let text = err.to_string();
    assert!(text.contains("p.json:2:") && text.contains("python_module \"aws cli\""), "{text}");
}
