//! A simulated agent, speaking to the gateway exactly as `airlock-agent`
//! does: it makes its own key, enrolls with a join token and a CSR, then
//! opens the mutual-TLS `AgentLink.Exchange` stream with the certificate it
//! got, says Hello, ships decisions in numbered batches, and answers
//! commands. It runs on a thread of its own; the test drives it with plain
//! blocking calls, each bounded, failing with what it was waiting for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_api::gateway::v1::agent_link_client::AgentLinkClient;
use airlock_api::gateway::v1::enrollment_client::EnrollmentClient;
use airlock_api::gateway::v1::{
    agent_message, command, gateway_message, shipped_entry, AgentMessage, Command, CommandResult, DecisionBatch, EnrollRequest, Hello, ShippedEntry,
};
use airlock_api::v1::Decision;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long any one wait of the test lasts at most.
pub const BOUND: Duration = Duration::from_secs(30);

pub struct SimAgent {
    pub host: String,
    outbox: mpsc::Sender<AgentMessage>,
    commands: std_mpsc::Receiver<Command>,
    /// The `security_blocks` sets, apart from the commands that want an answer.
    blocks: std_mpsc::Receiver<Vec<airlock_api::v1::SecurityBlock>>,
    acked: Arc<AtomicU64>,
    /// Why the stream ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
    next_seq: u64,
    thread: Option<JoinHandle<()>>,
}

impl SimAgent {
    /// Enrolls `host` with `join_token` and connects; returns once the stream is open.
    pub fn enroll(url: &str, ca_pem: &[u8], join_token: &str, host: &str) -> SimAgent {
        let (outbox, inbound_rx) = mpsc::channel::<AgentMessage>(64);
        let (command_tx, commands) = std_mpsc::channel();
        let (blocks_tx, blocks) = std_mpsc::channel();
        let (ready_tx, ready) = std_mpsc::channel::<Result<(), String>>();
        let acked = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(Mutex::new(None));
        let link = Link { url: url.to_string(), ca_pem: ca_pem.to_vec(), join_token: join_token.to_string(), host: host.to_string() };
        let (acked_in, ended_in) = (acked.clone(), ended.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the simulated agent's runtime");
            runtime.block_on(async move {
                let why = match link.connect(inbound_rx).await {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        e
                    }
                    Ok(mut stream) => {
                        let _ = ready_tx.send(Ok(()));
                        loop {
                            match stream.message().await {
                                Ok(Some(message)) => match message.body {
                                    Some(gateway_message::Body::Ack(ack)) => {
                                        acked_in.fetch_max(ack.seq, Ordering::SeqCst);
                                    }
                                    Some(gateway_message::Body::Command(Command { body: Some(command::Body::SecurityBlocks(set)), .. })) => {
                                        let _ = blocks_tx.send(set.blocks);
                                    }
                                    Some(gateway_message::Body::Command(c)) => {
                                        let _ = command_tx.send(c);
                                    }
                                    Some(gateway_message::Body::Policy(_)) | None => {}
                                },
                                Ok(None) => break "the gateway closed the stream".to_string(),
                                Err(s) => break format!("the gateway ended the stream: {} ({:?})", s.message(), s.code()),
                            }
                        }
                    }
                };
                *ended_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            });
        });
        match ready.recv_timeout(BOUND) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the simulated agent {host} could not connect: {e}"),
            Err(_) => panic!("the simulated agent {host} was not connected within {BOUND:?}"),
        }
        SimAgent { host: host.to_string(), outbox, commands, blocks, acked, ended, next_seq: 1, thread: Some(thread) }
    }

    fn send(&self, body: agent_message::Body) {
        if self.outbox.blocking_send(AgentMessage { body: Some(body) }).is_err() {
            panic!("{}: the stream is gone: {}", self.host, self.why_ended());
        }
    }

    fn why_ended(&self) -> String {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| "it is still open".into())
    }

    /// Ships decisions in one batch, numbered after the last; waits until
    /// the gateway acked them (stored them).
    pub fn ship(&mut self, decisions: &[Decision]) {
        let entries: Vec<ShippedEntry> = decisions
            .iter()
            .enumerate()
            .map(|(i, d)| ShippedEntry { seq: self.next_seq + i as u64, entry: Some(shipped_entry::Entry::Decision(d.clone())) })
            .collect();
        self.next_seq += entries.len() as u64;
        let last = self.next_seq - 1;
        self.send(agent_message::Body::Batch(DecisionBatch { entries }));
        let deadline = Instant::now() + BOUND;
        while self.acked.load(Ordering::SeqCst) < last {
            assert!(Instant::now() < deadline, "{}: seq {last} not acked within {BOUND:?} ({})", self.host, self.why_ended());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The next command the gateway sends.
    pub fn next_command(&self) -> Command {
        match self.commands.recv_timeout(BOUND) {
            Ok(c) => c,
            Err(_) => panic!("{}: no command from the gateway within {BOUND:?} ({})", self.host, self.why_ended()),
        }
    }

    /// The next set of security blocks in force the gateway sends.
    pub fn next_blocks(&self) -> Vec<airlock_api::v1::SecurityBlock> {
        match self.blocks.recv_timeout(BOUND) {
            Ok(set) => set,
            Err(_) => panic!("{}: no security_blocks from the gateway within {BOUND:?} ({})", self.host, self.why_ended()),
        }
    }

    pub fn answer(&self, result: CommandResult) {
        self.send(agent_message::Body::CommandResult(result));
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        // Closing the outbox ends the stream, and with it the thread.
        let (closed, _) = mpsc::channel(1);
        self.outbox = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Link {
    url: String,
    ca_pem: Vec<u8>,
    join_token: String,
    host: String,
}

impl Link {
    async fn channel(&self, identity: Option<Identity>) -> Result<Channel, String> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name("127.0.0.1");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| format!("the gateway URL {:?}: {e}", self.url))?
            .tls_config(tls)
            .map_err(|e| format!("TLS: {e}"))?
            .connect_timeout(BOUND)
            .connect()
            .await
            .map_err(|e| format!("connect to {}: {e}", self.url))
    }

    /// Enrolls (a CSR for a key made here), then opens the agent stream with the certificate.
    async fn connect(&self, outbox: mpsc::Receiver<AgentMessage>) -> Result<tonic::Streaming<airlock_api::gateway::v1::GatewayMessage>, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("a key pair: {e}"))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, self.host.clone());
        let csr = params.serialize_request(&key).and_then(|c| c.pem()).map_err(|e| format!("the CSR: {e}"))?;
        let enrolled = EnrollmentClient::new(self.channel(None).await?)
            .enroll(EnrollRequest { join_token: self.join_token.clone(), host_id: self.host.clone(), csr_pem: csr })
            .await
            .map_err(|s| format!("enroll {}: {} ({:?})", self.host, s.message(), s.code()))?
            .into_inner();
        let identity = Identity::from_pem(enrolled.certificate_pem, key.serialize_pem());
        let mut client = AgentLinkClient::new(self.channel(Some(identity)).await?);
        // Hello first, queued before the stream opens, as the agent does.
        let (tx, rx) = mpsc::channel::<AgentMessage>(64);
        let hello = Hello { agent_version: "simulated".into(), backend: "lsm".into(), kernel: "test".into(), enforced_version: 0, enforced_hash: String::new() };
        tx.send(AgentMessage { body: Some(agent_message::Body::Hello(hello)) }).await.map_err(|_| "queue the Hello".to_string())?;
        tokio::spawn(forward(outbox, tx));
        let stream = client.exchange(ReceiverStream::new(rx)).await.map_err(|s| format!("the gateway refused the stream: {} ({:?})", s.message(), s.code()))?;
        Ok(stream.into_inner())
    }
}

/// The test's messages onto the stream, after the Hello; ends with the test's outbox.
async fn forward(mut from: mpsc::Receiver<AgentMessage>, to: mpsc::Sender<AgentMessage>) {
    while let Some(message) = from.recv().await {
        if to.send(message).await.is_err() {
            return;
        }
    }
}
