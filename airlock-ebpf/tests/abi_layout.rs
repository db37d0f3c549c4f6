//! The Rust mirror of the kernel ABI must match the compiled object's BTF.

use airlock_common::abi::*;
use libbpf_rs::btf::types::Struct;
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
    layout!(btf, "airlock_role_set", RoleSet, [set_id, flags]);
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
        [hdr, match_via, argc, argv_len, filename_len, exe_len, cwd_len, filename, exe, cwd, argv]
    );
    layout!(btf, "airlock_net_event", NetEvent, [hdr, family, port, protocol, addr]);
    // guard
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
    // exec identity
    layout!(btf, "airlock_identity_key", IdentityKey, [kind, pad, hash]);
    layout!(btf, "airlock_identity_value", IdentityValue, [flags, nnames, names]);
    // net: Unix socket rules.
    layout!(btf, "airlock_unix_key", UnixKey, [prefixlen, set_id, path]);
    layout!(btf, "airlock_unix_event", UnixEvent, [hdr, path_len, sock_type, path]);
}


