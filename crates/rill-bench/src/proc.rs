//! What the load generator can learn about processes on this machine from `/proc`: a server's
//! memory (VmRSS and RssAnon), CPU time, which processes listen on a port, and the open-files
//! limit.

use std::collections::BTreeSet;
use std::fs;

use serde::Serialize;

/// Linux's USER_HZ: the unit of `utime`/`stime` in `/proc/<pid>/stat`. It is 100 on every
/// mainstream architecture (the kernel fixes it for user space), so we do not need libc's
/// `sysconf` (and `unsafe`) to read it.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Memory of a set of processes, summed, in bytes.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct MemoryUse {
    /// Resident set size (`VmRSS`): everything resident, code and shared libraries included.
    pub rss: u64,
    /// Anonymous resident memory (`RssAnon`): the heap and stacks, i.e. the process's own
    /// user-space data, without mapped files.
    pub anon: u64,
}

impl MemoryUse {
    /// Reads and sums `/proc/<pid>/status` of every pid; `None` when one cannot be read.
    pub fn of(pids: &[u32]) -> Option<Self> {
        let mut total = MemoryUse::default();
        for pid in pids {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            total.rss += status_kib(&status, "VmRSS:")? * 1024;
            total.anon += status_kib(&status, "RssAnon:").unwrap_or(0) * 1024;
        }
        Some(total)
    }
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU time used by a set of processes (user + system), in seconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct CpuUse {
    /// Seconds in user space.
    pub user: f64,
    /// Seconds in the kernel.
    pub system: f64,
}

impl CpuUse {
    /// This process's CPU time so far.
    pub fn own() -> Self {
        Self::of(&[std::process::id()]).unwrap_or_default()
    }

    /// Sums `/proc/<pid>/stat` of every pid; `None` when one cannot be read.
    pub fn of(pids: &[u32]) -> Option<Self> {
        let mut total = CpuUse::default();
        for pid in pids {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name (field 2) may contain spaces: fields are counted after its ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ').skip(11);
            let user: f64 = fields.next()?.parse().ok()?;
            let system: f64 = fields.next()?.parse().ok()?;
            total.user += user / CLOCK_TICKS_PER_SECOND;
            total.system += system / CLOCK_TICKS_PER_SECOND;
        }
        Some(total)
    }

    /// The CPU used since `earlier`.
    pub fn since(self, earlier: CpuUse) -> CpuUse {
        CpuUse {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }

    /// User plus system seconds.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// The processes that hold a listening TCP socket on `port` (for nginx: the master and every
/// worker). Read from `/proc/net/tcp{,6}` and each process's open file descriptors; processes
/// of other users are skipped silently (their fds are not readable).
pub fn discover_server_pids(port: u16) -> Vec<u32> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue; // not LISTEN
            }
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) {
                inodes.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    let mut pids = Vec::new();
    if inodes.is_empty() {
        return pids;
    }
    let Ok(processes) = fs::read_dir("/proc") else {
        return pids;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|target| target.to_str().map(|t| inodes.contains(t)))
                .unwrap_or(false)
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

/// Raises this process's soft open-files limit to its hard limit (a no-op elsewhere than
/// Linux-like systems); returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Kernel memory of all TCP sockets (`/proc/net/sockstat`, `TCP: ... mem N`, in pages), in bytes.
pub(crate) fn tcp_kernel_memory() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|line| line.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse::<u64>().ok().map(|pages| pages * 4096);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let memory = MemoryUse::of(&[std::process::id()]).unwrap_or_default();
        assert!(memory.rss > 0);
        assert!(CpuUse::of(&[std::process::id()]).is_some());
        assert!(MemoryUse::of(&[u32::MAX]).is_none());
    }
}
