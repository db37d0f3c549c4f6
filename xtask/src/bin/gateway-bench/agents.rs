//! Simulated agents: enrolled with a CSR as `airlock-agent` does, then one
//! mutual-TLS `AgentLink.Exchange` stream each. While the load runs, an
//! agent makes its share of the decisions at a steady pace (each stamped
//! with the moment it is made, as the kernel's decision would be) and ships
//! what it has made every `batch_every`, numbered per host from 1. It
//! answers a policy bundle with a PolicyReport at once, as an agent that
//! applied it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_api::gateway::v1::agent_link_client::AgentLinkClient;
use airlock_api::gateway::v1::enrollment_client::EnrollmentClient;
use airlock_api::gateway::v1::{
    agent_message, gateway_message, shipped_entry, AgentMessage, DecisionBatch, EnrollRequest, Hello, PolicyReport, ShippedEntry,
};
use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Identity};

use crate::common::{Rng, Target};
use crate::synth;

/// Entries per batch at most, as the real agent.
const BATCH_ENTRIES: usize = 500;
/// An empty batch after this much silence keeps the stream alive, as the real agent.
const HEARTBEAT: Duration = Duration::from_secs(30);

pub struct Enrolled {
    pub host: String,
    pub identity: Identity,
}

/// Enrolls `count` hosts named `prefix0000`... with one join token, a few at a time.
pub async fn enroll_all(target: &Target, join_token: &str, prefix: &str, count: u64) -> Result<Vec<Enrolled>> {
    let channel = target.channel(None).await.context("the enrollment channel")?;
    let limit = Arc::new(Semaphore::new(16));
    let mut set = JoinSet::new();
    for i in 0..count {
        let (channel, limit, token, host) = (channel.clone(), limit.clone(), join_token.to_string(), synth::host_name(prefix, i));
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.context("the enrollment limiter closed")?;
            let key = rcgen::KeyPair::generate().context("generate a key pair")?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key).context("make the CSR")?.pem().context("the CSR as PEM")?;
            let response = EnrollmentClient::new(channel)
                .enroll(EnrollRequest { join_token: token, host_id: host.clone(), csr_pem: csr })
                .await
                .map_err(|s| anyhow::anyhow!("enroll {host}: {} ({:?})", s.message(), s.code()))?
                .into_inner();
            Ok::<_, anyhow::Error>((i, Enrolled { host, identity: Identity::from_pem(response.certificate_pem, key.serialize_pem()) }))
        });
    }
    let mut enrolled = Vec::with_capacity(count as usize);
    while let Some(joined) = set.join_next().await {
        enrolled.push(joined.context("an enrollment task failed")??);
    }
    enrolled.sort_by_key(|(i, _)| *i);
    Ok(enrolled.into_iter().map(|(_, e)| e).collect())
}

/// What the run controls the agents with.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    Idle,
    /// Decisions are made from `start` (its wall clock `start_ns`) to `end`.
    Load { start: Instant, start_ns: i64, end: Instant },
}

/// One agent's counters, read by the run.
#[derive(Default)]
pub struct AgentStats {
    pub connected: AtomicBool,
    /// Decisions made (and sent, or about to be): the highest seq.
    pub made: AtomicU64,
    /// The highest seq acked.
    pub acked: AtomicU64,
    /// When the policy bundle arrived, in ns since the run's epoch plus one (0: not yet).
    pub bundle_at: AtomicU64,
    pub bundle_version: AtomicU64,
}

pub struct Agent {
    pub index: u64,
    pub agents: u64,
    pub host: String,
    /// Decisions per second this agent makes under load.
    pub rate: f64,
    pub batch_every: Duration,
    pub stats: Arc<AgentStats>,
    pub epoch: Instant,
}

impl Agent {
    /// Connects, says Hello, and runs until the gateway ends the stream or the run drops its phase sender.
    pub async fn run(self, channel: Channel, mut phase: watch::Receiver<Phase>, connected: mpsc::Sender<()>) -> Result<()> {
        let mut client = AgentLinkClient::new(channel).max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<AgentMessage>(16);
        let hello = Hello { agent_version: "gateway-bench".into(), backend: "lsm".into(), kernel: "bench".into(), enforced_version: 0, enforced_hash: String::new() };
        send(&tx, agent_message::Body::Hello(hello)).await?;
        let mut inbound = client
            .exchange(ReceiverStream::new(rx))
            .await
            .map_err(|s| anyhow::anyhow!("{}: the gateway refused the stream: {} ({:?})", self.host, s.message(), s.code()))?
            .into_inner();
        self.stats.connected.store(true, Ordering::SeqCst);
        let _ = connected.send(()).await;

        let period = Duration::from_secs_f64(1.0 / self.rate.max(0.001));
        // Agents make their decisions evenly spread over the period, and ship at evenly spread moments.
        let offset = period.mul_f64(self.index as f64 / self.agents as f64);
        let send_offset = self.batch_every.mul_f64(self.index as f64 / self.agents as f64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + send_offset, self.batch_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rng = Rng::new(self.index + 1);
        let mut made = 0u64;
        let mut last_send = Instant::now();
        loop {
            tokio::select! {
                message = inbound.message() => {
                    let message = message.map_err(|s| anyhow::anyhow!("{}: the gateway ended the stream: {} ({:?})", self.host, s.message(), s.code()))?;
                    let Some(message) = message else { return Ok(()) };
                    match message.body {
                        Some(gateway_message::Body::Ack(ack)) => {
                            self.stats.acked.fetch_max(ack.seq, Ordering::SeqCst);
                        }
                        Some(gateway_message::Body::Policy(bundle)) => {
                            self.stats.bundle_at.store(self.epoch.elapsed().as_nanos() as u64 + 1, Ordering::SeqCst);
                            self.stats.bundle_version.store(bundle.version, Ordering::SeqCst);
                            let report = PolicyReport { version: bundle.version, content_hash: bundle.content_hash, error: String::new() };
                            send(&tx, agent_message::Body::Policy(report)).await?;
                        }
                        Some(gateway_message::Body::Command(_)) | None => {}
                    }
                }
                _ = tick.tick() => {
                    let current = *phase.borrow();
                    match current {
                        Phase::Idle => {}
                        Phase::Load { start, start_ns, end } => {
                            let now = Instant::now().min(end);
                            let due = if now < start + offset { 0 } else { ((now - start - offset).as_nanos() / period.as_nanos()) as u64 + 1 };
                            while made < due {
                                let upto = due.min(made + BATCH_ENTRIES as u64);
                                let entries = (made..upto)
                                    .map(|k| {
                                        let t = start_ns + (offset + period * k as u32).as_nanos() as i64;
                                        let d = synth::decision(&mut rng, self.index, &self.host, t, start_ns);
                                        ShippedEntry { seq: k + 1, entry: Some(shipped_entry::Entry::Decision(d)) }
                                    })
                                    .collect();
                                send(&tx, agent_message::Body::Batch(DecisionBatch { entries })).await?;
                                made = upto;
                                self.stats.made.store(made, Ordering::SeqCst);
                                last_send = Instant::now();
                            }
                        }
                    }
                    if last_send.elapsed() > HEARTBEAT {
                        send(&tx, agent_message::Body::Batch(DecisionBatch::default())).await?;
                        last_send = Instant::now();
                    }
                }
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<AgentMessage>, body: agent_message::Body) -> Result<()> {
    tx.send(AgentMessage { body: Some(body) }).await.map_err(|_| anyhow::anyhow!("the stream to the gateway closed"))
}
