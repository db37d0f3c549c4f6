//! Kernel tests for the forms a program runs in besides its own name: Python
//! modules (`python3 -m awscli iam create-role` is `aws iam create-role`),
//! scripts under `node_modules/.bin` run by `node`, and launchers (`npx`,
//! `npm exec`, `pnpm dlx`, `yarn dlx`, `pipx run`, `uvx`, `uv run`). A real
//! daemon on this kernel, real governed sessions, Debian's python3, node,
//! npm and awscli. The launchers Debian does not ship (pnpm, yarn, pipx, uv)
//! are stand-ins that run their operand, as the real ones do: the rule is
//! judged by the launcher's name and words, before the launcher runs.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

const POLICY: &str = r#"{
  "id": "forms", "name": "Module and launcher forms", "status": "active",
  "blocked_commands": ["aws iam create-role", "mytool deploy", "cdk deploy"] }"#;
const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["forms"] }"#;

/// Debian's interpreter, not a version manager's shim in front of it.
const PYTHON: &str = "/usr/bin/python3";

/// `mytool`: a console script in a directory the daemon is told of; at its
/// policy load it reads the script's entry point, `mytoolpkg.cli:main`.
fn install_mytool_script(tools: &Path) {
    write_file(
        &tools.join("mytool"),
        "#!/usr/bin/python3\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom mytoolpkg.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n",
        0o755,
    );
}

/// mytool's package: prints the marker and its arguments when run as
/// `python3 -m mytoolpkg[.cli]`.
fn install_mytool_package(d: &Daemon) {
    let pkg = d.work_dir.join("py/mytoolpkg");
    std::fs::create_dir_all(&pkg).expect("mkdir package");
    let main = "import sys\n\ndef main():\n    print('FAKE-TOOL-RAN', *sys.argv[1:])\n    return 0\n";
    write_file(&pkg.join("__init__.py"), "", 0o644);
    write_file(&pkg.join("cli.py"), &format!("{main}\nif __name__ == '__main__':\n    sys.exit(main())\n"), 0o644);
    write_file(&pkg.join("__main__.py"), "import sys\nfrom mytoolpkg.cli import main\nsys.exit(main())\n", 0o644);
}

fn daemon(tag: &str, tools: &TempDir) -> Daemon {
    let tools_arg = tools.0.display().to_string();
    Daemon::start_with(tag, &[("forms.json", POLICY)], &[("agent.json", ROLE)], &["--program-path", &tools_arg])
}

fn denies(d: &Daemon, session: &str) -> Vec<Value> {
    d.audit().into_iter().filter(|v| v["session_id"] == session && v["kind"] == "exec" && v["decision"] == "deny").collect()
}

/// Runs `script` governed: the program must not run, and a deny by `rule`
/// (found as `via`, when given) must reach the audit trail.
fn assert_denied(d: &Daemon, case: &str, script: &str, rule: &str, via: Option<&str>) {
    let s = d.governed(Some("agent"), script);
    assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
    assert!(!s.tool_ran(), "{case}: the blocked program ran:\n{}", s.all_output());
    let id = s.session_id.clone();
    let found = d.wait_audit(&format!("{case}: a deny by {rule:?}"), |v| {
        v["session_id"] == id.as_str() && v["decision"] == "deny" && v["rule"] == rule && via.is_none_or(|via| v["exec"]["matched_by"] == via)
    });
    assert!(!found.is_empty(), "{case}: {:#?}", denies(d, &id));
}

fn assert_runs(d: &Daemon, case: &str, script: &str) {
    let s = d.governed(Some("agent"), script);
    assert!(s.tool_ran(), "{case}: an allowed program did not run:\n{}", s.all_output());
    let found = denies(d, &s.session_id);
    assert!(found.is_empty(), "{case}: denies in a session whose program ran: {found:#?}");
}

/// `python3 -m MODULE`, `-mMODULE`, `-Im MODULE`, `-m MODULE.sub`,
/// `-m runpy MODULE` and `-W VALUE -m MODULE`, where MODULE is a console
/// script's package the daemon found on its own.
fn python_module_forms_are_the_program() {
    let tools = TempDir::new("forms-tools");
    install_mytool_script(&tools.0);
    let d = daemon("forms-python", &tools);
    install_mytool_package(&d);
    let py = format!("PYTHONPATH=$PWD/py {PYTHON}");
    assert_runs(&d, "python3 -m mytoolpkg status", &format!("{py} -m mytoolpkg status"));
    assert_runs(&d, "python3 -m mytoolpkg.cli status", &format!("{py} -m mytoolpkg.cli status"));
    let rule = "mytool deploy";
    assert_denied(&d, "-m MODULE", &format!("{py} -m mytoolpkg deploy"), rule, Some("interpreter"));
    assert_denied(&d, "-mMODULE", &format!("{py} -mmytoolpkg deploy"), rule, Some("interpreter"));
    assert_denied(&d, "-Bm MODULE", &format!("{py} -Bm mytoolpkg deploy"), rule, Some("interpreter"));
    assert_denied(&d, "-u -m MODULE.sub", &format!("{py} -u -m mytoolpkg.cli deploy"), rule, Some("interpreter"));
    assert_denied(&d, "-m runpy MODULE", &format!("{py} -m runpy mytoolpkg deploy"), rule, Some("interpreter"));
    assert_denied(&d, "-W VALUE -m MODULE", &format!("{py} -W ignore -m mytoolpkg deploy"), rule, Some("interpreter"));
    assert_denied(&d, "-X VALUE -mMODULE", &format!("{py} -X utf8 -mmytoolpkg deploy"), rule, Some("interpreter"));
    // The console script itself, by its own name, as before.
    assert_denied(&d, "the console script", &format!("PYTHONPATH=$PWD/py {}/mytool deploy", tools.0.display()), rule, None);
}

/// Debian's awscli: `python3 -m awscli iam create-role` is `aws iam create-role`.
fn the_aws_cli_as_a_module_is_aws() {
    if !Path::new("/usr/lib/python3/dist-packages/awscli/__main__.py").exists() {
        support::harness::skip("Debian's awscli is not installed (apt-get install awscli; scripts/setup.sh installs it)");
    }
    let tools = TempDir::new("forms-aws-tools");
    let d = daemon("forms-aws", &tools);
    let s = d.governed(Some("agent"), &format!("{PYTHON} -m awscli --version"));
    assert!(s.all_output().contains("aws-cli/"), "python3 -m awscli --version did not run:\n{}", s.all_output());
    assert!(denies(&d, &s.session_id).is_empty(), "aws --version was denied: {:#?}", denies(&d, &s.session_id));
    let create = "iam create-role --role-name airlock-test --assume-role-policy-document '{}' --endpoint-url http://127.0.0.1:9";
    for (case, script) in [
        ("python3 -m awscli", format!("{PYTHON} -m awscli {create}")),
        ("python3 -Im awscli", format!("{PYTHON} -Im awscli {create}")),
        ("python3 -m awscli.__main__", format!("{PYTHON} -m awscli.__main__ {create}")),
        ("python3 -mawscli", format!("{PYTHON} -mawscli {create}")),
        ("python3 -m runpy awscli", format!("{PYTHON} -m runpy awscli {create}")),
    ] {
        let s = d.governed(Some("agent"), &script);
        assert!(!s.session_id.is_empty(), "{case}: the session did not start: {}", s.all_output());
        assert!(!s.output.status.success(), "{case}: the command succeeded:\n{}", s.all_output());
        let id = s.session_id.clone();
        d.wait_audit(&format!("{case}: a deny by aws iam create-role"), |v| {
            v["session_id"] == id.as_str() && v["rule"] == "aws iam create-role" && v["exec"]["matched_by"] == "interpreter"
        });
    }
}

/// A package's program under node_modules/.bin, run by node or by a launcher.
fn node_and_launchers_run_the_program_they_name() {
    let tools = TempDir::new("forms-node-tools");
    let d = daemon("forms-node", &tools);
    let work = d.work_dir.clone();
    let bin = work.join("node_modules/.bin");
    std::fs::create_dir_all(&bin).expect("mkdir node_modules/.bin");
    write_file(&bin.join("cdk"), "#!/usr/bin/env node\nconsole.log('FAKE-TOOL-RAN', ...process.argv.slice(2));\n", 0o755);
    // Stand-ins for the launchers Debian does not ship: each runs its operand.
    let launchers = work.join("launchers");
    std::fs::create_dir_all(&launchers).expect("mkdir launchers");
    for (name, skip) in [("pnpm", 1), ("yarn", 1), ("pipx", 1), ("uvx", 0), ("uv", 1)] {
        let shifts = "shift\n".repeat(skip);
        write_file(&launchers.join(name), &format!("#!/bin/sh\n{shifts}[ \"$1\" = run ] && shift\nexec \"$@\"\n"), 0o755);
    }
    let path = format!("PATH={}:{}:$PATH", launchers.display(), bin.display());
    assert_runs(&d, "node node_modules/.bin/cdk synth", "node node_modules/.bin/cdk synth");
    assert_denied(&d, "node node_modules/.bin/cdk deploy", "node node_modules/.bin/cdk deploy", "cdk deploy", Some("interpreter"));
    assert_runs(&d, "uvx cdk synth (stand-in)", &format!("{path}; uvx cdk synth"));
    for (case, script) in [
        ("npx", "npx --no-install cdk deploy"),
        ("npm exec", "npm exec --no -- cdk deploy"),
        ("pnpm dlx (stand-in)", "pnpm dlx cdk deploy"),
        ("yarn dlx (stand-in)", "yarn dlx cdk deploy"),
        ("pipx run (stand-in)", "pipx run cdk deploy"),
        ("uvx (stand-in)", "uvx cdk deploy"),
        ("uv tool run (stand-in)", "uv tool run cdk deploy"),
    ] {
        assert_denied(&d, case, &format!("{path}; {script}"), "cdk deploy", None);
    }
}

kernel_tests!(python_module_forms_are_the_program, the_aws_cli_as_a_module_is_aws, node_and_launchers_run_the_program_they_name,);
