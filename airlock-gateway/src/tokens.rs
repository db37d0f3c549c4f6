//! API and join tokens: random secrets shown once; the gateway keeps only
//! their SHA-256, so a copy of its database grants nothing.

use std::fmt;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

/// What an API token may do. Each role can do what the ones after it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Approver,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Role> {
        match text {
            "admin" => Ok(Role::Admin),
            "approver" => Ok(Role::Approver),
            "viewer" => Ok(Role::Viewer),
            other => bail!("unknown role {other:?}: the roles are admin, approver and viewer"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two kinds of secret, told apart by their prefix so that a token
/// pasted in the wrong place gets a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Api,
    Join,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Api => "alk_api_",
            TokenKind::Join => "alk_join_",
        }
    }
}

/// A new secret: a prefix and 32 random bytes in hex.
pub fn generate(kind: TokenKind) -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the system's random source: {e}"))?;
    Ok(format!("{}{}", kind.prefix(), hex::encode(bytes)))
}

/// What the gateway stores and looks a presented token up by.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// Whether `secret` looks like a token of `kind` (a join token used as an API
/// token is refused before any lookup, with a message that says so).
pub fn check_kind(secret: &str, kind: TokenKind) -> Result<()> {
    let secret = secret.trim();
    if secret.starts_with(kind.prefix()) {
        return Ok(());
    }
    let other = match kind {
        TokenKind::Api => TokenKind::Join,
        TokenKind::Join => TokenKind::Api,
    };
    if secret.starts_with(other.prefix()) {
        bail!("this is {} token, not {} token", article(other), article(kind));
    }
    bail!("not an Airlock {} token (they start with {:?})", name(kind), kind.prefix())
}

fn name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Api => "API",
        TokenKind::Join => "join",
    }
}

fn article(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Api => "an API",
        TokenKind::Join => "a join",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hashed_and_told_apart_by_kind() {
        let a = generate(TokenKind::Api).unwrap();
        let b = generate(TokenKind::Api).unwrap();
        assert_ne!(a, b);
        assert_eq!(hash(&a), hash(&format!(" {a}\n")));
        assert_ne!(hash(&a), hash(&b));
        assert!(check_kind(&a, TokenKind::Api).is_ok());
        let join = generate(TokenKind::Join).unwrap();
        let err = check_kind(&join, TokenKind::Api).unwrap_err().to_string();
        assert!(err.contains("a join token, not an API token"), "{err}");
        assert!(check_kind("hunter2", TokenKind::Join).is_err());
        assert!(Role::Admin > Role::Approver && Role::Approver > Role::Viewer);
        assert_eq!(Role::parse("approver").unwrap(), Role::Approver);
        assert!(Role::parse("root").is_err());
    }
}
