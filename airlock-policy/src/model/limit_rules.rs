//! `rate_limits` and `time_windows`: maps from a command pattern to a limit.
//!
//! A pattern is a command as in `blocked_commands`, optionally ending in ` *`
//! (any arguments: `kubectl *` is every run of kubectl), or `*` alone: every
//! exec of the session. The maps keep the order the document gives them,
//! because the kernel counts an exec against the first pattern of a role that
//! names it (and against `*`).

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::CommandPattern;

/// What a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitPattern {
    /// `*`: every exec of the session.
    EveryExec,
    /// A command prefix; `text` is the pattern as written (`kubectl *`).
    Command { text: String, command: CommandPattern },
}

impl LimitPattern {
    /// The pattern as the policy wrote it (whitespace collapsed).
    pub fn text(&self) -> &str {
        match self {
            LimitPattern::EveryExec => "*",
            LimitPattern::Command { text, .. } => text,
        }
    }
}

impl LimitPattern {
    /// What the kernel matches: `kubectl *` and `kubectl` are one pattern.
    fn matched(&self) -> &str {
        match self {
            LimitPattern::EveryExec => "*",
            LimitPattern::Command { command, .. } => &command.text,
        }
    }
}

impl fmt::Display for LimitPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl FromStr for LimitPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_ascii_whitespace().collect();
        match words.as_slice() {
            [] => return Err("the command pattern is empty; write a command (\"kubectl *\") or \"*\" for every command".into()),
            ["*"] => return Ok(LimitPattern::EveryExec),
            _ => {}
        }
        // "kubectl *" is "kubectl" with any arguments, which a command prefix already means.
        let (last, init) = words.split_last().unwrap_or((&"", &[]));
        let prefix: &[&str] = if *last == "*" { init } else { &words };
        if let Some(star) = prefix.iter().find(|w| w.contains('*')) {
            return Err(format!(
                "command pattern {s:?} has {star:?}: a '*' may only stand alone as the last word \
                 (\"kubectl *\": any arguments) or as the whole pattern (\"*\": every command)"
            ));
        }
        let command: CommandPattern = prefix.join(" ").parse()?;
        Ok(LimitPattern::Command { text: words.join(" "), command })
    }
}

impl<'de> Deserialize<'de> for LimitPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::deserialize_from_str(deserializer, "a command pattern such as \"kubectl *\" or \"*\"")
    }
}

/// A `pattern: limit` map in document order. Repeating a pattern is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitMap<V>(pub Vec<(LimitPattern, V)>);

impl<V> Default for LimitMap<V> {
    fn default() -> Self {
        LimitMap(Vec::new())
    }
}

impl<V> LimitMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = &(LimitPattern, V)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for LimitMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = LimitMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from a command pattern (\"kubectl *\", \"*\") to its limit")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(LimitPattern, V)> = Vec::new();
                while let Some(pattern) = map.next_key::<LimitPattern>()? {
                    if out.iter().any(|(p, _)| p.matched() == pattern.matched()) {
                        return Err(de::Error::custom(format!("the command pattern {:?} is listed twice", pattern.text())));
                    }
                    let value = map.next_value::<V>()?;
                    out.push((pattern, value));
                }
                Ok(LimitMap(out))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_as_command_prefixes_or_every_exec() {
        assert_eq!("*".parse::<LimitPattern>(), Ok(LimitPattern::EveryExec));
        let LimitPattern::Command { text, command } = "kubectl  *".parse::<LimitPattern>().expect("parses") else {
            panic!("kubectl * is a command pattern");
        };
        assert_eq!(text, "kubectl *");
        assert_eq!(command.program, "kubectl");
        assert!(command.words.is_empty());
        let LimitPattern::Command { command, .. } = "terraform apply".parse::<LimitPattern>().expect("parses") else {
            panic!("terraform apply is a command pattern");
        };
        assert_eq!(command.words, vec!["apply".to_string()]);
    }

    #[test]
    fn a_star_elsewhere_or_an_empty_pattern_is_refused() {
        let err = "kubectl * pods".parse::<LimitPattern>().expect_err("refused");
        assert!(err.contains("may only stand alone as the last word"), "{err}");
        let err = "kube*".parse::<LimitPattern>().expect_err("refused");
        assert!(err.contains("\"kube*\""), "{err}");
        assert!("  ".parse::<LimitPattern>().expect_err("refused").contains("empty"));
        assert!("kubectl --all".parse::<LimitPattern>().expect_err("refused").contains("option word"));
    }

    #[test]
    fn a_map_keeps_document_order_and_refuses_a_repeated_pattern() {
        let map: LimitMap<u32> = serde_json::from_str(r#"{"b *": 1, "a": 2, "*": 3}"#).expect("parses");
        let texts: Vec<&str> = map.iter().map(|(p, _)| p.text()).collect();
        assert_eq!(texts, ["b *", "a", "*"]);
        let err = serde_json::from_str::<LimitMap<u32>>(r#"{"a *": 1, "a": 2}"#).expect_err("refused");
        assert!(err.to_string().contains("listed twice"), "{err}");
    }
}
