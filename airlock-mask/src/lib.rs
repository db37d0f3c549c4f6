//! Masking of credentials and personal data in command lines and text,
//! before any record of them is kept.
//!
//! A [`Masker`] applies one [`Strategy`] to every value its recognisers find:
//! credentials (`secrets.rs`) by the option or variable that carries them or by
//! their form, personal data (`pii.rs`) by its form. Each value is masked once:
//! where recognisers overlap the first in precedence (credentials, then
//! personal data) wins, and text already masked is left as it is, so masking
//! twice gives what masking once gave.

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use regex::{Regex, RegexSet};

mod pii;
mod secrets;
mod strategy;

pub use strategy::{Kind, Strategy, UnknownStrategy, MASK};

/// A shorter key could itself be guessed, and with it every hashed value.
pub const MIN_HASH_KEY_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("the hash masking strategy needs a key (an organisation's shared secret): without one, short values such as passwords could be recovered by hashing guesses")]
    HashKeyMissing,
    #[error("the masking hash key is {0} bytes; at least {MIN_HASH_KEY_BYTES} are needed")]
    HashKeyTooShort(usize),
}

/// A recognised value: where it is in the text, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub range: Range<usize>,
    pub kind: Kind,
}

/// Masks what its recognisers find with one strategy. Cheap to build: the
/// patterns are compiled once per process.
#[derive(Clone)]
pub struct Masker {
    strategy: Strategy,
    hash_key: Option<Vec<u8>>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker").field("strategy", &self.strategy).field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl Default for Masker {
    fn default() -> Self {
        Masker { strategy: Strategy::Full, hash_key: None }
    }
}

impl Masker {
    /// `hash_key` is required by [`Strategy::Hash`] (equal values hash equal
    /// on every host that shares it) and ignored by the others.
    pub fn new(strategy: Strategy, hash_key: Option<Vec<u8>>) -> Result<Masker, MaskError> {
        if strategy == Strategy::Hash {
            match &hash_key {
                None => return Err(MaskError::HashKeyMissing),
                Some(key) if key.len() < MIN_HASH_KEY_BYTES => return Err(MaskError::HashKeyTooShort(key.len())),
                Some(_) => {}
            }
        }
        Ok(Masker { strategy, hash_key: hash_key.filter(|_| strategy == Strategy::Hash) })
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Masks a command line's words in place. A word that is an option or
    /// variable named as a secret has its value masked whatever its form;
    /// other words are masked as text.
    pub fn mask_argv(&self, argv: &mut [String]) {
        // The option before this word takes its value as the next word.
        let mut value_of: Option<Kind> = None;
        for word in argv.iter_mut() {
            if let Some(kind) = value_of.take() {
                if !word.starts_with('-') {
                    *word = self.mask_value(word, kind);
                    continue;
                }
            }
            if let Some(kind) = secrets::option_name(word).and_then(secrets::secret_option_kind) {
                match word.split_once('=') {
                    Some((option, value)) => *word = format!("{option}={}", self.mask_value(value, kind)),
                    None => value_of = Some(kind),
                }
                continue;
            }
            if let Some((value, kind)) = secrets::env_assignment(word) {
                *word = format!("{}{}", &word[..value.start], self.mask_value(&word[value], kind));
                continue;
            }
            // Most words hold nothing to mask: they are left as they are, not copied.
            if may_hold_findings(word) {
                *word = self.mask_text(word);
            }
        }
    }

    /// Masks what is recognised in free text: a script, a message quoting a command line.
    pub fn mask_text(&self, text: &str) -> String {
        if !may_hold_findings(text) {
            return text.to_string();
        }
        let mut findings = Vec::new();
        secrets::find(text, &mut findings);
        pii::find(text, &mut findings);
        let masked = already_masked(text);
        let mut chosen: Vec<Finding> = Vec::new();
        for finding in findings {
            let overlaps = |r: &Range<usize>| r.start < finding.range.end && finding.range.start < r.end;
            if finding.range.is_empty() || masked.iter().any(overlaps) || chosen.iter().any(|c| overlaps(&c.range)) {
                continue;
            }
            chosen.push(finding);
        }
        chosen.sort_by_key(|f| f.range.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for finding in chosen {
            out.push_str(&text[at..finding.range.start]);
            out.push_str(&self.render(&text[finding.range.clone()], finding.kind));
            at = finding.range.end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// The value of an option or variable named as a secret.
    fn mask_value(&self, value: &str, named_as: Kind) -> String {
        if strategy::is_mask_output(value) {
            return value.to_string();
        }
        self.render(value, secrets::classify(value, named_as))
    }

    fn render(&self, value: &str, kind: Kind) -> String {
        strategy::render(self.strategy, kind, value, self.hash_key.as_deref())
    }
}

/// Compiles every built-in pattern now instead of when the first text is
/// masked (a few milliseconds): a daemon pays it at start, not in the launch of
/// its first session.
pub fn compile_patterns() {
    may_hold_findings("");
    already_masked("");
    secrets::patterns();
    pii::patterns();
}

/// Whether any pattern of the recognisers matches somewhere in `text`: one
/// pass over it, where the recognisers take one per pattern. Most words of a
/// command line hold nothing, and every exec's words are masked.
fn may_hold_findings(text: &str) -> bool {
    static ANY: OnceLock<RegexSet> = OnceLock::new();
    ANY.get_or_init(|| RegexSet::new(secrets::text_patterns().into_iter().chain(pii::text_patterns())).expect("the built-in patterns compile as a set"))
        .is_match(text)
}

/// What a strategy wrote: recognisers must not find values in it again. A
/// partial mask's kept characters are taken greedily: the end of a masked
/// password must not start an e-mail address.
fn already_masked(text: &str) -> Vec<Range<usize>> {
    static OUTPUT: OnceLock<Regex> = OnceLock::new();
    let output = OUTPUT.get_or_init(|| Regex::new(r"\*{4}[^\s*]{0,4}|\[[A-Z_]+(?::[0-9a-f]{12})?\]").expect("built-in mask pattern compiles"));
    output.find_iter(text).map(|m| m.range()).collect()
}

#[cfg(test)]
mod tests;
