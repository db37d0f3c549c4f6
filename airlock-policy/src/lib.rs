//! Airlock policies: the model (policy and role documents, each field
//! validated as it is parsed), loading with `FILE:LINE:COL: FIELD: MESSAGE`
//! diagnostics, compilation into the kernel's tables as one typed value
//! ([`PolicyTables`]), and the reference matchers that define what those
//! tables must decide.
//!
//! Used by the agent (which installs the tables), and by every tool that
//! must judge a policy the way the kernel does: `policy check`, the gateway's
//! validation, and dry runs.
//!
//! Flow: [`load_dir`] or [`load_sources`] → [`LoadedPolicies`] →
//! [`compile`] → [`CompiledPolicy`] (its [`PolicyTables`] go into the kernel)
//! and [`matcher::TableMatcher`] (the kernel's walk, for tests and dry runs).

mod bundle;
mod compile;
mod diag;
mod egress;
mod embedded;
mod exec_limits;
mod launch_forms;
mod load;
pub mod matcher;
mod model;
mod tables;

pub use bundle::{bundle_from_dir, bundle_path, sources_from_bundle};
pub use compile::{
    compile, compile_with_aliases, CommandRule, CompiledPolicy, CompiledRole, EgressRuleCompiled, FileRuleCompiled, HostRuleCompiled, IdAllocator,
    RuleKind, RuleRef, UnixRuleCompiled,
};
pub use diag::{Diagnostic, PolicyErrors};
pub use egress::{host_entries, unix_key};
pub use embedded::default_sources;
pub use exec_limits::LimitRuleCompiled;
pub use launch_forms::{ProgramAliases, LAUNCHERS, SHIPPED_PYTHON_MODULES};
pub use load::{load_dir, load_sources, read_dir_sources, Format, LoadedPolicies, PolicySource, SourceKind};
pub use model::{
    default_protected_files, gcra_admit, parse_hostname, Cidr, CommandPattern, Egress, EgressDefault, EgressRule, HomePattern,
    AliasedProgram, ProgramForms, ProgramFormsMap, PythonModule, HostRule, Id, LimitMap, LimitPattern, Policy, ProgramName, ProtectedFile, RateLimit, RawSockets, Role, Status, TimeWindow, UnixRule, MAX_COMMAND_WORDS, MAX_ID_LEN, MAX_PROTECTED_DEPTH,
    MAX_UNIX_PATTERN_LEN, MAX_WORD_LEN,
};
pub use tables::{PolicyTables, RawEntry, Table};
