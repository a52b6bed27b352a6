//! `/metrics` under load. Prints, for 100,000 and 500,000 series:
//! - the time to render the page (the OpenMetrics store alone, series with three tags, median
//!   of five renders);
//! - four clients scraping the page in a loop while a DogStatsD client sends 10,000 datagrams
//!   a second without blocking and a 1 s check runs: the page's size, scrape times, refused
//!   sends, the check's longest gap, and the aggregation loop's longest turn.
//!
//! `cargo bench -p kennel-tests --bench scrape` after `make` (the plugins must be built); the
//! figures assume `net.unix.max_dgram_qlen` is 1024.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kennel_tests::load::{self, ScrapeLoad};
use runner::aggregator::{Flush, Point, Series, SeriesKind};
use runner::openmetrics::Store;

/// The median time to render a page of `series` gauges and counters.
fn render(series: usize) -> (Duration, usize) {
    let host: Arc<str> = Arc::from("bench-host");
    let flush = Flush {
        series: (0..series)
            .map(|i| Series {
                name: Arc::from(format!("app.requests.{}", i % 50)),
                tags: [
                    format!("endpoint:/api/v{}", i / 50),
                    "env:prod".to_owned(),
                    format!("service:web-{}", i % 7),
                ]
                .into_iter()
                .map(Arc::from)
                .collect(),
                host: host.clone(),
                kind: if i % 2 == 0 {
                    SeriesKind::Gauge
                } else {
                    SeriesKind::Rate
                },
                interval: 10,
                points: vec![Point {
                    timestamp: 1_800_000_000,
                    value: i as f64,
                }],
            })
            .collect(),
        ..Flush::default()
    };
    let mut store = Store::default();
    store.update(&flush, Instant::now());
    let mut times: Vec<Duration> = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        bytes = std::hint::black_box(store.render()).len();
        times.push(started.elapsed());
    }
    times.sort_unstable();
    (times[times.len() / 2], bytes)
}

fn main() {
    kennel_tests::print_load_average();
    for series in [100_000, 500_000] {
        let (time, bytes) = render(series);
        println!(
            "render {series} series ({:.1} MB): median of 5 {:.0} ms",
            bytes as f64 / 1e6,
            time.as_secs_f64() * 1e3
        );
    }
    for series in [100_000, 500_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        let load = ScrapeLoad {
            series,
            scrapers: 4,
            rate: 10_000,
            duration: Duration::from_secs(20),
        };
        let f = load::run(dir.path(), &load);
        println!(
            "{series} series ({:.1} MB page), {} scrapers for {:?}: {} scrapes, median {:.0} ms, \
             longest {:.0} ms; DogStatsD {} sent, {} refused; 1 s check: {} runs, longest gap \
             {:.2} s; aggregation loop's longest turn {:.0} ms",
            f.page_bytes as f64 / 1e6,
            load.scrapers,
            load.duration,
            f.scrapes,
            f.scrape_median.as_secs_f64() * 1e3,
            f.scrape_max.as_secs_f64() * 1e3,
            f.sent,
            f.refused,
            f.check_runs,
            f.check_longest_gap.as_secs_f64(),
            f.loop_longest_turn.as_secs_f64() * 1e3,
        );
    }
}
