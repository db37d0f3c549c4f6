//! How large a policy's parts may be: what the kernel tables and the audit
//! records can hold.

/// Longest id accepted, so ids fit in audit records and file names.
pub const MAX_ID_LEN: usize = 64;
/// Most words (program included) a blocked command may have; keeps trie walks short.
pub const MAX_COMMAND_WORDS: usize = 8;
/// Longest word accepted; the kernel hashes at most this many bytes per word.
pub const MAX_WORD_LEN: usize = 255;
