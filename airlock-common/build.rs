//! Compiles the gRPC API (proto/airlock/v1/airlock.proto) when the `api`
//! feature is on, with the protoc that the protoc-bin-vendored package ships
//! (pinned in the workspace), so no system protoc is needed.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "api")]
    api::compile();
}

#[cfg(feature = "api")]
mod api {
    pub fn compile() {
        let proto = "proto/airlock/v1/airlock.proto";
        println!("cargo:rerun-if-changed={proto}");
        let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has no protoc for this platform");
        // SAFETY (edition 2021: set_var is safe): build scripts are single-threaded.
        std::env::set_var("PROTOC", protoc);
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            // The CLI prints messages as JSON (`--json`).
            .type_attribute(".airlock.v1", "#[derive(serde::Serialize)]")
            .compile_protos(&[proto], &["proto"])
            .unwrap_or_else(|e| panic!("compile {proto}: {e}"));
    }
}
