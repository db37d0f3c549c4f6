//! The shipped default policy set, compiled into the binary so the agent
//! enforces something safe even when no policy directory is installed.

use crate::load::PolicySource;

macro_rules! shipped {
    ($ctor:ident, $dir:literal, $file:literal) => {
        PolicySource::$ctor(
            concat!("<embedded>/", $dir, "/", $file),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../policies/",
                $dir,
                "/",
                $file
            )),
        )
    };
}

/// The files of the repository's `policies/` directory, named
/// `<embedded>/policies/...` and `<embedded>/roles/...` in diagnostics.
pub fn default_sources() -> Vec<PolicySource> {
    vec![
        shipped!(policy, "policies", "cloud-metadata-block.json"),
        shipped!(policy, "policies", "infra-mutation-block.json"),
        shipped!(policy, "policies", "broker-escape-block.json"),
        shipped!(role, "roles", "default.json"),
        shipped!(role, "roles", "terraform-restricted-agent.json"),
    ]
}
