//! The fleet's figures from the store, refreshed at each scrape: hosts by
//! the policy version they enforce, approval requests pending. Two grouped
//! counts over small tables; a scrape every few seconds costs little.

use crate::hub::Hub;

/// Replaces the store-backed gauges with the store's figures now (label
/// sets that no longer occur go, so an old version does not linger).
pub async fn refresh(hub: &Hub) -> Result<(), airlock_gateway_store::StoreError> {
    let hosts = hub.store.hosts_by_policy_version().await?;
    let pending = hub.store.pending_approvals_by_org().await?;
    let m = &hub.metrics;
    m.hosts_by_policy_version.clear();
    for (org, version, count) in hosts {
        m.hosts_by_policy_version
            .get_or_create(&[("org", org), ("policy_version", version.to_string())])
            .set(count);
    }
    m.pending_approvals.clear();
    for (org, count) in pending {
        m.pending_approvals
            .get_or_create(&[("org", org)])
            .set(count);
    }
    Ok(())
}
