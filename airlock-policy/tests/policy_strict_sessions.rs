//! The role switch `exec.deny_session_written`: parsed with located errors,
//! off by default, and compiled into the role's kernel flags.

use airlock_common::abi::{ROLE_ALLOW_FILELESS, ROLE_ALLOW_LOADER, ROLE_DENY_SESSION_WRITTEN};
use airlock_policy::{load_dir, CompiledPolicy, PolicyErrors};

const POLICY: &str = r#"{ "id": "p", "name": "P", "blocked_commands": ["terraform apply"] }"#;

mod common;

use common::{role_flags, Scratch};

fn scratch(tag: &str, roles: &[(&str, &str)]) -> Scratch {
    Scratch::new("strict", tag, &[("p.json", POLICY)], roles)
}

fn compiled(s: &Scratch) -> CompiledPolicy {
    s.compiled()
}

fn errors(s: &Scratch) -> PolicyErrors {
    match load_dir(&s.0) {
        Ok(_) => panic!("the directory loaded; an error was expected"),
        Err(e) => e,
    }
}

#[test]
fn a_non_boolean_is_refused_with_file_line_and_field() {
    let s = scratch(
        "bad",
        &[("r.json", "{\n  \"id\": \"r\",\n  \"name\": \"R\",\n  \"policies\": [\"p\"],\n  \"exec\": {\n    \"deny_session_written\": \"yes\"\n  }\n}\n")],
    );
    let errs = errors(&s);
    let d = errs
        .errors
        .iter()
        .find(|d| d.file.ends_with("roles/r.json") && d.field == "exec.deny_session_written")
        .unwrap_or_else(|| panic!("no error for roles/r.json exec.deny_session_written in:\n{errs}"));
    assert_eq!(d.line, Some(6), "{d}");
}

#[test]
fn an_unknown_role_exec_switch_is_named() {
    let s = scratch("unknown", &[("r.json", r#"{"id":"r","name":"R","policies":["p"],"exec":{"deny_written":true}}"#)]);
    let errs = errors(&s);
    assert!(errs.to_string().contains("deny_written"), "{errs}");
}

/// ld.so maps the program it loads without an exec of it: a strict role
/// keeps the loader denied even where every policy allows it.
#[test]
fn a_strict_role_keeps_the_direct_loader_denied() {
    let s = scratch(
        "loader",
        &[
            ("plain.json", r#"{"id":"plain","name":"Plain","policies":["loose"]}"#),
            ("strict.json", r#"{"id":"strict","name":"Strict","policies":["loose"],"exec":{"deny_session_written":true}}"#),
        ],
    );
    std::fs::write(s.0.join("policies/loose.json"), r#"{"id":"loose","name":"Loose","exec":{"deny_direct_loader":false,"deny_fileless":false}}"#)
        .expect("write policy");
    let compiled = compiled(&s);
    let flags = |role: &str| role_flags(&compiled, role);
    assert_eq!(flags("plain") & (ROLE_ALLOW_LOADER | ROLE_ALLOW_FILELESS), ROLE_ALLOW_LOADER | ROLE_ALLOW_FILELESS);
    assert_eq!(flags("strict") & ROLE_ALLOW_LOADER, 0, "the loader stays denied in a strict role");
    assert_ne!(flags("strict") & ROLE_ALLOW_FILELESS, 0, "the fileless switch is the policies' to decide");
}

#[test]
fn the_switch_is_off_by_default_and_compiles_to_the_role_flag() {
    let s = scratch(
        "flags",
        &[
            ("plain.json", r#"{"id":"plain","name":"Plain","policies":["p"]}"#),
            ("strict.json", r#"{"id":"strict","name":"Strict","policies":["p"],"exec":{"deny_session_written":true}}"#),
            ("bare.json", r#"{"id":"bare","name":"Bare","exec":{"deny_session_written":true}}"#),
        ],
    );
    let compiled = compiled(&s);
    let flags = |role: &str| role_flags(&compiled, role);
    assert_eq!(flags("plain") & ROLE_DENY_SESSION_WRITTEN, 0, "off unless the role asks");
    assert_ne!(flags("strict") & ROLE_DENY_SESSION_WRITTEN, 0);
    // A role with no policies at all still carries the switch to the kernel.
    assert_ne!(flags("bare") & ROLE_DENY_SESSION_WRITTEN, 0);
    assert!(compiled.role("strict").expect("strict").deny_session_written);
    assert!(!compiled.role("plain").expect("plain").deny_session_written);
}
