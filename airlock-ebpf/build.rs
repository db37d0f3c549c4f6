//! Compiles the C eBPF programs with clang and generates their libbpf-rs skeletons.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[(&str, &str)] = &[("airlock", "src/bpf/airlock.bpf.c"), ("probe_lsm", "src/bpf/probe_lsm.bpf.c")];

/// clang-19 is what the project is tested with; AIRLOCK_CLANG overrides it.
fn find_clang() -> PathBuf {
    if let Some(clang) = env::var_os("AIRLOCK_CLANG") {
        return PathBuf::from(clang);
    }
    for candidate in ["clang-19", "clang"] {
        if Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "\n\nairlock-ebpf: no clang found to compile the eBPF programs.\n\
         Install it with: apt-get install clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config\n\
         (or point AIRLOCK_CLANG at a clang >= 14 that has the BPF target)\n\n"
    );
}

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest_dir.join("src/bpf");
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let (arch, vmlinux_dir) = vmlinux_dir(&bpf_dir, &target_arch);
    let clang = find_clang();

    for (name, source) in PROGRAMS {
        let skel = out_dir.join(format!("{name}.skel.rs"));
        let obj = out_dir.join(format!("{name}.bpf.o"));
        SkeletonBuilder::new()
            .source(manifest_dir.join(source))
            .obj(&obj)
            .clang(&clang)
            .clang_args([
                "-g".into(),
                "-O2".into(),
                "-Wall".into(),
                "-Werror".into(),
                format!("-D__TARGET_ARCH_{arch}"),
                format!("-I{}", bpf_dir.display()),
                format!("-I{}", vmlinux_dir.display()),
            ])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building the eBPF program {source} failed: {e:#}"));
    }
    for entry in std::fs::read_dir(&bpf_dir).expect("read src/bpf") {
        let path = entry.expect("list src/bpf").path();
        if path.extension().is_some_and(|e| e == "c" || e == "h") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed={}", vmlinux_dir.join("vmlinux.h").display());
    println!("cargo:rerun-if-env-changed=AIRLOCK_CLANG");
}

/// The kernel's name for the target architecture (`-D__TARGET_ARCH_<arch>`) and
/// the directory of its `vmlinux.h`, the kernel types CO-RE relocates against.
/// The header is architecture-specific (pt_regs, syscall wrappers), so a target
/// without one of its own is an error, not a silent fallback to another's.
fn vmlinux_dir(bpf_dir: &Path, target_arch: &str) -> (&'static str, PathBuf) {
    let arch = match target_arch {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => panic!(
            "\n\nairlock-ebpf: no kernel type header is known for target architecture {other}: \
             build.rs maps only x86_64 to src/bpf/vmlinux/x86 and aarch64 to src/bpf/vmlinux/arm64.\n\n"
        ),
    };
    let dir = bpf_dir.join("vmlinux").join(arch);
    if !dir.join("vmlinux.h").is_file() {
        let missing = if dir.is_dir() {
            format!("{} has no vmlinux.h", dir.display())
        } else {
            format!("the directory {} does not exist", dir.display())
        };
        panic!(
            "\n\nairlock-ebpf: no kernel type header (vmlinux.h) for target architecture {target_arch} ({arch}): \
             {missing}.\n\
             Make it on a machine of that architecture whose kernel has BTF, in airlock-ebpf/:\n\
             \x20   mkdir -p src/bpf/vmlinux/{arch}\n\
             \x20   bpftool btf dump file /sys/kernel/btf/vmlinux format c > src/bpf/vmlinux/{arch}/vmlinux.h\n\n"
        );
    }
    (arch, dir)
}
