//! The aggregator: DogStatsD samples and check results in, closed time buckets out.
//!
//! It follows the Datadog Agent's `TimeSampler` (`pkg/aggregator/time_sampler.go`):
//!
//! - a sample goes to the bucket `start = ts - ts % interval` (10 s by default) of its
//!   context, `ts` being the receive time for DogStatsD and the sample's own timestamp for
//!   checks; a late sample goes to its own (older) bucket, which the next flush sends with its
//!   own timestamp;
//! - a flush at `now` closes only the buckets that ended, `start + interval <= now`; an open
//!   bucket waits for a later flush, however late that flush comes;
//! - a DogStatsD counter keeps being flushed as 0 for each closed bucket in which it got no
//!   sample, up to `counter_expiry_seconds` after its last one (the Agent's
//!   `dogstatsd_expiry_seconds`), so a service that stops sending shows a drop rather than a
//!   gap; the Agent adds these zeros only to buckets other metrics opened, Kennel to every
//!   bucket closed since the previous flush;
//! - a context with nothing left to flush and no sample for `context_expiry_seconds` is
//!   forgotten (its memory freed);
//! - a gauge or count sent with a timestamp (`|T`) is not aggregated: it is flushed as sent,
//!   with its own timestamp (the Agent's no-aggregation pipeline). Other types ignore `|T`, as the
//!   Agent's parser does.
//!
//! Check results share the buckets and contexts (a check's gauge and a DogStatsD gauge of the
//! same name, tags and host are one series). A check's context that the latest run of its
//! instance did not emit is retired once its last points are flushed: removed, and named in
//! [`Flush::retired`] so that the `/metrics` page stops showing it, as are the service checks
//! of the previous run that the latest one did not repeat, and everything of an instance that
//! is unscheduled. A check reports its state on each run: when an endpoint dies, the response
//! time it no longer measures must not stay on the page with its last healthy value for the
//! minutes a DogStatsD series is kept, and a run that failed or crashed emitted nothing that
//! can be shown as current. The same holds for a collector's pass (a vanished container's
//! series leave with it). DogStatsD series and reports of events (a container's lifecycle)
//! have no runs, and keep the time-based rules above. Their `rate` and `monotonic_count` samples must
//! have been turned into gauges and counts by the [`super::CheckSampler`] first; their counts
//! flush as counts (the Agent's `count` check type), not as rates like DogStatsD counters.
//!
//! Input API: [`Aggregator::insert`] takes one borrowed DogStatsD sample; a packed message
//! (`name:1:2:3|d`) resolves its context once with [`Aggregator::context`] and adds each value
//! with [`Aggregator::add`]. Neither allocates for an existing context. Time is always an
//! argument (Unix seconds), never read from a clock, so tests and replays drive it.
//!
//! Every sample, context and drop is counted in the runner's telemetry (see
//! [`crate::telemetry`]), published on each flush under `kennel.aggregator.*`. The aggregator is
//! single-threaded (`&mut self`): DogStatsD workers and the check scheduler feed it through a
//! channel, as the Agent's batcher does.
//!
//! Missing: the task that owns it (a bounded channel in, a flush timer, flushes out), the
//! `dogstatsd_mapper_profiles` name rewriting, `histogram_copy_to_distribution`, and
//! `statsd_metric_namespace`; tags from origin detection are expected to be added before
//! the sample gets here.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::config::{AggregatorConfig, ConfigError, HistogramAggregate};
use super::context::{ContextId, ContextResolver, Resolved};
use super::flush::{Flush, Point, Retired, Series, SeriesKind, SketchPoint, SketchSeries};
use super::metric::{Buckets, Input, Reset, State};
use super::quota::{ContextsView, Owner, Quotas, Refused};
use crate::check::{Event, MetricType, ReportKind, RunReport, ServiceCheck};
use crate::telemetry::{Counter, Gauge, InternalKind, InternalMetric, Telemetry};

/// A DogStatsD sample's value, with its type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    /// `g`
    Gauge(f64),
    /// `c`
    Count(f64),
    /// `ms`: aggregated as a histogram.
    Timer(f64),
    /// `h`
    Histogram(f64),
    /// `s`: the member, counted once per bucket however often it is sent.
    Set(&'a str),
    /// `d`
    Distribution(f64),
}

/// One DogStatsD sample, borrowed from the datagram it was parsed from.
#[derive(Debug, Clone)]
pub(crate) struct Sample<'a, T> {
    pub(crate) name: &'a str,
    /// In any order, duplicates allowed.
    pub(crate) tags: T,
    /// Empty when none.
    pub(crate) host: &'a str,
    pub(crate) value: Value<'a>,
    /// `@rate`; anything outside `(0, 1]` counts as 1.
    pub(crate) sample_rate: f64,
    /// `|T`: Unix seconds, for a gauge or count flushed as sent.
    pub(crate) timestamp: Option<i64>,
}

/// The `metric_type` tag values of `kennel.aggregator.samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleType {
    Gauge,
    Count,
    MonotonicCount,
    Rate,
    Set,
    Histogram,
    Timer,
    Distribution,
}

impl SampleType {
    const ALL: [Self; 8] = [
        Self::Gauge,
        Self::Count,
        Self::MonotonicCount,
        Self::Rate,
        Self::Set,
        Self::Histogram,
        Self::Timer,
        Self::Distribution,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Count => "count",
            Self::MonotonicCount => "monotonic_count",
            Self::Rate => "rate",
            Self::Set => "set",
            Self::Histogram => "histogram",
            Self::Timer => "timer",
            Self::Distribution => "distribution",
        }
    }
}

/// The `reason` tag values of `kennel.aggregator.samples_dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    ContextLimit,
    OriginQuota,
    PendingLimit,
    TypeConflict,
    InvalidValue,
    StaleContext,
    TooManyTags,
    UnsampledCheckType,
}

impl DropReason {
    const ALL: [Self; 8] = [
        Self::ContextLimit,
        Self::OriginQuota,
        Self::PendingLimit,
        Self::TypeConflict,
        Self::InvalidValue,
        Self::StaleContext,
        Self::TooManyTags,
        Self::UnsampledCheckType,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            Self::ContextLimit => "context_limit",
            Self::OriginQuota => "origin_quota",
            Self::PendingLimit => "pending_limit",
            Self::TypeConflict => "type_conflict",
            Self::InvalidValue => "invalid_value",
            Self::StaleContext => "stale_context",
            Self::TooManyTags => "too_many_tags",
            Self::UnsampledCheckType => "unsampled_check_type",
        }
    }
}

/// The `payload` tag values of `kennel.aggregator.flushed`.
const PAYLOADS: [&str; 4] = ["series", "sketches", "service_checks", "events"];

/// The aggregator's own counts: plain integers on the hot path, published to the shared
/// registry at each flush.
#[derive(Debug)]
struct Stats {
    samples: [u64; SampleType::ALL.len()],
    dropped: [u64; DropReason::ALL.len()],
    created: u64,
    expired: u64,
    retired: u64,
    flushed: [u64; PAYLOADS.len()],
    samples_handles: Vec<Counter>,
    dropped_handles: Vec<Counter>,
    created_handle: Counter,
    expired_handle: Counter,
    retired_handle: Counter,
    flushed_handles: Vec<Counter>,
    contexts_handle: Gauge,
}

impl Stats {
    fn new(telemetry: &Telemetry) -> Self {
        Self {
            samples: [0; SampleType::ALL.len()],
            dropped: [0; DropReason::ALL.len()],
            created: 0,
            expired: 0,
            retired: 0,
            flushed: [0; PAYLOADS.len()],
            samples_handles: SampleType::ALL
                .iter()
                .map(|t| telemetry.counter(InternalMetric::AggregatorSamples, Some(t.as_str())))
                .collect(),
            dropped_handles: DropReason::ALL
                .iter()
                .map(|r| {
                    telemetry.counter(InternalMetric::AggregatorSamplesDropped, Some(r.as_str()))
                })
                .collect(),
            created_handle: telemetry.counter(InternalMetric::AggregatorContextsCreated, None),
            expired_handle: telemetry.counter(InternalMetric::AggregatorContextsExpired, None),
            retired_handle: telemetry.counter(InternalMetric::AggregatorContextsRetired, None),
            flushed_handles: PAYLOADS
                .iter()
                .map(|p| telemetry.counter(InternalMetric::AggregatorFlushed, Some(p)))
                .collect(),
            contexts_handle: telemetry.gauge(InternalMetric::AggregatorContexts, None),
        }
    }

    fn sample(&mut self, t: SampleType) {
        self.samples[t as usize] += 1;
    }

    fn dropped(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }

    fn publish(&mut self, contexts: usize) {
        fn publish_all(counts: &mut [u64], handles: &[Counter]) {
            for (count, handle) in counts.iter_mut().zip(handles) {
                handle.increment(std::mem::take(count));
            }
        }
        publish_all(&mut self.samples, &self.samples_handles);
        publish_all(&mut self.dropped, &self.dropped_handles);
        publish_all(&mut self.flushed, &self.flushed_handles);
        self.created_handle
            .increment(std::mem::take(&mut self.created));
        self.expired_handle
            .increment(std::mem::take(&mut self.expired));
        self.retired_handle
            .increment(std::mem::take(&mut self.retired));
        self.contexts_handle.set(contexts as f64);
    }
}

/// One aggregator for the whole runner: see the module docs.
#[derive(Debug)]
pub struct Aggregator {
    interval: i64,
    counters_as_count: bool,
    aggregates: Vec<HistogramAggregate>,
    percents: Vec<u8>,
    context_expiry: i64,
    counter_expiry: i64,
    max_pending: usize,
    contexts: ContextResolver,
    contexts_view: ContextsView,
    /// Indexed like the resolver's slots.
    states: Vec<State>,
    timestamped: Vec<Series>,
    service_checks: Vec<ServiceCheck>,
    events: Vec<Event>,
    /// The cutoff of the previous flush: counters get zeros from there on.
    last_cutoff: Option<i64>,
    telemetry: Arc<Telemetry>,
    stats: Stats,
    /// Reused by flushes.
    expired: Vec<usize>,
    values: Vec<f64>,
    /// Each check instance's runs, by instance id.
    checks: HashMap<Arc<str>, CheckRuns>,
    /// The check contexts (by index), and which run emitted each last.
    emitted: HashMap<u32, Emitted>,
    /// Retired since the last flush.
    retired: Vec<Retired>,
}

/// What the aggregator knows of one check instance's runs.
#[derive(Debug, Default)]
struct CheckRuns {
    /// Its latest run, counted from 1.
    run: u64,
    /// How many contexts it emitted last.
    contexts: usize,
    /// The service checks its latest run emitted.
    service_checks: HashSet<ServiceCheckKey>,
}

/// A service check's identity: name, tags, host.
type ServiceCheckKey = (String, Vec<String>, String);

/// The run of a check instance that last emitted a context.
#[derive(Debug)]
struct Emitted {
    instance: Arc<str>,
    run: u64,
}

impl Aggregator {
    /// An aggregator with its own telemetry registry (see [`Self::telemetry`]).
    #[cfg(test)]
    pub(crate) fn new(config: AggregatorConfig) -> Result<Self, ConfigError> {
        Self::with_telemetry(config, Arc::new(Telemetry::new()))
    }

    /// An aggregator publishing its counts to `telemetry`, which it also flushes.
    pub fn with_telemetry(
        config: AggregatorConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let quotas = Quotas::new(
            config.check_contexts(),
            config.max_contexts - config.check_contexts(),
            config.contexts_per_origin(),
        );
        let seconds = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        Ok(Self {
            interval: seconds(config.bucket_size_seconds),
            counters_as_count: config.counters_as_count,
            percents: config.percents(),
            aggregates: config.histogram_aggregates,
            context_expiry: seconds(config.context_expiry_seconds),
            counter_expiry: seconds(config.counter_expiry_seconds),
            max_pending: config.max_pending,
            contexts: ContextResolver::new(quotas),
            contexts_view: ContextsView::default(),
            states: Vec::new(),
            timestamped: Vec::new(),
            service_checks: Vec::new(),
            events: Vec::new(),
            last_cutoff: None,
            stats: Stats::new(&telemetry),
            telemetry,
            expired: Vec::new(),
            values: Vec::new(),
            checks: HashMap::new(),
            emitted: HashMap::new(),
            retired: Vec::new(),
        })
    }

    /// The registry the aggregator publishes to and flushes: DogStatsD listeners and others
    /// register their counters here.
    pub(crate) fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Live contexts.
    #[cfg(test)]
    pub(crate) fn contexts(&self) -> usize {
        self.contexts.len()
    }

    /// The contexts by pool and origin as of the latest flush, for `runner status`.
    pub(crate) fn contexts_view(&self) -> ContextsView {
        self.contexts_view.clone()
    }

    /// Adds one DogStatsD sample from `owner`, received at `now` (Unix seconds).
    pub(crate) fn insert<'a, T>(&mut self, sample: Sample<'a, T>, owner: Owner<'_>, now: f64)
    where
        T: IntoIterator<Item = &'a str>,
    {
        if let Some(context) = self.context(sample.name, sample.tags, sample.host, owner, now) {
            self.add(
                context,
                sample.value,
                sample.sample_rate,
                sample.timestamp,
                now,
            );
        }
    }

    /// The context of `name`, `tags` (any order, duplicates allowed) and `host` (empty for
    /// none), created if new and `owner`'s quota allows ([`super::quota`]); `None` (counted
    /// as a drop) if not. The handle is meant for the values of one message, not to be kept:
    /// a flush may expire the context.
    pub(crate) fn context<'a, T>(
        &mut self,
        name: &str,
        tags: T,
        host: &str,
        owner: Owner<'_>,
        now: f64,
    ) -> Option<ContextId>
    where
        T: IntoIterator<Item = &'a str>,
    {
        self.resolve(name, tags, host, owner, seconds(now))
    }

    fn resolve<'a, T>(
        &mut self,
        name: &str,
        tags: T,
        host: &str,
        owner: Owner<'_>,
        now: i64,
    ) -> Option<ContextId>
    where
        T: IntoIterator<Item = &'a str>,
    {
        match self.contexts.resolve(name, tags, host, owner, now) {
            Resolved::Existing(id) => Some(id),
            Resolved::Created(id) => {
                let index = id.index as usize;
                if self.states.len() <= index {
                    self.states.resize_with(index + 1, State::default);
                }
                self.states[index] = State::Empty;
                self.stats.created += 1;
                Some(id)
            }
            Resolved::Refused(Refused::PoolFull) => {
                self.stats.dropped(DropReason::ContextLimit);
                None
            }
            Resolved::Refused(Refused::OriginQuota) => {
                self.stats.dropped(DropReason::OriginQuota);
                None
            }
            Resolved::TooManyTags => {
                self.stats.dropped(DropReason::TooManyTags);
                None
            }
        }
    }

    /// Adds one value to `context`, received at `now` (Unix seconds). `sample_rate` outside
    /// `(0, 1]` counts as 1; `timestamp` (`|T`) makes a gauge or count pass through as sent.
    pub(crate) fn add(
        &mut self,
        context: ContextId,
        value: Value<'_>,
        sample_rate: f64,
        timestamp: Option<i64>,
        now: f64,
    ) {
        let Some(entry) = self.contexts.get(context) else {
            self.stats.dropped(DropReason::StaleContext);
            return;
        };
        let (kind, input) = match value {
            Value::Gauge(v) => (SampleType::Gauge, Input::Gauge(v)),
            Value::Count(v) => (SampleType::Count, Input::Counter(v)),
            Value::Timer(v) => (SampleType::Timer, Input::Histogram(v)),
            Value::Histogram(v) => (SampleType::Histogram, Input::Histogram(v)),
            Value::Set(member) => (SampleType::Set, Input::Set(self.contexts.hash(member))),
            Value::Distribution(v) => (SampleType::Distribution, Input::Distribution(v)),
        };
        self.stats.sample(kind);
        if !input.is_finite() {
            self.stats.dropped(DropReason::InvalidValue);
            return;
        }
        if let (Some(timestamp), Value::Gauge(v) | Value::Count(v)) = (timestamp, value) {
            if self.pending() >= self.max_pending {
                self.stats.dropped(DropReason::PendingLimit);
                return;
            }
            self.timestamped.push(Series {
                name: Arc::clone(&entry.name),
                tags: Arc::clone(&entry.tags),
                host: Arc::clone(&entry.host),
                kind: if kind == SampleType::Gauge {
                    SeriesKind::Gauge
                } else {
                    SeriesKind::Count
                },
                interval: 0,
                points: vec![Point {
                    timestamp,
                    value: v,
                }],
            });
            return;
        }
        let rate = if sample_rate > 0.0 && sample_rate <= 1.0 {
            sample_rate
        } else {
            1.0
        };
        let bucket = self.bucket_start(seconds(now));
        self.add_input(context, input, rate, bucket);
    }

    fn add_input(&mut self, context: ContextId, input: Input, rate: f64, bucket: i64) {
        let accepted = self.states[context.index as usize].add(input, rate, bucket);
        if !accepted {
            self.stats.dropped(DropReason::TypeConflict);
        }
    }

    /// Adds a report of a check or collector: its samples (already through the
    /// [`super::CheckSampler`]), each to the bucket of its own timestamp, its service checks
    /// and its events. A [`ReportKind::Run`] counts as its instance's latest: what it does not
    /// emit is retired, as is everything of an instance [`ReportKind::Unscheduled`] (see the
    /// module's docs).
    pub(crate) fn insert_report(&mut self, report: &RunReport) {
        if report.kind == ReportKind::Event {
            self.insert_samples(report, None);
            return;
        }
        let instance = match self.checks.get_key_value(report.instance_id.as_str()) {
            Some((instance, _)) => Arc::clone(instance),
            None => Arc::from(report.instance_id.as_str()),
        };
        let runs = self.checks.entry(Arc::clone(&instance)).or_default();
        runs.run += 1;
        let run = runs.run;
        let service_checks: HashSet<ServiceCheckKey> = report
            .service_checks
            .iter()
            .map(|c| (c.name.clone(), c.tags.clone(), c.host.clone()))
            .collect();
        let gone = std::mem::replace(&mut runs.service_checks, service_checks);
        for (name, tags, host) in gone {
            if !runs
                .service_checks
                .contains(&(name.clone(), tags.clone(), host.clone()))
            {
                self.retired
                    .push(Retired::ServiceCheck { name, tags, host });
            }
        }
        self.insert_samples(report, Some((&instance, run)));
    }

    /// Adds a report's samples, service checks and events; with `run`, notes that this run of
    /// its instance emitted each sample's context.
    fn insert_samples(&mut self, report: &RunReport, run: Option<(&Arc<str>, u64)>) {
        for sample in &report.metrics {
            let (kind, input) = match sample.kind {
                MetricType::Gauge => (SampleType::Gauge, Input::Gauge(sample.value)),
                MetricType::Count => (SampleType::Count, Input::Count(sample.value)),
                MetricType::Histogram => (SampleType::Histogram, Input::Histogram(sample.value)),
                MetricType::Distribution => {
                    (SampleType::Distribution, Input::Distribution(sample.value))
                }
                MetricType::Rate | MetricType::MonotonicCount => {
                    self.stats.dropped(DropReason::UnsampledCheckType);
                    continue;
                }
            };
            let at = seconds(sample.timestamp);
            let tags = sample.tags.iter().map(String::as_str);
            let owner = Owner::Check(&report.instance_id);
            let Some(context) = self.resolve(&sample.name, tags, &sample.host, owner, at) else {
                continue;
            };
            self.stats.sample(kind);
            if !input.is_finite() {
                self.stats.dropped(DropReason::InvalidValue);
                continue;
            }
            if let Some((instance, run)) = run {
                self.mark_emitted(context.index, instance, run);
            }
            let bucket = self.bucket_start(at);
            self.add_input(context, input, 1.0, bucket);
        }
        for check in &report.service_checks {
            self.add_service_check(check.clone());
        }
        for event in &report.events {
            self.add_event(event.clone());
        }
    }

    /// How many check instances, and check contexts, the retirement bookkeeping holds.
    #[cfg(test)]
    pub(crate) fn tracked_checks(&self) -> (usize, usize) {
        (self.checks.len(), self.emitted.len())
    }

    /// Notes that run `run` of `instance` emitted the context at `index`.
    fn mark_emitted(&mut self, index: u32, instance: &Arc<str>, run: u64) {
        match self.emitted.entry(index) {
            MapEntry::Occupied(mut known) => {
                let known = known.get_mut();
                known.run = run;
                if known.instance == *instance {
                    return;
                }
                // Another instance emitted the same name, tags and host: it is the latest's.
                let before = std::mem::replace(&mut known.instance, Arc::clone(instance));
                if let Some(runs) = self.checks.get_mut(&before) {
                    runs.contexts -= 1;
                }
            }
            MapEntry::Vacant(new) => {
                new.insert(Emitted {
                    instance: Arc::clone(instance),
                    run,
                });
            }
        }
        if let Some(runs) = self.checks.get_mut(instance) {
            runs.contexts += 1;
        }
    }

    /// Forgets that a check emitted the context at `index`, which is going away.
    fn forget_emitted(&mut self, index: u32) {
        if let Some(emitted) = self.emitted.remove(&index)
            && let Some(runs) = self.checks.get_mut(&emitted.instance)
        {
            runs.contexts -= 1;
        }
    }

    /// Retires the check contexts that the latest run of their instance did not emit, once
    /// their last points are out, and forgets instances with nothing left to retire.
    fn retire_stale_check_contexts(&mut self, now: i64) {
        let stale: Vec<u32> = self
            .emitted
            .iter()
            .filter(|(index, emitted)| {
                let latest = self.checks.get(&emitted.instance).map_or(0, |r| r.run);
                emitted.run < latest && self.states[**index as usize].is_empty()
            })
            .map(|(index, _)| *index)
            .collect();
        for index in stale {
            let slot = index as usize;
            if let Some(entry) = self.contexts.entry(slot) {
                let names = match &mut self.states[slot] {
                    State::Histogram(histogram) => histogram
                        .names
                        .get_or_insert_with(|| {
                            histogram_names(&entry.name, &self.aggregates, &self.percents)
                        })
                        .clone(),
                    _ => Box::new([Arc::clone(&entry.name)]),
                };
                self.retired.push(Retired::Series {
                    names,
                    tags: Arc::clone(&entry.tags),
                    host: Arc::clone(&entry.host),
                });
            }
            self.forget_emitted(index);
            self.contexts.remove(slot, now);
            self.states[slot] = State::Empty;
            self.stats.retired += 1;
        }
        self.checks
            .retain(|_, runs| runs.contexts > 0 || !runs.service_checks.is_empty());
    }

    /// Queues a service check for the next flush.
    pub(crate) fn add_service_check(&mut self, check: ServiceCheck) {
        if self.pending() >= self.max_pending {
            self.stats.dropped(DropReason::PendingLimit);
            return;
        }
        self.service_checks.push(check);
    }

    /// Queues an event for the next flush.
    pub(crate) fn add_event(&mut self, event: Event) {
        if self.pending() >= self.max_pending {
            self.stats.dropped(DropReason::PendingLimit);
            return;
        }
        self.events.push(event);
    }

    fn pending(&self) -> usize {
        self.timestamped.len() + self.service_checks.len() + self.events.len()
    }

    fn bucket_start(&self, at: i64) -> i64 {
        at - at.rem_euclid(self.interval)
    }

    /// Everything closed at `now` (Unix seconds): the buckets that ended, counter zeros,
    /// timestamped samples, service checks, events, and the runner's telemetry. Idle contexts
    /// are forgotten.
    pub fn flush(&mut self, now: f64) -> Flush {
        let now = seconds(now);
        let cutoff = self.bucket_start(now);
        let zero_from = self.last_cutoff.unwrap_or(cutoff - self.interval);
        let interval = self.interval;
        let interval_secs = interval as u64;
        let mut flush = Flush::default();

        for index in 0..self.contexts.slots() {
            let Some(entry) = self.contexts.entry(index) else {
                continue;
            };
            let state = &mut self.states[index];
            let series = |name: &Arc<str>, kind, points| Series {
                name: Arc::clone(name),
                tags: Arc::clone(&entry.tags),
                host: Arc::clone(&entry.host),
                kind,
                interval: interval_secs,
                points,
            };
            match state {
                State::Empty => {}
                State::Gauge(buckets) => {
                    let points = closed_points(buckets, cutoff, |&mut value| value);
                    if !points.is_empty() {
                        flush
                            .series
                            .push(series(&entry.name, SeriesKind::Gauge, points));
                    }
                }
                State::Count(buckets) => {
                    let points = closed_points(buckets, cutoff, |&mut value| value);
                    if !points.is_empty() {
                        flush
                            .series
                            .push(series(&entry.name, SeriesKind::Count, points));
                    }
                }
                State::Counter(counter) => {
                    let (kind, scale) = if self.counters_as_count {
                        (SeriesKind::Count, 1.0)
                    } else {
                        (SeriesKind::Rate, 1.0 / interval as f64)
                    };
                    let mut points =
                        closed_points(&mut counter.buckets, cutoff, |&mut sum| sum * scale);
                    // Zeros for the buckets closed since the previous flush that got nothing,
                    // from the counter's first bucket to `counter_expiry` after its last.
                    let sampled = points.len();
                    let last_zero = counter
                        .last
                        .saturating_add(self.counter_expiry)
                        .min(cutoff - interval);
                    let mut bucket = zero_from.max(counter.first);
                    while bucket <= last_zero {
                        if !points[..sampled].iter().any(|p| p.timestamp == bucket) {
                            points.push(Point {
                                timestamp: bucket,
                                value: 0.0,
                            });
                        }
                        bucket += interval;
                    }
                    if points.len() > sampled {
                        points.sort_unstable_by_key(|p| p.timestamp);
                    }
                    if !points.is_empty() {
                        flush.series.push(series(&entry.name, kind, points));
                    }
                }
                State::Set(buckets) => {
                    let points = closed_points(buckets, cutoff, |set| set.0.len() as f64);
                    if !points.is_empty() {
                        flush
                            .series
                            .push(series(&entry.name, SeriesKind::Gauge, points));
                    }
                }
                State::Histogram(histogram) => {
                    if histogram.buckets.has_closed(cutoff) {
                        let names = histogram.names.get_or_insert_with(|| {
                            histogram_names(&entry.name, &self.aggregates, &self.percents)
                        });
                        let mut columns: Vec<Vec<Point>> = vec![Vec::new(); names.len()];
                        let values = &mut self.values;
                        let aggregates = &self.aggregates;
                        let percents = &self.percents;
                        histogram.buckets.drain_closed(cutoff, |timestamp, h| {
                            values.clear();
                            h.values(aggregates, percents, interval as f64, values);
                            for (column, &value) in columns.iter_mut().zip(values.iter()) {
                                column.push(Point { timestamp, value });
                            }
                        });
                        for (i, (name, points)) in names.iter().zip(columns).enumerate() {
                            let kind = if aggregates.get(i) == Some(&HistogramAggregate::Count) {
                                SeriesKind::Rate
                            } else {
                                SeriesKind::Gauge
                            };
                            if !points.is_empty() {
                                flush.series.push(series(name, kind, points));
                            }
                        }
                    }
                }
                State::Distribution(buckets) => {
                    let mut points = Vec::new();
                    buckets.drain_closed(cutoff, |timestamp, sketch| {
                        points.push(SketchPoint {
                            timestamp,
                            sketch: std::mem::take(sketch),
                        });
                    });
                    if !points.is_empty() {
                        flush.sketches.push(SketchSeries {
                            name: Arc::clone(&entry.name),
                            tags: Arc::clone(&entry.tags),
                            host: Arc::clone(&entry.host),
                            interval: interval_secs,
                            points,
                        });
                    }
                }
            }
            let idle = now.saturating_sub(entry.last_seen) > self.context_expiry;
            if idle && state.is_done(cutoff, self.counter_expiry) {
                self.expired.push(index);
            }
        }

        let mut expired = std::mem::take(&mut self.expired);
        for index in expired.drain(..) {
            self.forget_emitted(index as u32);
            self.contexts.remove(index, now);
            self.states[index] = State::Empty;
            self.stats.expired += 1;
        }
        self.expired = expired;
        self.retire_stale_check_contexts(now);
        self.contexts.sweep();
        let quotas = self.contexts.quotas();
        quotas.sweep(now);
        self.contexts_view.set(quotas.status());
        self.last_cutoff = Some(self.last_cutoff.map_or(cutoff, |last| last.max(cutoff)));

        flush.series.append(&mut self.timestamped);
        flush.service_checks = std::mem::take(&mut self.service_checks);
        flush.events = std::mem::take(&mut self.events);
        flush.retired = std::mem::take(&mut self.retired);
        let sizes = [
            flush.series.len(),
            flush.sketches.len(),
            flush.service_checks.len(),
            flush.events.len(),
        ];
        for (count, size) in self.stats.flushed.iter_mut().zip(sizes) {
            *count += size as u64;
        }
        self.stats.publish(self.contexts.len());
        // The runner's own metrics go straight into the flush, never through contexts, so the
        // context limit can never drop them.
        let timestamp = cutoff - interval;
        let empty_host: Arc<str> = Arc::from("");
        let refused_name: Arc<str> =
            Arc::from(InternalMetric::AggregatorOriginContextsRefused.name());
        quotas_refusals(self.contexts.quotas(), now, |origin, refused| {
            flush.series.push(Series {
                name: Arc::clone(&refused_name),
                tags: Arc::new([Arc::from(format!("origin:{origin}"))]),
                host: Arc::clone(&empty_host),
                kind: SeriesKind::Count,
                interval: interval_secs,
                points: vec![Point {
                    timestamp,
                    value: refused as f64,
                }],
            });
        });
        self.telemetry.drain(|reading| {
            let (kind, interval) = match reading.kind {
                InternalKind::Counter => (SeriesKind::Count, interval_secs),
                InternalKind::Gauge => (SeriesKind::Gauge, 0),
            };
            flush.series.push(Series {
                name: Arc::clone(reading.name),
                tags: Arc::clone(reading.tags),
                host: Arc::clone(&empty_host),
                kind,
                interval,
                points: vec![Point {
                    timestamp,
                    value: reading.value,
                }],
            });
        });
        flush
    }

    /// Approximate heap bytes held by contexts and their open buckets.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.contexts.heap_bytes()
            + self.states.capacity() * std::mem::size_of::<State>()
            + self.states.iter().map(State::heap_bytes).sum::<usize>()
    }
}

/// `<name>.<aggregate>` for each aggregate, then `<name>.<p>percentile` for each percentile.
/// The closed buckets of `buckets` as points, in time order, each valued by `value`.
fn closed_points<T: Reset>(
    buckets: &mut Buckets<T>,
    cutoff: i64,
    mut value: impl FnMut(&mut T) -> f64,
) -> Vec<Point> {
    let mut points = Vec::new();
    buckets.drain_closed(cutoff, |timestamp, state| {
        points.push(Point {
            timestamp,
            value: value(state),
        });
    });
    points
}

fn histogram_names(
    name: &str,
    aggregates: &[HistogramAggregate],
    percents: &[u8],
) -> Box<[Arc<str>]> {
    aggregates
        .iter()
        .map(|a| Arc::from(format!("{name}{}", a.suffix())))
        .chain(
            percents
                .iter()
                .map(|p| Arc::from(format!("{name}.{p}percentile"))),
        )
        .collect()
}

/// Hands `each` every origin that had new contexts refused since the previous flush, and logs
/// it, at most once a minute per origin.
fn quotas_refusals(quotas: &mut Quotas, now: i64, mut each: impl FnMut(&str, u64)) {
    quotas.take_refusals(now, |origin, refused, warn| {
        if warn {
            tracing::warn!(
                origin,
                refused,
                "new metric contexts refused: this origin is at its context quota (`aggregator.max_contexts_per_origin`, or its fair share of a pool running short); its existing series and every other origin's go on"
            );
        }
        each(origin, refused);
    });
}

/// Whole Unix seconds (the Agent truncates too); NaN counts as 0.
fn seconds(t: f64) -> i64 {
    t.floor() as i64
}
