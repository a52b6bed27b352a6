//! `system.io.*` per block device (the Agent's `io` check) and `system.disk.read_time` and
//! friends (its `disk` check's per-device half), from `/proc/diskstats`.
//!
//! `diskstats` (the kernel's Documentation/admin-guide/iostats.rst): `major minor name` and
//! then reads completed, reads merged, sectors read, ms reading, writes completed, writes
//! merged, sectors written, ms writing, I/Os in progress, ms doing I/O, weighted ms doing I/O;
//! kernels 4.18+ add four discard fields and 5.5+ two flush fields, unused here. Sectors are
//! 512 bytes whatever the device's own.
//!
//! The per-second gauges are the Agent's (which are sysstat's `iostat -x`, except `avg_q_sz`,
//! divided by 1024 where iostat divides by 1000), from the change since the previous read over
//! the time between the two reads; a device's first read sets its baseline.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::{BadLines, Files, Out, Source, TAG_REFRESH_READS, increase, parse_u64s};

const SECTOR: f64 = 512.0;
const KIB: f64 = 1024.0;

/// The eleven fields every kernel has.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Counters {
    reads: u64,
    reads_merged: u64,
    sectors_read: u64,
    read_ms: u64,
    writes: u64,
    writes_merged: u64,
    sectors_written: u64,
    write_ms: u64,
    in_flight: u64,
    io_ms: u64,
    weighted_ms: u64,
}

impl Counters {
    fn from_columns(c: [u64; 11]) -> Self {
        let [
            reads,
            reads_merged,
            sectors_read,
            read_ms,
            writes,
            writes_merged,
            sectors_written,
            write_ms,
            in_flight,
            io_ms,
            weighted_ms,
        ] = c;
        Self {
            reads,
            reads_merged,
            sectors_read,
            read_ms,
            writes,
            writes_merged,
            sectors_written,
            write_ms,
            in_flight,
            io_ms,
            weighted_ms,
        }
    }
}

/// One `diskstats` line: the device and its counters.
pub(super) fn parse_diskstats_line(line: &str) -> Option<(&str, Counters)> {
    let mut fields = line.split_ascii_whitespace();
    let name = fields.nth(2)?;
    let mut columns = [0; 11];
    let parsed = parse_u64s(fields, &mut columns)?;
    // Fewer than eleven counters is not a kernel's diskstats.
    (parsed == columns.len()).then_some((name, Counters::from_columns(columns)))
}

/// The Agent's computed figures for one device between two reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Gauges {
    rkb_s: f64,
    wkb_s: f64,
    avg_rq_sz: f64,
    r#await: f64,
    r_await: f64,
    w_await: f64,
    avg_q_sz: f64,
    svctm: f64,
    util: f64,
}

/// `None` when no time passed.
pub(super) fn gauges(last: &Counters, now: &Counters, elapsed_ms: f64) -> Option<Gauges> {
    if elapsed_ms <= 0.0 {
        return None;
    }
    let d = |now: u64, last: u64| increase(now, last) as f64;
    let seconds = elapsed_ms / 1000.0;
    let reads = d(now.reads, last.reads);
    let writes = d(now.writes, last.writes);
    let ios = reads + writes;
    let read_ms = d(now.read_ms, last.read_ms);
    let write_ms = d(now.write_ms, last.write_ms);
    let sectors =
        d(now.sectors_read, last.sectors_read) + d(now.sectors_written, last.sectors_written);
    let per = |total: f64, count: f64| if count == 0.0 { 0.0 } else { total / count };
    let io_ms = d(now.io_ms, last.io_ms);
    Some(Gauges {
        rkb_s: round(d(now.sectors_read, last.sectors_read) * SECTOR / KIB / seconds),
        wkb_s: round(d(now.sectors_written, last.sectors_written) * SECTOR / KIB / seconds),
        avg_rq_sz: round(per(sectors, ios)),
        r#await: round(per(read_ms + write_ms, ios)),
        r_await: round(per(read_ms, reads)),
        w_await: round(per(write_ms, writes)),
        avg_q_sz: round(d(now.weighted_ms, last.weighted_ms) / KIB / seconds),
        svctm: round(per(io_ms, ios)),
        util: round(io_ms * 100.0 / elapsed_ms),
    })
}

/// To two decimals, as the Agent rounds its `io` gauges.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A device's previous counters and its tags.
#[derive(Debug)]
struct Device {
    counters: Counters,
    /// `device`, `device_name` and, for device-mapper devices, `device_label`, as the `io`
    /// check tags; the `disk` check's per-device metrics have the first two only.
    io_tags: Vec<String>,
    disk_tags: Vec<String>,
    tags_read: u64,
    seen: u64,
}

#[derive(Debug, Default)]
pub(super) struct IoState {
    devices: HashMap<String, Device>,
    last: Option<Instant>,
}

impl IoState {
    pub(super) fn read(
        &mut self,
        path: &Path,
        sysfs: &Path,
        now: Instant,
        reads: u64,
        files: &mut Files<'_>,
        out: &mut Out<'_>,
    ) {
        let Some(text) = files.read(Source::Io, path) else {
            return;
        };
        let elapsed_ms = self
            .last
            .map(|last| now.duration_since(last).as_secs_f64() * 1000.0);
        let mut bad = BadLines::default();
        for (index, line) in text.lines().enumerate() {
            let Some((name, counters)) = parse_diskstats_line(line) else {
                bad.note(
                    index,
                    "expected `major minor name` and at least 11 counters",
                );
                continue;
            };
            // gopsutil leaves out a device with nothing to say (a loop device never set up).
            if counters == Counters::default() {
                continue;
            }
            let device = self
                .devices
                .entry(name.to_owned())
                .or_insert_with(|| Device {
                    counters,
                    io_tags: Vec::new(),
                    disk_tags: Vec::new(),
                    tags_read: 0,
                    seen: 0,
                });
            if device.io_tags.is_empty() || reads - device.tags_read >= TAG_REFRESH_READS {
                (device.io_tags, device.disk_tags) = device_tags(sysfs, name);
                device.tags_read = reads;
            }
            emit_counters(&counters, &device.io_tags, &device.disk_tags, out);
            let previous = (device.seen + 1 == reads).then_some(&device.counters);
            if let Some(g) = previous
                .zip(elapsed_ms)
                .and_then(|(last, ms)| gauges(last, &counters, ms))
            {
                emit_gauges(&g, &device.io_tags, out);
            }
            device.counters = counters;
            device.seen = reads;
        }
        bad.report(files.problems, Source::Io, path);
        self.devices.retain(|_, d| d.seen == reads);
        self.last = Some(now);
    }
}

fn emit_counters(c: &Counters, io_tags: &[String], disk_tags: &[String], out: &mut Out<'_>) {
    out.rate("system.io.r_s", c.reads as f64, io_tags);
    out.rate("system.io.w_s", c.writes as f64, io_tags);
    out.rate("system.io.rrqm_s", c.reads_merged as f64, io_tags);
    out.rate("system.io.wrqm_s", c.writes_merged as f64, io_tags);
    out.monotonic("system.disk.read_time", c.read_ms as f64, disk_tags);
    out.monotonic("system.disk.write_time", c.write_ms as f64, disk_tags);
    // Not a percentage whatever the name says (the Agent keeps it for compatibility): tenths
    // of the milliseconds spent, per second.
    out.rate(
        "system.disk.read_time_pct",
        c.read_ms as f64 * 100.0 / 1000.0,
        disk_tags,
    );
    out.rate(
        "system.disk.write_time_pct",
        c.write_ms as f64 * 100.0 / 1000.0,
        disk_tags,
    );
}

fn emit_gauges(g: &Gauges, tags: &[String], out: &mut Out<'_>) {
    out.gauge("system.io.rkb_s", g.rkb_s, tags);
    out.gauge("system.io.wkb_s", g.wkb_s, tags);
    out.gauge("system.io.avg_rq_sz", g.avg_rq_sz, tags);
    out.gauge("system.io.await", g.r#await, tags);
    out.gauge("system.io.r_await", g.r_await, tags);
    out.gauge("system.io.w_await", g.w_await, tags);
    out.gauge("system.io.avg_q_sz", g.avg_q_sz, tags);
    out.gauge("system.io.svctm", g.svctm, tags);
    out.gauge("system.io.util", g.util, tags);
}

/// The `io` check's tags (with `device_label` from `<sysfs>/class/block/<name>/dm/name` for a
/// device-mapper device) and the `disk` check's, each sorted.
fn device_tags(sysfs: &Path, name: &str) -> (Vec<String>, Vec<String>) {
    let disk_tags = vec![format!("device:{name}"), format!("device_name:{name}")];
    let mut io_tags = disk_tags.clone();
    let label = std::fs::read_to_string(sysfs.join("class/block").join(name).join("dm/name"));
    if let Ok(label) = label
        && !label.trim().is_empty()
    {
        io_tags.push(format!("device_label:{}", label.trim()));
        io_tags.sort();
    }
    (io_tags, disk_tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::MetricType;

    /// A 6.x kernel's lines (20 fields after the name), an older one's (11), a partition, a
    /// device-mapper device and a loop device never used.
    const DISKSTATS: &str = "\
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 2772446 38918 76878370 5569585 678283 330414 169495176 795647 0 202068 6404999 200224 33 103475288 32569 129971 7197
 254       1 vda1 1000 10 80000 500 2000 20 160000 900 0 1200 1400
 253       0 dm-0 10 0 80 5 20 0 160 9 0 12 14 0 0 0 0 0 0
";

    #[test]
    fn diskstats_lines_of_any_kernel_give_the_eleven_counters() {
        let mut lines = DISKSTATS.lines();
        let (name, loop0) = parse_diskstats_line(lines.next().unwrap()).unwrap();
        assert_eq!((name, loop0), ("loop0", Counters::default()));
        let (name, vda) = parse_diskstats_line(lines.next().unwrap()).unwrap();
        assert_eq!(name, "vda");
        assert_eq!(
            vda,
            Counters::from_columns([
                2772446, 38918, 76878370, 5569585, 678283, 330414, 169495176, 795647, 0, 202068,
                6404999
            ])
        );
        let (name, vda1) = parse_diskstats_line(lines.next().unwrap()).unwrap();
        assert_eq!((name, vda1.weighted_ms), ("vda1", 1400));
        assert_eq!(parse_diskstats_line("8 0 sda 1 2 3"), None);
        assert_eq!(parse_diskstats_line("8 0 sda 1 2 3 4 5 6 7 8 9 10 x"), None);
    }

    #[test]
    fn gauges_are_the_agents_iostat_figures() {
        let last = Counters::default();
        // Over 2 s: 100 reads of 800 sectors in 300 ms, 300 writes of 2400 sectors in 900 ms,
        // busy 500 ms, 2048 weighted ms.
        let now = Counters::from_columns([100, 7, 800, 300, 300, 9, 2400, 900, 1, 500, 2048]);
        let g = gauges(&last, &now, 2000.0).unwrap();
        assert_eq!(
            g,
            Gauges {
                rkb_s: 200.0,
                wkb_s: 600.0,
                avg_rq_sz: 8.0,
                r#await: 3.0,
                r_await: 3.0,
                w_await: 3.0,
                avg_q_sz: 1.0,
                svctm: 1.25,
                util: 25.0,
            }
        );
        assert_eq!(gauges(&last, &now, 0.0), None);
        let idle = gauges(&now, &now, 1000.0).unwrap();
        assert_eq!((idle.r#await, idle.util, idle.svctm), (0.0, 0.0, 0.0));
    }

    #[test]
    fn devices_are_tagged_and_computed_from_their_second_read() {
        let dir = tempfile::tempdir().unwrap();
        let stats = dir.path().join("diskstats");
        std::fs::write(&stats, DISKSTATS).unwrap();
        let sysfs = dir.path().join("sys");
        std::fs::create_dir_all(sysfs.join("class/block/dm-0/dm")).unwrap();
        std::fs::write(sysfs.join("class/block/dm-0/dm/name"), "vg-root\n").unwrap();

        let mut state = IoState::default();
        let mut problems = super::super::Problems::default();
        let mut buf = String::new();
        let start = Instant::now();
        let mut read = |reads: u64, at: Instant| {
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
            state.read(&stats, &sysfs, at, reads, &mut files, &mut out);
            samples
        };

        let first = read(1, start);
        assert!(
            !first
                .iter()
                .any(|s| s.tags.contains(&"device:loop0".to_owned()))
        );
        assert!(!first.iter().any(|s| s.name == "system.io.util"));
        let r_s: Vec<&[String]> = first
            .iter()
            .filter(|s| s.name == "system.io.r_s")
            .map(|s| s.tags.as_slice())
            .collect();
        assert_eq!(
            r_s,
            [
                &["device:vda", "device_name:vda"][..],
                &["device:vda1", "device_name:vda1"][..],
                &["device:dm-0", "device_label:vg-root", "device_name:dm-0"][..],
            ]
        );
        let read_time = first
            .iter()
            .find(|s| s.name == "system.disk.read_time" && s.tags[0] == "device:dm-0")
            .unwrap();
        assert_eq!(read_time.kind, MetricType::MonotonicCount);
        assert_eq!(read_time.tags, ["device:dm-0", "device_name:dm-0"]);

        let second = read(2, start + std::time::Duration::from_secs(1));
        let utils = second.iter().filter(|s| s.name == "system.io.util").count();
        assert_eq!(utils, 3);
    }
}
