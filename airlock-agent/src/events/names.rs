//! Names of the kernel ABI's numbers, as records carry them.

use airlock_api::decision as kind;
use airlock_common::abi;

pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        abi::EVENT_EXEC => kind::EXEC,
        abi::EVENT_CONNECT => kind::CONNECT,
        abi::EVENT_SENDMSG => kind::SENDMSG,
        abi::EVENT_TAG_FAILURE => kind::TAG_FAILURE,
        abi::EVENT_UNIX_CONNECT => kind::UNIX_CONNECT,
        abi::EVENT_UNIX_SENDMSG => kind::UNIX_SENDMSG,
        abi::EVENT_TAMPER => kind::TAMPER,
        abi::EVENT_FILE_OPEN => kind::FILE_OPEN,
        abi::EVENT_RAW_SOCKET => kind::RAW_SOCKET,
        _ => "unknown",
    }
}

pub fn reason_name(reason: u32) -> &'static str {
    match reason {
        abi::REASON_NONE => "none",
        abi::REASON_RULE => "rule",
        abi::REASON_ARGV_TOO_LONG => "argv_too_long",
        abi::REASON_MATCH_OVERFLOW => "match_overflow",
        abi::REASON_QUARANTINE => "quarantine",
        abi::REASON_ROLE_GONE => "role_gone",
        abi::REASON_REVOKED => "revoked",
        abi::REASON_SECURITY_BLOCK => "security_block",
        abi::REASON_FILELESS => "fileless",
        abi::REASON_LOADER => "direct_loader",
        abi::REASON_APPROVAL_REQUIRED => "approval_required",
        abi::REASON_RATE_LIMITED => "rate_limited",
        abi::REASON_OUTSIDE_TIME_WINDOW => "outside_time_window",
        abi::REASON_SESSION_WRITTEN => "session_written",
        abi::REASON_UNIX_PATH_UNCLEAR => "unix_path_unclear",
        abi::REASON_EGRESS_DEFAULT => "egress_default",
        abi::REASON_RAW_SOCKET => "raw_socket",
        abi::REASON_TAMPER_BPF => "tamper_bpf",
        abi::REASON_TAMPER_SIGNAL => "tamper_signal",
        abi::REASON_TAMPER_PTRACE => "tamper_ptrace",
        abi::REASON_TAMPER_KERNEL_CODE => "tamper_kernel_code",
        abi::REASON_TAMPER_CONTROL_FS => "tamper_control_fs",
        abi::REASON_PROTECTED_FILE => "protected_file",
        abi::REASON_TAMPER_AIRLOCK_FILES => "tamper_airlock_files",
        _ => "unknown",
    }
}

/// What a governed process tried (tamper and file events).
pub fn op_name(op: u32) -> &'static str {
    match op {
        abi::OP_BPF => "bpf",
        abi::OP_KILL => "kill",
        abi::OP_TKILL => "tkill",
        abi::OP_TGKILL => "tgkill",
        abi::OP_SIGQUEUE => "sigqueue",
        abi::OP_PIDFD_SIGNAL => "pidfd_send_signal",
        abi::OP_SIGIO => "sigio",
        abi::OP_PTRACE => "ptrace",
        abi::OP_VM_WRITEV => "process_vm_writev",
        abi::OP_VM_READV => "process_vm_readv",
        abi::OP_PIDFD_GETFD => "pidfd_getfd",
        abi::OP_INIT_MODULE => "init_module",
        abi::OP_FINIT_MODULE => "finit_module",
        abi::OP_MODULE_REQUEST => "module_request",
        abi::OP_KEXEC => "kexec",
        abi::OP_KERNEL_READ_FILE => "kernel_read_file",
        abi::OP_OPEN => "open",
        abi::OP_UNLINK => "unlink",
        abi::OP_RENAME => "rename",
        abi::OP_RMDIR => "rmdir",
        abi::OP_UMOUNT => "umount",
        abi::OP_CREATE => "create",
        abi::OP_LINK => "link",
        abi::OP_TRUNCATE => "truncate",
        _ => "unknown",
    }
}

pub fn via_name(via: u32) -> &'static str {
    match via {
        abi::VIA_EXECUTABLE => "executable",
        abi::VIA_ARGV0 => "argv0",
        abi::VIA_SCRIPT => "script",
        abi::VIA_IDENTITY => "identity",
        abi::VIA_INTERPRETER => "interpreter",
        abi::VIA_LOADED => "loader",
        _ => "unknown",
    }
}

