//! Block device names (`sda`, `nvme0n1`, `dm-0`) for the `maj:min` numbers cgroup IO files
//! give, from `<sysfs_root>/dev/block/<maj>:<min>/uevent`'s `DEVNAME`
//! (`Documentation/ABI/stable/sysfs-dev`).
//!
//! Names are cached: one file read per device the first time it is seen, none after. A
//! number that has no device (removed, or outside this sysfs) is looked up again the next
//! time, since it is rare and a device may appear under it. The Agent builds the same mapping
//! from `/proc/diskstats` every minute (`GetDiskDeviceMapping`); per device from sysfs reads
//! one small file instead of every disk's counters. A device number reused by a different
//! device (a hot-swapped disk on a dynamic major) keeps its old name until the cache is
//! reset, which it is when it outgrows [`MAX_CACHED`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Device;

/// Names kept before the cache starts over.
const MAX_CACHED: usize = 1024;

/// The cache of device names.
#[derive(Debug, Clone)]
pub(crate) struct DeviceNames {
    sysfs_root: PathBuf,
    names: HashMap<Device, Box<str>>,
}

impl DeviceNames {
    /// Names read under `sysfs_root` (`/sys`, or `/host/sys` in a container).
    pub(crate) fn new(sysfs_root: &Path) -> Self {
        Self {
            sysfs_root: sysfs_root.to_path_buf(),
            names: HashMap::new(),
        }
    }

    /// `device`'s name, or `None` when sysfs does not know the number.
    pub(crate) fn name(&mut self, device: Device) -> Option<&str> {
        if !self.names.contains_key(&device) {
            let name = self.lookup(device)?;
            if self.names.len() >= MAX_CACHED {
                self.names.clear();
            }
            self.names.insert(device, name);
        }
        self.names.get(&device).map(|name| &**name)
    }

    fn lookup(&self, device: Device) -> Option<Box<str>> {
        let uevent = self.sysfs_root.join(format!("dev/block/{device}/uevent"));
        let text = std::fs::read_to_string(uevent).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("DEVNAME="))
            .filter(|name| !name.is_empty())
            .map(Box::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::cgroup::tests::fixture;

    #[test]
    fn names_come_from_uevent_and_stay_cached() {
        let sysfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sysfs.path().join("dev/block/8:0")).unwrap();
        std::fs::write(
            sysfs.path().join("dev/block/8:0/uevent"),
            "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\nDISKSEQ=1\n",
        )
        .unwrap();
        let mut names = DeviceNames::new(sysfs.path());
        let sda = Device { major: 8, minor: 0 };
        assert_eq!(names.name(sda), Some("sda"));
        // Once cached, sysfs is not asked again.
        std::fs::remove_dir_all(sysfs.path().join("dev")).unwrap();
        assert_eq!(names.name(sda), Some("sda"));
        assert_eq!(
            names.name(Device {
                major: 8,
                minor: 16
            }),
            None
        );
    }

    #[test]
    fn fixture_devices_are_named() {
        let mut names = DeviceNames::new(&fixture("sys"));
        assert_eq!(
            names.name(Device {
                major: 259,
                minor: 0
            }),
            Some("nvme0n1")
        );
        assert_eq!(
            names.name(Device {
                major: 253,
                minor: 1
            }),
            Some("dm-1")
        );
    }

    /// This machine's own block devices, against `/proc/diskstats`, where the Agent reads
    /// the names.
    #[test]
    fn live_names_match_proc_diskstats() {
        let diskstats = std::fs::read_to_string("/proc/diskstats").unwrap();
        let mut names = DeviceNames::new(Path::new("/sys"));
        let mut checked = 0;
        for line in diskstats.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let device = Device {
                major: fields[0].parse().unwrap(),
                minor: fields[1].parse().unwrap(),
            };
            assert_eq!(names.name(device), Some(fields[2]), "{line}");
            checked += 1;
        }
        assert!(checked > 0, "no block devices in /proc/diskstats");
    }
}
