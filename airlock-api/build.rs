//! Compiles the protobufs with the protoc that the protoc-bin-vendored package
//! ships (pinned in the workspace), so no system protoc is needed.
//!
//! Every message also derives serde: its JSON form is the audit trail's line
//! and the CLI's `--json`, so a decision has one shape in every output.

const PROTOS: &[&str] = &["proto/airlock/v1/airlock.proto", "proto/airlock/gateway/v1/gateway.proto"];

/// Optional fields that the JSON form leaves out when they are unset.
const OMIT_WHEN_UNSET: &[&str] = &[
    ".airlock.v1.Decision.policy",
    ".airlock.v1.Decision.rule",
    ".airlock.v1.ExecDetail.matched_by",
    ".airlock.v1.ExecDetail.detected_program",
    ".airlock.v1.ExecDetail.approval_request",
    ".airlock.v1.GuardDetail.target_pid",
    ".airlock.v1.GuardDetail.file",
    ".airlock.v1.GuardDetail.enforcement",
    ".airlock.v1.RawSocket.enforcement",
    ".airlock.v1.StatusResponse.gateway",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has no protoc for this platform");
    // SAFETY (edition 2021: set_var is safe): build scripts are single-threaded.
    std::env::set_var("PROTOC", protoc);
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .type_attribute(".airlock.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".airlock.v1", "#[serde(default)]")
        .type_attribute(".airlock.gateway.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".airlock.gateway.v1", "#[serde(default)]")
        // A decision's detail appears under its kind's own key ("exec", "destination", ...).
        .enum_attribute(".airlock.v1.Decision.detail", "#[serde(rename_all = \"snake_case\")]")
        // Written without the leading dot, the path matches the oneof field only, not its variants.
        .field_attribute("airlock.v1.Decision.detail", "#[serde(flatten)]");
    for field in OMIT_WHEN_UNSET {
        builder = builder.field_attribute(field, "#[serde(skip_serializing_if = \"Option::is_none\")]");
    }
    builder.compile_protos(PROTOS, &["proto"]).unwrap_or_else(|e| panic!("compile {PROTOS:?}: {e}"));
}
