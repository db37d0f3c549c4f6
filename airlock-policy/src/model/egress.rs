//! A policy's `egress` section: address rules (CIDRs, optional ports),
//! hostname rules, and Unix socket rules, each validated as it is parsed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;


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
    /// Raw IP (SOCK_RAW) and packet (AF_PACKET) sockets; the role allows
    /// them only when every one of its policies says `allow`.
    pub raw_sockets: RawSockets,
}

/// `egress.raw_sockets`: such a socket builds its own packets, which no
/// destination rule sees, so it is denied unless the policy says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSockets {
    #[default]
    Deny,
    Allow,
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
    #[serde(default)]
    raw_sockets: RawSockets,
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
        Egress { deny, deny_hosts, allow, allow_hosts, unix_deny: doc.unix_deny, raw_sockets: doc.raw_sockets }
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

