//! Which cgroup hierarchies the host has, and where they are under `cgroup_root`, from a mount
//! table (`/proc/<pid>/mountinfo`, `Documentation/filesystems/proc.rst` section 3.5).
//!
//! A `cgroup` mount is one cgroup v1 hierarchy; its super options name the controllers bound
//! to it (`rw,memory`, or `rw,cpu,cpuacct` when co-mounted). A `cgroup2` mount is the unified
//! hierarchy. The Agent (`pkg/util/cgroups/reader_detector.go`) reads the same mounts from
//! `/proc/mounts` and takes the controllers from the mountpoint's name; the super options are
//! what the kernel itself says, whatever the directory is called. Like the Agent, a
//! controller mounted twice keeps its shortest mountpoint.
//!
//! Re-rooting: a mountpoint under `/sys/fs/cgroup` in the table is taken to be the same
//! directory under `cgroup_root` (the host's `/sys/fs/cgroup/memory` is the runner's
//! `/host/sys/fs/cgroup/memory`). When the table is the runner's own and already lists
//! hierarchies under `cgroup_root` (the host's cgroupfs bind-mounted there, recursively), those
//! are used as they are and the runner's own `/sys/fs/cgroup` is ignored, as the Agent ignores
//! mounts outside its host prefix. Mounts anywhere else are ignored.
//!
//! The mount's root field is not used: inside a cgroup namespace it is relative to the
//! reader's namespace, not to the hierarchy, and paths are resolved from each hierarchy's root
//! as the host mounts it.

use std::path::{Path, PathBuf};

/// Where the host mounts its cgroup hierarchies.
pub(super) const HOST_CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The hierarchies the readers use, each as a directory under `cgroup_root`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Hierarchies {
    pub(super) cpu: Option<PathBuf>,
    pub(super) cpuacct: Option<PathBuf>,
    pub(super) cpuset: Option<PathBuf>,
    pub(super) memory: Option<PathBuf>,
    pub(super) blkio: Option<PathBuf>,
    pub(super) pids: Option<PathBuf>,
    /// The cgroup2 (unified) hierarchy: everything on a v2 host, PSI (and any controller not
    /// bound to v1) on a hybrid one.
    pub(super) unified: Option<PathBuf>,
}

impl Hierarchies {
    /// Each v1 controller's slot, by name, then the unified hierarchy's (named `unified`).
    pub(super) fn slots(&self) -> [(&'static str, &Option<PathBuf>); 7] {
        [
            ("cpu", &self.cpu),
            ("cpuacct", &self.cpuacct),
            ("cpuset", &self.cpuset),
            ("memory", &self.memory),
            ("blkio", &self.blkio),
            ("pids", &self.pids),
            ("unified", &self.unified),
        ]
    }

    fn slots_mut(&mut self) -> [(&'static str, &mut Option<PathBuf>); 7] {
        [
            ("cpu", &mut self.cpu),
            ("cpuacct", &mut self.cpuacct),
            ("cpuset", &mut self.cpuset),
            ("memory", &mut self.memory),
            ("blkio", &mut self.blkio),
            ("pids", &mut self.pids),
            ("unified", &mut self.unified),
        ]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots().iter().all(|(_, path)| path.is_none())
    }

    /// Whether any controller the readers use is on a v1 hierarchy.
    pub(super) fn has_v1(&self) -> bool {
        self.slots()
            .iter()
            .any(|(name, path)| *name != "unified" && path.is_some())
    }

    /// Drops the hierarchies whose directory `exists` says is not there, returning them.
    pub(super) fn retain(&mut self, exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        let mut dropped: Vec<PathBuf> = Vec::new();
        for (_, slot) in self.slots_mut() {
            if let Some(path) = slot.take_if(|path| !exists(path))
                && !dropped.contains(&path)
            {
                dropped.push(path);
            }
        }
        dropped
    }
}

/// The hierarchies a mount table lists, re-rooted at `cgroup_root`.
pub(super) fn hierarchies(mountinfo: &str, cgroup_root: &Path) -> Hierarchies {
    let host = Path::new(HOST_CGROUP_MOUNT);
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let bound_at_root = cgroup_root != host
        && mounts
            .iter()
            .any(|mount| mount.mountpoint.starts_with(cgroup_root));

    let mut found = Hierarchies::default();
    for mount in mounts {
        let path = if bound_at_root {
            if !mount.mountpoint.starts_with(cgroup_root) {
                continue;
            }
            mount.mountpoint
        } else {
            match mount.mountpoint.strip_prefix(host) {
                Ok(rest) if rest.as_os_str().is_empty() => cgroup_root.to_path_buf(),
                Ok(rest) => cgroup_root.join(rest),
                Err(_) => continue,
            }
        };
        if mount.unified {
            keep_shortest(&mut found.unified, &path);
            continue;
        }
        for option in mount.super_options.split(',') {
            if let Some((_, slot)) = found
                .slots_mut()
                .into_iter()
                .find(|(name, _)| *name != "unified" && *name == option)
            {
                keep_shortest(slot, &path);
            }
        }
    }
    found
}

fn keep_shortest(slot: &mut Option<PathBuf>, path: &Path) {
    if slot
        .as_ref()
        .is_none_or(|kept| path.as_os_str().len() < kept.as_os_str().len())
    {
        *slot = Some(path.to_path_buf());
    }
}

/// One cgroup filesystem mount.
struct Mount {
    mountpoint: PathBuf,
    /// `cgroup2` rather than `cgroup`.
    unified: bool,
    super_options: String,
}

impl Mount {
    /// A mountinfo line:
    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
    /// id, parent, device, root, mountpoint, options, optional fields up to `-`, then the
    /// filesystem type, the source and the super options.
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let mountpoint = fields.nth(4)?;
        let mut after_separator = fields.skip_while(|field| *field != "-").skip(1);
        let unified = match after_separator.next()? {
            "cgroup" => false,
            "cgroup2" => true,
            _ => return None,
        };
        let super_options = after_separator.nth(1).unwrap_or_default();
        Some(Self {
            mountpoint: PathBuf::from(unescape(mountpoint)),
            unified,
            super_options: super_options.to_owned(),
        })
    }
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash in mountpoints
/// (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Option<PathBuf> {
        Some(PathBuf::from(p))
    }

    /// This machine's layout (separate `cpu` and `cpuacct` mounts and an empty unified
    /// hierarchy), and the kernel's mountinfo example line among them, which is no cgroup.
    const HYBRID_SEPARATE: &str = "\
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn controllers_come_from_the_super_options_and_are_re_rooted() {
        let found = hierarchies(HYBRID_SEPARATE, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(
            found,
            Hierarchies {
                cpu: path("/host/sys/fs/cgroup/cpu"),
                cpuacct: path("/host/sys/fs/cgroup/cpuacct"),
                memory: path("/host/sys/fs/cgroup/memory"),
                unified: path("/host/sys/fs/cgroup/unified"),
                ..Hierarchies::default()
            }
        );
        assert!(found.has_v1());
    }

    #[test]
    fn a_controller_mounted_twice_keeps_its_shortest_mountpoint() {
        let table = "\
1 0 0:1 / /sys/fs/cgroup/memory/nested rw - cgroup cgroup rw,memory
2 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
3 0 0:2 / /srv/elsewhere/memory rw - cgroup cgroup rw,memory
";
        let found = hierarchies(table, Path::new("/sys/fs/cgroup"));
        assert_eq!(found.memory, path("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn escaped_mountpoints_are_unescaped() {
        let table = "1 0 0:1 / /sys/fs/cgroup/odd\\040name rw - cgroup2 cgroup2 rw\n";
        let found = hierarchies(table, Path::new("/sys/fs/cgroup"));
        assert_eq!(found.unified, path("/sys/fs/cgroup/odd name"));
    }

    #[test]
    fn a_name_only_hierarchy_is_no_controller() {
        let table = "\
1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
2 0 0:2 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let found = hierarchies(table, Path::new("/sys/fs/cgroup"));
        assert!(!found.has_v1());
        assert_eq!(found.unified, path("/sys/fs/cgroup"));
    }

    #[test]
    fn dropping_missing_hierarchies_reports_each_path_once() {
        let mut found = Hierarchies {
            cpu: path("/r/cpu,cpuacct"),
            cpuacct: path("/r/cpu,cpuacct"),
            memory: path("/r/memory"),
            ..Hierarchies::default()
        };
        let dropped = found.retain(|p| p == Path::new("/r/memory"));
        assert_eq!(dropped, vec![PathBuf::from("/r/cpu,cpuacct")]);
        assert_eq!(found.memory, path("/r/memory"));
        assert_eq!(found.cpu, None);
    }
}
