//! `gateway-bench fill`: a store filled directly through the gateway store's
//! own `insert_decisions` (the call the gateway makes for an agent's batch),
//! in big batches, with decisions spread over the last seven days across a
//! hundred hosts. The gateway is started on the same database afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use airlock_gateway_store::{GatewayStore, IncomingDecision};
use anyhow::{Context, Result};
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

use crate::common::{now_ns, Flags, Rng};
use crate::synth::{self, FILL_HOSTS};

/// Rows per insert_decisions call (one transaction).
const BATCH: usize = 2_000;
pub const PREFIX: &str = "fleet-";
const SPAN_NS: i64 = 7 * 24 * 3_600_000_000_000;

pub async fn run(flags: &Flags) -> Result<Value> {
    let rows: u64 = flags.num("rows")?;
    let data_dir = PathBuf::from(flags.get("data-dir")?);
    let url = flags.opt("database-url").map(str::to_string);
    let store = GatewayStore::open(url.as_deref(), &data_dir).await.context("open the store")?;
    let org = store.ensure_org("default").await.context("the default org")?;
    let end_ns = now_ns();
    let t0_ns = end_ns - SPAN_NS;
    let writers = if store.is_postgres() { 3 } else { 1 };

    let (tx, rx) = mpsc::channel::<(String, Vec<IncomingDecision>)>(writers * 2);
    // Making and encoding the decisions runs beside the writes.
    let generator = std::thread::spawn(move || generate(rows, t0_ns, tx));
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (rx, store) = (rx.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let mut written = 0u64;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((host, batch)) = next else { return Ok::<_, anyhow::Error>(written) };
                store.insert_decisions(org.id, &host, &batch).await.with_context(|| format!("insert {} decisions of {host}", batch.len()))?;
                let before = written;
                written += batch.len() as u64;
                if before / 1_000_000 != written / 1_000_000 {
                    eprintln!("gateway-bench: fill: a writer is past {} decisions ({:.0} s)", written, started.elapsed().as_secs_f64());
                }
            }
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await.context("a writer task failed")??;
    }
    generator.join().map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut analyzed = false;
    if store.is_postgres() {
        // What autovacuum does to a table this size soon after a bulk load; without it the planner guesses.
        airlock_gateway_store::testing::execute_sql(&store, "ANALYZE decisions").await.context("ANALYZE decisions")?;
        analyzed = true;
    }
    let stored = store.count_decisions(org.id, None).await.context("count the decisions")?;
    Ok(json!({
        "rows": written,
        "stored": stored,
        "seconds": seconds,
        "per_second": written as f64 / seconds,
        "batch": BATCH,
        "writers": writers,
        "t0_ns": t0_ns,
        "end_ns": end_ns,
        "analyzed": analyzed,
        "store": store.describe(),
    }))
}

/// Decisions in time order; each host's are batched as it would ship them.
fn generate(rows: u64, t0_ns: i64, tx: mpsc::Sender<(String, Vec<IncomingDecision>)>) {
    let mut rng = Rng::new(42);
    let names: Vec<String> = (0..FILL_HOSTS).map(|h| synth::host_name(PREFIX, h)).collect();
    let mut pending: Vec<Vec<IncomingDecision>> = (0..FILL_HOSTS).map(|_| Vec::with_capacity(BATCH)).collect();
    let mut seqs = vec![0i64; FILL_HOSTS as usize];
    for i in 0..rows {
        let host = rng.below(FILL_HOSTS) as usize;
        let t = t0_ns + (SPAN_NS as i128 * i as i128 / rows.max(1) as i128) as i64 + rng.below(1_000_000) as i64;
        let decision = synth::decision(&mut rng, host as u64, &names[host], t, t0_ns);
        seqs[host] += 1;
        let body = decision.encode_to_vec();
        pending[host].push(IncomingDecision { seq: seqs[host], decision, body });
        if pending[host].len() == BATCH {
            let batch = std::mem::replace(&mut pending[host], Vec::with_capacity(BATCH));
            if tx.blocking_send((names[host].clone(), batch)).is_err() {
                return;
            }
        }
    }
    for (host, batch) in pending.into_iter().enumerate() {
        if !batch.is_empty() && tx.blocking_send((names[host].clone(), batch)).is_err() {
            return;
        }
    }
}
