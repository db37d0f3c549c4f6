//! Security monitoring at the gateway: the detector settings as an org
//! keeps them, findings as the API shows them, and the org's blocks in force
//! pushed whole to every connected agent of the org (`Command.security_blocks`)
//! on every change and when an agent connects.
//!
//! The store is the truth: every replica polls the blocks in force each
//! second (and at once when it changed one itself), so a lift through
//! another replica, or an expiry, reaches this replica's agents too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use airlock_api::gateway::v1::command::Body as CommandBody;
use airlock_api::gateway::v1::{gateway_message, Command, GatewayMessage, SecurityBlocks, SecuritySettingsVersion};
use airlock_api::v1::{SecurityBlock, SecurityFinding};
use airlock_detect::{Finding, Settings, SettingsError};
use airlock_gateway_store::SecuritySettingsVersion as StoredSettings;
use airlock_mask::Strategy;
use tonic::Status;

use crate::hub::{Hub, POLL_INTERVAL};

/// The id a `security_blocks` command carries: it is not a queued command
/// and expects no answer (an answer to it is logged, not stored).
pub const UNQUEUED_COMMAND_ID: i64 = 0;
/// A settings document larger than this is refused.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// An org's security settings: the detectors', and the masking strategy
/// its agents apply to every record (`None`: each host's own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgSecurity {
    pub detect: Settings,
    pub masking: Option<Strategy>,
}

impl OrgSecurity {
    /// One document: the detectors' settings and, beside them, `masking`.
    pub fn document(&self) -> Result<String, serde_json::Error> {
        let mut value = serde_json::to_value(&self.detect)?;
        if let (Some(strategy), Some(map)) = (self.masking, value.as_object_mut()) {
            map.insert("masking".into(), serde_json::Value::String(strategy.to_string()));
        }
        serde_json::to_string_pretty(&value)
    }

    /// From a document's value: `masking` taken out, the rest the detectors'.
    fn from_value(mut value: serde_json::Value) -> Result<OrgSecurity, SettingsError> {
        let masking = match value.as_object_mut().and_then(|m| m.remove("masking")) {
            None => None,
            Some(serde_json::Value::String(name)) => Some(name.parse::<Strategy>().map_err(|e| SettingsError { field: "masking".into(), problem: e.to_string() })?),
            Some(other) => return Err(SettingsError { field: "masking".into(), problem: format!("{other} is not a strategy name (full, partial, type_only or hash)") }),
        };
        let detect: Settings = serde_json::from_value(value).map_err(|e| SettingsError { field: "document".into(), problem: e.to_string() })?;
        detect.validate()?;
        Ok(OrgSecurity { detect, masking })
    }
}

/// A settings document (TOML, or JSON when it starts with `{`), parsed and
/// validated; the error names the field at fault.
pub fn parse_settings(document: &str) -> Result<OrgSecurity, SettingsError> {
    let text = document.trim();
    let parsed: Result<serde_json::Value, String> = if text.starts_with('{') {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        toml::from_str(text).map_err(|e| e.message().to_string())
    };
    OrgSecurity::from_value(parsed.map_err(|problem| SettingsError { field: "document".into(), problem })?)
}

/// The settings a stored version holds. A version that no longer reads
/// (written by another build) is an error, never silently the defaults.
pub fn stored_settings(stored: &StoredSettings) -> Result<OrgSecurity, String> {
    let value: serde_json::Value = serde_json::from_str(&stored.document)
        .map_err(|e| format!("security settings version {} of org {}: the stored document does not read: {e}", stored.version, stored.org_id))?;
    OrgSecurity::from_value(value).map_err(|e| format!("security settings version {} of org {}: {e}", stored.version, stored.org_id))
}

/// The org's settings in force: its latest version, or the defaults.
pub async fn settings_in_force(hub: &Hub, org_id: i64) -> Result<(OrgSecurity, Option<StoredSettings>), Status> {
    match hub.store.security_settings(org_id, None).await.map_err(crate::auth::store_status)? {
        None => Ok((OrgSecurity::default(), None)),
        Some(stored) => Ok((stored_settings(&stored).map_err(Status::internal)?, Some(stored))),
    }
}

pub fn settings_message(org: &str, settings: &OrgSecurity, stored: Option<StoredSettings>) -> Result<SecuritySettingsVersion, Status> {
    let document = settings.document().map_err(|e| Status::internal(format!("encode the settings: {e}")))?;
    let stored = stored.unwrap_or_default();
    Ok(SecuritySettingsVersion {
        org: org.to_string(),
        version: stored.version.max(0) as u64,
        document,
        author: stored.author,
        comment: stored.comment,
        created_unix_nanos: stored.created_ns,
    })
}

/// A detector's finding as the API's message. `evidence` maps the ids the
/// detector saw (the store's cursors, unique over the fleet) back to each
/// decision's own id and its host.
pub fn finding_message(f: &Finding, evidence: &HashMap<u64, (u64, String)>) -> SecurityFinding {
    let (ids, hosts) = f.evidence.iter().filter_map(|cursor| evidence.get(cursor).cloned()).unzip();
    SecurityFinding { evidence: ids, evidence_hosts: hosts, ..f.to_message() }
}

pub use airlock_api::security::values_text;

/// The `security_blocks` command carrying `blocks` and the org's masking strategy.
pub fn blocks_command(blocks: Vec<SecurityBlock>, masking: Option<Strategy>) -> GatewayMessage {
    let masking_strategy = masking.map(|s| s.to_string()).unwrap_or_default();
    GatewayMessage {
        body: Some(gateway_message::Body::Command(Command {
            id: UNQUEUED_COMMAND_ID,
            body: Some(CommandBody::SecurityBlocks(SecurityBlocks { blocks, masking_strategy })),
        })),
    }
}

/// The org's masking strategy in force; a settings version that does not
/// read is logged and sends none (each host keeps its own).
async fn org_masking(hub: &Hub, org_id: i64) -> Option<Strategy> {
    match settings_in_force(hub, org_id).await {
        Ok((settings, _)) => settings.masking,
        Err(e) => {
            tracing::error!(org_id, "the org's security settings: {}", e.message());
            None
        }
    }
}

/// Sends `blocks` (and the org's masking strategy) to every agent of the org connected here.
pub async fn push_to_org(hub: &Hub, org_id: i64, blocks: &[SecurityBlock]) {
    let senders = hub.senders_of_org(org_id);
    let masking = org_masking(hub, org_id).await;
    for (host, sender) in senders {
        if sender.send(Ok(blocks_command(blocks.to_vec(), masking))).await.is_err() {
            tracing::debug!(org_id, host = %host, "the agent went away before its security blocks were sent");
        }
    }
    tracing::info!(org_id, blocks = blocks.len(), "security blocks in force pushed to the org's agents connected here");
}

/// Watches the blocks in force of every org, forever, and pushes an org's
/// set to its agents whenever it changed (a new block, an ack, a lift, an
/// expiry), whichever replica changed it.
pub async fn watch_blocks(hub: Arc<Hub>) {
    let mut pushed: HashMap<i64, Vec<SecurityBlock>> = HashMap::new();
    loop {
        match hub.store.all_blocks_in_force(crate::now_ns()).await {
            Ok(rows) => {
                let mut fresh: BTreeMap<i64, Vec<SecurityBlock>> = BTreeMap::new();
                for (org_id, block) in rows {
                    fresh.entry(org_id).or_default().push(block);
                }
                let orgs: BTreeSet<i64> = fresh.keys().chain(pushed.keys()).copied().collect();
                for org_id in orgs {
                    let now_set = fresh.remove(&org_id).unwrap_or_default();
                    if pushed.get(&org_id).map(Vec::as_slice).unwrap_or_default() == now_set.as_slice() {
                        continue;
                    }
                    push_to_org(&hub, org_id, &now_set).await;
                    if now_set.is_empty() {
                        pushed.remove(&org_id);
                    } else {
                        pushed.insert(org_id, now_set);
                    }
                }
            }
            Err(e) => tracing::warn!("poll the security blocks in force: {e}"),
        }
        let _ = tokio::time::timeout(POLL_INTERVAL, hub.blocks_changed.notified()).await;
    }
}

/// The org's blocks in force now, for an agent that just connected.
pub async fn blocks_for_new_connection(hub: &Hub, org_id: i64) -> Result<GatewayMessage, Status> {
    let blocks = hub.store.blocks_in_force(org_id, crate::now_ns()).await.map_err(crate::auth::store_status)?;
    Ok(blocks_command(blocks, org_masking(hub, org_id).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masking_strategy_rides_beside_the_detectors_settings() {
        let org = parse_settings("masking = \"type_only\"\n[rules.repeated_denials]\nthreshold = 7\n").expect("parses");
        assert_eq!(org.masking, Some(Strategy::TypeOnly));
        assert_eq!(org.detect.rule(airlock_detect::RuleName::RepeatedDenials).threshold, 7);
        // What is stored reads back the same, masking included.
        let stored = StoredSettings { document: org.document().expect("encodes"), ..Default::default() };
        assert_eq!(stored_settings(&stored).expect("reads"), org);
        let none = parse_settings("{\"enabled\": false}").expect("parses");
        assert_eq!((none.masking, none.detect.enabled), (None, false));
        assert!(!none.document().expect("encodes").contains("masking"));

        let bad = parse_settings("masking = \"sha256\"\n").expect_err("refused");
        assert_eq!(bad.field, "masking");
        assert!(bad.problem.contains("sha256"), "{bad}");
        let bad = parse_settings("masking = 3\n").expect_err("refused");
        assert_eq!(bad.field, "masking");
        let bad = parse_settings("masking = \"full\"\nmaskng = 1\n").expect_err("a misspelled field is refused");
        assert!(bad.problem.contains("maskng"), "{bad}");
    }
}
