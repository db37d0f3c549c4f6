//! Policies: parsing and validating policy and role documents, compiling them
//! into the kernel's tables, and reference matchers that define what those
//! tables must decide.
//!
//! Flow: [`load_dir`] or [`load_sources`] → [`LoadedPolicies`] →
//! [`compile`] → [`CompiledPolicy`] (installed by the daemon) and
//! [`matcher::TableMatcher`] (the kernel's walk, for tests and dry runs).

mod compile;
mod diag;
mod embedded;
mod load;
pub mod matcher;
mod model;

pub use compile::{
    compile, host_entries, unix_key, CommandRule, HostRuleCompiled, CompiledPolicy, CompiledRole, EgressRuleCompiled, IdAllocator,
    RuleKind, RuleRef, UnixRuleCompiled,
};
pub use diag::{Diagnostic, PolicyErrors};
pub use embedded::default_sources;
pub use load::{load_dir, load_sources, Format, LoadedPolicies, PolicySource, SourceKind};
pub use model::{
    parse_hostname, Cidr, CommandPattern, Egress, EgressDefault, EgressRule, HostRule, Id, Policy, Role, Status, UnixRule, MAX_COMMAND_WORDS,
    MAX_ID_LEN, MAX_UNIX_PATTERN_LEN, MAX_WORD_LEN,
};
// guard
pub use model::{default_protected_files, HomePattern, ProgramName, ProtectedFile, MAX_PROTECTED_DEPTH};
