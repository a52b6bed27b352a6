//! The readers against fixture trees and against this machine's own cgroups.
//!
//! This machine's Docker uses cgroup v1 (a hybrid host: v1 controllers and an empty unified
//! hierarchy), so the v2 readers are tested from fixture trees only. The fixtures under
//! `fixtures/` are in the kernel's documented formats
//! (`Documentation/admin-guide/cgroup-v2.rst`, `cgroup-v1/{memory,cpuacct,blkio-controller}.rst`,
//! `Documentation/accounting/psi.rst`, `proc.rst`'s mountinfo) with the keys a 6.x kernel
//! writes, and one container each with no limits on an older kernel (no `memory.peak`, no
//! `kernel` key, no swap accounting, PSI off). The mount tables are a Debian 10-style v1
//! host, an Ubuntu 20.04-style hybrid one, a Debian 12-style v2 one, and this machine's
//! Docker container's own table, with and without the host's cgroupfs bound at
//! `/host/sys/fs/cgroup`. The v1 readers are also tested live, against the kernel's files
//! read directly.

use std::path::{Path, PathBuf};

use super::detect::{Hierarchies, hierarchies};
use super::*;

const ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
/// A container with no limits, on an older kernel.
const ID2: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff";

pub(super) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/collector/cgroup/fixtures")
        .join(name)
}

fn cgroups(procfs: &str, root: &str) -> CgroupFs {
    CgroupFs::detect(&fixture(root), &fixture(procfs)).unwrap()
}

fn stall(avg10: f64, total_us: u64) -> Stall {
    Stall { avg10, total_us }
}

fn device_io(major: u32, minor: u32, counts: [u64; 4]) -> DeviceIo {
    DeviceIo {
        device: Device { major, minor },
        read_bytes: Some(counts[0]),
        write_bytes: Some(counts[1]),
        read_ops: Some(counts[2]),
        write_ops: Some(counts[3]),
    }
}

#[test]
fn the_layout_is_detected_from_the_hosts_mount_table() {
    let v1_root = fixture("v1");
    let v1 = |dir: &str| Some(v1_root.join(dir));
    let v1_hierarchies = Hierarchies {
        cpu: v1("cpu,cpuacct"),
        cpuacct: v1("cpu,cpuacct"),
        cpuset: v1("cpuset"),
        memory: v1("memory"),
        blkio: v1("blkio"),
        pids: v1("pids"),
        unified: None,
    };
    for (procfs, root, layout, expected) in [
        ("proc/v1", "v1", Layout::V1, v1_hierarchies.clone()),
        (
            "proc/hybrid",
            "v1",
            Layout::Hybrid,
            Hierarchies {
                unified: v1("unified"),
                ..v1_hierarchies.clone()
            },
        ),
        (
            "proc/v2",
            "v2",
            Layout::V2,
            Hierarchies {
                unified: Some(fixture("v2")),
                ..Hierarchies::default()
            },
        ),
        // No `1/mountinfo` (PID 1 is not ours to read): the runner's own table, whose
        // `/sys/fs/cgroup` mounts are Docker's copy of the host's v1 controllers.
        ("proc/own-only", "v1", Layout::V1, v1_hierarchies.clone()),
    ] {
        let fs = cgroups(procfs, root);
        assert_eq!(fs.layout(), layout, "{procfs}");
        assert_eq!(fs.hierarchies, expected, "{procfs}");
        assert!(fs.unreachable.is_empty(), "{procfs}: {fs}");
    }
}

#[test]
fn the_layout_says_where_each_hierarchy_is() {
    let fs = cgroups("proc/v2", "v2");
    assert_eq!(
        fs.to_string(),
        format!("cgroup v2: unified at {}", fixture("v2").display())
    );
    let fs = cgroups("proc/hybrid", "v1");
    let shown = fs.to_string();
    assert!(
        shown.starts_with("cgroup v1 (hybrid, with a unified hierarchy): cpu at "),
        "{shown}"
    );
    assert!(shown.contains(&format!("memory at {}", fixture("v1/memory").display())));
}

#[test]
fn hierarchies_listed_but_not_under_cgroup_root_are_left_out_and_named() {
    // This machine's container table: separate `cpu` and `cpuacct` mounts, which the fixture
    // root (co-mounted `cpu,cpuacct`) does not have.
    let fs = cgroups("proc/in-container", "v1");
    assert_eq!(fs.hierarchies.cpu, None);
    assert_eq!(fs.hierarchies.memory, Some(fixture("v1/memory")));
    assert_eq!(fs.unreachable, [fixture("v1/cpu"), fixture("v1/cpuacct")]);
    assert!(
        fs.to_string().ends_with(&format!(
            "; listed but not found: {} {}",
            fixture("v1/cpu").display(),
            fixture("v1/cpuacct").display()
        )),
        "{fs}"
    );
}

#[test]
fn a_runner_in_a_container_uses_the_hosts_hierarchies_bound_at_cgroup_root() {
    let table = std::fs::read_to_string(fixture("proc/in-container/self/mountinfo")).unwrap();
    let host = |dir: &str| Some(Path::new("/host/sys/fs/cgroup").join(dir));
    // The runner's own `/sys/fs/cgroup` (its container's cgroups only, and no unified
    // hierarchy) is ignored for the host's, bound at `cgroup_root`.
    assert_eq!(
        hierarchies(&table, Path::new("/host/sys/fs/cgroup")),
        Hierarchies {
            cpu: host("cpu"),
            cpuacct: host("cpuacct"),
            cpuset: host("cpuset"),
            memory: host("memory"),
            blkio: host("blkio"),
            pids: host("pids"),
            unified: host("unified"),
        }
    );
}

#[test]
fn detection_errors_say_which_key_to_set() {
    let error = CgroupFs::detect(&fixture("v1"), &fixture("no-such-procfs")).unwrap_err();
    assert!(matches!(error, DetectError::MountTable { .. }), "{error}");
    assert!(error.to_string().contains("set `procfs_root`"), "{error}");

    // A procfs whose table has no cgroup filesystem.
    let procfs = tempfile::tempdir().unwrap();
    std::fs::create_dir(procfs.path().join("1")).unwrap();
    std::fs::write(
        procfs.path().join("1/mountinfo"),
        "24 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
    )
    .unwrap();
    let error = CgroupFs::detect(&fixture("v1"), procfs.path()).unwrap_err();
    assert!(matches!(error, DetectError::NoCgroups { .. }), "{error}");

    // The right table, the wrong root.
    let error = CgroupFs::detect(&fixture("sys"), &fixture("proc/v2")).unwrap_err();
    assert!(matches!(error, DetectError::NotUnderRoot { .. }), "{error}");
    assert!(error.to_string().contains("set `cgroup_root`"), "{error}");
}

#[test]
fn v1_container_with_limits_reads_every_field() {
    let fs = cgroups("proc/hybrid", "v1");
    let tick = ns_per_tick();
    assert_eq!(
        fs.read(&format!("/docker/{ID}")).unwrap(),
        CgroupStats {
            cpu: CpuStats {
                usage_ns: Some(123_456_789_012),
                user_ns: Some(9000 * tick),
                system_ns: Some(3000 * tick),
                throttled_ns: Some(6_000_000_000),
                throttled_periods: Some(120),
                periods: Some(5000),
                limit_cores: Some(0.5),
                shares: Some(512),
                weight: None,
                cpus: Some(2),
            },
            memory: MemoryStats {
                usage: Some(52_428_800),
                rss: Some(41_943_040),
                cache: Some(8_388_608),
                swap: Some(1_048_576),
                working_set: Some(52_428_800 - 4_194_304),
                limit: Some(64 << 20),
                memsw_limit: Some(128 << 20),
                soft_limit: Some(32 << 20),
                kernel: Some(1_310_720),
                peak: Some(60_817_408),
                page_faults: Some(45_000),
                major_page_faults: Some(12),
                oom_events: Some(7),
                oom_kills: Some(1),
            },
            // The recursive files, not the non-recursive ones beside them.
            io: vec![
                device_io(8, 0, [1_459_200, 314_773_504, 192, 353]),
                device_io(253, 1, [4096, 0, 1, 0]),
            ],
            pids: PidStats {
                current: Some(12),
                limit: Some(100),
            },
            // From the unified hierarchy beside v1.
            pressure: PressureStats {
                cpu: Some(Pressure {
                    some: stall(2.04, 1_234_567),
                    full: Some(stall(0.0, 0)),
                }),
                memory: Some(Pressure {
                    some: stall(0.0, 2048),
                    full: Some(stall(0.0, 1024)),
                }),
                io: Some(Pressure {
                    some: stall(0.5, 56_789),
                    full: Some(stall(0.25, 34_567)),
                }),
            },
        }
    );
}

#[test]
fn v1_container_without_limits_swap_accounting_or_psi() {
    let fs = cgroups("proc/hybrid", "v1");
    assert_eq!(
        fs.read(&format!("/docker/{ID2}")).unwrap(),
        CgroupStats {
            cpu: CpuStats {
                usage_ns: Some(1_000_000),
                user_ns: Some(0),
                system_ns: Some(0),
                throttled_ns: Some(0),
                throttled_periods: Some(0),
                periods: Some(0),
                // `cpu.cfs_quota_us` -1.
                limit_cores: None,
                shares: Some(1024),
                weight: None,
                // No directory in the cpuset hierarchy.
                cpus: None,
            },
            memory: MemoryStats {
                usage: Some(1_048_576),
                rss: Some(1_048_576),
                cache: Some(0),
                // No `total_swap` nor `memory.memsw.*`: no swap accounting.
                swap: None,
                working_set: Some(1_048_576),
                // 9223372036854771712: unlimited.
                limit: None,
                memsw_limit: None,
                soft_limit: None,
                kernel: None,
                peak: Some(2_097_152),
                page_faults: Some(500),
                major_page_faults: Some(0),
                oom_events: Some(0),
                // `memory.oom_control` before 4.13 has no `oom_kill`.
                oom_kills: None,
            },
            // The non-recursive files, the recursive ones missing.
            io: vec![device_io(8, 0, [8192, 0, 2, 0])],
            pids: PidStats {
                current: Some(1),
                limit: None,
            },
            pressure: PressureStats::default(),
        }
    );
}

#[test]
fn a_v1_host_without_a_unified_hierarchy_has_no_pressure() {
    let fs = cgroups("proc/v1", "v1");
    let stats = fs.read(&format!("/docker/{ID}")).unwrap();
    assert_eq!(stats.pressure, PressureStats::default());
    assert_eq!(stats.memory.limit, Some(64 << 20));
}

#[test]
fn v2_container_with_limits_reads_every_field() {
    let fs = cgroups("proc/v2", "v2");
    assert_eq!(
        fs.read(&format!("/system.slice/docker-{ID}.scope"))
            .unwrap(),
        CgroupStats {
            cpu: CpuStats {
                usage_ns: Some(123_456_789_000),
                user_ns: Some(90_000_000_000),
                system_ns: Some(33_456_789_000),
                throttled_ns: Some(6_000_000_000),
                throttled_periods: Some(120),
                periods: Some(5000),
                limit_cores: Some(1.5),
                shares: None,
                weight: Some(39),
                cpus: Some(5),
            },
            memory: MemoryStats {
                usage: Some(52_428_800),
                rss: Some(41_943_040),
                cache: Some(8_388_608),
                swap: Some(1_048_576),
                working_set: Some(52_428_800 - 4_194_304),
                limit: Some(64 << 20),
                // `memory.max` + `memory.swap.max`, as v1's memsw.
                memsw_limit: Some(128 << 20),
                soft_limit: Some(32 << 20),
                kernel: Some(1_572_864),
                peak: Some(60_817_408),
                page_faults: Some(45_000),
                major_page_faults: Some(12),
                oom_events: Some(2),
                oom_kills: Some(1),
            },
            io: vec![
                device_io(259, 0, [1_459_200, 314_773_504, 192, 353]),
                device_io(253, 1, [4096, 0, 1, 0]),
            ],
            pids: PidStats {
                current: Some(12),
                limit: Some(100),
            },
            pressure: PressureStats {
                cpu: Some(Pressure {
                    some: stall(2.04, 1_234_567),
                    full: Some(stall(1.02, 654_321)),
                }),
                memory: Some(Pressure {
                    some: stall(0.0, 2048),
                    full: Some(stall(0.0, 1024)),
                }),
                io: Some(Pressure {
                    some: stall(0.5, 56_789),
                    full: Some(stall(0.25, 34_567)),
                }),
            },
        }
    );
}

#[test]
fn v2_container_without_limits_on_an_older_kernel() {
    let fs = cgroups("proc/v2", "v2");
    assert_eq!(
        fs.read(&format!("/system.slice/docker-{ID2}.scope"))
            .unwrap(),
        CgroupStats {
            cpu: CpuStats {
                usage_ns: Some(1_000_000),
                user_ns: Some(600_000),
                system_ns: Some(400_000),
                throttled_ns: Some(0),
                throttled_periods: Some(0),
                periods: Some(0),
                // `max 100000`.
                limit_cores: None,
                shares: None,
                weight: Some(100),
                cpus: Some(8),
            },
            memory: MemoryStats {
                usage: Some(1_048_576),
                rss: Some(1_048_576),
                cache: Some(0),
                swap: None,
                working_set: Some(1_048_576),
                limit: None,
                memsw_limit: None,
                // `memory.low` 0.
                soft_limit: None,
                // No `kernel` key before 5.18: `kernel_stack + slab`.
                kernel: Some(16_384 + 32_768),
                // No `memory.peak` before 5.19.
                peak: None,
                page_faults: Some(500),
                major_page_faults: Some(0),
                oom_events: Some(0),
                oom_kills: Some(0),
            },
            io: vec![],
            pids: PidStats {
                current: Some(1),
                limit: None,
            },
            pressure: PressureStats::default(),
        }
    );
}

#[test]
fn io_devices_are_named_from_sysfs() {
    let stats = cgroups("proc/v2", "v2")
        .read(&format!("/system.slice/docker-{ID}.scope"))
        .unwrap();
    let mut names = DeviceNames::new(&fixture("sys"));
    let mut shown = Vec::new();
    for io in &stats.io {
        shown.push(format!(
            "{} {}",
            io.device,
            names.name(io.device).unwrap_or("?")
        ));
    }
    assert_eq!(shown, ["259:0 nvme0n1", "253:1 dm-1"]);
}

#[test]
fn a_v2_cgroup_without_controllers_has_only_core_cpu_stats() {
    let stats = cgroups("proc/v2", "v2").read("/init.scope").unwrap();
    assert_eq!(
        stats,
        CgroupStats {
            cpu: CpuStats {
                usage_ns: Some(5_000_000_000),
                user_ns: Some(3_000_000_000),
                system_ns: Some(2_000_000_000),
                ..CpuStats::default()
            },
            ..CgroupStats::default()
        }
    );
}

#[test]
fn a_vanished_cgroup_is_gone() {
    for (procfs, root, cgroup) in [
        ("proc/hybrid", "v1", "/docker/0123456789abcdef".to_owned()),
        (
            "proc/v2",
            "v2",
            "/system.slice/docker-0123.scope".to_owned(),
        ),
    ] {
        let error = cgroups(procfs, root).read(&cgroup).unwrap_err();
        assert!(matches!(error, ReadError::Gone), "{procfs}: {error:?}");
    }
}

#[test]
fn a_malformed_file_is_named() {
    let error = cgroups("proc/hybrid", "v1")
        .read("/docker/malformed")
        .unwrap_err();
    let ReadError::Malformed { path, detail } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(path, &fixture("v1/memory/docker/malformed/memory.stat"));
    assert_eq!(detail, "`total_rss` is not a number: \"lots\"");
    assert!(
        error
            .to_string()
            .contains("memory/docker/malformed/memory.stat"),
        "{error}"
    );
}

#[test]
fn paths_leaving_the_hierarchy_root_are_refused() {
    let fs = cgroups("proc/v2", "v2");
    for cgroup in ["/../system.slice", "/system.slice/../../etc"] {
        let error = fs.read(cgroup).unwrap_err();
        assert!(
            matches!(error, ReadError::OutsideRoot { .. }),
            "{cgroup}: {error:?}"
        );
    }
}

/// Live: this machine's cgroups, read by `CgroupFs` and compared with the kernel's files read
/// directly around it.
mod live {
    use std::process::{Child, Command};

    use super::*;

    fn kernel_u64(path: &Path) -> u64 {
        let text = std::fs::read_to_string(path).unwrap();
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: {text:?}", path.display()))
    }

    fn kernel_key(path: &Path, key: &str) -> u64 {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {key} in {}", path.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// The machine's layout, when it is the v1 (or hybrid) one these tests are for.
    fn machine_v1() -> Option<CgroupFs> {
        let fs = CgroupFs::detect(Path::new("/sys/fs/cgroup"), Path::new("/proc")).unwrap();
        if fs.layout() == Layout::V2 {
            eprintln!("skipped: this machine runs cgroup v2 ({fs})");
            return None;
        }
        Some(fs)
    }

    #[test]
    fn the_root_cgroup_matches_the_kernel_files() {
        let Some(fs) = machine_v1() else { return };
        let h = &fs.hierarchies;
        let cpuacct = h.cpuacct.clone().unwrap();
        let memory = h.memory.clone().unwrap();

        let usage_before = kernel_u64(&cpuacct.join("cpuacct.usage"));
        let user_before = kernel_key(&cpuacct.join("cpuacct.stat"), "user");
        let faults_before = kernel_key(&memory.join("memory.stat"), "total_pgfault");
        let stats = fs.read("/").unwrap();
        let usage_after = kernel_u64(&cpuacct.join("cpuacct.usage"));
        let user_after = kernel_key(&cpuacct.join("cpuacct.stat"), "user");
        let faults_after = kernel_key(&memory.join("memory.stat"), "total_pgfault");
        let memory_direct = kernel_u64(&memory.join("memory.usage_in_bytes"));

        let usage = stats.cpu.usage_ns.unwrap();
        assert!((usage_before..=usage_after).contains(&usage), "{usage}");
        let user = stats.cpu.user_ns.unwrap();
        let tick = ns_per_tick();
        assert!(
            (user_before * tick..=user_after * tick).contains(&user),
            "{user}"
        );
        // User plus system time is the usage, within the ticks' coarseness.
        let user_system = user + stats.cpu.system_ns.unwrap();
        assert!(
            user_system.abs_diff(usage) < usage / 10 + 1_000_000_000,
            "user+system {user_system} against usage {usage}"
        );
        let faults = stats.memory.page_faults.unwrap();
        assert!((faults_before..=faults_after).contains(&faults), "{faults}");

        // Memory moves; within 64 MiB of a direct read, and the parts fit in the whole.
        let used = stats.memory.usage.unwrap();
        assert!(
            used > 0 && used.abs_diff(memory_direct) < 64 << 20,
            "{used} against {memory_direct}"
        );
        assert!(stats.memory.working_set.unwrap() <= used);
        assert!(stats.memory.rss.unwrap() + stats.memory.cache.unwrap() <= used + (64 << 20));
        // The root has no limit: the kernel's "unlimited" is None.
        assert!(kernel_u64(&memory.join("memory.limit_in_bytes")) >= UNLIMITED);
        assert_eq!(stats.memory.limit, None);
        assert_eq!(stats.cpu.limit_cores, None);
        if let Some(cpu) = &h.cpu {
            assert_eq!(stats.cpu.shares, Some(kernel_u64(&cpu.join("cpu.shares"))));
        }
        if let Some(cpuset) = &h.cpuset {
            let online = std::fs::read(cpuset.join("cpuset.cpus")).unwrap();
            assert_eq!(stats.cpu.cpus, file::cpu_count(&online).unwrap());
            assert!(stats.cpu.cpus >= Some(1), "{:?}", stats.cpu.cpus);
        }
        if h.unified.is_some() {
            let cpu = stats
                .pressure
                .cpu
                .expect("a hybrid host's root has cpu.pressure");
            assert!((0.0..=100.0).contains(&cpu.some.avg10), "{cpu:?}");
        }
    }

    /// A cgroup of this test's own in every v1 hierarchy (and the unified one), with known
    /// limits and one `sleep` in it; removed at the end, even on failure.
    struct TestCgroup {
        name: String,
        dirs: Vec<PathBuf>,
        child: Option<Child>,
    }

    impl TestCgroup {
        fn create(fs: &CgroupFs) -> Option<Self> {
            let h = &fs.hierarchies;
            let name = format!("kennel-cgroup-test-{}", std::process::id());
            let mut cgroup = Self {
                name,
                dirs: Vec::new(),
                child: None,
            };
            // cpuset is left out: a new cpuset cgroup takes no task before its CPUs and
            // memory nodes are set.
            let mut roots: Vec<&PathBuf> =
                [&h.cpu, &h.cpuacct, &h.memory, &h.blkio, &h.pids, &h.unified]
                    .into_iter()
                    .flatten()
                    .collect();
            roots.dedup();
            for root in roots {
                let dir = root.join(&cgroup.name);
                if let Err(error) = std::fs::create_dir(&dir) {
                    eprintln!("skipped: cannot create {}: {error}", dir.display());
                    return None;
                }
                cgroup.dirs.push(dir);
            }
            let write = |root: &Option<PathBuf>, file: &str, value: &str| {
                let path = root.as_ref().unwrap().join(&cgroup.name).join(file);
                std::fs::write(&path, value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            };
            write(&h.memory, "memory.limit_in_bytes", "67108864");
            write(&h.cpu, "cpu.cfs_quota_us", "50000");
            write(&h.pids, "pids.max", "50");
            let child = Command::new("sleep").arg("60").spawn().unwrap();
            let pid = child.id().to_string();
            cgroup.child = Some(child);
            for dir in &cgroup.dirs {
                std::fs::write(dir.join("cgroup.procs"), &pid).unwrap();
            }
            Some(cgroup)
        }

        fn remove(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            for dir in self.dirs.drain(..) {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            self.remove();
        }
    }

    #[test]
    fn a_cgroup_with_limits_reads_them_and_is_gone_once_removed() {
        let Some(fs) = machine_v1() else { return };
        let Some(mut cgroup) = TestCgroup::create(&fs) else {
            return;
        };
        let path = format!("/{}", cgroup.name);
        let stats = fs.read(&path).unwrap();
        let memory = fs.hierarchies.memory.as_ref().unwrap().join(&cgroup.name);

        assert_eq!(stats.memory.limit, Some(64 << 20));
        assert_eq!(stats.cpu.limit_cores, Some(0.5));
        assert_eq!(stats.cpu.shares, Some(1024));
        assert_eq!(
            stats.pids,
            PidStats {
                current: Some(1),
                limit: Some(50)
            }
        );
        // A sleeping process's memory stands still.
        assert_eq!(
            stats.memory.usage,
            Some(kernel_u64(&memory.join("memory.usage_in_bytes")))
        );
        assert_eq!(stats.memory.oom_events, Some(0));
        assert_eq!(stats.memory.oom_kills, Some(0));
        assert!(stats.cpu.usage_ns.is_some());
        if fs.hierarchies.unified.is_some() {
            assert!(stats.pressure.memory.is_some(), "{stats:?}");
        }

        cgroup.remove();
        let error = fs.read(&path).unwrap_err();
        assert!(matches!(error, ReadError::Gone), "{error:?}");
    }
}
