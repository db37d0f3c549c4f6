//! The decision store's section: `store-bench` (this crate's second binary,
//! built in release) fills a scratch store with synthetic decisions through
//! the store's own batched writer and times the API's queries on it. The
//! figures are printed, never asserted (machines are noisy).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct StoreResult {
    pub rows: u64,
    pub bytes: u64,
    pub insert_per_second: f64,
    pub batch: u64,
    /// (query, rows returned, median ms, max ms)
    pub queries: Vec<(String, u64, f64, f64)>,
}

pub fn run(store_bench: &Path, work: &Path, rows: u64) -> Result<StoreResult> {
    let dir = work.join("store-bench");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("==> store: {rows} decisions into a scratch store, then the API's queries");
    let out = Command::new(store_bench)
        .arg("--dir")
        .arg(&dir)
        .args(["--rows", &rows.to_string()])
        .output()
        .with_context(|| format!("run {}", store_bench.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        bail!("store-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("store-bench's report is not JSON")?;
    let queries = v["queries"]
        .as_array()
        .context("no queries in the report")?
        .iter()
        .map(|q| {
            (
                q["query"].as_str().unwrap_or_default().to_string(),
                q["returned"].as_u64().unwrap_or(0),
                q["median_ms"].as_f64().unwrap_or(f64::NAN),
                q["max_ms"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    Ok(StoreResult {
        rows: v["rows"].as_u64().unwrap_or(0),
        bytes: v["bytes"].as_u64().unwrap_or(0),
        insert_per_second: v["insert_per_second"].as_f64().unwrap_or(0.0),
        batch: v["batch"].as_u64().unwrap_or(0),
        queries,
    })
}
