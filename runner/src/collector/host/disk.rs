//! `system.disk.*` and `system.fs.inodes.*` per mounted filesystem (the Agent's `disk` check):
//! the mount table, then `statvfs` on each mount point. Where the table and the mount points
//! come from, in and out of a container, is in the parent module's docs.
//!
//! `mountinfo` (proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`:
//! mount id, parent id, major:minor, root within the filesystem, mount point, mount options,
//! zero or more optional fields, a `-`, the filesystem type, the source, super options. Paths
//! escape space, tab, newline and backslash as octal (`\040`).

use std::borrow::Cow;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::{BadLines, Files, HostError, Out, Source, TAG_REFRESH_READS};

/// Filesystem types not reported: the Agent's default excludes (`iso9660`, `tracefs`),
/// `autofs` (a `statvfs` would mount it), and pseudo filesystems whose size is 0, which the
/// Agent drops after a `statvfs` and Kennel without one.
const SKIPPED_TYPES: &[&str] = &[
    "iso9660",
    "tracefs",
    "autofs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "selinuxfs",
];

/// The Agent's default `mount_point_global_exclude`, `(/host)?/proc/sys/fs/binfmt_misc$`
/// (DataDog/datadog-agent#1961: reading it can hang).
fn excluded_mount_point(mount_point: &str) -> bool {
    mount_point
        .strip_suffix("/proc/sys/fs/binfmt_misc")
        .is_some_and(|prefix| prefix.is_empty() || prefix.ends_with("/host"))
}

/// Where the mount table is read and how its mount points are reached.
#[derive(Debug)]
pub(super) struct MountTables {
    /// The runner's own table, whose mount points are reached as they are.
    own: PathBuf,
    /// `<procfs>/<pid>/mountinfo` and `<procfs>/<pid>/root` for pid 1, then 2; empty when
    /// procfs is `/proc`, where the runner's own mounts are the host's.
    host: Vec<(PathBuf, PathBuf)>,
}

impl MountTables {
    pub(super) fn new(procfs: &Path) -> Self {
        let host = if procfs == Path::new("/proc") {
            Vec::new()
        } else {
            ["1", "2"]
                .iter()
                .map(|pid| {
                    (
                        procfs.join(pid).join("mountinfo"),
                        procfs.join(pid).join("root"),
                    )
                })
                .collect()
        };
        Self {
            own: Path::new("/proc/self/mountinfo").to_owned(),
            host,
        }
    }

    /// The table to read and the root its mount points are under (`None`: as they are). A
    /// host root that cannot be reached is a problem, and the runner's own table is read.
    fn choose(&self, problems: &mut super::Problems) -> (&Path, Option<&Path>) {
        let mut first_error = None;
        for (table, root) in &self.host {
            match rustix::fs::statvfs(root.as_path()) {
                Ok(_) => return (table, Some(root)),
                Err(error) => {
                    first_error.get_or_insert((root, error));
                }
            }
        }
        if let Some((root, error)) = first_error {
            problems.add(
                Source::Disk,
                HostError::HostRoot {
                    path: root.clone(),
                    source: error.into(),
                },
            );
        }
        (&self.own, None)
    }
}

/// What one `mountinfo` line says of a mount.
#[derive(Debug, PartialEq)]
pub(super) struct Mount<'a> {
    pub(super) mount_point: Cow<'a, str>,
    pub(super) fstype: &'a str,
    pub(super) source: Cow<'a, str>,
}

pub(super) fn parse_mountinfo_line(line: &str) -> Option<Mount<'_>> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    // The options, then optional fields up to the separator.
    fields.find(|f| *f == "-")?;
    let fstype = fields.next()?;
    let source = fields.next()?;
    Some(Mount {
        mount_point: unescape(mount_point),
        fstype,
        source: unescape(source),
    })
}

/// Undoes the kernel's octal escapes (`\040` is a space).
fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Whether the Agent would not report this mount, before asking its size.
fn skipped(mount: &Mount<'_>) -> bool {
    matches!(mount.source.as_ref(), "" | "none")
        || SKIPPED_TYPES.contains(&mount.fstype)
        || excluded_mount_point(&mount.mount_point)
}

/// A filesystem's usage as gopsutil (and psutil, and `df`) compute it, in bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Usage {
    pub(super) total: u64,
    pub(super) used: u64,
    /// Available to unprivileged users: what `df` calls available.
    pub(super) free: u64,
    pub(super) inodes_total: u64,
    pub(super) inodes_free: u64,
}

impl Usage {
    pub(super) fn new(
        fragment_size: u64,
        blocks: u64,
        blocks_free: u64,
        blocks_available: u64,
        inodes_total: u64,
        inodes_free: u64,
    ) -> Self {
        Self {
            total: blocks.saturating_mul(fragment_size),
            used: blocks
                .saturating_sub(blocks_free)
                .saturating_mul(fragment_size),
            free: blocks_available.saturating_mul(fragment_size),
            inodes_total,
            inodes_free,
        }
    }

    fn from_statvfs(s: &rustix::fs::StatVfs) -> Self {
        let fragment_size = if s.f_frsize > 0 {
            s.f_frsize
        } else {
            s.f_bsize
        };
        Self::new(
            fragment_size,
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
        )
    }

    fn emit(&self, tags: &[String], out: &mut Out<'_>) {
        // For legacy reasons (the Agent's own words) the unit is KiB.
        let kib = |bytes: u64| bytes as f64 / 1024.0;
        let reported = self.used + self.free;
        let percent = if reported == 0 {
            0.0
        } else {
            self.used as f64 * 100.0 / reported as f64
        };
        out.gauge("system.disk.total", kib(self.total), tags);
        out.gauge("system.disk.used", kib(self.used), tags);
        out.gauge("system.disk.free", kib(self.free), tags);
        out.gauge("system.disk.utilized", percent, tags);
        out.gauge("system.disk.in_use", percent / 100.0, tags);
        // btrfs and some others have no fixed inode count: the Agent reports none then.
        if self.inodes_total != 0 {
            let used = self.inodes_total.saturating_sub(self.inodes_free);
            let percent = used as f64 * 100.0 / self.inodes_total as f64;
            out.gauge("system.fs.inodes.total", self.inodes_total as f64, tags);
            out.gauge("system.fs.inodes.used", used as f64, tags);
            out.gauge("system.fs.inodes.free", self.inodes_free as f64, tags);
            out.gauge("system.fs.inodes.utilized", percent, tags);
            out.gauge("system.fs.inodes.in_use", percent / 100.0, tags);
        }
    }
}

/// `device:<source>` and `device_name:<its last path component>`, sorted.
fn filesystem_tags(source: &str) -> Vec<String> {
    let base = source.rsplit('/').find(|s| !s.is_empty()).unwrap_or(source);
    vec![format!("device:{source}"), format!("device_name:{base}")]
}

/// A filesystem source the Agent would report, and its mount points, last mounted first: the
/// first whose size can be had is the one reported.
#[derive(Debug, PartialEq)]
struct Candidates {
    source: String,
    mount_points: Vec<String>,
}

/// The mount table as last read, and the open file the kernel flags when it changes.
#[derive(Debug)]
struct Table {
    path: PathBuf,
    file: File,
    candidates: Vec<Candidates>,
    read_at: u64,
}

/// The mount table, read again only when it changed: a `mountinfo` of a docker host holds a
/// long line per container, and formatting them is most of what reading it costs.
#[derive(Debug, Default)]
pub(super) struct DiskState {
    table: Option<Table>,
}

impl DiskState {
    /// Every reported filesystem's usage.
    pub(super) fn read(
        &mut self,
        tables: &MountTables,
        reads: u64,
        files: &mut Files<'_>,
        out: &mut Out<'_>,
    ) {
        let (path, root) = tables.choose(files.problems);
        let current = self.table.as_ref().is_some_and(|t| {
            t.path == path && reads - t.read_at < TAG_REFRESH_READS && !changed(&t.file)
        });
        if !current {
            self.table = read_table(path, reads, files);
        }
        let Some(table) = &self.table else {
            return;
        };
        for candidates in &table.candidates {
            for mount_point in &candidates.mount_points {
                let path = match root {
                    Some(root) => Cow::Owned(root.join(mount_point.trim_start_matches('/'))),
                    None => Cow::Borrowed(Path::new(mount_point)),
                };
                let usage = match rustix::fs::statvfs(path.as_ref()) {
                    Ok(statvfs) => Usage::from_statvfs(&statvfs),
                    // Unmounted since the table was read (a container stopping): nothing to say.
                    Err(Errno::NOENT | Errno::NOTDIR) => continue,
                    Err(error) => {
                        files.problems.add(
                            Source::Disk,
                            HostError::Statvfs {
                                path: path.into_owned(),
                                source: error.into(),
                            },
                        );
                        continue;
                    }
                };
                if usage.total != 0 {
                    usage.emit(&filesystem_tags(&candidates.source), out);
                    break;
                }
            }
        }
    }
}

/// Whether the kernel flagged the open mount table as changed since the last look: it marks
/// an open `mountinfo` with a priority event at every mount and unmount in its namespace
/// (proc(5)). A file that cannot say (a fixture) never says so, hence the re-reads every
/// [`TAG_REFRESH_READS`] reads as well.
fn changed(file: &File) -> bool {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for a descriptor `file` keeps open; a zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready < 0 || poll.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

/// Opens and reads the mount table at `path`, keeping the file open to be polled.
fn read_table(path: &Path, reads: u64, files: &mut Files<'_>) -> Option<Table> {
    let read = File::open(path).and_then(|mut file| {
        files.buf.clear();
        file.read_to_string(files.buf)?;
        Ok(file)
    });
    let file = match read {
        Ok(file) => file,
        Err(error) => {
            files.problems.add(
                Source::Disk,
                HostError::Read {
                    path: path.to_owned(),
                    source: error,
                },
            );
            return None;
        }
    };
    let mut bad = BadLines::default();
    let candidates = parse_table(files.buf, &mut bad);
    bad.report(files.problems, Source::Disk, path);
    Some(Table {
        path: path.to_owned(),
        file,
        candidates,
        read_at: reads,
    })
}

/// The sources worth a `statvfs` in a mount table, in the order of their last mounts.
fn parse_table(text: &str, bad: &mut BadLines) -> Vec<Candidates> {
    let lines: Vec<&str> = text.lines().collect();
    let mut all: Vec<Candidates> = Vec::new();
    for (index, line) in lines.iter().enumerate().rev() {
        let Some(mount) = parse_mountinfo_line(line) else {
            bad.note(index, "expected a mount point, a `-`, a type and a source");
            continue;
        };
        if skipped(&mount) {
            continue;
        }
        let mount_point = mount.mount_point.into_owned();
        match all.iter_mut().find(|c| c.source == mount.source) {
            Some(candidates) => candidates.mount_points.push(mount_point),
            None => all.push(Candidates {
                source: mount.source.into_owned(),
                mount_points: vec![mount_point],
            }),
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_the_mount_point_type_and_source() {
        let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue";
        assert_eq!(
            parse_mountinfo_line(line),
            Some(Mount {
                mount_point: "/mnt2".into(),
                fstype: "ext3",
                source: "/dev/root".into(),
            })
        );
        let escaped = r"40 27 0:50 / /media/my\040disk\134x rw - vfat /dev/sdb\0401 rw";
        let mount = parse_mountinfo_line(escaped).unwrap();
        assert_eq!(mount.mount_point, r"/media/my disk\x");
        assert_eq!(mount.source, "/dev/sdb 1");
        assert_eq!(parse_mountinfo_line("36 35 98:0 / /mnt rw"), None);
    }

    #[test]
    fn the_agents_default_excludes_and_sizeless_pseudo_filesystems_are_skipped() {
        let cases = [
            ("/", "ext4", "/dev/vda1", false),
            ("/dev/shm", "tmpfs", "tmpfs", false),
            (
                "/var/lib/docker/overlay2/x/merged",
                "overlay",
                "overlay",
                false,
            ),
            ("/proc", "proc", "proc", true),
            ("/sys/fs/cgroup/memory", "cgroup", "cgroup", true),
            ("/media/cdrom", "iso9660", "/dev/sr0", true),
            ("/mnt/x", "ext4", "none", true),
            (
                "/proc/sys/fs/binfmt_misc",
                "binfmt_misc",
                "binfmt_misc",
                true,
            ),
            ("/host/proc/sys/fs/binfmt_misc", "ext4", "x", true),
            ("/srv/proc/sys/fs/binfmt_misc", "ext4", "x", false),
            ("/misc", "autofs", "systemd-1", true),
        ];
        for (mount_point, fstype, source, skip) in cases {
            let mount = Mount {
                mount_point: mount_point.into(),
                fstype,
                source: source.into(),
            };
            assert_eq!(skipped(&mount), skip, "{mount_point} {fstype} {source}");
        }
    }

    #[test]
    fn usage_is_dfs_used_over_used_and_available() {
        // 100 blocks of 4 KiB, 40 free of which 30 available to users, 1000 inodes 250 free.
        let usage = Usage::new(4096, 100, 40, 30, 1000, 250);
        let mut samples = Vec::new();
        let mut out = Out {
            samples: &mut samples,
            host: "h",
            timestamp: 1.0,
        };
        usage.emit(&filesystem_tags("/dev/vda1"), &mut out);
        let got: Vec<(&str, f64)> = samples.iter().map(|s| (s.name.as_str(), s.value)).collect();
        assert_eq!(
            got,
            [
                ("system.disk.total", 400.0),
                ("system.disk.used", 240.0),
                ("system.disk.free", 120.0),
                ("system.disk.utilized", 200.0 / 3.0),
                ("system.disk.in_use", 200.0 / 3.0 / 100.0),
                ("system.fs.inodes.total", 1000.0),
                ("system.fs.inodes.used", 750.0),
                ("system.fs.inodes.free", 250.0),
                ("system.fs.inodes.utilized", 75.0),
                ("system.fs.inodes.in_use", 0.75),
            ]
        );
        assert_eq!(samples[0].tags, ["device:/dev/vda1", "device_name:vda1"]);
        assert_eq!(
            filesystem_tags("tmpfs"),
            ["device:tmpfs", "device_name:tmpfs"]
        );
    }

    /// Reads the filesystems once as read number `reads`: the totals' tags, and the problems.
    fn read_once(
        state: &mut DiskState,
        tables: &MountTables,
        reads: u64,
    ) -> (Vec<Vec<String>>, Vec<String>) {
        let mut problems = super::super::Problems::default();
        let mut buf = String::new();
        let mut samples = Vec::new();
        let mut out = Out {
            samples: &mut samples,
            host: "h",
            timestamp: 1.0,
        };
        let mut files = Files {
            buf: &mut buf,
            problems: &mut problems,
        };
        state.read(tables, reads, &mut files, &mut out);
        let totals = samples
            .into_iter()
            .filter(|s| s.name == "system.disk.total")
            .map(|s| s.tags)
            .collect();
        let problems = problems.current.iter().map(|p| p.to_string()).collect();
        (totals, problems)
    }

    #[test]
    fn a_table_gives_each_source_once_from_its_last_mount_and_skips_vanished_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let table = dir.path().join("mountinfo");
        let text = format!(
            "1 0 8:1 / {a} rw - ext4 /dev/sda1 rw\n\
             2 1 0:5 / /proc rw - proc proc rw\n\
             3 1 0:6 / {gone} rw - ext4 /dev/sdz9 rw\n\
             4 1 8:1 /x {b} rw shared:1 - ext4 /dev/sda1 rw\n\
             not a mount\n",
            a = a.display(),
            b = b.display(),
            gone = dir.path().join("gone").display(),
        );
        std::fs::write(&table, &text).unwrap();
        let mut bad = BadLines::default();
        assert_eq!(
            parse_table(&text, &mut bad),
            [
                Candidates {
                    source: "/dev/sda1".to_owned(),
                    mount_points: vec![b.display().to_string(), a.display().to_string()],
                },
                Candidates {
                    source: "/dev/sdz9".to_owned(),
                    mount_points: vec![dir.path().join("gone").display().to_string()],
                },
            ]
        );

        let tables = MountTables {
            own: table,
            host: Vec::new(),
        };
        let (totals, problems) = read_once(&mut DiskState::default(), &tables, 1);
        assert_eq!(totals, [["device:/dev/sda1", "device_name:sda1"]]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(":5: expected a mount point"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_table_that_cannot_signal_changes_is_read_again_every_refresh_period() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("mountinfo");
        let line =
            |source: &str| format!("1 0 8:1 / {} rw - ext4 {source} rw\n", dir.path().display());
        std::fs::write(&table, line("/dev/sda1")).unwrap();
        let tables = MountTables {
            own: table.clone(),
            host: Vec::new(),
        };
        let mut state = DiskState::default();
        let device = |totals: Vec<Vec<String>>| totals[0][0].clone();
        assert_eq!(
            device(read_once(&mut state, &tables, 1).0),
            "device:/dev/sda1"
        );
        std::fs::write(&table, line("/dev/sdb1")).unwrap();
        assert_eq!(
            device(read_once(&mut state, &tables, 2).0),
            "device:/dev/sda1"
        );
        let refresh = 1 + TAG_REFRESH_READS;
        assert_eq!(
            device(read_once(&mut state, &tables, refresh).0),
            "device:/dev/sdb1"
        );
    }

    #[test]
    fn an_unreachable_host_root_is_said_and_the_own_table_read() {
        let dir = tempfile::tempdir().unwrap();
        let tables = MountTables::new(dir.path());
        let mut problems = super::super::Problems::default();
        let (table, root) = tables.choose(&mut problems);
        assert_eq!((table, root), (Path::new("/proc/self/mountinfo"), None));
        assert!(matches!(
            &problems.current[0].error,
            HostError::HostRoot { path, .. } if path == &dir.path().join("1/root")
        ));
    }
}
