//! The agent's side of the gateway: enrollment ([`enrollment`]), the spool
//! every decision is written to ([`spool_sink`], a pipeline sink), and the
//! link thread ([`link`]) that ships the spool in acked batches, takes
//! policy bundles and answers commands over one stream.
//!
//! Enforcement never waits for any of it: the sink is a buffered local file
//! write; everything that touches the network runs on the link's own thread.

pub mod enrollment;
pub mod link;
pub mod spool_sink;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use airlock_api::v1 as pb;

use crate::api::ops::AgentOps;
use crate::policy::bundle_file::BundleFile;

/// The gateway's files in the state directory.
pub const GATEWAY_DIR: &str = "gateway";
pub const BUNDLE_FILE: &str = "gateway/bundle.json";
pub const SPOOL_DIR: &str = "gateway/spool";

/// `run --gateway URL [--join-token T] [--gateway-ca PEM] [--host-id NAME]`.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub url: String,
    pub join_token: Option<String>,
    pub ca: Option<PathBuf>,
    pub host_id: Option<String>,
    /// The spool's size limit; past it decisions are counted as lost, never silently dropped.
    pub spool_max_bytes: u64,
}

pub fn bundle_path(state_dir: &Path) -> PathBuf {
    state_dir.join(BUNDLE_FILE)
}

/// What the link asks of the daemon beyond the API's operations.
pub trait GatewayOps: AgentOps {
    /// Validates and installs a bundle (gap-free, like any reload) and keeps
    /// it as the last good one; on failure the policy in force stays. Returns
    /// the policy content hash in force.
    fn apply_bundle(&self, bundle: &BundleFile) -> Result<String, String>;
    /// Records in the audit trail (and the store) that the spool dropped
    /// decisions: `count` since the last report, `total` since start.
    fn record_shipping_loss(&self, count: u64, total: u64);
    /// The org's security blocks in force, whole (they replace the gateway's
    /// blocks held before), applied in the kernel; returns how many.
    fn apply_security_blocks(&self, blocks: Vec<airlock_api::v1::SecurityBlock>) -> Result<usize, String>;
    /// The org's masking strategy (`""`: none set; this host's own applies).
    fn apply_org_masking(&self, strategy: &str) -> Result<(), String>;
}

/// The link's state, as `status` shows it.
#[derive(Debug, Default)]
pub struct LinkState {
    inner: Mutex<LinkFields>,
}

#[derive(Debug, Default, Clone)]
struct LinkFields {
    url: String,
    host_id: String,
    org: String,
    connected: bool,
    last_error: Option<String>,
    last_bundle_error: Option<String>,
}

impl LinkState {
    pub fn new(url: &str, host_id: &str, org: &str) -> Arc<LinkState> {
        let fields = LinkFields { url: url.into(), host_id: host_id.into(), org: org.into(), ..Default::default() };
        Arc::new(LinkState { inner: Mutex::new(fields) })
    }

    fn update(&self, f: impl FnOnce(&mut LinkFields)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn set_connected(&self, connected: bool, error: Option<String>) {
        self.update(|s| {
            s.connected = connected;
            s.last_error = error;
        });
    }

    /// Whether the stream to the gateway is up.
    pub fn connected(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).connected
    }

    pub fn set_bundle_error(&self, error: Option<String>) {
        self.update(|s| s.last_bundle_error = error);
    }

    /// The status message, with the spool's figures and the bundle in force.
    pub fn status(&self, spool: &airlock_spool::SpoolStats, bundle_version: u64) -> pb::GatewayStatus {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        pb::GatewayStatus {
            url: s.url,
            host_id: s.host_id,
            org: s.org,
            connected: s.connected,
            policy_version: bundle_version,
            last_bundle_error: s.last_bundle_error,
            spooled: spool.next_seq.saturating_sub(1),
            acked: spool.acked,
            pending: spool.pending_entries,
            spool_bytes: spool.bytes_on_disk,
            lost: spool.lost_total,
            last_error: s.last_error,
        }
    }
}
