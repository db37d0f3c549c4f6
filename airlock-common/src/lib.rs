//! What the Airlock kernel programs and the daemon share: the kernel ABI
//! (mirrored from `airlock-ebpf/src/bpf/airlock_abi.h`) and the policy model.

pub mod abi;
pub mod identity;
pub mod policy;
