//! `system.mem.*` and `system.swap.*` from `/proc/meminfo` and `/proc/vmstat` (the Agent's
//! `memory` check, which reads them through gopsutil), and `system.io.block_in`/`block_out`
//! (the Agent's `io` check, from the same `vmstat`).
//!
//! `/proc/meminfo` (proc(5)): `Key:   value kB` lines, the values in KiB (a few, like
//! `HugePages_Total`, are counts without a unit). `/proc/vmstat`: `key value` lines;
//! `pswpin`/`pswpout` are pages swapped, `pgpgin`/`pgpgout` KiB paged from and to disk.

use std::path::Path;

use super::{BadLines, Files, Out, Source};

const MIB: f64 = 1024.0 * 1024.0;

/// The `meminfo` fields the Agent reports, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct MemInfo {
    total: u64,
    free: u64,
    /// `MemAvailable`, which kernels before 3.14 do not have.
    available: Option<u64>,
    buffers: u64,
    cached: u64,
    s_reclaimable: u64,
    shmem: u64,
    slab: u64,
    page_tables: u64,
    commit_limit: u64,
    committed_as: u64,
    swap_total: u64,
    swap_free: u64,
    swap_cached: u64,
}

/// Parses `/proc/meminfo`; lines that do not parse are noted in `bad`. `None` without
/// `MemTotal`.
pub(super) fn parse_meminfo(text: &str, bad: &mut BadLines) -> Option<MemInfo> {
    let mut m = MemInfo::default();
    let mut total = None;
    for (index, line) in text.lines().enumerate() {
        let Some((key, rest)) = line.split_once(':') else {
            if !line.trim().is_empty() {
                bad.note(index, "expected `Key: value`");
            }
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(value) = fields.next().and_then(|v| v.parse::<u64>().ok()) else {
            bad.note(index, format!("`{key}` has no integer value"));
            continue;
        };
        let bytes = match fields.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        };
        let slot = match key {
            "MemTotal" => {
                total = Some(bytes);
                continue;
            }
            "MemAvailable" => {
                m.available = Some(bytes);
                continue;
            }
            "MemFree" => &mut m.free,
            "Buffers" => &mut m.buffers,
            "Cached" => &mut m.cached,
            "SReclaimable" => &mut m.s_reclaimable,
            "Shmem" => &mut m.shmem,
            "Slab" => &mut m.slab,
            "PageTables" => &mut m.page_tables,
            "CommitLimit" => &mut m.commit_limit,
            "Committed_AS" => &mut m.committed_as,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            "SwapCached" => &mut m.swap_cached,
            _ => continue,
        };
        *slot = bytes;
    }
    m.total = total?;
    Some(m)
}

/// The `vmstat` counters the Agent reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct VmStat {
    pswpin: Option<u64>,
    pswpout: Option<u64>,
    pgpgin: Option<u64>,
    pgpgout: Option<u64>,
}

pub(super) fn parse_vmstat(text: &str) -> VmStat {
    let mut v = VmStat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let slot = match key {
            "pswpin" => &mut v.pswpin,
            "pswpout" => &mut v.pswpout,
            "pgpgin" => &mut v.pgpgin,
            "pgpgout" => &mut v.pgpgout,
            _ => continue,
        };
        *slot = value.trim().parse().ok();
    }
    v
}

pub(super) fn read(
    meminfo: &Path,
    vmstat: &Path,
    page_size: f64,
    files: &mut Files<'_>,
    out: &mut Out<'_>,
) {
    if let Some(text) = files.read(Source::Memory, meminfo) {
        let mut bad = BadLines::default();
        let parsed = parse_meminfo(text, &mut bad);
        bad.report(files.problems, Source::Memory, meminfo);
        match parsed {
            Some(m) => emit_meminfo(&m, out),
            None => files
                .problems
                .format(Source::Memory, meminfo, 0, "no `MemTotal`"),
        }
    }
    if let Some(text) = files.read(Source::Memory, vmstat) {
        emit_vmstat(&parse_vmstat(text), page_size, out);
    }
}

fn emit_meminfo(m: &MemInfo, out: &mut Out<'_>) {
    let mib = |bytes: u64| bytes as f64 / MIB;
    // gopsutil's page cache includes the reclaimable slab; without `MemAvailable` its
    // estimate falls back to free + cache.
    let cached = m.cached + m.s_reclaimable;
    let available = m.available.unwrap_or(m.free + cached);
    out.gauge("system.mem.total", mib(m.total), &[]);
    out.gauge("system.mem.free", mib(m.free), &[]);
    out.gauge("system.mem.used", mib(m.total.saturating_sub(m.free)), &[]);
    out.gauge("system.mem.usable", mib(available), &[]);
    if m.total > 0 {
        out.gauge(
            "system.mem.pct_usable",
            available as f64 / m.total as f64,
            &[],
        );
    }
    out.gauge("system.mem.cached", mib(cached), &[]);
    out.gauge("system.mem.buffered", mib(m.buffers), &[]);
    out.gauge("system.mem.shared", mib(m.shmem), &[]);
    out.gauge("system.mem.slab", mib(m.slab), &[]);
    out.gauge("system.mem.slab_reclaimable", mib(m.s_reclaimable), &[]);
    out.gauge("system.mem.page_tables", mib(m.page_tables), &[]);
    out.gauge("system.mem.commit_limit", mib(m.commit_limit), &[]);
    out.gauge("system.mem.committed_as", mib(m.committed_as), &[]);

    let swap_used = m.swap_total.saturating_sub(m.swap_free);
    out.gauge("system.swap.total", mib(m.swap_total), &[]);
    out.gauge("system.swap.free", mib(m.swap_free), &[]);
    out.gauge("system.swap.used", mib(swap_used), &[]);
    // No swap is all of it free, as gopsutil's 0 % used makes it.
    let pct_free = if m.swap_total == 0 {
        1.0
    } else {
        1.0 - swap_used as f64 / m.swap_total as f64
    };
    out.gauge("system.swap.pct_free", pct_free, &[]);
    out.gauge("system.swap.cached", mib(m.swap_cached), &[]);
}

fn emit_vmstat(v: &VmStat, page_size: f64, out: &mut Out<'_>) {
    if let Some(pages) = v.pswpin {
        out.rate("system.swap.swap_in", pages as f64 * page_size / MIB, &[]);
    }
    if let Some(pages) = v.pswpout {
        out.rate("system.swap.swap_out", pages as f64 * page_size / MIB, &[]);
    }
    // gopsutil multiplies these KiB counts by 4096 as if they were pages; the Agent's
    // `system.io.block_in`/`block_out` have always been that.
    if let Some(kib) = v.pgpgin {
        out.rate("system.io.block_in", kib as f64 * 4096.0, &[]);
    }
    if let Some(kib) = v.pgpgout {
        out.rate("system.io.block_out", kib as f64 * 4096.0, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::MetricType;

    /// The start of a 6.x kernel's `/proc/meminfo`, as proc(5) documents it.
    const MEMINFO: &str = "\
MemTotal:       24684084 kB
MemFree:         1218436 kB
MemAvailable:   20512344 kB
Buffers:          812004 kB
Cached:         17283056 kB
SwapCached:         1024 kB
Active:          9436112 kB
Inactive:       11601228 kB
Shmem:             41216 kB
Slab:            1187060 kB
SReclaimable:    1021112 kB
SUnreclaim:       165948 kB
PageTables:        29316 kB
CommitLimit:    14439184 kB
Committed_AS:    5322240 kB
SwapTotal:       2097148 kB
SwapFree:        1048574 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    fn samples(emit: impl FnOnce(&mut Out<'_>)) -> Vec<(String, MetricType, f64)> {
        let mut samples = Vec::new();
        let mut out = Out {
            samples: &mut samples,
            host: "h",
            timestamp: 1.0,
        };
        emit(&mut out);
        samples
            .into_iter()
            .map(|s| (s.name, s.kind, s.value))
            .collect()
    }

    fn value(samples: &[(String, MetricType, f64)], name: &str) -> f64 {
        samples
            .iter()
            .find(|(n, ..)| n == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .2
    }

    #[test]
    fn meminfo_gives_the_agents_figures_in_mib() {
        let mut bad = BadLines::default();
        let m = parse_meminfo(MEMINFO, &mut bad).unwrap();
        assert_eq!(bad.count, 0);
        let s = samples(|out| emit_meminfo(&m, out));
        let kib = |k: f64| k / 1024.0;
        assert_eq!(value(&s, "system.mem.total"), kib(24684084.0));
        assert_eq!(value(&s, "system.mem.free"), kib(1218436.0));
        assert_eq!(value(&s, "system.mem.used"), kib(24684084.0 - 1218436.0));
        assert_eq!(value(&s, "system.mem.usable"), kib(20512344.0));
        assert_eq!(value(&s, "system.mem.pct_usable"), 20512344.0 / 24684084.0);
        assert_eq!(value(&s, "system.mem.cached"), kib(17283056.0 + 1021112.0));
        assert_eq!(value(&s, "system.mem.buffered"), kib(812004.0));
        assert_eq!(value(&s, "system.mem.shared"), kib(41216.0));
        assert_eq!(value(&s, "system.mem.slab"), kib(1187060.0));
        assert_eq!(value(&s, "system.mem.slab_reclaimable"), kib(1021112.0));
        assert_eq!(value(&s, "system.mem.page_tables"), kib(29316.0));
        assert_eq!(value(&s, "system.mem.commit_limit"), kib(14439184.0));
        assert_eq!(value(&s, "system.mem.committed_as"), kib(5322240.0));
        assert_eq!(value(&s, "system.swap.total"), kib(2097148.0));
        assert_eq!(value(&s, "system.swap.free"), kib(1048574.0));
        assert_eq!(value(&s, "system.swap.used"), kib(1048574.0));
        assert_eq!(value(&s, "system.swap.pct_free"), 0.5);
        assert_eq!(value(&s, "system.swap.cached"), 1.0);
        assert!(s.iter().all(|(_, kind, _)| *kind == MetricType::Gauge));
    }

    #[test]
    fn no_swap_is_all_free_and_no_mem_available_falls_back_to_free_and_cache() {
        let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 200 kB\nSReclaimable: 50 kB\n";
        let m = parse_meminfo(text, &mut BadLines::default()).unwrap();
        let s = samples(|out| emit_meminfo(&m, out));
        assert_eq!(value(&s, "system.swap.pct_free"), 1.0);
        assert_eq!(value(&s, "system.mem.usable"), 350.0 / 1024.0);
    }

    #[test]
    fn a_meminfo_without_mem_total_is_nothing_and_bad_lines_are_noted() {
        let mut bad = BadLines::default();
        assert_eq!(parse_meminfo("MemFree: x kB\nnonsense\n", &mut bad), None);
        assert_eq!(bad.count, 2);
        assert_eq!(bad.first.unwrap().0, 1);
    }

    #[test]
    fn vmstat_gives_swap_in_mib_and_block_io_as_the_agent_scales_it() {
        let v = parse_vmstat("nr_free_pages 1\npgpgin 10\npgpgout 20\npswpin 256\npswpout 512\n");
        let s = samples(|out| emit_vmstat(&v, 4096.0, out));
        assert_eq!(value(&s, "system.swap.swap_in"), 1.0);
        assert_eq!(value(&s, "system.swap.swap_out"), 2.0);
        assert_eq!(value(&s, "system.io.block_in"), 40960.0);
        assert_eq!(value(&s, "system.io.block_out"), 81920.0);
        assert!(s.iter().all(|(_, kind, _)| *kind == MetricType::Rate));
    }
}
