//! `airlock-gateway`: `run` serves the gateway; every other command is a
//! client of its fleet API, with `--server URL --token T` (or
//! `AIRLOCK_TOKEN`), or `--data-dir DIR` on the gateway's own machine, which
//! reads DIR's URL, admin token and CA.

mod approvals;
mod client;
mod commands;
mod print;
mod security;
mod users;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::Flags;

#[derive(Parser)]
#[command(name = "airlock-gateway", version, about = "Airlock's gateway: the fleet's policy, enrollment and every decision of every host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (gRPC over TLS).
    Run(RunArgs),
    /// Orgs: every object belongs to one.
    #[command(subcommand)]
    Org(OrgCommand),
    /// API tokens (admin, approver, viewer) and join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled hosts and the policy version each enforces (the rollout status).
    Hosts(HostsArgs),
    /// Policy versions: push, history, show, rollback, simulate.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Decisions of every host, newest first (or as they arrive, with --follow).
    Decisions(DecisionsArgs),
    /// Sessions on every host; `sessions revoke HOST SESSION` ends one.
    Sessions(SessionsArgs),
    /// Approval requests of every host: list, show, approve, reject, wait.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Security monitoring: findings, blocks (ack, lift), detector settings.
    #[command(subcommand)]
    Security(security::SecurityCommand),
    /// The web UI's users: create, list, update (role, disable, password).
    #[command(subcommand)]
    User(users::UserCommand),
}

#[derive(Args)]
struct RunArgs {
    /// A TOML file with the same keys as these flags (default /etc/airlock/gateway.toml, if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The CA, server certificate, admin token and (without --database-url) the SQLite store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve on (default 0.0.0.0:7443).
    #[arg(long)]
    listen: Option<String>,
    /// postgresql://USER[:PASSWORD]@HOST:PORT/DB: keep everything in PostgreSQL (replicas share it).
    #[arg(long, env = "AIRLOCK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The server certificate and key to use instead of the gateway's own.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The CA certificate to sign host certificates with, instead of DATA_DIR/ca.pem (with --ca-key).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// The CA's private key (with --ca-cert); the gateway never writes it.
    #[arg(long, value_name = "PEM")]
    ca_key: Option<PathBuf>,
    /// Serve grpc.health.v1 in plain text here, for Kubernetes' grpc probes (e.g. 0.0.0.0:7444).
    #[arg(long, value_name = "ADDR")]
    health_listen: Option<String>,
    /// Another name or address for the certificate the gateway makes (repeatable).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// This replica's name in host records.
    #[arg(long)]
    replica: Option<String>,
    /// Seconds between security detection passes (default 60; at least 1).
    #[arg(long, value_name = "SECONDS")]
    detect_interval: Option<u64>,
    /// Serve the web Control Room (HTTPS, the gateway's certificate) here, e.g. 0.0.0.0:8443.
    #[arg(long, value_name = "ADDR")]
    ui_listen: Option<String>,
    /// Export every host's decisions for a SIEM as they are stored (repeatable): ocsf:FILE
    /// (OCSF JSON lines) or otlp:URL (OTLP logs to a collector). See docs/export.md.
    #[arg(long = "export", value_name = "TARGET", value_parser = airlock_export::Target::parse_flag)]
    export: Vec<airlock_export::Target>,
    /// Serve Prometheus metrics over plain HTTP here (GET /metrics), e.g. 127.0.0.1:9465.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// Where the fleet API is and who is calling.
#[derive(Args, Clone)]
pub struct Conn {
    /// The gateway's URL, https://HOST:PORT.
    #[arg(long, global = true, env = "AIRLOCK_GATEWAY")]
    server: Option<String>,
    /// An API token.
    #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA that signed the gateway's certificate (DIR/ca.pem of a gateway that made its own).
    #[arg(long, global = true, env = "AIRLOCK_GATEWAY_CA")]
    ca: Option<PathBuf>,
    /// On the gateway's machine: read the URL, admin token and CA from its data directory.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Act in this org (only an admin of the `default` org may name another one).
    #[arg(long, global = true)]
    org: Option<String>,
    /// JSON output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum OrgCommand {
    Create {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Prints a new token once; the gateway keeps only its hash.
    Create {
        /// API token role: admin, approver or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A join token, for `airlock-agent run --join-token`.
        #[arg(long)]
        join: bool,
        /// Join token: enrollments it allows (default: unlimited until it expires).
        #[arg(long)]
        uses: Option<u32>,
        /// Join token: lifetime (30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The org's tokens (never their secrets), revoked ones too.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Refuse token ID from now on (the ID from `token list`).
    Revoke {
        id: i64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct HostsArgs {
    #[command(subcommand)]
    action: Option<HostsAction>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum HostsAction {
    /// Refuse this host's certificate from now on.
    Revoke { host: String },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory (policies/, roles/) and make it the org's next version.
    Push {
        dir: PathBuf,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    History {
        #[command(flatten)]
        conn: Conn,
    },
    /// A version's files and its diff against the one before (default: the latest).
    Show {
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A new version with version V's content.
    Rollback {
        version: u64,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replay the org's stored exec and connect decisions against a candidate directory.
    Simulate {
        dir: PathBuf,
        /// How far back: 15m, 24h, 7d, or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args)]
struct DecisionsArgs {
    #[arg(long)]
    host: Option<String>,
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
    #[arg(long)]
    until: Option<String>,
    /// Text in the command line or destination (case-insensitive).
    #[arg(long)]
    text: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Keep printing decisions as they arrive from any host.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    conn: Conn,
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
struct SessionsArgs {
    #[command(subcommand)]
    action: Option<SessionsAction>,
    #[arg(long)]
    host: Option<String>,
    /// ready, running, exited or revoked.
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// Kill every process of a session on HOST and deny anything further it tries.
    Revoke {
        host: String,
        session: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    // A client command's output piped into `head` ends it quietly, as for any
    // Unix tool. Never the server: a peer closing its connection would kill it.
    if !matches!(cli.command, Command::Run(_)) {
        // SAFETY: restoring the default disposition of a signal, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async move {
        let done = match cli.command {
            Command::Run(a) => {
                let flags = Flags {
                    config: a.config,
                    data_dir: a.data_dir,
                    listen: a.listen,
                    database_url: a.database_url,
                    tls_cert: a.tls_cert,
                    tls_key: a.tls_key,
                    ca_cert: a.ca_cert,
                    ca_key: a.ca_key,
                    health_listen: a.health_listen,
                    server_names: a.server_names,
                    replica: a.replica,
                    detect_interval: a.detect_interval,
                    ui_listen: a.ui_listen,
                    export: a.export,
                    metrics_listen: a.metrics_listen,
                };
                crate::server::run(crate::config::RunConfig::resolve(flags)?).await
            }
            Command::Org(OrgCommand::Create { name, conn }) => commands::org_create(&conn, &name).await,
            Command::Org(OrgCommand::List { conn }) => commands::org_list(&conn).await,
            Command::Token(TokenCommand::Create { role, join, uses, ttl, label, conn }) => {
                commands::token_create(&conn, commands::TokenSpec { role, join, uses, ttl, label }).await
            }
            Command::Token(TokenCommand::List { conn }) => users::token_list(&conn).await,
            Command::Token(TokenCommand::Revoke { id, conn }) => users::token_revoke(&conn, id).await,
            Command::Hosts(HostsArgs { action: None, conn }) => commands::hosts(&conn).await,
            Command::Hosts(HostsArgs { action: Some(HostsAction::Revoke { host }), conn }) => commands::host_revoke(&conn, &host).await,
            Command::Policy(PolicyCommand::Push { dir, comment, conn }) => commands::policy_push(&conn, &dir, comment).await,
            Command::Policy(PolicyCommand::History { conn }) => commands::policy_history(&conn).await,
            Command::Policy(PolicyCommand::Show { version, conn }) => commands::policy_show(&conn, version.unwrap_or(0)).await,
            Command::Policy(PolicyCommand::Rollback { version, comment, conn }) => commands::policy_rollback(&conn, version, comment).await,
            Command::Policy(PolicyCommand::Simulate { dir, since, conn }) => commands::policy_simulate(&conn, &dir, &since).await,
            Command::Decisions(a) => commands::decisions(&a.conn.clone(), a.filter()?, a.host.clone().unwrap_or_default(), a.limit, a.follow).await,
            Command::Sessions(SessionsArgs { action: None, host, state, conn }) => commands::sessions(&conn, host.unwrap_or_default(), state).await,
            Command::Sessions(SessionsArgs { action: Some(SessionsAction::Revoke { host, session, reason }), conn, .. }) => {
                commands::session_revoke(&conn, &host, &session, reason).await
            }
            // The one command whose exit code says more than success or failure.
            Command::Approvals(command) => return approvals::run(command).await,
            Command::Security(command) => security::run(command).await,
            Command::User(command) => users::run(command).await,
        };
        done.map(|()| 0)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

impl DecisionsArgs {
    fn filter(&self) -> anyhow::Result<airlock_api::v1::DecisionFilter> {
        use airlock_api::v1::{DecisionKind, Verdict};
        use anyhow::Context;
        Ok(airlock_api::v1::DecisionFilter {
            session_id: self.session.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            role: self.role.clone().unwrap_or_default(),
            kind: match self.kind {
                None => DecisionKind::Unspecified,
                Some(KindArg::Exec) => DecisionKind::Exec,
                Some(KindArg::Connect) => DecisionKind::Connect,
                Some(KindArg::Other) => DecisionKind::Other,
            } as i32,
            decision: match self.decision {
                None => Verdict::Unspecified,
                Some(VerdictArg::Allow) => Verdict::Allow,
                Some(VerdictArg::Deny) => Verdict::Deny,
            } as i32,
            since_unix_nanos: self.since.as_deref().map(commands::parse_time).transpose().context("--since")?.unwrap_or(0),
            until_unix_nanos: self.until.as_deref().map(commands::parse_time).transpose().context("--until")?.unwrap_or(0),
            text: self.text.clone().unwrap_or_default(),
        })
    }
}
