//! The module graph of every crate in the workspace, read from the sources:
//! which module uses which. `cargo xtask modules` prints it; the test below
//! fails when a module imports one that imports it back (directly or around a
//! longer loop).
//!
//! A use is any path that starts with `crate::`, `super::` or `self::` in
//! code (comments and strings are skipped), resolved to the longest module
//! it names. Declaring `mod child;` is not a use: a parent that only declares
//! its children, and children that use their parent's items, form no loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One crate's modules (`crate`, `crate::kernel`, ...) and the modules each uses.
pub struct CrateGraph {
    pub name: String,
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

/// The crates whose sources are checked: every workspace member's `src/`.
pub fn workspace_crates(root: &Path) -> Vec<(String, PathBuf)> {
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let src = entry.path().join("src");
        if entry.path().join("Cargo.toml").is_file() && src.is_dir() {
            crates.push((entry.file_name().to_string_lossy().into_owned(), src));
        }
    }
    crates.sort();
    crates
}

/// Reads one crate. Each root file (`lib.rs`, `main.rs`, `bin/*.rs`, `bin/*/main.rs`) is a crate of its own.
pub fn read_crate(name: &str, src: &Path) -> Result<Vec<CrateGraph>> {
    let mut roots = Vec::new();
    for root in ["lib.rs", "main.rs"] {
        if src.join(root).is_file() {
            roots.push((format!("{name} ({root})"), src.join(root)));
        }
    }
    for entry in std::fs::read_dir(src.join("bin")).into_iter().flatten().flatten() {
        // A binary is `bin/NAME.rs`, or `bin/NAME/main.rs` with its modules beside it.
        let path = entry.path();
        let root = if path.is_dir() { path.join("main.rs") } else { path };
        if root.is_file() {
            roots.push((format!("{name} (bin/{})", entry.file_name().to_string_lossy()), root));
        }
    }
    let mut graphs = Vec::new();
    for (label, root) in roots {
        let mut files = BTreeMap::new();
        collect(&root, "crate", &mut files)?;
        let modules: BTreeSet<String> = files.keys().cloned().collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, file) in &files {
            let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
            let used = edges.entry(module.clone()).or_default();
            for path in paths_in(&without_test_modules(&code_only(&text))) {
                if let Some(target) = resolve(module, &path, &modules) {
                    if target != *module {
                        used.insert(target);
                    }
                }
            }
        }
        graphs.push(CrateGraph { name: label, edges });
    }
    Ok(graphs)
}

/// Every module reachable from `file` through `mod name;` declarations.
fn collect(file: &Path, module: &str, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    out.insert(module.to_string(), file.to_path_buf());
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let dir = if matches!(file.file_name().and_then(|n| n.to_str()), Some("lib.rs" | "main.rs" | "mod.rs")) || file.parent().is_some_and(|p| p.ends_with("bin")) {
        file.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        file.with_extension("")
    };
    for line in code_only(&text).lines() {
        let line = line.trim();
        let decl = line.strip_prefix("pub ").or_else(|| line.strip_prefix("pub(crate) ")).or_else(|| line.strip_prefix("pub(super) ")).unwrap_or(line);
        let Some(name) = decl.strip_prefix("mod ").and_then(|rest| rest.strip_suffix(';')) else { continue };
        let name = name.trim();
        let child = [dir.join(format!("{name}.rs")), dir.join(name).join("mod.rs")].into_iter().find(|p| p.is_file());
        if let Some(child) = child {
            collect(&child, &format!("{module}::{name}"), out)?;
        }
    }
    Ok(())
}

/// The text with comments, string and char literals blanked out.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map(|e| e + 2).unwrap_or(rest.len());
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            i += end;
        } else if let Some(raw) = raw_string_len(rest) {
            out.extend(rest[..raw].chars().filter(|c| *c == '\n'));
            i += raw;
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() && rest.as_bytes()[j] != b'"' {
                j += if rest.as_bytes()[j] == b'\\' { 2 } else { 1 };
            }
            out.extend(rest[..(j + 1).min(rest.len())].chars().filter(|c| *c == '\n'));
            i += (j + 1).min(rest.len());
        } else if rest.starts_with("'") && rest.len() > 2 && (rest.as_bytes()[2] == b'\'' || rest.as_bytes()[1] == b'\\') {
            // A char literal ('x', '\n', '\''); a lifetime has no closing quote nearby.
            let end = rest[1..].find('\'').map(|e| e + 2).unwrap_or(1);
            i += if rest.as_bytes()[1] == b'\\' { rest[2..].find('\'').map(|e| e + 3).unwrap_or(1) } else { end };
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The code without its `#[cfg(test)] mod ... { }` blocks: tests are not
/// part of the product's module graph (their `use super::*` is no loop).
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{').filter(|&o| after[..o].contains("mod ")) else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The length of a raw string literal (`r"..."`, `r#"..."#`) at the start of `s`.
fn raw_string_len(s: &str) -> Option<usize> {
    let after_r = s.strip_prefix('r').or_else(|| s.strip_prefix("br"))?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(s.len() - after_r.len() + hashes + 1 + end + close.len())
}

/// Paths that start at `crate`, `super` or `self`, with `use` groups expanded
/// one level (`use super::{a::B, c}` gives `super::a::B` and `super::c`).
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let starts = ["crate::", "super::", "self::"];
    let mut i = 0;
    while i < code.len() {
        let at_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let Some(start) = starts.iter().find(|s| at_word && code[i..].starts_with(**s)) else {
            i += 1;
            continue;
        };
        let mut j = i + start.len();
        while j < code.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || code[j..].starts_with("::")) {
            j += if code[j..].starts_with("::") { 2 } else { 1 };
        }
        let prefix = code[i..j].trim_end_matches("::").to_string();
        if code[j..].starts_with('{') {
            let end = code[j..].find('}').map(|e| j + e).unwrap_or(code.len());
            for item in code[j + 1..end].split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim_start_matches('{').trim();
                if !item.is_empty() && item != "self" {
                    paths.push(format!("{prefix}::{}", item.split('{').next().unwrap_or(item).trim_end_matches("::")));
                }
            }
            paths.push(prefix);
            i = end;
        } else {
            paths.push(prefix);
            i = j;
        }
    }
    paths
}

/// The module a path from `module` names: its longest prefix that is a module.
fn resolve(module: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut parts: Vec<&str> = module.split("::").collect();
    let mut segments = path.split("::").peekable();
    match segments.peek() {
        Some(&"crate") => {
            parts = vec!["crate"];
            segments.next();
        }
        Some(&"self") => {
            segments.next();
        }
        _ => {
            while segments.peek() == Some(&"super") {
                segments.next();
                parts.pop();
            }
        }
    }
    let mut best = parts.join("::");
    if !modules.contains(&best) {
        return None;
    }
    for segment in segments {
        let candidate = format!("{best}::{segment}");
        if modules.contains(&candidate) {
            best = candidate;
        } else {
            break;
        }
    }
    Some(best)
}

/// Groups of modules that reach each other (strongly connected, more than one).
pub fn loops(graph: &CrateGraph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.edges.keys().collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut groups = Vec::new();
    for n in &nodes {
        if done.contains(*n) {
            continue;
        }
        let group: Vec<String> = nodes.iter().filter(|m| reachable[n].contains(**m) && reachable[**m].contains(*n)).map(|m| (*m).clone()).collect();
        if group.len() > 1 {
            done.extend(group.iter().cloned());
            groups.push(group);
        }
    }
    groups
}

/// `cargo xtask modules`: every crate's module uses, and any loop.
pub fn print(root: &Path) -> Result<()> {
    let mut any = false;
    for (name, src) in workspace_crates(root) {
        for graph in read_crate(&name, &src)? {
            println!("{}", graph.name);
            for (module, used) in &graph.edges {
                if !used.is_empty() {
                    println!("  {module} -> {}", used.iter().cloned().collect::<Vec<_>>().join(", "));
                }
            }
            for group in loops(&graph) {
                any = true;
                println!("  LOOP: {}", group.join(" <-> "));
            }
        }
    }
    if any {
        anyhow::bail!("some modules import a module that imports them back");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_in_code_not_comments_or_strings() {
        let code = code_only("use crate::a::{b::C, d};\n// crate::e::F\nlet s = \"crate::g\"; super::h::i(); r#\"self::j\"#;");
        let paths = paths_in(&code);
        assert!(paths.contains(&"crate::a::b::C".to_string()) && paths.contains(&"crate::a::d".to_string()), "{paths:?}");
        assert!(paths.contains(&"super::h::i".to_string()), "{paths:?}");
        assert!(!paths.iter().any(|p| p.contains('e') && p.starts_with("crate::e") || p.contains("::g") || p.contains("::j")), "{paths:?}");
    }

    #[test]
    fn test_modules_are_not_part_of_the_graph() {
        let code = "use crate::a::B;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    fn f() { if x { y } }\n}\nuse crate::c;";
        assert_eq!(paths_in(&without_test_modules(code)), vec!["crate::a::B".to_string(), "crate::c".to_string()]);
    }

    #[test]
    fn a_loop_is_found_and_a_parent_declaring_children_is_not_one() {
        let modules: BTreeSet<String> = ["crate", "crate::a", "crate::a::child", "crate::b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(resolve("crate::a::child", "super::Thing", &modules).as_deref(), Some("crate::a"));
        assert_eq!(resolve("crate::a", "crate::b::f", &modules).as_deref(), Some("crate::b"));
        let mut edges: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
        edges.get_mut("crate::a::child").unwrap().insert("crate::a".into());
        assert!(loops(&CrateGraph { name: "t".into(), edges: edges.clone() }).is_empty());
        edges.get_mut("crate::a").unwrap().insert("crate::b".into());
        edges.get_mut("crate::b").unwrap().insert("crate::a::child".into());
        let found = loops(&CrateGraph { name: "t".into(), edges });
        assert_eq!(found, vec![vec!["crate::a".to_string(), "crate::a::child".to_string(), "crate::b".to_string()]]);
    }

    /// The rule the architecture rests on: no module imports one that imports it back.
    #[test]
    fn no_module_in_the_workspace_imports_one_that_imports_it_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let mut found = Vec::new();
        let mut checked = 0;
        for (name, src) in workspace_crates(root) {
            for graph in read_crate(&name, &src).expect("read the crate") {
                checked += graph.edges.len();
                for group in loops(&graph) {
                    found.push(format!("{}: {}", graph.name, group.join(" <-> ")));
                }
            }
        }
        assert!(checked > 40, "only {checked} modules found: the reader is broken");
        assert!(found.is_empty(), "import loops:\n{}", found.join("\n"));
    }
}
