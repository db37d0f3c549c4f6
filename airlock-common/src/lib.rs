//! What both sides of the kernel boundary share: the kernel ABI (mirrored
//! field for field from `airlock-ebpf/src/bpf/airlock_abi.h`) and the content
//! fingerprint the kernel computes for exec identity, byte for byte.

pub mod abi;
pub mod identity;
