//! The gateway section: tables on stdout, and the same in docs/benchmarks.md
//! between its markers (the rest of that file belongs to the main bench).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{BackendResult, Plan};
use crate::bench::report::{Table, GATEWAY_BEGIN, GATEWAY_END};
use crate::bench::sys::Machine;

/// The target for a page of QueryDecisions.
const QUERY_P50_MAX_MS: f64 = 100.0;

pub struct Report<'a> {
    pub machine: &'a Machine,
    pub plan: &'a Plan,
    pub results: &'a [BackendResult],
    pub elapsed: Duration,
}

fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.1} ms"),
        _ => "-".into(),
    }
}

fn count(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0);
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_second(v: &Value) -> String {
    format!("{}/s", count(&Value::from(v.as_f64().unwrap_or(0.0).round() as u64)))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

impl Report<'_> {
    fn tables(&self) -> Vec<Table> {
        let p = self.plan;
        let mut load = Table::new(
            &format!(
                "Decision ingest: {} agents (one mutual-TLS stream each), {} decisions/s offered for {} s, batches every {} ms",
                count(&p.agents.into()),
                count(&p.rate.into()),
                p.seconds,
                p.batch_ms
            ),
            &["store", "offered", "stored (acked in the window)", "target ≥ offered", "acked in all", "read back", "zero loss", "live tail saw", "latency p50", "p99", "max"],
        );
        let mut push = Table::new(
            &format!("Policy push to {} connected agents (from the PushPolicy call returning)", count(&p.agents.into())),
            &["store", "PushPolicy call", "agents with the bundle", "p50", "p99", "max", "ListHosts: all enforcing"],
        );
        let mut cost = Table::new(
            &format!("Gateway memory and CPU with {} agents connected", count(&p.agents.into())),
            &["store", "state", "RSS", "peak RSS (VmHWM)", "gateway CPU (cores)", "PostgreSQL server CPU (cores)"],
        );
        let mut query = Table::new(
            &format!("QueryDecisions over gRPC, page of 100 newest first, {} runs each (p99 of {} runs is their slowest but one)", p.runs, p.runs),
            &["store", "stored decisions", "filter", "value", "rows", "p50", "p99", "target p50 < 100 ms"],
        );
        for r in self.results {
            let f = &r.fleet;
            let offered = f["offered_per_second"].as_f64().unwrap_or(0.0);
            let stored = f["stored_per_second"].as_f64().unwrap_or(0.0);
            let s = &f["stored"];
            let zero_loss = s["missing"].as_u64() == Some(0) && s["duplicates"].as_u64() == Some(0) && s["unexpected"].as_u64() == Some(0) && s["total"] == f["made"];
            let loss_text = if zero_loss {
                format!("yes ({} of {} hosts exact)", count(&s["hosts_exact"]), count(&s["hosts"]))
            } else {
                format!("NO: {} missing, {} duplicated, {} unexpected", count(&s["missing"]), count(&s["duplicates"]), count(&s["unexpected"]))
            };
            load.row(vec![
                r.store.into(),
                format!("{} ({} made)", per_second(&f["offered_per_second"]), count(&f["made"])),
                format!("{} ({})", per_second(&f["stored_per_second"]), count(&f["acked_in_window"])),
                met(stored >= offered * 0.99).into(),
                count(&f["acked"]),
                count(&s["total"]),
                loss_text,
                count(&f["tail_seen"]),
                ms(&f["latency_ms"]["p50"]),
                ms(&f["latency_ms"]["p99"]),
                ms(&f["latency_ms"]["max"]),
            ]);
            let u = &f["push"];
            push.row(vec![
                r.store.into(),
                ms(&u["call_ms"]),
                format!("{} of {}", count(&u["received"]), count(&f["agents"])),
                ms(&u["p50_ms"]),
                ms(&u["p99_ms"]),
                ms(&u["max_ms"]),
                if u["all_enforcing_ms"].is_null() { format!("not within 120 s ({} enforcing)", count(&u["enforcing"])) } else { ms(&u["all_enforcing_ms"]) },
            ]);
            for (state, begin, end) in [("idle (connected, heartbeats only)", "idle-begin", "idle-end"), ("under the load", "load-begin", "load-end")] {
                let (Some(b), Some(e)) = (r.marks.get(begin), r.marks.get(end)) else {
                    cost.row(vec![r.store.into(), state.into(), "no sample".into()]);
                    continue;
                };
                cost.row(vec![
                    r.store.into(),
                    state.into(),
                    format!("{:.1} MB", e.rss_kb as f64 / 1024.0),
                    format!("{:.1} MB", e.hwm_kb as f64 / 1024.0),
                    format!("{:.2}", e.cores_since(b)),
                    e.pg_cores_since(b).map_or("-".into(), |c| format!("{c:.2}")),
                ]);
            }
            let rows = format!("{}{}", count(&r.fill["stored"]), if p.rows < 10_000_000 { " (--quick)" } else { "" });
            for q in r.query["queries"].as_array().into_iter().flatten() {
                let p50 = q["p50_ms"].as_f64().unwrap_or(f64::INFINITY);
                query.row(vec![
                    r.store.into(),
                    rows.clone(),
                    q["query"].as_str().unwrap_or("?").into(),
                    q["value"].as_str().unwrap_or("").into(),
                    count(&q["returned"]),
                    ms(&q["p50_ms"]),
                    ms(&q["p99_ms"]),
                    met(p50 < QUERY_P50_MAX_MS).into(),
                ]);
            }
        }
        let mut fill = Table::new("The query benchmark's store, filled directly with insert_decisions", &["store", "decisions", "took", "rate", "batch", "writers", "ANALYZE after"]);
        for r in self.results {
            let f = &r.fill;
            fill.row(vec![
                r.store.into(),
                count(&f["stored"]),
                format!("{:.0} s", f["seconds"].as_f64().unwrap_or(f64::NAN)),
                per_second(&f["per_second"]),
                count(&f["batch"]),
                count(&f["writers"]),
                if f["analyzed"].as_bool() == Some(true) { "yes".into() } else { "no (the gateway never runs it)".into() },
            ]);
        }
        let mut tables = vec![load, push, cost, query, fill];
        tables.extend(self.results.iter().filter_map(|r| self.pages_table(r)));
        let mut export = Table::new(
            "Control Room CSV export over HTTPS (streamed a page of 1,000 at a time), one user's decisions",
            &["store", "stored decisions", "export", "rows", "size", "median", "p95", "rows/s at the median"],
        );
        for r in self.results {
            let e = &r.query["export"];
            if e.is_null() {
                continue;
            }
            export.row(vec![
                r.store.into(),
                self.stored(r),
                format!("`{}`", e["path"].as_str().unwrap_or("?")),
                count(&e["rows"]),
                format!("{:.1} MB", e["bytes"].as_f64().unwrap_or(f64::NAN) / 1e6),
                ms(&e["p50_ms"]),
                ms(&e["p95_ms"]),
                per_second(&e["rows_per_second"]),
            ]);
        }
        tables.push(export);
        tables
    }

    fn stored(&self, r: &BackendResult) -> String {
        format!("{}{}", count(&r.fill["stored"]), if self.plan.rows < 10_000_000 { " (--quick)" } else { "" })
    }

    /// One store's Control Room pages, each decisions page beside its gRPC query.
    fn pages_table(&self, r: &BackendResult) -> Option<Table> {
        let pages = r.query["pages"].as_array().filter(|p| !p.is_empty())?;
        let mut t = Table::new(
            &format!(
                "Control Room pages on {} over HTTPS, {} stored decisions: GET of the whole page as a signed-in admin, {} runs each (p95 of {} runs is their slowest but one)",
                r.store,
                self.stored(r),
                self.plan.runs,
                self.plan.runs
            ),
            &["page", "path", "rows", "size", "median", "p95", "QueryDecisions median (gRPC, same filter)", "page ÷ query"],
        );
        for p in pages {
            let ratio = p["ratio"].as_f64().map_or("-".into(), |x| format!("{x:.2}×"));
            t.row(vec![
                p["page"].as_str().unwrap_or("?").into(),
                format!("`{}`", p["path"].as_str().unwrap_or("?")),
                if p["rows"].is_null() { "-".into() } else { count(&p["rows"]) },
                format!("{:.0} kB", p["bytes"].as_f64().unwrap_or(f64::NAN) / 1e3),
                ms(&p["p50_ms"]),
                ms(&p["p95_ms"]),
                ms(&p["query_p50_ms"]),
                ratio,
            ]);
        }
        Some(t)
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for r in self.results {
            let f = &r.fleet;
            notes.push(format!(
                "{}: {} hosts enrolled in {:.1} s, {} streams open in {:.1} s; the bench client (agents and tail) used {:.0} CPU seconds over its whole run; agent streams that ended in error: {}.",
                r.store,
                count(&f["agents"]),
                f["enroll_seconds"].as_f64().unwrap_or(f64::NAN),
                count(&f["agents"]),
                f["connect_seconds"].as_f64().unwrap_or(f64::NAN),
                f["bench_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
                count(&f["agent_errors"]["failed"]),
            ));
            if f["drained"].as_bool() != Some(true) || f["tail_caught_up"].as_bool() != Some(true) {
                notes.push(format!("{}: the run ended with acks or the live tail still behind after 120 s of draining.", r.store));
            }
            if let Some(overview) = r.query["pages"].as_array().and_then(|p| p.iter().find(|p| p["path"] == "/")) {
                notes.push(format!(
                    "{}: the overview's chart (the last 24 hours) counted {} decisions ({} denied); the store's newest decision was {:.0} minutes old when the pages were timed.",
                    r.store,
                    count(&Value::from(overview["chart_allowed"].as_u64().unwrap_or(0) + overview["chart_denied"].as_u64().unwrap_or(0))),
                    count(&overview["chart_denied"]),
                    r.query["newest_age_seconds"].as_f64().unwrap_or(f64::NAN) / 60.0,
                ));
            }
            notes.extend(r.notes.iter().cloned());
            if let Some(examples) = f["agent_errors"]["examples"].as_array().filter(|e| !e.is_empty()) {
                notes.push(format!("{}: agent errors, for example: {}", r.store, examples.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")));
            }
        }
        notes
    }

    const METHOD: &'static str = "Method: xtask starts `airlock-gateway run` (release) on a fresh data directory (SQLite) or a fresh database of a \
        temporary PostgreSQL 15 cluster on this machine (fsync off), and `gateway-bench` (release, tokio multi-thread) \
        on the same machine: it enrolls the agents with one join token and a CSR each, opens one mutual-TLS \
        `AgentLink.Exchange` stream per agent, and a `StreamDecisions` live tail. Idle: every stream open, no \
        decisions (the agents' 30 s heartbeat does not fall in the window). Then a policy version (the files of \
        `policies/`) is pushed with `Fleet.PushPolicy`; each agent answers its bundle with a PolicyReport at once; \
        the time to each agent is measured from the call returning, and ListHosts is polled every 100 ms until every \
        host enforces it. Load: each agent makes its share of the rate at a steady pace, stamps each decision with \
        the moment it is made (the kernel's decision), and ships what it has every batch interval, numbered per host \
        from 1. Stored rate: decisions acked (the gateway acks only what it stored) by the end of the window, over \
        the window. Latency: from a decision's time to its arrival through the live tail, which reads the store (so \
        it was queryable then), on the same clock; it includes the batching wait. Zero loss: after the load, every \
        host's decisions are read back with QueryDecisions and compared with the seqs it sent. Gateway CPU is the sum \
        of its threads' on-CPU time (`/proc/PID/task/*/schedstat`) over the window, in cores; memory from \
        `/proc/PID/status`. The client shares the machine's cores with the gateway (and PostgreSQL). Queries: a \
        second, fresh store is filled directly through the store crate's `insert_decisions` (100 hosts, sessions of \
        an hour, 300 users in five roles, exec and connect, about 5% denies, times over 7 days), the gateway started \
        on it, and each query timed over gRPC (one untimed run first). Control Room: that gateway also serves the UI \
        (`--ui-listen`); an admin user is made with CreateUser and signs in once through the password form; each page \
        is then a GET over one HTTP/2 connection over TLS (rustls, trusting the gateway's CA), timed until its whole \
        body is read, once untimed and then the runs. Each decisions page runs alternately with the gRPC QueryDecisions \
        it makes (same filter, page of 100), so both see the same caches, and `page ÷ query` is the ratio of their \
        medians in that one run: what rendering and HTTPS add to the query. The store's hosts and sessions tables are \
        empty (the fill writes decisions only), so the overview and sessions pages measure the 24-hour chart and \
        nothing else of size.";

    pub fn text(&self) -> String {
        let m = self.machine;
        let mut out = format!(
            "Gateway benchmark ({}): {} ({} cores), kernel {}, commit {}, {:.0} s in all\n\n",
            self.plan.mode,
            m.cpu,
            m.cores,
            m.kernel,
            m.commit,
            self.elapsed.as_secs_f64()
        );
        for t in self.tables() {
            out.push_str(&t.text());
            out.push('\n');
        }
        for n in self.notes() {
            let _ = writeln!(out, "- {n}");
        }
        out
    }

    pub fn markdown(&self) -> String {
        let m = self.machine;
        let mut out = String::from("## Gateway\n\nGenerated by `cargo xtask bench gateway` from the numbers it measured; do not edit by hand.\n\n| | |\n|---|---|\n");
        for (k, v) in [
            ("date", m.date.clone()),
            ("Airlock commit", m.commit.clone()),
            ("machine", format!("{}, {} cores, kernel {}", m.cpu, m.cores, m.kernel)),
            ("mode", self.plan.mode.to_string()),
            ("run took", format!("{:.0} s", self.elapsed.as_secs_f64())),
        ] {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        let _ = write!(out, "\n{}\n\n", Self::METHOD);
        for t in self.tables() {
            out.push_str(&t.markdown());
            out.push('\n');
        }
        for n in self.notes() {
            let _ = writeln!(out, "- {n}");
        }
        out
    }
}

/// Replaces what is between the gateway markers (appending them if missing).
pub fn write_section(doc: &Path, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(doc) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", doc.display())),
    };
    let block = format!("{GATEWAY_BEGIN}\n{}\n{GATEWAY_END}", section.trim_end());
    let new = match (old.find(GATEWAY_BEGIN), old.find(GATEWAY_END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + GATEWAY_END.len()..]),
        _ => {
            let sep = if old.is_empty() || old.ends_with("\n\n") { "" } else if old.ends_with('\n') { "\n" } else { "\n\n" };
            format!("{old}{sep}{block}\n")
        }
    };
    std::fs::write(doc, new).with_context(|| format!("write {}", doc.display()))
}
