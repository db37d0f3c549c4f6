//! `store-bench --dir DIR --rows N` (`cargo xtask bench` builds it in release
//! and runs it): fills a decision store in a scratch directory with synthetic
//! decisions through the store's own writer (batches, one transaction each),
//! then times the queries the API runs. Prints one JSON object.

use std::path::Path;
use std::time::{Duration, Instant};

use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, DecisionFilter, DecisionKind, Destination, ExecDetail, Verdict};
use airlock_store::{now_ns, Retention, Row, Store, MAX_PENDING};
use anyhow::{bail, Context, Result};
use serde_json::json;

const BATCH: usize = 1_000;
const RUNS: usize = 7;

/// A small deterministic generator (xorshift), so every run stores the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TOOLS: &[&[&str]] = &[
    &["git", "status"],
    &["git", "diff", "--stat", "HEAD~1"],
    &["cargo", "build", "--release"],
    &["ls", "-la", "src"],
    &["grep", "-rn", "TODO", "."],
    &["python3", "-m", "pytest", "-q", "tests/"],
    &["npm", "run", "lint"],
    &["kubectl", "get", "pods", "-n", "staging"],
    &["terraform", "plan", "-out", "plan.tfplan"],
    &["cat", "README.md"],
];
const DENIED: &[&[&str]] = &[&["terraform", "apply", "-auto-approve"], &["kubectl", "delete", "deployment", "api"], &["aws", "iam", "create-role", "--role-name", "admin"]];

fn synthetic(rng: &mut Rng, id: u64, t0: i64, span_ns: i64, n: u64) -> Decision {
    // Time grows with id (as the daemon assigns them), with a little jitter.
    let t = t0 + (span_ns as i128 * id as i128 / n as i128) as i64 + rng.below(1_000_000) as i64;
    // Sessions live in time as they do on a machine: 1,000 of them one after another, eight
    // at a time, their decisions interleaved.
    let session = ((id * 1_000 / n.max(1)) + rng.below(8)).min(999);
    let user = session % 20;
    // 1% of sessions run as the rare "ops-admin" role.
    let role = if session % 100 == 7 { "ops-admin" } else if session.is_multiple_of(3) { "ci" } else { "developer" };
    let roll = rng.below(1_000);
    let mut d = Decision {
        id,
        time_unix_nanos: t,
        time: String::new(),
        host: "bench-host".into(),
        session_id: session_id(session),
        role: role.into(),
        agent: "claude".into(),
        uid: 1000 + user as u32,
        user: format!("dev{user:02}"),
        pid: 10_000 + rng.below(50_000) as u32,
        ppid: 9_000,
        backend: "compat".into(),
        policy_generation: 1,
        cwd: format!("/home/dev{user:02}/src/project-{}", session % 37),
        ..Default::default()
    };
    if roll < 850 {
        let argv = TOOLS[rng.below(TOOLS.len() as u64) as usize];
        d.kind = "exec".into();
        d.decision = "allow".into();
        d.reason = "none".into();
        d.argv = argv.iter().map(|s| s.to_string()).collect();
        d.comm = argv[0].into();
        d.executable = format!("/usr/bin/{}", argv[0]);
        d.detail = Some(Detail::Exec(ExecDetail { filename: d.executable.clone(), stage: "new_image".into(), ..Default::default() }));
    } else if roll < 870 {
        let argv = DENIED[rng.below(DENIED.len() as u64) as usize];
        d.kind = "exec".into();
        d.decision = "deny".into();
        d.reason = "rule".into();
        d.argv = argv.iter().map(|s| s.to_string()).collect();
        d.comm = argv[0].into();
        d.executable = format!("/usr/local/bin/{}", argv[0]);
        d.policy = Some("infra-safety".into());
        d.rule = Some(argv[..2].join(" "));
        d.detail = Some(Detail::Exec(ExecDetail {
            filename: d.executable.clone(),
            matched_by: Some("executable".into()),
            stage: "new_image".into(),
            ..Default::default()
        }));
    } else {
        let deny = roll >= 995;
        d.kind = "connect".into();
        d.decision = if deny { "deny" } else { "allow" }.into();
        d.reason = if deny { "rule" } else { "none" }.into();
        let address = if deny { format!("10.20.{}.{}", rng.below(256), rng.below(256)) } else { format!("140.82.{}.{}", rng.below(256), rng.below(256)) };
        d.detail = Some(Detail::Destination(Destination { address, port: 443, protocol: "tcp".into() }));
        d.argv = vec!["git".into(), "fetch".into(), "origin".into()];
        d.comm = "git".into();
        d.executable = "/usr/bin/git".into();
        if deny {
            d.policy = Some("egress".into());
            d.rule = Some("10.0.0.0/8".into());
        }
    }
    d
}

/// Session ids are random in the daemon; here a fixed mix of the session's number.
fn session_id(n: u64) -> String {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

fn run(dir: &Path, rows: u64) -> Result<()> {
    if dir.join("decisions.db").exists() {
        bail!("{} already holds a store: give an empty scratch directory", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    // Everything spans the last 7 days, inside the default retention.
    let span = 7 * 86_400 * 1_000_000_000i64;
    let t0 = now_ns() - span;
    let store = Store::open(dir, Retention { max_age: Duration::from_secs(30 * 86_400), max_bytes: u64::MAX })?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A marker only ten decisions carry: the worst case for a text search is a rare match.
    let rare_every = rows / 10;
    let started = Instant::now();
    let mut next = 1u64;
    while next <= rows {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH && next <= rows {
            let id = store.next_id();
            let mut d = synthetic(&mut rng, id, t0, span, rows);
            if rare_every > 0 && next.is_multiple_of(rare_every) {
                // Into the command line, which the text filter searches (an exec's).
                d.detail = Some(Detail::Exec(ExecDetail::default()));
                d.kind = "exec".into();
                d.argv.push("--marker=needle-7f3a".into());
            }
            batch.push(Row::of(&d));
            next += 1;
        }
        // The daemon never blocks on the store; the bench must not lose rows, so it waits for room.
        while store.queued().1 + BATCH > MAX_PENDING {
            std::thread::sleep(Duration::from_millis(1));
        }
        store.submit(batch);
    }
    store.close();
    let insert_s = started.elapsed().as_secs_f64();
    let (count, bytes) = store.stats()?;
    if count != rows {
        bail!("the store holds {count} decisions, not {rows} (dropped {})", store.dropped());
    }

    let sample_session = session_id(421);
    let day = 86_400 * 1_000_000_000i64;
    let mid = t0 + 3 * day;
    let cases: Vec<(&str, DecisionFilter, u64)> = vec![
        ("newest page, no filter", DecisionFilter::default(), 0),
        ("one session (~0.1% of rows)", DecisionFilter { session_id: sample_session.clone(), ..Default::default() }, 0),
        ("one user (~5%)", DecisionFilter { user: "dev07".into(), ..Default::default() }, 0),
        ("a rare role (~1%)", DecisionFilter { role: "ops-admin".into(), ..Default::default() }, 0),
        ("denies (~2.5%)", DecisionFilter { decision: Verdict::Deny as i32, ..Default::default() }, 0),
        ("denied connects (~0.5%)", DecisionFilter { decision: Verdict::Deny as i32, kind: DecisionKind::Connect as i32, ..Default::default() }, 0),
        ("one hour, 4 days ago", DecisionFilter { since_unix_nanos: mid, until_unix_nanos: mid + day / 24, ..Default::default() }, 0),
        ("text \"terraform apply\" (~0.7%)", DecisionFilter { text: "terraform apply".into(), ..Default::default() }, 0),
        ("text in 10 rows (full scan)", DecisionFilter { text: "needle-7f3a".into(), ..Default::default() }, 0),
        ("text matching nothing (full scan)", DecisionFilter { text: "no-such-text".into(), ..Default::default() }, 0),
        ("session + deny + text", DecisionFilter { session_id: sample_session, decision: Verdict::Deny as i32, text: "apply".into(), ..Default::default() }, 0),
        ("page 50 deep (cursor), no filter", DecisionFilter::default(), rows.saturating_sub(50 * 100)),
        ("user + 1 day", DecisionFilter { user: "dev03".into(), since_unix_nanos: mid, until_unix_nanos: mid + day, ..Default::default() }, 0),
    ];
    let mut results = Vec::new();
    for (name, filter, before) in cases {
        let mut times = Vec::with_capacity(RUNS);
        let mut returned = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let (page, _) = store.query(&filter, before, 100)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            returned = page.len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        results.push(json!({ "query": name, "returned": returned, "median_ms": times[RUNS / 2], "max_ms": times[RUNS - 1] }));
    }
    println!(
        "{}",
        json!({
            "rows": rows,
            "bytes": bytes,
            "insert_seconds": insert_s,
            "insert_per_second": rows as f64 / insert_s,
            "batch": BATCH,
            "queries": results,
        })
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Result<(std::path::PathBuf, u64)> {
        let mut dir = None;
        let mut rows = 1_000_000;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--dir" => dir = Some(std::path::PathBuf::from(it.next().context("--dir needs a directory")?)),
                "--rows" => rows = it.next().context("--rows needs a number")?.parse().context("--rows needs a number")?,
                other => bail!("unknown argument {other:?}; usage: store-bench --dir DIR [--rows N]"),
            }
        }
        Ok((dir.context("usage: store-bench --dir DIR [--rows N]")?, rows))
    })();
    match parsed.and_then(|(dir, rows)| run(&dir, rows)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
