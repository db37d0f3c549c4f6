//! `gateway-bench fleet`: a thousand simulated agents against a running
//! gateway. Enroll, connect every stream, stay idle (heartbeats only), push
//! a policy version and time its rollout, then ship the aggregate load for a
//! fixed time and time each decision from its making to its appearance in a
//! live tail (`StreamDecisions` reads the store, so what it yields is
//! queryable). At the end every host's stored decisions are read back and
//! compared with what it sent. Prints `mark NAME` lines as it goes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_api::gateway::v1::{CreateTokenRequest, ListHostsRequest, PolicyFile, PushPolicyRequest, QueryDecisionsRequest, StreamDecisionsRequest};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::agents::{self, Agent, AgentStats, Phase};
use crate::common::{mark, now_ns, own_cpu_seconds, percentile, read_token, sorted, Fleet, Flags, Target};

const PREFIX: &str = "agent-";
/// How long the end of the run waits for acks and the tail to catch up.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

pub async fn run(flags: &Flags) -> Result<Value> {
    let target = Arc::new(Target::from_flags(flags)?);
    let token = read_token(flags.get("token-file")?)?;
    let count: u64 = flags.num("agents")?;
    let rate: f64 = flags.num("rate")?;
    let duration = Duration::from_secs_f64(flags.num("seconds")?);
    let idle = Duration::from_secs_f64(flags.num("idle-seconds")?);
    let batch_every = Duration::from_millis(flags.num("batch-ms")?);
    let policy_files = read_policy_dir(flags.get("policies")?)?;
    let mut fleet = target.fleet(&token).await?;

    let started = Instant::now();
    let join = fleet
        .create_token(CreateTokenRequest { join: true, uses: 0, ttl_seconds: 3600, label: "gateway-bench".into(), ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("create a join token: {}", s.message()))?
        .into_inner()
        .token;
    let enrolled = agents::enroll_all(&target, &join, PREFIX, count).await?;
    let enroll_s = started.elapsed().as_secs_f64();
    eprintln!("gateway-bench: {count} hosts enrolled in {enroll_s:.1} s");

    let tail = Tail::open(&target, &token).await?;
    let epoch = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let (connected_tx, mut connected_rx) = mpsc::channel(count as usize);
    let stats: Vec<Arc<AgentStats>> = (0..count).map(|_| Arc::new(AgentStats::default())).collect();
    let mut set = JoinSet::new();
    let limit = Arc::new(Semaphore::new(32));
    let connect_started = Instant::now();
    for (index, e) in enrolled.into_iter().enumerate() {
        let agent = Agent { index: index as u64, agents: count, host: e.host, rate: rate / count as f64, batch_every, stats: stats[index].clone(), epoch };
        let (target, limit, phase, connected) = (target.clone(), limit.clone(), phase_rx.clone(), connected_tx.clone());
        set.spawn(async move {
            let permit = limit.acquire_owned().await.context("the connection limiter closed")?;
            let channel = target.channel(Some(e.identity)).await.with_context(|| format!("{}: connect", agent.host))?;
            drop(permit);
            agent.run(channel, phase, connected).await
        });
    }
    drop(connected_tx);
    for n in 0..count {
        let waited = tokio::time::timeout(Duration::from_secs(180), connected_rx.recv()).await;
        if !matches!(waited, Ok(Some(()))) {
            let failure = first_failure(&mut set).await;
            bail!("only {n} of {count} agents connected: {failure}");
        }
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    eprintln!("gateway-bench: {count} streams open in {connect_s:.1} s");

    // Hello's writes settle before the idle window opens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    mark("idle-begin");
    tokio::time::sleep(idle).await;
    mark("idle-end");

    let push = push_policy(&mut fleet, policy_files, &stats, epoch, count).await?;
    eprintln!("gateway-bench: policy rollout {push}");

    mark("load-begin");
    let load_start = Instant::now();
    let start_ns = now_ns();
    phase_tx.send_replace(Phase::Load { start: load_start, start_ns, end: load_start + duration });
    tokio::time::sleep_until((load_start + duration).into()).await;
    mark("load-end");
    let acked_in_window: u64 = stats.iter().map(|s| s.acked.load(Ordering::SeqCst)).sum();
    // Everything made by the end is shipped at each agent's next tick.
    tokio::time::sleep(batch_every * 2).await;
    let made: u64 = stats.iter().map(|s| s.made.load(Ordering::SeqCst)).sum();
    let drained = wait_until(DRAIN_LIMIT, || stats.iter().all(|s| s.acked.load(Ordering::SeqCst) >= s.made.load(Ordering::SeqCst))).await;
    let acked: u64 = stats.iter().map(|s| s.acked.load(Ordering::SeqCst)).sum();
    let tail_caught_up = wait_until(DRAIN_LIMIT, || tail.count.load(Ordering::SeqCst) >= made).await;
    let tail_seen = tail.count.load(Ordering::SeqCst);
    let latencies = tail.latencies_ms();
    eprintln!("gateway-bench: load done: {made} made, {acked} acked, tail saw {tail_seen}");

    let check = check_stored(&target, &token, &stats, count).await?;
    // The streams stay open: xtask stops the gateway before this process lets them go.
    let agent_errors = finished_with_errors(&mut set);
    std::mem::forget((phase_tx, set));
    let lat = sorted(latencies);
    let wall = duration.as_secs_f64();
    Ok(json!({
        "agents": count,
        "enroll_seconds": enroll_s,
        "connect_seconds": connect_s,
        "idle_seconds": idle.as_secs_f64(),
        "seconds": wall,
        "rate_target": rate,
        "batch_ms": batch_every.as_millis() as u64,
        "made": made,
        "offered_per_second": made as f64 / wall,
        "acked_in_window": acked_in_window,
        "stored_per_second": acked_in_window as f64 / wall,
        "acked": acked,
        "drained": drained,
        "tail_seen": tail_seen,
        "tail_caught_up": tail_caught_up,
        "latency_ms": { "samples": lat.len(), "p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0), "max": percentile(&lat, 100.0) },
        "stored": check,
        "push": push,
        "agent_errors": agent_errors,
        "bench_cpu_seconds": own_cpu_seconds(),
    }))
}

/// `policies/NAME` and `roles/NAME` from a policy directory, as `policy push` sends them.
fn read_policy_dir(dir: &str) -> Result<Vec<PolicyFile>> {
    let mut files = Vec::new();
    for sub in ["policies", "roles"] {
        let path = std::path::Path::new(dir).join(sub);
        let mut names: Vec<_> = std::fs::read_dir(&path).with_context(|| format!("read {}", path.display()))?.flatten().map(|e| e.path()).collect();
        names.sort();
        for file in names.into_iter().filter(|p| p.is_file()) {
            let name = file.file_name().and_then(|n| n.to_str()).with_context(|| format!("{}: not a UTF-8 name", file.display()))?;
            let content = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
            files.push(PolicyFile { path: format!("{sub}/{name}"), content });
        }
    }
    if files.is_empty() {
        bail!("{dir}: no policy files under policies/ or roles/");
    }
    Ok(files)
}

/// Pushes a version while every stream is open; times each agent's bundle
/// from the push call returning, and ListHosts until all enforce it.
async fn push_policy(fleet: &mut Fleet, files: Vec<PolicyFile>, stats: &[Arc<AgentStats>], epoch: Instant, count: u64) -> Result<Value> {
    let called = Instant::now();
    let pushed = fleet
        .push_policy(PushPolicyRequest { files, comment: "gateway-bench rollout".into(), ..Default::default() })
        .await
        .map_err(|s| anyhow::anyhow!("push the policy: {}", s.message()))?
        .into_inner();
    let returned = Instant::now();
    let call_ms = (returned - called).as_secs_f64() * 1e3;
    let all_received = wait_until(Duration::from_secs(120), || stats.iter().all(|s| s.bundle_version.load(Ordering::SeqCst) >= pushed.version)).await;
    let since_return = |s: &Arc<AgentStats>| {
        let at = s.bundle_at.load(Ordering::SeqCst);
        (at > 0).then(|| (at - 1) as f64 / 1e6 - (returned - epoch).as_secs_f64() * 1e3)
    };
    let received = sorted(stats.iter().filter_map(since_return).collect());
    let mut enforcing_ms = Value::Null;
    let mut enforcing = 0;
    while returned.elapsed() < Duration::from_secs(120) {
        let hosts = fleet.list_hosts(ListHostsRequest::default()).await.map_err(|s| anyhow::anyhow!("list the hosts: {}", s.message()))?.into_inner().hosts;
        enforcing = hosts.iter().filter(|h| h.host_id.starts_with(PREFIX) && h.enforced_version >= pushed.version && h.policy_error.is_empty()).count();
        if enforcing as u64 >= count {
            enforcing_ms = json!(returned.elapsed().as_secs_f64() * 1e3);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({
        "version": pushed.version,
        "call_ms": call_ms,
        "received": received.len(),
        "all_received": all_received,
        "p50_ms": percentile(&received, 50.0),
        "p99_ms": percentile(&received, 99.0),
        "max_ms": percentile(&received, 100.0),
        "enforcing": enforcing,
        "all_enforcing_ms": enforcing_ms,
    }))
}

/// Every host's stored decisions read back page by page: each seq it made,
/// once, and nothing else.
async fn check_stored(target: &Target, token: &str, stats: &[Arc<AgentStats>], count: u64) -> Result<Value> {
    let fleet = target.fleet(token).await?;
    let mut set = JoinSet::new();
    let limit = Arc::new(Semaphore::new(8));
    for (i, s) in stats.iter().enumerate() {
        let (mut fleet, limit, made) = (fleet.clone(), limit.clone(), s.made.load(Ordering::SeqCst));
        let host = crate::synth::host_name(PREFIX, i as u64);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.context("the limiter closed")?;
            let mut seqs = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = fleet
                    .query_decisions(QueryDecisionsRequest { host: host.clone(), page_size: 1000, page_token: page_token.clone(), ..Default::default() })
                    .await
                    .map_err(|s| anyhow::anyhow!("query {host}'s decisions: {}", s.message()))?
                    .into_inner();
                seqs.extend(page.decisions.iter().map(|d| d.seq));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
            let missing = (1..=made).filter(|s| !distinct.contains(s)).count() as u64;
            let unexpected = distinct.iter().filter(|s| **s == 0 || **s > made).count() as u64;
            Ok::<_, anyhow::Error>((seqs.len() as u64, missing, (seqs.len() - distinct.len()) as u64, unexpected))
        });
    }
    let (mut stored, mut missing, mut duplicates, mut unexpected, mut hosts_exact) = (0, 0, 0, 0, 0);
    while let Some(joined) = set.join_next().await {
        let (n, m, d, u) = joined.context("a check task failed")??;
        stored += n;
        missing += m;
        duplicates += d;
        unexpected += u;
        hosts_exact += u64::from(m == 0 && d == 0 && u == 0);
    }
    Ok(json!({ "hosts": count, "hosts_exact": hosts_exact, "total": stored, "missing": missing, "duplicates": duplicates, "unexpected": unexpected }))
}

/// The live tail, opened before the load: each decision's age when it arrives.
struct Tail {
    count: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<f64>>>,
}

impl Tail {
    async fn open(target: &Target, token: &str) -> Result<Tail> {
        let mut fleet = target.fleet(token).await?;
        let mut stream = fleet.stream_decisions(StreamDecisionsRequest::default()).await.map_err(|s| anyhow::anyhow!("open the live tail: {}", s.message()))?.into_inner();
        let tail = Tail { count: Arc::default(), latencies: Arc::default() };
        let (count, latencies) = (tail.count.clone(), tail.latencies.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(1024);
            loop {
                match stream.message().await {
                    Ok(Some(d)) => {
                        let now = now_ns();
                        if let Some(decision) = d.decision.filter(|_| d.host.starts_with(PREFIX)) {
                            batch.push((now - decision.time_unix_nanos) as f64 / 1e6);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(None) => break,
                    Err(s) => {
                        eprintln!("gateway-bench: the live tail ended: {}", s.message());
                        break;
                    }
                }
                if batch.len() >= 1000 {
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).append(&mut batch);
                }
            }
            latencies.lock().unwrap_or_else(|p| p.into_inner()).append(&mut batch);
        });
        Ok(tail)
    }

    fn latencies_ms(&self) -> Vec<f64> {
        self.latencies.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

async fn first_failure(set: &mut JoinSet<Result<()>>) -> String {
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Err(e)) => return format!("{e:#}"),
            Err(e) => return format!("a task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    "no agent reported an error".into()
}

/// Agents whose stream already ended in error; a few of them named.
fn finished_with_errors(set: &mut JoinSet<Result<()>>) -> Value {
    let mut errors = Vec::new();
    let mut failed = 0;
    while let Some(joined) = set.try_join_next() {
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => format!("{e}"),
        };
        failed += 1;
        if errors.len() < 5 {
            errors.push(error);
        }
    }
    json!({ "failed": failed, "examples": errors })
}
