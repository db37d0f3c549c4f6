//! The gateway's web UI: sign-in by OpenID Connect ([`oidc`]).
pub mod oidc;
