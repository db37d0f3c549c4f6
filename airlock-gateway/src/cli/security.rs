//! `airlock-gateway security`: what the detectors found, the blocks the
//! findings placed (acknowledged, lifted), and the detector settings.

use airlock_api::gateway::v1::{
    FleetBlockActionRequest, GetSecuritySettingsRequest, ListFleetBlocksRequest, ListFleetFindingsRequest, SecuritySettingsHistoryRequest,
    SecuritySettingsVersion, SetSecuritySettingsRequest,
};
use airlock_api::v1::{SecurityBlock, SecurityFinding};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

use super::client::connect;
use super::commands::status;
use super::print::{ago, json_or, time};
use super::Conn;
use crate::security::values_text;

#[derive(Subcommand)]
pub enum SecurityCommand {
    /// Findings, newest first.
    Findings {
        /// At most this many (the newest; at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Blocks, newest first.
    Blocks {
        /// active, acknowledged, lifted or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Record that you reviewed a block (approver or admin); it stays in force.
    Ack {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// End a block now, on every agent of the org (admin).
    Lift {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The detector settings: show, set FILE (TOML or JSON), history.
    #[command(subcommand)]
    Settings(SettingsCommand),
}

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// The settings in force (or --version N).
    Show {
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make FILE the org's next settings version (admin).
    Set {
        file: PathBuf,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    History {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: SecurityCommand) -> Result<()> {
    match command {
        SecurityCommand::Findings { limit, conn } => {
            let list = connect(&conn).await?.list_findings(ListFleetFindingsRequest { org: org(&conn), limit }).await.map_err(status)?.into_inner();
            json_or(conn.json, &list, || findings(&list.findings))
        }
        SecurityCommand::Blocks { status: wanted, limit, conn } => {
            let ask = ListFleetBlocksRequest { org: org(&conn), status: wanted.unwrap_or_default(), limit };
            let list = connect(&conn).await?.list_blocks(ask).await.map_err(status)?.into_inner();
            json_or(conn.json, &list, || list.blocks.iter().for_each(block))
        }
        SecurityCommand::Ack { id, reason, conn } => {
            let b = connect(&conn).await?.acknowledge_block(FleetBlockActionRequest { org: org(&conn), id, reason }).await.map_err(status)?.into_inner();
            json_or(conn.json, &b, || block(&b))
        }
        SecurityCommand::Lift { id, reason, conn } => {
            let b = connect(&conn).await?.lift_block(FleetBlockActionRequest { org: org(&conn), id, reason }).await.map_err(status)?.into_inner();
            json_or(conn.json, &b, || block(&b))
        }
        SecurityCommand::Settings(SettingsCommand::Show { version, conn }) => {
            let ask = GetSecuritySettingsRequest { org: org(&conn), version: version.unwrap_or(0) };
            let v = connect(&conn).await?.get_security_settings(ask).await.map_err(status)?.into_inner();
            json_or(conn.json, &v, || {
                header(&v);
                println!("{}", v.document);
            })
        }
        SecurityCommand::Settings(SettingsCommand::Set { file, comment, conn }) => {
            let document = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
            let ask = SetSecuritySettingsRequest { org: org(&conn), document, comment };
            let v = connect(&conn).await?.set_security_settings(ask).await.map_err(status)?.into_inner();
            json_or(conn.json, &v, || header(&v))
        }
        SecurityCommand::Settings(SettingsCommand::History { conn }) => {
            let h = connect(&conn).await?.security_settings_history(SecuritySettingsHistoryRequest { org: org(&conn) }).await.map_err(status)?.into_inner();
            json_or(conn.json, &h, || {
                if h.versions.is_empty() {
                    println!("no security settings were set: the defaults are in force");
                }
                h.versions.iter().for_each(header);
            })
        }
    }
}

fn org(conn: &Conn) -> String {
    conn.org.clone().unwrap_or_default()
}

fn header(v: &SecuritySettingsVersion) {
    if v.version == 0 {
        println!("org {}: no settings were set; the defaults are in force", v.org);
        return;
    }
    let comment = if v.comment.is_empty() { String::new() } else { format!(": {}", v.comment) };
    println!("org {} security settings version {} by {} at {}{comment}", v.org, v.version, v.author, time(v.created_unix_nanos));
}

fn findings(list: &[SecurityFinding]) {
    println!("{:<21} {:<9} {:<20} {:<28} {:<10} {:<21} VALUES", "ID", "SEVERITY", "RULE", "SUBJECT", "FOUND", "BLOCK");
    for f in list {
        let block = if f.block_id.is_empty() { "-" } else { f.block_id.as_str() };
        println!(
            "{:<21} {:<9} {:<20} {:<28} {:<10} {:<21} {}",
            f.id,
            f.severity,
            f.rule,
            format!("{} {}", f.subject_kind, f.subject),
            ago(f.created_unix_nanos),
            block,
            values_text(&f.values)
        );
    }
}

/// One block: who it is on, why (values against thresholds), its status and expiry.
fn block(b: &SecurityBlock) {
    println!("{} {} block on {} {}: {}", b.id, b.kind, b.subject_kind, b.subject, b.status);
    println!("  rule:      {} ({}): {}", b.rule, b.severity, values_text(&b.values));
    println!("  placed:    {}   expires: {}   finding: {}", time(b.created_unix_nanos), time(b.expires_unix_nanos), b.finding_id);
    if !b.acknowledged_by.is_empty() {
        println!("  acknowledged by {} at {}", b.acknowledged_by, time(b.acknowledged_unix_nanos));
    }
    if !b.lifted_by.is_empty() {
        println!("  lifted by {} at {}", b.lifted_by, time(b.lifted_unix_nanos));
    }
}
