//! Where decisions are exported to: `ocsf:FILE` (OCSF events as JSON lines,
//! appended to FILE) or `otlp:URL` (OTLP/gRPC logs to a collector at URL,
//! `http://` or `https://`).

use std::fmt;
use std::path::PathBuf;

/// One `--export` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// OCSF events, one JSON object per line, appended to this file.
    OcsfFile(PathBuf),
    /// OTLP logs over gRPC to a collector.
    Otlp(OtlpEndpoint),
}

/// A collector's address, as tonic connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// `http://HOST:PORT` or `https://HOST:PORT` (a path is not allowed: gRPC
    /// names the service in its own path).
    pub url: String,
    /// TLS (https): the collector's certificate is checked against the
    /// host's trust store.
    pub tls: bool,
}

/// Why a target was refused; its text names the target and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {reason}; expected ocsf:FILE or otlp:URL (e.g. ocsf:/var/log/airlock/ocsf.jsonl, otlp:http://127.0.0.1:4317)")]
pub struct TargetError {
    pub text: String,
    pub reason: String,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let refuse = |reason: &str| TargetError { text: text.to_string(), reason: reason.to_string() };
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(refuse("no format: prefix"));
        };
        match scheme.trim() {
            "ocsf" => {
                let path = rest.trim();
                if path.is_empty() {
                    return Err(refuse("ocsf: needs a file path"));
                }
                if path.ends_with('/') {
                    return Err(refuse("ocsf: names a directory; give a file path"));
                }
                Ok(Target::OcsfFile(PathBuf::from(path)))
            }
            "otlp" => parse_otlp(rest.trim()).map(Target::Otlp).map_err(|reason| refuse(&reason)),
            "" => Err(refuse("no format before the colon")),
            other => Err(refuse(&format!("unknown format {other:?}"))),
        }
    }

    /// For a command line flag's value parser: the error names the flag.
    pub fn parse_flag(text: &str) -> Result<Target, String> {
        Target::parse(text).map_err(|e| format!("--export {e}"))
    }

    /// The kind, for logs and thread names.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::OcsfFile(_) => "ocsf",
            Target::Otlp(_) => "otlp",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::OcsfFile(path) => write!(f, "ocsf:{}", path.display()),
            Target::Otlp(endpoint) => write!(f, "otlp:{}", endpoint.url),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Target, TargetError> {
        Target::parse(s)
    }
}

fn parse_otlp(url: &str) -> Result<OtlpEndpoint, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if url.is_empty() {
        return Err("otlp: needs a collector URL".into());
    } else {
        return Err("otlp: the URL must start with http:// or https://".into());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('?') || authority.contains('#') {
        return Err("otlp: the URL is http(s)://HOST:PORT with no path (OTLP/gRPC names the service itself)".into());
    }
    // The port is required: OTLP/gRPC's is 4317, not the scheme's 80/443.
    let Some((host, port)) = authority.rsplit_once(':').filter(|(host, _)| !host.is_empty()) else {
        return Err("otlp: the URL needs HOST:PORT (the OTLP/gRPC port is usually 4317)".into());
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if !bracketed && (host.contains(':') || host.contains('[') || host.contains(']')) {
        return Err("otlp: an IPv6 host is written in brackets, e.g. http://[::1]:4317".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("otlp: {port:?} is not a port number")),
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(OtlpEndpoint { url: format!("{scheme}://{authority}"), tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_targets_parse() {
        assert_eq!(Target::parse("ocsf:/var/log/airlock/ocsf.jsonl").unwrap(), Target::OcsfFile("/var/log/airlock/ocsf.jsonl".into()));
        assert_eq!(Target::parse("ocsf:relative.jsonl").unwrap(), Target::OcsfFile("relative.jsonl".into()));
        let Target::Otlp(e) = Target::parse("otlp:http://127.0.0.1:4317").unwrap() else { panic!() };
        assert_eq!((e.url.as_str(), e.tls), ("http://127.0.0.1:4317", false));
        let Target::Otlp(e) = Target::parse("otlp:https://collector.example.com:4317/").unwrap() else { panic!() };
        assert_eq!((e.url.as_str(), e.tls), ("https://collector.example.com:4317", true));
        let Target::Otlp(e) = Target::parse("otlp:http://[::1]:4317").unwrap() else { panic!() };
        assert_eq!(e.url, "http://[::1]:4317");
        assert_eq!(Target::parse("otlp:http://[::1]:4317").unwrap().to_string(), "otlp:http://[::1]:4317");
    }

    #[test]
    fn bad_targets_are_refused_with_the_flag_and_the_reason() {
        for (text, reason) in [
            ("", "no format: prefix"),
            ("/var/log/x.jsonl", "no format: prefix"),
            ("json:/tmp/x", "unknown format \"json\""),
            (":/tmp/x", "no format before the colon"),
            ("ocsf:", "ocsf: needs a file path"),
            ("ocsf:/var/log/", "names a directory"),
            ("otlp:", "needs a collector URL"),
            ("otlp:127.0.0.1:4317", "must start with http:// or https://"),
            ("otlp:grpc://127.0.0.1:4317", "must start with http:// or https://"),
            ("otlp:http://127.0.0.1", "needs HOST:PORT"),
            ("otlp:http://127.0.0.1:0", "\"0\" is not a port number"),
            ("otlp:http://127.0.0.1:http", "\"http\" is not a port number"),
            ("otlp:http://127.0.0.1:4318/v1/logs", "no path"),
            ("otlp:http://::1:4317", "in brackets"),
        ] {
            let err = Target::parse_flag(text).unwrap_err();
            assert!(err.starts_with(&format!("--export {text:?}: ")), "{err}");
            assert!(err.contains(reason), "{text:?}: {err}");
            assert!(err.contains("expected ocsf:FILE or otlp:URL"), "{err}");
        }
    }
}
