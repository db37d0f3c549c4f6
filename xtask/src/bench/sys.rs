//! What the bench reads from the system: a process's memory and CPU time from
//! /proc, per-program BPF run time from bpftool, and the machine description.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context, Result};

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Resident memory of a process, split into what the BPF maps it has mmap'd
/// (the event ring buffer) account for and everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub bpf_map_kb: u64,
}

/// VmRSS from /proc/PID/status plus the Rss of its `anon_inode:bpf-map` mappings from smaps.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(Memory { rss_kb, bpf_map_kb: bpf_map_rss_kb(pid).unwrap_or(0) })
}

fn bpf_map_rss_kb(pid: u32) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut in_bpf_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        // Mapping header lines start with "start-end perms ...".
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_bpf_map = line.ends_with("anon_inode:bpf-map");
        } else if in_bpf_map {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// CPU time of a process (all its threads), in nanoseconds: the sum of the
/// threads' on-CPU time from /proc/PID/task/*/schedstat, which is what
/// utime+stime in /proc/PID/stat count, at 1 ns instead of 10 ms resolution
/// (a storm run costs the daemon a few ticks only). Falls back to utime+stime.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    match schedstat_ns(pid) {
        Some(ns) => Ok(ns),
        None => stat_cpu_ns(pid),
    }
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// utime + stime from /proc/PID/stat.
fn stat_cpu_ns(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).context("malformed /proc/PID/stat");
    let total = ticks(14)? + ticks(15)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(total * 1_000_000_000 / hz)
}

/// Cumulative run count and run time of one BPF program (needs kernel.bpf_stats_enabled).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Per-program statistics of the loaded `airlock_*` programs, by program name.
#[derive(Debug, Clone, Default)]
pub struct BpfSnapshot(pub BTreeMap<String, ProgStats>);

impl BpfSnapshot {
    pub fn take() -> Result<BpfSnapshot> {
        let out = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("run bpftool prog show --json")?;
        if !out.status.success() {
            bail!("bpftool prog show failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let progs: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
        let mut map = BTreeMap::new();
        for prog in progs.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(name) = prog.get("name").and_then(|n| n.as_str()) else { continue };
            if !name.starts_with("airlock_") {
                continue;
            }
            let field = |k: &str| prog.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            let entry: &mut ProgStats = map.entry(name.to_string()).or_default();
            entry.run_cnt += field("run_cnt");
            entry.run_time_ns += field("run_time_ns");
        }
        Ok(BpfSnapshot(map))
    }

    /// What ran between `before` and `self`.
    pub fn since(&self, before: &BpfSnapshot) -> BpfSnapshot {
        let mut map = BTreeMap::new();
        for (name, now) in &self.0 {
            let then = before.0.get(name).copied().unwrap_or_default();
            map.insert(
                name.clone(),
                ProgStats {
                    run_cnt: now.run_cnt.saturating_sub(then.run_cnt),
                    run_time_ns: now.run_time_ns.saturating_sub(then.run_time_ns),
                },
            );
        }
        BpfSnapshot(map)
    }

    pub fn add(&mut self, other: &BpfSnapshot) {
        for (name, s) in &other.0 {
            let e = self.0.entry(name.clone()).or_default();
            e.run_cnt += s.run_cnt;
            e.run_time_ns += s.run_time_ns;
        }
    }

    pub fn total_ns(&self) -> u64 {
        self.0.values().map(|s| s.run_time_ns).sum()
    }
}

/// Airlock programs loaded right now (by anyone): a "no daemon" baseline needs none.
pub fn airlock_programs_loaded() -> Result<usize> {
    Ok(BpfSnapshot::take()?.0.len())
}

/// Turns kernel.bpf_stats_enabled on for its lifetime and puts the old value back on drop.
pub struct BpfStatsGuard {
    old: String,
}

impl BpfStatsGuard {
    pub fn enable() -> Result<BpfStatsGuard> {
        let old = std::fs::read_to_string(BPF_STATS_SYSCTL).with_context(|| format!("read {BPF_STATS_SYSCTL}"))?;
        std::fs::write(BPF_STATS_SYSCTL, "1").with_context(|| format!("enable {BPF_STATS_SYSCTL}"))?;
        Ok(BpfStatsGuard { old: old.trim().to_string() })
    }
}

impl Drop for BpfStatsGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, &self.old) {
            eprintln!("xtask bench: could not restore kernel.bpf_stats_enabled={}: {e}", self.old);
        }
    }
}

/// Where the numbers come from, for the report's header.
#[derive(Debug, Clone)]
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub commit: String,
}

/// CPU time of every process on the machine, to tell afterwards what else ran
/// during the bench on a shared machine.
pub struct ProcessCpu(BTreeMap<u32, (String, u64)>);

impl ProcessCpu {
    pub fn take() -> ProcessCpu {
        let mut map = BTreeMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let comm = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("?", |(c, _)| c).to_string();
            if let Ok(ns) = stat_cpu_ns(pid) {
                map.insert(pid, (comm, ns));
            }
        }
        ProcessCpu(map)
    }

    /// Processes other than this one (and its children, which are gone by
    /// now) that used more than `min_share` of one core between the snapshots.
    pub fn busy_since(&self, before: &ProcessCpu, wall_ns: u64, min_share: f64) -> Vec<(String, u32, f64)> {
        let me = std::process::id();
        let mut busy: Vec<(String, u32, f64)> = self
            .0
            .iter()
            .filter(|(pid, _)| **pid != me)
            .map(|(pid, (comm, ns))| {
                let start = before.0.get(pid).filter(|(c, _)| c == comm).map_or(0, |(_, n)| *n);
                (comm.clone(), *pid, ns.saturating_sub(start) as f64 / wall_ns.max(1) as f64)
            })
            .filter(|(_, _, share)| *share >= min_share)
            .collect();
        busy.sort_by(|a, b| b.2.total_cmp(&a.2));
        busy
    }
}

/// /proc/loadavg's 1, 5 and 15 minute averages: shows whether something else loaded the machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        Machine {
            date: command_line("date", &["-u"]),
            kernel: command_line("uname", &["-r"]),
            cpu,
            cores,
            commit: command_line("git", &["rev-parse", "--short", "HEAD"]),
        }
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
