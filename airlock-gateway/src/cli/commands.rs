//! One function per CLI command: call the fleet API, print the answer (a
//! table, or JSON with --json).

use std::path::Path;

use airlock_api::gateway::v1::*;
use airlock_api::v1::{DecisionFilter, SessionState};
use anyhow::{Context, Result};
use tokio_stream::StreamExt;

use super::client::connect;
use super::print;
use super::Conn;

pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

fn org(conn: &Conn) -> String {
    conn.org.clone().unwrap_or_default()
}

pub async fn org_create(conn: &Conn, name: &str) -> Result<()> {
    let org = connect(conn).await?.create_org(CreateOrgRequest { name: name.into() }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &org, || println!("org {} created", org.name))
}

pub async fn org_list(conn: &Conn) -> Result<()> {
    let list = connect(conn).await?.list_orgs(ListOrgsRequest {}).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &list, || list.orgs.iter().for_each(|o| println!("{}", o.name)))
}

pub struct TokenSpec {
    pub role: String,
    pub join: bool,
    pub uses: Option<u32>,
    pub ttl: String,
    pub label: Option<String>,
}

pub async fn token_create(conn: &Conn, spec: TokenSpec) -> Result<()> {
    let ttl_seconds = if spec.join { parse_age(&spec.ttl).context("--ttl")? } else { 0 };
    let ask = CreateTokenRequest { org: org(conn), role: spec.role, join: spec.join, uses: spec.uses.unwrap_or(0), ttl_seconds, label: spec.label.unwrap_or_default() };
    let made = connect(conn).await?.create_token(ask).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &made, || {
        if made.join {
            let uses = if made.uses == 0 { "unlimited uses".to_string() } else { format!("{} use(s)", made.uses) };
            eprintln!("join token for org {} ({uses}, expires {}):", made.org, print::time(made.expires_unix_nanos));
        } else {
            eprintln!("{} token for org {}:", made.role, made.org);
        }
        println!("{}", made.token);
    })
}

pub async fn hosts(conn: &Conn) -> Result<()> {
    let list = connect(conn).await?.list_hosts(ListHostsRequest { org: org(conn) }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &list, || print::hosts(&list.hosts))
}

pub async fn host_revoke(conn: &Conn, host: &str) -> Result<()> {
    let h = connect(conn).await?.revoke_host(RevokeHostRequest { org: org(conn), host_id: host.into() }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &h, || println!("host {} revoked: the gateway refuses its certificate from now on", h.host_id))
}

fn read_dir_files(dir: &Path) -> Result<Vec<PolicyFile>> {
    let files = airlock_policy::bundle_from_dir(dir).map_err(|e| anyhow::anyhow!("{}:\n{e}", dir.display()))?;
    Ok(files.into_iter().map(|(path, content)| PolicyFile { path, content }).collect())
}

pub async fn policy_push(conn: &Conn, dir: &Path, comment: String) -> Result<()> {
    let files = read_dir_files(dir)?;
    let v = connect(conn).await?.push_policy(PushPolicyRequest { org: org(conn), files, comment }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &v, || {
        println!("org {}: policy version {} ({}) pushed; agents take it within seconds (see `airlock-gateway hosts`)", v.org, v.version, v.content_hash);
        let changed = v.diff.lines().filter(|l| l.starts_with("+++ ")).count();
        println!("{changed} file(s) changed; the diff: airlock-gateway policy show --version {}", v.version);
    })
}

pub async fn policy_history(conn: &Conn) -> Result<()> {
    let h = connect(conn).await?.policy_history(PolicyHistoryRequest { org: org(conn) }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &h, || print::history(&h.versions))
}

pub async fn policy_show(conn: &Conn, version: u64) -> Result<()> {
    let v = connect(conn).await?.get_policy(GetPolicyRequest { org: org(conn), version }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &v, || print::policy(&v))
}

pub async fn policy_rollback(conn: &Conn, version: u64, comment: String) -> Result<()> {
    let v = connect(conn).await?.rollback_policy(RollbackPolicyRequest { org: org(conn), version, comment }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &v, || println!("org {}: version {} has version {}'s content ({})", v.org, v.version, v.rollback_of, v.content_hash))
}

pub async fn policy_simulate(conn: &Conn, dir: &Path, since: &str) -> Result<()> {
    let files = read_dir_files(dir)?;
    let since_unix_nanos = parse_time(since).context("--since")?;
    let r = connect(conn).await?.simulate_policy(SimulatePolicyRequest { org: org(conn), files, since_unix_nanos }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &r, || print::simulation(&r))
}

pub async fn decisions(conn: &Conn, filter: DecisionFilter, host: String, limit: usize, follow: bool) -> Result<()> {
    let mut client = connect(conn).await?;
    let mut found = Vec::new();
    let mut page_token = String::new();
    while found.len() < limit {
        let page_size = (limit - found.len()).min(1000) as u32;
        let ask = QueryDecisionsRequest { org: org(conn), filter: Some(filter.clone()), host: host.clone(), page_size, page_token };
        let page = client.query_decisions(ask).await.map_err(status)?.into_inner();
        found.extend(page.decisions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    found.reverse();
    print::decisions(&found, conn.json, true)?;
    if !follow {
        return Ok(());
    }
    let mut tail = client.stream_decisions(StreamDecisionsRequest { org: org(conn), filter: Some(filter), host }).await.map_err(status)?.into_inner();
    while let Some(next) = tail.next().await {
        print::decisions(&[next.map_err(status)?], conn.json, false)?;
    }
    Ok(())
}

pub async fn sessions(conn: &Conn, host: String, state: Option<String>) -> Result<()> {
    let state = match state.as_deref() {
        None => SessionState::Unspecified,
        Some(s) => SessionState::from_str_name(&format!("SESSION_STATE_{}", s.to_ascii_uppercase()))
            .with_context(|| format!("--state {s:?}: ready, running, exited or revoked"))?,
    };
    let list = connect(conn).await?.list_sessions(ListSessionsRequest { org: org(conn), host, state: state as i32 }).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &list, || print::sessions(&list.sessions))
}

pub async fn session_revoke(conn: &Conn, host: &str, session: &str, reason: String) -> Result<()> {
    let ask = RevokeSessionRequest { org: org(conn), host: host.into(), session_id: session.into(), reason };
    let r = connect(conn).await?.revoke_session(ask).await.map_err(status)?.into_inner();
    print::json_or(conn.json, &r, || {
        let killed = r.result.as_ref().map(|x| x.killed).unwrap_or(0);
        println!("session {session} on {host} revoked: {killed} process(es) killed; the kernel denies it from now on");
    })
}

pub use crate::instants::{parse_age, parse_time};
