//! Airlock's gRPC API: the protobufs, generated into [`v1`], and clients.
//!
//! `airlock.v1` is the agent's API (served by `airlock-agent run` on its API
//! socket and, with mutual TLS, on TCP). Its [`v1::Decision`] is the one
//! decision record of the product: the audit trail writes its JSON form, the
//! decision store keeps its protobuf encoding, the API streams it.
//!
//! `airlock.gateway.v1` ([`gateway::v1`]) is the gateway's: enrollment, the
//! agent's link (decisions up, policy bundles and commands down), and the
//! fleet API platform teams use.

pub mod client;
pub mod decision;
pub mod duration;
pub mod security;

/// The agent API, `airlock.v1` (generated from `proto/airlock/v1/airlock.proto`).
pub mod v1 {
    tonic::include_proto!("airlock.v1");
}

/// The gateway API, `airlock.gateway.v1` (generated from `proto/airlock/gateway/v1/gateway.proto`).
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("airlock.gateway.v1");
    }
}
