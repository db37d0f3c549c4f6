//! The daemon's side of systemd's file descriptor store: once the set in
//! force is known, every link and map of it is stored under its name, and
//! every other name the store held (a replaced set's, one that did not pass
//! its checks) is removed, so the store holds one set and PID 1 never keeps
//! a replaced set's programs attached. Only under a service manager.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::sync::Mutex;

use crate::kernel::{fdstore, Kernel};
use crate::protocol::FdStoreStatus;
use crate::systemd;

/// Stores the set in force and withdraws every other name; returns what `status` shows.
pub fn publish(kernel: &Kernel) -> FdStoreStatus {
    let restored = kernel.restored();
    let mut status = FdStoreStatus {
        active: systemd::under_service_manager(),
        received: restored.received.len() as u32,
        taken_back: restored.taken_back.len() as u32,
        ignored: restored.ignored.clone(),
        repinned: restored.repinned.clone(),
        ..Default::default()
    };
    if !status.active {
        return status;
    }
    let entries = match kernel.store_entries() {
        Ok(e) => e,
        Err(e) => {
            // The pins still hold the enforcement; only the extra holder is missing.
            tracing::error!("open the pinned set for systemd's file descriptor store: {e:#}");
            status.error = Some(format!("{e:#}"));
            return status;
        }
    };
    let received: BTreeSet<&str> = restored.received.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    for entry in &entries {
        if restored.taken_back.get(&entry.name) == Some(&entry.id) {
            // systemd still holds this very object: storing it again would add a second entry.
            status.stored += 1;
            continue;
        }
        if received.contains(entry.name.as_str()) {
            if let Err(e) = systemd::fd_store_remove(&entry.name) {
                failures.push(format!("remove {}: {e}", entry.name));
            }
        }
        match systemd::fd_store_add(&entry.name, entry.fd.as_fd()) {
            Ok(()) => status.stored += 1,
            Err(e) => failures.push(format!("store {}: {e}", entry.name)),
        }
    }
    let current: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    for stale in received.difference(&current) {
        match systemd::fd_store_remove(stale) {
            Ok(()) => status.withdrawn += 1,
            Err(e) => failures.push(format!("remove {stale}: {e}")),
        }
    }
    if failures.is_empty() {
        tracing::info!(
            stored = status.stored,
            withdrawn = status.withdrawn,
            "the enforcement's links and maps are in systemd's file descriptor store"
        );
    } else {
        tracing::error!(?failures, "systemd's file descriptor store refused some descriptors; the pins still hold the enforcement");
        status.error = Some(failures.join("; "));
    }
    status
}

/// Stores links attached after start (the on-demand hooks).
pub fn store_links(status: &Mutex<FdStoreStatus>, entries: Vec<fdstore::Entry>) {
    if entries.is_empty() || !systemd::under_service_manager() {
        return;
    }
    let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
    for entry in entries {
        match systemd::fd_store_add(&entry.name, entry.fd.as_fd()) {
            Ok(()) => status.stored += 1,
            // The pin still holds the link; only the extra holder is missing.
            Err(e) => tracing::error!(descriptor = %entry.name, "store in systemd's file descriptor store: {e}"),
        }
    }
}

/// Withdraws links the daemon detached: the store would keep them attached.
pub fn withdraw_links(status: &Mutex<FdStoreStatus>, names: &[String]) {
    if names.is_empty() || !systemd::under_service_manager() {
        return;
    }
    let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
    for name in names {
        match systemd::fd_store_remove(name) {
            Ok(()) => status.stored = status.stored.saturating_sub(1),
            Err(e) => tracing::error!(descriptor = %name, "remove from systemd's file descriptor store: {e}"),
        }
    }
}

/// Removes the set in force from the store (before `--release-on-exit`
/// detaches it: PID 1 would otherwise keep the programs attached).
pub fn withdraw(kernel: &Kernel) {
    if !systemd::under_service_manager() {
        return;
    }
    match kernel.store_entries() {
        Ok(entries) => {
            for entry in entries {
                if let Err(e) = systemd::fd_store_remove(&entry.name) {
                    tracing::error!(descriptor = %entry.name, "remove from systemd's file descriptor store: {e}");
                }
            }
        }
        Err(e) => tracing::error!(
            "list the pinned set to withdraw it from systemd's file descriptor store: {e:#}"
        ),
    }
}
