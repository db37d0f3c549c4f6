//! Credentials: the audit trail must not become the place an agent's tokens
//! leak to.
//!
//! Three shapes are recognised: option values (`--password=x`, `--token x`),
//! environment-style assignments (`AWS_SECRET_ACCESS_KEY=x`), and values that
//! are credentials by their form wherever they appear (AWS key ids, GitHub and
//! Slack tokens, JWTs, bearer tokens, passwords in URLs, private key blocks).

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

use crate::strategy::Kind;
use crate::Finding;

/// Option names whose value is a secret, without leading dashes.
const SECRET_OPTIONS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "token",
    "secret",
    "api-key",
    "apikey",
    "access-key",
    "secret-key",
    "client-secret",
    "private-key",
    "auth-token",
    "authorization",
    "bearer",
    "session-token",
];

/// Variable names that hold a secret contain one of these.
const SECRET_NAME_PARTS: &str = "PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL";

pub(crate) struct Patterns {
    env_assignment: Regex,
    /// The option and assignment shapes inside a longer word: a `bash -c '...'` script.
    inline_option: Regex,
    inline_assignment: Regex,
    by_form: Vec<(Regex, Kind)>,
    url_password: Regex,
    header_credential: Regex,
}

pub(crate) fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let compile = |re: &str| Regex::new(re).expect("built-in secret pattern compiles");
        Patterns {
            env_assignment: compile(&format!(r"(?i)^([A-Z0-9_]*(?:{SECRET_NAME_PARTS})[A-Z0-9_]*)=(.+)$")),
            inline_option: compile(&format!(r"(?i)(--?((?:[a-z0-9]+-)*(?:{}))[= ]+)([^\s'\x22;&|]+)", SECRET_OPTIONS.join("|"))),
            inline_assignment: compile(&format!(r"(?i)\b([A-Z0-9_]*(?:{SECRET_NAME_PARTS})[A-Z0-9_]*)=([^\s'\x22;&|]+)")),
            by_form: vec![
                (compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), Kind::AwsKey),
                // Classic and fine-grained.
                (compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b"), Kind::GithubToken),
                (compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), Kind::SlackToken),
                // Three base64url parts, the first two JSON objects.
                (compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), Kind::Jwt),
                // Passed inline; an unterminated block is masked to the end.
                (compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"), Kind::PrivateKey),
            ],
            url_password: compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@"),
            header_credential: compile(r"(?i)\b(bearer|token|basic)(?:\s+|:\s*)([A-Za-z0-9._~+/=-]{8,})"),
        }
    })
}

/// The option's name without dashes or value: `--api-key=x` gives `api-key`.
pub(crate) fn option_name(word: &str) -> Option<&str> {
    let name = word.strip_prefix("--").or_else(|| word.strip_prefix('-'))?;
    Some(name.split('=').next().unwrap_or(name))
}

/// The kind of value a secret option takes, if `name` is one.
pub(crate) fn secret_option_kind(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    SECRET_OPTIONS
        .iter()
        .any(|o| lower == *o || lower.strip_suffix(o).is_some_and(|rest| rest.ends_with('-')))
        .then(|| kind_for_name(&lower))
}

/// A whole word `NAME=value` whose name says it holds a secret: the value's range and kind.
pub(crate) fn env_assignment(word: &str) -> Option<(Range<usize>, Kind)> {
    if !word.contains('=') {
        return None;
    }
    let caps = patterns().env_assignment.captures(word)?;
    let value = caps.get(2)?;
    Some((value.range(), kind_for_name(&caps[1])))
}

/// What an option or variable named `name` holds when its value has no known form.
fn kind_for_name(name: &str) -> Kind {
    let lower = name.to_ascii_lowercase();
    if lower.contains("pass") {
        Kind::Password
    } else if lower.contains("private") {
        Kind::PrivateKey
    } else if lower.contains("bearer") {
        Kind::BearerToken
    } else {
        Kind::Secret
    }
}

/// A value of a known form keeps its form's label wherever it is found:
/// `--token ghp_…` is a GitHub token, not just a secret.
pub(crate) fn classify(value: &str, otherwise: Kind) -> Kind {
    patterns()
        .by_form
        .iter()
        .find(|(re, _)| re.find(value).is_some_and(|m| m.range() == (0..value.len())))
        .map_or(otherwise, |&(_, kind)| kind)
}

/// The patterns [`find`] searches free text with, as source.
pub(crate) fn text_patterns() -> Vec<&'static str> {
    let p = patterns();
    let mut sources = vec![p.url_password.as_str(), p.inline_option.as_str(), p.inline_assignment.as_str(), p.header_credential.as_str()];
    sources.extend(p.by_form.iter().map(|(re, _)| re.as_str()));
    sources
}

/// Credentials in free text, in order of precedence.
pub(crate) fn find(text: &str, out: &mut Vec<Finding>) {
    let p = patterns();
    for caps in p.url_password.captures_iter(text) {
        if let Some(value) = caps.get(1) {
            out.push(Finding { range: value.range(), kind: Kind::Password });
        }
    }
    for caps in p.inline_option.captures_iter(text) {
        if let (Some(name), Some(value)) = (caps.get(2), caps.get(3)) {
            out.push(Finding { range: value.range(), kind: classify(value.as_str(), kind_for_name(name.as_str())) });
        }
    }
    for caps in p.inline_assignment.captures_iter(text) {
        if let (Some(name), Some(value)) = (caps.get(1), caps.get(2)) {
            out.push(Finding { range: value.range(), kind: classify(value.as_str(), kind_for_name(name.as_str())) });
        }
    }
    for caps in p.header_credential.captures_iter(text) {
        if let (Some(scheme), Some(value)) = (caps.get(1), caps.get(2)) {
            // Basic credentials are a user and password, base64-encoded.
            let scheme_kind = if scheme.as_str().eq_ignore_ascii_case("basic") { Kind::Password } else { Kind::BearerToken };
            out.push(Finding { range: value.range(), kind: classify(value.as_str(), scheme_kind) });
        }
    }
    for (re, kind) in &p.by_form {
        out.extend(re.find_iter(text).map(|m| Finding { range: m.range(), kind: *kind }));
    }
}
