//! Load runs of delivery: DogStatsD over the Unix datagram socket into `runner run` (the release
//! build, a real process), its forwarder sending Datadog v1 series (JSON + zlib) to a real
//! VictoriaMetrics, which stores every point it is sent and does not deduplicate, so the sum
//! of what it holds tells whether each count arrived exactly once. Prints:
//! - end to end: [`E2E_CONTEXTS`] count contexts sent for [`E2E_SEND`] from [`SENDERS`]
//!   threads, one line per context and ~8 KB datagrams, with blocking sends (the socket's
//!   queue holds the senders back, so nothing is dropped on the way in), flushed every second
//!   (`bucket_size_seconds: 1`): the send rate, the sustained rate (every count parsed), the
//!   counts VictoriaMetrics holds against those sent, and how long after the last send it had
//!   them all;
//! - a full in-memory retry queue: `forwarder_storage_path: null` and the default 15 MiB
//!   bound, [`CONTEXTS`] gauges with fresh decimal values every second, flushed every second
//!   in the default format (v2 protobuf + zstd) to the fake intake (`tests/src/fake_intake.rs`,
//!   which decodes and answers them), which is then taken off the network (its port closed):
//!   the queued bytes against the bound, and the runner's RSS (the median of samples every
//!   250 ms over [`WINDOW`], with their range: a flush's buffers come and go within it)
//!   delivering, then with the queue full, and 10 s on with the oldest payloads dropped; the
//!   difference as a multiple of the bound. Both figures come from one warmed-up process
//!   (rather than from a runner whose intake was never reachable and another delivering):
//!   two runners under the same load differ by a few MiB by themselves;
//! - steady state: [`CONTEXTS`] count contexts, each counted (1 to 9) every second, flushed
//!   every 10 s to VictoriaMetrics: the runner's RSS over each of [`STEADY_FLUSHES`] flushes
//!   after the first delivered one;
//! - recovery: VictoriaMetrics stopped for [`OUTAGE`] under that load, then restarted, with
//!   the spill directory in a temporary directory and a small memory bound
//!   ([`OUTAGE_MEMORY`]) so that most of the backlog is written to disk and read back: the
//!   backlog at the restart, the time from the restart to the first delivery (the breaker's
//!   backoff, up to `forwarder_backoff_max`, 64 s by default) and to an empty queue, the drain
//!   rate, the RSS at its peak and after, and the sum check over the whole run.
//!
//! A count is flushed as a Datadog rate, `value = count / interval` with `interval` the bucket
//! size (what the v1 series carry as `"interval"`; VictoriaMetrics keeps only the value), so
//! the counts stored are `Σ value × bucket_size_seconds`.
//!
//! `cargo bench -p kennel-tests --bench delivery` after `make` (the runner's release build and
//! the plugins), with VictoriaMetrics installed (`tests/prepare-machine`). About 4-5 minutes,
//! most of it the outage and the breaker's backoff after it. The figures are only as quiet as
//! the machine: the run prints the load average it started with and the load at each figure
//! (the runner, VictoriaMetrics and the senders share the machine's cores).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kennel_tests::fake_intake::{self, FakeIntake};
use kennel_tests::runner_process::{Options, RunnerProcess};
use kennel_tests::victoria::VictoriaMetrics;
use kennel_tests::wait;

/// Count contexts of the end-to-end run.
const E2E_CONTEXTS: usize = 10_000;
/// How long the end-to-end run sends.
const E2E_SEND: Duration = Duration::from_secs(20);
/// Threads sending the end-to-end run's datagrams.
const SENDERS: usize = 2;
/// The most bytes in one datagram (the runner's `dogstatsd_buffer_size` is 8192).
const DATAGRAM_BYTES: usize = 8000;
/// Contexts of the queue, steady-state and recovery runs.
const CONTEXTS: usize = 100_000;
/// The retry queue's default memory bound, `forwarder_retry_queue_payloads_max_size`.
const QUEUE_BOUND: u64 = 15 * 1024 * 1024;
/// How long the full-queue run delivers before its RSS is read.
const SETTLE: Duration = Duration::from_secs(8);
/// How long the full-queue run's RSS is sampled for each figure.
const WINDOW: Duration = Duration::from_secs(8);
/// Flushes (of 10 s) the steady-state RSS is sampled over.
const STEADY_FLUSHES: u64 = 3;
/// How long VictoriaMetrics is down.
const OUTAGE: Duration = Duration::from_secs(60);
/// The retry queue's memory bound during the outage: small, so most of the backlog is
/// written to disk and read back.
const OUTAGE_MEMORY: u64 = 2 * 1024 * 1024;

fn main() {
    kennel_tests::print_load_average();
    end_to_end();
    full_queue();
    steady_state_and_recovery();
}

/// Figure 1: counts at the most the runner takes, and every one of them stored.
fn end_to_end() {
    let victoria = VictoriaMetrics::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("dsd.socket");
    let runner = RunnerProcess::start(
        Options {
            dogstatsd_socket: Some(socket.clone()),
            extra: format!(
                "{}forwarder_storage_path: null\naggregator:\n  bucket_size_seconds: 1\n",
                victoria_keys(&victoria)
            ),
            log: Some("warn"),
            ..Options::default()
        },
        &[],
    );
    let lines: Vec<String> = (0..E2E_CONTEXTS)
        .map(|i| format!("delivery.e2e:1|c|#ctx:{i}"))
        .collect();
    let datagrams = Arc::new(pack(&lines));
    let per_round = lines.len() as u64;

    let started = Instant::now();
    let threads: Vec<JoinHandle<u64>> = (0..SENDERS)
        .map(|_| {
            let (socket, datagrams) = (socket.clone(), datagrams.clone());
            std::thread::spawn(move || {
                let client = UnixDatagram::unbound().expect("socket");
                let mut rounds = 0;
                while started.elapsed() < E2E_SEND {
                    for datagram in datagrams.iter() {
                        client.send_to(datagram, &socket).expect("a blocking send");
                    }
                    rounds += 1;
                }
                rounds * per_round
            })
        })
        .collect();
    let sent: u64 = threads.into_iter().map(|t| t.join().expect("sender")).sum();
    let send_time = started.elapsed();
    let last_send = Instant::now();

    let parsed = wait::until(
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(100));
            counter(&runner.metrics(), METRICS_PARSED)
        },
        |parsed| *parsed >= sent as f64,
    );
    let all_parsed = started.elapsed();
    let query = "sum(sum_over_time({__name__=\"delivery.e2e\"}[1h]))";
    let in_victoria = wait::until(
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(80));
            scalar(&victoria.query(query))
        },
        |stored| *stored >= sent as f64,
    );
    let delivered_after = last_send.elapsed();
    // Exactly: every stored point, once the counters' zeros are all that is still coming.
    std::thread::sleep(Duration::from_secs(2));
    let (series, points, stored) = stored(&victoria, "delivery.e2e", 1.0);
    let endpoint = endpoint(&runner);

    println!(
        "end to end, {E2E_CONTEXTS} count contexts, {} lines per datagram, {SENDERS} senders, blocking sends, flushed every 1 s to VictoriaMetrics (v1 JSON + zlib):",
        lines.len() / datagrams.len()
    );
    println!(
        "  sent {sent} counts in {:.1} s: {:.0} metrics/s; all parsed {:.1} s after the first send ({:.0} metrics/s sustained; parsed {parsed:.0})",
        send_time.as_secs_f64(),
        sent as f64 / send_time.as_secs_f64(),
        all_parsed.as_secs_f64(),
        sent as f64 / all_parsed.as_secs_f64(),
    );
    println!(
        "  VictoriaMetrics: {stored:.0} of {sent} counts ({}), {points} points in {series} series; all there {:.1} s after the last send (a query saw {in_victoria:.0})",
        verdict(stored, sent),
        delivered_after.as_secs_f64()
    );
    println!(
        "  forwarder: {} payloads delivered, {} retried, dropped {}; runner RSS {:.1} MiB; load {}",
        endpoint["succeeded"],
        endpoint["retried"],
        endpoint["dropped"],
        mib(runner.rss_kib()),
        load_average()
    );
}

/// Figure 2: what a full in-memory queue costs against its bound: the runner's RSS delivering
/// (the queue empty), then with the intake gone (its port closed) and the queue full.
fn full_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("dsd.socket");
    let intake = FakeIntake::start();
    let runner = RunnerProcess::start(
        Options {
            dogstatsd_socket: Some(socket.clone()),
            extra: format!(
                "api_key: {}\ndd_url: {}\nforwarder_storage_path: null\n\
                 aggregator:\n  bucket_size_seconds: 1\n",
                fake_intake::API_KEY,
                intake.url()
            ),
            log: Some("warn"),
            ..Options::default()
        },
        &[],
    );
    let idle = runner.rss_kib();
    let sender = Paced::start(socket, |round, i| {
        // Values that change every second and from context to context, with decimals, as
        // real gauges do, so the payloads compress as much as real ones and no more.
        let value = (i as u64 * 7_919 + round * 104_729) % 1_000_003;
        (
            format!(
                "delivery.queue:{}.{:03}|g|#ctx:{i}",
                value / 1000,
                value % 1000
            ),
            0,
        )
    });
    // The intake keeps every request: forget them as they come.
    let forget = Arc::new(AtomicBool::new(true));
    let (delivering, full, later, fill_time) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while forget.load(Ordering::Relaxed) {
                intake.clear();
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        wait::until(
            Duration::from_secs(30),
            || endpoint(&runner),
            |e| number(e, "succeeded") > 0,
        );
        // A few flushes in, the contexts all made and the buffers grown.
        std::thread::sleep(SETTLE);
        let delivering = rss_over(&runner, WINDOW);
        intake.set_down(true);
        let down = Instant::now();
        let full = wait::until(
            Duration::from_secs(120),
            || endpoint(&runner),
            |e| dropped(e, "queue_full").0 > 0,
        );
        assert!(
            dropped(&full, "queue_full").0 > 0,
            "the queue did not fill in 120 s: {full:#}"
        );
        let fill_time = down.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let full = rss_over(&runner, WINDOW);
        std::thread::sleep(Duration::from_secs(10));
        let later = rss_over(&runner, WINDOW);
        forget.store(false, Ordering::Relaxed);
        (delivering, full, later, fill_time)
    });
    let sent = sender.stop();

    let queued = |e: &serde_json::Value| number(e, "queued_memory_bytes");
    println!(
        "full in-memory retry queue, {CONTEXTS} gauges refreshed and flushed every 1 s (v2 protobuf + zstd), bound {QUEUE_BOUND} bytes (15 MiB), RSS over {:.0} s (median [min-max]):",
        WINDOW.as_secs_f64()
    );
    println!(
        "  idle {:.1} MiB; delivering {} ({} payloads, {} bytes queued)",
        mib(idle),
        delivering.1,
        number(&delivering.0, "queued_memory_payloads"),
        queued(&delivering.0)
    );
    for (when, (e, rss)) in [
        (
            format!(
                "intake down, queue full ({:.1} s after) + 2 s",
                fill_time.as_secs_f64()
            ),
            full,
        ),
        ("10 s later".to_owned(), later),
    ] {
        let (payloads, items) = dropped(&e, "queue_full");
        let growth = (rss.median.saturating_sub(delivering.1.median) * 1024) as f64;
        println!(
            "  {when}: {} payloads, {} bytes queued ({:.1}% of the bound), {payloads} payloads ({items} points) dropped as queue_full; RSS {rss}: +{:.1} MiB = {:.2}x the bound",
            number(&e, "queued_memory_payloads"),
            queued(&e),
            100.0 * queued(&e) as f64 / QUEUE_BOUND as f64,
            growth / (1024.0 * 1024.0),
            growth / QUEUE_BOUND as f64,
        );
    }
    println!(
        "  {} lines sent in {} rounds; load {}",
        sent.lines,
        sent.rounds,
        load_average()
    );
}

/// Figures 3 and 4: 100,000 contexts to VictoriaMetrics, an outage, and the catch-up.
fn steady_state_and_recovery() {
    let mut victoria = VictoriaMetrics::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("dsd.socket");
    let spill = dir.path().join("spill");
    // The default `forwarder_storage_max_disk_ratio` (0.8) counts the blocks reserved for root
    // as used, so on a roomy disk with a large reserve it turns the spill off: the bench
    // measures the spill, not the machine's disk.
    let runner = RunnerProcess::start(
        Options {
            dogstatsd_socket: Some(socket.clone()),
            extra: format!(
                "{}forwarder_storage_path: {}\nforwarder_retry_queue_payloads_max_size: {OUTAGE_MEMORY}\n\
                 forwarder_storage_max_disk_ratio: 1.0\naggregator:\n  bucket_size_seconds: 10\n",
                victoria_keys(&victoria),
                spill.display()
            ),
            log: Some("warn"),
            ..Options::default()
        },
        &[],
    );
    let sender = Paced::start(socket, |round, i| {
        let count = 1 + (i as u64 * 7_919 + round) % 9;
        (format!("delivery.load:{count}|c|#ctx:{i}"), count)
    });

    // Steady state: the flushes after the first delivered one, sampled every second.
    wait::until(
        Duration::from_secs(60),
        || endpoint(&runner),
        |e| number(e, "succeeded") > 0,
    );
    let mut windows = Vec::new();
    for _ in 0..STEADY_FLUSHES {
        windows.push(rss_over(&runner, Duration::from_secs(10)).1);
    }
    let steady = endpoint(&runner);
    println!(
        "steady state, {CONTEXTS} count contexts each counted every 1 s, flushed every 10 s to VictoriaMetrics (v1 JSON + zlib):"
    );
    println!(
        "  RSS in each 10 s after the first delivered flush: {}; {} payloads delivered; load {}",
        windows
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        number(&steady, "succeeded"),
        load_average()
    );

    victoria.stop();
    let outage = Instant::now();
    let mut peak_rss = 0;
    while outage.elapsed() < OUTAGE {
        peak_rss = peak_rss.max(runner.rss_kib());
        std::thread::sleep(Duration::from_millis(500));
    }
    let backlog = endpoint(&runner);
    victoria.restart();
    let restarted = Instant::now();
    let succeeded_before = number(&backlog, "succeeded");
    let mut first_delivery = None;
    let drained = wait::until(
        Duration::from_secs(180),
        || {
            let e = endpoint(&runner);
            peak_rss = peak_rss.max(runner.rss_kib());
            if first_delivery.is_none() && number(&e, "succeeded") > succeeded_before {
                first_delivery = Some(restarted.elapsed());
            }
            e
        },
        |e| number(e, "succeeded") > succeeded_before && queued_payloads(e) == 0,
    );
    let drain_time = restarted.elapsed();
    assert_eq!(
        queued_payloads(&drained),
        0,
        "not drained in 180 s: {drained:#}"
    );
    let rss_drained = runner.rss_kib();
    let first_delivery = first_delivery.unwrap_or(drain_time);
    let draining = drain_time.saturating_sub(first_delivery).as_secs_f64();
    let backlog_bytes =
        number(&backlog, "queued_memory_bytes") + number(&backlog, "queued_disk_bytes");
    let delivered = number(&drained, "succeeded") - succeeded_before;

    // Every count sent, flushed and delivered: the last bucket closes 10 s after the last
    // send (then the counters go on as zeros).
    let sent = sender.stop();
    std::thread::sleep(Duration::from_secs(12));
    let settled = wait::until(
        Duration::from_secs(60),
        || endpoint(&runner),
        |e| queued_payloads(e) == 0,
    );
    let (series, points, stored) = stored(&victoria, "delivery.load", 10.0);

    println!(
        "recovery, VictoriaMetrics down {:.0} s under that load, then restarted (memory bound {OUTAGE_MEMORY} bytes, so the backlog spills to disk):",
        OUTAGE.as_secs_f64()
    );
    println!(
        "  backlog at the restart: {} payloads, {} bytes in memory + {} payloads, {} bytes on disk; oldest {:.0} s; {} attempts failed during the outage",
        number(&backlog, "queued_memory_payloads"),
        number(&backlog, "queued_memory_bytes"),
        number(&backlog, "queued_disk_payloads"),
        number(&backlog, "queued_disk_bytes"),
        backlog["oldest_queued_seconds"].as_f64().unwrap_or(0.0),
        number(&backlog, "retried"),
    );
    println!(
        "  first delivery {:.1} s after the restart (the breaker's backoff), queue empty {:.1} s after it: {delivered} payloads in {draining:.1} s = {:.1} payloads/s, {:.2} MB/s of compressed backlog",
        first_delivery.as_secs_f64(),
        drain_time.as_secs_f64(),
        delivered as f64 / draining.max(0.001),
        backlog_bytes as f64 / 1e6 / draining.max(0.001),
    );
    println!(
        "  RSS: peak during the outage and the catch-up {:.1} MiB, drained {:.1} MiB",
        mib(peak_rss),
        mib(rss_drained)
    );
    println!(
        "  whole run: VictoriaMetrics holds {stored:.0} of {} counts sent in {} lines ({}), {points} points in {series} series; dropped {}, spill error {}; load {}",
        sent.counts,
        sent.lines,
        verdict(stored, sent.counts),
        settled["dropped"],
        settled["spill_error"],
        load_average()
    );
}

/// RSS sampled every 250 ms.
struct Rss {
    min: u64,
    median: u64,
    max: u64,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB [{:.1}-{:.1}]",
            mib(self.median),
            mib(self.min),
            mib(self.max)
        )
    }
}

/// The runner's RSS over `window`, and its forwarder endpoint at the end.
fn rss_over(runner: &RunnerProcess, window: Duration) -> (serde_json::Value, Rss) {
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < window {
        samples.push(runner.rss_kib());
        std::thread::sleep(Duration::from_millis(250));
    }
    samples.sort_unstable();
    let rss = Rss {
        min: samples[0],
        median: samples[samples.len() / 2],
        max: samples[samples.len() - 1],
    };
    (endpoint(runner), rss)
}

fn queued_payloads(endpoint: &serde_json::Value) -> u64 {
    number(endpoint, "queued_memory_payloads") + number(endpoint, "queued_disk_payloads")
}

/// The forwarder keys that send to VictoriaMetrics' Datadog API: v1 series (it refuses v2)
/// compressed with zlib (it refuses zstd).
fn victoria_keys(victoria: &VictoriaMetrics) -> String {
    format!(
        "api_key: bench-key\ndd_url: {}\nuse_v2_api:\n  series: false\nserializer_compressor_kind: zlib\n",
        victoria.datadog_url()
    )
}

/// Lines packed into datagrams of at most [`DATAGRAM_BYTES`].
fn pack(lines: &[String]) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut datagram: Vec<u8> = Vec::with_capacity(DATAGRAM_BYTES);
    for line in lines {
        if !datagram.is_empty() && datagram.len() + 1 + line.len() > DATAGRAM_BYTES {
            datagrams.push(std::mem::take(&mut datagram));
        }
        if !datagram.is_empty() {
            datagram.push(b'\n');
        }
        datagram.extend_from_slice(line.as_bytes());
    }
    if !datagram.is_empty() {
        datagrams.push(datagram);
    }
    datagrams
}

/// What a [`Paced`] sender sent.
struct Sent {
    lines: u64,
    /// The lines' counts summed (each line's `line` says what it counts).
    counts: u64,
    rounds: u64,
}

/// One thread sending [`CONTEXTS`] lines, `line(round, context)` = (text, its count), once a
/// second with blocking sends, until stopped.
struct Paced {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Sent>,
}

impl Paced {
    fn start(socket: PathBuf, line: fn(u64, usize) -> (String, u64)) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = UnixDatagram::unbound().expect("socket");
                let started = Instant::now();
                let mut sent = Sent {
                    lines: 0,
                    counts: 0,
                    rounds: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    let mut text = Vec::with_capacity(CONTEXTS);
                    for i in 0..CONTEXTS {
                        let (line, count) = line(sent.rounds, i);
                        text.push(line);
                        sent.counts += count;
                    }
                    for datagram in pack(&text) {
                        client.send_to(&datagram, &socket).expect("a blocking send");
                    }
                    sent.lines += CONTEXTS as u64;
                    sent.rounds += 1;
                    let next = started + Duration::from_secs(sent.rounds);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                sent
            })
        };
        Self { stop, thread }
    }

    fn stop(self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sender")
    }
}

/// The series and points stored for `name`, and the counts they stand for
/// (`Σ value × interval`).
fn stored(victoria: &VictoriaMetrics, name: &str, interval: f64) -> (usize, usize, f64) {
    let series = victoria.export(&format!("{{__name__=\"{name}\"}}"));
    let points = series.iter().map(|s| s.values.len()).sum();
    let counts = series.iter().flat_map(|s| &s.values).sum::<f64>() * interval;
    (series.len(), points, counts)
}

fn verdict(stored: f64, sent: u64) -> &'static str {
    let difference = stored - sent as f64;
    if difference.abs() < 0.5 {
        "nothing lost, nothing twice"
    } else if difference < 0.0 {
        "SOME LOST"
    } else {
        "SOME TWICE"
    }
}

/// The status API's only forwarder endpoint.
fn endpoint(runner: &RunnerProcess) -> serde_json::Value {
    let status = runner.status();
    status["forwarder"]
        .as_array()
        .and_then(|e| e.first())
        .cloned()
        .unwrap_or_else(|| panic!("no forwarder endpoint in {status:#}"))
}

fn number(endpoint: &serde_json::Value, field: &str) -> u64 {
    endpoint[field].as_u64().unwrap_or(0)
}

/// Payloads and items dropped for `reason`.
fn dropped(endpoint: &serde_json::Value, reason: &str) -> (u64, u64) {
    endpoint["dropped"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["reason"] == reason)
        .map_or((0, 0), |d| (number(d, "payloads"), number(d, "items")))
}

const METRICS_PARSED: &str = "kennel_dogstatsd_messages_total{message_type=\"metric\"}";

/// A counter's value on a `/metrics` page.
fn counter(page: &str, series: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The one value of a query's result (0 when empty).
fn scalar(vector: &[(kennel_tests::prometheus::Labels, f64)]) -> f64 {
    vector.first().map_or(0.0, |(_, v)| *v)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
