//! What the Airlock kernel programs and the daemon share: the kernel ABI
//! (mirrored from `airlock-ebpf/src/bpf/airlock_abi.h`) and the policy model.

pub mod abi;
pub mod identity;
pub mod policy;

/// The gRPC API, `airlock.v1` (generated from `proto/airlock/v1/airlock.proto`).
#[cfg(feature = "api")]
pub mod api {
    pub mod v1 {
        tonic::include_proto!("airlock.v1");
    }
}
