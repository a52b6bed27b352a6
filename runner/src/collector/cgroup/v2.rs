//! cgroup v2 readers: `cpu`, `cpuset`, `memory` and `io`, all in the container's one
//! directory of the unified hierarchy (`Documentation/admin-guide/cgroup-v2.rst`, "Controllers").
//! Which fields come from which file is on the [`super::CgroupStats`] fields. The Agent's
//! counterparts are `pkg/util/cgroups/cgroupv2_{cpu,memory,io}.go`.
//!
//! A controller not enabled for the cgroup (not in its parent's `cgroup.subtree_control`)
//! has no files there, so its fields are `None`; `cpu.stat`'s `usage_usec`, `user_usec` and
//! `system_usec` are there regardless (the "core" stats), which is also how a hybrid host's
//! unified hierarchy, with no controller at all, still gives CPU usage when v1 has no
//! `cpuacct`.

use std::path::Path;

use super::file::{self, CgroupFile, Malformed, number, pairs};
use super::{CpuStats, DeviceIo, MemoryStats, ReadError, device_entry};

/// `cpu.stat` (µs, converted to ns), `cpu.max` and `cpu.weight`.
pub(super) fn cpu<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    cpu: &mut CpuStats,
) -> Result<(), ReadError> {
    file.with(dir, "cpu.stat", |text| {
        for (key, value) in pairs(text) {
            let (slot, scale) = match key {
                b"usage_usec" => (&mut cpu.usage_ns, 1_000),
                b"user_usec" => (&mut cpu.user_ns, 1_000),
                b"system_usec" => (&mut cpu.system_ns, 1_000),
                b"throttled_usec" => (&mut cpu.throttled_ns, 1_000),
                b"nr_periods" => (&mut cpu.periods, 1),
                b"nr_throttled" => (&mut cpu.throttled_periods, 1),
                _ => continue,
            };
            *slot = Some(number(key, value)?.saturating_mul(scale));
        }
        Ok::<_, Malformed>(())
    })?;
    cpu.limit_cores = file
        .with(dir, "cpu.max", |text| {
            // `$MAX $PERIOD`: `max 100000` is no quota.
            let mut fields = file::fields(text);
            let quota = file::limit(fields.next().unwrap_or_default())?;
            let period = match fields.next() {
                Some(period) => number(b"period", period)?,
                None => return Err(Malformed("no period after the quota".to_owned())),
            };
            Ok(quota
                .filter(|_| period > 0)
                .map(|quota| quota as f64 / period as f64))
        })?
        .flatten();
    cpu.weight = file.number(dir, "cpu.weight")?;
    Ok(())
}

/// `cpuset.cpus.effective`, counted.
pub(super) fn cpuset<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
) -> Result<Option<u32>, ReadError> {
    Ok(file
        .with(dir, "cpuset.cpus.effective", file::cpu_count)?
        .flatten())
}

/// `memory.current`, `memory.stat`, the limits, `memory.peak`, `memory.swap.current` and
/// `memory.events`.
pub(super) fn memory<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    memory: &mut MemoryStats,
) -> Result<(), ReadError> {
    memory.usage = file.number(dir, "memory.current")?;
    let mut inactive_file = None;
    let mut kernel_stack = None;
    let mut slab = None;
    let mut slab_reclaimable = None;
    let mut slab_unreclaimable = None;
    file.with(dir, "memory.stat", |text| {
        for (key, value) in pairs(text) {
            let slot = match key {
                b"anon" => &mut memory.rss,
                b"file" => &mut memory.cache,
                b"kernel" => &mut memory.kernel,
                b"kernel_stack" => &mut kernel_stack,
                b"slab" => &mut slab,
                b"slab_reclaimable" => &mut slab_reclaimable,
                b"slab_unreclaimable" => &mut slab_unreclaimable,
                b"inactive_file" => &mut inactive_file,
                b"pgfault" => &mut memory.page_faults,
                b"pgmajfault" => &mut memory.major_page_faults,
                _ => continue,
            };
            *slot = Some(number(key, value)?);
        }
        Ok::<_, Malformed>(())
    })?;
    // `kernel` is 5.18+; before, the Agent adds `kernel_stack` and `slab` (5.9+; its two
    // halves before that).
    let slab = slab.or_else(|| Some(slab_reclaimable?.saturating_add(slab_unreclaimable?)));
    if memory.kernel.is_none() {
        memory.kernel = kernel_stack
            .zip(slab)
            .map(|(stack, slab)| stack.saturating_add(slab));
    }
    memory.working_set = memory
        .usage
        .zip(inactive_file)
        .map(|(usage, inactive)| usage.saturating_sub(inactive));

    let limit = file.limit(dir, "memory.max")?.flatten();
    memory.limit = limit;
    // Without swap (`CONFIG_SWAP` off, or `swapaccount=0`) there are no `memory.swap.*`.
    memory.swap = file.number(dir, "memory.swap.current")?;
    let swap_limit = file.limit(dir, "memory.swap.max")?.flatten();
    memory.memsw_limit = limit
        .zip(swap_limit)
        .map(|(memory, swap)| memory.saturating_add(swap));
    memory.soft_limit = file
        .limit(dir, "memory.low")?
        .flatten()
        .filter(|low| *low > 0);
    memory.peak = file.number(dir, "memory.peak")?;
    file.with(dir, "memory.events", |text| {
        for (key, value) in pairs(text) {
            let slot = match key {
                b"oom" => &mut memory.oom_events,
                b"oom_kill" => &mut memory.oom_kills,
                _ => continue,
            };
            *slot = Some(number(key, value)?);
        }
        Ok::<_, Malformed>(())
    })?;
    Ok(())
}

/// `io.stat`: `8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0` per
/// device.
pub(super) fn io<'a>(
    file: &mut CgroupFile<'a>,
    dir: &'a Path,
    io: &mut Vec<DeviceIo>,
) -> Result<(), ReadError> {
    file.with(dir, "io.stat", |text| {
        for line in text.split(|&b| b == b'\n') {
            let mut fields = file::fields(line);
            let Some(device) = fields.next() else {
                continue;
            };
            let entry = device_entry(io, file::device(device)?);
            for field in fields {
                let Some(eq) = field.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (key, value) = (&field[..eq], &field[eq + 1..]);
                let slot = match key {
                    b"rbytes" => &mut entry.read_bytes,
                    b"wbytes" => &mut entry.write_bytes,
                    b"rios" => &mut entry.read_ops,
                    b"wios" => &mut entry.write_ops,
                    _ => continue,
                };
                *slot = Some(number(key, value)?);
            }
        }
        Ok::<_, Malformed>(())
    })?;
    Ok(())
}
