//! The command line: parses arguments and runs the matching command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::daemon::{self, DaemonOptions};
use crate::kernel::{BackendChoice, MapSizes};
use crate::launch;
use crate::policy_store;
use crate::protocol::{call, Request, Response, StatusReport};
use crate::sessions::SessionInfo;

const DEFAULT_SOCKET: &str = "/run/airlock/agent.sock";
const DEFAULT_STATE_DIR: &str = "/var/lib/airlock";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/airlock";

/// Exit status of `launch` when Airlock refuses to start the command.
const LAUNCH_REFUSED: i32 = 125;

#[derive(Parser)]
#[command(name = "airlock-agent", version, about = "Kernel-level enforcement for AI coding agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Enforcement backend; `auto` uses LSM where the kernel runs BPF LSM programs.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Record command lines verbatim: do not mask passwords, tokens and keys in the audit trail.
        #[arg(long)]
        no_mask_secrets: bool,
        /// Where the programs and maps are pinned (on bpffs). A restart adopts what is pinned here.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// On stop, detach the programs and remove the pins. By default they stay
        /// pinned and in force, and the next start re-adopts the running sessions.
        #[arg(long)]
        release_on_exit: bool,
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
    /// Show the daemon's backend, hooks, policy, sessions and counters.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List governed sessions.
    Sessions {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
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
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory; every error names its file, line and field.
    Check { dir: PathBuf },
    /// Ask the daemon to reload its policy now (root).
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
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
        Command::Run { policy_dir, embedded_policy, state_dir, socket, backend, no_mask_secrets, pin_dir, release_on_exit } => {
            let policy = if embedded_policy {
                policy_store::PolicyOrigin::Embedded
            } else {
                policy_store::default_origin(policy_dir.as_deref())?
            };
            daemon::run(DaemonOptions {
                policy,
                state_dir,
                socket,
                backend,
                sizes: MapSizes::default(),
                mask_secrets: !no_mask_secrets,
                pin_dir,
                release_on_exit,
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
        Command::Status { socket, json } => {
            let Response::Status(report) = call(&socket, &Request::Status)? else { bail!("unexpected answer to status") };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_status(&report);
            }
            Ok(0)
        }
        Command::Sessions { socket, json } => {
            let Response::Sessions { sessions } = call(&socket, &Request::Sessions)? else { bail!("unexpected answer to sessions") };
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                print_sessions(&sessions);
            }
            Ok(0)
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
        Command::Policy { command: PolicyCommand::Check { dir } } => policy_check(&dir),
        Command::Policy { command: PolicyCommand::Reload { socket } } => {
            let Response::Reloaded { version } = call(&socket, &Request::Reload)? else { bail!("unexpected answer") };
            println!("policy {version} in force");
            Ok(0)
        }
    }
}

fn policy_check(dir: &Path) -> Result<i32> {
    match airlock_common::policy::load_dir(dir) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            let mut ids = airlock_common::policy::IdAllocator::new();
            let compiled = airlock_common::policy::compile(&loaded, &mut ids);
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

fn print_status(r: &StatusReport) {
    println!("Airlock agent {} (pid {})", r.version, r.pid);
    println!("backend:        {}", r.backend);
    println!("hooks:");
    for h in &r.hooks {
        println!("  {:<24} {}", h.program, h.attach_point);
    }
    println!("guarantees:");
    for g in &r.guarantees {
        println!("  - {g}");
    }
    println!("policy:         {} (generation {}, from {})", r.policy.version, r.policy.generation, r.policy.source);
    println!("  roles:        {}", r.policy.roles.join(", "));
    println!("  rules:        {}", r.policy.rules);
    println!("  loaded at:    {}", r.policy.loaded_at);
    if let Some(e) = &r.policy.last_reload_error {
        println!("  LAST RELOAD REFUSED: {e}");
    }
    println!("default role:   {}", r.default_role);
    println!("sessions:       {} running, {} tagged processes", r.sessions.len(), r.tagged_processes);
    for s in &r.sessions {
        println!("  {} role={} user={} pid={} cmd={}", s.id, s.role, s.user, s.root_pid, s.command.join(" "));
    }
    let c = &r.counters;
    println!("counters:       decisions={} denies={} ringbuf_drops={} tag_failures={}", c.decisions, c.denies, c.ringbuf_drops, c.tag_failures);
    println!("audit:          {} lines this run -> {}", r.audit_lines, r.audit_path);
    if let Some(l) = &r.lifecycle {
        let how = match &l.startup {
            crate::kernel::Startup::Fresh => "loaded by this daemon".to_string(),
            crate::kernel::Startup::Adopted { pinned_by_pid, pinned_by_version, .. } => {
                format!("adopted (pinned by daemon {pinned_by_version}, pid {pinned_by_pid})")
            }
            crate::kernel::Startup::Replaced { reason, tags_copied, .. } => format!("replaced an older set ({reason}; {tags_copied} tags carried over)"),
        };
        println!("enforcement:    pinned in {}, {how}", l.pinned_set);
        println!("  backlog:      {} decisions made while no daemon ran were audited at start", l.backlog_audited);
        println!("  on stop:      {}", l.on_stop);
    }
}

fn print_sessions(sessions: &[SessionInfo]) {
    println!("{:<16}  {:<8}  {:<26}  {:<10}  {:>7}  {:<25}  COMMAND", "SESSION", "STATE", "ROLE", "USER", "PID", "STARTED");
    for s in sessions {
        println!(
            "{:<16}  {:<8}  {:<26}  {:<10}  {:>7}  {:<25}  {}",
            s.id,
            serde_json::to_value(s.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            s.role,
            s.user,
            s.root_pid,
            s.started_at,
            s.command.join(" ")
        );
    }
}

