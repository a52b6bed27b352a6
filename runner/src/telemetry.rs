//! The runner's own metrics: every name in one table, every value flowing out through the
//! aggregator's flush beside the metrics it aggregates.
//!
//! | name | type | tag | what it counts |
//! |---|---|---|---|
//! | `kennel.aggregator.contexts` | gauge | | live contexts after the flush |
//! | `kennel.aggregator.contexts_created` | count | | contexts created |
//! | `kennel.aggregator.contexts_expired` | count | | contexts forgotten after going idle |
//! | `kennel.aggregator.samples` | count | `metric_type` | samples received, by type (`gauge`, `count`, `rate`, `set`, `histogram`, `timer`, `distribution`) |
//! | `kennel.aggregator.samples_dropped` | count | `reason` | samples, service checks and events dropped (reasons below) |
//! | `kennel.aggregator.flushed` | count | `payload` | `series`, `sketches`, `service_checks`, `events` handed out |
//! | `kennel.dogstatsd.datagrams` | count | `transport` | datagrams (or stream frames) read |
//! | `kennel.dogstatsd.bytes` | count | `transport` | bytes read |
//! | `kennel.dogstatsd.read_errors` | count | `transport` | failed socket reads |
//! | `kennel.dogstatsd.messages` | count | `message_type` | messages parsed: `metric`, `event`, `service_check` |
//! | `kennel.dogstatsd.parse_errors` | count | `reason` | messages that could not be parsed, by reason |
//! | `kennel.dogstatsd.origin_detection_errors` | count | `reason` | datagrams whose sender's container could not be found |
//!
//! `samples_dropped` reasons from the aggregator: `context_limit` (a new context past
//! `max_contexts`), `pending_limit` (a timestamped sample, service check or event past
//! `max_pending`), `type_conflict` (a sample whose type differs from its context's while that
//! context has unflushed data), `invalid_value` (NaN or infinite), `stale_context` (added
//! through a handle on a context that expired), `too_many_tags`, `unsampled_check_type` (a check
//! `rate` or `monotonic_count` that skipped the check sampler).
//!
//! Design: components register a handle once ([`Telemetry::counter`], [`Telemetry::gauge`])
//! and bump it lock-free (one relaxed atomic add); the registry is locked only to register and at
//! flush. Names and tag keys live in [`InternalMetric`], callers give only tag values, so no
//! name is ever spelled twice. Counters flush as Datadog `count`s of what happened since the
//! previous flush (and keep a cumulative total for `runner status`); gauges flush their current
//! value. They are appended to the flushed series directly, never through contexts, so the
//! runner's own metrics can never be dropped by the context limit.
//!
//! Missing: histograms (e.g. flush duration), and an Agent-compatible `datadog.agent.*` mapping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::context::Tags;
use super::flush::{Point, Series, SeriesKind};

/// How an internal metric is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalKind {
    /// A running total, flushed as what happened since the previous flush.
    Counter,
    /// A current value.
    Gauge,
}

/// Every metric the runner reports about itself (the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InternalMetric {
    AggregatorContexts,
    AggregatorContextsCreated,
    AggregatorContextsExpired,
    AggregatorSamples,
    AggregatorSamplesDropped,
    AggregatorFlushed,
    DogstatsdDatagrams,
    DogstatsdBytes,
    DogstatsdReadErrors,
    DogstatsdMessages,
    DogstatsdParseErrors,
    DogstatsdOriginDetectionErrors,
}

impl InternalMetric {
    pub const ALL: [Self; 12] = [
        Self::AggregatorContexts,
        Self::AggregatorContextsCreated,
        Self::AggregatorContextsExpired,
        Self::AggregatorSamples,
        Self::AggregatorSamplesDropped,
        Self::AggregatorFlushed,
        Self::DogstatsdDatagrams,
        Self::DogstatsdBytes,
        Self::DogstatsdReadErrors,
        Self::DogstatsdMessages,
        Self::DogstatsdParseErrors,
        Self::DogstatsdOriginDetectionErrors,
    ];

    /// Name, type, tag key and meaning.
    const fn spec(
        self,
    ) -> (
        &'static str,
        InternalKind,
        Option<&'static str>,
        &'static str,
    ) {
        use InternalKind::{Counter, Gauge};
        match self {
            Self::AggregatorContexts => (
                "kennel.aggregator.contexts",
                Gauge,
                None,
                "Live contexts after the flush.",
            ),
            Self::AggregatorContextsCreated => (
                "kennel.aggregator.contexts_created",
                Counter,
                None,
                "Contexts created.",
            ),
            Self::AggregatorContextsExpired => (
                "kennel.aggregator.contexts_expired",
                Counter,
                None,
                "Contexts forgotten after going idle.",
            ),
            Self::AggregatorSamples => (
                "kennel.aggregator.samples",
                Counter,
                Some("metric_type"),
                "Samples received, by metric type.",
            ),
            Self::AggregatorSamplesDropped => (
                "kennel.aggregator.samples_dropped",
                Counter,
                Some("reason"),
                "Samples, service checks and events dropped, by reason.",
            ),
            Self::AggregatorFlushed => (
                "kennel.aggregator.flushed",
                Counter,
                Some("payload"),
                "Series, sketches, service checks and events handed out.",
            ),
            Self::DogstatsdDatagrams => (
                "kennel.dogstatsd.datagrams",
                Counter,
                Some("transport"),
                "DogStatsD datagrams (or stream frames) read.",
            ),
            Self::DogstatsdBytes => (
                "kennel.dogstatsd.bytes",
                Counter,
                Some("transport"),
                "DogStatsD bytes read.",
            ),
            Self::DogstatsdReadErrors => (
                "kennel.dogstatsd.read_errors",
                Counter,
                Some("transport"),
                "Failed DogStatsD socket reads.",
            ),
            Self::DogstatsdMessages => (
                "kennel.dogstatsd.messages",
                Counter,
                Some("message_type"),
                "DogStatsD messages parsed, by type.",
            ),
            Self::DogstatsdParseErrors => (
                "kennel.dogstatsd.parse_errors",
                Counter,
                Some("reason"),
                "DogStatsD messages that could not be parsed, by reason.",
            ),
            Self::DogstatsdOriginDetectionErrors => (
                "kennel.dogstatsd.origin_detection_errors",
                Counter,
                Some("reason"),
                "DogStatsD datagrams whose sending container could not be found.",
            ),
        }
    }

    pub const fn name(self) -> &'static str {
        self.spec().0
    }

    pub const fn kind(self) -> InternalKind {
        self.spec().1
    }

    /// The key of its one tag, if it has one (`reason` for `reason:<value>`).
    pub const fn tag_key(self) -> Option<&'static str> {
        self.spec().2
    }

    /// One sentence for humans (OpenMetrics `# HELP`, `runner status`).
    pub const fn help(self) -> &'static str {
        self.spec().3
    }
}

/// A handle on a counter: clone it freely, bump it from any thread.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn increment(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total since the runner started.
    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A handle on a gauge: clone it freely, set it from any thread.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// One internal metric's current value, for `runner status`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryValue {
    pub metric: InternalMetric,
    /// `key:value`, if the metric has a tag.
    pub tag: Option<Arc<str>>,
    /// A counter's total since start, or a gauge's value.
    pub value: f64,
}

#[derive(Debug)]
struct Registered {
    metric: InternalMetric,
    tag_value: Option<Box<str>>,
    name: Arc<str>,
    tags: Tags,
    cell: Arc<AtomicU64>,
    /// A counter's total at the previous flush.
    flushed: u64,
}

/// The registry of internal metrics, shared (`Arc`) by every component that reports one.
#[derive(Debug, Default)]
pub struct Telemetry {
    registered: Mutex<Vec<Registered>>,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `metric` tagged `<tag key>:<tag_value>`, registered on first use; the same
    /// metric and value always give the same counter. A metric without a tag key ignores
    /// `tag_value`.
    pub fn counter(&self, metric: InternalMetric, tag_value: Option<&str>) -> Counter {
        debug_assert_eq!(metric.kind(), InternalKind::Counter, "{metric:?}");
        Counter(self.cell(metric, tag_value))
    }

    /// The gauge `metric` tagged `<tag key>:<tag_value>` (see [`Self::counter`]).
    pub fn gauge(&self, metric: InternalMetric, tag_value: Option<&str>) -> Gauge {
        debug_assert_eq!(metric.kind(), InternalKind::Gauge, "{metric:?}");
        Gauge(self.cell(metric, tag_value))
    }

    fn cell(&self, metric: InternalMetric, tag_value: Option<&str>) -> Arc<AtomicU64> {
        let tag_value = metric.tag_key().and(tag_value);
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = registered
            .iter()
            .find(|r| r.metric == metric && r.tag_value.as_deref() == tag_value)
        {
            return Arc::clone(&r.cell);
        }
        let tags: Tags = match (metric.tag_key(), tag_value) {
            (Some(key), Some(value)) => Arc::from([Arc::from(format!("{key}:{value}"))]),
            _ => Arc::from([]),
        };
        let cell = Arc::new(AtomicU64::new(match metric.kind() {
            InternalKind::Counter => 0,
            InternalKind::Gauge => 0f64.to_bits(),
        }));
        registered.push(Registered {
            metric,
            tag_value: tag_value.map(Box::from),
            name: Arc::from(metric.name()),
            tags,
            cell: Arc::clone(&cell),
            flushed: 0,
        });
        cell
    }

    /// Every registered metric's current value.
    pub fn snapshot(&self) -> Vec<TelemetryValue> {
        let registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        registered
            .iter()
            .map(|r| {
                let raw = r.cell.load(Ordering::Relaxed);
                TelemetryValue {
                    metric: r.metric,
                    tag: r.tags.first().cloned(),
                    value: match r.metric.kind() {
                        InternalKind::Counter => raw as f64,
                        InternalKind::Gauge => f64::from_bits(raw),
                    },
                }
            })
            .collect()
    }

    /// Appends one series per registered metric: counters as what happened since the previous
    /// call, gauges as their value, stamped `timestamp`.
    pub(super) fn flush_into(&self, series: &mut Vec<Series>, timestamp: i64, interval: u64) {
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let empty_host: Arc<str> = Arc::from("");
        for r in registered.iter_mut() {
            let raw = r.cell.load(Ordering::Relaxed);
            let (kind, value) = match r.metric.kind() {
                InternalKind::Counter => {
                    let delta = raw.wrapping_sub(r.flushed);
                    r.flushed = raw;
                    (SeriesKind::Count, delta as f64)
                }
                InternalKind::Gauge => (SeriesKind::Gauge, f64::from_bits(raw)),
            };
            series.push(Series {
                name: Arc::clone(&r.name),
                tags: Arc::clone(&r.tags),
                host: Arc::clone(&empty_host),
                kind,
                interval: if kind == SeriesKind::Gauge {
                    0
                } else {
                    interval
                },
                points: vec![Point { timestamp, value }],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_and_under_the_kennel_prefix() {
        let mut names: Vec<&str> = InternalMetric::ALL.iter().map(|m| m.name()).collect();
        assert!(names.iter().all(|n| n.starts_with("kennel.")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), InternalMetric::ALL.len());
    }

    #[test]
    fn counters_flush_what_happened_since_the_previous_flush() {
        let t = Telemetry::new();
        let errors = t.counter(InternalMetric::DogstatsdParseErrors, Some("no_type"));
        let same = t.counter(InternalMetric::DogstatsdParseErrors, Some("no_type"));
        errors.increment(2);
        same.increment(1);
        let mut series = Vec::new();
        t.flush_into(&mut series, 100, 10);
        assert_eq!(series.len(), 1, "one metric for one metric and tag value");
        let s = &series[0];
        assert_eq!(&*s.name, "kennel.dogstatsd.parse_errors");
        assert_eq!(s.tags().collect::<Vec<_>>(), ["reason:no_type"]);
        assert_eq!(s.kind, SeriesKind::Count);
        assert_eq!(
            s.points,
            [Point {
                timestamp: 100,
                value: 3.0
            }]
        );

        errors.increment(4);
        series.clear();
        t.flush_into(&mut series, 110, 10);
        assert_eq!(series[0].points[0].value, 4.0);
        series.clear();
        t.flush_into(&mut series, 120, 10);
        assert_eq!(series[0].points[0].value, 0.0, "nothing new is a zero");
        assert_eq!(errors.total(), 7);
    }

    #[test]
    fn gauges_flush_their_value_and_untagged_metrics_ignore_tag_values() {
        let t = Telemetry::new();
        let g = t.gauge(InternalMetric::AggregatorContexts, Some("ignored"));
        g.set(42.0);
        let mut series = Vec::new();
        t.flush_into(&mut series, 100, 10);
        assert_eq!(series[0].kind, SeriesKind::Gauge);
        assert_eq!(series[0].tags.len(), 0);
        assert_eq!(series[0].points[0].value, 42.0);
        assert_eq!(
            t.snapshot(),
            [TelemetryValue {
                metric: InternalMetric::AggregatorContexts,
                tag: None,
                value: 42.0
            }]
        );
    }

    #[test]
    fn handles_can_be_bumped_from_other_threads() {
        let t = Arc::new(Telemetry::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = t.counter(InternalMetric::DogstatsdDatagrams, Some("udp"));
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.increment(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert_eq!(
            t.counter(InternalMetric::DogstatsdDatagrams, Some("udp"))
                .total(),
            4000
        );
    }
}
