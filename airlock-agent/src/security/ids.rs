//! Finding and block ids: a prefix and 16 hex digits of a random 64-bit
//! number, so ids from many hosts and the gateway do not collide.

pub fn new_block_id() -> String {
    format!("blk-{:016x}", crate::sessions::new_session_id())
}

pub fn new_finding_id() -> String {
    format!("fnd-{:016x}", crate::sessions::new_session_id())
}

/// The error says what a block id looks like.
pub fn check_block_id(id: &str) -> Result<&str, String> {
    let id = id.trim();
    match id.strip_prefix("blk-") {
        Some(hex) if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(id),
        _ => Err(format!("{id:?} is not a security block id (\"blk-\" and 16 hex digits)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_16_hex_digits_and_bad_ids_are_refused() {
        let id = new_block_id();
        assert_eq!(check_block_id(&id), Ok(id.as_str()));
        assert!(new_finding_id().starts_with("fnd-") && new_finding_id().len() == 20);
        assert_ne!(new_block_id(), new_block_id());
        for bad in ["", "blk-", "blk-xyz", "apr-00000000deadbeef", "blk-00000000deadbeef0"] {
            assert!(check_block_id(bad).unwrap_err().contains("blk-"), "{bad}");
        }
    }
}
