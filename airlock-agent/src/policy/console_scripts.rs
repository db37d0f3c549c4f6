//! Console scripts: a protected program installed as a Python entry point
//! also runs as `python3 -m PACKAGE`. Debian's `/usr/bin/aws` is `import
//! awscli.clidriver` and pip's is `from awscli.clidriver import main`, so
//! `python3 -m awscli iam create-role` is `aws iam create-role`. The daemon
//! reads the scripts it finds for the programs the rules name, where it looks
//! for protected programs (exec identity), and gives their packages to the
//! compiler as more names of the program.
//!
//! A module found here only adds names under which a rule holds; it never
//! lets anything run, so a script the daemon misreads costs coverage, not
//! safety.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_policy::{LoadedPolicies, ProgramAliases, Status};

use super::dir_names::names_in_dir;

/// Bytes of a script read: entry-point scripts are a few lines.
const SCRIPT_HEAD: u64 = 16 * 1024;

/// Top-level modules a script imports that are never the program's own.
const NOT_THE_PROGRAM: &[&str] = &[
    "sys", "os", "re", "__future__", "runpy", "importlib", "pkg_resources", "typing", "warnings", "signal", "io", "site",
];

/// The programs the active policies' command rules name.
fn named_programs(loaded: &LoadedPolicies) -> BTreeSet<String> {
    loaded
        .policies
        .iter()
        .filter(|p| p.status == Status::Active)
        .flat_map(|p| p.blocked_commands.iter().chain(p.approval_commands.iter()))
        .map(|c| c.program.clone())
        .collect()
}

/// The Python packages that the console scripts of the named programs in
/// `dirs` run, as aliases of those programs.
pub fn find(loaded: &LoadedPolicies, dirs: &[PathBuf]) -> ProgramAliases {
    let mut out = ProgramAliases::default();
    let programs = named_programs(loaded);
    for dir in dirs {
        for program in names_in_dir(dir, &programs) {
            for module in script_modules(&dir.join(program)) {
                tracing::debug!(program, module, dir = %dir.display(), "console script: module runs the program");
                out.add(program, &module);
            }
        }
    }
    out
}

/// The packages a Python script at `path` takes its entry point from; empty
/// when it is no Python script or cannot be read.
fn script_modules(path: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut head = Vec::new();
    if file.take(SCRIPT_HEAD).read_to_end(&mut head).is_err() {
        return Vec::new();
    }
    modules_of_script(&String::from_utf8_lossy(&head))
}

/// The entry-point packages of a script's text: what `from X import` and
/// `import X` name, and a setuptools `load_entry_point('DIST==1.0', ...)`'s
/// distribution, less the standard modules every script imports.
pub fn modules_of_script(text: &str) -> Vec<String> {
    let mut lines = text.lines();
    let Some(shebang) = lines.next() else {
        return Vec::new();
    };
    if !(shebang.starts_with("#!") && shebang.contains("python")) {
        return Vec::new();
    }
    let mut found = BTreeSet::new();
    for line in lines.map(str::trim) {
        let named = if let Some(rest) = line.strip_prefix("from ") {
            rest.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("import ") {
            rest.split([',', ' ']).next()
        } else if let Some(at) = line.find("load_entry_point(") {
            line[at + "load_entry_point(".len()..].trim_start_matches(['\'', '"']).split(['=', '\'', '"', ',']).next()
        } else {
            None
        };
        let Some(top) = named.and_then(|m| m.split('.').next()) else {
            continue;
        };
        let identifier = top.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && top.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if identifier && !NOT_THE_PROGRAM.contains(&top) {
            found.insert(top.replace('-', "_"));
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_pip_and_setuptools_scripts_name_their_package() {
        let debian = "#!/usr/bin/python3\n# Copyright\nimport sys\nimport os\n\nif x:\n    pass\nimport awscli.clidriver\n\n\ndef main():\n    return awscli.clidriver.main()\n";
        assert_eq!(modules_of_script(debian), vec!["awscli"]);
        let pip = "#!/home/u/venv/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom awscli.clidriver import main\nif __name__ == '__main__':\n    sys.exit(main())\n";
        assert_eq!(modules_of_script(pip), vec!["awscli"]);
        let setuptools = "#!/usr/bin/python3\n# EASY-INSTALL-ENTRY-SCRIPT\nimport re\nimport sys\nfrom pkg_resources import load_entry_point\nsys.exit(load_entry_point('aws-cli==1.2', 'console_scripts', 'aws')())\n";
        assert_eq!(modules_of_script(setuptools), vec!["aws_cli"]);
    }

    #[test]
    fn other_files_name_nothing() {
        assert!(modules_of_script("#!/bin/sh\nimport awscli\n").is_empty());
        assert!(modules_of_script("\x7fELF\x02\x01").is_empty());
        assert!(modules_of_script("").is_empty());
        assert!(script_modules(Path::new("/nonexistent/airlock/aws")).is_empty());
    }
}
