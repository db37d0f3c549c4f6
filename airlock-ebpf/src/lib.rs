//! Airlock's eBPF programs: C with CO-RE in `src/bpf/`, compiled by `build.rs`,
//! exposed here as libbpf-rs skeletons. The kernel ABI they share with the
//! daemon is `src/bpf/airlock_abi.h`, mirrored in `airlock_common::abi`.

/// The enforcement programs of both backends and the maps they share.
#[allow(clippy::all, missing_docs, non_camel_case_types, non_snake_case, dead_code)]
pub mod airlock {
    include!(concat!(env!("OUT_DIR"), "/airlock.skel.rs"));
}

/// A one-line LSM program: loading and attaching it proves the BPF LSM works here.
#[allow(clippy::all, missing_docs, non_camel_case_types, non_snake_case, dead_code)]
pub mod probe_lsm {
    include!(concat!(env!("OUT_DIR"), "/probe_lsm.skel.rs"));
}

/// The compiled enforcement object, for checks of its BTF (the ABI test).
pub const AIRLOCK_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/airlock.bpf.o"));

/// The kernel ABI header the object was built from: a pinned set whose header
/// hash matches speaks the same event format (restart: draining its ring buffer).
pub const ABI_HEADER: &str = include_str!("bpf/airlock_abi.h");
