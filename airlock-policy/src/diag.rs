//! Diagnostics that point at a file, a line and a field, so an operator can
//! fix a policy without guessing.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a policy directory or source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based, when known.
    pub line: Option<usize>,
    /// 1-based, when known.
    pub column: Option<usize>,
    /// The path of the offending field, e.g. `egress.deny[2]`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line: None,
            column: None,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn at(mut self, pos: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = pos {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found while loading, plus the warnings gathered on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// 1-based (line, column) of a byte offset; the column counts characters.
pub(crate) fn line_col(content: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(content.len());
    let before = content.get(..offset).unwrap_or(content);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':')
}

/// Finds where a value sits in a file that serde has already accepted: the
/// `nth` whole-token occurrence of `value` after the key `key`. Cross-file
/// errors (duplicate ids, unknown references) have no parser position, and
/// this is close enough to put the operator on the right line.
pub(crate) fn locate(content: &str, key: &str, value: &str, nth: usize) -> Option<(usize, usize)> {
    let start = find_key(content, key).unwrap_or(0);
    let hay = content.get(start..)?;
    let mut seen = 0;
    let mut from = 0;
    while let Some(rel) = hay.get(from..)?.find(value) {
        let at = from + rel;
        let before_ok = hay
            .get(..at)
            .and_then(|s| s.chars().next_back())
            .is_none_or(|c| !is_token_char(c));
        let after_ok = hay
            .get(at + value.len()..)
            .and_then(|s| s.chars().next())
            .is_none_or(|c| !is_token_char(c));
        if before_ok && after_ok {
            if seen == nth {
                return Some(line_col(content, start + at));
            }
            seen += 1;
        }
        from = at + value.len().max(1);
    }
    None
}

/// Offset just past the key `key` as JSON (`"key"`) or YAML (`key:`) spells it.
pub(crate) fn find_key(content: &str, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    if let Some(i) = content.find(&quoted) {
        return Some(i + quoted.len());
    }
    let mut from = 0;
    while let Some(rel) = content.get(from..)?.find(key) {
        let at = from + rel;
        let line_start = content.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
        let indent_only = content
            .get(line_start..at)?
            .chars()
            .all(|c| c == ' ' || c == '\t' || c == '-');
        if indent_only
            && content
                .get(at + key.len()..)?
                .trim_start_matches([' ', '\t'])
                .starts_with(':')
        {
            return Some(at + key.len());
        }
        from = at + key.len().max(1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn locate_finds_whole_tokens_after_the_key() {
        let json = "{\n \"id\": \"a\",\n \"policies\": [\"ab\",\n  \"a\"]\n}";
        assert_eq!(locate(json, "policies", "a", 0), Some((4, 4)));
        let yaml = "id: a\npolicies:\n  - ab\n  - a\n";
        assert_eq!(locate(yaml, "policies", "a", 0), Some((4, 5)));
    }
}
