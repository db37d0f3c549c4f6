//! The daemon's side of the gateway link: bundles installed through the
//! same gap-free reload as any policy change, and spool losses recorded.

use airlock_api::decision::{ALLOW, SHIPPING_LOST};
use airlock_api::v1::decision::Detail;
use airlock_api::v1::{Decision, EventsLost};

use super::agent::{lock, Agent};
use crate::events::enrich::host_name;
use crate::gateway::{bundle_path, GatewayOps};
use crate::policy::bundle_file::BundleFile;

impl GatewayOps for Agent {
    fn apply_bundle(&self, bundle: &BundleFile) -> Result<String, String> {
        // Checked before anything changes; the reload checks again (compile, kernel).
        let loaded = bundle.load().map_err(|e| format!("bundle version {} is invalid:\n{e}", bundle.version))?;
        if loaded.version() != bundle.content_hash {
            return Err(format!(
                "bundle version {} says its content is {} but it loads as {}: refused",
                bundle.version,
                bundle.content_hash,
                loaded.version()
            ));
        }
        let path = bundle_path(&self.state_dir);
        let previous = std::fs::read(&path).ok();
        bundle.write(&path).map_err(|e| format!("{e:#}"))?;
        match self.reload_now() {
            Ok((version, _)) => Ok(version),
            Err(e) => {
                // The policy in force did not change; neither may the last good bundle.
                let restored = match previous {
                    Some(bytes) => std::fs::write(&path, bytes),
                    None => std::fs::remove_file(&path),
                };
                if let Err(r) = restored {
                    tracing::error!("restore the last good bundle {}: {r}", path.display());
                }
                Err(format!("{e:#}"))
            }
        }
    }

    fn apply_security_blocks(&self, blocks: Vec<airlock_api::v1::SecurityBlock>) -> Result<usize, String> {
        self.security_blocks_from_gateway(blocks).map_err(|e| format!("{e:#}"))
    }

    fn apply_org_masking(&self, strategy: &str) -> Result<(), String> {
        let org = match strategy.trim() {
            "" => None,
            name => Some(name.parse::<airlock_mask::Strategy>().map_err(|e| format!("the org's masking strategy {name:?}: {e}"))?),
        };
        self.masking.set_org_strategy(org).map_err(|e| format!("the org's masking strategy {strategy:?} cannot be used on this host: {e}"))?;
        tracing::info!(org_strategy = %strategy, in_force = ?self.masking.current().map(|m| m.strategy()), "masking");
        Ok(())
    }

    fn record_shipping_loss(&self, count: u64, total: u64) {
        tracing::error!(count, total, "the gateway spool is full: decisions were dropped from shipping (they are enforced and in this audit trail)");
        let now = crate::clock::now_unix_nanos();
        self.record(Decision {
            time: crate::clock::rfc3339_from_unix_nanos(now.into()),
            time_unix_nanos: now,
            host: host_name(),
            kind: SHIPPING_LOST.to_string(),
            decision: ALLOW.to_string(),
            reason: format!("the spool to the gateway was full: {count} decision(s) were not shipped ({total} since the daemon started)"),
            backend: self.kernel.backend().to_string(),
            policy_generation: lock(&self.policy).generation(),
            detail: Some(Detail::EventsLost(EventsLost { count, total, decisions: 0 })),
            ..Default::default()
        });
    }
}
