//! Reading a container's resource use from its cgroup: CPU, memory, block IO, PIDs and
//! pressure, from cgroup v1, v2 or the hybrid layout of both.
//!
//! [`CgroupFs::detect`] finds the layout once, from the host's mount table
//! (`<procfs_root>/1/mountinfo`, else `<procfs_root>/self/mountinfo`; see [`detect`] for the
//! rules). `cgroup` mounts are v1 hierarchies, one per controller or co-mounted
//! (`cpu,cpuacct`); a lone `cgroup2` mount is v2; v1 controllers next to a `cgroup2` mount
//! (systemd's "hybrid": `/sys/fs/cgroup/unified`) are read from v1, with pressure (PSI) and
//! any controller v1 does not have read from the unified hierarchy. That is the Agent's split
//! (`pkg/util/cgroups/reader_detector.go`: any v1 mount means v1) plus PSI, which a hybrid
//! host's unified hierarchy has for every container (runc puts each container there too).
//!
//! [`CgroupFs::read`] reads one container's cgroup, given as its path relative to the
//! hierarchy root (`/docker/<id>`, `/system.slice/docker-<id>.scope`, as the container store
//! has it from `/proc/<pid>/cgroup`). The same relative path is used in every hierarchy, as
//! Docker (cgroupfs or systemd driver), containerd and CRI-O create it. The files and fields
//! read, per [`CgroupStats`] field, are in the field's docs; they are those of the Agent's
//! readers (`pkg/util/cgroups/cgroupv1_*.go`, `cgroupv2_*.go`), whose choices are followed
//! where the field's docs say so. Every field is an `Option`: a file this kernel or
//! configuration does not have (`memory.peak` before 5.19, `memory.memsw.*` without swap
//! accounting, PSI when it is off) is `None`, never an error.
//!
//! Errors, for the collection loop ([`ReadError`]): the cgroup directory gone, before or
//! while it is read, is [`ReadError::Gone`], which the caller keeps quiet (a container
//! stopping between the list and the read is normal); permission denied carries the path, for
//! the caller to say once; a file whose content is not in the kernel's format names the file.
//!
//! Cost: one read opens about 23 small files, each relative to the container's directory in
//! its hierarchy (opened once per read), into one reused buffer, and parses them from the
//! bytes; the anchor directory (memory's) is checked before and, only when a file was missing,
//! once after, to tell a file this kernel lacks from a container that stopped mid-read. On
//! this machine (a VM, where an open and close of a cgroup file costs about 5 µs) that is
//! about 160 µs per container on v1 with PSI, 16 ms per pass for 100 containers: 0.1 % of a
//! core at 15 s. Keeping the files open between passes would read each in about 1 µs, at the
//! price of some 20 file descriptors per container. Device names for block IO are resolved
//! separately, through [`DeviceNames`]' cache.
//!
//! Mount namespaces. The host's PID 1's mount table says where the host mounts its
//! hierarchies; mountpoints under `/sys/fs/cgroup` are read under `cgroup_root` (the host's
//! cgroupfs mounted at `/host/sys/fs/cgroup` when the runner runs in a container). Reading
//! PID 1's table needs ptrace-read access to it: a runner in a container without
//! `CAP_SYS_PTRACE`, or without the host's PID namespace behind `procfs_root`, falls back to
//! its own table. There, hierarchies listed under `cgroup_root` (the host's cgroupfs bound
//! there) are used as they are; otherwise the runner's own `/sys/fs/cgroup` mounts decide the
//! layout, which is the host's for Docker's mounts (the same v1 controllers, or the one
//! cgroup2) except that Docker does not mount a hybrid host's unified hierarchy, so PSI is
//! then missing. A runner in its own cgroup namespace (Docker's default on v2 hosts) sees
//! other containers' cgroup paths relative to its namespace (`/../<id>`), which
//! [`CgroupFs::read`] refuses ([`ReadError::OutsideRoot`]): run it with `--cgroupns host`,
//! as the Agent's install command does (`docker run --cgroupns host --pid host ...`).
//!
//! Missing: per-CPU usage, NUMA and hugetlb stats, v2 `memory.high`/`memory.min`,
//! `io.max` limits, v1 `cpuacct.usage_user`/`usage_sys` (ns, more precise than
//! `cpuacct.stat`'s ticks, but not what the Agent reads), and open files, which are no
//! cgroup's (`/proc/<pid>/fd`).

mod detect;
mod device;
mod file;
mod v1;
mod v2;

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

pub(crate) use device::DeviceNames;
use file::CgroupFile;

/// The host's cgroup hierarchies, found once and read for every container.
#[derive(Debug, Clone)]
pub(crate) struct CgroupFs {
    hierarchies: detect::Hierarchies,
    /// Hierarchies the mount table lists but `cgroup_root` does not have.
    unreachable: Vec<PathBuf>,
    /// Nanoseconds per `USER_HZ` tick, for v1 `cpuacct.stat`.
    ns_per_tick: u64,
}

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Controllers on v1 hierarchies only.
    V1,
    /// Controllers on v1 hierarchies, and a cgroup2 hierarchy beside them (for PSI).
    Hybrid,
    /// Everything on the one unified hierarchy.
    V2,
}

/// A block device, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Device {
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One container's cgroup counters and limits at one instant. Counters are cumulative since
/// the cgroup was created; the caller turns them into rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CgroupStats {
    pub(crate) cpu: CpuStats,
    pub(crate) memory: MemoryStats,
    /// Block IO per device, in the kernel's order; empty when no file lists a device.
    pub(crate) io: Vec<DeviceIo>,
    pub(crate) pids: PidStats,
    pub(crate) pressure: PressureStats,
}

/// CPU, from v1 `cpuacct` and `cpu` or v2 `cpu`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CpuStats {
    /// CPU time used, ns: v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`.
    pub(crate) usage_ns: Option<u64>,
    /// In user mode, ns: v1 `cpuacct.stat` `user` (in `USER_HZ` ticks, so 10 ms steps), v2
    /// `cpu.stat` `user_usec`.
    pub(crate) user_ns: Option<u64>,
    /// In kernel mode, ns: v1 `cpuacct.stat` `system`, v2 `cpu.stat` `system_usec`.
    pub(crate) system_ns: Option<u64>,
    /// Time throttled by the CFS quota, ns: v1 `cpu.stat` `throttled_time`, v2 `cpu.stat`
    /// `throttled_usec`.
    pub(crate) throttled_ns: Option<u64>,
    /// Enforcement periods in which the quota ran out: `cpu.stat` `nr_throttled`.
    pub(crate) throttled_periods: Option<u64>,
    /// Enforcement periods elapsed while runnable: `cpu.stat` `nr_periods`.
    pub(crate) periods: Option<u64>,
    /// The CFS quota in cores (`--cpus`): v1 `cpu.cfs_quota_us / cpu.cfs_period_us` (`-1` is
    /// none), v2 `cpu.max` (`max 100000` is none).
    pub(crate) limit_cores: Option<f64>,
    /// v1 `cpu.shares` (1024 by default).
    pub(crate) shares: Option<u64>,
    /// v2 `cpu.weight` (100 by default).
    pub(crate) weight: Option<u64>,
    /// How many CPUs the cpuset allows: v1 `cpuset.cpus`, v2 `cpuset.cpus.effective`. The
    /// Agent's `container.cpu.limit` is the smaller of this and the quota when it differs
    /// from the host's CPU count.
    pub(crate) cpus: Option<u32>,
}

/// Memory, bytes unless said, from v1 or v2 `memory`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MemoryStats {
    /// v1 `memory.usage_in_bytes`, v2 `memory.current`.
    pub(crate) usage: Option<u64>,
    /// Anonymous memory: v1 `memory.stat` `total_rss` (dropped when ≥ 2^63, an underflow, as
    /// the Agent does), v2 `memory.stat` `anon`.
    pub(crate) rss: Option<u64>,
    /// Page cache: v1 `total_cache`, v2 `file`.
    pub(crate) cache: Option<u64>,
    /// Swap used: v1 `total_swap`, else `memory.memsw.usage_in_bytes - usage`; v2
    /// `memory.swap.current`.
    pub(crate) swap: Option<u64>,
    /// `usage - inactive_file` (v1 `total_inactive_file`), floored at 0, as the Agent and
    /// cAdvisor compute it.
    pub(crate) working_set: Option<u64>,
    /// The limit (`--memory`): v1 `memory.stat` `hierarchical_memory_limit` (the effective
    /// limit, ancestors included, as the Agent reads it), else `memory.limit_in_bytes`; v2
    /// `memory.max`. `None` for no limit: v2 `max`, v1's page-rounded `i64::MAX`.
    pub(crate) limit: Option<u64>,
    /// The memory + swap limit (`--memory-swap`): v1 `hierarchical_memsw_limit`, else
    /// `memory.memsw.limit_in_bytes`; v2 `memory.max + memory.swap.max`. `None` for none.
    pub(crate) memsw_limit: Option<u64>,
    /// v1 `memory.soft_limit_in_bytes`, v2 `memory.low` (0 and `max` are `None`, as the Agent
    /// takes 0).
    pub(crate) soft_limit: Option<u64>,
    /// Kernel memory: v1 `memory.kmem.usage_in_bytes`, v2 `memory.stat` `kernel` (5.18+),
    /// else `kernel_stack + slab`.
    pub(crate) kernel: Option<u64>,
    /// The highest usage: v1 `memory.max_usage_in_bytes`, v2 `memory.peak` (5.19+).
    pub(crate) peak: Option<u64>,
    /// Page faults (count): v1 `total_pgfault`, v2 `pgfault`.
    pub(crate) page_faults: Option<u64>,
    /// Major page faults (count): v1 `total_pgmajfault`, v2 `pgmajfault`.
    pub(crate) major_page_faults: Option<u64>,
    /// OOM events (count): v2 `memory.events` `oom` (the limit was hit and reclaim failed);
    /// v1 `memory.failcnt`, as the Agent reports it, which counts every time usage hit the
    /// limit, reclaim or not, so it rises before any OOM.
    pub(crate) oom_events: Option<u64>,
    /// Processes killed by the OOM killer (count): v2 `memory.events` `oom_kill`, v1
    /// `memory.oom_control` `oom_kill` (4.13+).
    pub(crate) oom_kills: Option<u64>,
}

/// One block device's IO: v1 `blkio.throttle.io_service_bytes_recursive` and
/// `io_serviced_recursive` (`Read`/`Write` lines), falling back to the non-recursive files
/// (which the Agent reads; the same for a container's leaf cgroup) and to CFQ's
/// `blkio.io_service_bytes`/`io_serviced`; v2 `io.stat` `rbytes`, `wbytes`, `rios`, `wios`.
/// Under v1, buffered writes are written back by the kernel's flusher and not counted
/// against the container; direct IO is. And recent kernels set blk-throttle up for a disk
/// only when a throttle limit is first set on it (`blk_throtl_activated()`): until then the
/// v1 `blkio.throttle.*` files count nothing for that disk (this machine's 6.18 reads
/// `Total 0` after an 8 MiB direct write, and counts once any cgroup has a limit on the disk,
/// e.g. `docker run --device-write-bps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceIo {
    pub(crate) device: Device,
    pub(crate) read_bytes: Option<u64>,
    pub(crate) write_bytes: Option<u64>,
    pub(crate) read_ops: Option<u64>,
    pub(crate) write_ops: Option<u64>,
}

/// Tasks, from `pids.current` and `pids.max` (the same in v1 and v2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PidStats {
    /// Tasks (threads) in the cgroup.
    pub(crate) current: Option<u64>,
    /// The limit (`--pids-limit`); `max` is `None`.
    pub(crate) limit: Option<u64>,
}

/// Pressure stall information (`Documentation/accounting/psi.rst`) from the unified
/// hierarchy's `cpu.pressure`, `memory.pressure` and `io.pressure`: v2, and hybrid hosts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PressureStats {
    pub(crate) cpu: Option<Pressure>,
    pub(crate) memory: Option<Pressure>,
    pub(crate) io: Option<Pressure>,
}

/// One resource's pressure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pressure {
    /// Some task stalled on the resource.
    pub(crate) some: Stall,
    /// Every non-idle task stalled at once; `cpu.pressure` has it from 5.13.
    pub(crate) full: Option<Stall>,
}

/// One PSI line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stall {
    /// The share of the last 10 s stalled, in percent.
    pub(crate) avg10: f64,
    /// Total stall time, µs (the Agent's `container.*.partial_stall` is its rate, from
    /// `some`).
    pub(crate) total_us: u64,
}

/// Why the layout could not be found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DetectError {
    #[error(
        "Cannot read the host's mount table at {host} ({host_error}) nor the runner's at \
         {own} ({own_error}): set `procfs_root` to the host's procfs."
    )]
    MountTable {
        host: PathBuf,
        host_error: io::Error,
        own: PathBuf,
        own_error: io::Error,
    },
    #[error(
        "{mountinfo} lists no cgroup or cgroup2 filesystem under /sys/fs/cgroup: \
         container metrics need the host's cgroups (set `procfs_root` to the host's procfs)."
    )]
    NoCgroups { mountinfo: PathBuf },
    #[error(
        "{mountinfo} lists cgroup hierarchies ({}) that are not under {cgroup_root}: \
         set `cgroup_root` to where the host's /sys/fs/cgroup is mounted.",
        listed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotUnderRoot {
        mountinfo: PathBuf,
        cgroup_root: PathBuf,
        listed: Vec<PathBuf>,
    },
}

/// Why a container's cgroup could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The cgroup is gone: the container stopped. Normal; not worth a word.
    #[error("The cgroup is gone.")]
    Gone,
    #[error(
        "Permission denied reading {path}: the runner needs read access to the host's \
         cgroup filesystem (run it as root)."
    )]
    PermissionDenied { path: PathBuf },
    #[error("{path} is not in the kernel's format: {detail}.")]
    Malformed { path: PathBuf, detail: String },
    #[error(
        "The cgroup path {cgroup:?} leaves the hierarchy's root: the runner sees cgroups \
         through its own cgroup namespace; run it with `--cgroupns host`."
    )]
    OutsideRoot { cgroup: String },
    #[error("Cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl CgroupFs {
    /// Finds the host's cgroup layout from `<procfs_root>/1/mountinfo` (else
    /// `<procfs_root>/self/mountinfo`), with the hierarchies under `cgroup_root`. Hierarchies
    /// listed but not found under `cgroup_root` (no `cgroup.procs` there) are left out, and
    /// named by `Display`; none found at all is an error.
    pub(crate) fn detect(cgroup_root: &Path, procfs_root: &Path) -> Result<Self, DetectError> {
        let host = procfs_root.join("1/mountinfo");
        let (mountinfo, text) = match std::fs::read_to_string(&host) {
            Ok(text) => (host, text),
            Err(host_error) => {
                let own = procfs_root.join("self/mountinfo");
                match std::fs::read_to_string(&own) {
                    Ok(text) => (own, text),
                    Err(own_error) => {
                        return Err(DetectError::MountTable {
                            host,
                            host_error,
                            own,
                            own_error,
                        });
                    }
                }
            }
        };
        let mut hierarchies = detect::hierarchies(&text, cgroup_root);
        if hierarchies.is_empty() {
            return Err(DetectError::NoCgroups { mountinfo });
        }
        // Every cgroup directory, v1 or v2, has `cgroup.procs`; a plain directory does not.
        let unreachable = hierarchies.retain(|path| path.join("cgroup.procs").is_file());
        if hierarchies.is_empty() {
            return Err(DetectError::NotUnderRoot {
                mountinfo,
                cgroup_root: cgroup_root.to_path_buf(),
                listed: unreachable,
            });
        }
        Ok(Self {
            hierarchies,
            unreachable,
            ns_per_tick: ns_per_tick(),
        })
    }

    /// The cgroup version the host runs.
    pub(crate) fn layout(&self) -> Layout {
        match (self.hierarchies.has_v1(), &self.hierarchies.unified) {
            (true, Some(_)) => Layout::Hybrid,
            (true, None) => Layout::V1,
            (false, _) => Layout::V2,
        }
    }

    /// Reads the cgroup at `cgroup`, relative to the hierarchies' root (`/docker/<id>`; `/` is
    /// the root cgroup).
    pub(crate) fn read(&self, cgroup: &str) -> Result<CgroupStats, ReadError> {
        let relative = Path::new(cgroup.trim_start_matches('/'));
        if relative
            .components()
            .any(|part| !matches!(part, Component::Normal(_)))
        {
            return Err(ReadError::OutsideRoot {
                cgroup: cgroup.to_owned(),
            });
        }
        let h = &self.hierarchies;
        let mut file = CgroupFile::new(relative);
        // The container store's path is the memory controller's (or the unified one), so
        // that hierarchy says whether the container is still there.
        let anchor = [
            &h.memory, &h.unified, &h.cpuacct, &h.cpu, &h.blkio, &h.pids, &h.cpuset,
        ]
        .into_iter()
        .find_map(Option::as_deref)
        .unwrap_or(Path::new(detect::HOST_CGROUP_MOUNT));
        if !file.exists(anchor)? {
            return Err(ReadError::Gone);
        }

        let mut stats = CgroupStats::default();
        if h.cpu.is_some() || h.cpuacct.is_some() {
            if let Some(cpuacct) = &h.cpuacct {
                v1::cpuacct(&mut file, cpuacct, self.ns_per_tick, &mut stats.cpu)?;
            }
            if let Some(cpu) = &h.cpu {
                v1::cpu(&mut file, cpu, &mut stats.cpu)?;
            }
        } else if let Some(unified) = &h.unified {
            v2::cpu(&mut file, unified, &mut stats.cpu)?;
        }
        match (&h.cpuset, &h.unified) {
            (Some(cpuset), _) => stats.cpu.cpus = v1::cpuset(&mut file, cpuset)?,
            (None, Some(unified)) => stats.cpu.cpus = v2::cpuset(&mut file, unified)?,
            (None, None) => {}
        }
        match (&h.memory, &h.unified) {
            (Some(memory), _) => v1::memory(&mut file, memory, &mut stats.memory)?,
            (None, Some(unified)) => v2::memory(&mut file, unified, &mut stats.memory)?,
            (None, None) => {}
        }
        match (&h.blkio, &h.unified) {
            (Some(blkio), _) => v1::blkio(&mut file, blkio, &mut stats.io)?,
            (None, Some(unified)) => v2::io(&mut file, unified, &mut stats.io)?,
            (None, None) => {}
        }
        if let Some(pids) = h.pids.as_ref().or(h.unified.as_ref()) {
            stats.pids = PidStats {
                current: file.number(pids, "pids.current")?,
                limit: file.limit(pids, "pids.max")?.flatten(),
            };
        }
        if let Some(unified) = &h.unified {
            stats.pressure = PressureStats {
                cpu: file.with(unified, "cpu.pressure", file::pressure)?,
                memory: file.with(unified, "memory.pressure", file::pressure)?,
                io: file.with(unified, "io.pressure", file::pressure)?,
            };
        }

        if file.missed && !file.still_exists(anchor)? {
            return Err(ReadError::Gone);
        }
        Ok(stats)
    }
}

impl fmt::Display for CgroupFs {
    /// The layout and where each hierarchy is, for the start-up log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = match self.layout() {
            Layout::V1 => "cgroup v1",
            Layout::Hybrid => "cgroup v1 (hybrid, with a unified hierarchy)",
            Layout::V2 => "cgroup v2",
        };
        write!(f, "{layout}:")?;
        let mut first = true;
        for (name, path) in self.hierarchies.slots() {
            if let Some(path) = path {
                let separator = if first { " " } else { ", " };
                write!(f, "{separator}{name} at {}", path.display())?;
                first = false;
            }
        }
        if !self.unreachable.is_empty() {
            write!(f, "; listed but not found:")?;
            for path in &self.unreachable {
                write!(f, " {}", path.display())?;
            }
        }
        Ok(())
    }
}

/// Nanoseconds per `USER_HZ` tick, the unit of v1 `cpuacct.stat`: `sysconf(_SC_CLK_TCK)`,
/// which is 100 on every Linux architecture the runner builds for, and 100 if it fails.
fn ns_per_tick() -> u64 {
    // SAFETY: `sysconf` only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match u64::try_from(ticks) {
        Ok(ticks) if ticks > 0 => 1_000_000_000 / ticks,
        _ => 10_000_000,
    }
}

/// Values from here up are the kernel's "no limit" (v1 prints `PAGE_COUNTER_MAX` pages, the
/// page-rounded `i64::MAX`: 9223372036854771712 with 4 KiB pages). The Agent compares with
/// `(i64::MAX / pagesize) * pagesize`; 2^62 bytes (4 EiB) is no real limit whatever the page
/// size.
const UNLIMITED: u64 = 1 << 62;

fn limited(value: Option<u64>) -> Option<u64> {
    value.filter(|&v| v < UNLIMITED)
}

/// `device`'s entry in `io`, added if new (a handful of devices: a scan beats a map).
fn device_entry(io: &mut Vec<DeviceIo>, device: Device) -> &mut DeviceIo {
    let index = match io.iter().position(|entry| entry.device == device) {
        Some(index) => index,
        None => {
            io.push(DeviceIo {
                device,
                read_bytes: None,
                write_bytes: None,
                read_ops: None,
                write_ops: None,
            });
            io.len() - 1
        }
    };
    &mut io[index]
}

#[cfg(test)]
mod tests;
