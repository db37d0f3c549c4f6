//! `airlock-gateway user` (the web UI's users) and `token list|revoke`.
//! Passwords come from a file or standard input, never from the command
//! line, where other users of the machine could read them.

use std::io::Read;
use std::path::{Path, PathBuf};

use airlock_api::gateway::v1::{
    CreateUserRequest, ListTokensRequest, ListUsersRequest, RevokeTokenRequest, TokenInfo, UpdateUserRequest, User,
};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::client::connect;
use super::commands::status;
use super::print::{ago, json_or, time};
use super::Conn;

#[derive(Subcommand)]
pub enum UserCommand {
    /// A new web UI user that signs in with a password (admin).
    Create {
        /// 1 to 64 of A-Z a-z 0-9 . _ @ - ; unique across the installation.
        #[arg(long)]
        username: String,
        /// viewer, approver or admin.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// The org's users (admin).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a user's role, disable or enable it, or set a new password
    /// (admin). Disabling or a new password signs it out everywhere.
    Update {
        name: String,
        /// viewer, approver or admin.
        #[arg(long)]
        role: Option<String>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        password: PasswordArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Where a password is read from (at least 12 characters; one trailing newline is dropped).
#[derive(Args)]
#[group(multiple = false)]
pub struct PasswordArgs {
    /// Read the password from FILE.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    /// The password, if one was given.
    fn read(&self) -> Result<Option<String>> {
        let text = if let Some(path) = &self.password_file {
            read_file(path)?
        } else if self.password_stdin {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("read the password from standard input")?;
            text
        } else {
            return Ok(None);
        };
        let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        if password.is_empty() {
            bail!("the password is empty");
        }
        Ok(Some(password.to_string()))
    }
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read the password from {}", path.display()))
}

fn org(conn: &Conn) -> String {
    conn.org.clone().unwrap_or_default()
}

pub async fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create { username, role, password, conn } => {
            let password = password.read()?.context("give the new user's password with --password-file FILE or --password-stdin")?;
            let ask = CreateUserRequest { org: org(&conn), username, role, password, oidc_subject: String::new() };
            let u = connect(&conn).await?.create_user(ask).await.map_err(status)?.into_inner();
            json_or(conn.json, &u, || println!("user {} created in org {} ({})", u.username, u.org, u.role))
        }
        UserCommand::List { conn } => {
            let list = connect(&conn).await?.list_users(ListUsersRequest { org: org(&conn) }).await.map_err(status)?.into_inner();
            json_or(conn.json, &list, || print_users(&list.users))
        }
        UserCommand::Update { name, role, disable, enable, password, conn } => {
            let password = password.read()?;
            let disabled = if disable { Some(true) } else if enable { Some(false) } else { None };
            if role.is_none() && disabled.is_none() && password.is_none() {
                bail!("nothing to change: give --role, --disable, --enable, --password-file or --password-stdin");
            }
            let ask = UpdateUserRequest { org: org(&conn), username: name, role: role.unwrap_or_default(), disabled, password: password.unwrap_or_default() };
            let u = connect(&conn).await?.update_user(ask).await.map_err(status)?.into_inner();
            json_or(conn.json, &u, || println!("user {} in org {}: {}, {}", u.username, u.org, u.role, if u.disabled { "disabled" } else { "enabled" }))
        }
    }
}

pub async fn token_list(conn: &Conn) -> Result<()> {
    let list = connect(conn).await?.list_tokens(ListTokensRequest { org: org(conn) }).await.map_err(status)?.into_inner();
    json_or(conn.json, &list, || print_tokens(&list.tokens))
}

pub async fn token_revoke(conn: &Conn, id: i64) -> Result<()> {
    let t = connect(conn).await?.revoke_token(RevokeTokenRequest { org: org(conn), id }).await.map_err(status)?.into_inner();
    json_or(conn.json, &t, || println!("token {} ({}) of org {} revoked: it is refused from now on", t.id, t.label, t.org))
}

fn print_users(users: &[User]) {
    println!("{:<32} {:<9} {:<9} {:<9} {:<20} LAST LOGIN", "USERNAME", "ROLE", "STATE", "SIGN-IN", "CREATED");
    for u in users {
        let state = if u.disabled { "disabled" } else { "enabled" };
        let sign_in = if u.oidc_subject.is_empty() { "password" } else { "oidc" };
        let created = time(u.created_unix_nanos);
        println!("{:<32} {:<9} {:<9} {:<9} {:<20} {}", u.username, u.role, state, sign_in, created.get(..19).unwrap_or(&created), ago(u.last_login_unix_nanos));
    }
}

fn print_tokens(tokens: &[TokenInfo]) {
    println!("{:<6} {:<5} {:<9} {:<9} {:<10} {:<20} {:<20} LABEL", "ID", "KIND", "ROLE", "STATE", "USES LEFT", "EXPIRES", "CREATED");
    for t in tokens {
        let now = crate::now_ns();
        let state = if t.revoked {
            "revoked"
        } else if t.expires_unix_nanos != 0 && t.expires_unix_nanos <= now {
            "expired"
        } else if t.uses_left == 0 {
            "used up"
        } else {
            "active"
        };
        let uses = if t.uses_left < 0 { "unlimited".to_string() } else { t.uses_left.to_string() };
        let role = if t.role.is_empty() { "-" } else { t.role.as_str() };
        let (expires, created) = (time(t.expires_unix_nanos), time(t.created_unix_nanos));
        println!(
            "{:<6} {:<5} {:<9} {:<9} {:<10} {:<20} {:<20} {}",
            t.id,
            t.kind,
            role,
            state,
            uses,
            expires.get(..19).unwrap_or(&expires),
            created.get(..19).unwrap_or(&created),
            t.label
        );
    }
}
