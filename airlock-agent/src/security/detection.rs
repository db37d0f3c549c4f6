//! The detectors over this host's own decision store: what an agent without
//! a gateway runs every `--detect-interval`.

use std::path::Path;
use std::time::Duration;

use airlock_api::v1::{Decision, DecisionFilter};
use airlock_detect::{RuleName, Settings};
use airlock_store::Store;
use anyhow::{bail, Context, Result};

/// One run reads at most this many decisions; a busier window is judged on
/// its newest decisions, and the log says so.
pub const MAX_DECISIONS_PER_RUN: usize = 200_000;
const PAGE: usize = airlock_store::MAX_PAGE;

/// How often and with which settings the detectors run.
#[derive(Debug, Clone)]
pub struct DetectionConfig {
    pub interval: Duration,
    pub settings: Settings,
    /// Where the settings came from, for `status` and the log.
    pub source: String,
}

/// Reads `--detect-settings`: TOML (`.toml`) or JSON, each rule optional
/// (defaults for the rest); refused with the field named when a value cannot be used.
pub fn load_settings(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read the detection settings {}", path.display()))?;
    let settings: Settings = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml")) {
        toml::from_str(&text).with_context(|| format!("{}: not valid detection settings", path.display()))?
    } else {
        serde_json::from_str(&text).with_context(|| format!("{}: not valid detection settings", path.display()))?
    };
    if let Err(e) = settings.validate() {
        bail!("{}: {e}", path.display());
    }
    Ok(settings)
}

/// The longest window any enabled rule looks at.
pub fn longest_window_ns(settings: &Settings) -> i64 {
    RuleName::ALL.into_iter().map(|r| settings.rule(r)).filter(|r| r.enabled).map(|r| r.window_ns()).max().unwrap_or(0)
}

/// The decisions of the last `window_ns`, newest first, at most
/// [`MAX_DECISIONS_PER_RUN`]; true when that cap cut the window short.
pub fn decisions_in_window(store: &Store, window_ns: i64, now_ns: i64) -> Result<(Vec<Decision>, bool)> {
    let filter = DecisionFilter { since_unix_nanos: now_ns.saturating_sub(window_ns), ..Default::default() };
    let mut all = Vec::new();
    let mut before = 0;
    loop {
        let (page, next) = store.query(&filter, before, PAGE).context("read the decision store")?;
        all.extend(page);
        if all.len() >= MAX_DECISIONS_PER_RUN {
            all.truncate(MAX_DECISIONS_PER_RUN);
            return Ok((all, true));
        }
        match next {
            Some(cursor) => before = cursor,
            None => return Ok((all, false)),
        }
    }
}
