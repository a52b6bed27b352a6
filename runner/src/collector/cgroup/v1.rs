//! cgroup v1 readers: `cpuacct`, `cpu`, `cpuset`, `memory` and `blkio`, each from its own
//! hierarchy (`Documentation/admin-guide/cgroup-v1/`: `cpuacct.rst`, `memory.rst`,
//! `blkio-controller.rst`; `Documentation/scheduler/sched-bwc.rst` for `cpu.stat` and the CFS
//! quota). Which fields come from which file is on the [`super::CgroupStats`] fields. The
//! Agent's counterparts are `pkg/util/cgroups/cgroupv1_{cpu,memory,io}.go`.
//!
//! The memory files are read from the `total_*` keys of `memory.stat`, which include the
//! cgroup's descendants (a container's processes are all in its own cgroup on Docker, but
//! not always on systemd-managed runtimes).

use std::path::Path;

use super::file::{self, CgroupFile, Malformed, number, pairs};
use super::{CpuStats, DeviceIo, MemoryStats, ReadError, device_entry, limited};

/// `cpuacct.usage` (ns) and `cpuacct.stat` (`user`/`system` in `USER_HZ` ticks).
pub(super) fn cpuacct<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    ns_per_tick: u64,
    cpu: &mut CpuStats,
) -> Result<(), ReadError> {
    cpu.usage_ns = file.number(dir, "cpuacct.usage")?;
    file.with(dir, "cpuacct.stat", |text| {
        for (key, value) in pairs(text) {
            match key {
                b"user" => cpu.user_ns = Some(number(key, value)?.saturating_mul(ns_per_tick)),
                b"system" => {
                    cpu.system_ns = Some(number(key, value)?.saturating_mul(ns_per_tick));
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// `cpu.stat` (throttling), `cpu.cfs_quota_us` / `cpu.cfs_period_us` and `cpu.shares`.
pub(super) fn cpu<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    cpu: &mut CpuStats,
) -> Result<(), ReadError> {
    file.with(dir, "cpu.stat", |text| {
        for (key, value) in pairs(text) {
            let slot = match key {
                b"nr_periods" => &mut cpu.periods,
                b"nr_throttled" => &mut cpu.throttled_periods,
                b"throttled_time" => &mut cpu.throttled_ns,
                _ => continue,
            };
            *slot = Some(number(key, value)?);
        }
        Ok(())
    })?;
    let quota = file.with(dir, "cpu.cfs_quota_us", |text| {
        file::signed(b"cpu.cfs_quota_us", file::trim(text))
    })?;
    // -1 is no quota; the period is only worth reading when there is one.
    if let Some(quota) = quota.and_then(|q| u64::try_from(q).ok()).filter(|q| *q > 0)
        && let Some(period) = file.number(dir, "cpu.cfs_period_us")?.filter(|p| *p > 0)
    {
        cpu.limit_cores = Some(quota as f64 / period as f64);
    }
    cpu.shares = file.number(dir, "cpu.shares")?;
    Ok(())
}

/// `cpuset.cpus`, counted.
pub(super) fn cpuset<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
) -> Result<Option<u32>, ReadError> {
    Ok(file.with(dir, "cpuset.cpus", file::cpu_count)?.flatten())
}

/// `memory.stat` and the `memory.*` files beside it.
pub(super) fn memory<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    memory: &mut MemoryStats,
) -> Result<(), ReadError> {
    let mut inactive_file = None;
    let mut limit = None;
    let mut memsw_limit = None;
    file.with(dir, "memory.stat", |text| {
        for (key, value) in pairs(text) {
            let slot = match key {
                b"total_rss" => &mut memory.rss,
                b"total_cache" => &mut memory.cache,
                b"total_swap" => &mut memory.swap,
                b"total_inactive_file" => &mut inactive_file,
                b"total_pgfault" => &mut memory.page_faults,
                b"total_pgmajfault" => &mut memory.major_page_faults,
                b"hierarchical_memory_limit" => &mut limit,
                b"hierarchical_memsw_limit" => &mut memsw_limit,
                _ => continue,
            };
            *slot = Some(number(key, value)?);
        }
        Ok::<_, Malformed>(())
    })?;
    // An underflowed counter, which the Agent drops too.
    memory.rss = memory.rss.filter(|rss| *rss < 1 << 63);

    memory.usage = file.number(dir, "memory.usage_in_bytes")?;
    if limit.is_none() {
        limit = file.number(dir, "memory.limit_in_bytes")?;
    }
    memory.limit = limited(limit);
    // `memory.memsw.*` exist only with swap accounting (`swapaccount=1`, the default since
    // 5.8 when `CONFIG_MEMCG_SWAP` is on).
    if memsw_limit.is_none() {
        memsw_limit = file.number(dir, "memory.memsw.limit_in_bytes")?;
    }
    memory.memsw_limit = limited(memsw_limit);
    if memory.swap.is_none()
        && let Some(usage) = memory.usage
        && let Some(memsw) = file.number(dir, "memory.memsw.usage_in_bytes")?
    {
        memory.swap = Some(memsw.saturating_sub(usage));
    }
    memory.working_set = memory
        .usage
        .zip(inactive_file)
        .map(|(usage, inactive)| usage.saturating_sub(inactive));
    memory.soft_limit = limited(file.number(dir, "memory.soft_limit_in_bytes")?);
    memory.kernel = file.number(dir, "memory.kmem.usage_in_bytes")?;
    memory.peak = file.number(dir, "memory.max_usage_in_bytes")?;
    memory.oom_events = file.number(dir, "memory.failcnt")?;
    memory.oom_kills = file
        .with(dir, "memory.oom_control", |text| {
            pairs(text)
                .find(|(key, _)| *key == b"oom_kill")
                .map(|(key, value)| number(key, value))
                .transpose()
        })?
        .flatten();
    Ok(())
}

/// Bytes and operations per device, from the first pair of blkio files this kernel has.
pub(super) fn blkio<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    io: &mut Vec<DeviceIo>,
) -> Result<(), ReadError> {
    const PAIRS: [(&str, &str); 3] = [
        (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced_recursive",
        ),
        (
            "blkio.throttle.io_service_bytes",
            "blkio.throttle.io_serviced",
        ),
        // CFQ's (gone with the legacy block layer in 5.0).
        ("blkio.io_service_bytes", "blkio.io_serviced"),
    ];
    for (bytes, ops) in PAIRS {
        if file
            .with(dir, bytes, |text| blkio_lines(text, io, Counter::Bytes))?
            .is_some()
        {
            file.with(dir, ops, |text| blkio_lines(text, io, Counter::Ops))?;
            return Ok(());
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Counter {
    Bytes,
    Ops,
}

/// `8:0 Read 4096` lines (and `Write`, `Sync`, `Async`, `Discard`, `Total`), ending with a
/// `Total 4096` line for all devices.
fn blkio_lines(text: &[u8], io: &mut Vec<DeviceIo>, counter: Counter) -> Result<(), Malformed> {
    for line in text.split(|&b| b == b'\n') {
        let mut fields = file::fields(line);
        let (Some(device), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let read = match op {
            b"Read" => true,
            b"Write" => false,
            _ => continue,
        };
        let device = file::device(device)?;
        let value = number(op, value)?;
        let entry = device_entry(io, device);
        let slot = match (counter, read) {
            (Counter::Bytes, true) => &mut entry.read_bytes,
            (Counter::Bytes, false) => &mut entry.write_bytes,
            (Counter::Ops, true) => &mut entry.read_ops,
            (Counter::Ops, false) => &mut entry.write_ops,
        };
        *slot = Some(value);
    }
    Ok(())
}
