//! `protected_files` in policies: defaults, validation with located
//! errors, and the kernel entries (per-role rule, allowed program names).

use airlock_common::abi::{word_hash, FileAllowKey, FileRuleKey};
use airlock_policy::{
    compile, default_protected_files, load_sources, IdAllocator, LoadedPolicies, PolicyErrors,
    PolicySource, RuleKind,
};

fn load(policies: &[(&str, &str)], roles: &[(&str, &str)]) -> Result<LoadedPolicies, PolicyErrors> {
    let mut sources: Vec<PolicySource> = policies.iter().map(|(n, c)| PolicySource::policy(*n, *c)).collect();
    sources.extend(roles.iter().map(|(n, c)| PolicySource::role(*n, *c)));
    load_sources(sources)
}

fn allowed(c: &airlock_policy::CompiledPolicy, set_id: u32, pattern: &str, program: &str) -> bool {
    let key = FileAllowKey {
        set_id,
        pad: 0,
        class_hash: word_hash(pattern.as_bytes()),
        name_hash: word_hash(program.as_bytes()),
    };
    c.tables.file_allow.iter().any(|(k, _)| *k == key)
}

fn protects(c: &airlock_policy::CompiledPolicy, set_id: u32, pattern: &str) -> bool {
    let key = FileRuleKey { set_id, pad: 0, class_hash: word_hash(pattern.as_bytes()) };
    c.tables.file_rules.iter().any(|(k, _)| *k == key)
}

#[test]
fn a_policy_without_the_field_protects_the_defaults() {
    let loaded = load(&[("p.json", r#"{"id": "p", "name": "P"}"#)], &[("r.json", r#"{"id": "r", "name": "R", "policies": ["p"]}"#)]).unwrap();
    assert_eq!(loaded.policies[0].protected_files, default_protected_files());
    let c = compile(&loaded, &mut IdAllocator::new());
    let set = c.role("r").unwrap().set_id;
    for pattern in ["~/.aws/credentials", "~/.kube/config", "~/.ssh/id_*", "~/.config/gh/hosts.yml"] {
        assert!(protects(&c, set, pattern), "{pattern} is not protected by default");
        assert!(c.protected.values().any(|p| p.text == pattern));
    }
    assert!(allowed(&c, set, "~/.aws/credentials", "aws"));
    assert!(!allowed(&c, set, "~/.aws/credentials", "cat"));
    assert!(allowed(&c, set, "~/.kube/config", "kubectl"));
    assert!(allowed(&c, set, "~/.ssh/id_*", "ssh"));
    assert!(allowed(&c, set, "~/.config/gh/hosts.yml", "gh"));
    let ssh = c.protected.values().find(|p| p.text == "~/.ssh/id_*").unwrap();
    assert_eq!((ssh.components.clone(), ssh.prefix), (vec![".ssh".to_string(), "id_".to_string()], true));
}

#[test]
fn an_empty_list_protects_nothing_and_entries_take_both_forms() {
    let loaded = load(
        &[
            ("none.json", r#"{"id": "none", "name": "N", "protected_files": []}"#),
            (
                "mine.yaml",
                "id: mine\nname: M\nprotected_files:\n  - ~/.netrc\n  - path: ~/.docker/config.json\n    allow: [docker, docker]\n",
            ),
        ],
        &[
            ("a.json", r#"{"id": "a", "name": "A", "policies": ["none"]}"#),
            ("b.json", r#"{"id": "b", "name": "B", "policies": ["mine"]}"#),
        ],
    )
    .unwrap();
    let c = compile(&loaded, &mut IdAllocator::new());
    let (a, b) = (c.role("a").unwrap(), c.role("b").unwrap());
    assert!(a.files.is_empty());
    assert!(protects(&c, b.set_id, "~/.netrc"));
    assert!(!allowed(&c, b.set_id, "~/.netrc", "cat"), "a bare path allows no program");
    assert!(allowed(&c, b.set_id, "~/.docker/config.json", "docker"));
    assert_eq!(b.files.iter().find(|f| f.pattern.text == "~/.docker/config.json").unwrap().allow, vec!["docker".to_string()]);
    let rule = c.rule(b.files[0].rule_id).unwrap();
    assert_eq!(rule.kind, RuleKind::File { text: "~/.netrc".into() });
}

#[test]
fn two_policies_protecting_one_file_allow_only_what_both_allow() {
    let loaded = load(
        &[
            ("x.json", r#"{"id": "x", "name": "X", "protected_files": [{"path": "~/.aws/credentials", "allow": ["aws", "terraform"]}]}"#),
            ("y.json", r#"{"id": "y", "name": "Y", "protected_files": [{"path": "~/.aws/credentials", "allow": ["aws"]}]}"#),
        ],
        &[("r.json", r#"{"id": "r", "name": "R", "policies": ["x", "y"]}"#)],
    )
    .unwrap();
    let c = compile(&loaded, &mut IdAllocator::new());
    let r = c.role("r").unwrap();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].policy_id, "x");
    assert!(allowed(&c, r.set_id, "~/.aws/credentials", "aws"));
    assert!(!allowed(&c, r.set_id, "~/.aws/credentials", "terraform"));
}

#[test]
fn bad_entries_name_file_line_and_field() {
    let cases = [
        (r#""/etc/shadow""#, "must start with \"~/\""),
        (r#""~/.ssh/*/id""#, "only wildcard allowed"),
        (r#""~/.ssh/id_*x""#, "only wildcard allowed"),
        (r#""~/../root/.aws/credentials""#, "\"..\""),
        (r#""~//x""#, "empty"),
        (r#"{"path": "~/.aws/credentials", "allow": ["/usr/bin/aws"]}"#, "plain executable name"),
        (r#"{"path": "~/.aws/credentials", "programs": ["aws"]}"#, "unknown field"),
    ];
    for (entry, message) in cases {
        let text = format!("{{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"protected_files\": [\n    {entry}\n  ]\n}}\n");
        let errs = match load(&[("p.json", &text)], &[]) {
            Ok(_) => panic!("{entry} was accepted"),
            Err(e) => e,
        };
        let d = errs.errors.iter().find(|d| d.field.starts_with("protected_files[0]")).unwrap_or_else(|| panic!("no located error for {entry}: {errs}"));
        assert_eq!(d.line, Some(5), "{entry}: {d}");
        assert!(d.message.contains(message), "{entry}: {d}");
    }
}
