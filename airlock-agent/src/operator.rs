//! The operator commands, clients of the gRPC API: `status`,
//! `sessions list|show|revoke`, `decisions`, `policy show`, `policy reload`.
//! Human tables by default, `--json` for scripts.

use std::path::{Path, PathBuf};

use airlock_api::client::{connect_tls, connect_unix, status_error, Client, TlsClientFiles};
use airlock_api::v1 as pb;
use airlock_api::v1::decision::Detail;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

/// Where an operator command reaches the API.
#[derive(Debug, Clone)]
pub enum ApiTarget {
    /// The daemon's API socket (root and the `airlock` group).
    Unix(PathBuf),
    /// `https://HOST:PORT` with a client certificate (mutual TLS).
    Tls { url: String, files: TlsClientFiles },
}

/// The daemon's control socket; the API socket is `api.sock` beside it.
pub const DEFAULT_SOCKET: &str = "/run/airlock/agent.sock";

/// How an operator command reaches the API: the local socket, or a daemon's
/// TCP listener with mutual TLS.
#[derive(Args, Clone)]
pub struct ApiConn {
    /// The daemon's control socket; the API socket is `api.sock` beside it.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The API socket, when it is not beside the control socket.
    #[arg(long, conflicts_with = "api_url")]
    pub api_socket: Option<PathBuf>,
    /// A daemon's API over TCP (`--api-listen`): https://HOST:PORT, with mutual TLS.
    #[arg(long, value_name = "URL", requires_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub api_url: Option<String>,
    /// The CA that signed the daemon's certificate (with --api-url).
    #[arg(long, requires = "api_url")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate and key, from a CA the daemon trusts (with --api-url).
    #[arg(long, requires = "api_url")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "api_url")]
    pub tls_key: Option<PathBuf>,
}

impl ApiConn {
    pub fn target(&self) -> ApiTarget {
        match (&self.api_url, &self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(url), Some(ca), Some(cert), Some(key)) => {
                ApiTarget::Tls { url: url.clone(), files: TlsClientFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() } }
            }
            _ => ApiTarget::Unix(api_socket(&self.socket, self.api_socket.clone())),
        }
    }
}

/// Runs one API conversation on a small runtime of its own.
pub fn with_client<T>(target: &ApiTarget, f: impl AsyncFnOnce(Client) -> Result<T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the client runtime")?;
    rt.block_on(async {
        let client = match target {
            ApiTarget::Unix(socket) => connect_unix(socket).await?,
            ApiTarget::Tls { url, files } => connect_tls(url, files).await?,
        };
        f(client).await
    })
}

// ---- status ------------------------------------------------------------------

pub fn status(api: &ApiTarget, launch_socket: &Path, json: bool) -> Result<i32> {
    if let ApiTarget::Unix(socket) = api {
        // The API is root's and the `airlock` group's; anyone else asks the launch socket,
        // which answers about the caller's own sessions only.
        if nix::unistd::access(socket.as_path(), nix::unistd::AccessFlags::W_OK) == Err(nix::errno::Errno::EACCES) {
            return own_status(launch_socket, json);
        }
    }
    let r = with_client(api, async |mut c| Ok(c.status(pb::StatusRequest {}).await.map_err(status_error)?.into_inner()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&r)?)?);
    } else {
        print_status(&r);
    }
    Ok(0)
}

/// `status` for a caller without API access: the daemon, and the caller's own sessions.
fn own_status(launch_socket: &Path, json: bool) -> Result<i32> {
    use crate::protocol::{call, Request, Response};
    let Response::Status(report) = call(launch_socket, &Request::Status)? else { bail!("unexpected answer from the daemon") };
    let own = match call(launch_socket, &Request::SessionSelf) {
        Ok(Response::SessionSelf(s)) => Some(s),
        _ => None,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "status": report, "this_session": own }))?);
        return Ok(0);
    }
    println!("airlock-agent {} (pid {}), backend {}", report.version, report.pid, report.backend);
    println!("policy {} (generation {}, {})", report.policy.version, report.policy.generation, report.policy.source);
    println!("(not root nor in the airlock group: the daemon shows you your own sessions only)");
    if let Some(s) = &own {
        let gateway = if s.gateway.is_empty() { "none".to_string() } else { format!("{} ({})", s.gateway, if s.gateway_connected { "connected" } else { "not connected" }) };
        println!("this process is governed: session {} (role {}), host {}, gateway {}", s.session.id, s.session.role, s.host, gateway);
        if !s.pending_approvals.is_empty() {
            println!("  approval requests pending: {}", s.pending_approvals.join(", "));
        }
    }
    let rows: Vec<Vec<String>> = report.sessions.iter().map(|s| vec![s.id.clone(), s.role.clone(), format!("{:?}", s.state).to_lowercase(), s.started_at.clone(), s.command.join(" ")]).collect();
    println!("your sessions ({}):", rows.len());
    if !rows.is_empty() {
        print_table(&["SESSION", "ROLE", "STATE", "STARTED", "COMMAND"], &rows, &[]);
    }
    Ok(0)
}

fn state_name(state: i32) -> &'static str {
    match pb::SessionState::try_from(state).unwrap_or(pb::SessionState::Unspecified) {
        pb::SessionState::Ready => "ready",
        pb::SessionState::Running => "running",
        pb::SessionState::Exited => "exited",
        pb::SessionState::Revoked => "revoked",
        pb::SessionState::Unspecified => "unknown",
    }
}

/// A session as JSON, with its state by name.
fn session_json(s: &pb::Session) -> Result<Value> {
    let mut v = serde_json::to_value(s)?;
    v["state"] = Value::String(state_name(s.state).to_string());
    Ok(v)
}

fn status_json(r: &pb::StatusResponse) -> Result<Value> {
    let mut v = serde_json::to_value(r)?;
    v["sessions"] = Value::Array(r.sessions.iter().map(session_json).collect::<Result<_>>()?);
    Ok(v)
}

fn print_status(r: &pb::StatusResponse) {
    println!("Airlock agent {} (pid {})", r.version, r.pid);
    println!("backend:        {}", r.backend);
    println!("hooks:");
    for h in &r.hooks {
        let state = match (h.on_demand, h.attached) {
            (false, _) => "",
            (true, true) => "  (on demand: attached, a governed process lives)",
            (true, false) => "  (on demand: detached, no governed process)",
        };
        println!("  {:<24} {}{state}", h.program, h.attach_point);
    }
    println!("guarantees:");
    for g in &r.guarantees {
        println!("  - {g}");
    }
    if let Some(p) = &r.policy {
        println!("policy:         {} (generation {}, from {})", p.version, p.generation, p.source);
        println!("  roles:        {}", p.roles.join(", "));
        println!("  rules:        {}", p.rules);
        println!("  loaded at:    {}", p.loaded_at);
        println!("  identities:   {} protected program contents fingerprinted", p.protected_contents);
        println!(
            "  learned:      {} contents learned from sessions, {} evicted, {} execs not learned (queue full), {} not read (content already known)",
            p.learned_identities, p.learned_evicted, p.learn_dropped, p.learn_already_known
        );
        if let Some(e) = &p.last_reload_error {
            println!("  LAST RELOAD REFUSED: {e}");
        }
        for h in &p.hostnames {
            let error = h.error.as_deref().map(|e| format!("  LOOKUP FAILED: {e}")).unwrap_or_default();
            println!("  hostname:     {} -> [{}] ttl {}s at {}{error}", h.host, h.addresses.join(", "), h.ttl, h.resolved_at);
        }
    }
    println!("default role:   {}", r.default_role);
    println!("sessions:       {} active, {} tagged processes", r.sessions.len(), r.tagged_processes);
    for s in &r.sessions {
        println!(
            "  {} {} role={} user={} pid={} processes={} cmd={}",
            s.id,
            state_name(s.state),
            s.role,
            s.user,
            s.root_pid,
            s.processes,
            s.command.join(" ")
        );
    }
    if let Some(c) = &r.counters {
        println!(
            "counters:       decisions={} denies={} ringbuf_drops={} tag_failures={} tamper={}",
            c.decisions, c.denies, c.ringbuf_drops, c.tag_failures, c.tamper
        );
    }
    println!("audit:          {} lines this run -> {}", r.audit_lines, r.audit_path);
    println!("protected:      {} credential files in session users' homes", r.protected_files);
    if let Some(l) = &r.lifecycle {
        let how = match l.startup.as_ref().map(|s| s.kind.as_str()) {
            Some("adopted") => {
                let s = l.startup.as_ref().expect("matched Some");
                format!("adopted (pinned by daemon {}, pid {})", s.pinned_by_version, s.pinned_by_pid)
            }
            Some("replaced") => {
                let s = l.startup.as_ref().expect("matched Some");
                format!("replaced an older set ({}; {} tags carried over)", s.reason, s.tags_copied)
            }
            _ => "loaded by this daemon".to_string(),
        };
        println!("enforcement:    pinned in {}, {how}", l.pinned_set);
        println!("  backlog:      {} decisions made while no daemon ran were audited at start", l.backlog_audited);
        println!("  on stop:      {}", l.on_stop);
        if let Some(f) = l.fd_store.as_ref().filter(|f| f.active) {
            println!(
                "  fd store:     {} descriptors held by systemd; at start {} handed back, {} taken back, {} pins made again, {} ignored",
                f.stored,
                f.received,
                f.taken_back,
                f.repinned.len(),
                f.ignored.len()
            );
            if let Some(e) = &f.error {
                println!("  FD STORE:     {e}");
            }
        }
    }
    if let Some(s) = &r.store {
        println!(
            "store:          {} decisions, {:.1} MB -> {} (keeps {} days, {} MB; {} dropped)",
            s.decisions,
            s.bytes as f64 / 1e6,
            s.path,
            s.max_age_seconds / 86_400,
            s.max_bytes / 1_000_000,
            s.dropped
        );
    }
    if let Some(g) = &r.gateway {
        let link = if g.connected { "connected".to_string() } else { format!("DISCONNECTED ({})", g.last_error.as_deref().unwrap_or("connecting")) };
        println!("gateway:        {} as {} (org {}): {link}", g.url, g.host_id, g.org);
        let bundle = if g.policy_version == 0 { "none yet (the embedded default is in force)".to_string() } else { format!("version {}", g.policy_version) };
        println!("  policy:       {bundle}");
        if let Some(e) = &g.last_bundle_error {
            println!("  REFUSED:      the last bundle: {}", e.lines().next().unwrap_or(""));
        }
        println!("  spool:        {} written, {} acked, {} waiting ({:.1} MB)", g.spooled, g.acked, g.pending, g.spool_bytes as f64 / 1e6);
        if g.lost > 0 {
            println!("  LOST:         {} decision(s) not shipped: the spool was full (each recorded as shipping_lost)", g.lost);
        }
    }
}

// ---- sessions ----------------------------------------------------------------

pub fn sessions_list(api: &ApiTarget, state: Option<String>, json: bool) -> Result<i32> {
    let state = match state.as_deref() {
        None => pb::SessionState::Unspecified,
        Some("ready") => pb::SessionState::Ready,
        Some("running") => pb::SessionState::Running,
        Some("exited") => pb::SessionState::Exited,
        Some("revoked") => pb::SessionState::Revoked,
        Some(other) => bail!("unknown state {other:?}: ready, running, exited or revoked"),
    };
    let list = with_client(api, async |mut c| {
        Ok(c.list_sessions(pb::ListSessionsRequest { state: state as i32 }).await.map_err(status_error)?.into_inner().sessions)
    })?;
    if json {
        let v: Vec<Value> = list.iter().map(session_json).collect::<Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                state_name(s.state).to_string(),
                s.role.clone(),
                s.user.clone(),
                s.root_pid.to_string(),
                s.processes.to_string(),
                short_time(&s.started_at),
                s.command.join(" "),
            ]
        })
        .collect();
    print_table(&["SESSION", "STATE", "ROLE", "USER", "PID", "PROCS", "STARTED", "COMMAND"], &rows, &[4, 5]);
    Ok(0)
}

pub fn sessions_show(api: &ApiTarget, id: String, json: bool) -> Result<i32> {
    let s = with_client(api, async |mut c| Ok(c.get_session(pb::GetSessionRequest { id }).await.map_err(status_error)?.into_inner()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&session_json(&s)?)?);
        return Ok(0);
    }
    println!("session:    {}", s.id);
    println!("state:      {}", state_name(s.state));
    println!("role:       {}", s.role);
    println!("user:       {} (uid {})", s.user, s.uid);
    println!("agent:      {}", s.agent);
    println!("command:    {}", s.command.join(" "));
    println!("cwd:        {}", s.cwd);
    println!("tty:        {}", s.tty.as_deref().unwrap_or("-"));
    println!("root pid:   {}", s.root_pid);
    println!("processes:  {}", s.processes);
    println!("started:    {}", s.started_at);
    if let Some(t) = &s.ended_at {
        println!("ended:      {t}");
    }
    if let Some(by) = &s.revoked_by {
        println!("revoked by: {by}: {}", s.revoke_reason.as_deref().unwrap_or(""));
    }
    Ok(0)
}

pub fn sessions_revoke(api: &ApiTarget, id: String, reason: Option<String>, json: bool) -> Result<i32> {
    let r = with_client(api, async |mut c| {
        Ok(c.revoke_session(pb::RevokeSessionRequest { id, reason: reason.unwrap_or_default() }).await.map_err(status_error)?.into_inner())
    })?;
    if json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(s) = &r.session {
            v["session"] = session_json(s)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let id = r.session.as_ref().map(|s| s.id.as_str()).unwrap_or("?");
    println!("session {id} revoked: {} processes killed in {} rounds; the kernel denies it everything from now on", r.killed, r.rounds);
    Ok(0)
}

// ---- decisions ---------------------------------------------------------------

/// `--since`/`--until`: RFC 3339, or an age like 90s, 15m, 2h, 7d.
pub fn parse_time(text: &str) -> Result<i64> {
    let t = text.trim();
    if let Some(unit) = t.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        if let Ok(n) = t[..t.len() - 1].parse::<i64>() {
            let secs = match unit {
                's' => n,
                'm' => n * 60,
                'h' => n * 3600,
                'd' => n * 86_400,
                _ => bail!("{text:?}: the unit of an age is s, m, h or d"),
            };
            return Ok(crate::clock::now_unix_nanos() - secs * 1_000_000_000);
        }
    }
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor an age (15m, 2h, 7d)"))?;
    Ok(at.unix_timestamp_nanos() as i64)
}

pub struct DecisionsArgs {
    pub filter: pb::DecisionFilter,
    pub limit: usize,
    pub follow: bool,
    pub json: bool,
}

pub fn decisions(api: &ApiTarget, args: DecisionsArgs) -> Result<i32> {
    with_client(api, async |mut c| {
        // The newest `limit`, fetched page by page.
        let mut found = Vec::new();
        let mut token = String::new();
        let mut more = false;
        while found.len() < args.limit {
            let page = (args.limit - found.len()).min(airlock_store::MAX_PAGE) as u32;
            let r = c
                .query_decisions(pb::QueryDecisionsRequest { filter: Some(args.filter.clone()), page_size: page, page_token: token })
                .await
                .map_err(status_error)?
                .into_inner();
            found.extend(r.decisions);
            token = r.next_page_token;
            more = !token.is_empty();
            if !more {
                break;
            }
        }
        if args.follow {
            // Like tail -f: the recent ones oldest first, then each as it comes.
            let mut stream = c
                .stream_decisions(pb::StreamDecisionsRequest { filter: Some(args.filter.clone()) })
                .await
                .map_err(status_error)?
                .into_inner();
            let last_seen = found.first().map(|d| d.id).unwrap_or(0);
            found.reverse();
            let columns = Columns::fit(&found);
            print_decisions(&found, args.json, &columns, true)?;
            while let Some(d) = stream.message().await.map_err(status_error)? {
                if d.id > last_seen {
                    print_decisions(std::slice::from_ref(&d), args.json, &columns, false)?;
                }
            }
            return Ok(0);
        }
        print_decisions(&found, args.json, &Columns::fit(&found), true)?;
        if more && !args.json {
            eprintln!("(older decisions match too: raise --limit or narrow the filters)");
        }
        Ok(0)
    })
}

/// Column widths of the decision table: at least the defaults, wider for what the first page holds.
struct Columns([usize; 7]);

const DECISION_HEADERS: [&str; 8] = ["TIME", "SESSION", "USER", "ROLE", "KIND", "DEC", "RULE", "WHAT"];

fn decision_row(d: &pb::Decision) -> [String; 8] {
    let command = || {
        if d.argv.is_empty() {
            d.executable.clone()
        } else {
            d.argv.join(" ")
        }
    };
    let what = match &d.detail {
        Some(Detail::Destination(dest)) => {
            format!("{}:{}/{}", dest.address, dest.port, dest.protocol)
        }
        Some(Detail::UnixSocket(u)) => format!("unix:{} ({})", u.path, command()),
        Some(Detail::Guard(g)) => match &g.file {
            Some(file) => format!("{} {file} ({})", g.operation, command()),
            None => format!("{} target={} ({})", g.operation, g.target_pid.unwrap_or(0), command()),
        },
        Some(Detail::EventsLost(l)) => format!("{} events lost ({} in all); the kernel enforced them", l.count, l.total),
        Some(Detail::Approval(a)) => format!("{} {} ({})", a.event, a.request_id, command()),
        Some(Detail::RawSocket(r)) => format!("{}/{}/{} ({})", r.family, r.socket_type, r.protocol, command()),
        Some(Detail::Exec(_)) | Some(Detail::Revocation(_)) | None => command(),
    };
    let rule = d.rule.clone().unwrap_or_else(|| if d.decision == "deny" { d.reason.clone() } else { "-".into() });
    [short_time(&d.time), d.session_id.clone(), d.user.clone(), d.role.clone(), d.kind.clone(), d.decision.clone(), rule, what]
}

impl Columns {
    fn fit(list: &[pb::Decision]) -> Columns {
        let mut w = [24, 16, 8, 12, 7, 5, 14];
        for d in list {
            for (i, cell) in decision_row(d).iter().take(7).enumerate() {
                w[i] = w[i].max(cell.chars().count());
            }
        }
        Columns(w)
    }

    fn line(&self, cells: &[String]) -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i < 7 {
                out.push_str(&format!("{cell:<w$}  ", w = self.0[i]));
            } else {
                out.push_str(cell);
            }
        }
        out.trim_end().to_string()
    }
}

fn print_decisions(list: &[pb::Decision], json: bool, columns: &Columns, header: bool) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        for d in list {
            writeln!(out, "{}", serde_json::to_string(d)?)?;
        }
        return Ok(out.flush()?);
    }
    if header {
        writeln!(out, "{}", columns.line(&DECISION_HEADERS.map(str::to_string)))?;
    }
    for d in list {
        writeln!(out, "{}", columns.line(&decision_row(d)))?;
    }
    Ok(out.flush()?)
}

// ---- policy show / reload ----------------------------------------------------

pub fn policy_show(api: &ApiTarget, role: Option<String>, json: bool) -> Result<i32> {
    let p = with_client(api, async |mut c| {
        Ok(c.get_effective_policy(pb::GetEffectivePolicyRequest { role: role.unwrap_or_default() }).await.map_err(status_error)?.into_inner())
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(0);
    }
    println!("role {} (policy {}, generation {})", p.role, p.policy_version, p.generation);
    println!("policies: {}", if p.policies.is_empty() { "(none: nothing is blocked)".to_string() } else { p.policies.join(", ") });
    println!("blocked commands ({}):", p.blocked_commands.len());
    for r in &p.blocked_commands {
        println!("  {:<40} [{}]", r.command.join(" "), r.policy);
    }
    if !p.approval_commands.is_empty() {
        println!("commands that need approval ({}):", p.approval_commands.len());
        for r in &p.approval_commands {
            println!("  {:<40} [{}]", r.command.join(" "), r.policy);
        }
    }
    let ports = |ports: &[u32]| {
        if ports.is_empty() {
            "any port".to_string()
        } else {
            ports.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    println!("egress default: {}", if p.egress_default == "deny" { "deny (only the allowed destinations below are reachable)" } else { "allow" });
    println!("denied egress ({}):", p.denied_egress.len() + p.hostname_rules.iter().filter(|h| !h.allow).count());
    for r in &p.denied_egress {
        println!("  {:<40} {:<12} [{}]", r.destination, ports(&r.ports), r.policy);
    }
    let hosts = |allow: bool| p.hostname_rules.iter().filter(move |h| h.allow == allow);
    for h in hosts(false) {
        println!("  {:<40} {:<12} [{}] now {}", h.host, ports(&h.ports), h.policy, addresses(&h.addresses));
    }
    if !p.allowed_egress.is_empty() || hosts(true).next().is_some() {
        println!("allowed egress ({}):", p.allowed_egress.len() + hosts(true).count());
        for r in &p.allowed_egress {
            println!("  {:<40} {:<12} [{}]", r.destination, ports(&r.ports), r.policy);
        }
        for h in hosts(true) {
            println!("  {:<40} {:<12} [{}] now {}", h.host, ports(&h.ports), h.policy, addresses(&h.addresses));
        }
    }
    println!("Unix sockets refused ({}):", p.unix_socket_rules.len());
    for u in &p.unix_socket_rules {
        println!("  {:<40} [{}]", if u.prefix { format!("{}*", u.path) } else { u.path.clone() }, u.policy);
    }
    println!("protected files ({}):", p.protected_files.len());
    for f in &p.protected_files {
        let allowed = if f.allowed_programs.is_empty() { "no program".to_string() } else { f.allowed_programs.join(", ") };
        println!("  {:<40} opened only by {allowed} [{}]", f.path, f.policy);
    }
    println!("fileless exec: {}", if p.fileless_exec_allowed { "allowed" } else { "denied" });
    println!("dynamic loader run directly: {}", if p.direct_loader_allowed { "allowed" } else { "denied" });
    println!("files the session wrote, executed: {}", if p.session_written_exec_denied { "denied" } else { "allowed" });
    println!("raw IP and packet sockets: {}", if p.raw_sockets == "allow" { "allowed" } else { "denied" });
    Ok(0)
}

fn addresses(list: &[String]) -> String {
    if list.is_empty() {
        "(no address yet)".to_string()
    } else {
        list.join(", ")
    }
}

pub fn policy_reload(api: &ApiTarget) -> Result<i32> {
    let r = with_client(api, async |mut c| Ok(c.reload_policy(pb::ReloadPolicyRequest {}).await.map_err(status_error)?.into_inner()))?;
    println!("policy {} in force (generation {})", r.version, r.generation);
    Ok(0)
}

// ---- helpers -----------------------------------------------------------------

/// RFC 3339 to the millisecond: "2026-11-22T01:02:03.123Z".
pub fn short_time(t: &str) -> String {
    match (t.find('.'), t.ends_with('Z')) {
        (Some(dot), true) => format!("{}Z", &t[..(dot + 4).min(t.len() - 1)]),
        _ => t.to_string(),
    }
}

/// A list as JSON, or as a table with a line for no rows.
pub fn print_list<T: serde::Serialize>(items: &[T], json: bool, none: &str, headers: &[&str], row: impl Fn(&T) -> Vec<String>) -> Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
    } else if items.is_empty() {
        println!("{none}");
    } else {
        let rows: Vec<Vec<String>> = items.iter().map(row).collect();
        print_table(headers, &rows, &[]);
    }
    Ok(0)
}

/// Columns padded to their widest cell; `right` columns right-aligned; the last one free.
pub fn print_table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let parts: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else if right.contains(&i) {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// The API socket for a command: `--api-socket`, else `api.sock` beside `--socket`.
pub fn api_socket(socket: &Path, api_socket: Option<PathBuf>) -> PathBuf {
    api_socket.unwrap_or_else(|| crate::api::api_socket_beside(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_age() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        let now = crate::clock::now_unix_nanos();
        let ago = parse_time("2h").unwrap();
        assert!((now - ago - 7_200_000_000_000).abs() < 60_000_000_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("5w").is_err());
    }

    #[test]
    fn times_are_shortened_to_the_millisecond() {
        assert_eq!(short_time("2026-11-22T01:02:03.123456789Z"), "2026-11-22T01:02:03.123Z");
        assert_eq!(short_time("2026-11-22T01:02:03Z"), "2026-11-22T01:02:03Z");
    }
}
