//! The forwarder's serializers under load: the CPU one flush costs to serialize and compress,
//! on one core (the forwarder serializes on its sink's thread). Prints, for each format, a
//! flush of 100,000 series with three tags and 1 point each, then 10 points each:
//! - Datadog `/api/v2/series`, protobuf + zstd (the default);
//! - Datadog `/api/v1/series`, JSON + zlib (what VictoriaMetrics' Datadog API takes);
//! - Prometheus remote write, protobuf + snappy (totals and merging included);
//!
//! each as payloads made, bytes sent, and the median of five serializations, in milliseconds
//! and points a second. Every run moves the points' timestamps on, as real flushes do, so
//! remote write's running totals see new samples each time.
//!
//! `cargo bench -p kennel-tests --bench forward` (no plugins or services needed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use runner::aggregator::{Flush, Point, Series, SeriesKind};
use runner::forwarder::compress::{Compressor, Serialized};
use runner::forwarder::datadog::{DatadogFormat, DatadogSerializer};
use runner::forwarder::remote_write::RemoteWriteSerializer;

const SERIES: usize = 100_000;
const RUNS: usize = 5;
/// Seconds between two flushes' points.
const FLUSH_INTERVAL: i64 = 10;

/// One serializer, as a closure from a flush to what it made.
type Serialize = Box<dyn FnMut(&Flush) -> Serialized>;

/// `SERIES` series of `points` points each, half gauges and half rates, with three tags:
/// the shape of the scrape bench's page.
fn flush(points: usize) -> Flush {
    let host: Arc<str> = Arc::from("bench-host");
    Flush {
        series: (0..SERIES)
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
                interval: FLUSH_INTERVAL as u64,
                points: (0..points)
                    .map(|p| Point {
                        timestamp: 1_800_000_000 + p as i64,
                        value: (i * 7 + p) as f64 * 0.25,
                    })
                    .collect(),
            })
            .collect(),
        ..Flush::default()
    }
}

/// Moves every point on by one flush interval.
fn advance(flush: &mut Flush) {
    for series in &mut flush.series {
        for point in &mut series.points {
            point.timestamp += FLUSH_INTERVAL;
        }
    }
}

/// Serializes `flush` `RUNS` times with `serialize`; the median time and the last run's output.
fn measure(
    flush: &mut Flush,
    mut serialize: impl FnMut(&Flush) -> Serialized,
) -> (Duration, Serialized) {
    let mut times = Vec::with_capacity(RUNS);
    let mut made = Serialized::default();
    for _ in 0..RUNS {
        advance(flush);
        let started = Instant::now();
        made = std::hint::black_box(serialize(flush));
        times.push(started.elapsed());
    }
    times.sort_unstable();
    (times[RUNS / 2], made)
}

/// A Datadog serializer sending series as v2 or v1.
fn datadog(v2_series: bool, compressor: Compressor, hostname: &Arc<str>) -> Serialize {
    let format = DatadogFormat {
        v2_series,
        compressor,
    };
    let mut serializer = DatadogSerializer::new(format, hostname.clone());
    Box::new(move |flush| serializer.serialize_counted(flush))
}

fn main() {
    kennel_tests::print_load_average();
    let hostname: Arc<str> = Arc::from("bench-host");
    for points in [1, 10] {
        let mut flush = flush(points);
        let total = (SERIES * points) as f64;
        let formats: [(&str, Serialize); 3] = [
            (
                "v2 protobuf + zstd",
                datadog(true, Compressor::Zstd, &hostname),
            ),
            (
                "v1 JSON + zlib",
                datadog(false, Compressor::Zlib, &hostname),
            ),
            ("remote write + snappy", {
                let mut serializer = RemoteWriteSerializer::new(hostname.clone());
                Box::new(move |flush| serializer.serialize_counted(flush))
            }),
        ];
        for (name, mut serialize) in formats {
            let (time, made) = measure(&mut flush, &mut serialize);
            assert_eq!(made.items as f64, total, "{name}: every point is sent");
            assert_eq!(made.unsent.total(), 0, "{name}: nothing is left out");
            println!(
                "{name}, {SERIES} series x {points} point(s): {} payloads, {:.2} MB; \
                 median of {RUNS} {:.0} ms, {:.2} M points/s",
                made.payloads,
                made.bytes as f64 / 1e6,
                time.as_secs_f64() * 1e3,
                total / time.as_secs_f64() / 1e6,
            );
        }
    }
}
