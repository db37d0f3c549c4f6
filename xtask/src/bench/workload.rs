//! A realistic agent workload: build a small C project with `make -j2`, then
//! a run of git commands, governed against no daemon (A B A per round).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::daemon::{run_worker, Daemon, Tagging, Tools};
use super::policy;
use super::storms::{wait_drained, wait_no_airlock_programs};

const C_FILES: usize = 20;

pub struct Plan {
    pub rounds: usize,
    pub git_iterations: usize,
}

pub struct WorkloadResult {
    pub baseline_ns: Vec<f64>,
    pub governed_ns: Vec<f64>,
    pub ratio: Vec<f64>,
    /// Decisions (audit lines) one governed run produced.
    pub decisions_per_run: u64,
    pub rules: usize,
}

pub fn run(tools: &Tools, work: &Path, plan: &Plan) -> Result<WorkloadResult> {
    let rules = 1_000;
    let policy_dir = policy::write_dir(&work.join("workload-policy"), &policy::commands(rules), &policy::cidrs(10))?;
    let project = work.join("workload");
    let script = write_project(&project, plan.git_iterations)?;
    let script = script.to_str().context("the work dir path is not UTF-8")?.to_string();
    let args = ["script", script.as_str()];
    let plain = || -> Result<f64> {
        wait_no_airlock_programs()?;
        Ok(run_worker(tools, Tagging::Untagged, &args)? as f64)
    };
    plain()?; // warm-up: compiler and git binaries into the page cache
    let mut result = WorkloadResult { baseline_ns: Vec::new(), governed_ns: Vec::new(), ratio: Vec::new(), decisions_per_run: 0, rules };
    let mut before = plain()?;
    for round in 0..plan.rounds {
        eprintln!("==> agent workload, round {}/{}", round + 1, plan.rounds);
        let daemon = Daemon::start(tools, &policy_dir, &work.join(format!("daemon-workload-r{round}")))?;
        let governed = run_worker(tools, Tagging::Governed(&daemon), &args)? as f64;
        result.decisions_per_run = wait_drained(&daemon)?.audit_lines;
        daemon.stop()?;
        let after = plain()?;
        result.baseline_ns.push(before);
        result.governed_ns.push(governed);
        result.ratio.push(governed / ((before + after) / 2.0));
        before = after;
    }
    result.baseline_ns.push(before);
    Ok(result)
}

/// Writes the C project and the script that builds it and drives git; returns the script's path.
fn write_project(dir: &Path, git_iterations: usize) -> Result<PathBuf> {
    let src = dir.join("c");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    let mut main = String::from("#include <stdio.h>\n");
    let mut calls = String::new();
    for i in 0..C_FILES {
        let body = format!(
            "#include <string.h>\n\nint f{i}(int x)\n{{\n\tint a[64];\n\tfor (int k = 0; k < 64; k++)\n\t\ta[k] = x * k + {i};\n\tint s = 0;\n\tfor (int k = 0; k < 64; k++)\n\t\ts += a[k] % 7;\n\treturn s;\n}}\n"
        );
        write(&src.join(format!("f{i}.c")), &body)?;
        let _ = writeln!(main, "int f{i}(int);");
        let _ = writeln!(calls, "\ttotal += f{i}({i});");
    }
    let _ = write!(main, "\nint main(void)\n{{\n\tint total = 0;\n{calls}\tprintf(\"%d\\n\", total);\n\treturn 0;\n}}\n");
    write(&src.join("main.c"), &main)?;
    let objs: Vec<String> = std::iter::once("main.o".to_string()).chain((0..C_FILES).map(|i| format!("f{i}.o"))).collect();
    let makefile = format!(
        "CFLAGS = -O2 -Wall\nOBJS = {}\n\napp: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\nclean:\n\trm -f app $(OBJS)\n",
        objs.join(" ")
    );
    write(&src.join("Makefile"), &makefile)?;

    let repo = dir.join("repo");
    let script = format!(
        r#"set -euo pipefail
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
cd '{src}'
make -s clean
make -s -j2
./app
rm -rf '{repo}'
mkdir '{repo}'
cd '{repo}'
git -c init.defaultBranch=main init -q
cp '{src}'/*.c '{src}'/Makefile .
git add -A
git commit -qm initial
for i in $(seq {git_iterations}); do
	echo "/* edit $i */" >> f0.c
	git status --short
	git add f0.c
	git commit -qm "edit $i"
	git log --oneline -n 5
done
"#,
        src = src.display(),
        repo = repo.display(),
    );
    let path = dir.join("workload.sh");
    write(&path, &script)?;
    Ok(path)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}
