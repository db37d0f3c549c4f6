//! `programs`: the other forms a program runs in, so that a rule on the
//! program also holds for them: `{"aws": {"python_module": "awscli"}}` makes
//! `python3 -m awscli iam create-role` the same command as `aws iam create-role`.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::limits::MAX_WORD_LEN;

/// A program a policy names in `programs`: a plain executable name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AliasedProgram(pub String);

impl<'de> Deserialize<'de> for AliasedProgram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        if s.is_empty() || s.contains('/') || s.contains('\0') || s.contains(char::is_whitespace) || s.len() > MAX_WORD_LEN {
            return Err(de::Error::custom(format!(
                "program {s:?} must be a plain executable name such as \"aws\" (no '/', no spaces, at most {MAX_WORD_LEN} bytes)"
            )));
        }
        Ok(AliasedProgram(s))
    }
}

/// A Python module name as `python3 -m` takes it: dotted identifiers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PythonModule(pub String);

impl<'de> Deserialize<'de> for PythonModule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        let identifier = |part: &str| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if s.len() > MAX_WORD_LEN || !s.split('.').all(identifier) {
            return Err(de::Error::custom(format!(
                "python_module {s:?} must be a module name such as \"awscli\" or \"azure.cli\" (dotted identifiers, at most {MAX_WORD_LEN} bytes)"
            )));
        }
        Ok(PythonModule(s))
    }
}

/// One `programs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramForms {
    /// Modules that run the program under `python3 -m MODULE` (and `MODULE.sub`).
    pub python_modules: Vec<PythonModule>,
}

/// `"awscli"` or `["awscli", "aws_cli"]`; each element is checked as it is
/// read, so an error names the module that is wrong.
struct OneOrMany(Vec<PythonModule>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a module name or a list of module names")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                PythonModule::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|m| OneOrMany(vec![m]))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(m) = seq.next_element::<PythonModule>()? {
                    out.push(m);
                }
                Ok(OneOrMany(out))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramFormsObject {
    #[serde(default)]
    python_module: Option<OneOrMany>,
}

impl<'de> Deserialize<'de> for ProgramForms {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = ProgramFormsObject::deserialize(deserializer)?;
        Ok(ProgramForms { python_modules: object.python_module.map(|m| m.0).unwrap_or_default() })
    }
}

/// A policy's `programs` map.
pub type ProgramFormsMap = BTreeMap<AliasedProgram, ProgramForms>;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ProgramFormsMap, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn one_module_or_a_list() {
        let map = parse(r#"{"aws": {"python_module": "awscli"}, "az": {"python_module": ["azure.cli", "azcli"]}}"#).expect("valid");
        let aws = &map[&AliasedProgram("aws".into())];
        assert_eq!(aws.python_modules, vec![PythonModule("awscli".into())]);
        let az = &map[&AliasedProgram("az".into())];
        assert_eq!(az.python_modules.len(), 2);
    }

    #[test]
    fn bad_names_and_fields_are_refused_with_what_is_wrong() {
        let err = parse(r#"{"aws": {"python_module": "aws cli"}}"#).expect_err("space in a module");
        assert!(err.contains("python_module \"aws cli\""), "{err}");
        let err = parse(r#"{"aws": {"python_module": "1x"}}"#).expect_err("module starting with a digit");
        assert!(err.contains("dotted identifiers"), "{err}");
        let err = parse(r#"{"/usr/bin/aws": {"python_module": "awscli"}}"#).expect_err("path as a program");
        assert!(err.contains("plain executable name"), "{err}");
        let err = parse(r#"{"aws": {"node_module": "x"}}"#).expect_err("unknown field");
        assert!(err.contains("unknown field"), "{err}");
    }
}
