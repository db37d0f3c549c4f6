//! Request ids: "apr-" and 16 hex digits, a random 64-bit number the kernel's
//! grants carry back in the events of the execs they allow.

const PREFIX: &str = "apr-";

pub fn format_request_id(number: u64) -> String {
    format!("{PREFIX}{number:016x}")
}

/// The number in a request id; the error says what a request id looks like.
pub fn parse_request_id(id: &str) -> Result<u64, String> {
    let hex = id.trim().strip_prefix(PREFIX).filter(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    match hex.and_then(|h| u64::from_str_radix(h, 16).ok()).filter(|n| *n != 0) {
        Some(n) => Ok(n),
        None => Err(format!("{id:?} is not an approval request id (\"apr-\" and 16 hex digits)")),
    }
}

/// A fresh number no request of this host has.
pub fn new_request_number(taken: impl Fn(u64) -> bool) -> u64 {
    loop {
        let n = crate::sessions::new_session_id();
        if !taken(n) {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ids_say_what_an_id_is() {
        assert_eq!(parse_request_id(&format_request_id(0xdead_beef)), Ok(0xdead_beef));
        for bad in ["", "apr-", "apr-xyz", "apr-0000000000000000", "req-00000000deadbeef", "apr-00000000deadbeef0"] {
            let e = parse_request_id(bad).unwrap_err();
            assert!(e.contains("apr-") && e.contains("16 hex digits"), "{bad}: {e}");
        }
    }
}
