//! `airlock-agent security`: the findings of this host's detectors and the
//! blocks in force here (its own, or the gateway's), a client of the daemon's
//! API. Root and the `airlock` group.

use airlock_api::client::status_error;
use airlock_api::security::values_text;
use airlock_api::v1 as pb;
use anyhow::Result;
use clap::Subcommand;

use crate::operator::{print_list, short_time, with_client, ApiConn, ApiTarget};

#[derive(Subcommand)]
pub enum SecurityCommand {
    /// What the detectors found, newest first.
    Findings {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    /// Blocks, newest first, each with its values against the thresholds.
    Blocks {
        /// active, acknowledged, lifted or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    /// Record that you reviewed a block; it stays in force.
    Ack {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
    /// End a block now, in the kernel too.
    Lift {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ApiConn,
    },
}

pub fn run(command: SecurityCommand) -> Result<i32> {
    match command {
        SecurityCommand::Findings { limit, json, conn } => findings(&conn.target(), limit, json),
        SecurityCommand::Blocks { status, json, conn } => blocks(&conn.target(), status.unwrap_or_default(), json),
        SecurityCommand::Ack { id, reason, json, conn } => act(&conn.target(), id, false, reason, json),
        SecurityCommand::Lift { id, reason, json, conn } => act(&conn.target(), id, true, reason, json),
    }
}

fn time(ns: i64) -> String {
    short_time(&crate::clock::rfc3339_from_unix_nanos(ns.into()))
}


fn findings(api: &ApiTarget, limit: u32, json: bool) -> Result<i32> {
    let list = with_client(api, async |mut c| {
        Ok(c.list_findings(pb::ListFindingsRequest { limit }).await.map_err(status_error)?.into_inner().findings)
    })?;
    print_list(&list, json, "no security findings", &["ID", "FOUND", "RULE", "SEVERITY", "SUBJECT", "VALUES", "BLOCK"], |f| {
        vec![
            f.id.clone(),
            time(f.created_unix_nanos),
            f.rule.clone(),
            f.severity.clone(),
            format!("{} {}", f.subject_kind, f.subject),
            values_text(&f.values),
            if f.block_id.is_empty() { "-".into() } else { f.block_id.clone() },
        ]
    })
}

fn blocks(api: &ApiTarget, status: String, json: bool) -> Result<i32> {
    let list = with_client(api, async |mut c| {
        Ok(c.list_blocks(pb::ListBlocksRequest { status, limit: 1000 }).await.map_err(status_error)?.into_inner().blocks)
    })?;
    print_list(&list, json, "no security blocks", &["ID", "STATUS", "KIND", "SUBJECT", "RULE", "VALUES", "EXPIRES", "FROM"], |b| {
        vec![
            b.id.clone(),
            b.status.clone(),
            b.kind.clone(),
            format!("{} {}", b.subject_kind, b.subject),
            b.rule.clone(),
            values_text(&b.values),
            time(b.expires_unix_nanos),
            b.origin.clone(),
        ]
    })
}

fn act(api: &ApiTarget, id: String, lift: bool, reason: Option<String>, json: bool) -> Result<i32> {
    let ask = pb::BlockActionRequest { id, reason: reason.unwrap_or_default() };
    let block = with_client(api, async |mut c| {
        let answer = if lift { c.lift_block(ask).await } else { c.acknowledge_block(ask).await };
        Ok(answer.map_err(status_error)?.into_inner())
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&block)?);
        return Ok(0);
    }
    println!("security block {}: {}", block.id, block.status);
    println!("  subject:  {} {} ({} block)", block.subject_kind, block.subject, block.kind);
    println!("  rule:     {} ({}): {}", block.rule, block.severity, block.summary);
    println!("  values:   {}", values_text(&block.values));
    println!("  placed:   {}; expires {}", time(block.created_unix_nanos), time(block.expires_unix_nanos));
    if !block.acknowledged_by.is_empty() {
        println!("  reviewed: {} by {}", time(block.acknowledged_unix_nanos), block.acknowledged_by);
    }
    if !block.lifted_by.is_empty() {
        println!("  lifted:   {} by {}", time(block.lifted_unix_nanos), block.lifted_by);
    }
    Ok(0)
}
