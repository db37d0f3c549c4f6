//! The Rust mirror of the kernel ABI must match the compiled object's BTF.

use airlock_common::abi::*;
use libbpf_rs::btf::types::{Enum, Struct};
use libbpf_rs::btf::HasSize;
use libbpf_rs::btf::Btf;
use std::mem::{offset_of, size_of};

/// Checks one struct's size and the offsets of the named members against the BTF.
fn check(btf: &Btf<'_>, c_name: &str, rust_size: usize, fields: &[(&str, usize)]) {
    let ty: Struct<'_> = btf
        .type_by_name(c_name)
        .unwrap_or_else(|| panic!("{c_name} is not in the BPF object's BTF"));
    assert_eq!(ty.size(), rust_size, "size of {c_name}");
    for (name, offset) in fields {
        let member = ty
            .iter()
            .find(|m| m.name.and_then(|n| n.to_str()) == Some(*name))
            .unwrap_or_else(|| panic!("{c_name} has no member {name} in BTF"));
        let bits = match member.attr {
            libbpf_rs::btf::types::MemberAttr::Normal { offset } => offset,
            libbpf_rs::btf::types::MemberAttr::BitField { offset, .. } => offset,
        };
        assert_eq!(bits as usize, offset * 8, "offset of {c_name}.{name}");
    }
}

macro_rules! layout {
    ($btf:expr, $c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        check($btf, $c, size_of::<$t>(), &[$((stringify!($f), offset_of!($t, $f))),*])
    };
}

#[test]
fn abi_matches_compiled_object_btf() {
    let btf = Btf::from_raw("airlock", airlock_ebpf::AIRLOCK_OBJECT)
        .expect("parse BTF of the BPF object")
        .expect("the BPF object carries BTF");
    let btf = &btf;
    layout!(btf, "airlock_proc_tag", ProcTag, [session_id, role_slot, flags]);
    layout!(btf, "airlock_role_set", RoleSet, [set_id, flags, approval_set_id, limit_set_id, every_exec_rule, pad]);
    layout!(btf, "airlock_rule_limit", RuleLimit, [interval_ns, burst_ns, flags, pad]);
    layout!(btf, "airlock_rate_key", RateKey, [session_id, rule_id, pad]);
    layout!(btf, "airlock_rate_value", RateValue, [tat_ns]);
    layout!(btf, "airlock_session_block", SessionBlock, [kind, block_number]);
    layout!(btf, "airlock_grant_key", GrantKey, [session_id, kind, rule_id, argv_hash, exe_identity]);
    layout!(btf, "airlock_grant_value", GrantValue, [expires_ns, request]);
    layout!(btf, "airlock_written_key", WrittenKey, [session_id, dev, ino]);
    layout!(btf, "airlock_program_key", ProgramKey, [set_id, pad, name_hash]);
    layout!(btf, "airlock_program_value", ProgramValue, [root_node, block_all_rule]);
    layout!(btf, "airlock_trie_key", TrieKey, [node, pad, word_hash]);
    layout!(btf, "airlock_trie_value", TrieValue, [next_node, rule_id]);
    layout!(btf, "airlock_egress4_key", Egress4Key, [prefixlen, set_id, port, addr, pad]);
    layout!(btf, "airlock_egress6_key", Egress6Key, [prefixlen, set_id, port, addr, pad]);
    layout!(btf, "airlock_egress_value", EgressValue, [rule_id, pad]);
    layout!(btf, "airlock_counters", Counters, [decisions, denies, ringbuf_drops, tag_failures, tamper]);
    layout!(btf, "airlock_config", Config, [backend, policy_generation, daemon_tgid, pad, daemon_pgid, guard_pad]);
    layout!(
        btf,
        "airlock_event_header",
        EventHeader,
        [kind, decision, reason, rule_id, session_id, ktime_ns, role_slot, policy_generation, pid, tgid, ppid, uid, gid, backend, flags, pad, comm]
    );
    layout!(
        btf,
        "airlock_exec_event",
        ExecEvent,
        [hdr, match_via, argc, argv_len, filename_len, exe_len, cwd_len, argv_hash, exe_identity, grant_request, filename, exe, cwd, argv]
    );
    layout!(btf, "airlock_net_event", NetEvent, [hdr, family, port, protocol, addr]);
    layout!(btf, "airlock_inode_key", InodeKey, [dev, pad, ino]);
    layout!(btf, "airlock_inode_value", InodeValue, [class_hash]);
    layout!(btf, "airlock_file_rule_key", FileRuleKey, [set_id, pad, class_hash]);
    layout!(btf, "airlock_file_rule_value", FileRuleValue, [rule_id, pad]);
    layout!(btf, "airlock_file_allow_key", FileAllowKey, [set_id, pad, class_hash, name_hash]);
    layout!(
        btf,
        "airlock_guard_event",
        GuardEvent,
        [hdr, op, target, arg, dev, path_len, ino, exe_uid, name_len, name, path]
    );
    layout!(btf, "airlock_identity_key", IdentityKey, [kind, pad, hash]);
    layout!(btf, "airlock_identity_value", IdentityValue, [flags, nnames, names]);
    // Unix socket rules.
    layout!(btf, "airlock_unix_key", UnixKey, [prefixlen, set_id, path]);
    layout!(btf, "airlock_unix_event", UnixEvent, [hdr, path_len, sock_type, path]);
    layout!(btf, "airlock_raw_socket_event", RawSocketEvent, [hdr, family, sock_type, protocol, pad]);
}

/// Every numeric constant of airlock_abi.h, C name first, with its Rust mirror.
/// A constant added to the header fails the test until it is listed here.
fn rust_constants() -> Vec<(&'static str, u64)> {
    vec![
        ("AIRLOCK_ARGV_MAX", ARGV_MAX as u64),
        ("AIRLOCK_MAX_WORDS", MAX_WORDS as u64),
        ("AIRLOCK_MAX_ACTIVE", MAX_ACTIVE as u64),
        ("AIRLOCK_PATH_MAX", PATH_MAX as u64),
        ("AIRLOCK_FILENAME_MAX", FILENAME_MAX as u64),
        ("AIRLOCK_PATH_DEPTH", PATH_DEPTH as u64),
        ("AIRLOCK_COMM_LEN", COMM_LEN as u64),
        ("AIRLOCK_MAX_ROLES", MAX_ROLES as u64),
        ("AIRLOCK_FNV_OFFSET", FNV_OFFSET),
        ("AIRLOCK_FNV_PRIME", FNV_PRIME),
        ("AIRLOCK_RUNPY_HASH", RUNPY_HASH),
        ("AIRLOCK_EVENT_EXEC", EVENT_EXEC as u64),
        ("AIRLOCK_EVENT_CONNECT", EVENT_CONNECT as u64),
        ("AIRLOCK_EVENT_SENDMSG", EVENT_SENDMSG as u64),
        ("AIRLOCK_EVENT_TAG_FAILURE", EVENT_TAG_FAILURE as u64),
        ("AIRLOCK_EVENT_TAMPER", EVENT_TAMPER as u64),
        ("AIRLOCK_EVENT_FILE_OPEN", EVENT_FILE_OPEN as u64),
        ("AIRLOCK_EVENT_UNIX_CONNECT", EVENT_UNIX_CONNECT as u64),
        ("AIRLOCK_EVENT_UNIX_SENDMSG", EVENT_UNIX_SENDMSG as u64),
        ("AIRLOCK_ALLOW", ALLOW as u64),
        ("AIRLOCK_DENY", DENY as u64),
        ("AIRLOCK_REASON_NONE", REASON_NONE as u64),
        ("AIRLOCK_REASON_RULE", REASON_RULE as u64),
        ("AIRLOCK_REASON_ARGV_TOO_LONG", REASON_ARGV_TOO_LONG as u64),
        ("AIRLOCK_REASON_MATCH_OVERFLOW", REASON_MATCH_OVERFLOW as u64),
        ("AIRLOCK_REASON_TAMPER_BPF", REASON_TAMPER_BPF as u64),
        ("AIRLOCK_REASON_TAMPER_SIGNAL", REASON_TAMPER_SIGNAL as u64),
        ("AIRLOCK_REASON_TAMPER_PTRACE", REASON_TAMPER_PTRACE as u64),
        ("AIRLOCK_REASON_TAMPER_KERNEL_CODE", REASON_TAMPER_KERNEL_CODE as u64),
        ("AIRLOCK_REASON_TAMPER_CONTROL_FS", REASON_TAMPER_CONTROL_FS as u64),
        ("AIRLOCK_REASON_PROTECTED_FILE", REASON_PROTECTED_FILE as u64),
        ("AIRLOCK_REASON_QUARANTINE", REASON_QUARANTINE as u64),
        ("AIRLOCK_REASON_ROLE_GONE", REASON_ROLE_GONE as u64),
        ("AIRLOCK_REASON_REVOKED", REASON_REVOKED as u64),
        ("AIRLOCK_REASON_FILELESS", REASON_FILELESS as u64),
        ("AIRLOCK_REASON_LOADER", REASON_LOADER as u64),
        ("AIRLOCK_REASON_APPROVAL_REQUIRED", REASON_APPROVAL_REQUIRED as u64),
        ("AIRLOCK_REASON_RATE_LIMITED", REASON_RATE_LIMITED as u64),
        ("AIRLOCK_REASON_OUTSIDE_TIME_WINDOW", REASON_OUTSIDE_TIME_WINDOW as u64),
        ("AIRLOCK_LIMIT_CLOSED", LIMIT_CLOSED as u64),
        ("AIRLOCK_REASON_SECURITY_BLOCK", REASON_SECURITY_BLOCK as u64),
        ("AIRLOCK_BLOCK_HARD", BLOCK_HARD as u64),
        ("AIRLOCK_BLOCK_SOFT", BLOCK_SOFT as u64),
        ("AIRLOCK_ROLE_SOFT_BLOCKED", ROLE_SOFT_BLOCKED as u64),
        ("AIRLOCK_ROLE_DENY_SESSION_WRITTEN", ROLE_DENY_SESSION_WRITTEN as u64),
        ("AIRLOCK_EVENT_RAW_SOCKET", EVENT_RAW_SOCKET as u64),
        ("AIRLOCK_REASON_RAW_SOCKET", REASON_RAW_SOCKET as u64),
        ("AIRLOCK_ROLE_ALLOW_RAW_SOCKETS", ROLE_ALLOW_RAW_SOCKETS as u64),
        ("AIRLOCK_REASON_SESSION_WRITTEN", REASON_SESSION_WRITTEN as u64),
        ("AIRLOCK_WRITTEN_MAX", WRITTEN_MAX as u64),
        ("AIRLOCK_FLAG_GRANTED", FLAG_GRANTED as u64),
        ("AIRLOCK_GRANT_ONCE", GRANT_ONCE as u64),
        ("AIRLOCK_GRANT_RULE", GRANT_RULE as u64),
        ("AIRLOCK_REASON_UNIX_PATH_UNCLEAR", REASON_UNIX_PATH_UNCLEAR as u64),
        ("AIRLOCK_REASON_EGRESS_DEFAULT", REASON_EGRESS_DEFAULT as u64),
        ("AIRLOCK_REASON_TAMPER_AIRLOCK_FILES", REASON_TAMPER_AIRLOCK_FILES as u64),
        ("AIRLOCK_BACKEND_COMPAT", BACKEND_COMPAT as u64),
        ("AIRLOCK_BACKEND_LSM", BACKEND_LSM as u64),
        ("AIRLOCK_FLAG_KILLED_AFTER", FLAG_KILLED_AFTER as u64),
        ("AIRLOCK_VIA_EXECUTABLE", VIA_EXECUTABLE as u64),
        ("AIRLOCK_VIA_ARGV0", VIA_ARGV0 as u64),
        ("AIRLOCK_VIA_SCRIPT", VIA_SCRIPT as u64),
        ("AIRLOCK_VIA_IDENTITY", VIA_IDENTITY as u64),
        ("AIRLOCK_VIA_INTERPRETER", VIA_INTERPRETER as u64),
        ("AIRLOCK_VIA_LOADED", VIA_LOADED as u64),
        ("AIRLOCK_FLAG_ARGV_TRUNCATED", FLAG_ARGV_TRUNCATED as u64),
        ("AIRLOCK_FLAG_PATH_TRUNCATED", FLAG_PATH_TRUNCATED as u64),
        ("AIRLOCK_FLAG_SCRIPT", FLAG_SCRIPT as u64),
        ("AIRLOCK_FLAG_EARLY_CHECK", FLAG_EARLY_CHECK as u64),
        ("AIRLOCK_FLAG_FILELESS", FLAG_FILELESS as u64),
        ("AIRLOCK_FLAG_LOADER", FLAG_LOADER as u64),
        ("AIRLOCK_FLAG_INTERPRETER", FLAG_INTERPRETER as u64),
        ("AIRLOCK_FLAG_IDENTITY", FLAG_IDENTITY as u64),
        ("AIRLOCK_FLAG_CONTENT_IS_NAME", FLAG_CONTENT_IS_NAME as u64),
        ("AIRLOCK_ROLE_DENY_ALL", ROLE_DENY_ALL as u64),
        ("AIRLOCK_ROLE_ALLOW_FILELESS", ROLE_ALLOW_FILELESS as u64),
        ("AIRLOCK_ROLE_ALLOW_LOADER", ROLE_ALLOW_LOADER as u64),
        ("AIRLOCK_FLAG_UNIX_RESOLVED", FLAG_UNIX_RESOLVED as u64),
        ("AIRLOCK_FLAG_UNIX_ABSTRACT", FLAG_UNIX_ABSTRACT as u64),
        ("AIRLOCK_ROLE_UNIX_RULES", ROLE_UNIX_RULES as u64),
        ("AIRLOCK_ROLE_EGRESS_DEFAULT_DENY", ROLE_EGRESS_DEFAULT_DENY as u64),
        ("AIRLOCK_UNIX_PATH_MAX", UNIX_PATH_MAX as u64),
        ("AIRLOCK_HEAD_LEN", HEAD_LEN as u64),
        ("AIRLOCK_IDENTITY_NAMES", IDENTITY_NAMES as u64),
        ("AIRLOCK_OPERAND_WORDS", OPERAND_WORDS as u64),
        ("AIRLOCK_IDKEY_NAME", IDKEY_NAME as u64),
        ("AIRLOCK_IDKEY_CONTENT", IDKEY_CONTENT as u64),
        ("AIRLOCK_IDKEY_SIZE", IDKEY_SIZE as u64),
        ("AIRLOCK_ID_INTERPRETER", ID_INTERPRETER as u64),
        ("AIRLOCK_ID_LOADER", ID_LOADER as u64),
        ("AIRLOCK_ID_PROGRAM", ID_PROGRAM as u64),
        ("AIRLOCK_OP_BPF", OP_BPF as u64),
        ("AIRLOCK_OP_KILL", OP_KILL as u64),
        ("AIRLOCK_OP_TKILL", OP_TKILL as u64),
        ("AIRLOCK_OP_TGKILL", OP_TGKILL as u64),
        ("AIRLOCK_OP_SIGQUEUE", OP_SIGQUEUE as u64),
        ("AIRLOCK_OP_PIDFD_SIGNAL", OP_PIDFD_SIGNAL as u64),
        ("AIRLOCK_OP_SIGIO", OP_SIGIO as u64),
        ("AIRLOCK_OP_PTRACE", OP_PTRACE as u64),
        ("AIRLOCK_OP_VM_WRITEV", OP_VM_WRITEV as u64),
        ("AIRLOCK_OP_VM_READV", OP_VM_READV as u64),
        ("AIRLOCK_OP_PIDFD_GETFD", OP_PIDFD_GETFD as u64),
        ("AIRLOCK_OP_INIT_MODULE", OP_INIT_MODULE as u64),
        ("AIRLOCK_OP_FINIT_MODULE", OP_FINIT_MODULE as u64),
        ("AIRLOCK_OP_MODULE_REQUEST", OP_MODULE_REQUEST as u64),
        ("AIRLOCK_OP_KEXEC", OP_KEXEC as u64),
        ("AIRLOCK_OP_KERNEL_READ_FILE", OP_KERNEL_READ_FILE as u64),
        ("AIRLOCK_OP_OPEN", OP_OPEN as u64),
        ("AIRLOCK_OP_UNLINK", OP_UNLINK as u64),
        ("AIRLOCK_OP_RENAME", OP_RENAME as u64),
        ("AIRLOCK_OP_RMDIR", OP_RMDIR as u64),
        ("AIRLOCK_OP_UMOUNT", OP_UMOUNT as u64),
        ("AIRLOCK_OP_CREATE", OP_CREATE as u64),
        ("AIRLOCK_OP_LINK", OP_LINK as u64),
        ("AIRLOCK_OP_TRUNCATE", OP_TRUNCATE as u64),
        ("AIRLOCK_CLASS_SELF", CLASS_SELF),
    ]
}

/// A numeric constant of the header: a `#define`, or an enum member (`enum_name` set).
#[derive(Debug)]
struct CConst {
    name: String,
    value: u64,
    enum_name: Option<String>,
}

/// The header without its comments (newlines kept, so `#define` lines stay lines).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    // The first comment opener left, block or line.
    while let Some(start) = [rest.find("/*"), rest.find("//")].into_iter().flatten().min() {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        if rest.starts_with("/*") {
            let end = rest.find("*/").expect("unterminated comment in the ABI header") + 2;
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            rest = &rest[end..];
        } else {
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(u64),
    Ident(String),
    Op(&'static str),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    const OPS: [&str; 12] = ["<<", ">>", "(", ")", "|", "&", "^", "~", "+", "-", "*", "/"];
    let mut tokens = Vec::new();
    let mut rest = expr.trim_start();
    while !rest.is_empty() {
        let c = rest.chars().next().unwrap_or_default();
        if c.is_ascii_digit() {
            let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
            let literal = rest[..end].trim_end_matches(['u', 'U', 'l', 'L']);
            let value = match literal.strip_prefix("0x").or_else(|| literal.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None if literal.len() > 1 && literal.starts_with('0') => u64::from_str_radix(&literal[1..], 8),
                None => literal.parse(),
            };
            tokens.push(Token::Num(value.map_err(|e| format!("bad number {}: {e}", &rest[..end]))?));
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            tokens.push(Token::Ident(rest[..end].to_string()));
            rest = &rest[end..];
        } else if let Some(op) = OPS.iter().copied().find(|op| rest.starts_with(op)) {
            tokens.push(Token::Op(op));
            rest = &rest[op.len()..];
        } else {
            return Err(format!("unexpected {c:?}"));
        }
        rest = rest.trim_start();
    }
    Ok(tokens)
}

/// Evaluates an integer constant expression of the kind the header uses:
/// literals (decimal, hex, octal, U/L suffixes), names of earlier constants,
/// parentheses, unary - and ~, and the binary operators * / + - << >> & ^ |.
fn eval(expr: &str, known: &[CConst]) -> Result<u64, String> {
    struct Parser<'a> {
        tokens: Vec<Token>,
        pos: usize,
        known: &'a [CConst],
    }
    impl Parser<'_> {
        fn peek_op(&self) -> Option<&'static str> {
            match self.tokens.get(self.pos) {
                Some(Token::Op(op)) => Some(op),
                _ => None,
            }
        }
        /// Binary operators by C precedence, loosest first.
        fn binary(&mut self, level: usize) -> Result<u64, String> {
            const LEVELS: [&[&str]; 6] = [&["|"], &["^"], &["&"], &["<<", ">>"], &["+", "-"], &["*", "/"]];
            if level == LEVELS.len() {
                return self.unary();
            }
            let mut value = self.binary(level + 1)?;
            while let Some(op) = self.peek_op().filter(|op| LEVELS[level].contains(op)) {
                self.pos += 1;
                let rhs = self.binary(level + 1)?;
                value = match op {
                    "|" => value | rhs,
                    "^" => value ^ rhs,
                    "&" => value & rhs,
                    "<<" => value.checked_shl(rhs as u32).ok_or("shift out of range")?,
                    ">>" => value.checked_shr(rhs as u32).ok_or("shift out of range")?,
                    "+" => value.wrapping_add(rhs),
                    "-" => value.wrapping_sub(rhs),
                    "*" => value.wrapping_mul(rhs),
                    _ => value.checked_div(rhs).ok_or("division by zero")?,
                };
            }
            Ok(value)
        }
        fn unary(&mut self) -> Result<u64, String> {
            let token = self.tokens.get(self.pos).cloned().ok_or("expression ends early")?;
            self.pos += 1;
            match token {
                Token::Num(n) => Ok(n),
                Token::Ident(name) => self
                    .known
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| c.value)
                    .ok_or_else(|| format!("{name} is not a constant defined above it")),
                Token::Op("-") => Ok(self.unary()?.wrapping_neg()),
                Token::Op("~") => Ok(!self.unary()?),
                Token::Op("(") => {
                    let value = self.binary(0)?;
                    if self.peek_op() != Some(")") {
                        return Err("unbalanced parentheses (or a cast)".into());
                    }
                    self.pos += 1;
                    Ok(value)
                }
                Token::Op(op) => Err(format!("unexpected {op}")),
            }
        }
    }
    let mut parser = Parser { tokens: tokenize(expr)?, pos: 0, known };
    let value = parser.binary(0)?;
    if parser.pos != parser.tokens.len() {
        return Err("trailing tokens".into());
    }
    Ok(value)
}

/// Every `#define NAME value` and every enum member of the header, in order.
/// Panics on a definition it cannot evaluate, so none slips past unchecked.
fn header_constants(header: &str) -> Vec<CConst> {
    let text = strip_comments(header);
    let mut consts: Vec<CConst> = Vec::new();
    let mut code = String::new();
    for line in text.lines() {
        let Some(directive) = line.trim_start().strip_prefix('#') else {
            code.push_str(line);
            code.push('\n');
            continue;
        };
        let Some(define) = directive.trim_start().strip_prefix("define") else {
            continue;
        };
        let define = define.trim();
        let name_end = define.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(define.len());
        let (name, value) = define.split_at(name_end);
        assert!(!value.starts_with('('), "#define {name}(...): the ABI header holds no function-like macros");
        if value.trim().is_empty() {
            continue; // the include guard
        }
        let value = eval(value, &consts).unwrap_or_else(|e| panic!("#define {name} {}: {e}", value.trim()));
        consts.push(CConst { name: name.to_string(), value, enum_name: None });
    }
    let mut rest = code.as_str();
    while let Some(start) = rest.find("enum ") {
        let word_start = rest[..start].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        rest = &rest[start + "enum ".len()..];
        if !word_start {
            continue;
        }
        let open = rest.find(['{', ';']).expect("an enum declaration ends");
        let enum_name = rest[..open].trim().to_string();
        if rest[open..].starts_with(';') {
            continue; // a use of the type, not its definition
        }
        let close = rest.find('}').expect("an enum body ends");
        let mut next = 0u64;
        for member in rest[open + 1..close].split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (name, value) = match member.split_once('=') {
                Some((name, expr)) => {
                    let value = eval(expr, &consts).unwrap_or_else(|e| panic!("enum {enum_name}: {member}: {e}"));
                    (name.trim(), value)
                }
                None => (member, next),
            };
            consts.push(CConst { name: name.to_string(), value, enum_name: Some(enum_name.clone()) });
            next = value.wrapping_add(1);
        }
        rest = &rest[close..];
    }
    consts
}

/// What differs between the header's constants and the Rust table, one line each.
fn constant_mismatches(header: &[CConst], rust: &[(&str, u64)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, (name, _)) in rust.iter().enumerate() {
        if rust[..i].iter().any(|(n, _)| n == name) {
            problems.push(format!("{name} is listed twice in the Rust table"));
        }
    }
    for c in header {
        match rust.iter().find(|(name, _)| *name == c.name) {
            None => problems.push(format!(
                "{} = {:#x} is in airlock_abi.h but not in the table: mirror it in airlock_common::abi and list it",
                c.name, c.value
            )),
            Some((_, value)) if *value != c.value => problems.push(format!(
                "{}: airlock_abi.h says {:#x}, airlock_common::abi says {value:#x}",
                c.name, c.value
            )),
            Some(_) => {}
        }
    }
    for (name, _) in rust {
        if !header.iter().any(|c| c.name == *name) {
            problems.push(format!("{name} is in the table but not in airlock_abi.h"));
        }
    }
    problems
}

#[test]
fn abi_constants_match_the_header() {
    let header = header_constants(airlock_ebpf::ABI_HEADER);
    assert!(header.len() > 50, "found only {} constants in airlock_abi.h: the parser lost some", header.len());
    let problems = constant_mismatches(&header, &rust_constants());
    assert!(problems.is_empty(), "airlock_abi.h and airlock_common::abi disagree:\n  {}", problems.join("\n  "));
}

/// The enums as the compiler saw them (airlock.bpf.c anchors each in BTF).
#[test]
fn abi_enums_match_compiled_object_btf() {
    let btf = Btf::from_raw("airlock", airlock_ebpf::AIRLOCK_OBJECT)
        .expect("parse BTF of the BPF object")
        .expect("the BPF object carries BTF");
    let header = header_constants(airlock_ebpf::ABI_HEADER);
    let mut enums: Vec<&str> = header.iter().filter_map(|c| c.enum_name.as_deref()).collect();
    enums.dedup();
    assert!(!enums.is_empty(), "no enums found in airlock_abi.h");
    let mut problems = Vec::new();
    for enum_name in enums {
        let Some(ty) = btf.type_by_name::<Enum<'_>>(enum_name) else {
            problems.push(format!("enum {enum_name} is not in the object's BTF: anchor it in airlock.bpf.c"));
            continue;
        };
        let members: Vec<&CConst> = header.iter().filter(|c| c.enum_name.as_deref() == Some(enum_name)).collect();
        if ty.len() != members.len() {
            problems.push(format!("enum {enum_name}: {} members in BTF, {} in the header", ty.len(), members.len()));
        }
        for member in ty.iter() {
            let name = member.name.and_then(|n| n.to_str()).unwrap_or_default();
            match members.iter().find(|c| c.name == name) {
                None => problems.push(format!("enum {enum_name}: BTF has {name}, the header does not")),
                Some(c) if c.value as i64 != member.value => problems.push(format!(
                    "enum {enum_name}: {name} is {} in BTF, {} in the header",
                    member.value, c.value
                )),
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "the object's enums differ from airlock_abi.h:\n  {}", problems.join("\n  "));
}

/// The checks above catch drift: a changed value, an unmirrored constant, and
/// the expression forms the header uses.
#[test]
fn constant_check_catches_drift() {
    let parsed = header_constants(
        "#define A_GUARD\n#define A_HEX 0xcbf29ce484222325ULL /* c */\n#define A_SHIFT (1U << 12)\n\
         #define A_EXPR (A_SHIFT | 3) // c\nenum e {\n\tA_ONE = 1,\n#define A_IN_ENUM 7\n\
         \tA_TWO, /* c */\n\tA_NEG = -1,\n};\n",
    );
    let values: Vec<(&str, u64)> = parsed.iter().map(|c| (c.name.as_str(), c.value)).collect();
    assert_eq!(
        values,
        [
            ("A_HEX", 0xcbf2_9ce4_8422_2325),
            ("A_SHIFT", 1 << 12),
            ("A_EXPR", (1 << 12) | 3),
            ("A_IN_ENUM", 7),
            ("A_ONE", 1),
            ("A_TWO", 2),
            ("A_NEG", u64::MAX),
        ]
    );

    let changed = airlock_ebpf::ABI_HEADER.replace("#define AIRLOCK_PATH_MAX 512", "#define AIRLOCK_PATH_MAX 1024");
    assert_ne!(changed, airlock_ebpf::ABI_HEADER);
    let problems = constant_mismatches(&header_constants(&changed), &rust_constants());
    assert!(problems.len() == 1 && problems[0].starts_with("AIRLOCK_PATH_MAX:"), "{problems:?}");

    let added = airlock_ebpf::ABI_HEADER.replace("#endif /* AIRLOCK_ABI_H */", "#define AIRLOCK_NEW (1U << 3)\n#endif");
    let problems = constant_mismatches(&header_constants(&added), &rust_constants());
    let unmirrored = "AIRLOCK_NEW = 0x8 is in airlock_abi.h but not in the table";
    assert!(problems.len() == 1 && problems[0].starts_with(unmirrored), "{problems:?}");
}
