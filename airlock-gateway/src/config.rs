//! `airlock-gateway run`'s settings: flags, or the same keys in
//! `/etc/airlock/gateway.toml` (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use airlock_notify::NotifyConfig;
use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/airlock/gateway.toml";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/airlock-gateway";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";

/// The file's keys; every one is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The CA certificate and key to sign with, instead of DATA_DIR's own
    /// (replicas share one; Kubernetes mounts it from a Secret).
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    /// Serve grpc.health.v1 in plain text here (Kubernetes' grpc probes).
    pub health_listen: Option<String>,
    /// Extra names (and addresses) for the server certificate the gateway makes.
    pub server_names: Option<Vec<String>>,
    /// This replica's name in host records (default: the machine's name and pid).
    pub replica: Option<String>,
    /// Who is told of approval requests and decisions, per org: `[notify.ORG]`
    /// with `[[notify.ORG.webhooks]]` and `[notify.ORG.email]`.
    pub notify: Option<BTreeMap<String, NotifyConfig>>,
    /// Seconds between security detection passes (default 60).
    pub detect_interval: Option<u64>,
    /// The web Control Room: `[ui]` with `listen`, `session_hours` and `[ui.oidc]`.
    pub ui: Option<crate::ui::UiFileConfig>,
    /// SIEM export targets, `["ocsf:FILE", "otlp:URL"]` (docs/export.md).
    pub export: Option<Vec<String>>,
    /// Prometheus metrics: `[metrics]` with `listen`.
    pub metrics: Option<MetricsFileConfig>,
}

/// `[metrics]` in gateway.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFileConfig {
    /// Plain HTTP, GET /metrics, e.g. "127.0.0.1:9465".
    pub listen: Option<String>,
}

/// What `run` was given on its command line.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub health_listen: Option<String>,
    pub server_names: Vec<String>,
    pub replica: Option<String>,
    pub detect_interval: Option<u64>,
    pub ui_listen: Option<String>,
    pub export: Vec<airlock_export::Target>,
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: Option<String>,
    /// Both or neither: the gateway makes its own certificate when neither is given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The CA's certificate and key, when not DATA_DIR's own (both or neither).
    pub ca: Option<(PathBuf, PathBuf)>,
    /// The plain-text health service's address, if any.
    pub health_listen: Option<SocketAddr>,
    pub server_names: Vec<String>,
    pub replica: String,
    /// Approval notifications, by org name (checked).
    pub notify: BTreeMap<String, NotifyConfig>,
    /// Between two security detection passes.
    pub detect_interval: Duration,
    /// The Control Room, when it has a listen address.
    pub ui: Option<crate::ui::UiConfig>,
    /// Where every host's decisions are exported (the flags', else the file's).
    pub export: Vec<airlock_export::Target>,
    /// Where Prometheus metrics are served (None: not served).
    pub metrics_listen: Option<SocketAddr>,
}

impl RunConfig {
    pub fn resolve(flags: Flags) -> Result<RunConfig> {
        let (file, path) = read_file(flags.config.as_deref())?;
        let from = |what: &str| match &path {
            Some(p) => format!("{what} (from {})", p.display()),
            None => what.to_string(),
        };
        let listen_text = flags.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text.parse().with_context(|| format!("{}: {listen_text:?} is not an address like 127.0.0.1:7443", from("listen")))?;
        let tls = match (flags.tls_cert.or(file.tls_cert), flags.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("{}: give both --tls-cert and --tls-key, or neither (the gateway then makes its own)", from("tls")),
        };
        let ca = match (flags.ca_cert.or(file.ca_cert), flags.ca_key.or(file.ca_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("{}: give both --ca-cert and --ca-key, or neither (the gateway then keeps its own CA in the data directory)", from("ca")),
        };
        let health_listen = match flags.health_listen.or(file.health_listen) {
            Some(text) => Some(text.parse().with_context(|| format!("{}: {text:?} is not an address like 0.0.0.0:7444", from("health_listen")))?),
            None => None,
        };
        let database_url = flags.database_url.or(file.database_url).filter(|u| !u.trim().is_empty());
        let mut server_names = flags.server_names;
        server_names.extend(file.server_names.unwrap_or_default());
        let replica = flags.replica.or(file.replica).unwrap_or_else(|| {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "gateway".into());
            format!("{host}:{}", std::process::id())
        });
        let detect_secs = flags.detect_interval.or(file.detect_interval).unwrap_or(crate::detection::DEFAULT_DETECT_INTERVAL_SECS);
        if detect_secs == 0 {
            bail!("{}: must be at least 1 second (got 0)", from("--detect-interval"));
        }
        let ui = crate::ui::UiConfig::resolve(flags.ui_listen, file.ui, &from)?;
        let export = if flags.export.is_empty() {
            let mut targets = Vec::new();
            for (n, text) in file.export.unwrap_or_default().iter().enumerate() {
                targets.push(airlock_export::Target::parse(text).map_err(|e| anyhow::anyhow!("{}: {e}", from(&format!("export[{n}]"))))?);
            }
            targets
        } else {
            flags.export
        };
        let metrics_listen = match flags.metrics_listen.or(file.metrics.and_then(|m| m.listen)) {
            Some(text) => Some(text.parse().with_context(|| format!("{}: {text:?} is not an address like 127.0.0.1:9465", from("metrics.listen")))?),
            None => None,
        };
        let notify = file.notify.unwrap_or_default();
        for (org, config) in &notify {
            config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", from(&format!("notify.{org}"))))?;
        }
        Ok(RunConfig {
            export,
            ui,
            metrics_listen,
            notify,
            detect_interval: Duration::from_secs(detect_secs),
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            database_url,
            tls,
            ca,
            health_listen,
            server_names,
            replica,
        })
    }
}

/// The config file: the one named (which must exist), else the default path if present.
fn read_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok((FileConfig::default(), None)),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read the gateway config {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((file, Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_a_bad_key_is_named() {
        let dir = std::env::temp_dir().join(format!("airlock-gwcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(&file, "data_dir = \"/srv/gw\"\nlisten = \"127.0.0.1:9000\"\ndatabase_url = \"postgresql://x@127.0.0.1/airlock\"\n").unwrap();
        let flags = Flags { config: Some(file.clone()), listen: Some("127.0.0.1:9100".into()), ..Default::default() };
        let config = RunConfig::resolve(flags).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/gw"));
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.database_url.as_deref(), Some("postgresql://x@127.0.0.1/airlock"));
        std::fs::write(&file, "data_dir = \"/srv/gw\"\nlisten_on = \"x\"\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("gateway.toml") && err.contains("listen_on"), "{err}");
        std::fs::write(&file, "listen = \"nowhere\"\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("listen (from") && err.contains("nowhere"), "{err}");
        std::fs::write(&file, "detect_interval = 0\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("--detect-interval") && err.contains("at least 1 second"), "{err}");
        let config = RunConfig::resolve(Flags { config: Some(file.clone()), detect_interval: Some(5), ..Default::default() }).unwrap();
        assert_eq!(config.detect_interval, Duration::from_secs(5), "the flag wins");
        std::fs::write(&file, "export = [\"ocsf:/var/log/airlock/fleet.jsonl\", \"otlp:http://127.0.0.1:4317\"]\n").unwrap();
        let config = RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(config.export.iter().map(|t| t.to_string()).collect::<Vec<_>>(), ["ocsf:/var/log/airlock/fleet.jsonl", "otlp:http://127.0.0.1:4317"]);
        let flag = airlock_export::Target::parse("ocsf:/tmp/flag.jsonl").unwrap();
        let config = RunConfig::resolve(Flags { config: Some(file.clone()), export: vec![flag.clone()], ..Default::default() }).unwrap();
        assert_eq!(config.export, [flag], "the flags win over the file's list");
        std::fs::write(&file, "export = [\"ocsf:/tmp/a.jsonl\", \"otlp:127.0.0.1:4317\"]\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("export[1] (from") && err.contains("gateway.toml") && err.contains("http:// or https://"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ca_comes_in_pairs_and_the_health_address_must_parse() {
        let dir = std::env::temp_dir().join(format!("airlock-gwcfg-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(&file, "ca_cert = \"/etc/airlock/gateway-ca/ca.pem\"\nca_key = \"/etc/airlock/gateway-ca/ca.key\"\nhealth_listen = \"0.0.0.0:7444\"\n").unwrap();
        let config = RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(config.ca, Some((PathBuf::from("/etc/airlock/gateway-ca/ca.pem"), PathBuf::from("/etc/airlock/gateway-ca/ca.key"))));
        assert_eq!(config.health_listen, Some("0.0.0.0:7444".parse().unwrap()));
        let defaults = RunConfig::resolve(Flags { config: Some(dir.join("gateway.toml")), ca_cert: Some("/x/ca.pem".into()), ca_key: Some("/x/ca.key".into()), ..Default::default() }).unwrap();
        assert_eq!(defaults.ca, Some((PathBuf::from("/x/ca.pem"), PathBuf::from("/x/ca.key"))), "the flags win");
        std::fs::write(&file, "ca_cert = \"/etc/airlock/gateway-ca/ca.pem\"\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("--ca-cert and --ca-key") && err.contains("gateway.toml"), "{err}");
        std::fs::write(&file, "health_listen = \"7444\"\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("health_listen (from") && err.contains("\"7444\""), "{err}");
        std::fs::write(&file, "").unwrap();
        let config = RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!((config.ca, config.health_listen), (None, None), "off unless asked for");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_metrics_address_must_parse() {
        let dir = std::env::temp_dir().join(format!("airlock-gwcfg-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(&file, "[metrics]\nlisten = \"127.0.0.1:9465\"\n").unwrap();
        let config = RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(config.metrics_listen, Some("127.0.0.1:9465".parse().unwrap()));
        std::fs::write(&file, "[metrics]\nlisten = \"port 9465\"\n").unwrap();
        let err = format!("{:#}", RunConfig::resolve(Flags { config: Some(file.clone()), ..Default::default() }).unwrap_err());
        assert!(err.contains("metrics.listen (from") && err.contains("port 9465"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
