//! The host's own metrics, named, typed and in the units of the Datadog Agent's default core
//! checks (`cpu`, `load`, `memory`, `uptime`, `network`, `disk`, `io`), so that a host running
//! Kennel needs no second agent and the Agent's dashboards keep working.
//!
//! One [`HostReader`] is built once and [`HostReader::read`] is called every collection
//! interval. It reads plain files under the configured procfs and sysfs roots (and `statvfs`
//! per filesystem), keeps what a percentage or a per-second figure needs from the previous
//! read, and returns [`MetricSample`]s. Cumulative counters are submitted raw as
//! [`MetricType::Rate`] (or [`MetricType::MonotonicCount`]) for the host's
//! [`CheckSampler`](crate::aggregator::CheckSampler) to turn into per-second rates across reads,
//! as the Agent's sender does; what the Agent computes itself from two readings (CPU
//! percentages, `system.io.*_s` in kB/s, `await`, `util`) is computed here and submitted as a
//! gauge. So the first read has neither: like the Agent's first run, it sets the baseline.
//!
//! A read is synchronous and cheap: about 0.3 ms of CPU on this 2-core test VM, six times
//! less than a scrape of `prometheus-node-exporter` with the matching collectors (the
//! `host_metrics` bench). Each file is read into one reused buffer; the mount table, whose
//! formatting is most of a docker host's cost, is kept open and read again only when the
//! kernel flags a mount or unmount (or every [`TAG_REFRESH_READS`] reads, for a file that
//! cannot say); sysfs tag files are read when an interface or device appears and every
//! [`TAG_REFRESH_READS`] reads after. Most of the rest is the kernel formatting `net/netstat`
//! and `vmstat`. `statvfs` on a dead network filesystem blocks, as it does for the Agent (which
//! gives up after 5 s): call `read` from a blocking thread, not from an async task.
//!
//! # What is reported, and from where
//!
//! Paths are under `procfs_root` (`<procfs>`) and `sysfs_root` (`<sysfs>`). Types: `gauge`
//! unless said; `rate` is a raw counter that becomes per second; `count` a monotonic count.
//!
//! | Metrics | Unit | From |
//! |---|---|---|
//! | `system.cpu.{user,system,interrupt,iowait,idle,stolen,guest}` | % of all CPUs over the interval | `<procfs>/stat` deltas |
//! | `system.cpu.{user,nice,system,idle,iowait,irq,softirq,steal,guest,guestnice}.total` (`core:cpu-total`) | s since boot | `<procfs>/stat` |
//! | `system.cpu.num_cores`; `system.cpu.context_switches` (count) | CPUs; switches | `<procfs>/stat` |
//! | `system.load.{1,5,15}`, `system.load.norm.{1,5,15}` (÷ cores) | run queue | `<procfs>/loadavg` |
//! | `system.mem.{total,free,used,usable,cached,buffered,shared,slab,slab_reclaimable,page_tables,commit_limit,committed_as}` | MiB | `<procfs>/meminfo` |
//! | `system.mem.pct_usable`, `system.swap.pct_free` | fraction 0–1 | `<procfs>/meminfo` |
//! | `system.swap.{total,free,used,cached}`; `system.swap.{swap_in,swap_out}` (rate) | MiB; MiB/s | `meminfo`; `<procfs>/vmstat` |
//! | `system.uptime` | s | `<procfs>/uptime` |
//! | `system.net.{bytes_rcvd,bytes_sent}` (rate) per interface | B/s | `<procfs>/1/net/dev` |
//! | `system.net.packets_{in,out}.{count,error,drop}` (rate) per interface | packets/s | `<procfs>/1/net/dev` |
//! | `system.net.{ip,tcp,udp}.*` (rate, and `.count` as count) | per s; events | `<procfs>/1/net/{snmp,netstat}` |
//! | `system.disk.{total,used,free}` per filesystem | KiB | mount table, `statvfs` |
//! | `system.disk.in_use`, `system.fs.inodes.in_use`; `system.disk.utilized`, `system.fs.inodes.utilized` | fraction 0–1; % | `statvfs` |
//! | `system.fs.inodes.{total,used,free}` per filesystem | inodes | `statvfs` |
//! | `system.disk.{read_time,write_time}` (count); `system.disk.{read_time_pct,write_time_pct}` (rate) | ms; ms×0.1/s | `<procfs>/diskstats` |
//! | `system.io.{r_s,w_s,rrqm_s,wrqm_s}` (rate) per block device | requests/s | `<procfs>/diskstats` |
//! | `system.io.{rkb_s,wkb_s}`; `avg_rq_sz`; `{await,r_await,w_await,svctm}`; `avg_q_sz`; `util` | KiB/s; sectors; ms; see below; % | `<procfs>/diskstats` deltas |
//! | `system.io.{block_in,block_out}` (rate) | see below | `<procfs>/vmstat` |
//!
//! Tags, as the Agent's: `device:<interface>` and `device_name:<interface>` on `system.net.*`
//! per interface, with `speed:<Mb/s>` and `mtu:<bytes>` where `<sysfs>/class/net/<if>/` has
//! them; `device:<source>` (`/dev/vda1`, `tmpfs`) and `device_name:<basename>` on filesystems;
//! `device:<name>` and `device_name:<name>` on block devices, with `device_label:<dm name>` for
//! device-mapper devices (`<sysfs>/class/block/<name>/dm/name`).
//!
//! # Where Kennel follows the Agent, quirks included
//!
//! The point is the Agent's dashboards and monitors keep their meaning, so its arithmetic is
//! kept even where it is odd, and said here:
//! - `system.mem.used` is `MemTotal − MemFree` (page cache counts as used);
//!   `system.mem.cached` is `Cached + SReclaimable` (gopsutil's).
//! - `system.cpu.user` includes `nice`; `system.cpu.system` includes `irq` and `softirq`, which
//!   `system.cpu.interrupt` reports on their own; the total the percentages divide is the
//!   eight columns without `guest` (which the kernel already counts in `user`).
//! - `system.disk.in_use` is a fraction (0–1) and `utilized` the same as a percent;
//!   `used / (used + available)`, so blocks reserved for root count as neither (as `df`).
//! - `system.io.avg_q_sz` divides the weighted milliseconds per second by 1024, not 1000;
//!   `system.io.block_in`/`block_out` are `pgpgin`/`pgpgout` (KiB) × 4096 per second; the
//!   `system.io.*` gauges are rounded to two decimals: all as the Agent's `io` check does.
//! - Block devices are every line of `diskstats` with any non-zero counter: whole disks and
//!   partitions, not `loop` devices that were never used.
//! - Filesystems: every mount whose source is not `none` and whose size is not 0, except
//!   `iso9660` and `tracefs` and `/proc/sys/fs/binfmt_misc` (the Agent's default excludes). The
//!   Agent tags a filesystem by its source, not its mount point, so several mounts of one
//!   source (`tmpfs` on `/run` and `/dev/shm`) are one series: Kennel keeps the last one in
//!   the mount table, as the Agent's last submission wins. Pseudo filesystems whose size is 0
//!   anyway (`proc`, `sysfs`, `cgroup`, ...) are skipped without a `statvfs`.
//! - `lo` is not reported (the Agent's default `excluded_interfaces`).
//!
//! Where it does not:
//! - `autofs` mounts are skipped: a `statvfs` on one would mount it.
//! - A counter that goes backwards (the kernel's `iowait` can) gives 0 %, not a negative one.
//! - `system.uptime` keeps `/proc/uptime`'s hundredths of a second; the Agent's is whole
//!   seconds since `btime`.
//!
//! # Filesystems when the runner is in a container
//!
//! With `procfs_root` at `/proc` the runner's own mount table (`/proc/self/mountinfo`) is read
//! and each mount point is `statvfs`ed as is: on the host, that is the host's. With
//! `procfs_root` elsewhere (the host's procfs at `/host/proc`), the host's table is read from
//! `<procfs>/1/mountinfo` and each mount point is reached through `<procfs>/1/root/<mount
//! point>`, the host's root as init sees it; that needs the right to inspect pid 1
//! (`CAP_SYS_PTRACE`, or root with at least init's capabilities). Where pid 1 is closed (some
//! sandboxes make it undumpable), pid 2 is tried: `kthreadd` lives in the initial mount
//! namespace and has no memory to protect. Where neither can be reached, the problem is said
//! once, with the path, and the runner's own mounts are reported instead.
//!
//! Network counters come from `<procfs>/1/net/dev` (init's namespace: the host's), not from
//! `<procfs>/net/dev`, which is the reading process's own namespace; `net/dev` of another
//! process needs no privilege. Where pid 1 is not visible, the runner's own namespace is read.
//!
//! # Problems
//!
//! A file that cannot be read, or a line that does not parse, is a [`Problem`] of its
//! [`Source`], returned by [`HostReader::problems`] after each read; the rest of the read goes
//! on. [`Problem::first`] marks a problem the previous read did not have, so a permission
//! problem is said once, with the path, and again only if it heals and comes back (the caller
//! counts them all). A mount point that disappears between the mount table and its `statvfs`
//! (a container stopping) is normal and silent.
//!
//! # Not done
//!
//! The Agent's optional extras (per-core CPU times, `collect_connection_state`, conntrack,
//! ethtool statistics, `tag_by_label`'s `blkid`, memory pressure from `vmstat`) and its
//! include/exclude settings: there is no key for them yet.

mod cpu;
mod disk;
mod io;
mod memory;
mod net;

use std::collections::HashSet;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::check::{MetricSample, MetricType, unix_seconds};

/// Reads between two readings of an interface's or a device's sysfs tag files (`speed`, `mtu`,
/// `dm/name`), which change rarely: one in 20 reads, every 5 minutes at the default interval.
pub const TAG_REFRESH_READS: u64 = 20;

/// What a problem was reading, as the Agent's check names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Cpu,
    Load,
    Memory,
    Uptime,
    Network,
    Disk,
    Io,
}

impl Source {
    /// The Agent's check name: `cpu`, `load`, `memory`, `uptime`, `network`, `disk`, `io`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Load => "load",
            Self::Memory => "memory",
            Self::Uptime => "uptime",
            Self::Network => "network",
            Self::Disk => "disk",
            Self::Io => "io",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why something could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not in the kernel's documented format.
    #[error("{}:{line}: {what}", path.display())]
    Format {
        path: PathBuf,
        /// 1-based; 0 when the problem is the file as a whole (a missing field).
        line: usize,
        what: String,
    },
    /// A filesystem's usage could not be had from `statvfs`.
    #[error("cannot statvfs {}: {source}", path.display())]
    Statvfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The host's mount namespace could not be reached; the runner's own mounts were read.
    #[error(
        "cannot reach the host's filesystems through {} ({source}): reporting the runner's own mounts; give the runner CAP_SYS_PTRACE, or set `procfs_root: /proc` to mean the runner's mounts",
        path.display()
    )]
    HostRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HostError {
    fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Format { path, .. }
            | Self::Statvfs { path, .. }
            | Self::HostRoot { path, .. } => path,
        }
    }
}

/// Something one read could not read.
#[derive(Debug)]
pub struct Problem {
    pub source: Source,
    pub error: HostError,
    /// The previous read did not have this problem (same source and path): say it now.
    pub first: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host metrics ({}): {}", self.source, self.error)
    }
}

/// The problems of the current read, and what is needed to tell new ones.
#[derive(Debug, Default)]
struct Problems {
    current: Vec<Problem>,
    previous: HashSet<(Source, PathBuf)>,
}

impl Problems {
    fn start_read(&mut self) {
        self.previous.clear();
        for problem in self.current.drain(..) {
            self.previous
                .insert((problem.source, problem.error.path().to_owned()));
        }
    }

    fn add(&mut self, source: Source, error: HostError) {
        let first = !self
            .previous
            .contains(&(source, error.path().to_path_buf()));
        self.current.push(Problem {
            source,
            error,
            first,
        });
    }

    /// A format problem at a line of `path` (0 for the file as a whole).
    fn format(&mut self, source: Source, path: &Path, line: usize, what: impl Into<String>) {
        self.add(
            source,
            HostError::Format {
                path: path.to_owned(),
                line,
                what: what.into(),
            },
        );
    }
}

/// Where every file is, resolved once.
#[derive(Debug)]
struct Paths {
    stat: PathBuf,
    loadavg: PathBuf,
    meminfo: PathBuf,
    vmstat: PathBuf,
    uptime: PathBuf,
    diskstats: PathBuf,
    /// Init's network namespace, then the runner's own.
    net_dev: [PathBuf; 2],
    snmp: [PathBuf; 2],
    netstat: [PathBuf; 2],
    mounts: disk::MountTables,
    sysfs: PathBuf,
}

impl Paths {
    fn new(procfs: &Path, sysfs: &Path) -> Self {
        let both = |file: &str| {
            [
                procfs.join("1/net").join(file),
                procfs.join("net").join(file),
            ]
        };
        Self {
            stat: procfs.join("stat"),
            loadavg: procfs.join("loadavg"),
            meminfo: procfs.join("meminfo"),
            vmstat: procfs.join("vmstat"),
            uptime: procfs.join("uptime"),
            diskstats: procfs.join("diskstats"),
            net_dev: both("dev"),
            snmp: both("snmp"),
            netstat: both("netstat"),
            mounts: disk::MountTables::new(procfs),
            sysfs: sysfs.to_owned(),
        }
    }
}

/// The host's metrics, read on demand; see the module docs.
#[derive(Debug)]
pub struct HostReader {
    host: String,
    paths: Paths,
    /// One buffer every file is read into.
    buf: String,
    cpu: cpu::CpuState,
    net: net::NetState,
    disk: disk::DiskState,
    io: io::IoState,
    problems: Problems,
    reads: u64,
    /// How many samples the last read had, to size the next one's vector.
    last_len: usize,
    /// `sysconf`'s clock ticks per second and page size, for `/proc/stat` and `vmstat`.
    ticks_per_second: f64,
    page_size: f64,
}

impl HostReader {
    /// A reader of the host whose procfs and sysfs are at `procfs_root` and `sysfs_root`
    /// (`/proc` and `/sys` on the host, `/host/proc` and `/host/sys` in a container), whose
    /// samples carry `hostname` (empty: none). Reads nothing yet.
    pub fn new(procfs_root: &Path, sysfs_root: &Path, hostname: String) -> Self {
        Self {
            host: hostname,
            paths: Paths::new(procfs_root, sysfs_root),
            buf: String::with_capacity(16 * 1024),
            cpu: cpu::CpuState::default(),
            net: net::NetState::default(),
            disk: disk::DiskState::default(),
            io: io::IoState::default(),
            problems: Problems::default(),
            reads: 0,
            last_len: 128,
            ticks_per_second: sysconf(libc::_SC_CLK_TCK, 100.0),
            page_size: sysconf(libc::_SC_PAGESIZE, 4096.0),
        }
    }

    /// Reads everything once. What could not be read is in [`Self::problems`] afterwards.
    pub fn read(&mut self) -> Vec<MetricSample> {
        let Self {
            host,
            paths,
            buf,
            cpu,
            net,
            disk,
            io,
            problems,
            reads,
            last_len,
            ticks_per_second,
            page_size,
        } = self;
        problems.start_read();
        *reads += 1;
        let mut samples = Vec::with_capacity(*last_len + 16);
        let mut out = Out {
            samples: &mut samples,
            host,
            timestamp: unix_seconds(SystemTime::now()),
        };
        let now = Instant::now();
        let mut files = Files { buf, problems };

        let cores = cpu.read(&paths.stat, &mut files, &mut out, *ticks_per_second);
        cpu::read_load(&paths.loadavg, cores, &mut files, &mut out);
        cpu::read_uptime(&paths.uptime, &mut files, &mut out);
        memory::read(
            &paths.meminfo,
            &paths.vmstat,
            *page_size,
            &mut files,
            &mut out,
        );
        net.read(paths, *reads, &mut files, &mut out);
        disk.read(&paths.mounts, *reads, &mut files, &mut out);
        io.read(
            &paths.diskstats,
            &paths.sysfs,
            now,
            *reads,
            &mut files,
            &mut out,
        );

        *last_len = samples.len();
        samples
    }

    /// What the last read could not read.
    pub fn problems(&self) -> &[Problem] {
        &self.problems.current
    }
}

/// `sysconf(name)`, or `default` where the system does not say.
fn sysconf(name: libc::c_int, default: f64) -> f64 {
    // SAFETY: sysconf takes an integer and returns one; it has no memory effects.
    let value = unsafe { libc::sysconf(name) };
    if value > 0 { value as f64 } else { default }
}

/// Reading files into the one buffer, with failures recorded as problems.
struct Files<'a> {
    buf: &'a mut String,
    problems: &'a mut Problems,
}

impl Files<'_> {
    /// The text of `path`, or `None` (and a problem of `source`) when it cannot be read.
    fn read(&mut self, source: Source, path: &Path) -> Option<&str> {
        match read_into(path, self.buf) {
            Ok(()) => Some(self.buf.as_str()),
            Err(error) => {
                self.problems.add(
                    source,
                    HostError::Read {
                        path: path.to_owned(),
                        source: error,
                    },
                );
                None
            }
        }
    }

    /// The text of the first of `paths` that can be read, and which; a problem of `source` for
    /// each one before it that cannot.
    fn read_first<'p>(&mut self, source: Source, paths: &'p [PathBuf]) -> Option<(&str, &'p Path)> {
        for path in paths {
            match read_into(path, self.buf) {
                Ok(()) => return Some((self.buf.as_str(), path)),
                Err(error) => self.problems.add(
                    source,
                    HostError::Read {
                        path: path.clone(),
                        source: error,
                    },
                ),
            }
        }
        None
    }
}

/// The first line of a file that did not parse, and how many did not: reported once per file
/// and read, after the text (which borrows the buffer) is done with.
#[derive(Debug, Default)]
struct BadLines {
    first: Option<(usize, String)>,
    count: usize,
}

impl BadLines {
    /// Line `index` (0-based) did not parse.
    fn note(&mut self, index: usize, what: impl Into<String>) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((index + 1, what.into()));
        }
    }

    fn report(self, problems: &mut Problems, source: Source, path: &Path) {
        if let Some((line, what)) = self.first {
            let what = match self.count {
                1 => what,
                n => format!("{what} (and {} more lines)", n - 1),
            };
            problems.format(source, path, line, what);
        }
    }
}

fn read_into(path: &Path, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf)?;
    Ok(())
}

/// Where one read's samples go.
struct Out<'a> {
    samples: &'a mut Vec<MetricSample>,
    host: &'a str,
    timestamp: f64,
}

impl Out<'_> {
    fn gauge(&mut self, name: &str, value: f64, tags: &[String]) {
        self.push(name, MetricType::Gauge, value, tags);
    }

    /// A raw cumulative counter, which the check sampler turns into a per-second rate.
    fn rate(&mut self, name: &str, value: f64, tags: &[String]) {
        self.push(name, MetricType::Rate, value, tags);
    }

    /// A raw cumulative counter, which the check sampler turns into a count of the interval.
    fn monotonic(&mut self, name: &str, value: f64, tags: &[String]) {
        self.push(name, MetricType::MonotonicCount, value, tags);
    }

    /// `tags` are sorted by the caller, once per device.
    fn push(&mut self, name: &str, kind: MetricType, value: f64, tags: &[String]) {
        // A division by a zero interval is nothing to report, not a NaN.
        if !value.is_finite() {
            return;
        }
        self.samples.push(MetricSample {
            name: name.to_owned(),
            kind,
            value,
            tags: tags.to_vec(),
            host: self.host.to_owned(),
            timestamp: self.timestamp,
        });
    }
}

/// The counter's increase from `last` to `now`, allowing for one wrap: at 2^32 for a value
/// that fitted in 32 bits (some diskstats fields are 32-bit on any kernel), else at 2^64, as
/// the Agent's `incrementWithOverflow`.
fn increase(now: u64, last: u64) -> u64 {
    if now >= last {
        now - last
    } else if last <= u64::from(u32::MAX) {
        now + (u64::from(u32::MAX) - last) + 1
    } else {
        now.wrapping_sub(last)
    }
}

/// Parses `fields` as integers into `into`, leaving 0 where there are fewer: how many there
/// were, or `None` when one is not an integer.
fn parse_u64s<'a>(fields: impl Iterator<Item = &'a str>, into: &mut [u64]) -> Option<usize> {
    into.fill(0);
    let mut parsed = 0;
    for (slot, field) in into.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
        parsed += 1;
    }
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_wraps_at_32_bits_for_32_bit_values_and_64_otherwise() {
        assert_eq!(increase(15, 10), 5);
        assert_eq!(increase(4, u64::from(u32::MAX) - 1), 6);
        assert_eq!(increase(4, u64::MAX - 1), 6);
    }

    /// A host's procfs and sysfs under a temporary directory, in the kernel's formats; the
    /// root filesystem, `/dev/sda1`, is the directory's own.
    fn fixture_host() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path().join("proc");
        let files = [
            (
                "stat",
                "cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 100 0 50 800 10 0 0 0 0 0\nctxt 1000\n",
            ),
            ("loadavg", "0.50 0.40 0.30 1/100 1234\n"),
            (
                "meminfo",
                "MemTotal: 2048 kB\nMemFree: 1024 kB\nMemAvailable: 1536 kB\n",
            ),
            ("vmstat", "pgpgin 1\npgpgout 2\npswpin 3\npswpout 4\n"),
            ("uptime", "100.25 50.00\n"),
            (
                "diskstats",
                "   8       0 sda 10 0 80 5 20 0 160 9 0 12 14\n",
            ),
            (
                "1/net/dev",
                "h1\nh2\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n",
            ),
            ("1/net/snmp", "Tcp: RetransSegs\nTcp: 7\n"),
            ("1/net/netstat", "TcpExt: ListenDrops\nTcpExt: 2\n"),
            (
                "1/mountinfo",
                "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:3 / /proc rw - proc proc rw\n",
            ),
        ];
        for (path, text) in files {
            let path = procfs.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(procfs.join("1/root")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        dir
    }

    #[test]
    fn a_host_gives_every_check_and_its_second_read_the_computed_figures() {
        let dir = fixture_host();
        let procfs = dir.path().join("proc");
        let mut reader = HostReader::new(&procfs, &dir.path().join("sys"), "h".to_owned());
        let first = reader.read();
        assert!(reader.problems().is_empty(), "{:?}", reader.problems());
        let names: HashSet<&str> = first.iter().map(|s| s.name.as_str()).collect();
        for name in [
            "system.cpu.num_cores",
            "system.cpu.user.total",
            "system.load.norm.1",
            "system.mem.usable",
            "system.swap.swap_in",
            "system.uptime",
            "system.net.bytes_rcvd",
            "system.net.tcp.retrans_segs",
            "system.net.tcp.listen_drops.count",
            "system.disk.total",
            "system.io.r_s",
            "system.io.block_in",
        ] {
            assert!(names.contains(name), "no {name}");
        }
        assert!(!names.contains("system.cpu.user") && !names.contains("system.io.util"));
        let disk = first
            .iter()
            .find(|s| s.name == "system.disk.total")
            .unwrap();
        assert_eq!(disk.tags, ["device:/dev/sda1", "device_name:sda1"]);
        assert!(first.iter().all(|s| s.host == "h" && s.tags.is_sorted()));

        // Some time and ticks later.
        std::fs::write(
            procfs.join("stat"),
            "cpu  130 0 60 860 10 0 0 0 0 0\ncpu0 1 1 1 1\n",
        )
        .unwrap();
        std::fs::write(
            procfs.join("diskstats"),
            "   8       0 sda 20 0 160 15 20 0 160 9 0 22 24\n",
        )
        .unwrap();
        let second = reader.read();
        let get = |name: &str| second.iter().find(|s| s.name == name).unwrap().value;
        assert_eq!(get("system.cpu.user"), 30.0);
        assert_eq!(get("system.cpu.idle"), 60.0);
        assert_eq!(get("system.io.r_await"), 1.0);
        assert!(second.iter().any(|s| s.name == "system.io.util"));
    }

    #[test]
    fn an_unreadable_file_is_a_problem_with_its_path_said_once_and_the_rest_is_read() {
        let dir = fixture_host();
        let procfs = dir.path().join("proc");
        std::fs::remove_file(procfs.join("diskstats")).unwrap();
        std::fs::write(procfs.join("loadavg"), "busy\n").unwrap();
        let mut reader = HostReader::new(&procfs, &dir.path().join("sys"), String::new());

        let samples = reader.read();
        assert!(samples.iter().any(|s| s.name == "system.mem.total"));
        assert!(!samples.iter().any(|s| s.name.starts_with("system.io.r_s")));
        let said: Vec<(Source, String, bool)> = reader
            .problems()
            .iter()
            .map(|p| (p.source, p.to_string(), p.first))
            .collect();
        let diskstats = procfs.join("diskstats");
        let loadavg = procfs.join("loadavg");
        assert_eq!(
            said,
            [
                (
                    Source::Load,
                    format!(
                        "host metrics (load): {}:1: expected three load averages",
                        loadavg.display()
                    ),
                    true
                ),
                (
                    Source::Io,
                    format!(
                        "host metrics (io): cannot read {}: No such file or directory (os error 2)",
                        diskstats.display()
                    ),
                    true
                ),
            ]
        );

        reader.read();
        assert_eq!(reader.problems().len(), 2);
        assert!(reader.problems().iter().all(|p| !p.first));
    }

    #[test]
    fn a_problem_is_first_once_until_it_heals() {
        let mut problems = Problems::default();
        let path = Path::new("/proc/diskstats");
        let firsts = |problems: &Problems| -> Vec<bool> {
            problems.current.iter().map(|p| p.first).collect()
        };
        problems.start_read();
        problems.format(Source::Io, path, 3, "bad");
        assert_eq!(firsts(&problems), [true]);
        problems.start_read();
        problems.format(Source::Io, path, 4, "bad again");
        assert_eq!(firsts(&problems), [false]);
        problems.start_read();
        problems.start_read();
        problems.format(Source::Io, path, 3, "back");
        assert_eq!(firsts(&problems), [true]);
    }
}
