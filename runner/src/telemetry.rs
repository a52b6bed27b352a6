//! The runner's own metrics: every name in one table, every value flowing out through the
//! aggregator's flush beside the metrics it aggregates. Every component reports here (the
//! listeners, the aggregator, the sinks); this module depends on none of them.
//!
//! | name | type | tag | what it counts |
//! |---|---|---|---|
//! | `kennel.aggregator.contexts` | gauge | | live contexts after the flush |
//! | `kennel.aggregator.contexts_created` | count | | contexts created |
//! | `kennel.aggregator.contexts_expired` | count | | contexts forgotten after going idle |
//! | `kennel.aggregator.contexts_retired` | count | | check contexts the latest run of their instance did not emit |
//! | `kennel.aggregator.samples` | count | `metric_type` | samples received, by type (`gauge`, `count`, `rate`, `set`, `histogram`, `timer`, `distribution`) |
//! | `kennel.aggregator.samples_dropped` | count | `reason` | samples, service checks and events dropped (reasons below) |
//! | `kennel.aggregator.origin_contexts_refused` | count | `origin` | new contexts refused to one origin (`check:<instance id>`, `container:<id>`, `process:<pid>`, `unidentified`, `other`): its `origin_quota` and `context_limit` drops; sent only for origins that had some since the previous flush |
//! | `kennel.aggregator.longest_turn_seconds` | gauge | | the aggregation loop's longest turn (one input batch, or one flush) since the previous flush |
//! | `kennel.aggregator.flushed` | count | `payload` | `series`, `sketches`, `service_checks`, `events` handed out |
//! | `kennel.dogstatsd.datagrams` | count | `transport` | datagrams (or stream frames) read |
//! | `kennel.dogstatsd.bytes` | count | `transport` | bytes read |
//! | `kennel.dogstatsd.read_errors` | count | `transport` | failed socket reads |
//! | `kennel.dogstatsd.truncated_datagrams` | count | `transport` | datagrams longer than `dogstatsd_buffer_size`, cut by the kernel: their last, cut line dropped |
//! | `kennel.dogstatsd.stream_connections_refused` | count | | stream connections closed unread because `dogstatsd_stream_max_connections` were open |
//! | `kennel.dogstatsd.messages` | count | `message_type` | messages parsed: `metric`, `event`, `service_check` |
//! | `kennel.dogstatsd.parse_errors` | count | `reason` | messages that could not be parsed, by reason |
//! | `kennel.dogstatsd.origin_detection_errors` | count | `reason` | datagrams whose sender's container could not be found |
//! | `kennel.sink.flushes` | count | `sink` | flushes an output took |
//! | `kennel.sink.flushes_dropped` | count | `sink` | flushes dropped, oldest first, because the output's queue was full |
//! | `kennel.sink.errors` | count | `sink` | flushes the output failed to deliver |
//! | `kennel.sink.last_send_seconds` | gauge | `sink` | how long the output took with its latest flush |
//! | `kennel.forwarder.transactions` | count | `endpoint`, `outcome` | requests to an endpoint: `success`, or `retried` (failed, kept to try again) |
//! | `kennel.forwarder.dropped` | count | `endpoint`, `reason` | payloads dropped (reasons below) |
//! | `kennel.forwarder.dropped_items` | count | `endpoint`, `reason` | points, sketches, service checks and events in them |
//! | `kennel.forwarder.queued_payloads` | gauge | `endpoint`, `store` | payloads waiting, in `memory` or on `disk` |
//! | `kennel.forwarder.queued_bytes` | gauge | `endpoint`, `store` | their bytes |
//! | `kennel.forwarder.oldest_queued_seconds` | gauge | `endpoint` | age of the oldest payload waiting |
//! | `kennel.forwarder.spill_errors` | count | `endpoint` | payloads the spill directory could not take |
//! | `kennel.collector.pass_seconds` | gauge | | how long the collector's latest pass took |
//! | `kennel.collector.containers` | gauge | | containers the latest pass read |
//! | `kennel.collector.read_errors` | count | `reader` | readings that failed (`cgroup`, `network`, `host`), a vanished container not counted |
//! | `kennel.plugin.log_lines_suppressed` | count | `check` | log lines a check's instances caused past their rate limit (`plugins.log_lines_per_second`), not written |
//!
//! `samples_dropped` reasons from the aggregator: `context_limit` (a new context past
//! its pool: `max_check_contexts` for checks, the rest of `max_contexts` for DogStatsD),
//! `origin_quota` (a new context past its origin's `max_contexts_per_origin`, or past its fair
//! share of a pool running short: see `aggregator::quota`), `pending_limit` (a timestamped sample, service check or event past
//! `max_pending`), `type_conflict` (a sample whose type differs from its context's while that
//! context has unflushed data), `invalid_value` (NaN or infinite), `stale_context` (added
//! through a handle on a context that expired), `too_many_tags` (more than 256 distinct tags,
//! the sender's and those added to them), `unsampled_check_type` (a check
//! `rate` or `monotonic_count` that skipped the check sampler).
//!
//! `forwarder.dropped` reasons: `queue_full` (memory full and the disk could not take the
//! oldest), `disk_full` (the spill budget was full: the oldest file went), `outdated` (on disk
//! past `forwarder_outdated_file_in_days`), `corrupt` (a spilled file that could not be read),
//! `rejected` (400 or 413; for remote write any 4xx but 429), `invalid_key` (401, 403),
//! `shutdown` (left at a stop and the disk could not take it); and, counted in items only since
//! they never made it into a payload, `too_large` (an entry larger than a payload may be),
//! `not_finite` (NaN or infinity, for v1 JSON), `out_of_order` and `conflicting` (remote
//! write: what a Prometheus receiver would refuse), `serialize_error`.
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

/// A metric's tags, shared with whoever reads them (the aggregator's flush copies no string).
pub(crate) type Tags = Arc<[Arc<str>]>;

/// How an internal metric is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InternalKind {
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
    AggregatorContextsRetired,
    AggregatorSamples,
    AggregatorSamplesDropped,
    AggregatorFlushed,
    AggregatorOriginContextsRefused,
    AggregatorLongestTurn,
    DogstatsdDatagrams,
    DogstatsdBytes,
    DogstatsdReadErrors,
    DogstatsdTruncatedDatagrams,
    DogstatsdStreamConnectionsRefused,
    DogstatsdMessages,
    DogstatsdParseErrors,
    DogstatsdOriginDetectionErrors,
    SinkFlushes,
    SinkFlushesDropped,
    SinkErrors,
    SinkLastSendSeconds,
    ForwarderTransactions,
    ForwarderDropped,
    ForwarderDroppedItems,
    ForwarderQueuedPayloads,
    ForwarderQueuedBytes,
    ForwarderOldestQueuedSeconds,
    ForwarderSpillErrors,
    CollectorPassSeconds,
    CollectorContainers,
    CollectorReadErrors,
    PluginLogLinesSuppressed,
}

impl InternalMetric {
    #[cfg(test)]
    pub(crate) const ALL: [Self; 32] = [
        Self::AggregatorContexts,
        Self::AggregatorContextsCreated,
        Self::AggregatorContextsExpired,
        Self::AggregatorContextsRetired,
        Self::AggregatorSamples,
        Self::AggregatorSamplesDropped,
        Self::AggregatorFlushed,
        Self::AggregatorOriginContextsRefused,
        Self::AggregatorLongestTurn,
        Self::DogstatsdDatagrams,
        Self::DogstatsdBytes,
        Self::DogstatsdReadErrors,
        Self::DogstatsdTruncatedDatagrams,
        Self::DogstatsdStreamConnectionsRefused,
        Self::DogstatsdMessages,
        Self::DogstatsdParseErrors,
        Self::DogstatsdOriginDetectionErrors,
        Self::SinkFlushes,
        Self::SinkFlushesDropped,
        Self::SinkErrors,
        Self::SinkLastSendSeconds,
        Self::ForwarderTransactions,
        Self::ForwarderDropped,
        Self::ForwarderDroppedItems,
        Self::ForwarderQueuedPayloads,
        Self::ForwarderQueuedBytes,
        Self::ForwarderOldestQueuedSeconds,
        Self::ForwarderSpillErrors,
        Self::CollectorPassSeconds,
        Self::CollectorContainers,
        Self::CollectorReadErrors,
        Self::PluginLogLinesSuppressed,
    ];

    /// Name, type and tag keys.
    const fn spec(self) -> (&'static str, InternalKind, &'static [&'static str]) {
        use InternalKind::{Counter, Gauge};
        match self {
            Self::AggregatorContexts => ("kennel.aggregator.contexts", Gauge, &[]),
            Self::AggregatorContextsCreated => ("kennel.aggregator.contexts_created", Counter, &[]),
            Self::AggregatorContextsExpired => ("kennel.aggregator.contexts_expired", Counter, &[]),
            Self::AggregatorContextsRetired => ("kennel.aggregator.contexts_retired", Counter, &[]),
            Self::AggregatorSamples => ("kennel.aggregator.samples", Counter, &["metric_type"]),
            Self::AggregatorSamplesDropped => {
                ("kennel.aggregator.samples_dropped", Counter, &["reason"])
            }
            Self::AggregatorFlushed => ("kennel.aggregator.flushed", Counter, &["payload"]),
            Self::AggregatorOriginContextsRefused => (
                "kennel.aggregator.origin_contexts_refused",
                Counter,
                &["origin"],
            ),
            Self::AggregatorLongestTurn => ("kennel.aggregator.longest_turn_seconds", Gauge, &[]),
            Self::DogstatsdDatagrams => ("kennel.dogstatsd.datagrams", Counter, &["transport"]),
            Self::DogstatsdBytes => ("kennel.dogstatsd.bytes", Counter, &["transport"]),
            Self::DogstatsdReadErrors => ("kennel.dogstatsd.read_errors", Counter, &["transport"]),
            Self::DogstatsdTruncatedDatagrams => (
                "kennel.dogstatsd.truncated_datagrams",
                Counter,
                &["transport"],
            ),
            Self::DogstatsdStreamConnectionsRefused => {
                ("kennel.dogstatsd.stream_connections_refused", Counter, &[])
            }
            Self::DogstatsdMessages => ("kennel.dogstatsd.messages", Counter, &["message_type"]),
            Self::DogstatsdParseErrors => ("kennel.dogstatsd.parse_errors", Counter, &["reason"]),
            Self::DogstatsdOriginDetectionErrors => (
                "kennel.dogstatsd.origin_detection_errors",
                Counter,
                &["reason"],
            ),
            Self::SinkFlushes => ("kennel.sink.flushes", Counter, &["sink"]),
            Self::SinkFlushesDropped => ("kennel.sink.flushes_dropped", Counter, &["sink"]),
            Self::SinkErrors => ("kennel.sink.errors", Counter, &["sink"]),
            Self::SinkLastSendSeconds => ("kennel.sink.last_send_seconds", Gauge, &["sink"]),
            Self::ForwarderTransactions => (
                "kennel.forwarder.transactions",
                Counter,
                &["endpoint", "outcome"],
            ),
            Self::ForwarderDropped => {
                ("kennel.forwarder.dropped", Counter, &["endpoint", "reason"])
            }
            Self::ForwarderDroppedItems => (
                "kennel.forwarder.dropped_items",
                Counter,
                &["endpoint", "reason"],
            ),
            Self::ForwarderQueuedPayloads => (
                "kennel.forwarder.queued_payloads",
                Gauge,
                &["endpoint", "store"],
            ),
            Self::ForwarderQueuedBytes => (
                "kennel.forwarder.queued_bytes",
                Gauge,
                &["endpoint", "store"],
            ),
            Self::ForwarderOldestQueuedSeconds => (
                "kennel.forwarder.oldest_queued_seconds",
                Gauge,
                &["endpoint"],
            ),
            Self::ForwarderSpillErrors => ("kennel.forwarder.spill_errors", Counter, &["endpoint"]),
            Self::CollectorPassSeconds => ("kennel.collector.pass_seconds", Gauge, &[]),
            Self::CollectorContainers => ("kennel.collector.containers", Gauge, &[]),
            Self::CollectorReadErrors => ("kennel.collector.read_errors", Counter, &["reader"]),
            Self::PluginLogLinesSuppressed => {
                ("kennel.plugin.log_lines_suppressed", Counter, &["check"])
            }
        }
    }

    pub(crate) const fn name(self) -> &'static str {
        self.spec().0
    }

    pub(crate) const fn kind(self) -> InternalKind {
        self.spec().1
    }

    /// The keys of its tags, in order (`reason` for `reason:<value>`).
    pub(crate) const fn tag_keys(self) -> &'static [&'static str] {
        self.spec().2
    }
}

/// A handle on a counter: clone it freely, bump it from any thread.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub(crate) fn increment(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total since the runner started.
    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A handle on a gauge: clone it freely, set it from any thread.
#[derive(Debug, Clone)]
pub(crate) struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub(crate) fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// One internal metric's current value.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TelemetryValue {
    pub(crate) metric: InternalMetric,
    /// `key:value`, if the metric has a tag.
    pub(crate) tag: Option<Arc<str>>,
    /// A counter's total since start, or a gauge's value.
    pub(crate) value: f64,
}

#[derive(Debug)]
struct Registered {
    metric: InternalMetric,
    tag_values: Box<[Box<str>]>,
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
        self.counter_tagged(metric, tag_value.as_slice())
    }

    /// The counter `metric` with one value per tag key, in the keys' order (see
    /// [`Self::counter`]); values past the metric's keys are ignored.
    pub(crate) fn counter_tagged(&self, metric: InternalMetric, tag_values: &[&str]) -> Counter {
        debug_assert_eq!(metric.kind(), InternalKind::Counter, "{metric:?}");
        Counter(self.cell(metric, tag_values))
    }

    /// The gauge `metric` tagged `<tag key>:<tag_value>` (see [`Self::counter`]).
    pub(crate) fn gauge(&self, metric: InternalMetric, tag_value: Option<&str>) -> Gauge {
        self.gauge_tagged(metric, tag_value.as_slice())
    }

    /// The gauge `metric` with one value per tag key (see [`Self::counter_tagged`]).
    pub(crate) fn gauge_tagged(&self, metric: InternalMetric, tag_values: &[&str]) -> Gauge {
        debug_assert_eq!(metric.kind(), InternalKind::Gauge, "{metric:?}");
        Gauge(self.cell(metric, tag_values))
    }

    fn cell(&self, metric: InternalMetric, tag_values: &[&str]) -> Arc<AtomicU64> {
        let keys = metric.tag_keys();
        let tag_values = &tag_values[..tag_values.len().min(keys.len())];
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = registered.iter().find(|r| {
            r.metric == metric
                && r.tag_values.len() == tag_values.len()
                && r.tag_values.iter().zip(tag_values).all(|(a, b)| **a == **b)
        }) {
            return Arc::clone(&r.cell);
        }
        let tags: Tags = keys
            .iter()
            .zip(tag_values)
            .map(|(key, value)| Arc::from(format!("{key}:{value}")))
            .collect();
        let cell = Arc::new(AtomicU64::new(match metric.kind() {
            InternalKind::Counter => 0,
            InternalKind::Gauge => 0f64.to_bits(),
        }));
        registered.push(Registered {
            metric,
            tag_values: tag_values.iter().map(|v| Box::from(*v)).collect(),
            name: Arc::from(metric.name()),
            tags,
            cell: Arc::clone(&cell),
            flushed: 0,
        });
        cell
    }

    /// Every registered metric's current value.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<TelemetryValue> {
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

    /// Hands each registered metric to `each`: counters as what happened since the previous
    /// call, gauges as their value.
    pub(crate) fn drain(&self, mut each: impl FnMut(Reading<'_>)) {
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for r in registered.iter_mut() {
            let raw = r.cell.load(Ordering::Relaxed);
            let value = match r.metric.kind() {
                InternalKind::Counter => {
                    let delta = raw.wrapping_sub(r.flushed);
                    r.flushed = raw;
                    delta as f64
                }
                InternalKind::Gauge => f64::from_bits(raw),
            };
            each(Reading {
                name: &r.name,
                tags: &r.tags,
                kind: r.metric.kind(),
                value,
            });
        }
    }
}

/// One metric's value at a [`Telemetry::drain`].
#[derive(Debug)]
pub(crate) struct Reading<'a> {
    pub(crate) name: &'a Arc<str>,
    pub(crate) tags: &'a Tags,
    pub(crate) kind: InternalKind,
    /// What a counter counted since the previous drain, or a gauge's value.
    pub(crate) value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, tags, kind, value) of every metric drained.
    fn drained(t: &Telemetry) -> Vec<(String, Vec<String>, InternalKind, f64)> {
        let mut out = Vec::new();
        t.drain(|r| {
            out.push((
                r.name.to_string(),
                r.tags.iter().map(|t| t.to_string()).collect(),
                r.kind,
                r.value,
            ))
        });
        out
    }

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
        let first = drained(&t);
        assert_eq!(
            first,
            [(
                "kennel.dogstatsd.parse_errors".to_owned(),
                vec!["reason:no_type".to_owned()],
                InternalKind::Counter,
                3.0
            )],
            "one metric for one metric and tag value"
        );

        errors.increment(4);
        assert_eq!(drained(&t)[0].3, 4.0);
        assert_eq!(drained(&t)[0].3, 0.0, "nothing new is a zero");
        assert_eq!(errors.total(), 7);
    }

    #[test]
    fn gauges_flush_their_value_and_untagged_metrics_ignore_tag_values() {
        let t = Telemetry::new();
        let g = t.gauge(InternalMetric::AggregatorContexts, Some("ignored"));
        g.set(42.0);
        let gauge = &drained(&t)[0];
        assert_eq!(gauge.2, InternalKind::Gauge);
        assert!(gauge.1.is_empty());
        assert_eq!(gauge.3, 42.0);
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
