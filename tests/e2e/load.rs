//! Scrapes never stall ingestion or checks: with 200,000 series on `/metrics` and four clients
//! scraping it in a loop, a DogStatsD client sending 5,000 datagrams a second without blocking
//! is never refused, and a 1 s check keeps its schedule. The `scrape` benchmark runs the same
//! load at 500,000 series and prints the figures.

use std::time::Duration;

use kennel_tests::load::{self, ScrapeLoad};

#[test]
fn scrapes_of_a_large_page_stall_neither_dogstatsd_nor_checks() {
    let dir = tempfile::tempdir().unwrap();
    let figures = load::run(
        dir.path(),
        &ScrapeLoad {
            series: 200_000,
            scrapers: 4,
            rate: 5_000,
            duration: Duration::from_secs(10),
        },
    );
    println!("{figures:#?}");
    assert!(figures.scrapes >= 4, "the page was scraped: {figures:#?}");
    assert_eq!(figures.refused, 0, "no datagram refused: {figures:#?}");
    assert!(figures.check_runs >= 6, "the 1 s check ran: {figures:#?}");
    // A 1 s check on a loaded 2-core machine: a gap of a few seconds would mean starved
    // workers, as a render on them used to cause.
    assert!(
        figures.check_longest_gap < Duration::from_millis(2500),
        "the check kept its schedule: {figures:#?}"
    );
}
