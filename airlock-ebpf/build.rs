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
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "arm64",
        _ => "x86",
    };
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
            ])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building the eBPF program {source} failed: {e:#}"));
    }
    for entry in std::fs::read_dir(&bpf_dir).expect("read src/bpf") {
        let path = entry.expect("list src/bpf").path();
        if path.extension().is_some_and(|e| e == "c" || e == "h") && !is_vmlinux(&path) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed={}", bpf_dir.join("vmlinux.h").display());
    println!("cargo:rerun-if-env-changed=AIRLOCK_CLANG");
}

fn is_vmlinux(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "vmlinux.h")
}
