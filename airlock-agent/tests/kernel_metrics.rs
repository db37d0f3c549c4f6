//! Prometheus metrics, end to end on this kernel: a daemon serving
//! `--metrics-listen`, a governed session with a known number of denied and
//! allowed execs and a denied connect, and scrapes before and after, parsed
//! by the official Python client (tests/python/metrics_scrape.py), which also
//! checks every name against Prometheus' conventions. Then a real gateway
//! with an enrolled agent: connected agents and ingested decisions.

// A test missing from the kernel_tests! list at the bottom would never run.
#![deny(dead_code)]

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::gateway::Gateway;
use support::*;

const ROLE: &str = r#"{ "id": "agent", "name": "Agent", "policies": ["metered"] }"#;

/// One parsed scrape.
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    types: BTreeMap<String, String>,
    openmetrics_families: Vec<String>,
}

impl Scrape {
    /// The value of the one sample named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{name}{labels:?}: {} samples match in the scrape",
            found.len()
        );
        found[0]
    }

    fn labels_of(&self, name: &str) -> BTreeMap<String, String> {
        self.samples
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.clone())
            .unwrap_or_else(|| panic!("no {name} in the scrape"))
    }
}

/// Scrapes `url` with the Python client's parsers; fails on any convention violation.
fn scrape(python: &Path, url: &str, prefix: &str) -> Scrape {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/metrics_scrape.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(url)
        .arg(prefix)
        .output()
        .expect("run metrics_scrape.py");
    assert!(
        out.status.success(),
        "metrics_scrape.py {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("metrics_scrape.py prints JSON");
    let violations: Vec<String> = v["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        violations.is_empty(),
        "{url}: names that break Prometheus' conventions:\n{}",
        violations.join("\n")
    );
    let samples = v["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            (
                s["name"].as_str().expect("name").to_string(),
                labels,
                s["value"].as_f64().expect("a numeric value"),
            )
        })
        .collect();
    let types = v["types"]
        .as_object()
        .expect("types")
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_string()))
        .collect();
    let openmetrics_families = v["openmetrics_families"]
        .as_array()
        .expect("families")
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect();
    Scrape {
        samples,
        types,
        openmetrics_families,
    }
}

/// A loopback port nothing listens on now (the daemon binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

fn wait_for<T>(what: &str, limit: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + seconds(limit);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const DENIED_EXECS: usize = 3;
const DENIED_CONNECTS: usize = 1;
/// bash (launch's exec), `terraform plan` twice, /usr/bin/python3 (by its path:
/// a PATH with pyenv's shims would exec more).
const ALLOWED_EXECS: usize = 4;

fn agent_counters_move_by_exactly_a_sessions_decisions() {
    let python = python_prometheus();
    // A listener on the denied address: only the policy can refuse the connect.
    let target = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = target.local_addr().expect("its address").port();
    let policy = r#"{ "id": "metered", "name": "Metered", "status": "active",
        "blocked_commands": ["terraform apply"], "egress": { "deny": ["127.0.0.2/32"] } }"#;
    let listen = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with_args(
        "metrics",
        &[("metered.json", policy)],
        &[("agent.json", ROLE)],
        &["--metrics-listen", listen.as_str()],
    );
    let url = format!("http://{listen}/metrics");
    let before = scrape(&python, &url, "airlock");

    // Every name the agent serves, parsed the same in both formats.
    for name in [
        "airlock_decisions",
        "airlock_kernel_ringbuf_dropped_events",
        "airlock_store_dropped_decisions",
        "airlock_policy_generation",
        "airlock_sessions_running",
        "airlock_build_info",
        "airlock_policy_info",
    ] {
        assert!(
            before.types.contains_key(name),
            "{name} missing from {:?}",
            before.types.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(before.types["airlock_decisions"], "counter");
    // The text parser names an info family with its `_info`; OpenMetrics without.
    let mut plain: Vec<&str> = before
        .types
        .keys()
        .map(|n| n.strip_suffix("_info").unwrap_or(n))
        .collect();
    plain.sort();
    let mut om: Vec<&str> = before
        .openmetrics_families
        .iter()
        .map(String::as_str)
        .collect();
    om.sort();
    assert_eq!(
        plain, om,
        "the Prometheus text and OpenMetrics scrapes name the same families"
    );

    let script = format!(
        "terraform apply\nterraform plan\nterraform apply\nterraform plan\nterraform apply\n\
         /usr/bin/python3 -c 'import socket,sys\ns=socket.socket()\ntry:\n  s.connect((\"127.0.0.2\", {port})); print(\"CONNECTED\")\nexcept OSError as e:\n  print(\"REFUSED\", e.errno)'\n"
    );
    let s = d.governed(Some("agent"), &script);
    assert!(
        !s.session_id.is_empty(),
        "the session did not start: {}",
        s.all_output()
    );
    assert_eq!(
        s.stdout.matches(RAN).count(),
        2,
        "terraform plan runs twice, apply never: {}",
        s.all_output()
    );
    assert!(
        s.stdout.contains("REFUSED 1"),
        "the connect to 127.0.0.2 was not refused: {}",
        s.all_output()
    );

    // The audit trail is written after every sink, the counter included, took the decision.
    let session = s.session_id.as_str();
    let lines = |kind: &str, decision: &str| {
        d.audit()
            .iter()
            .filter(|v| {
                v["session_id"] == session && v["kind"] == kind && v["decision"] == decision
            })
            .count()
    };
    wait_for("the session's decisions in the audit trail", 30, || {
        (lines("exec", "deny") >= DENIED_EXECS
            && lines("exec", "allow") >= ALLOWED_EXECS
            && lines("connect", "deny") >= DENIED_CONNECTS)
            .then_some(())
    });
    assert_eq!(
        (
            lines("exec", "deny"),
            lines("exec", "allow"),
            lines("connect", "deny")
        ),
        (DENIED_EXECS, ALLOWED_EXECS, DENIED_CONNECTS),
        "the session made other decisions than the test expects: {:#?}",
        d.audit()
            .iter()
            .filter(|v| v["session_id"] == session)
            .collect::<Vec<_>>()
    );
    let after = scrape(&python, &url, "airlock");
    let moved = |kind: &str, decision: &str| {
        let labels = [("kind", kind), ("decision", decision)];
        after.value("airlock_decisions_total", &labels)
            - before.value("airlock_decisions_total", &labels)
    };
    assert_eq!(moved("exec", "deny"), DENIED_EXECS as f64);
    assert_eq!(moved("exec", "allow"), ALLOWED_EXECS as f64);
    assert_eq!(moved("connect", "deny"), DENIED_CONNECTS as f64);
    assert_eq!(moved("connect", "allow"), 0.0);
    // The kernel's own counter saw at least those denials, and lost no event.
    let kernel_denies = after.value("airlock_kernel_denies_total", &[])
        - before.value("airlock_kernel_denies_total", &[]);
    assert!(
        kernel_denies >= (DENIED_EXECS + DENIED_CONNECTS) as f64,
        "kernel denies moved by {kernel_denies}"
    );
    assert_eq!(
        after.value("airlock_kernel_ringbuf_dropped_events_total", &[]),
        0.0
    );
    assert_eq!(
        after.value("airlock_store_dropped_decisions_total", &[]),
        0.0
    );
    let events = after.value("airlock_events_received_total", &[])
        - before.value("airlock_events_received_total", &[]);
    assert_eq!(
        events,
        (DENIED_EXECS + ALLOWED_EXECS + DENIED_CONNECTS) as f64,
        "ring-buffer records read for the session"
    );

    // The policy in force and the sessions, as status reports them.
    let status = d.status_json();
    assert_eq!(
        after.value("airlock_policy_generation", &[]),
        status["policy"]["generation"]
            .as_f64()
            .expect("status: policy generation")
    );
    assert_eq!(
        after
            .labels_of("airlock_policy_info")
            .get("version")
            .map(String::as_str),
        status["policy"]["version"].as_str()
    );
    assert_eq!(
        after
            .labels_of("airlock_backend_info")
            .get("backend")
            .map(String::as_str),
        Some(d.backend().as_str())
    );
    assert_eq!(
        after
            .labels_of("airlock_build_info")
            .get("version")
            .map(String::as_str),
        status["version"].as_str()
    );
    let mut live = d.live_session("agent");
    let during = scrape(&python, &url, "airlock");
    let running = d.status_json()["sessions"]
        .as_array()
        .expect("status: sessions")
        .len();
    assert_eq!(
        (during.value("airlock_sessions_running", &[]), running),
        (1.0, 1),
        "one live session"
    );
    live.quit();
    wait_for("the ended session to leave the sessions gauge", 30, || {
        (scrape(&python, &url, "airlock").value("airlock_sessions_running", &[]) == 0.0)
            .then_some(())
    });
    drop(target);
}

fn the_gateway_counts_its_agent_and_every_decision_it_shipped() {
    let python = python_prometheus();
    let gw = Gateway::start_with("metrics-gw", None, &["--metrics-listen", "127.0.0.1:0"]);
    let gw_url = gw.metrics_url();
    let idle = scrape(&python, &gw_url, "airlock_gateway");
    assert_eq!(idle.value("airlock_gateway_connected_agents", &[]), 0.0);
    assert_eq!(
        idle.value("airlock_gateway_ingested_decisions_total", &[]),
        0.0
    );
    assert_eq!(
        idle.types
            .get("airlock_gateway_query_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    let join = gw.token(&["--join"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = gw.agent_args(&join, "metered-host");
    args.extend(["--metrics-listen".to_string(), listen.clone()]);
    let agent = Daemon::start_without_policy_dir("metrics-agent", &args);
    let agent_url = format!("http://{listen}/metrics");
    let dir = TempDir::new("metrics-policy");
    write_policy_dir(
        &dir.0,
        &[(
            "metered.json",
            r#"{ "id": "metered", "name": "Metered", "status": "active", "blocked_commands": ["terraform apply"] }"#,
        )],
        &[("agent.json", ROLE)],
    );
    let pushed = gw.json(&[
        "policy",
        "push",
        dir.0.join("policy").to_str().expect("utf-8 path"),
        "--comment",
        "metrics",
    ]);
    assert_eq!(pushed["version"], 1);
    gw.wait_enforced("metered-host", 1);

    let s = agent.governed(
        Some("agent"),
        "terraform apply\nterraform plan\nterraform apply\n",
    );
    assert_eq!(s.stdout.matches(RAN).count(), 1, "{}", s.all_output());
    // Everything the agent recorded is acknowledged by the gateway.
    let shipped = wait_for("the agent's spool to be acknowledged", 60, || {
        let a = scrape(&python, &agent_url, "airlock");
        let recorded: f64 = a
            .samples
            .iter()
            .filter(|(n, _, _)| n == "airlock_decisions_total")
            .map(|(_, _, v)| v)
            .sum();
        let session_seen = a.value(
            "airlock_decisions_total",
            &[("kind", "exec"), ("decision", "deny")],
        ) >= 2.0;
        (session_seen && a.value("airlock_spool_pending_entries", &[]) == 0.0)
            .then_some((recorded, a))
    });
    let (recorded, a) = shipped;
    assert_eq!(a.value("airlock_gateway_connected", &[]), 1.0);
    assert_eq!(a.value("airlock_spool_lost_decisions_total", &[]), 0.0);
    assert_eq!(
        a.value("airlock_ship_lag_seconds", &[]),
        0.0,
        "nothing waits once everything is acknowledged"
    );
    assert_eq!(a.value("airlock_policy_bundle_version", &[]), 1.0);

    // A fleet query first, so the scrape below has timed one.
    let stored = gw.decisions(Some("metered-host"), &[]).len() as f64;
    let g = scrape(&python, &gw_url, "airlock_gateway");
    assert_eq!(g.value("airlock_gateway_connected_agents", &[]), 1.0);
    assert_eq!(
        g.value("airlock_gateway_ingested_decisions_total", &[]),
        recorded,
        "the gateway ingested what the agent recorded and shipped"
    );
    assert_eq!(stored, recorded, "the fleet API returns as many decisions");
    assert!(g.value("airlock_gateway_ingest_batches_total", &[]) >= 1.0);
    assert_eq!(
        g.value(
            "airlock_gateway_hosts",
            &[("org", "default"), ("policy_version", "1")]
        ),
        1.0
    );
    assert!(
        g.value(
            "airlock_gateway_query_duration_seconds_count",
            &[("op", "query_decisions")]
        ) >= 1.0
    );
    drop(agent);
}

kernel_tests!(
    agent_counters_move_by_exactly_a_sessions_decisions,
    the_gateway_counts_its_agent_and_every_decision_it_shipped
);
