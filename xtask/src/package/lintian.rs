//! `lintian` on a built package: any error fails, and so does any warning
//! that docs/packaging.md ("Lintian") does not explain.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Warnings that stay, each explained in docs/packaging.md.
pub const EXPLAINED_WARNINGS: &[&str] = &[];

pub fn check(deb: &Path) -> Result<()> {
    eprintln!("==> lintian {}", deb.display());
    // lintian's own exit status is ignored: its findings are read below.
    let out = Command::new("lintian")
        .args(["--fail-on", "none", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .context("run lintian (Debian's lintian package; scripts/setup.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("lintian could not check {} ({}): {}", deb.display(), out.status, stderr.trim());
    }
    let findings = findings(&text);
    for finding in &findings {
        println!("lintian: {}", finding.line);
    }
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == 'E').collect();
    let unexplained: Vec<&Finding> = findings.iter().filter(|f| f.severity == 'W' && !EXPLAINED_WARNINGS.contains(&f.tag.as_str())).collect();
    if !errors.is_empty() || !unexplained.is_empty() {
        let mut report = String::new();
        for f in errors.iter().chain(&unexplained) {
            report.push_str(&format!("\n  {}", f.line));
        }
        bail!("lintian on {}: {} error(s), {} warning(s) not explained in docs/packaging.md:{report}", deb.display(), errors.len(), unexplained.len());
    }
    println!("lintian: {}: no errors; {} explained warning(s)", deb.display(), findings.iter().filter(|f| f.severity == 'W').count());
    Ok(())
}

#[derive(Debug, PartialEq)]
pub struct Finding {
    pub severity: char,
    pub tag: String,
    pub line: String,
}

/// "E: airlock-agent: tag-name extra words" lines; other output is ignored.
pub fn findings(text: &str) -> Vec<Finding> {
    text.lines()
        .filter_map(|line| {
            let (severity, rest) = line.split_once(": ")?;
            let severity = match severity {
                "E" => 'E',
                "W" => 'W',
                "I" => 'I',
                "P" => 'P',
                "X" => 'X',
                _ => return None,
            };
            let (_package, detail) = rest.split_once(": ")?;
            let tag = detail.split_whitespace().next()?.to_string();
            Some(Finding { severity, tag, line: line.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lintian_findings() {
        let text = "E: airlock-agent: no-changelog usr/share/doc/airlock-agent/changelog.gz (native package)\nW: airlock-agent: no-manual-page [usr/bin/airlock-agent]\nN: a note\n";
        let found = findings(text);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].severity, found[0].tag.as_str()), ('E', "no-changelog"));
        assert_eq!((found[1].severity, found[1].tag.as_str()), ('W', "no-manual-page"));
    }
}
