//! What each package holds: its binary, unit, configuration files (every file
//! under /etc is a conffile), maintainer scripts (`packaging/deb/<name>/`)
//! and control fields.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The two binaries a build produced.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub gateway: PathBuf,
}

impl Binaries {
    /// `dir/airlock-agent` and `dir/airlock-gateway`, which must exist.
    pub fn in_dir(dir: &Path) -> Result<Binaries> {
        let binaries = Binaries { agent: dir.join("airlock-agent"), gateway: dir.join("airlock-gateway") };
        for path in [&binaries.agent, &binaries.gateway] {
            if !path.is_file() {
                bail!("{} is missing: the build did not produce it", path.display());
            }
        }
        Ok(binaries)
    }

    pub fn get(&self, which: Binary) -> &Path {
        match which {
            Binary::Agent => &self.agent,
            Binary::Gateway => &self.gateway,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Binary {
    Agent,
    Gateway,
}

/// Where a file in the package comes from.
#[derive(Debug)]
pub enum Source {
    /// A built binary, stripped (mode 0755).
    Binary(Binary),
    /// A systemd unit from the repository, `@BINARY@` replaced by the
    /// installed binary's path (as `airlock-agent install` does).
    Unit(&'static str, &'static str),
    /// A file of the repository as it is.
    File(&'static str),
    /// Every file under a directory of the repository, kept in its layout.
    Tree(&'static str),
}

#[derive(Debug)]
pub struct Entry {
    /// The path on the installed system (a directory for `Source::Tree`).
    pub dest: &'static str,
    pub source: Source,
}

#[derive(Debug)]
pub struct PackageSpec {
    pub name: &'static str,
    /// Control fields other than Package, Version, Architecture,
    /// Installed-Size and the libraries' Depends, which are computed.
    pub depends: &'static [&'static str],
    pub section: &'static str,
    pub description: &'static str,
    pub entries: &'static [Entry],
    /// `packaging/deb/<name>`: postinst, prerm, postrm.
    pub scripts: &'static str,
}

pub const MAINTAINER: &str = "Airlock maintainers <maintainers@airlock.invalid>";
pub const HOMEPAGE: &str = "https://github.com/airlock/airlock";
/// The scripts every package has, in `PackageSpec::scripts`.
pub const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// adduser: the system group and user; init-system-helpers:
/// deb-systemd-helper/-invoke as the scripts call them (mask/unmask since
/// 1.54, DPKG_ROOT-aware).
const COMMON_DEPENDS: &[&str] = &["adduser", "init-system-helpers (>= 1.54~)"];

pub const PACKAGES: &[PackageSpec] = &[
    PackageSpec {
        name: "airlock-agent",
        depends: COMMON_DEPENDS,
        section: "admin",
        description: "kernel enforcement for AI coding agent sessions
 Airlock governs the sessions of AI coding agents, and everything they
 start, with eBPF programs in the kernel: which programs may run, which
 hosts may be reached, which files are protected, which commands wait for
 a person's approval. Every decision goes to an audit trail.
 .
 This package holds the daemon and its CLI (airlock-agent), the systemd
 unit, and the default policies in /etc/airlock/policies. Options such as
 a fleet gateway and its join token go in /etc/default/airlock-agent.",
        entries: &[
            Entry { dest: "/usr/bin/airlock-agent", source: Source::Binary(Binary::Agent) },
            Entry {
                dest: "/lib/systemd/system/airlock-agent.service",
                source: Source::Unit("packaging/airlock-agent.service", "/usr/bin/airlock-agent"),
            },
            Entry { dest: "/etc/default/airlock-agent", source: Source::File("packaging/airlock-agent.default") },
            Entry { dest: "/etc/airlock/policies", source: Source::Tree("policies") },
        ],
        scripts: "packaging/deb/airlock-agent",
    },
    PackageSpec {
        name: "airlock-gateway",
        depends: COMMON_DEPENDS,
        section: "admin",
        description: "fleet control plane for Airlock agents
 The Airlock gateway is where a fleet of Airlock agents enrolls, takes its
 policy from in versions, and ships every decision to. Platform teams roll
 out policy, query decisions across hosts, revoke sessions and decide
 approval requests through its gRPC API, its CLI and its web Control Room.
 .
 This package holds the gateway and its CLI (airlock-gateway), the systemd
 unit, which runs it as the airlock-gateway user with its data in
 /var/lib/airlock-gateway, and its settings in /etc/airlock/gateway.toml.",
        entries: &[
            Entry { dest: "/usr/bin/airlock-gateway", source: Source::Binary(Binary::Gateway) },
            Entry {
                dest: "/lib/systemd/system/airlock-gateway.service",
                source: Source::Unit("packaging/airlock-gateway.service", "/usr/bin/airlock-gateway"),
            },
            Entry { dest: "/etc/airlock/gateway.toml", source: Source::File("packaging/gateway.toml") },
        ],
        scripts: "packaging/deb/airlock-gateway",
    },
];

/// The file name dpkg-deb writes for a package.
pub fn deb_file_name(name: &str, version: &str) -> String {
    format!("{name}_{version}_amd64.deb")
}
