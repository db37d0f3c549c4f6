//! `gateway-bench query`: QueryDecisions over gRPC against a gateway whose
//! store `fill` filled, one page of 100, newest first, for each indexed
//! filter and one text search (a scan of the subjects, newest first, until
//! the page is full). Each query runs once untimed, then `--runs` times.

use std::time::Instant;

use airlock_api::gateway::v1::QueryDecisionsRequest;
use airlock_api::v1::{DecisionFilter, DecisionKind, Verdict};
use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::common::{percentile, read_token, sorted, Flags, Target};
use crate::fill::PREFIX;
use crate::synth::{self, SESSION_NS};

const HOUR_NS: i64 = 3_600_000_000_000;

pub async fn run(flags: &Flags) -> Result<Value> {
    let target = Target::from_flags(flags)?;
    let token = read_token(flags.get("token-file")?)?;
    let runs: usize = flags.num("runs")?;
    let t0: i64 = flags.num("t0-ns")?;
    let end: i64 = flags.num("end-ns")?;
    let mut fleet = target.fleet(&token).await?;
    let middle = t0 + (end - t0) / 2;
    let slot = (middle - t0) / SESSION_NS;
    let f = DecisionFilter::default;
    let queries: Vec<(&str, String, DecisionFilter, String)> = vec![
        ("none (newest page)", "-".into(), f(), String::new()),
        ("session_id", synth::session_id(42, slot, 1), DecisionFilter { session_id: synth::session_id(42, slot, 1), ..f() }, String::new()),
        ("user", synth::user_name(127), DecisionFilter { user: synth::user_name(127), ..f() }, String::new()),
        ("role", "sre".into(), DecisionFilter { role: "sre".into(), ..f() }, String::new()),
        ("kind=exec + verdict=deny", "exec, deny".into(), DecisionFilter { kind: DecisionKind::Exec as i32, decision: Verdict::Deny as i32, ..f() }, String::new()),
        ("host", synth::host_name(PREFIX, 42), f(), synth::host_name(PREFIX, 42)),
        (
            "time range (since/until)",
            "1 hour, mid-week".into(),
            DecisionFilter { since_unix_nanos: middle, until_unix_nanos: middle + HOUR_NS, ..f() },
            String::new(),
        ),
        ("text search (a scan)", format!("{:?}", synth::TEXT_NEEDLE), DecisionFilter { text: synth::TEXT_NEEDLE.into(), ..f() }, String::new()),
    ];
    let mut results = Vec::new();
    for (name, value, filter, host) in queries {
        let request = QueryDecisionsRequest { filter: Some(filter), host, page_size: 100, ..Default::default() };
        let mut times = Vec::with_capacity(runs);
        let mut returned = 0;
        for run in 0..=runs {
            let started = Instant::now();
            let page = fleet.query_decisions(request.clone()).await.map_err(|s| anyhow::anyhow!("query {name}: {}", s.message())).context("QueryDecisions")?.into_inner();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            returned = page.decisions.len();
            if run > 0 {
                times.push(ms);
            }
        }
        let times = sorted(times);
        eprintln!("gateway-bench: query {name}: p50 {:.1} ms, {returned} rows", percentile(&times, 50.0));
        results.push(json!({
            "query": name,
            "value": value,
            "returned": returned,
            "p50_ms": percentile(&times, 50.0),
            "p99_ms": percentile(&times, 99.0),
            "max_ms": percentile(&times, 100.0),
        }));
    }
    Ok(json!({ "runs": runs, "page_size": 100, "queries": results }))
}
