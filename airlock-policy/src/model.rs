//! The policy and role documents, as typed values.
//!
//! Every leaf type checks itself inside its `Deserialize` impl, so a bad value
//! is reported by serde together with the position the parser was at and,
//! through `serde_path_to_error`, the field path that led to it.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Longest id accepted, so ids fit in audit records and file names.
pub const MAX_ID_LEN: usize = 64;
/// Most words (program included) a blocked command may have; keeps trie walks short.
pub const MAX_COMMAND_WORDS: usize = 8;
/// Longest word accepted; the kernel hashes at most this many bytes per word.
pub const MAX_WORD_LEN: usize = 255;

/// A policy or role id: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(String);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Id {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("id must not be empty".into());
        }
        if s.len() > MAX_ID_LEN {
            return Err(format!(
                "id is {} bytes long; at most {MAX_ID_LEN} are allowed",
                s.len()
            ));
        }
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok {
            return Err(format!(
                "invalid id {s:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
            ));
        }
        Ok(Id(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Whether a policy is enforced. Only `Active` policies reach the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Active,
    Inactive,
    Draft,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Draft => "draft",
        }
    }
}

/// One blocked command: a program and the words that must follow it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    /// The command as written, with runs of whitespace collapsed.
    pub text: String,
    /// Basename of the first word: the kernel only knows the executed file's name.
    pub program: String,
    /// The words after the program; empty means every run of the program is blocked.
    pub words: Vec<String>,
}

impl FromStr for CommandPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(c) = s.chars().find(|c| matches!(c, '"' | '\'' | '`' | '\0')) {
            let what = if c == '\0' {
                "a NUL byte".to_owned()
            } else {
                format!("the quote character {c}")
            };
            return Err(format!(
                "blocked command {s:?} contains {what}; write plain words separated by spaces \
                 (the kernel compares argv words, no shell quoting takes place)"
            ));
        }
        let all: Vec<&str> = s.split_ascii_whitespace().collect();
        let Some((first, rest)) = all.split_first() else {
            return Err("blocked command is empty".into());
        };
        if all.len() > MAX_COMMAND_WORDS {
            return Err(format!(
                "blocked command {s:?} has {} words; at most {MAX_COMMAND_WORDS} are allowed",
                all.len()
            ));
        }
        if let Some(long) = all.iter().find(|w| w.len() > MAX_WORD_LEN) {
            return Err(format!(
                "a word of blocked command {s:?} is {} bytes long; at most {MAX_WORD_LEN} are allowed",
                long.len()
            ));
        }
        if let Some(opt) = rest.iter().find(|w| w.starts_with('-')) {
            return Err(format!(
                "blocked command {s:?} requires the option word {opt:?}, but option words \
                 (starting with '-') are skipped when matching, so a rule cannot require one; \
                 remove {opt:?} (the remaining words still match with or without options)"
            ));
        }
        let program = first.rsplit('/').next().unwrap_or(first);
        if program.is_empty() {
            return Err(format!(
                "blocked command {s:?} names a directory, not a program"
            ));
        }
        Ok(CommandPattern {
            text: all.join(" "),
            program: program.to_owned(),
            words: rest.iter().map(|w| (*w).to_owned()).collect(),
        })
    }
}

impl<'de> Deserialize<'de> for CommandPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// An address range, from either a CIDR or a bare address (a host route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let net = if t.contains('/') {
            IpNet::from_str(t).map_err(|_| {
                format!("{s:?} is not a valid CIDR (expected e.g. \"10.0.0.0/8\" or \"fd00::/8\")")
            })?
        } else {
            let ip = IpAddr::from_str(t).map_err(|_| {
                format!("{s:?} is not a valid IP address or CIDR (expected e.g. \"169.254.169.254\" or \"10.0.0.0/8\")")
            })?;
            IpNet::from(ip)
        };
        // Host bits are ignored by an LPM lookup anyway; clearing them keeps keys canonical.
        Ok(Cidr(net.trunc()))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A destination port; 0 is refused because the kernel tables use it for "any port".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(de::Error::custom(format!(
                "port {n} is out of range 1..=65535"
            ))),
        }
    }
}

/// One `egress.deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// The rule as written, e.g. `10.0.0.0/8` or `127.0.0.2/32 ports 22,443`.
    pub text: String,
    pub net: IpNet,
    /// Sorted, without duplicates; empty means every port.
    pub ports: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressObject {
    cidr: CidrText,
    ports: Vec<Port>,
}

/// A CIDR together with its original spelling, for the audit text.
struct CidrText(String, Cidr);

impl<'de> Deserialize<'de> for CidrText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        let c = s.parse().map_err(de::Error::custom)?;
        Ok(CidrText(s.trim().to_owned(), c))
    }
}

impl<'de> Deserialize<'de> for EgressRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = EgressRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address, a CIDR, or an object {\"cidr\": ..., \"ports\": [...]}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<EgressRule, E> {
                let Cidr(net) = v.parse().map_err(E::custom)?;
                Ok(EgressRule {
                    text: v.trim().to_owned(),
                    net,
                    ports: Vec::new(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EgressRule, A::Error> {
                // Going through MapAccessDeserializer keeps the path tracker in the
                // loop, so errors read `egress.deny[3].ports[1]`.
                let obj = EgressObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if obj.ports.is_empty() {
                    return Err(de::Error::custom(
                        "ports must not be empty; write the CIDR as a plain string to deny every port",
                    ));
                }
                let mut ports: Vec<u16> = obj.ports.iter().map(|p| p.0).collect();
                ports.sort_unstable();
                ports.dedup();
                let list = ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                Ok(EgressRule {
                    text: format!("{} ports {list}", obj.cidr.0),
                    net: obj.cidr.1 .0,
                    ports,
                })
            }
        }

        deserializer.deserialize_any(V)
    }
}

/// A policy's `egress` section. `deny` and `allow` entries are addresses
/// (CIDRs) or hostnames; they are split by kind here so address rules keep
/// their own type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "EgressDoc")]
pub struct Egress {
    /// Address ranges refused.
    pub deny: Vec<EgressRule>,
    /// Hostnames refused: the daemon resolves them and refreshes them within their TTL.
    pub deny_hosts: Vec<HostRule>,
    /// Address ranges allowed when the role's `egress_default` is `deny`.
    pub allow: Vec<EgressRule>,
    /// Hostnames allowed when the role's `egress_default` is `deny`.
    pub allow_hosts: Vec<HostRule>,
    /// Unix sockets a governed process may not connect or send to (broker escapes).
    pub unix_deny: Vec<UnixRule>,
}

/// `egress` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressDoc {
    #[serde(default)]
    deny: Vec<EgressEntry>,
    #[serde(default)]
    allow: Vec<EgressEntry>,
    #[serde(default)]
    unix_deny: Vec<UnixRule>,
}

impl From<EgressDoc> for Egress {
    fn from(doc: EgressDoc) -> Egress {
        let split = |entries: Vec<EgressEntry>| {
            let mut nets = Vec::new();
            let mut hosts = Vec::new();
            for e in entries {
                match e {
                    EgressEntry::Net(r) => nets.push(r),
                    EgressEntry::Host(h) => hosts.push(h),
                }
            }
            (nets, hosts)
        };
        let (deny, deny_hosts) = split(doc.deny);
        let (allow, allow_hosts) = split(doc.allow);
        Egress { deny, deny_hosts, allow, allow_hosts, unix_deny: doc.unix_deny }
    }
}

/// One hostname entry of `egress.deny` or `egress.allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The rule as written, e.g. `api.example.com` or `api.example.com ports 443`.
    pub text: String,
    /// Lowercase, without a trailing dot.
    pub host: String,
    /// Sorted, without duplicates; empty means every port.
    pub ports: Vec<u16>,
}

/// Checks a hostname (RFC 1123 labels; `_` accepted for service names) and
/// returns it in lowercase without a trailing dot.
pub fn parse_hostname(s: &str) -> Result<String, String> {
    let h = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(format!("{s:?} is not a valid IP address, CIDR or hostname: {why}"));
    if h.is_empty() {
        return bad("it is empty");
    }
    if h.len() > 253 {
        return bad("a hostname has at most 253 bytes");
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label has 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return bad("use letters, digits, '-' and '_'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label may not start or end with '-'");
        }
    }
    Ok(h)
}

/// True when the text is meant as an address: the CIDR parser's errors are the helpful ones.
fn looks_like_address(s: &str) -> bool {
    let t = s.trim();
    t.contains('/') || t.contains(':') || t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A `deny`/`allow` entry: an address rule or a hostname rule.
enum EgressEntry {
    Net(EgressRule),
    Host(HostRule),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressObjectAny {
    #[serde(default)]
    cidr: Option<CidrText>,
    #[serde(default)]
    host: Option<HostText>,
    ports: Vec<Port>,
}

struct HostText(String, String);

impl<'de> Deserialize<'de> for HostText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        let h = parse_hostname(&s).map_err(de::Error::custom)?;
        Ok(HostText(s.trim().to_owned(), h))
    }
}

impl<'de> Deserialize<'de> for EgressEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = EgressEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address, a CIDR, a hostname, or an object {\"cidr\" or \"host\": ..., \"ports\": [...]}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<EgressEntry, E> {
                if looks_like_address(v) {
                    let Cidr(net) = v.parse().map_err(E::custom)?;
                    return Ok(EgressEntry::Net(EgressRule { text: v.trim().to_owned(), net, ports: Vec::new() }));
                }
                let host = parse_hostname(v).map_err(E::custom)?;
                Ok(EgressEntry::Host(HostRule { text: v.trim().to_owned(), host, ports: Vec::new() }))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EgressEntry, A::Error> {
                let obj = EgressObjectAny::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if obj.ports.is_empty() {
                    return Err(de::Error::custom(
                        "ports must not be empty; write the CIDR or hostname as a plain string to cover every port",
                    ));
                }
                let mut ports: Vec<u16> = obj.ports.iter().map(|p| p.0).collect();
                ports.sort_unstable();
                ports.dedup();
                let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
                match (obj.cidr, obj.host) {
                    (Some(c), None) => Ok(EgressEntry::Net(EgressRule { text: format!("{} ports {list}", c.0), net: c.1 .0, ports })),
                    (None, Some(h)) => Ok(EgressEntry::Host(HostRule { text: format!("{} ports {list}", h.0), host: h.1, ports })),
                    _ => Err(de::Error::custom("give exactly one of \"cidr\" and \"host\"")),
                }
            }
        }

        deserializer.deserialize_any(V)
    }
}

/// Longest Unix socket pattern (without its `*`): the kernel matches 128 bytes
/// including the terminating NUL, and an abstract name's `@`.
pub const MAX_UNIX_PATTERN_LEN: usize = 126;

/// One `egress.unix_deny` entry: a socket path (`/run/docker.sock`), a path
/// prefix (`/tmp/tmux-*`), or an abstract socket name (`@name`, `@prefix*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixRule {
    /// The pattern as written.
    pub text: String,
    /// The bytes matched: the path, or `@` and the abstract name, without `*`.
    pub path: Vec<u8>,
    /// True for `...*`: every socket whose name starts with `path`.
    pub prefix: bool,
}

impl FromStr for UnixRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!("{s:?}: '*' may only end a pattern (a prefix), as in \"/tmp/tmux-*\""));
        }
        if body.contains('\0') {
            return Err(format!("{s:?} contains a NUL byte"));
        }
        if body.len() > MAX_UNIX_PATTERN_LEN {
            return Err(format!(
                "{s:?} is {} bytes long; the kernel matches at most {MAX_UNIX_PATTERN_LEN}",
                body.len()
            ));
        }
        if let Some(name) = body.strip_prefix('@') {
            if name.is_empty() && !prefix {
                return Err(format!("{s:?}: an abstract socket name must not be empty"));
            }
        } else if let Some(rooted) = body.strip_prefix('/') {
            // The kernel compares canonical paths, so a rule must be written in that form.
            let comps: Vec<&str> = rooted.split('/').collect();
            let last = comps.len() - 1;
            for (i, c) in comps.iter().enumerate() {
                let trailing_prefix = i == last && prefix;
                if (c.is_empty() && !(trailing_prefix || body == "/")) || *c == "." || *c == ".." {
                    return Err(format!(
                        "{s:?} is not a canonical path (no \"//\", \".\" or \"..\" components, no trailing \"/\"); \
                         write it as the kernel sees it, e.g. \"/run/docker.sock\""
                    ));
                }
            }
        } else {
            return Err(format!(
                "{s:?} is neither an absolute socket path (\"/run/docker.sock\", \"/tmp/tmux-*\") \
                 nor an abstract socket name (\"@name\")"
            ));
        }
        Ok(UnixRule { text: s.to_owned(), path: body.as_bytes().to_vec(), prefix })
    }
}

impl<'de> Deserialize<'de> for UnixRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

fn enabled() -> bool {
    true
}

/// Exec switches a name cannot decide (exec identity). Both default to on: a
/// policy that does not mention them denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    /// Deny executing a file that has no name on disk (memfd, a deleted file, O_TMPFILE).
    #[serde(default = "enabled")]
    pub deny_fileless: bool,
    /// Deny running the dynamic loader (`ld-linux-x86-64.so.2 PROGRAM`) directly.
    #[serde(default = "enabled")]
    pub deny_direct_loader: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            deny_fileless: true,
            deny_direct_loader: true,
        }
    }
}

/// guard: a file under the session user's home, written `~/dir/name`. The
/// last component may end in `*` (a name prefix, as in `~/.ssh/id_*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HomePattern {
    /// The pattern as written (its hash names the file class in the kernel).
    pub text: String,
    /// The components after `~/`; the last without its trailing `*`.
    pub components: Vec<String>,
    /// The last component is a name prefix.
    pub prefix: bool,
}

/// Most components a protected path may have below the home directory.
pub const MAX_PROTECTED_DEPTH: usize = 16;

impl FromStr for HomePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("~/") else {
            return Err(format!(
                "protected file {s:?} must start with \"~/\" (a path in the session user's home directory)"
            ));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > MAX_PROTECTED_DEPTH {
            return Err(format!(
                "protected file {s:?} is {} levels deep; at most {MAX_PROTECTED_DEPTH} are allowed",
                parts.len()
            ));
        }
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() || *part == "." || *part == ".." {
                return Err(format!(
                    "protected file {s:?} has an empty, \".\" or \"..\" component; write a plain path such as \"~/.aws/credentials\""
                ));
            }
            if part.contains(['?', '[', ']', '\\', '\0']) || (part.contains('*') && (i + 1 < parts.len() || !part.ends_with('*') || part.matches('*').count() > 1)) {
                return Err(format!(
                    "protected file {s:?}: the only wildcard allowed is one '*' at the end of the file name (as in \"~/.ssh/id_*\")"
                ));
            }
            if part.len() > MAX_WORD_LEN {
                return Err(format!("a component of protected file {s:?} is longer than {MAX_WORD_LEN} bytes"));
            }
        }
        let mut components: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        let prefix = components.last().is_some_and(|l| l.ends_with('*'));
        if prefix {
            if let Some(last) = components.last_mut() {
                last.pop();
            }
        }
        Ok(HomePattern { text: s.to_owned(), components, prefix })
    }
}

impl<'de> Deserialize<'de> for HomePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// guard: a program allowed to open a protected file, by the name of its
/// executable file (symlinks resolved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProgramName(pub String);

impl<'de> Deserialize<'de> for ProgramName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        if s.is_empty() || s.contains('/') || s.contains('\0') || s.len() > MAX_WORD_LEN {
            return Err(de::Error::custom(format!(
                "allowed program {s:?} must be a plain executable name such as \"aws\" (no '/', at most {MAX_WORD_LEN} bytes)"
            )));
        }
        Ok(ProgramName(s))
    }
}

/// guard: one `protected_files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedFile {
    pub path: HomePattern,
    /// Programs that may open it; empty: none may.
    pub allow: Vec<ProgramName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedFileObject {
    path: HomePattern,
    #[serde(default)]
    allow: Vec<ProgramName>,
}

impl<'de> Deserialize<'de> for ProtectedFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = ProtectedFile;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path such as \"~/.aws/credentials\" or an object {\"path\": ..., \"allow\": [...]}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProtectedFile, E> {
                Ok(ProtectedFile { path: v.parse().map_err(E::custom)?, allow: Vec::new() })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProtectedFile, A::Error> {
                let obj = ProtectedFileObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut allow = obj.allow;
                allow.sort();
                allow.dedup();
                Ok(ProtectedFile { path: obj.path, allow })
            }
        }

        deserializer.deserialize_any(V)
    }
}

/// guard: what a policy protects when it says nothing about `protected_files`.
pub fn default_protected_files() -> Vec<ProtectedFile> {
    let entry = |path: &str, allow: &[&str]| ProtectedFile {
        path: path.parse().expect("the default protected files are valid patterns"),
        allow: allow.iter().map(|a| ProgramName((*a).to_owned())).collect(),
    };
    vec![
        entry("~/.aws/credentials", &["aws"]),
        entry("~/.kube/config", &["helm", "kubectl"]),
        entry("~/.ssh/id_*", &["scp", "sftp", "ssh", "ssh-add", "ssh-keygen"]),
        entry("~/.config/gh/hosts.yml", &["gh"]),
    ]
}

/// A policy file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub id: Id,
    pub name: String,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub blocked_commands: Vec<CommandPattern>,
    #[serde(default)]
    pub egress: Egress,
    /// The upstream control plane's rule language; carried but not enforced here.
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
    /// Exec switches (exec identity); absent means both on.
    #[serde(default)]
    pub exec: ExecOptions,
    /// guard: credential files only the listed programs may open (defaults when absent; `[]` for none).
    #[serde(default = "default_protected_files")]
    pub protected_files: Vec<ProtectedFile>,
    /// Where the policy came from (display name), for diagnostics and audit.
    #[serde(skip)]
    pub source: PathBuf,
}

/// A role file: the policies a governed session runs under.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub id: Id,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub policies: Vec<Id>,
    /// What happens to a destination no rule names: `allow` (the default) or
    /// `deny`, in which case only the policies' `egress.allow` entries are reachable.
    #[serde(default)]
    pub egress_default: EgressDefault,
    #[serde(skip)]
    pub source: PathBuf,
}

/// A role's egress default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressDefault {
    #[default]
    Allow,
    Deny,
}
