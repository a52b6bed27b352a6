//! The aggregator's behaviour as the forwarder sees it: samples in, flushes out, value by value.

use std::time::{Duration, SystemTime};

use super::*;
use crate::check::{
    AlertType, Event, MetricSample, MetricType, Priority, ReportKind, RunReport, ServiceCheck,
    Status,
};
use crate::telemetry::InternalMetric;

const T0: f64 = 1_000_000.0;

fn aggregator(config: AggregatorConfig) -> Aggregator {
    Aggregator::new(config).expect("valid config")
}

fn default_aggregator() -> Aggregator {
    aggregator(AggregatorConfig::default())
}

fn send(a: &mut Aggregator, name: &str, tags: &[&str], value: Value<'_>, rate: f64, now: f64) {
    send_from(a, Owner::Unidentified, name, tags, value, rate, now);
}

/// [`send`] from `owner`.
fn send_from(
    a: &mut Aggregator,
    owner: Owner<'_>,
    name: &str,
    tags: &[&str],
    value: Value<'_>,
    rate: f64,
    now: f64,
) {
    a.insert(
        Sample {
            name,
            tags: tags.iter().copied(),
            host: "",
            value,
            sample_rate: rate,
            timestamp: None,
        },
        owner,
        now,
    );
}

/// The flushed series named `name` (the runner's own telemetry aside).
fn named<'f>(flush: &'f Flush, name: &str) -> Vec<&'f Series> {
    flush.series.iter().filter(|s| &*s.name == name).collect()
}

/// The one series named `name`.
fn one<'f>(flush: &'f Flush, name: &str) -> &'f Series {
    let found = named(flush, name);
    assert_eq!(found.len(), 1, "one series {name} in {:#?}", names(flush));
    found[0]
}

fn names(flush: &Flush) -> Vec<&str> {
    flush
        .series
        .iter()
        .map(|s| &*s.name)
        .filter(|n| !n.starts_with("kennel."))
        .collect()
}

fn points(series: &Series) -> Vec<(i64, f64)> {
    series
        .points
        .iter()
        .map(|p| (p.timestamp, p.value))
        .collect()
}

/// The value the flush reports for internal metric `metric` tagged `tag`.
fn telemetry(flush: &Flush, metric: InternalMetric, tag: Option<&str>) -> f64 {
    let series: Vec<&Series> = flush
        .series
        .iter()
        .filter(|s| &*s.name == metric.name() && s.tags().next() == tag)
        .collect();
    assert_eq!(series.len(), 1, "{metric:?} {tag:?}");
    series[0].points[0].value
}

#[test]
fn gauge_flushes_the_last_value_of_its_bucket() {
    let mut a = default_aggregator();
    send(&mut a, "g", &[], Value::Gauge(1.0), 1.0, T0 + 1.0);
    send(&mut a, "g", &[], Value::Gauge(7.0), 1.0, T0 + 5.0);
    send(&mut a, "g", &[], Value::Gauge(3.0), 0.5, T0 + 9.9);
    let flush = a.flush(T0 + 10.0);
    let g = one(&flush, "g");
    assert_eq!(g.kind, SeriesKind::Gauge);
    assert_eq!(g.interval, 10);
    assert_eq!(
        points(g),
        [(1_000_000, 3.0)],
        "the last value, unscaled by its rate"
    );
}

#[test]
fn counter_flushes_a_per_second_rate_of_its_rate_scaled_sum() {
    let mut a = default_aggregator();
    send(&mut a, "c", &[], Value::Count(3.0), 1.0, T0);
    send(&mut a, "c", &[], Value::Count(2.0), 0.5, T0 + 4.0);
    send(&mut a, "c", &[], Value::Count(1.0), 0.1, T0 + 9.0);
    let flush = a.flush(T0 + 10.0);
    let c = one(&flush, "c");
    assert_eq!(c.kind, SeriesKind::Rate);
    assert_eq!(c.interval, 10);
    // (3 + 2/0.5 + 1/0.1) / 10 s
    let (ts, value) = points(c)[0];
    assert_eq!(ts, 1_000_000);
    assert!((value - 1.7).abs() < 1e-9, "{value}");
}

#[test]
fn counter_flushes_the_bucket_count_when_configured() {
    let mut a = aggregator(AggregatorConfig {
        counters_as_count: true,
        ..AggregatorConfig::default()
    });
    send(&mut a, "c", &[], Value::Count(3.0), 1.0, T0);
    send(&mut a, "c", &[], Value::Count(2.0), 0.5, T0 + 4.0);
    let flush = a.flush(T0 + 10.0);
    let c = one(&flush, "c");
    assert_eq!(c.kind, SeriesKind::Count);
    assert_eq!(points(c), [(1_000_000, 7.0)]);
}

#[test]
fn sample_rates_outside_zero_to_one_count_as_one() {
    let mut a = aggregator(AggregatorConfig {
        counters_as_count: true,
        ..AggregatorConfig::default()
    });
    for rate in [0.0, -1.0, 2.0, f64::NAN] {
        send(&mut a, "c", &[], Value::Count(1.0), rate, T0);
    }
    assert_eq!(points(one(&a.flush(T0 + 10.0), "c")), [(1_000_000, 4.0)]);
}

#[test]
fn set_flushes_how_many_distinct_members_it_got() {
    let mut a = default_aggregator();
    for member in ["alice", "bob", "alice", "carol", "bob"] {
        send(&mut a, "users", &[], Value::Set(member), 1.0, T0 + 2.0);
    }
    send(&mut a, "users", &[], Value::Set("dave"), 1.0, T0 + 12.0);
    let flush = a.flush(T0 + 20.0);
    let s = one(&flush, "users");
    assert_eq!(s.kind, SeriesKind::Gauge);
    assert_eq!(points(s), [(1_000_000, 3.0), (1_000_010, 1.0)]);
}

#[test]
fn histogram_flushes_max_median_avg_count_and_95th_percentile_by_default() {
    let mut a = default_aggregator();
    for v in 1..=100 {
        send(
            &mut a,
            "h",
            &[],
            Value::Histogram(f64::from(v)),
            1.0,
            T0 + 3.0,
        );
    }
    let flush = a.flush(T0 + 10.0);
    assert_eq!(
        names(&flush),
        ["h.max", "h.median", "h.avg", "h.count", "h.95percentile"]
    );
    let value = |name| points(one(&flush, name))[0].1;
    assert_eq!(value("h.max"), 100.0);
    assert_eq!(value("h.median"), 50.0);
    assert_eq!(value("h.avg"), 50.5);
    assert_eq!(value("h.count"), 10.0, "100 samples in 10 s");
    assert_eq!(value("h.95percentile"), 95.0);
    assert_eq!(one(&flush, "h.count").kind, SeriesKind::Rate);
    assert_eq!(one(&flush, "h.max").kind, SeriesKind::Gauge);
    assert_eq!(one(&flush, "h.95percentile").kind, SeriesKind::Gauge);
}

#[test]
fn histogram_weighs_each_sample_by_its_sample_rate() {
    let mut a = aggregator(AggregatorConfig {
        histogram_aggregates: vec![
            HistogramAggregate::Min,
            HistogramAggregate::Max,
            HistogramAggregate::Median,
            HistogramAggregate::Avg,
            HistogramAggregate::Sum,
            HistogramAggregate::Count,
        ],
        histogram_percentiles: vec![0.5, 0.9],
        ..AggregatorConfig::default()
    });
    // 1 sent at rate 1 (weight 1); 10 sent at rate 0.25 (weight 4): 1, 10, 10, 10, 10.
    send(&mut a, "h", &[], Value::Histogram(1.0), 1.0, T0);
    send(&mut a, "h", &[], Value::Histogram(10.0), 0.25, T0);
    let flush = a.flush(T0 + 10.0);
    let value = |name| points(one(&flush, name))[0].1;
    assert_eq!(value("h.min"), 1.0);
    assert_eq!(value("h.max"), 10.0);
    assert_eq!(value("h.median"), 10.0);
    assert_eq!(value("h.sum"), 41.0);
    assert_eq!(value("h.avg"), 41.0 / 5.0);
    assert_eq!(value("h.count"), 0.5, "5 weighted samples in 10 s");
    assert_eq!(value("h.50percentile"), 10.0);
    assert_eq!(value("h.90percentile"), 10.0);
}

#[test]
fn timers_are_histograms() {
    let mut a = default_aggregator();
    for v in [30.0, 10.0, 20.0] {
        send(&mut a, "t", &[], Value::Timer(v), 1.0, T0);
    }
    let flush = a.flush(T0 + 10.0);
    assert_eq!(points(one(&flush, "t.max")), [(1_000_000, 30.0)]);
    assert_eq!(points(one(&flush, "t.median")), [(1_000_000, 20.0)]);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamples,
            Some("metric_type:timer")
        ),
        3.0
    );
}

#[test]
fn distribution_flushes_a_sketch_whose_quantiles_are_within_its_accuracy() {
    let mut a = default_aggregator();
    for v in 1..=1000 {
        send(
            &mut a,
            "d",
            &["a:1"],
            Value::Distribution(f64::from(v)),
            1.0,
            T0 + 1.0,
        );
    }
    send(
        &mut a,
        "d",
        &["a:1"],
        Value::Distribution(5000.0),
        0.5,
        T0 + 1.0,
    );
    let flush = a.flush(T0 + 10.0);
    assert!(names(&flush).is_empty(), "distributions are not series");
    assert_eq!(flush.sketches.len(), 1);
    let d = &flush.sketches[0];
    assert_eq!(&*d.name, "d");
    assert_eq!(d.tags().collect::<Vec<_>>(), ["a:1"]);
    assert_eq!(d.interval, 10);
    assert_eq!(d.points.len(), 1);
    assert_eq!(d.points[0].timestamp, 1_000_000);
    let sketch = &d.points[0].sketch;
    assert_eq!(sketch.count(), 1002, "the last sample weighs 2");
    assert_eq!(sketch.min(), 1.0);
    assert_eq!(sketch.max(), 5000.0);
    assert_eq!(sketch.sum(), 500_500.0 + 10_000.0);
    for (q, exact) in [(0.5, 501.0), (0.9, 901.0), (0.99, 991.0)] {
        let estimate = sketch.quantile(q).expect("not empty");
        assert!((estimate - exact).abs() / exact <= 0.01, "q{q}: {estimate}");
    }
}

#[test]
fn timestamped_gauges_and_counts_pass_through_as_sent() {
    let mut a = default_aggregator();
    for (value, ts) in [(Value::Gauge(5.0), 900_000), (Value::Count(2.0), 900_001)] {
        a.insert(
            Sample {
                name: "ts",
                tags: ["b", "a"],
                host: "h",
                value,
                sample_rate: 0.5,
                timestamp: Some(ts),
            },
            Owner::Unidentified,
            T0,
        );
    }
    // Other types ignore the timestamp and aggregate.
    a.insert(
        Sample {
            name: "ts.hist",
            tags: [],
            host: "",
            value: Value::Histogram(1.0),
            sample_rate: 1.0,
            timestamp: Some(900_000),
        },
        Owner::Unidentified,
        T0,
    );
    let flush = a.flush(T0 + 10.0);
    let sent = named(&flush, "ts");
    assert_eq!(sent.len(), 2, "each sample is its own series");
    assert_eq!(sent[0].kind, SeriesKind::Gauge);
    assert_eq!(points(sent[0]), [(900_000, 5.0)]);
    assert_eq!(sent[1].kind, SeriesKind::Count);
    assert_eq!(
        points(sent[1]),
        [(900_001, 2.0)],
        "as sent: no rate scaling"
    );
    assert_eq!(sent[0].interval, 0);
    assert_eq!(&*sent[0].host, "h");
    assert_eq!(sent[0].tags().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(points(one(&flush, "ts.hist.max")), [(1_000_000, 1.0)]);
    assert!(named(&a.flush(T0 + 20.0), "ts").is_empty(), "sent once");
}

#[test]
fn a_bucket_is_flushed_only_once_it_has_closed() {
    let mut a = default_aggregator();
    send(&mut a, "g", &[], Value::Gauge(1.0), 1.0, T0 + 1.0);
    assert!(names(&a.flush(T0 + 9.999)).is_empty(), "still open");
    send(&mut a, "g", &[], Value::Gauge(2.0), 1.0, T0 + 9.999);
    send(&mut a, "g", &[], Value::Gauge(3.0), 1.0, T0 + 10.0);
    let flush = a.flush(T0 + 10.0);
    assert_eq!(points(one(&flush, "g")), [(1_000_000, 2.0)]);
    assert_eq!(points(one(&a.flush(T0 + 20.0), "g")), [(1_000_010, 3.0)]);
}

#[test]
fn a_late_flush_sends_every_closed_bucket_in_time_order() {
    let mut a = default_aggregator();
    for (i, now) in [T0 + 25.0, T0 + 5.0, T0 + 15.0].into_iter().enumerate() {
        send(&mut a, "g", &[], Value::Gauge(i as f64), 1.0, now);
    }
    let flush = a.flush(T0 + 31.0);
    assert_eq!(
        points(one(&flush, "g")),
        [(1_000_000, 1.0), (1_000_010, 2.0), (1_000_020, 0.0)]
    );
}

#[test]
fn a_late_sample_goes_to_its_own_bucket() {
    let mut a = default_aggregator();
    a.flush(T0 + 10.0);
    a.insert_report(&report_with(vec![metric(
        "late",
        MetricType::Gauge,
        9.0,
        T0 + 12.0,
    )]));
    // A check run that started before the flush reports afterwards.
    a.insert_report(&report_with(vec![metric(
        "late",
        MetricType::Gauge,
        4.0,
        T0 + 2.0,
    )]));
    let flush = a.flush(T0 + 20.0);
    assert_eq!(
        points(one(&flush, "late")),
        [(1_000_000, 4.0), (1_000_010, 9.0)],
        "the old bucket is sent with its own timestamp"
    );
}

#[test]
fn counters_send_zeros_after_their_last_sample_then_expire() {
    let mut a = aggregator(AggregatorConfig {
        counter_expiry_seconds: 30,
        context_expiry_seconds: 5,
        ..AggregatorConfig::default()
    });
    send(&mut a, "c", &[], Value::Count(10.0), 1.0, T0 + 1.0);
    assert_eq!(points(one(&a.flush(T0 + 10.0), "c")), [(1_000_000, 1.0)]);
    let mut flushes = Vec::new();
    for k in 1..=3 {
        let now = T0 + 10.0 * f64::from(k);
        let flush = a.flush(now + 10.0);
        assert_eq!(points(one(&flush, "c")), [(now as i64, 0.0)], "zero {k}");
        flushes.push(flush);
        if k < 3 {
            assert_eq!(a.contexts(), 1, "kept while sending zeros");
        }
    }
    assert_eq!(a.contexts(), 0, "forgotten with its last zero");
    assert_eq!(
        telemetry(&flushes[2], InternalMetric::AggregatorContextsExpired, None),
        1.0
    );
    let flush = a.flush(T0 + 50.0);
    assert!(named(&flush, "c").is_empty(), "no zero past the expiry");
}

#[test]
fn counter_zeros_fill_every_empty_bucket_since_the_previous_flush() {
    let mut a = default_aggregator();
    send(&mut a, "c", &[], Value::Count(10.0), 1.0, T0 + 1.0);
    a.flush(T0 + 10.0);
    send(&mut a, "c", &[], Value::Count(20.0), 1.0, T0 + 21.0);
    let flush = a.flush(T0 + 40.0);
    assert_eq!(
        points(one(&flush, "c")),
        [(1_000_010, 0.0), (1_000_020, 2.0), (1_000_030, 0.0)]
    );
}

#[test]
fn a_counter_sends_no_zeros_before_its_first_sample() {
    let mut a = default_aggregator();
    a.flush(T0);
    send(&mut a, "c", &[], Value::Count(10.0), 1.0, T0 + 31.0);
    let flush = a.flush(T0 + 50.0);
    assert_eq!(
        points(one(&flush, "c")),
        [(1_000_030, 1.0), (1_000_040, 0.0)]
    );
}

#[test]
fn idle_contexts_expire_and_come_back_fresh() {
    let mut a = aggregator(AggregatorConfig {
        context_expiry_seconds: 20,
        ..AggregatorConfig::default()
    });
    send(&mut a, "g", &["a"], Value::Gauge(1.0), 1.0, T0 + 1.0);
    a.flush(T0 + 10.0);
    a.flush(T0 + 20.0);
    assert_eq!(a.contexts(), 1, "19 s idle");
    let flush = a.flush(T0 + 30.0);
    assert_eq!(a.contexts(), 0, "29 s idle");
    assert_eq!(
        telemetry(&flush, InternalMetric::AggregatorContexts, None),
        0.0
    );
    // The same context comes back as a gauge or as anything else.
    send(&mut a, "g", &["a"], Value::Count(5.0), 1.0, T0 + 31.0);
    let flush = a.flush(T0 + 40.0);
    assert_eq!(points(one(&flush, "g")), [(1_000_030, 0.5)]);
    assert_eq!(
        telemetry(&flush, InternalMetric::AggregatorContextsCreated, None),
        1.0
    );
}

#[test]
fn past_the_context_limit_new_contexts_are_dropped_and_counted() {
    let mut a = aggregator(AggregatorConfig {
        max_contexts: 3,
        max_check_contexts: Some(1),
        max_contexts_per_origin: Some(2),
        ..AggregatorConfig::default()
    });
    send(&mut a, "a", &[], Value::Gauge(1.0), 1.0, T0);
    send(&mut a, "b", &[], Value::Gauge(1.0), 1.0, T0);
    send(&mut a, "c", &[], Value::Gauge(1.0), 1.0, T0);
    send(&mut a, "c", &[], Value::Gauge(1.0), 1.0, T0);
    send(&mut a, "a", &[], Value::Gauge(2.0), 1.0, T0);
    let flush = a.flush(T0 + 10.0);
    assert_eq!(names(&flush), ["a", "b"]);
    assert_eq!(
        points(one(&flush, "a")),
        [(1_000_000, 2.0)],
        "existing contexts still work"
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:context_limit")
        ),
        2.0
    );
    assert_eq!(
        telemetry(&flush, InternalMetric::AggregatorContexts, None),
        2.0
    );
}

#[test]
fn tag_order_and_duplicates_make_one_series() {
    let mut a = aggregator(AggregatorConfig {
        counters_as_count: true,
        ..AggregatorConfig::default()
    });
    send(
        &mut a,
        "c",
        &["env:prod", "service:web"],
        Value::Count(1.0),
        1.0,
        T0,
    );
    send(
        &mut a,
        "c",
        &["service:web", "env:prod"],
        Value::Count(1.0),
        1.0,
        T0,
    );
    send(
        &mut a,
        "c",
        &["service:web", "env:prod", "service:web"],
        Value::Count(1.0),
        1.0,
        T0,
    );
    send(&mut a, "c", &["env:prod"], Value::Count(1.0), 1.0, T0);
    let flush = a.flush(T0 + 10.0);
    let series = named(&flush, "c");
    assert_eq!(series.len(), 2);
    let both = series
        .iter()
        .find(|s| s.tags.len() == 2)
        .expect("the two-tag series");
    assert_eq!(both.tags().collect::<Vec<_>>(), ["env:prod", "service:web"]);
    assert_eq!(points(both), [(1_000_000, 3.0)]);
    assert_eq!(a.contexts(), 2);
}

#[test]
fn the_host_is_part_of_the_context() {
    let mut a = default_aggregator();
    for host in ["web-1", "web-2", "", "web-1"] {
        a.insert(
            Sample {
                name: "g",
                tags: ["a"],
                host,
                value: Value::Gauge(host.len() as f64),
                sample_rate: 1.0,
                timestamp: None,
            },
            Owner::Unidentified,
            T0,
        );
    }
    let flush = a.flush(T0 + 10.0);
    let mut hosts: Vec<&str> = named(&flush, "g").iter().map(|s| &*s.host).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, ["", "web-1", "web-2"]);
}

#[test]
fn a_packed_message_resolves_its_context_once() {
    let mut a = default_aggregator();
    let context = a
        .context("d", "a:1,b:2".split(','), "", Owner::Unidentified, T0)
        .expect("under the limit");
    for v in [1.0, 2.0, 3.0] {
        a.add(context, Value::Distribution(v), 1.0, None, T0);
    }
    let flush = a.flush(T0 + 10.0);
    assert_eq!(flush.sketches[0].points[0].sketch.count(), 3);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamples,
            Some("metric_type:distribution")
        ),
        3.0
    );
}

#[test]
fn a_handle_on_an_expired_context_drops_and_counts() {
    let mut a = default_aggregator();
    let context = a
        .context("g", [], "", Owner::Unidentified, T0)
        .expect("under the limit");
    a.flush(T0 + 100.0);
    a.add(context, Value::Gauge(1.0), 1.0, None, T0 + 100.0);
    let flush = a.flush(T0 + 110.0);
    assert!(names(&flush).is_empty());
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:stale_context")
        ),
        1.0
    );
}

#[test]
fn a_sample_of_another_type_is_dropped_while_its_context_has_open_buckets() {
    let mut a = default_aggregator();
    send(&mut a, "m", &[], Value::Gauge(1.0), 1.0, T0);
    send(&mut a, "m", &[], Value::Count(1.0), 1.0, T0);
    let flush = a.flush(T0 + 10.0);
    assert_eq!(points(one(&flush, "m")), [(1_000_000, 1.0)]);
    assert_eq!(one(&flush, "m").kind, SeriesKind::Gauge);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:type_conflict")
        ),
        1.0
    );
    // Once flushed, the context takes the new type.
    send(&mut a, "m", &[], Value::Count(10.0), 1.0, T0 + 10.0);
    assert_eq!(one(&a.flush(T0 + 20.0), "m").kind, SeriesKind::Rate);
}

#[test]
fn non_finite_values_are_dropped_and_counted() {
    let mut a = default_aggregator();
    send(&mut a, "g", &[], Value::Gauge(f64::NAN), 1.0, T0);
    send(
        &mut a,
        "d",
        &[],
        Value::Distribution(f64::INFINITY),
        1.0,
        T0,
    );
    let flush = a.flush(T0 + 10.0);
    assert!(names(&flush).is_empty());
    assert!(flush.sketches.is_empty());
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:invalid_value")
        ),
        2.0
    );
}

fn metric(name: &str, kind: MetricType, value: f64, timestamp: f64) -> MetricSample {
    MetricSample {
        name: name.into(),
        kind,
        value,
        tags: vec!["check:c".into(), "instance:1".into()],
        host: "host-1".into(),
        timestamp,
    }
}

fn report_with(metrics: Vec<MetricSample>) -> RunReport {
    RunReport {
        instance_id: "c:0".into(),
        check: "c".into(),
        started: SystemTime::UNIX_EPOCH,
        duration: Duration::ZERO,
        metrics,
        service_checks: vec![],
        events: vec![],
        warnings: vec![],
        log_lines_suppressed: 0,
        error: None,
        kind: ReportKind::Run,
    }
}

#[test]
fn check_samples_aggregate_by_their_timestamps_and_pass_their_service_checks_and_events() {
    let mut a = default_aggregator();
    let mut report = report_with(vec![
        metric("check.gauge", MetricType::Gauge, 1.0, T0 + 1.0),
        metric("check.gauge", MetricType::Gauge, 2.0, T0 + 2.0),
        metric("check.count", MetricType::Count, 3.0, T0 + 1.0),
        metric("check.count", MetricType::Count, 4.0, T0 + 2.0),
        metric("check.hist", MetricType::Histogram, 5.0, T0 + 1.0),
        metric("check.dist", MetricType::Distribution, 6.0, T0 + 1.0),
        metric("check.next", MetricType::Gauge, 7.0, T0 + 11.0),
    ]);
    report.service_checks.push(ServiceCheck {
        name: "c.can_connect".into(),
        status: Status::Critical,
        message: "refused".into(),
        tags: vec!["port:5432".into()],
        host: "host-1".into(),
        timestamp: T0,
    });
    report.events.push(Event {
        title: "restarted".into(),
        text: "the server restarted".into(),
        alert_type: AlertType::Warning,
        priority: Priority::Normal,
        aggregation_key: None,
        source_type_name: Some("postgres".into()),
        tags: vec![],
        host: "host-1".into(),
        timestamp: T0 as i64,
    });
    a.insert_report(&report);
    let flush = a.flush(T0 + 10.0);

    let gauge = one(&flush, "check.gauge");
    assert_eq!(points(gauge), [(1_000_000, 2.0)]);
    assert_eq!(&*gauge.host, "host-1");
    assert_eq!(gauge.tags().collect::<Vec<_>>(), ["check:c", "instance:1"]);
    let count = one(&flush, "check.count");
    assert_eq!(count.kind, SeriesKind::Count, "a check count is not a rate");
    assert_eq!(points(count), [(1_000_000, 7.0)]);
    assert_eq!(points(one(&flush, "check.hist.max")), [(1_000_000, 5.0)]);
    assert_eq!(flush.sketches[0].points[0].sketch.count(), 1);
    assert!(named(&flush, "check.next").is_empty(), "its bucket is open");
    assert_eq!(flush.service_checks, report.service_checks);
    assert_eq!(flush.events, report.events);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorFlushed,
            Some("payload:service_checks")
        ),
        1.0
    );

    let flush = a.flush(T0 + 20.0);
    assert_eq!(points(one(&flush, "check.next")), [(1_000_010, 7.0)]);
    assert!(
        flush.service_checks.is_empty() && flush.events.is_empty(),
        "sent once"
    );
}

#[test]
fn check_and_dogstatsd_samples_of_one_context_share_a_series() {
    let mut a = default_aggregator();
    a.insert_report(&report_with(vec![metric(
        "shared",
        MetricType::Gauge,
        1.0,
        T0 + 1.0,
    )]));
    a.insert(
        Sample {
            name: "shared",
            tags: ["instance:1", "check:c"],
            host: "host-1",
            value: Value::Gauge(2.0),
            sample_rate: 1.0,
            timestamp: None,
        },
        Owner::Unidentified,
        T0 + 2.0,
    );
    assert_eq!(
        points(one(&a.flush(T0 + 10.0), "shared")),
        [(1_000_000, 2.0)]
    );
}

fn retired_series(flush: &Flush) -> Vec<String> {
    flush
        .retired
        .iter()
        .flat_map(|retired| match retired {
            Retired::Series { names, .. } => names.iter().map(|n| n.to_string()).collect(),
            Retired::ServiceCheck { name, .. } => vec![format!("service check {name}")],
        })
        .collect()
}

fn service_check(name: &str) -> ServiceCheck {
    ServiceCheck {
        name: name.into(),
        status: Status::Ok,
        message: String::new(),
        tags: vec!["url:x".into()],
        host: "host-1".into(),
        timestamp: T0,
    }
}

#[test]
fn what_the_latest_run_of_a_check_did_not_emit_is_retired_once_flushed() {
    let mut a = default_aggregator();
    let mut first = report_with(vec![
        metric("up.time", MetricType::Gauge, 1.0, T0 + 1.0),
        metric("down.soon", MetricType::Gauge, 2.0, T0 + 1.0),
        metric("down.hist", MetricType::Histogram, 3.0, T0 + 1.0),
    ]);
    first.service_checks = vec![service_check("kept"), service_check("dropped")];
    a.insert_report(&first);
    // A DogStatsD gauge has no runs: it is never retired.
    send(&mut a, "dsd.gauge", &[], Value::Gauge(1.0), 1.0, T0 + 1.0);
    // The next run, in the same bucket, emits one of the three.
    let mut second = report_with(vec![metric("up.time", MetricType::Gauge, 4.0, T0 + 2.0)]);
    second.service_checks = vec![service_check("kept")];
    a.insert_report(&second);

    let flush = a.flush(T0 + 10.0);
    // The first run's points still go out (to the forwarder), and are retired in the same
    // flush, which the `/metrics` page applies after them.
    assert_eq!(points(one(&flush, "down.soon")), [(1_000_000, 2.0)]);
    let mut retired = retired_series(&flush);
    retired.sort();
    assert_eq!(
        retired,
        [
            "down.hist.95percentile",
            "down.hist.avg",
            "down.hist.count",
            "down.hist.max",
            "down.hist.median",
            "down.soon",
            "service check dropped",
        ]
    );
    assert_eq!(
        telemetry(&flush, InternalMetric::AggregatorContextsRetired, None),
        2.0
    );

    // A run emits `up.time` into an open bucket, the next does not: it is retired only once
    // that bucket has closed and its point is out.
    a.insert_report(&report_with(vec![metric(
        "up.time",
        MetricType::Gauge,
        5.0,
        T0 + 12.0,
    )]));
    a.insert_report(&report_with(vec![]));
    let flush = a.flush(T0 + 15.0);
    assert_eq!(retired_series(&flush), ["service check kept"]);
    let flush = a.flush(T0 + 20.0);
    assert_eq!(points(one(&flush, "up.time")), [(1_000_010, 5.0)]);
    assert_eq!(retired_series(&flush), ["up.time"]);
    assert!(named(&flush, "dsd.gauge").is_empty());
    assert!(retired_series(&a.flush(T0 + 30.0)).is_empty());

    // Emitted again, it is a new context.
    a.insert_report(&report_with(vec![metric(
        "down.soon",
        MetricType::Gauge,
        6.0,
        T0 + 31.0,
    )]));
    assert_eq!(
        points(one(&a.flush(T0 + 40.0), "down.soon")),
        [(1_000_030, 6.0)]
    );
}

#[test]
fn an_unscheduled_instance_retires_everything_and_an_event_nothing() {
    let mut a = default_aggregator();
    let mut run = report_with(vec![metric("kept.a", MetricType::Gauge, 1.0, T0 + 1.0)]);
    run.service_checks = vec![service_check("up")];
    a.insert_report(&run);
    let mut event = report_with(vec![metric(
        "event.gauge",
        MetricType::Gauge,
        1.0,
        T0 + 1.0,
    )]);
    event.instance_id = "events".into();
    event.kind = ReportKind::Event;
    a.insert_report(&event);
    a.insert_report(&event);
    let flush = a.flush(T0 + 10.0);
    assert!(retired_series(&flush).is_empty(), "{:?}", flush.retired);

    a.insert_report(&RunReport::unscheduled("c:0", "c"));
    let mut retired = retired_series(&a.flush(T0 + 20.0));
    retired.sort();
    assert_eq!(retired, ["kept.a", "service check up"]);
    assert_eq!(a.tracked_checks(), (0, 0), "nothing of it is kept");
}

#[test]
fn unsampled_check_rates_and_monotonic_counts_are_dropped_and_counted() {
    let mut a = default_aggregator();
    a.insert_report(&report_with(vec![
        metric("r", MetricType::Rate, 1.0, T0),
        metric("m", MetricType::MonotonicCount, 1.0, T0),
    ]));
    let flush = a.flush(T0 + 10.0);
    assert!(names(&flush).is_empty());
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:unsampled_check_type")
        ),
        2.0
    );
}

#[test]
fn pending_service_checks_events_and_timestamped_samples_are_bounded() {
    let mut a = aggregator(AggregatorConfig {
        max_pending: 2,
        ..AggregatorConfig::default()
    });
    let check = ServiceCheck {
        name: "sc".into(),
        status: Status::Ok,
        message: String::new(),
        tags: vec![],
        host: String::new(),
        timestamp: T0,
    };
    a.add_service_check(check.clone());
    a.add_service_check(check);
    a.insert(
        Sample {
            name: "ts",
            tags: [],
            host: "",
            value: Value::Gauge(1.0),
            sample_rate: 1.0,
            timestamp: Some(1),
        },
        Owner::Unidentified,
        T0,
    );
    let flush = a.flush(T0 + 10.0);
    assert_eq!(flush.service_checks.len(), 2);
    assert!(named(&flush, "ts").is_empty());
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:pending_limit")
        ),
        1.0
    );
}

#[test]
fn telemetry_flows_out_under_the_kennel_prefix_with_other_components_counters() {
    let mut a = default_aggregator();
    let parse_errors = a
        .telemetry()
        .counter(InternalMetric::DogstatsdParseErrors, Some("no_type"));
    let datagrams = a
        .telemetry()
        .counter(InternalMetric::DogstatsdDatagrams, Some("uds"));
    parse_errors.increment(2);
    datagrams.increment(5);
    send(&mut a, "g", &[], Value::Gauge(1.0), 1.0, T0);
    send(&mut a, "c", &[], Value::Count(1.0), 1.0, T0);
    send(&mut a, "c", &[], Value::Count(1.0), 1.0, T0);
    send(&mut a, "s", &[], Value::Set("x"), 1.0, T0);
    let flush = a.flush(T0 + 10.0);
    let internal: Vec<&Series> = flush
        .series
        .iter()
        .filter(|s| s.name.starts_with("kennel."))
        .collect();
    assert!(!internal.is_empty());
    assert!(internal.iter().all(|s| s.points[0].timestamp == 1_000_000));
    assert_eq!(
        telemetry(&flush, InternalMetric::AggregatorContexts, None),
        3.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamples,
            Some("metric_type:count")
        ),
        2.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamples,
            Some("metric_type:gauge")
        ),
        1.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamples,
            Some("metric_type:set")
        ),
        1.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorFlushed,
            Some("payload:series")
        ),
        3.0,
        "the data series, not counting telemetry"
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::DogstatsdParseErrors,
            Some("reason:no_type")
        ),
        2.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::DogstatsdDatagrams,
            Some("transport:uds")
        ),
        5.0
    );
    // Counters report what happened since the previous flush.
    parse_errors.increment(1);
    let flush = a.flush(T0 + 20.0);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::DogstatsdParseErrors,
            Some("reason:no_type")
        ),
        1.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamples,
            Some("metric_type:count")
        ),
        0.0
    );
}

#[test]
fn an_invalid_config_is_refused() {
    let error = Aggregator::new(AggregatorConfig {
        histogram_percentiles: vec![95.0],
        ..AggregatorConfig::default()
    })
    .expect_err("95 is not a fraction");
    assert!(error.to_string().contains("histogram_percentiles"));
}

#[test]
fn a_sample_with_more_tags_than_a_context_holds_is_dropped_and_counted() {
    let mut a = aggregator(AggregatorConfig::default());
    let many: Vec<String> = (0..10_000).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let most = &many[..super::context::MAX_TAGS];
    send(&mut a, "flood", &many, Value::Count(1.0), 1.0, T0);
    send(&mut a, "fits", most, Value::Count(1.0), 1.0, T0);
    // Repeats count once: 300 copies of one tag is one tag.
    send(
        &mut a,
        "repeats",
        &["env:a"; 300],
        Value::Count(1.0),
        1.0,
        T0,
    );
    let flush = a.flush(T0 + 10.0);
    assert_eq!(names(&flush), ["fits", "repeats"]);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:too_many_tags")
        ),
        1.0
    );
}

#[test]
fn a_flooding_sender_is_held_to_its_quota_and_starves_neither_other_senders_nor_checks() {
    let mut a = aggregator(AggregatorConfig {
        max_contexts: 1_500,
        max_check_contexts: Some(500),
        max_contexts_per_origin: Some(300),
        ..AggregatorConfig::default()
    });
    let flood = Owner::Process(4242);
    for i in 0..5_000 {
        let tag = format!("id:{i}");
        send_from(&mut a, flood, "flood", &[&tag], Value::Count(1.0), 1.0, T0);
    }
    // The flood's own contexts keep working; a second sender's and a check's new ones too.
    send_from(
        &mut a,
        flood,
        "flood",
        &["id:1"],
        Value::Count(1.0),
        1.0,
        T0,
    );
    let web = Owner::Container("web");
    send_from(&mut a, web, "quiet", &[], Value::Gauge(1.0), 1.0, T0);
    a.insert_report(&report_with(vec![metric(
        "check.gauge",
        MetricType::Gauge,
        3.0,
        T0,
    )]));
    let flush = a.flush(T0 + 10.0);
    assert_eq!(named(&flush, "flood").len(), 300);
    assert_eq!(points(one(&flush, "quiet")), [(1_000_000, 1.0)]);
    assert_eq!(points(one(&flush, "check.gauge")), [(1_000_000, 3.0)]);
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorSamplesDropped,
            Some("reason:origin_quota")
        ),
        4_700.0
    );
    assert_eq!(
        telemetry(
            &flush,
            InternalMetric::AggregatorOriginContextsRefused,
            Some("origin:process:4242")
        ),
        4_700.0,
        "counted against the flooding origin alone"
    );
    let status = a.contexts_view().get();
    assert_eq!(status.origins[0].origin, "process:4242");
    assert_eq!(
        (status.origins[0].contexts, status.origins[0].refused),
        (300, 4_700)
    );
    assert!(
        status
            .origins
            .iter()
            .any(|o| o.origin == "check:c:0" && o.contexts == 1 && o.refused == 0)
    );
    // Refusals are reported once: the next flush sends none for it.
    let flush = a.flush(T0 + 20.0);
    assert!(
        named(
            &flush,
            InternalMetric::AggregatorOriginContextsRefused.name()
        )
        .is_empty()
    );
}

#[test]
fn a_check_contexts_budget_as_large_as_all_contexts_is_refused_with_the_key_to_change() {
    let error = Aggregator::new(AggregatorConfig {
        max_contexts: 10,
        max_check_contexts: Some(10),
        ..AggregatorConfig::default()
    })
    .expect_err("nothing left for DogStatsD");
    assert!(error.to_string().contains("max_check_contexts"), "{error}");
}
