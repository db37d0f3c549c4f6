//! The command line: parses arguments and runs the matching command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use airlock_api::v1 as pb;

use crate::daemon::{self, DaemonOptions};
use crate::kernel::{BackendChoice, MapSizes};
use crate::approvals_client;
use crate::launch;
use crate::operator::{self, api_socket, ApiConn, DecisionsArgs, DEFAULT_SOCKET};
use crate::policy::dns::DnsClient;
use crate::policy::origin::{default_origin, PolicyOrigin};
use crate::protocol::{call, Request, Response};

const DEFAULT_STATE_DIR: &str = "/var/lib/airlock";
use crate::kernel::pins::DEFAULT_PIN_DIR;

/// Exit status of `launch` when Airlock refuses to start the command.
const LAUNCH_REFUSED: i32 = 125;

#[derive(Parser)]
#[command(name = "airlock-agent", version, about = "Kernel-level enforcement for AI coding agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and matched once: the size of `Run` costs nothing,
// and boxing it would only make the flags harder to read.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the daemon (root): load the eBPF enforcement and the policy, write the audit trail.
    Run {
        /// Policy directory (policies/ and roles/). Default: /etc/airlock/policies, else ./policies, else the embedded default.
        #[arg(long)]
        policy_dir: Option<PathBuf>,
        /// Use the policies compiled into the binary, whatever is on disk.
        #[arg(long, conflicts_with = "policy_dir")]
        embedded_policy: bool,
        #[command(flatten)]
        gateway: GatewayArgs,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Enforcement backend; `auto` uses LSM where the kernel runs BPF LSM programs.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        #[command(flatten)]
        masking: crate::masking::MaskArgs,
        /// A directory where protected programs are installed, besides PATH and the standard
        /// bin directories; their contents are recognised under any name (repeatable).
        #[arg(long = "program-path", value_name = "DIR")]
        program_paths: Vec<PathBuf>,
        /// Size of the kernel's event ring buffer in KiB (a power of two, at least 4).
        /// Smaller rings overflow sooner; every lost event is counted and reported.
        #[arg(long, value_parser = parse_ringbuf_kib)]
        ringbuf_kib: Option<u32>,
        /// DNS server (IP:PORT, or IP for port 53) that hostname egress rules are resolved with.
        /// Default: every nameserver of /etc/resolv.conf (and /etc/hosts, always).
        #[arg(long)]
        dns_server: Option<String>,
        /// Seconds to wait for each DNS answer (each query is sent twice before the lookup fails).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=600))]
        dns_timeout: u64,
        /// Where the programs and maps are pinned (on bpffs). A restart adopts what is pinned here.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// On stop, detach the programs and remove the pins. By default they stay
        /// pinned and in force, and the next start re-adopts the running sessions.
        #[arg(long)]
        release_on_exit: bool,
        /// Export every decision for a SIEM (repeatable): ocsf:FILE appends OCSF events as JSON
        /// lines; otlp:URL sends them as OTLP logs to a collector (http(s)://HOST:4317). See docs/export.md.
        #[arg(long = "export", value_name = "TARGET", value_parser = airlock_export::Target::parse_flag)]
        export: Vec<airlock_export::Target>,
        #[command(flatten)]
        api: ApiServeArgs,
        #[command(flatten)]
        detect: DetectArgs,
        /// Serve Prometheus metrics over plain HTTP at ADDR (GET /metrics), meant for loopback,
        /// e.g. 127.0.0.1:9464 (docs/metrics.md).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Detach the pinned enforcement and remove its pins (root; the daemon must be stopped).
    Unload {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Install the agent as a systemd service: binary, unit, default policies, `airlock` group.
    Install(crate::install::InstallArgs),
    /// Remove what `install` installed; stops the service and unloads the enforcement.
    Uninstall(crate::install::UninstallArgs),
    /// Start CMD as a governed session: it and everything it starts obey the role's policies.
    Launch {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Role to govern the session with (default: the one `use` set).
        #[arg(long)]
        role: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show the daemon's backend, hooks, policy, sessions and counters (API).
    Status {
        #[command(flatten)]
        conn: ApiConn,
        #[arg(long)]
        json: bool,
    },
    /// Governed sessions: list (the default), show one, revoke one (API).
    #[command(args_conflicts_with_subcommands = true)]
    Sessions {
        #[command(subcommand)]
        command: Option<SessionsCommand>,
        #[command(flatten)]
        list: SessionsListArgs,
    },
    /// Decisions from the daemon's store, newest first; --follow streams new ones (API).
    Decisions(DecisionsCli),
    /// Set the role sessions get when `launch` names none (root).
    Use {
        role: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Show the role sessions get when `launch` names none.
    Current {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Security monitoring: the detectors' findings and the blocks in force (API).
    Security {
        #[command(subcommand)]
        command: crate::security_client::SecurityCommand,
    },
    /// Commands an approval rule holds: list, show, approve, reject, wait (API).
    Approvals {
        #[command(subcommand)]
        command: approvals_client::ApprovalsCommand,
    },
    /// An MCP server on stdio for the AI agent of a governed session: explains what Airlock
    /// holds, checks commands, asks for approvals; it cannot decide any (see docs/agents.md).
    Mcp {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Inside a governed session: would this command run? Exits 0 allowed, 1 blocked,
    /// 2 needs approval, 3 when it could not be checked.
    Check {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}


#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory; every error names its file, line and field.
    Check { dir: PathBuf },
    /// Ask the daemon to reload its policy now (API).
    Reload {
        #[command(flatten)]
        conn: ApiConn,
    },
    /// The rules a role is governed by, as the daemon enforces them now (API).
    Show {
        /// The role (default: the default role).
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
}

/// `run` with a gateway: policy comes from it, every decision goes to it.
#[derive(Args)]
struct GatewayArgs {
    /// The gateway, https://HOST:PORT: enroll with it (once), enforce the policy it sends, ship every decision to it.
    #[arg(long, value_name = "URL")]
    gateway: Option<String>,
    /// A join token from `airlock-gateway token create --join` (first start only).
    #[arg(long, requires = "gateway", env = "AIRLOCK_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// The gateway's CA (its DATA_DIR/ca.pem), to enroll.
    #[arg(long, requires = "gateway")]
    gateway_ca: Option<PathBuf>,
    /// This host's name at the gateway (default: the machine's host name).
    #[arg(long, requires = "gateway")]
    host_id: Option<String>,
    /// The spool of decisions not yet acked by the gateway is kept under this size (MB);
    /// past it decisions are counted as lost to the gateway (never silently).
    #[arg(long, default_value_t = 256, requires = "gateway")]
    spool_max_mb: u64,
}

impl GatewayArgs {
    /// The gateway options; a policy directory beside a gateway is refused:
    /// the policy would have two sources.
    fn options(self, policy_dir: &Option<PathBuf>, embedded_policy: bool) -> Result<Option<crate::gateway::GatewayOptions>> {
        let Some(url) = self.gateway else { return Ok(None) };
        if let Some(dir) = policy_dir {
            bail!("--gateway and --policy-dir {} both say where the policy comes from: with a gateway, the policy is the version it sends (push {} to it with `airlock-gateway policy push`)", dir.display(), dir.display());
        }
        if embedded_policy {
            bail!("--gateway and --embedded-policy both say where the policy comes from: with a gateway, the policy is the version it sends (the embedded default until the first one arrives)");
        }
        Ok(Some(crate::gateway::GatewayOptions {
            url,
            join_token: self.join_token,
            ca: self.gateway_ca,
            host_id: self.host_id,
            spool_max_bytes: self.spool_max_mb.saturating_mul(1_000_000),
        }))
    }
}

/// Where `run` serves the gRPC API.
#[derive(Args)]
struct ApiServeArgs {
    /// The API's Unix socket (root and the `airlock` group). Default: api.sock beside --socket.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Serve the API on TCP too, at ADDR (e.g. 127.0.0.1:7443): mutual TLS unless --api-insecure.
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<std::net::SocketAddr>,
    /// A pending approval request expires (a rejection) after this long (e.g. 30m, 1h).
    #[arg(long, default_value = "1h", value_parser = airlock_api::duration::parse_duration)]
    approval_ttl: std::time::Duration,
    /// Pending approval requests a session may have at once; more are refused and audited.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    approval_max_pending: u64,
    /// Webhooks and email to tell approvers of new requests and decisions (TOML:
    /// `[[webhooks]]`, `[email]`; see docs/notifications.md).
    #[arg(long, value_name = "FILE")]
    notify_config: Option<PathBuf>,
    /// The server's certificate (PEM) for --api-listen.
    #[arg(long, requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA whose certificates clients must present.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
    /// Serve --api-listen as plain TCP with no authentication (a trusted network only).
    #[arg(long)]
    api_insecure: bool,
    /// Decisions older than this leave the store (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = parse_age)]
    store_max_age: std::time::Duration,
    /// The store is kept under this size, oldest decisions first (MB).
    #[arg(long, default_value_t = 2048)]
    store_max_mb: u64,
}

/// This host's own security detection (off unless asked for; with a gateway
/// the gateway runs it over the whole org).
#[derive(Args)]
struct DetectArgs {
    /// Run the detectors over this host's decision store every SECONDS, and
    /// place the blocks their findings call for.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    detect_interval: Option<u64>,
    /// The detectors' settings (TOML or JSON; see docs/detectors.md). Default: the built-in table.
    /// Implies --detect-interval 60 when that is not given.
    #[arg(long, value_name = "FILE")]
    detect_settings: Option<PathBuf>,
}

impl DetectArgs {
    fn config(self) -> Result<Option<crate::security::detection::DetectionConfig>> {
        if self.detect_interval.is_none() && self.detect_settings.is_none() {
            return Ok(None);
        }
        let (settings, source) = match &self.detect_settings {
            Some(path) => (crate::security::detection::load_settings(path)?, path.display().to_string()),
            None => (airlock_detect::Settings::default(), "the built-in defaults".to_string()),
        };
        Ok(Some(crate::security::detection::DetectionConfig {
            interval: std::time::Duration::from_secs(self.detect_interval.unwrap_or(60)),
            settings,
            source,
        }))
    }
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    // A bare number is days, as the store's retention has always read it.
    match text.trim().parse::<u64>() {
        Ok(days) => Ok(std::time::Duration::from_secs(days.saturating_mul(86_400))),
        Err(_) => airlock_api::duration::parse_duration(text),
    }
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Every session the daemon knows, newest first.
    List(SessionsListArgs),
    /// One session in full.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    /// Kill every process of the session and make the kernel deny it everything.
    Revoke {
        id: String,
        /// Recorded with the revocation in the audit trail and the store.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
}

#[derive(Args)]
struct SessionsListArgs {
    /// Only sessions in this state: ready, running, exited, revoked.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ApiConn,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Exec,
    Connect,
    Other,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerdictArg {
    Allow,
    Deny,
}

#[derive(Args)]
struct DecisionsCli {
    #[arg(long)]
    session: Option<String>,
    /// User name or uid.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    role: Option<String>,
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    #[arg(long, value_enum)]
    decision: Option<VerdictArg>,
    /// From this time on: RFC 3339, or an age (15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Before this time: RFC 3339, or an age.
    #[arg(long)]
    until: Option<String>,
    /// Text in the command line or the destination (case-insensitive).
    #[arg(long)]
    text: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Keep printing decisions as they are made.
    #[arg(long, short = 'f')]
    follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ApiConn,
}

impl DecisionsCli {
    fn filter(&self) -> Result<pb::DecisionFilter> {
        Ok(pb::DecisionFilter {
            session_id: self.session.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            role: self.role.clone().unwrap_or_default(),
            kind: match self.kind {
                None => pb::DecisionKind::Unspecified,
                Some(KindArg::Exec) => pb::DecisionKind::Exec,
                Some(KindArg::Connect) => pb::DecisionKind::Connect,
                Some(KindArg::Other) => pb::DecisionKind::Other,
            } as i32,
            decision: match self.decision {
                None => pb::Verdict::Unspecified,
                Some(VerdictArg::Allow) => pb::Verdict::Allow,
                Some(VerdictArg::Deny) => pb::Verdict::Deny,
            } as i32,
            since_unix_nanos: self.since.as_deref().map(operator::parse_time).transpose().context("--since")?.unwrap_or(0),
            until_unix_nanos: self.until.as_deref().map(operator::parse_time).transpose().context("--until")?.unwrap_or(0),
            text: self.text.clone().unwrap_or_default(),
        })
    }
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    // A client command piped into `head` ends quietly, as any Unix tool does,
    // and `launch` hands the agent's command the default disposition rather than
    // Rust's ignored SIGPIPE. Never the daemon: a peer closing a socket would kill it.
    // Nor the MCP bridge and `check`: a daemon gone mid-request is an answer they
    // report (an error result, exit 3), not a death by signal.
    if !matches!(cli.command, Command::Run { .. } | Command::Mcp { .. } | Command::Check { .. }) {
        // SAFETY: restoring the default disposition of a signal, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The MCP bridge's stderr lands in the AI client's logs: only what needs reading.
    let default_level = if matches!(cli.command, Command::Mcp { .. }) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log an MCP client keeps.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, libbpf_log)));

    if let Command::Launch { socket, role, command } = cli.command {
        let err = match launch::launch(&socket, role, command) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        eprintln!("airlock: {err:#}");
        return exit_code_for_launch(&err);
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        // `airlock-agent decisions | head`: the reader left; not an error.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => 0,
        Err(e) => {
            eprintln!("airlock-agent: {e:#}");
            1
        }
    }
}

fn libbpf_log(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
    }
}

fn exit_code_for_launch(err: &anyhow::Error) -> i32 {
    let exec_error = err.chain().find_map(|c| c.downcast_ref::<nix::errno::Errno>()).copied();
    match exec_error {
        Some(nix::errno::Errno::ENOENT) => 127,
        Some(_) => 126,
        None => LAUNCH_REFUSED,
    }
}

fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run { policy_dir, embedded_policy, gateway, state_dir, socket, backend, masking, program_paths, ringbuf_kib, dns_server, dns_timeout, pin_dir, release_on_exit, export, api, detect, metrics_listen } => {
            let dns = match dns_server {
                None => DnsClient::system(),
                Some(s) => DnsClient::with_server(
                    s.parse::<std::net::SocketAddr>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                        .map_err(|_| anyhow::anyhow!("--dns-server {s:?}: expected IP or IP:PORT, e.g. 127.0.0.53 or 127.0.0.1:5353"))?,
                ),
            };
            let gateway = gateway.options(&policy_dir, embedded_policy)?;
            let policy = match (&gateway, embedded_policy) {
                (Some(_), _) => PolicyOrigin::Gateway(crate::gateway::bundle_path(&state_dir)),
                (None, true) => PolicyOrigin::Embedded,
                (None, false) => default_origin(policy_dir.as_deref())?,
            };
            let tls = match (api.tls_cert, api.tls_key, api.tls_client_ca) {
                (Some(cert), Some(key), Some(client_ca)) => Some(crate::api::TlsFiles { cert, key, client_ca }),
                _ => None,
            };
            let api_options = crate::api::ApiOptions {
                socket: api_socket(&socket, api.api_socket),
                listen: api.api_listen,
                tls,
                insecure: api.api_insecure,
            };
            let retention = airlock_store::Retention { max_age: api.store_max_age, max_bytes: api.store_max_mb.saturating_mul(1_000_000) };
            let mut sizes = MapSizes::default();
            if let Some(kib) = ringbuf_kib {
                sizes.ringbuf_bytes = kib * 1024;
            }
            daemon::run(DaemonOptions {
                policy,
                state_dir,
                socket,
                backend,
                sizes,
                masking: masking.masking()?,
                api: api_options,
                retention,
                program_paths,
                dns: dns.with_timeout(std::time::Duration::from_secs(dns_timeout)),
                pin_dir,
                release_on_exit,
                gateway,
                notify: api.notify_config.as_deref().map(crate::approvals::notify::load_config).transpose()?,
                detection: detect.config()?,
                export,
                metrics_listen: metrics_listen
                    .map(|t| t.parse().map_err(|_| anyhow::anyhow!("--metrics-listen {t:?}: expected an address like 127.0.0.1:9464")))
                    .transpose()?,
                approvals: crate::approvals::ApprovalSettings {
                    ttl: api.approval_ttl,
                    max_pending_per_session: api.approval_max_pending as usize,
                    once_grant_ttl: api.approval_ttl,
                },
            })?;
            Ok(0)
        }
        Command::Unload { pin_dir } => {
            let removed = crate::kernel::unload(&pin_dir)?;
            if removed.is_empty() {
                println!("nothing was pinned in {}", pin_dir.display());
            } else {
                println!("unloaded: {} pins removed from {}; no Airlock enforcement remains there", removed.len(), pin_dir.display());
            }
            Ok(0)
        }
        Command::Install(args) => crate::install::install(&args),
        Command::Uninstall(args) => crate::install::uninstall(&args),
        Command::Launch { .. } => unreachable!("handled before dispatch"),
        Command::Status { conn, json } => operator::status(&conn.target(), &conn.socket, json),
        Command::Sessions { command, list } => match command {
            None => operator::sessions_list(&list.conn.target(), list.state, list.json),
            Some(SessionsCommand::List(l)) => operator::sessions_list(&l.conn.target(), l.state, l.json),
            Some(SessionsCommand::Show { id, json, conn }) => operator::sessions_show(&conn.target(), id, json),
            Some(SessionsCommand::Revoke { id, reason, json, conn }) => operator::sessions_revoke(&conn.target(), id, reason, json),
        },
        Command::Decisions(d) => {
            let filter = d.filter()?;
            operator::decisions(&d.conn.target(), DecisionsArgs { filter, limit: d.limit.max(1), follow: d.follow, json: d.json })
        }
        Command::Use { role, socket } => {
            let Response::DefaultRole { role } = call(&socket, &Request::SetDefaultRole { role })? else { bail!("unexpected answer") };
            println!("default role: {role}");
            Ok(0)
        }
        Command::Current { socket } => {
            let Response::DefaultRole { role } = call(&socket, &Request::DefaultRole)? else { bail!("unexpected answer") };
            println!("{role}");
            Ok(0)
        }
        Command::Approvals { command } => approvals_client::run(command),
        Command::Security { command } => crate::security_client::run(command),
        Command::Mcp { socket } => crate::mcp::serve(socket).map(|()| 0),
        Command::Check { socket, command } => Ok(crate::mcp::session::check_cli(&socket, command)),
        Command::Policy { command: PolicyCommand::Check { dir } } => policy_check(&dir),
        Command::Policy { command: PolicyCommand::Reload { conn } } => operator::policy_reload(&conn.target()),
        Command::Policy { command: PolicyCommand::Show { role, json, conn } } => operator::policy_show(&conn.target(), role, json),
    }
}

fn policy_check(dir: &Path) -> Result<i32> {
    match airlock_policy::load_dir(dir) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            let mut ids = airlock_policy::IdAllocator::new();
            let compiled = airlock_policy::compile(&loaded, &mut ids);
            println!(
                "{}: OK: {} policies, {} roles, {} rules, version {}",
                dir.display(),
                loaded.policies.len(),
                loaded.roles.len(),
                compiled.rules.len(),
                compiled.version
            );
            Ok(0)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s); this policy would be refused", dir.display(), errors.errors.len());
            Ok(1)
        }
    }
}

/// The ring buffer's size must be a power-of-two number of pages.
fn parse_ringbuf_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|_| format!("{s:?} is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!("{kib} KiB: the ring buffer must be a power of two between 4 KiB and 1 GiB"));
    }
    Ok(kib)
}
