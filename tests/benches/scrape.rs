//! `/metrics` under load: four clients scrape a page of 100,000 and then 500,000 series in a
//! loop while a DogStatsD client sends 10,000 datagrams a second without blocking and a 1 s
//! check runs. Prints, for each size: the page's size, scrape times, refused sends, the
//! check's longest gap, and the aggregation loop's longest turn.
//!
//! `cargo bench -p kennel-tests --bench scrape` after `make` (the plugins must be built); the
//! figures assume `net.unix.max_dgram_qlen` is 1024.

use std::time::Duration;

use kennel_tests::load::{self, ScrapeLoad};

fn main() {
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
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
