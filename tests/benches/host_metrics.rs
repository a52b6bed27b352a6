//! The cost of reading the host's metrics, against `prometheus-node-exporter` reading the same
//! figures on the same machine in the same run. Prints:
//! - one `HostReader::read`: median and 99th percentile wall time over 2,000 reads, the CPU
//!   time per read (the thread's, from `/proc/thread-self/stat`), the samples per read, and
//!   what that is in % of one core at a 15 s and a 1 s interval;
//! - one scrape of the node exporter with the matching collectors only (see
//!   `kennel_tests::node_exporter`): the exporter's CPU per scrape (its `/proc/<pid>/stat`
//!   before and after 300 scrapes), the wall time per scrape and the page's samples.
//!
//! `cargo bench -p kennel-tests --bench host_metrics`; needs Debian's
//! `prometheus-node-exporter` (tests/prepare-machine installs it). CPU times are in clock
//! ticks (10 ms), so the figures are averages over many reads, not single ones.

use std::path::Path;
use std::time::Instant;

use kennel_tests::node_exporter::NodeExporter;
use runner::collector::host::HostReader;

const READS: usize = 2_000;
const SCRAPES: usize = 300;

/// User and system CPU time of `stat` (a `/proc/.../stat` file), in seconds at 100 ticks/s.
fn cpu_seconds(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).expect("read the stat file");
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = text[text.rfind(')').expect("a stat line") + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn main() {
    kennel_tests::print_load_average();

    let mut reader = HostReader::new(Path::new("/proc"), Path::new("/sys"), "bench".to_owned());
    for _ in 0..3 {
        reader.read();
    }
    let problems: Vec<String> = reader.problems().iter().map(|p| p.to_string()).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut times = Vec::with_capacity(READS);
    let mut samples = 0;
    let cpu_before = cpu_seconds("/proc/thread-self/stat");
    for _ in 0..READS {
        let start = Instant::now();
        samples = reader.read().len();
        times.push(start.elapsed());
    }
    let cpu = cpu_seconds("/proc/thread-self/stat") - cpu_before;
    times.sort();
    let per_read = cpu / READS as f64;
    println!(
        "HostReader::read: median {:?}, p99 {:?}, CPU {:.0} µs per read ({READS} reads), {samples} samples; \
         {:.4} % of a core at 15 s, {:.3} % at 1 s",
        times[READS / 2],
        times[READS * 99 / 100],
        per_read * 1e6,
        per_read / 15.0 * 100.0,
        per_read * 100.0,
    );

    let exporter = NodeExporter::start();
    let stat = format!("/proc/{}/stat", exporter.pid());
    let mut page = String::new();
    for _ in 0..3 {
        page = exporter.scrape_text();
    }
    let page_samples = kennel_tests::node_exporter::parse(&page).len();
    let cpu_before = cpu_seconds(&stat);
    let start = Instant::now();
    for _ in 0..SCRAPES {
        exporter.scrape_text();
    }
    let wall = start.elapsed() / SCRAPES as u32;
    let per_scrape = (cpu_seconds(&stat) - cpu_before) / SCRAPES as f64;
    println!(
        "node exporter ({}): CPU {:.0} µs per scrape ({SCRAPES} scrapes), wall {wall:?}, {page_samples} samples; \
         {:.4} % of a core at 15 s, {:.3} % at 1 s",
        kennel_tests::node_exporter::COLLECTORS.join(","),
        per_scrape * 1e6,
        per_scrape / 15.0 * 100.0,
        per_scrape * 100.0,
    );
    println!(
        "node exporter / Kennel CPU per reading: {:.0}×",
        per_scrape / per_read.max(f64::MIN_POSITIVE)
    );
}
