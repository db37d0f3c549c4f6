//! The agent's notification settings: a TOML file of `airlock-notify`'s
//! table, read and checked once at start; an error names the file and the field.

use std::path::Path;

use anyhow::{Context, Result};
use airlock_notify::NotifyConfig;

pub fn load_config(path: &Path) -> Result<NotifyConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--notify-config {}: cannot read it", path.display()))?;
    let config: NotifyConfig = toml::from_str(&text).with_context(|| format!("--notify-config {}", path.display()))?;
    config.validate().with_context(|| format!("--notify-config {}", path.display()))?;
    Ok(config)
}
