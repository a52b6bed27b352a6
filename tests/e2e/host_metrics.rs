//! Host metrics read from this machine, compared with `/proc` read here independently, with
//! `df`, and side by side with Debian's `prometheus-node-exporter` scraped in the same instant.
//!
//! Counters and uptime move between two readings, so each is checked to lie between the
//! reader's readings just before and just after the other source's (a sandwich), not within a
//! tolerance that a busy machine could break; what does not move (memory and filesystem sizes)
//! must be equal.

use std::path::Path;

use kennel_tests::node_exporter::{NodeExporter, Sample};
use runner::check::{MetricSample, MetricType};
use runner::collector::host::HostReader;

fn reader() -> HostReader {
    HostReader::new(Path::new("/proc"), Path::new("/sys"), "e2e-host".to_owned())
}

/// Reads once and asserts nothing was unreadable.
fn read(reader: &mut HostReader) -> Vec<MetricSample> {
    let samples = reader.read();
    let problems: Vec<String> = reader.problems().iter().map(|p| p.to_string()).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    samples
}

/// The value of `name` carrying `tag` (or no tag: `""`).
fn value(samples: &[MetricSample], name: &str, tag: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && (tag.is_empty() || s.tags.iter().any(|t| t == tag)))
        .unwrap_or_else(|| panic!("no {name} {tag} among {} samples", samples.len()))
        .value
}

fn assert_between(what: &str, before: f64, seen: f64, after: f64) {
    assert!(
        before <= seen && seen <= after,
        "{what}: {seen} is not between the reader's {before} and {after}"
    );
}

/// The busiest interface but `lo` in `/proc/1/net/dev`, and its received and sent bytes.
fn busiest_interface() -> (String, u64, u64) {
    let text = std::fs::read_to_string("/proc/1/net/dev").unwrap();
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let c: Vec<u64> = counters
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            Some((name.trim().to_owned(), c[0], c[8]))
        })
        .filter(|(name, ..)| name != "lo")
        .max_by_key(|(_, rx, _)| *rx)
        .expect("an interface besides lo")
}

fn proc_field(file: &str, key: &str) -> f64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key} in {file}"))
        .parse()
        .unwrap()
}

#[test]
fn memory_network_and_uptime_match_proc_read_independently() {
    let mut reader = reader();
    let before = read(&mut reader);
    let mem_total_kib = proc_field("/proc/meminfo", "MemTotal:");
    let (interface, rx, tx) = busiest_interface();
    let uptime = proc_field("/proc/uptime", "");
    let after = read(&mut reader);

    assert_eq!(
        value(&before, "system.mem.total", "") * 1024.0,
        mem_total_kib
    );
    let device = format!("device:{interface}");
    for (name, seen) in [("system.net.bytes_rcvd", rx), ("system.net.bytes_sent", tx)] {
        assert_between(
            &format!("{name} {device}"),
            value(&before, name, &device),
            seen as f64,
            value(&after, name, &device),
        );
    }
    assert_between(
        "system.uptime",
        value(&before, "system.uptime", ""),
        uptime,
        value(&after, "system.uptime", ""),
    );
    let cores = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(value(&before, "system.cpu.num_cores", ""), cores as f64);
}

#[test]
fn the_root_filesystem_matches_df_in_the_own_and_the_host_mount_view() {
    let df = std::process::Command::new("df")
        .args(["-k", "--output=source,size,used,avail", "/"])
        .output()
        .unwrap();
    let df = String::from_utf8(df.stdout).unwrap();
    let fields: Vec<&str> = df.lines().nth(1).unwrap().split_whitespace().collect();
    let (source, size_kib): (&str, f64) = (fields[0], fields[1].parse().unwrap());
    let device = format!("device:{source}");

    let own = read(&mut reader());
    assert_eq!(value(&own, "system.disk.total", &device), size_kib);

    // The host's procfs under another path makes the reader take init's (or kthreadd's) mount
    // table and reach "/" through `<procfs>/<pid>/root`, as in a container with /host/proc.
    let dir = tempfile::tempdir().unwrap();
    let host_proc = dir.path().join("proc");
    std::os::unix::fs::symlink("/proc", &host_proc).unwrap();
    let mut host = HostReader::new(&host_proc, Path::new("/sys"), "e2e-host".to_owned());
    let host = read(&mut host);
    assert_eq!(value(&host, "system.disk.total", &device), size_kib);
    let in_use = value(&host, "system.disk.in_use", &device);
    let (used, avail): (f64, f64) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    // df rounds its percentage up; the fraction is used / (used + available) either way.
    assert!(
        (in_use - used / (used + avail)).abs() < 0.01,
        "in_use {in_use}"
    );
}

/// Unmounts a test mount, also when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_filesystem_mounted_between_reads_is_reported_at_the_next_read_and_gone_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("kennel-e2e-{}", std::process::id());
    let device = format!("device:{source}");
    let mut reader = reader();
    // The first read reads the mount table and keeps it; a change must make the next read
    // read it again.
    assert!(!read(&mut reader).iter().any(|s| s.tags.contains(&device)));

    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", &source])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root, as the e2e tests run"
    );
    let mount = Mounted(dir.path().to_owned());
    let samples = read(&mut reader);
    assert_eq!(value(&samples, "system.disk.total", &device), 1024.0);
    assert_eq!(value(&samples, "system.disk.used", &device), 0.0);

    drop(mount);
    assert!(!read(&mut reader).iter().any(|s| s.tags.contains(&device)));
}

#[test]
fn the_second_read_has_cpu_percentages_and_io_gauges_and_every_sample_is_well_formed() {
    let mut reader = reader();
    let first = read(&mut reader);
    assert!(!first.iter().any(|s| s.name == "system.cpu.user"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = read(&mut reader);

    let percent: f64 = ["user", "system", "iowait", "idle", "stolen"]
        .iter()
        .map(|m| value(&second, &format!("system.cpu.{m}"), ""))
        .sum();
    assert!(
        (percent - 100.0).abs() < 0.001,
        "CPU percentages sum to {percent}"
    );
    assert!(second.iter().any(|s| s.name == "system.io.util"));
    for s in &second {
        assert!(s.value.is_finite(), "{s:?}");
        assert!(s.tags.is_sorted(), "{s:?}");
        assert_eq!(s.host, "e2e-host");
        let raw_counter = matches!(s.kind, MetricType::Rate | MetricType::MonotonicCount);
        assert!(raw_counter || s.kind == MetricType::Gauge, "{s:?}");
    }
    for name in [
        "system.load.norm.15",
        "system.mem.pct_usable",
        "system.swap.pct_free",
        "system.net.packets_in.count",
        "system.net.tcp.retrans_segs.count",
        "system.fs.inodes.in_use",
        "system.io.r_s",
        "system.disk.read_time",
        "system.cpu.context_switches",
    ] {
        assert!(second.iter().any(|s| s.name == name), "no {name}");
    }
}

/// The node exporter's value of `name` with every one of `labels`, summed over the rest.
fn node(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
        .map(|s| s.value)
        .collect();
    assert!(
        !matching.is_empty(),
        "the node exporter has no {name} {labels:?}"
    );
    matching.iter().sum()
}

#[test]
fn host_metrics_agree_with_the_node_exporter() {
    let exporter = NodeExporter::start();
    let mut reader = reader();
    let before = read(&mut reader);
    let scraped = exporter.scrape();
    let after = read(&mut reader);

    // Memory size: the same MemTotal in MiB and in bytes.
    assert_eq!(
        value(&before, "system.mem.total", "") * 1024.0 * 1024.0,
        node(&scraped, "node_memory_MemTotal_bytes", &[])
    );

    // The root filesystem's size: KiB against bytes.
    let root = scraped
        .iter()
        .find(|s| s.name == "node_filesystem_size_bytes" && s.labels["mountpoint"] == "/")
        .expect("the node exporter reports /");
    let device = format!("device:{}", root.labels["device"]);
    assert_eq!(
        value(&before, "system.disk.total", &device) * 1024.0,
        root.value
    );

    // Counters, load and CPU time: between the reader's two readings.
    let (interface, ..) = busiest_interface();
    let tag = format!("device:{interface}");
    for (ours, theirs) in [
        ("system.net.bytes_rcvd", "node_network_receive_bytes_total"),
        ("system.net.bytes_sent", "node_network_transmit_bytes_total"),
        (
            "system.net.packets_in.count",
            "node_network_receive_packets_total",
        ),
    ] {
        assert_between(
            &format!("{ours} {tag}"),
            value(&before, ours, &tag),
            node(&scraped, theirs, &[("device", &interface)]),
            value(&after, ours, &tag),
        );
    }
    let (l1, l2) = (
        value(&before, "system.load.1", ""),
        value(&after, "system.load.1", ""),
    );
    assert_between(
        "system.load.1",
        l1.min(l2),
        node(&scraped, "node_load1", &[]),
        l1.max(l2),
    );
    // The exporter sums the per-CPU lines, Kennel reads the total line: a tick apart at most
    // per CPU, at 100 ticks a second.
    let tick = 0.01 * value(&before, "system.cpu.num_cores", "");
    for mode in ["user", "system", "idle"] {
        let name = format!("system.cpu.{mode}.total");
        assert_between(
            &name,
            value(&before, &name, "core:cpu-total") - tick,
            node(&scraped, "node_cpu_seconds_total", &[("mode", mode)]),
            value(&after, &name, "core:cpu-total") + tick,
        );
    }
    let disk = before
        .iter()
        .filter(|s| s.name == "system.io.w_s")
        .max_by(|a, b| a.value.total_cmp(&b.value))
        .expect("a block device");
    let disk_tag = disk.tags[0].clone();
    let disk_name = disk_tag.trim_start_matches("device:");
    assert_between(
        &format!("system.io.w_s {disk_tag}"),
        disk.value,
        node(
            &scraped,
            "node_disk_writes_completed_total",
            &[("device", disk_name)],
        ),
        value(&after, "system.io.w_s", &disk_tag),
    );
}
