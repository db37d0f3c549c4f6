//! The web UI's passwords: argon2id with the crate's default parameters
//! (the OWASP minimum), kept as PHC strings so that the parameters travel
//! with each hash and can be raised later without breaking old ones.

use anyhow::{anyhow, bail, Result};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// Shorter passwords are refused: length is what resists guessing.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer ones are refused too: no one types more, and it bounds the work.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why `password` cannot be used, if it cannot.
pub fn check(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        bail!("a password needs at least {MIN_PASSWORD_CHARS} characters; this one has {chars}");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("a password has at most {MAX_PASSWORD_BYTES} bytes; this one has {}", password.len());
    }
    Ok(())
}

/// The PHC string ("$argon2id$v=19$...") to store for `password`, with a
/// new random salt. Slow on purpose (tens of milliseconds): call it off
/// the async threads.
pub fn hash(password: &str) -> Result<String> {
    check(password)?;
    let hashed = Argon2::default().hash_password(password.as_bytes()).map_err(|e| anyhow!("hash the password: {e}"))?;
    Ok(hashed.to_string())
}

/// Whether `password` is the one `phc` was made from. A hash that does not
/// parse (an OIDC user's empty one, say) matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Whether `password` matches `phc`. With no hash to check (an unknown,
/// disabled or OIDC user) it does the same work against a hash made once
/// and answers false, so a sign-in's timing does not tell which usernames
/// exist.
pub fn verify_user(password: &str, phc: Option<&str>) -> bool {
    static STAND_IN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash("the hash of no one's password").unwrap_or_default());
    match phc {
        Some(phc) => verify(password, phc),
        None => {
            verify(password, &STAND_IN);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let a = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        let b = hash("correct horse battery").unwrap();
        assert_ne!(a, b, "a new salt each time");
        assert!(verify("correct horse battery", &a) && verify("correct horse battery", &b));
        assert!(!verify("correct horse batterz", &a));
        assert!(!verify("", &a));
    }

    #[test]
    fn short_or_huge_passwords_are_refused() {
        let short = hash("elevenchars").unwrap_err().to_string();
        assert!(short.contains("at least 12") && short.contains("11"), "{short}");
        // Characters, not bytes: twelve accented letters are enough.
        assert!(check(&"é".repeat(12)).is_ok());
        assert!(check(&"é".repeat(11)).is_err());
        assert!(check(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn a_malformed_hash_matches_nothing_and_never_panics() {
        for phc in ["", "plain", "$argon2id$", "$argon2id$v=19$m=1,t=1,p=1$$", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$!!!", "$md5$x$y"] {
            assert!(!verify("correct horse battery", phc), "{phc:?}");
        }
    }
}
