//! The collector's cost with 100 real containers, from `runner run` itself. Five runners follow
//! the same Docker daemon through the same window, and differ only in the collector's keys:
//! off (`container_collection_interval: 0`), every 15 s, every 1 s, every 1 s without host
//! metrics, and every 1 s without Docker (host metrics alone). Prints:
//! - one pass per container (µs): the runner's own `kennel.collector.pass_seconds` gauge (wall
//!   time, sampled from `/metrics` every 30 s) over the `kennel.collector.containers` it read,
//!   and the collector thread's CPU time per pass (its `/proc/<pid>/task/<tid>/stat`);
//! - each runner's CPU as a share of one core over the window (`/proc/<pid>/stat`), and the
//!   collector's share: the runner's minus the runner with the collector off, which holds the
//!   same container store (target: ≤ 1 % of a core at 15 s). The difference is larger than the
//!   collector thread's: the aggregator and `/metrics` store take its samples;
//! - the RSS each runner holds at the end of the window, and what the collector adds, beside
//!   the series each runner's `/metrics` page holds;
//! - the host metrics' share of a pass (the runner without Docker, and 1 s with minus without
//!   host metrics) beside `prometheus-node-exporter` (`kennel_tests::node_exporter`, the same
//!   readings) scraped every second in the same window: its CPU per scrape;
//! - a `PROBLEMS` line for a runner with read errors or dropped samples, whose figures would
//!   then not be the cost of a whole pass.
//!
//! `cargo build --release -p kennel-runner --bin runner`, then
//! `cargo bench -p kennel-tests --bench collector`; needs a Docker daemon and Debian's
//! `prometheus-node-exporter` (`tests/prepare-machine` sets up both). About three and a half
//! minutes, most of it the 120 s window and starting and removing the containers. CPU times
//! are clock ticks (10 ms), so the figures are averages over the window; other containers on
//! the daemon are read too, so the per-container figures divide by the count the collector
//! reports.
//! `benches/host_metrics.rs` has the host read in-process, without a runner around it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kennel_tests::docker::{self, Container, SOCKET, unique_name};
use kennel_tests::node_exporter::NodeExporter;
use kennel_tests::runner_process::{Options, RunnerProcess};

const CONTAINERS: usize = 100;
/// A whole number of 15 s intervals.
const WINDOW: Duration = Duration::from_secs(120);
/// How often the gauges are read during the window: rarely, as rendering a page of the
/// collector's series costs the runner CPU that would be counted as the collector's.
const GAUGE_EVERY: Duration = Duration::from_secs(30);
/// The name the collector's thread has in `/proc` (`kennel-collector`, cut to 15 bytes).
const COLLECTOR_THREAD: &str = "kennel-collecto";
const TICKS_PER_SECOND: f64 = 100.0;

/// One runner's collector keys.
struct Variant {
    name: &'static str,
    /// Seconds between passes; 0 for off.
    interval: u32,
    host_metrics: bool,
    docker: bool,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        name: "off",
        interval: 0,
        host_metrics: true,
        docker: true,
    },
    Variant {
        name: "15 s",
        interval: 15,
        host_metrics: true,
        docker: true,
    },
    Variant {
        name: "1 s",
        interval: 1,
        host_metrics: true,
        docker: true,
    },
    Variant {
        name: "1 s, no host metrics",
        interval: 1,
        host_metrics: false,
        docker: true,
    },
    Variant {
        name: "1 s, host metrics only",
        interval: 1,
        host_metrics: true,
        docker: false,
    },
];

/// What one runner did over the window.
#[derive(Default)]
struct Measured {
    process_ticks: u64,
    thread_ticks: u64,
    pass_seconds: Vec<f64>,
    containers: f64,
    /// Series on the last `/metrics` page read.
    series: usize,
    rss_kib: u64,
}

fn main() {
    kennel_tests::print_load_average();
    let started = Instant::now();
    let containers = start_containers();
    let runners: Vec<RunnerProcess> = VARIANTS.iter().map(start_runner).collect();
    for (variant, runner) in VARIANTS.iter().zip(&runners) {
        if variant.interval > 0 && variant.docker {
            runner.wait_for(
                "the collector to read every container",
                Duration::from_secs(90),
                |r| {
                    gauge(&r.metrics(), "kennel_collector_containers")
                        .is_some_and(|n| n >= CONTAINERS as f64)
                },
            );
        }
    }
    // Two 15 s passes (the first only sets the rates' baseline), so every runner holds every
    // context it will hold.
    std::thread::sleep(Duration::from_secs(20));
    let exporter = NodeExporter::start();
    exporter.scrape_text();

    let mut measured: Vec<Measured> = runners.iter().map(|_| Measured::default()).collect();
    let threads: Vec<Option<u32>> = runners.iter().map(|r| collector_thread(r.pid())).collect();
    let before: Vec<(u64, u64)> = runners
        .iter()
        .zip(&threads)
        .map(|(r, thread)| {
            (
                ticks(r.pid(), None),
                thread.map_or(0, |t| ticks(r.pid(), Some(t))),
            )
        })
        .collect();
    let exporter_before = ticks(exporter.pid(), None);
    let window_start = Instant::now();
    let stop = AtomicBool::new(false);
    let scrapes = std::thread::scope(|scope| {
        let scraper = scope.spawn(|| {
            let mut scrapes = 0u32;
            while !stop.load(Ordering::Relaxed) {
                exporter.scrape_text();
                scrapes += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            scrapes
        });
        loop {
            for (runner, m) in runners.iter().zip(&mut measured) {
                let page = runner.metrics();
                m.pass_seconds
                    .extend(gauge(&page, "kennel_collector_pass_seconds"));
                m.containers = gauge(&page, "kennel_collector_containers").unwrap_or(0.0);
                m.series = page.lines().filter(|l| !l.starts_with('#')).count();
            }
            let elapsed = window_start.elapsed();
            if elapsed >= WINDOW {
                break;
            }
            std::thread::sleep(GAUGE_EVERY.min(WINDOW - elapsed));
        }
        stop.store(true, Ordering::Relaxed);
        scraper.join().expect("the scraper thread")
    });
    let window = window_start.elapsed().as_secs_f64();
    for (((runner, thread), (process, collector)), m) in
        runners.iter().zip(&threads).zip(&before).zip(&mut measured)
    {
        m.process_ticks = ticks(runner.pid(), None) - process;
        m.thread_ticks = thread.map_or(0, |t| ticks(runner.pid(), Some(t))) - collector;
        m.rss_kib = runner.rss_kib();
    }
    let exporter_ticks = ticks(exporter.pid(), None) - exporter_before;

    println!(
        "{CONTAINERS} containers of {} (sleep 600); window {window:.0} s; load average at the end: {}",
        docker::IMAGE,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let core = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / window * 100.0;
    let off = &measured[0];
    for (variant, m) in VARIANTS.iter().zip(&measured) {
        let mut line = format!(
            "collector {:<24} runner CPU {:.2} % of a core, RSS {:.1} MiB, {} series on /metrics",
            format!("{}:", variant.name),
            core(m.process_ticks),
            m.rss_kib as f64 / 1024.0,
            m.series,
        );
        if variant.interval > 0 {
            let passes = window / f64::from(variant.interval);
            let thread_ms = m.thread_ticks as f64 / TICKS_PER_SECOND / passes * 1e3;
            let wall = median(&m.pass_seconds);
            line.push_str(&format!(
                "; pass {:.1} ms wall (median of {}, max {:.1}), collector thread {:.2} % of a core, \
                 {thread_ms:.1} ms CPU per pass",
                wall * 1e3,
                m.pass_seconds.len(),
                m.pass_seconds.iter().copied().fold(0.0, f64::max) * 1e3,
                core(m.thread_ticks),
            ));
            if variant.docker {
                line.push_str(&format!(
                    "; {:.0} containers: {:.0} µs wall, {:.0} µs CPU per container; \
                     collector adds {:+.2} % of a core, {:+.1} MiB",
                    m.containers,
                    wall * 1e6 / m.containers,
                    thread_ms * 1e3 / m.containers,
                    core(m.process_ticks) - core(off.process_ticks),
                    (m.rss_kib as f64 - off.rss_kib as f64) / 1024.0,
                ));
            }
        }
        println!("{line}");
    }
    // The collector thread's CPU per pass of a runner collecting every second.
    let per_pass_ms = |m: &Measured| m.thread_ticks as f64 / TICKS_PER_SECOND / window * 1e3;
    let host_only = &measured[4];
    let exporter_ms = exporter_ticks as f64 / TICKS_PER_SECOND / f64::from(scrapes) * 1e3;
    println!(
        "host metrics: Kennel {:.2} ms wall, {:.2} ms CPU per pass (runner without Docker); \
         {:.2} ms CPU per pass with minus without host metrics (100 containers); \
         node exporter ({}) {exporter_ms:.2} ms CPU per scrape ({scrapes} scrapes), \
         {:.1}× Kennel's per pass",
        median(&host_only.pass_seconds) * 1e3,
        per_pass_ms(host_only),
        per_pass_ms(&measured[2]) - per_pass_ms(&measured[3]),
        kennel_tests::node_exporter::COLLECTORS.join(","),
        exporter_ms / per_pass_ms(host_only).max(f64::MIN_POSITIVE),
    );
    for (variant, runner) in VARIANTS.iter().zip(&runners) {
        let page = runner.metrics();
        // Nothing should fail or be dropped; a figure measured past a failure is not the cost.
        let problems: Vec<&str> = page
            .lines()
            .filter(|l| {
                (l.starts_with("kennel_collector_read_errors")
                    || l.starts_with("kennel_aggregator_samples_dropped"))
                    && l.rsplit_once(' ').is_some_and(|(_, v)| v != "0")
            })
            .collect();
        if !problems.is_empty() {
            println!(
                "collector {}: PROBLEMS {}",
                variant.name,
                problems.join("; ")
            );
        }
    }
    drop(runners);
    remove(containers);
    println!("whole run {:.0} s", started.elapsed().as_secs_f64());
}

/// Starts the containers, ten `docker run`s at a time.
fn start_containers() -> Vec<Container> {
    let image = docker::image();
    let prefix = unique_name("collector-bench");
    let mut containers = Vec::with_capacity(CONTAINERS);
    for batch in 0..CONTAINERS / 10 {
        std::thread::scope(|scope| {
            let started: Vec<_> = (0..10)
                .map(|i| {
                    let name = format!("{prefix}-{}", batch * 10 + i);
                    scope.spawn(move || Container::run(&name, &[image, "sleep", "600"]))
                })
                .collect();
            containers.extend(started.into_iter().map(|t| t.join().expect("docker run")));
        });
    }
    containers
}

/// Removes the containers, ten at a time.
fn remove(containers: Vec<Container>) {
    let mut containers = containers;
    while !containers.is_empty() {
        let batch: Vec<Container> = containers.drain(..containers.len().min(10)).collect();
        std::thread::scope(|scope| {
            for container in batch {
                scope.spawn(move || drop(container));
            }
        });
    }
}

fn start_runner(variant: &Variant) -> RunnerProcess {
    RunnerProcess::start(
        Options {
            docker: variant.docker.then(|| SOCKET.to_owned()),
            extra: format!(
                "container_collection_interval: {}\ncollect_host_metrics: {}\n",
                variant.interval, variant.host_metrics
            ),
            // As in production: a log line per check run would be counted as the runner's.
            log: Some("info"),
            ..Options::default()
        },
        &[],
    )
}

/// The value of an untagged series on a `/metrics` page.
fn gauge(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

/// The id of the collector's thread in the runner `pid`.
fn collector_thread(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the runner is alive")
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == COLLECTOR_THREAD)
        })
        .and_then(|task| task.file_name().to_str()?.parse().ok())
}

/// utime + stime of a process, or of one of its threads, in clock ticks.
fn ticks(pid: u32, thread: Option<u32>) -> u64 {
    let path = match thread {
        Some(tid) => format!("/proc/{pid}/task/{tid}/stat"),
        None => format!("/proc/{pid}/stat"),
    };
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}
