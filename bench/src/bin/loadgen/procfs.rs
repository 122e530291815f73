//! What `/proc` says of the measured processes: CPU ticks, peak RSS, process trees.

use std::time::Instant;

use crate::Proc;

/// The fields of `/proc/<pid>/stat` after the command name: the first is the state,
/// field 3 of proc(5).
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// User + system CPU time of a process, all its threads, in clock ticks, plus that of
/// its children it reaped: redis-server's AOF rewrites run in forked children.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    // utime, stime, cutime, cstime are fields 14-17 of proc(5).
    stat_fields(pid)?
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum()
}

/// Every process's parent, from /proc (`/proc/<pid>/task/<tid>/children` needs a kernel
/// option that not every kernel has).
pub(crate) fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let ppid = stat_fields(pid)?.get(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// The live descendants of `root` (children, their children, ...), given every
/// process's parent.
pub(crate) fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in parents {
            if ppid == parent && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// The processes a measured process stands for: itself, and its live descendants when it
/// is measured as a tree. A child that exits between two readings is still counted: its
/// parent reaps it, which adds its time to the parent's.
pub(crate) fn members(p: &Proc, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut pids = vec![p.pid];
    if p.tree {
        pids.extend(descendants(p.pid, parents));
    }
    pids
}

/// Clock ticks of the whole machine, from the `cpu` line of /proc/stat.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MachineTicks {
    /// Every CPU state but idle and iowait.
    pub(crate) busy: u64,
    /// Interrupt and softirq time: mostly loopback TCP, charged to no process.
    pub(crate) irq: u64,
    pub(crate) total: u64,
}

pub(crate) fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(MachineTicks {
        busy: total.saturating_sub(at(3) + at(4)),
        irq: at(5) + at(6),
        total,
    })
}

/// Peak resident set size of a process, KiB (`VmHWM`).
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU counters of every measured process and of the machine at one instant.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) procs: Vec<Option<u64>>,
    /// How many processes each measured process stood for.
    pub(crate) members: Vec<usize>,
    pub(crate) machine: Option<MachineTicks>,
}

pub(crate) fn snapshot(procs: &[Proc]) -> Snapshot {
    let parents = if procs.iter().any(|p| p.tree) {
        parents()
    } else {
        Vec::new()
    };
    let members: Vec<Vec<u32>> = procs.iter().map(|p| members(p, &parents)).collect();
    Snapshot {
        at: Instant::now(),
        // The root first: a descendant it reaps meanwhile is then missed once rather than
        // counted twice.
        procs: members.iter().map(|pids| summed(pids, cpu_ticks)).collect(),
        members: members.iter().map(Vec::len).collect(),
        machine: machine_ticks(),
    }
}

/// Peak RSS of a measured process, KiB: the sum of its processes' peaks when it is a tree
/// (an upper bound of the tree's peak, reached when all peak together).
pub(crate) fn tree_peak_rss_kib(p: &Proc) -> Option<u64> {
    let parents = if p.tree { parents() } else { Vec::new() };
    summed(&members(p, &parents), peak_rss_kib)
}

/// `read` of the first process (none if it is gone) plus that of the others still there.
pub(crate) fn summed(pids: &[u32], read: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    let (root, rest) = pids.split_first()?;
    let root = read(*root)?;
    Some(root + rest.iter().filter_map(|&pid| read(pid)).sum::<u64>())
}
