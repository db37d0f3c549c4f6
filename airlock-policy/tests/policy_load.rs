//! Loading: every error names the file, the line and the field, and all
//! errors in a directory are reported together.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use airlock_policy::{
    compile, default_sources, load_dir, load_sources, Diagnostic, IdAllocator, PolicyErrors,
    PolicySource, Status,
};

/// A scratch policy directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(files: &[(&str, &str)]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "airlock-policy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["policies", "roles"] {
            fs::create_dir_all(dir.join(sub)).expect("create scratch dir");
        }
        for (name, content) in files {
            fs::write(dir.join(name), content).expect("write scratch file");
        }
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const GOOD_POLICY: &str = r#"{
  "id": "good",
  "name": "Good",
  "blocked_commands": ["terraform apply"]
}"#;
const GOOD_ROLE: &str = r#"{ "id": "r", "name": "R", "policies": ["good"] }"#;

fn errors_of(dir: &Path) -> PolicyErrors {
    match load_dir(dir) {
        Ok(l) => panic!("expected errors, loaded {} policies", l.policies.len()),
        Err(e) => e,
    }
}

fn find<'a>(errs: &'a PolicyErrors, file_suffix: &str, field: &str) -> &'a Diagnostic {
    errs.errors
        .iter()
        .find(|d| d.file.ends_with(file_suffix) && d.field == field)
        .unwrap_or_else(|| panic!("no error for {file_suffix} {field:?} in:\n{errs}"))
}

#[test]
fn bad_cidr_names_file_line_and_field() {
    let bad = "{\n  \"id\": \"net\",\n  \"name\": \"Net\",\n  \"egress\": {\n    \"deny\": [\n      \"10.0.0.0/8\",\n      \"10.0.0.0/33\"\n    ]\n  }\n}\n";
    let s = Scratch::new(&[
        ("policies/net.json", bad),
        (
            "roles/r.json",
            r#"{"id":"r","name":"R","policies":["net"]}"#,
        ),
    ]);
    let errs = errors_of(s.path());
    assert_eq!(errs.errors.len(), 1, "{errs}");
    let d = find(&errs, "policies/net.json", "egress.deny[1]");
    assert_eq!(d.line, Some(7), "{d}");
    assert!(d.message.contains("10.0.0.0/33"), "{d}");
    let shown = errs.to_string();
    assert!(shown.contains("net.json:7:"), "{shown}");
    assert!(shown.contains(": egress.deny[1]: "), "{shown}");
    assert!(
        !shown.contains("at line"),
        "position must not be repeated in the message: {shown}"
    );
}

#[test]
fn unknown_policy_in_role_names_index_and_line() {
    let role = "{\n  \"id\": \"r\",\n  \"name\": \"R\",\n  \"policies\": [\n    \"good\",\n    \"missing\"\n  ]\n}\n";
    let s = Scratch::new(&[("policies/good.json", GOOD_POLICY), ("roles/r.json", role)]);
    let errs = errors_of(s.path());
    let d = find(&errs, "roles/r.json", "policies[1]");
    assert_eq!((d.line, d.column), (Some(6), Some(6)), "{d}");
    assert!(d.message.contains("missing"), "{d}");

    let s = Scratch::new(&[("roles/r.yaml", "id: r\nname: R\npolicies:\n  - nope\n")]);
    let errs = errors_of(s.path());
    let d = find(&errs, "roles/r.yaml", "policies[0]");
    assert_eq!(d.line, Some(4), "{d}");
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let s = Scratch::new(&[
        (
            "policies/y.yaml",
            "id: y\nname: Y\nblocked_commands:\n  - terraform apply\n - oops: [\n",
        ),
        ("roles/r.json", GOOD_ROLE),
        ("policies/good.json", GOOD_POLICY),
    ]);
    let errs = errors_of(s.path());
    let d = errs
        .errors
        .iter()
        .find(|d| d.file.ends_with("y.yaml"))
        .unwrap_or_else(|| panic!("{errs}"));
    assert!(d.line.is_some_and(|l| l >= 4), "{d}");
}

#[test]
fn yaml_field_errors_have_path_and_line() {
    let s = Scratch::new(&[
        ("policies/y.yml", "id: y\nname: Y\negress:\n  deny:\n    - 10.0.0.0/8\n    - cidr: 127.0.0.2/32\n      ports: [22, 0]\n"),
        ("roles/r.json", r#"{"id":"r","name":"R","policies":["y"]}"#),
    ]);
    let errs = errors_of(s.path());
    let d = errs.errors.first().unwrap_or_else(|| panic!("{errs}"));
    assert!(d.field.starts_with("egress.deny[1]"), "{d}");
    assert_eq!(d.line, Some(7), "{d}");
    assert!(d.message.contains("port 0"), "{d}");
}

#[test]
fn duplicate_policy_id_names_both_files() {
    let s = Scratch::new(&[
        ("policies/a.json", GOOD_POLICY),
        (
            "policies/b.yaml",
            "# same id again\nid: good\nname: Again\n",
        ),
        ("roles/r.json", GOOD_ROLE),
    ]);
    let errs = errors_of(s.path());
    let d = find(&errs, "policies/b.yaml", "id");
    assert_eq!(d.line, Some(2), "{d}");
    assert!(
        d.message.contains("a.json:2"),
        "must name the first file and line: {d}"
    );
}

#[test]
fn option_word_in_blocked_command_is_explained() {
    let p = "{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"blocked_commands\": [\"terraform -auto-approve\"]\n}";
    let s = Scratch::new(&[
        ("policies/p.json", p),
        ("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
    ]);
    let errs = errors_of(s.path());
    assert_eq!(
        errs.errors.len(),
        1,
        "a broken policy must not also make the role's reference unknown: {errs}"
    );
    let d = find(&errs, "policies/p.json", "blocked_commands[0]");
    assert_eq!(d.line, Some(4));
    assert!(
        d.message.contains("-auto-approve") && d.message.contains("skipped when matching"),
        "{d}"
    );
}

#[test]
fn unknown_field_is_named() {
    let p =
        "{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"blocked_command\": [\"terraform apply\"]\n}";
    let s = Scratch::new(&[
        ("policies/p.json", p),
        ("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
    ]);
    let errs = errors_of(s.path());
    let d = find(&errs, "policies/p.json", "blocked_command");
    assert_eq!(d.line, Some(4), "{d}");
    assert!(
        d.message.contains("blocked_commands"),
        "should list the valid fields: {d}"
    );
}

#[test]
fn blocked_command_rules() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("terraform 'apply'", "quote"),
        ("terraform \\\"apply\\\"", "quote"),
        ("a b c d e f g h i", "at most 8"),
        ("kubectl delete -f", "skipped when matching"),
    ];
    for (cmd, want) in cases {
        let p = format!(r#"{{"id": "p", "name": "P", "blocked_commands": ["ok", "{cmd}"]}}"#);
        let errs = load_sources(vec![PolicySource::policy("p.json", p)]).expect_err(cmd);
        let d = &errs.errors[0];
        assert_eq!(d.field, "blocked_commands[1]", "{cmd}: {d}");
        assert!(d.message.contains(want), "{cmd}: {d}");
    }
    let long = "x".repeat(256);
    let p = format!(r#"{{"id": "p", "name": "P", "blocked_commands": ["terraform {long}"]}}"#);
    let errs = load_sources(vec![PolicySource::policy("p.json", p)]).expect_err("long word");
    assert!(errs.errors[0].message.contains("at most 255"), "{errs}");

    let ok = load_sources(vec![PolicySource::policy(
        "p.json",
        r#"{"id": "p", "name": "P", "blocked_commands": ["/opt/homebrew/bin/terraform   apply", "a b c d e f g h"]}"#,
    )])
    .expect("valid");
    let c = &ok.policies[0].blocked_commands[0];
    assert_eq!(
        (c.program.as_str(), c.words.as_slice(), c.text.as_str()),
        (
            "terraform",
            &["apply".to_string()][..],
            "/opt/homebrew/bin/terraform apply"
        )
    );
}

#[test]
fn field_validation() {
    let cases = [
        (r#"{"id": "Bad", "name": "x"}"#, "id", "invalid id"),
        (r#"{"id": "-bad", "name": "x"}"#, "id", "invalid id"),
        (r#"{"name": "x"}"#, "", "missing field `id`"),
        (
            r#"{"id": "ok", "name": "x", "status": "on"}"#,
            "status",
            "unknown variant",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"deny": ["1.2.3.4/33"]}}"#,
            "egress.deny[0]",
            "not a valid CIDR",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"deny": ["local host"]}}"#,
            "egress.deny[0]",
            "not a valid IP address, CIDR or hostname",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"deny": [{"cidr": "10.0.0.0/8", "ports": []}]}}"#,
            "egress.deny[0]",
            "must not be empty",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"deny": [{"cidr": "10.0.0.0/8", "ports": [70000]}]}}"#,
            "egress.deny[0].ports[0]",
            "out of range",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"deny": [{"cidr": "10.0.0.0/8", "port": [80]}]}}"#,
            "egress.deny[0].port",
            "unknown field",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"permit": []}}"#,
            "egress.permit",
            "unknown field",
        ),
        (
            r#"{"id": "ok", "name": "x", "egress": {"deny": [42]}}"#,
            "egress.deny[0]",
            "invalid type",
        ),
        (r#"{"id": "ok", "name": "x"} trailing"#, "", "trailing"),
    ];
    for (json, field, want) in cases {
        let errs = load_sources(vec![PolicySource::policy("p.json", json)]).expect_err(json);
        let d = &errs.errors[0];
        assert_eq!(d.field, field, "{json}: {d}");
        assert!(d.message.contains(want), "{json}: {d}");
        assert!(d.line.is_some(), "{json}: {d}");
    }
    let long_id = format!(r#"{{"id": "{}", "name": "x"}}"#, "a".repeat(65));
    assert!(load_sources(vec![PolicySource::policy("p.json", long_id)]).is_err());
}

#[test]
fn rules_array_is_kept_with_a_warning() {
    let p =
        "{\n \"id\": \"p\", \"name\": \"P\",\n \"rules\": [{\"when\": {\"tool\": \"bash\"}}]\n}";
    let loaded = load_sources(vec![
        PolicySource::policy("p.json", p),
        PolicySource::role("r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
    ])
    .expect("loads");
    assert_eq!(loaded.policies[0].rules.len(), 1);
    let w = loaded
        .warnings
        .iter()
        .find(|w| w.field == "rules")
        .expect("warning");
    assert_eq!(w.line, Some(3));
    assert!(w.message.contains("not enforced"));
}

#[test]
fn directory_problems_are_reported() {
    let missing = std::env::temp_dir().join("airlock-policy-test-does-not-exist");
    let errs = errors_of(&missing);
    assert!(
        errs.errors[0].file == missing && errs.errors[0].message.contains("does not exist"),
        "{errs}"
    );

    let s = Scratch::new(&[]);
    fs::remove_dir_all(s.path().join("roles")).expect("rm roles");
    let errs = errors_of(s.path());
    assert!(
        errs.errors
            .iter()
            .any(|d| d.file.ends_with("roles") && d.message.contains("missing")),
        "{errs}"
    );

    let s = Scratch::new(&[
        ("policies/good.json", GOOD_POLICY),
        ("policies/README.md", "notes"),
        ("roles/r.json", GOOD_ROLE),
    ]);
    let loaded = load_dir(s.path()).expect("loads");
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.file.ends_with("README.md") && w.message.contains("ignored")));
}

#[test]
fn errors_from_all_files_are_collected() {
    let s = Scratch::new(&[
        (
            "policies/a.json",
            r#"{"id": "a", "name": "A", "egress": {"deny": ["no pe"]}}"#,
        ),
        (
            "policies/b.json",
            r#"{"id": "b", "name": "B", "blocked_commands": ["x -y"]}"#,
        ),
        ("policies/c.yaml", "id: c\nname: [\n"),
        (
            "roles/r.json",
            r#"{"id": "r", "name": "R", "policies": ["a", "b", "zzz"]}"#,
        ),
    ]);
    let errs = errors_of(s.path());
    let files: Vec<String> = errs.errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(errs.errors.len(), 4, "{}", files.join("\n"));
    assert!(errs.to_string().lines().count() == 4);
}

#[test]
fn shipped_policies_load_and_compile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let loaded = load_dir(&dir).unwrap_or_else(|e| panic!("shipped policies must load:\n{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    for p in &loaded.policies {
        assert_eq!(p.status, Status::Active, "{}", p.id);
    }
    let c = compile(&loaded, &mut IdAllocator::new());
    for role in ["default", "terraform-restricted-agent"] {
        let r = c
            .role(role)
            .unwrap_or_else(|| panic!("role {role} missing"));
        assert_eq!(r.policies.len(), 3, "{role}");
        assert_eq!(r.commands.len(), 31, "{role}");
        assert_eq!(r.egress.len(), 4, "{role}");
        assert_eq!(r.unix.len(), 11, "{role}");
    }
    assert_eq!(c.role_sets.len(), 2);

    // The embedded copy is the same content.
    let embedded =
        load_sources(default_sources()).unwrap_or_else(|e| panic!("embedded set must load:\n{e}"));
    assert_eq!(embedded.version(), loaded.version());
}

/// The `exec` switches are booleans with located errors.
#[test]
fn exec_switches_are_validated() {
    let s = Scratch::new(&[
        (
            "policies/p.json",
            "{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"exec\": {\n    \"deny_fileless\": \"no\"\n  }\n}\n",
        ),
        ("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
    ]);
    let errs = errors_of(s.path());
    let d = find(&errs, "policies/p.json", "exec.deny_fileless");
    assert_eq!(d.line, Some(5), "{d}");

    let s = Scratch::new(&[
        (
            "policies/p.json",
            "{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"exec\": {\n    \"deny_memfd\": true\n  }\n}\n",
        ),
        ("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
    ]);
    let errs = errors_of(s.path());
    assert!(errs.to_string().contains("deny_memfd"), "{errs}");

    let s = Scratch::new(&[
        ("policies/p.json", r#"{"id":"p","name":"P","exec":{"deny_direct_loader":false}}"#),
        ("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#),
    ]);
    let loaded = load_dir(s.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.policies[0].exec.deny_fileless, "deny_fileless defaults to on");
    assert!(!loaded.policies[0].exec.deny_direct_loader);
}

#[test]
fn approval_commands_share_the_grammar_and_its_errors() {
    let p = "{\n  \"id\": \"p\",\n  \"name\": \"P\",\n  \"approval_commands\": [\"terraform apply\", \"kubectl -n prod delete\"]\n}";
    let s = Scratch::new(&[("policies/p.json", p), ("roles/r.json", r#"{"id":"r","name":"R","policies":["p"]}"#)]);
    let errs = errors_of(s.path());
    let d = find(&errs, "policies/p.json", "approval_commands[1]");
    assert_eq!(d.line, Some(4));
    assert!(d.message.contains("-n"), "{d}");
}

#[test]
fn bad_rate_limits_and_time_windows_name_file_line_and_field() {
    let bad = "{\n  \"id\": \"pace\",\n  \"name\": \"Pace\",\n  \"rate_limits\": {\n    \"kubectl *\": \"100/fortnight\"\n  },\n  \"time_windows\": {\n    \"terraform apply\": \"Mon-Fry 09:00-17:00\"\n  }\n}\n";
    let s = Scratch::new(&[("policies/pace.json", bad), ("roles/r.json", r#"{"id":"r","name":"R","policies":["pace"]}"#)]);
    let errs = errors_of(s.path());
    let d = find(&errs, "policies/pace.json", "rate_limits.kubectl *");
    assert_eq!(d.line, Some(5), "{d}");
    assert!(d.message.contains("100/fortnight") && d.message.contains("second, minute, hour or day"), "{d}");

    let bad_window = bad.replace("100/fortnight", "100/minute");
    let s = Scratch::new(&[("policies/pace.json", &bad_window), ("roles/r.json", r#"{"id":"r","name":"R","policies":["pace"]}"#)]);
    let errs = errors_of(s.path());
    let d = find(&errs, "policies/pace.json", "time_windows.terraform apply");
    assert_eq!(d.line, Some(8), "{d}");
    assert!(d.message.contains("unknown day \"Fry\""), "{d}");

    let bad_pattern = bad_window.replace("Mon-Fry", "Mon-Fri").replace("\"kubectl *\"", "\"kubectl * pods\"");
    let s = Scratch::new(&[("policies/pace.json", &bad_pattern), ("roles/r.json", r#"{"id":"r","name":"R","policies":["pace"]}"#)]);
    let errs = errors_of(s.path());
    let d = errs.errors.iter().find(|d| d.field.starts_with("rate_limits")).unwrap_or_else(|| panic!("no rate_limits error in:\n{errs}"));
    assert!(d.message.contains("may only stand alone as the last word") && d.line == Some(5), "{d}");
}
