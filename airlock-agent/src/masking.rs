//! The daemon's masking: which strategy, from which flags, and the one
//! place every record's command line is masked through before any sink
//! (audit file, store, API, gateway spool) or message sees it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use clap::Args;

pub use airlock_mask::{Masker, Strategy};

/// `airlock-agent run`'s masking flags.
#[derive(Args, Debug, Clone, Default)]
pub struct MaskArgs {
    /// Record command lines verbatim: do not mask passwords, tokens, keys and personal data.
    #[arg(long, conflicts_with = "mask_strategy")]
    pub no_mask_secrets: bool,
    /// How recognised secrets and personal data are masked: full (****), partial (****6789),
    /// type_only ([AWS_KEY]) or hash ([AWS_KEY:3f2a9c01b7de], keyed by --mask-hash-key-file).
    #[arg(long, value_name = "STRATEGY", value_parser = parse_strategy)]
    pub mask_strategy: Option<Strategy>,
    /// The key of the hash strategy: the file's bytes, as they are (share it across an
    /// organisation's hosts for equal values to hash equal). Readable by its owner only.
    #[arg(long, value_name = "PATH")]
    pub mask_hash_key_file: Option<PathBuf>,
}

fn parse_strategy(text: &str) -> Result<Strategy, String> {
    text.parse().map_err(|e: airlock_mask::UnknownStrategy| e.to_string())
}

impl MaskArgs {
    /// The masking the flags ask for. A key file given with another strategy
    /// is kept for a later switch to hash ([`Masking::set_strategy`]).
    pub fn masking(&self) -> Result<Masking> {
        let hash_key = self.mask_hash_key_file.as_deref().map(read_hash_key_file).transpose()?;
        if self.no_mask_secrets {
            return Ok(Masking::new(None, hash_key));
        }
        let strategy = self.mask_strategy.unwrap_or_default();
        if strategy == Strategy::Hash && hash_key.is_none() {
            bail!("--mask-strategy hash needs --mask-hash-key-file: an unkeyed hash of a short password can be reversed by hashing guesses");
        }
        let masker = Masker::new(strategy, hash_key.clone()).context("--mask-strategy")?;
        airlock_mask::compile_patterns();
        Ok(Masking::new(Some(masker), hash_key))
    }
}

/// The hash strategy's key. Refused when anyone but its owner may read it:
/// whoever holds the key can confirm a guessed value against the records.
pub fn read_hash_key_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("mask hash key file {}", path.display()))?;
    if !meta.is_file() {
        bail!("mask hash key file {} is not a regular file", path.display());
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("mask hash key file {} is readable or writable by group or others (mode {:o}); chmod 600 it", path.display(), mode & 0o777);
    }
    std::fs::read(path).with_context(|| format!("read the mask hash key file {}", path.display()))
}

/// The masker in force, replaceable while the daemon runs (an organisation's
/// setting pushed by the gateway). Readers take a snapshot per record.
#[derive(Default)]
pub struct Masking {
    current: RwLock<Option<Arc<Masker>>>,
    /// This host's key for the hash strategy, from --mask-hash-key-file.
    hash_key: Option<Vec<u8>>,
    /// What this host's flags chose (`None`: verbatim): in force whenever
    /// the organisation sets no strategy of its own.
    own: Option<Strategy>,
}

impl std::fmt::Debug for Masking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masking").field("current", &self.current()).field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl Masking {
    pub fn new(masker: Option<Masker>, hash_key: Option<Vec<u8>>) -> Self {
        let own = masker.as_ref().map(Masker::strategy);
        Masking { current: RwLock::new(masker.map(Arc::new)), hash_key, own }
    }

    /// The organisation's strategy (from the gateway) in force, or with
    /// `None` this host's own again. Hash needs this host's key: without one
    /// it is refused and the masker in force stays.
    pub fn set_org_strategy(&self, org: Option<Strategy>) -> Result<(), airlock_mask::MaskError> {
        match org.or(self.own) {
            Some(strategy) => self.set_strategy(strategy),
            None => {
                self.set(None);
                Ok(())
            }
        }
    }

    /// The masker in force; `None` when command lines are recorded verbatim.
    pub fn current(&self) -> Option<Arc<Masker>> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Puts `masker` in force for every record from now on (`None`: verbatim).
    pub fn set(&self, masker: Option<Masker>) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = masker.map(Arc::new);
    }

    /// Switches to `strategy` with this host's hash key. Hash without a key
    /// is refused and the masker in force stays.
    pub fn set_strategy(&self, strategy: Strategy) -> Result<(), airlock_mask::MaskError> {
        let masker = Masker::new(strategy, self.hash_key.clone())?;
        self.set(Some(masker));
        Ok(())
    }

    pub fn mask_argv(&self, argv: &mut [String]) {
        if let Some(masker) = self.current() {
            masker.mask_argv(argv);
        }
    }

    pub fn mask_text(&self, text: &str) -> String {
        match self.current() {
            Some(masker) => masker.mask_text(text),
            None => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        mask: MaskArgs,
    }

    fn parse(args: &[&str]) -> Result<MaskArgs, clap::Error> {
        Flags::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|f| f.mask)
    }

    fn key_file(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("key-{mode:o}"));
        std::fs::write(&path, b"0123456789abcdef0123456789abcdef").expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-masking-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn strategy_of(args: &[&str]) -> Option<Strategy> {
        parse(args).expect("parses").masking().expect("masking").current().map(|m| m.strategy())
    }

    #[test]
    fn the_flags_choose_the_strategy() {
        let strategy = strategy_of;
        assert_eq!(strategy(&[]), Some(Strategy::Full));
        assert_eq!(strategy(&["--mask-strategy", "partial"]), Some(Strategy::Partial));
        assert_eq!(strategy(&["--mask-strategy=type_only"]), Some(Strategy::TypeOnly));
        assert_eq!(strategy(&["--no-mask-secrets"]), None);
        assert!(parse(&["--mask-strategy", "sha256"]).is_err());
        assert!(parse(&["--no-mask-secrets", "--mask-strategy", "full"]).is_err());
    }

    #[test]
    fn the_orgs_strategy_wins_until_it_sets_none_and_hash_needs_this_hosts_key() {
        let masking = parse(&["--mask-strategy", "partial"]).expect("parses").masking().expect("masking");
        let in_force = |m: &Masking| m.current().map(|x| x.strategy());
        masking.set_org_strategy(Some(Strategy::TypeOnly)).expect("type_only");
        assert_eq!(in_force(&masking), Some(Strategy::TypeOnly));
        assert!(masking.set_org_strategy(Some(Strategy::Hash)).is_err(), "hash without this host's key");
        assert_eq!(in_force(&masking), Some(Strategy::TypeOnly), "a refused strategy leaves the one in force");
        masking.set_org_strategy(None).expect("back to the host's own");
        assert_eq!(in_force(&masking), Some(Strategy::Partial));
        let verbatim = parse(&["--no-mask-secrets"]).expect("parses").masking().expect("masking");
        verbatim.set_org_strategy(Some(Strategy::Full)).expect("full");
        assert_eq!(in_force(&verbatim), Some(Strategy::Full));
        verbatim.set_org_strategy(None).expect("back to verbatim");
        assert_eq!(in_force(&verbatim), None);
    }

    #[test]
    fn the_hash_strategy_needs_a_private_key_file() {
        let dir = temp_dir("hash");
        let private = key_file(&dir, 0o600);
        let private = private.to_str().expect("utf-8");
        assert_eq!(strategy_of(&["--mask-strategy", "hash", "--mask-hash-key-file", private]), Some(Strategy::Hash));

        let no_key = parse(&["--mask-strategy", "hash"]).expect("parses").masking().unwrap_err().to_string();
        assert!(no_key.contains("--mask-hash-key-file"), "{no_key}");

        let shared = key_file(&dir, 0o640);
        let err = parse(&["--mask-strategy", "hash", "--mask-hash-key-file", shared.to_str().expect("utf-8")]).expect("parses").masking().unwrap_err();
        assert!(format!("{err:#}").contains("readable or writable by group or others"), "{err:#}");

        // A key kept for a later switch to hash, and no switch to hash without one.
        let kept = parse(&["--mask-hash-key-file", private]).expect("parses").masking().expect("masking");
        assert_eq!(kept.current().map(|m| m.strategy()), Some(Strategy::Full));
        kept.set_strategy(Strategy::Hash).expect("hash with the kept key");
        assert_eq!(kept.current().map(|m| m.strategy()), Some(Strategy::Hash));
        assert!(!format!("{kept:?}").contains("0123456789abcdef"), "{kept:?}");
        let keyless = Masking::new(Some(Masker::default()), None);
        assert!(keyless.set_strategy(Strategy::Hash).is_err());
        assert_eq!(keyless.current().map(|m| m.strategy()), Some(Strategy::Full));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_masker_set_while_running_applies_to_the_next_record() {
        let masking = Masking::new(Some(Masker::default()), None);
        let mut argv = vec!["--token".to_string(), "AKIAIOSFODNN7EXAMPLE".to_string()];
        masking.mask_argv(&mut argv);
        assert_eq!(argv[1], "****");
        masking.set(Some(Masker::new(Strategy::TypeOnly, None).expect("masker")));
        assert_eq!(masking.mask_text("key AKIAIOSFODNN7EXAMPLE"), "key [AWS_KEY]");
        masking.set(None);
        assert_eq!(masking.mask_text("key AKIAIOSFODNN7EXAMPLE"), "key AKIAIOSFODNN7EXAMPLE");
    }
}
