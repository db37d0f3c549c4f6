//! Airlock's gRPC API: the protobufs, generated into [`v1`], and clients.
//!
//! `airlock.v1` is the agent's API (served by `airlock-agent run` on its API
//! socket and, with mutual TLS, on TCP). Its [`v1::Decision`] is the one
//! decision record of the product: the audit trail writes its JSON form, the
//! decision store keeps its protobuf encoding, the API streams it. The
//! gateway's API and the agent-to-gateway stream are added here as their own
//! packages, beside `v1`.

pub mod client;
pub mod decision;

/// The agent API, `airlock.v1` (generated from `proto/airlock/v1/airlock.proto`).
pub mod v1 {
    tonic::include_proto!("airlock.v1");
}
