//! A load run of the production pipeline while `/metrics` is scraped hard: it holds `series`
//! series on its page, `scrapers` clients scrape it in a loop, a DogStatsD client sends
//! `rate` datagrams a second over the Unix socket *without blocking* (a full socket refuses
//! the datagram, which is what a real client then drops), and a check runs every second.
//! What it measures: refused sends, the check's longest gap between runs, the scrapes' times,
//! and the aggregation loop's longest turn. A test asserts on a small run, a benchmark prints
//! a large one.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::pipeline::{self, TestPipeline};

/// What to load the pipeline with.
#[derive(Debug, Clone)]
pub struct ScrapeLoad {
    /// Series on the page.
    pub series: usize,
    /// Clients scraping `/metrics` in a loop.
    pub scrapers: usize,
    /// DogStatsD datagrams a second, sent without blocking.
    pub rate: u32,
    /// How long the scrapers and the sender run.
    pub duration: Duration,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct ScrapeFigures {
    pub sent: u64,
    /// Datagrams the socket refused (its queue was full).
    pub refused: u64,
    pub scrapes: u64,
    /// The page's size, bytes.
    pub page_bytes: usize,
    /// Scrape times: median and longest.
    pub scrape_median: Duration,
    pub scrape_max: Duration,
    /// The 1 s check's runs during the load, and its longest gap between two runs.
    pub check_runs: usize,
    pub check_longest_gap: Duration,
    /// The aggregation loop's longest turn (decoding a batch, or a flush) during the load.
    pub loop_longest_turn: Duration,
}

/// Series sent per datagram while filling the page.
const FILL_PER_DATAGRAM: usize = 25;

/// Runs `load` on a fresh pipeline under `dir`.
pub fn run(dir: &Path, load: &ScrapeLoad) -> ScrapeFigures {
    let mut config = pipeline::config(dir);
    config.openmetrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
    config.aggregator.max_contexts = load.series * 2 + 10_000;
    std::fs::write(
        config.confd_path.join("test_plugin.yaml"),
        "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
    )
    .expect("conf.d file");
    let pipeline = TestPipeline::start(config, Vec::new());
    let metrics = pipeline.metrics.expect("/metrics is on");

    fill(&pipeline, load.series);
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let url = format!("http://{metrics}/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    let page_bytes = loop {
        let page = client
            .get(&url)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let rows = page.lines().filter(|l| l.starts_with("load_fill{")).count();
        if rows >= load.series || Instant::now() >= deadline {
            assert!(
                rows >= load.series,
                "{rows} of {} series on the page",
                load.series
            );
            break page.len();
        }
        std::thread::sleep(Duration::from_millis(500));
    };

    let stop = Arc::new(AtomicBool::new(false));
    let scrapers: Vec<_> = (0..load.scrapers)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut times = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = client
                        .get(&url)
                        .send()
                        .and_then(|r| r.bytes())
                        .is_ok_and(|b| !b.is_empty());
                    assert!(ok, "a scrape failed");
                    times.push(started.elapsed());
                }
                times
            })
        })
        .collect();
    let sender = {
        let (socket, rate, duration) = (pipeline.socket.clone(), load.rate, load.duration);
        std::thread::spawn(move || send_steadily(&socket, rate, duration))
    };
    let flushes_before = pipeline.flushes().len();
    let gaps = watch_check(&pipeline, load.duration);
    let (sent, refused) = sender.join().expect("the sender ends");
    stop.store(true, Ordering::Relaxed);
    let mut times: Vec<Duration> = scrapers
        .into_iter()
        .flat_map(|s| s.join().expect("a scraper ends"))
        .collect();
    times.sort_unstable();
    let loop_longest_turn = pipeline.flushes()[flushes_before..]
        .iter()
        .flat_map(|f| &f.series)
        .filter(|s| &*s.name == "kennel.aggregator.longest_turn_seconds")
        .flat_map(|s| &s.points)
        .map(|p| p.value)
        .fold(0.0f64, f64::max);
    let loop_longest_turn = Duration::from_secs_f64(loop_longest_turn);
    ScrapeFigures {
        sent,
        refused,
        scrapes: times.len() as u64,
        page_bytes,
        scrape_median: times.get(times.len() / 2).copied().unwrap_or_default(),
        scrape_max: times.last().copied().unwrap_or_default(),
        check_runs: gaps.0,
        check_longest_gap: gaps.1,
        loop_longest_turn,
    }
}

/// Puts `series` gauges on the page, sending (blocking) over the Unix socket.
fn fill(pipeline: &TestPipeline, series: usize) {
    let client = UnixDatagram::unbound().expect("a socket");
    let mut datagram = String::new();
    for start in (0..series).step_by(FILL_PER_DATAGRAM) {
        datagram.clear();
        for i in start..(start + FILL_PER_DATAGRAM).min(series) {
            datagram.push_str(&format!("load.fill:1|g|#series:{i}\n"));
        }
        client
            .send_to(datagram.as_bytes(), &pipeline.socket)
            .expect("a fill datagram is sent");
    }
}

/// Sends `rate` datagrams a second for `duration`, in 10 ms steps, without blocking: returns
/// (sent, refused).
fn send_steadily(socket: &Path, rate: u32, duration: Duration) -> (u64, u64) {
    let client = UnixDatagram::unbound().expect("a socket");
    client.set_nonblocking(true).expect("non-blocking");
    let step = Duration::from_millis(10);
    let per_step = (rate as u64 / 100).max(1);
    let (mut sent, mut refused) = (0u64, 0u64);
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < duration {
        for i in 0..per_step {
            let datagram = format!("load.steady:{i}|c|#sender:steady");
            match client.send_to(datagram.as_bytes(), socket) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => refused += 1,
                Err(e) => panic!("send failed: {e}"),
            }
        }
        next += step;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (sent, refused)
}

/// Watches the check's runs in `/status` for `duration`: (runs seen, longest gap).
fn watch_check(pipeline: &TestPipeline, duration: Duration) -> (usize, Duration) {
    let started = Instant::now();
    let mut runs: Vec<f64> = Vec::new();
    while started.elapsed() < duration {
        let (_, status) = pipeline.get("/status");
        let last = status["instances"][0]["last_run"].as_f64();
        if let Some(last) = last
            && runs.last() != Some(&last)
        {
            runs.push(last);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let longest = runs.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    (runs.len(), Duration::from_secs_f64(longest))
}
