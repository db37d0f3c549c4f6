//! The lists the rules judge by: sensitive families, failures, programs.

mod common;

use airlock_api::decision as kind;
use airlock_api::v1::Decision;
use airlock_detect::{is_failure, program_of, sensitive_family, Window};
use common::*;

#[test]
fn sensitive_families() {
    let table: [(&[&str], Option<&str>); 26] = [
        (&["sudo", "-i"], Some("switch_user")),
        (&["su", "-"], Some("switch_user")),
        (&["doas", "sh"], Some("switch_user")),
        (&["pkexec", "bash"], Some("switch_user")),
        (&["setcap", "cap_net_raw+ep", "/tmp/x"], Some("capabilities")),
        (&["passwd", "root"], Some("accounts")),
        (&["useradd", "-o", "-u", "0", "x"], Some("accounts")),
        (&["usermod", "-aG", "sudo", "x"], Some("accounts")),
        (&["visudo"], Some("sudoers")),
        (&["iptables", "-F"], Some("firewall")),
        (&["ip6tables-restore"], Some("firewall")),
        (&["nft", "flush", "ruleset"], Some("firewall")),
        (&["mount", "--bind", "/a", "/b"], Some("mount")),
        (&["insmod", "x.ko"], Some("kernel_modules")),
        (&["modprobe", "x"], Some("kernel_modules")),
        (&["nsenter", "-t", "1", "-m"], Some("namespaces")),
        (&["unshare", "-r"], Some("namespaces")),
        (&["chmod", "u+s", "/tmp/sh"], Some("setuid_bit")),
        (&["chmod", "-R", "g=rxs", "/tmp/d"], Some("setuid_bit")),
        (&["chmod", "4755", "/tmp/sh"], Some("setuid_bit")),
        (&["chmod", "02755", "/tmp/d"], Some("setuid_bit")),
        (&["chmod", "755", "/tmp/sh"], None),
        (&["chmod", "u-s,go+rx", "/tmp/sh"], None),
        (&["chown", "root:root", "/tmp/sh"], Some("root_ownership")),
        (&["chown", "alice:root", "/tmp/sh"], None),
        (&["ls", "-la"], None),
    ];
    for (argv, family) in table {
        let argv: Vec<String> = argv.iter().map(|word| word.to_string()).collect();
        assert_eq!(sensitive_family(&argv[0], &argv), family, "{argv:?}");
    }
    assert_eq!(
        sensitive_family("chown", &["chown".into(), "-R".into(), "0".into(), "/x".into()]),
        Some("root_ownership")
    );
}

#[test]
fn failures_are_execs_and_connections_with_a_failure_reason() {
    let table: [(Decision, bool); 7] = [
        (with_reason(connect(1, "10.0.0.1", kind::DENY), "egress_default"), true),
        (with_reason(exec(2, "nmap", kind::ALLOW), "enoent"), true),
        (with_reason(exec(3, "ls", kind::DENY), "argv_too_long"), true),
        (with_reason(base(4, kind::UNIX_CONNECT, kind::DENY), "unix_path_unclear"), true),
        (exec(5, "curl", kind::DENY), false),
        (with_reason(base(6, kind::FILE_OPEN, kind::DENY), "eacces"), false),
        (with_reason(connect(7, "10.0.0.1", kind::DENY), "EGRESS_DEFAULT"), false),
    ];
    for (decision, failure) in table {
        assert_eq!(is_failure(&decision), failure, "{} {} {}", decision.id, decision.kind, decision.reason);
    }
}

#[test]
fn a_program_is_the_executables_file_name_else_argv0s() {
    let with = |executable: &str, argv: &[&str]| Decision {
        executable: executable.into(),
        argv: argv.iter().map(|word| word.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(program_of(&with("/usr/bin/python3.12", &["python3", "x.py"])), Some("python3.12"));
    assert_eq!(program_of(&with("", &["./scan.sh"])), Some("scan.sh"));
    assert_eq!(program_of(&with("", &["nmap"])), Some("nmap"));
    assert_eq!(program_of(&with("/usr/bin/", &[])), None);
    assert_eq!(program_of(&with("", &[])), None);
}

#[test]
fn a_window_excludes_its_start_and_includes_its_end() {
    let window = Window::ending_at(NOW, 10 * SEC);
    let table = [(NOW - 10 * SEC, false), (NOW - 10 * SEC + 1, true), (NOW, true), (NOW + 1, false)];
    for (time, inside) in table {
        assert_eq!(window.contains(time), inside, "{}", NOW - time);
    }
    assert_eq!(Window::ending_at(i64::MIN + 5, 10 * SEC).start_ns, i64::MIN, "saturates");
}
