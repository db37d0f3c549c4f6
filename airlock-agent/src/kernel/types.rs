//! The kernel module's vocabulary: backends, hooks, map sizes, how a daemon
//! came by its enforcement, and the counters it reads.

use std::fmt;
use std::path::PathBuf;

use airlock_common::abi;
use serde::{Deserialize, Serialize};

/// Which enforcement the kernel gives us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// BPF LSM hooks: exec and connect refused with EPERM.
    Lsm,
    /// Tracepoints and cgroup hooks: exec killed before its first instruction, connect refused.
    Compat,
}

impl Backend {
    pub fn abi_value(self) -> u32 {
        match self {
            Backend::Lsm => abi::BACKEND_LSM,
            Backend::Compat => abi::BACKEND_COMPAT,
        }
    }

    pub fn from_abi(value: u32) -> Option<Backend> {
        match value {
            abi::BACKEND_LSM => Some(Backend::Lsm),
            abi::BACKEND_COMPAT => Some(Backend::Compat),
            _ => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Lsm => "lsm",
            Backend::Compat => "compat",
        })
    }
}

/// What the operator asked for; `Auto` probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Lsm,
    Compat,
}

/// One program of the set and where it attaches, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hook {
    pub program: String,
    pub attach_point: String,
    /// Attached only while a governed process lives ([`super::on_demand`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

/// Entries of the unix_rules map (fixed in maps.h).
pub const UNIX_RULES_CAPACITY: u32 = 16_384;
/// Capacities of the protected-file maps (fixed in maps.h).
pub const FILE_RULES_CAPACITY: u32 = 16_384;
pub const FILE_ALLOW_CAPACITY: u32 = 65_536;
/// Entries of the rule_limits map (fixed in maps.h).
pub const RULE_LIMITS_CAPACITY: u32 = 16_384;
pub const PROTECTED_INODES_CAPACITY: usize = 16_384;

/// Sizes of the maps the policy and sessions fill.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    pub programs: u32,
    pub trie: u32,
    pub egress: u32,
    pub ringbuf_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        // 4 MiB of events: the daemon drains every 200 ms and is woken at 512 KiB,
        // and the consumer's mapping of the ring counts twice in its RSS.
        MapSizes { programs: 65_536, trie: 262_144, egress: 131_072, ringbuf_bytes: 4 << 20 }
    }
}

/// How this daemon came by its enforcement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Startup {
    /// Nothing was pinned: programs loaded and attached now.
    Fresh,
    /// A compatible pinned set was running: its programs and maps were kept.
    Adopted { set: String, pinned_by_pid: u32, pinned_by_version: String, pinned_at: String },
    /// Pinned programs of another build (or a damaged set) were running: a new
    /// set was attached beside them with their tags, then they were detached.
    Replaced { old_sets: Vec<String>, reason: String, tags_copied: usize },
}

/// What `Kernel::start` needs.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    pub backend: BackendChoice,
    pub sizes: MapSizes,
    pub pin_dir: PathBuf,
}

/// Kernel-wide totals of the per-CPU counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CounterTotals {
    pub decisions: u64,
    pub denies: u64,
    pub ringbuf_drops: u64,
    pub tag_failures: u64,
    /// Tamper attempts (refused on LSM, offender killed on compat).
    #[serde(default)]
    pub tamper: u64,
}
