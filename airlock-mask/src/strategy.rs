//! How a recognised value is replaced, and the type labels values carry.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What `full` masking writes, and what every other strategy starts from
/// when it reveals nothing of the value.
pub const MASK: &str = "****";

/// Characters of the value `partial` keeps, at its end.
const PARTIAL_KEPT: usize = 4;

/// Values this short are fully masked by `partial`: keeping 4 characters of
/// 8 or fewer would reveal half the value or more, and a short password or
/// PIN with half of it known is within reach of guessing.
const PARTIAL_MIN_LEN: usize = 9;

/// Hex digits of the keyed hash shown: 48 bits tell values apart in an audit
/// trail without making the record a lookup key for the whole digest.
const HASH_HEX_DIGITS: usize = 12;

/// How recognised values are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// `****`.
    #[default]
    Full,
    /// `****` and the value's last 4 characters (`****6789`).
    Partial,
    /// The value's type: `[AWS_KEY]`.
    TypeOnly,
    /// The type and a keyed hash: `[AWS_KEY:3f2a9c01b7de]`, equal for equal
    /// values under the same key.
    Hash,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [Strategy::Full, Strategy::Partial, Strategy::TypeOnly, Strategy::Hash];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Full => "full",
            Strategy::Partial => "partial",
            Strategy::TypeOnly => "type_only",
            Strategy::Hash => "hash",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown masking strategy {0:?}: expected full, partial, type_only or hash")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL.into_iter().find(|strategy| strategy.name() == s).ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}

/// What a recognised value is, as `type_only` and `hash` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    AwsKey,
    GithubToken,
    SlackToken,
    Jwt,
    BearerToken,
    Password,
    PrivateKey,
    /// The value of an option or variable named as a secret, of no known form.
    Secret,
    Email,
    CardNumber,
    Ssn,
    UkNino,
    EsDni,
    DeTaxId,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::AwsKey => "AWS_KEY",
            Kind::GithubToken => "GITHUB_TOKEN",
            Kind::SlackToken => "SLACK_TOKEN",
            Kind::Jwt => "JWT",
            Kind::BearerToken => "BEARER_TOKEN",
            Kind::Password => "PASSWORD",
            Kind::PrivateKey => "PRIVATE_KEY",
            Kind::Secret => "SECRET",
            Kind::Email => "EMAIL",
            Kind::CardNumber => "CARD_NUMBER",
            Kind::Ssn => "SSN",
            Kind::UkNino => "UK_NINO",
            Kind::EsDni => "ES_DNI",
            Kind::DeTaxId => "DE_TAX_ID",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The replacement of `value`. `hash_key` is present whenever the strategy
/// is `Hash` (the [`crate::Masker`] refuses to exist otherwise).
pub(crate) fn render(strategy: Strategy, kind: Kind, value: &str, hash_key: Option<&[u8]>) -> String {
    match strategy {
        Strategy::Full => MASK.to_string(),
        Strategy::Partial => {
            let len = value.chars().count();
            if len < PARTIAL_MIN_LEN {
                return MASK.to_string();
            }
            let tail: String = value.chars().skip(len - PARTIAL_KEPT).collect();
            format!("{MASK}{tail}")
        }
        Strategy::TypeOnly => format!("[{}]", kind.label()),
        Strategy::Hash => match hash_key {
            Some(key) => format!("[{}:{}]", kind.label(), keyed_hash(key, value)),
            None => MASK.to_string(),
        },
    }
}

/// The first hex digits of HMAC-SHA256(key, value).
fn keyed_hash(key: &[u8], value: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; should that ever change, reveal nothing.
        return MASK.to_string();
    };
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(HASH_HEX_DIGITS);
    hex
}

/// Whether `value` is already what a strategy writes, so masking twice
/// changes nothing. A partial mask's kept characters may be anything.
pub(crate) fn is_mask_output(value: &str) -> bool {
    if let Some(tail) = value.strip_prefix(MASK) {
        return tail.chars().count() <= PARTIAL_KEPT;
    }
    let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) else {
        return false;
    };
    let (label, hash) = match inner.split_once(':') {
        Some((label, hash)) => (label, Some(hash)),
        None => (inner, None),
    };
    let label_ok = !label.is_empty() && label.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    let hash_ok = hash.is_none_or(|h| h.len() == HASH_HEX_DIGITS && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    label_ok && hash_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn strategy_names_round_trip_through_from_str_and_serde() {
        for strategy in Strategy::ALL {
            assert_eq!(strategy.name().parse::<Strategy>(), Ok(strategy));
            let json = serde_json::to_string(&strategy).expect("serialize");
            assert_eq!(json, format!("\"{}\"", strategy.name()));
            assert_eq!(serde_json::from_str::<Strategy>(&json).expect("deserialize"), strategy);
        }
        assert_eq!(Strategy::default(), Strategy::Full);
        for bad in ["", "Full", "typeonly", "type-only", "sha256"] {
            assert!(bad.parse::<Strategy>().is_err(), "{bad:?} accepted");
            assert!(serde_json::from_str::<Strategy>(&format!("\"{bad}\"")).is_err(), "{bad:?} deserialized");
        }
    }

    #[test]
    fn each_strategy_renders_as_documented() {
        let cases: &[(Strategy, Kind, &str, &str)] = &[
            (Strategy::Full, Kind::AwsKey, "AKIAIOSFODNN7EXAMPLE", "****"),
            (Strategy::Partial, Kind::AwsKey, "AKIAIOSFODNN7EXAMPLE", "****MPLE"),
            (Strategy::Partial, Kind::Ssn, "123-45-6789", "****6789"),
            (Strategy::Partial, Kind::Password, "123456789", "****6789"),
            (Strategy::Partial, Kind::Password, "12345678", "****"),
            (Strategy::Partial, Kind::Password, "hunter2", "****"),
            (Strategy::Partial, Kind::Password, "pässwörtér", "****rtér"),
            (Strategy::TypeOnly, Kind::AwsKey, "AKIAIOSFODNN7EXAMPLE", "[AWS_KEY]"),
            (Strategy::TypeOnly, Kind::CardNumber, "4111111111111111", "[CARD_NUMBER]"),
        ];
        for &(strategy, kind, value, want) in cases {
            assert_eq!(render(strategy, kind, value, None), want, "{strategy} {kind} {value:?}");
        }
    }

    #[test]
    fn the_hash_is_keyed_and_stable() {
        let a = render(Strategy::Hash, Kind::Password, "hunter2", Some(KEY));
        assert_eq!(a, render(Strategy::Hash, Kind::Password, "hunter2", Some(KEY)));
        assert!(a.starts_with("[PASSWORD:") && a.ends_with(']') && a.len() == "[PASSWORD:]".len() + HASH_HEX_DIGITS, "{a}");
        assert_ne!(a, render(Strategy::Hash, Kind::Password, "hunter3", Some(KEY)));
        assert_ne!(a, render(Strategy::Hash, Kind::Password, "hunter2", Some(b"another key, another organisation")));
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(keyed_hash(b"Jefe", "what do ya want for nothing?"), "5bdcc146bf60");
    }

    #[test]
    fn mask_outputs_are_recognised_as_such() {
        for output in ["****", "****6789", "****örté", "[AWS_KEY]", "[CARD_NUMBER:0123456789ab]"] {
            assert!(is_mask_output(output), "{output}");
        }
        for value in ["hunter2", "*****6789x", "[aws_key]", "[AWS_KEY:xyz]", "[]", "[AWS_KEY:0123456789AB]", "[AWS_KEY"] {
            assert!(!is_mask_output(value), "{value}");
        }
    }
}
