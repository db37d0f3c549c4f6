//! The names the pinned objects carry in systemd's file descriptor store
//! (`FDNAME=`), and their parsing.
//!
//! `airlock.<set>.link.<program>`, `airlock.<set>.map.<pin name>` and
//! `airlock.<set>.meta`: one name per pinned object, the same for as long as
//! the set exists, so a daemon that adopts a set stores it under the names it
//! already has, and replacing a set removes exactly the old set's names.
//!
//! A name read back from `LISTEN_FDNAMES` becomes a path under the pin
//! directory when the object is pinned again, so parsing accepts only what
//! [`FdName::format`] writes: `set-` followed by digits and dashes, and object
//! names of letters, digits and `_` (never `/`, `.` or `..`).

use std::fmt;

const PREFIX: &str = "airlock";
/// systemd refuses names longer than this (FDNAME_MAX).
pub const FDNAME_MAX: usize = 255;
/// Longest object name accepted (program and map names are far shorter).
const OBJECT_MAX: usize = 96;
/// Longest set directory name accepted (`set-<12 digits>-<pid>-<n>` is ~30).
const SET_MAX: usize = 64;

/// What kind of pinned object a stored descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A BPF link: holding it keeps its program attached.
    Link,
    /// One of the set's maps, by its pin file name.
    Map,
    /// The set's meta record (itself a map).
    Meta,
}

/// One stored object's name: which set, which kind, which object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdName {
    pub set: String,
    pub kind: Kind,
    /// The program (links) or the pin file name (maps); empty for the meta record.
    pub object: String,
}

impl FdName {
    pub fn link(set: &str, program: &str) -> FdName {
        FdName { set: set.to_string(), kind: Kind::Link, object: program.to_string() }
    }

    pub fn map(set: &str, pin_name: &str) -> FdName {
        FdName { set: set.to_string(), kind: Kind::Map, object: pin_name.to_string() }
    }

    pub fn meta(set: &str) -> FdName {
        FdName { set: set.to_string(), kind: Kind::Meta, object: String::new() }
    }

    /// The `FDNAME=` value.
    pub fn format(&self) -> String {
        match self.kind {
            Kind::Link => format!("{PREFIX}.{}.link.{}", self.set, self.object),
            Kind::Map => format!("{PREFIX}.{}.map.{}", self.set, self.object),
            Kind::Meta => format!("{PREFIX}.{}.meta", self.set),
        }
    }

    /// Reads a name back; anything [`FdName::format`] would not have written is refused with why.
    pub fn parse(name: &str) -> Result<FdName, NameError> {
        if name.len() > FDNAME_MAX {
            return Err(NameError::new(name, "longer than systemd's 255 bytes"));
        }
        let mut parts = name.split('.');
        if parts.next() != Some(PREFIX) {
            return Err(NameError::new(name, "not an Airlock name (it does not start with \"airlock.\")"));
        }
        let set = parts.next().unwrap_or_default();
        if !valid_set(set) {
            return Err(NameError::new(name, "the set is not a pin set directory name (set-<digits>-<digits>-<digits>)"));
        }
        let kind = match parts.next() {
            Some("link") => Kind::Link,
            Some("map") => Kind::Map,
            Some("meta") => Kind::Meta,
            _ => return Err(NameError::new(name, "the kind is not link, map or meta")),
        };
        let object = parts.next();
        if parts.next().is_some() {
            return Err(NameError::new(name, "too many dot-separated parts"));
        }
        let object = match (kind, object) {
            (Kind::Meta, None) => String::new(),
            (Kind::Meta, Some(_)) => return Err(NameError::new(name, "the meta record has no object name")),
            (_, Some(o)) if valid_object(o) => o.to_string(),
            (_, _) => return Err(NameError::new(name, "the object name is not 1-96 letters, digits and '_'")),
        };
        Ok(FdName { set: set.to_string(), kind, object })
    }
}

impl fmt::Display for FdName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

/// A name from `LISTEN_FDNAMES` that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("descriptor name {name:?}: {why}")]
pub struct NameError {
    pub name: String,
    pub why: &'static str,
}

impl NameError {
    fn new(name: &str, why: &'static str) -> NameError {
        NameError { name: name.to_string(), why }
    }
}

/// `set-` then groups of ASCII digits separated by single dashes.
pub fn valid_set(set: &str) -> bool {
    let Some(rest) = set.strip_prefix("set-") else { return false };
    set.len() <= SET_MAX && !rest.is_empty() && rest.split('-').all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_object(object: &str) -> bool {
    !object.is_empty() && object.len() <= OBJECT_MAX && object.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = "set-001764300000-4242-0";

    #[test]
    fn every_kind_round_trips() {
        for name in [FdName::link(SET, "airlock_compat_pidfd_getfd"), FdName::map(SET, "airlock_bss"), FdName::meta(SET)] {
            let text = name.format();
            assert!(text.len() <= FDNAME_MAX && !text.contains(':'), "{text}: systemd refuses ':' and long names");
            assert_eq!(FdName::parse(&text).unwrap(), name, "{text}");
        }
        assert_eq!(FdName::link(SET, "airlock_fork").format(), "airlock.set-001764300000-4242-0.link.airlock_fork");
        assert_eq!(FdName::meta(SET).format(), "airlock.set-001764300000-4242-0.meta");
    }

    #[test]
    fn names_that_could_leave_the_pin_directory_are_refused() {
        for bad in [
            "airlock.set-1-2-3.link.../../etc",
            "airlock.set-1-2-3.map./tmp/x",
            "airlock.set-1-2-3.map.a/b",
            "airlock.set-1-2-3.map.",
            "airlock.../link.x",
            "airlock.set-1/../x.link.x",
            "airlock.set-.link.x",
            "airlock.set-1--2.link.x",
            "airlock.sets-1.link.x",
        ] {
            assert!(FdName::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn foreign_and_malformed_names_say_why() {
        let cases = [
            ("unknown", "not an Airlock name"),
            ("stored", "not an Airlock name"),
            ("airlock.set-1-2-3.prog.x", "not link, map or meta"),
            ("airlock.set-1-2-3.meta.x", "no object name"),
            ("airlock.set-1-2-3.link", "object name"),
            ("airlock.set-1-2-3.link.a.b", "too many"),
        ];
        for (name, why) in cases {
            let err = FdName::parse(name).unwrap_err();
            assert!(err.to_string().contains(why), "{name}: {err}");
            assert!(err.to_string().contains(name), "the error does not name the descriptor: {err}");
        }
        let long = format!("airlock.{SET}.link.{}", "x".repeat(300));
        assert!(FdName::parse(&long).unwrap_err().why.contains("255"));
    }

    #[test]
    fn set_names_are_what_pins_creates() {
        assert!(valid_set("set-000001764300-12-0"));
        assert!(!valid_set("set-"));
        assert!(!valid_set("set-12-x"));
        assert!(!valid_set(&format!("set-{}", "1".repeat(70))));
    }
}
