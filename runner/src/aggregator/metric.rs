//! What one context accumulates per time bucket, and the Datadog Agent's maths to flush it.
//!
//! | type | per bucket | flushed as |
//! |---|---|---|
//! | gauge | last value | gauge |
//! | DogStatsD counter (`c`) | `Σ value/rate` | rate `Σ/interval` (or count, `counters_as_count`) |
//! | check count | `Σ value` | count (the Agent's `count` check type) |
//! | set | distinct values | gauge: how many |
//! | histogram, timer | every value with weight `int(1/rate)` | `.max .min .median .avg .sum` gauges, `.count` rate, `.<p>percentile` gauges |
//! | distribution | a [`Sketch`], each value weighing `int(1/rate)` | the sketch |
//!
//! Design: the state of a context is one enum, typed by the first sample, holding its open
//! buckets inline: the newest bucket needs no allocation and keeps its buffers (a histogram's
//! sample vector, a set's table, a sketch's bins) from one bucket to the next, so a steady
//! context allocates nothing per sample. Older or newer buckets (a late sample, a flush that
//! came late) go to a small sorted side vector. Large states are boxed so that a gauge context
//! costs 48 bytes here.
//!
//! Set members are kept as 64-bit seeded hashes, not strings: a set allocates nothing per
//! member, at the price of counting two members as one if their hashes collide (about n²/2⁶⁵
//! for n members, one in 10¹⁵ for a million).
//!
//! Missing: `histogram_copy_to_distribution`, and a bound on a histogram bucket's samples (the
//! Agent has none either).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::config::HistogramAggregate;
use super::context::KeyHasher;
use super::sketch::{MAX_BIN_COUNT, Sketch};

/// Marks an unused head bucket.
const EMPTY: i64 = i64::MIN;

/// Buffers above this many elements are released rather than kept for the next bucket.
const KEEP_CAPACITY: usize = 4096;

/// Emptying a bucket's value for reuse.
pub(super) trait Reset: Default {
    fn reset(&mut self);
}

impl Reset for f64 {
    fn reset(&mut self) {
        *self = 0.0;
    }
}

impl Reset for Sketch {
    fn reset(&mut self) {
        self.clear();
    }
}

/// The open buckets of one context, keyed by bucket start.
#[derive(Debug)]
pub(super) struct Buckets<T> {
    head_start: i64,
    head: T,
    /// Other open buckets, sorted by start.
    #[expect(
        clippy::box_collection,
        reason = "rare (a late sample, a late flush): 8 bytes when absent, not a Vec's 24"
    )]
    others: Option<Box<Vec<(i64, T)>>>,
}

impl<T: Reset> Default for Buckets<T> {
    fn default() -> Self {
        Self {
            head_start: EMPTY,
            head: T::default(),
            others: None,
        }
    }
}

impl<T: Reset> Buckets<T> {
    /// The bucket starting at `start`, opened if needed.
    pub(crate) fn get(&mut self, start: i64) -> &mut T {
        if self.head_start == start {
            return &mut self.head;
        }
        let found = self.others().iter().position(|(s, _)| *s == start);
        match (found, &mut self.others) {
            (Some(i), Some(others)) => &mut others[i].1,
            _ if self.head_start == EMPTY => {
                self.head_start = start;
                &mut self.head
            }
            (_, others) => {
                let others = others.get_or_insert_default();
                let at = others.partition_point(|(s, _)| *s < start);
                others.insert(at, (start, T::default()));
                &mut others[at].1
            }
        }
    }

    fn others(&self) -> &[(i64, T)] {
        self.others.as_deref().map_or(&[], Vec::as_slice)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head_start == EMPTY && self.others().is_empty()
    }

    /// Whether a bucket starting before `cutoff` is open.
    pub(crate) fn has_closed(&self, cutoff: i64) -> bool {
        (self.head_start != EMPTY && self.head_start < cutoff)
            || self.others().first().is_some_and(|(s, _)| *s < cutoff)
    }

    /// Hands every bucket starting before `cutoff` to `f`, oldest first, and closes them.
    pub(crate) fn drain_closed(&mut self, cutoff: i64, mut f: impl FnMut(i64, &mut T)) {
        let head_closed = self.head_start != EMPTY && self.head_start < cutoff;
        let mut head_pending = head_closed;
        if let Some(others) = self.others.as_mut() {
            let closed = others.partition_point(|(s, _)| *s < cutoff);
            for (start, value) in &mut others[..closed] {
                if head_pending && self.head_start < *start {
                    f(self.head_start, &mut self.head);
                    head_pending = false;
                }
                f(*start, value);
            }
            others.drain(..closed);
            if others.is_empty() {
                self.others = None;
            }
        }
        if head_pending {
            f(self.head_start, &mut self.head);
        }
        if head_closed {
            self.head.reset();
            self.head_start = EMPTY;
        }
    }

    #[cfg(test)]
    fn heap_bytes(&self, value_heap: impl Fn(&T) -> usize) -> usize {
        let others = self.others.as_deref().map_or(0, |o| {
            std::mem::size_of::<Vec<(i64, T)>>()
                + o.capacity() * std::mem::size_of::<(i64, T)>()
                + o.iter().map(|(_, v)| value_heap(v)).sum::<usize>()
        });
        value_heap(&self.head) + others
    }
}

/// A set's members, as hashes.
#[derive(Debug, Default)]
pub(super) struct Set(pub(crate) HashSet<u64, BuildHasherDefault<KeyHasher>>);

impl Reset for Set {
    fn reset(&mut self) {
        if self.0.capacity() > KEEP_CAPACITY {
            self.0 = HashSet::default();
        } else {
            self.0.clear();
        }
    }
}

/// A histogram's samples within one bucket.
#[derive(Debug, Default)]
pub(super) struct Histogram {
    /// `(value, weight)`.
    samples: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Reset for Histogram {
    fn reset(&mut self) {
        if self.samples.capacity() > KEEP_CAPACITY {
            self.samples = Vec::new();
        } else {
            self.samples.clear();
        }
        self.sum = 0.0;
        self.count = 0;
    }
}

impl Histogram {
    /// The Agent's weighting: the weight is `int(1/rate)` but the sum uses `1/rate` itself.
    fn add(&mut self, value: f64, rate: f64) {
        let weight = (1.0 / rate) as u64;
        self.samples.push((value, weight));
        self.sum += value / rate;
        self.count += weight;
    }

    /// Appends the value of each aggregate, then of each percentile, in the order given.
    pub(crate) fn values(
        &mut self,
        aggregates: &[HistogramAggregate],
        percents: &[u8],
        interval: f64,
        out: &mut Vec<f64>,
    ) {
        if self.samples.is_empty() {
            return;
        }
        self.samples.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let count = self.count;
        for aggregate in aggregates {
            out.push(match aggregate {
                HistogramAggregate::Max => self.samples[self.samples.len() - 1].0,
                HistogramAggregate::Min => self.samples[0].0,
                HistogramAggregate::Median => self.at_rank(count.saturating_sub(1) / 2),
                HistogramAggregate::Avg => self.sum / count as f64,
                HistogramAggregate::Sum => self.sum,
                HistogramAggregate::Count => count as f64 / interval,
            });
        }
        for &p in percents {
            out.push(self.at_rank((u64::from(p) * count).saturating_sub(1) / 100));
        }
    }

    /// The first value (in sorted order) whose cumulative weight passes `rank`.
    fn at_rank(&self, rank: u64) -> f64 {
        let mut weight = 0;
        for &(value, w) in &self.samples {
            weight += w;
            if weight > rank {
                return value;
            }
        }
        self.samples[self.samples.len() - 1].0
    }
}

/// A DogStatsD counter: its buckets, and the span of buckets it was sampled in (for the zeros
/// it keeps sending after its last sample).
#[derive(Debug)]
pub(super) struct Counter {
    pub(crate) buckets: Buckets<f64>,
    /// Start of the first bucket sampled.
    pub(crate) first: i64,
    /// Start of the last bucket sampled.
    pub(crate) last: i64,
}

/// A histogram context: its buckets and, once flushed, its series names.
#[derive(Debug, Default)]
pub(super) struct HistogramState {
    /// `<name>.max`, ... then `<name>.95percentile`, ...: built at the first flush, reused.
    pub(crate) names: Option<Box<[Arc<str>]>>,
    pub(crate) buckets: Buckets<Histogram>,
}

/// One sample, as the state sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Input {
    Gauge(f64),
    /// A DogStatsD counter increment.
    Counter(f64),
    /// A check's count.
    Count(f64),
    /// A set member's hash.
    Set(u64),
    Histogram(f64),
    Distribution(f64),
}

impl Input {
    pub(crate) fn is_finite(self) -> bool {
        match self {
            Self::Gauge(v)
            | Self::Counter(v)
            | Self::Count(v)
            | Self::Histogram(v)
            | Self::Distribution(v) => v.is_finite(),
            Self::Set(_) => true,
        }
    }
}

/// Everything a context holds between flushes.
#[derive(Debug, Default)]
pub(super) enum State {
    /// No aggregated sample yet (a new context, or one only sent timestamped samples).
    #[default]
    Empty,
    Gauge(Buckets<f64>),
    Counter(Counter),
    Count(Buckets<f64>),
    Set(Box<Buckets<Set>>),
    Histogram(Box<HistogramState>),
    Distribution(Box<Buckets<Sketch>>),
}

impl State {
    fn for_input(input: Input) -> Self {
        match input {
            Input::Gauge(_) => Self::Gauge(Buckets::default()),
            Input::Counter(_) => Self::Counter(Counter {
                buckets: Buckets::default(),
                first: i64::MAX,
                last: i64::MIN,
            }),
            Input::Count(_) => Self::Count(Buckets::default()),
            Input::Set(_) => Self::Set(Box::default()),
            Input::Histogram(_) => Self::Histogram(Box::default()),
            Input::Distribution(_) => Self::Distribution(Box::default()),
        }
    }

    /// Adds a sample to the bucket starting at `bucket`. A sample of another type than the
    /// context's is refused (`false`) while the context has open buckets; otherwise the
    /// context takes the new type.
    pub(crate) fn add(&mut self, input: Input, rate: f64, bucket: i64) -> bool {
        match (&mut *self, input) {
            (Self::Gauge(b), Input::Gauge(v)) => *b.get(bucket) = v,
            (Self::Counter(c), Input::Counter(v)) => {
                *c.buckets.get(bucket) += v / rate;
                c.first = c.first.min(bucket);
                c.last = c.last.max(bucket);
            }
            (Self::Count(b), Input::Count(v)) => *b.get(bucket) += v,
            (Self::Set(b), Input::Set(hash)) => {
                b.get(bucket).0.insert(hash);
            }
            (Self::Histogram(h), Input::Histogram(v)) => h.buckets.get(bucket).add(v, rate),
            (Self::Distribution(b), Input::Distribution(v)) => {
                // A bin counts at most MAX_BIN_COUNT: rates below 1/65535 weigh as 1/65535.
                let weight = (1.0 / rate).min(f64::from(MAX_BIN_COUNT)) as u32;
                b.get(bucket).insert_n(v, weight);
            }
            (state, input) => {
                if !state.is_empty() {
                    return false;
                }
                *state = Self::for_input(input);
                return state.add(input, rate, bucket);
            }
        }
        true
    }

    /// Whether no bucket is open.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Gauge(b) | Self::Count(b) => b.is_empty(),
            Self::Counter(c) => c.buckets.is_empty(),
            Self::Set(b) => b.is_empty(),
            Self::Histogram(h) => h.buckets.is_empty(),
            Self::Distribution(b) => b.is_empty(),
        }
    }

    /// Whether the context has nothing left to flush at `cutoff`, counter zeros included.
    pub(crate) fn is_done(&self, cutoff: i64, counter_expiry: i64) -> bool {
        match self {
            Self::Counter(c) => {
                c.buckets.is_empty() && c.last.saturating_add(counter_expiry) < cutoff
            }
            other => other.is_empty(),
        }
    }

    /// Heap bytes held by this state (for memory estimates).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        match self {
            Self::Empty => 0,
            Self::Gauge(b) | Self::Count(b) => b.heap_bytes(|_| 0),
            Self::Counter(c) => c.buckets.heap_bytes(|_| 0),
            Self::Set(b) => {
                size_of::<Buckets<Set>>()
                    + b.heap_bytes(|s| s.0.capacity() * 8 / 7 * (1 + size_of::<u64>()))
            }
            Self::Histogram(h) => {
                size_of::<HistogramState>()
                    + h.buckets
                        .heap_bytes(|v| v.samples.capacity() * size_of::<(f64, u64)>())
            }
            Self::Distribution(b) => {
                size_of::<Buckets<Sketch>>() + b.heap_bytes(Sketch::heap_bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_context_state_is_small() {
        assert!(
            std::mem::size_of::<State>() <= 48,
            "{}",
            std::mem::size_of::<State>()
        );
    }

    #[test]
    fn buckets_drain_oldest_first_and_keep_open_ones() {
        let mut b: Buckets<f64> = Buckets::default();
        *b.get(20) += 2.0;
        *b.get(0) += 1.0;
        *b.get(30) += 3.0;
        *b.get(10) += 4.0;
        *b.get(20) += 2.0;
        let mut seen = Vec::new();
        b.drain_closed(30, |start, v| seen.push((start, *v)));
        assert_eq!(seen, [(0, 1.0), (10, 4.0), (20, 4.0)]);
        assert!(!b.is_empty());
        assert!(!b.has_closed(30));
        b.drain_closed(40, |start, v| seen.push((start, *v)));
        assert_eq!(seen.last(), Some(&(30, 3.0)));
        assert!(b.is_empty());
    }

    #[test]
    fn histogram_weights_follow_the_agent() {
        let mut h = Histogram::default();
        // 1/0.3 = 3.33: weight 3 for the count and percentiles, 3.33 for the sum.
        h.add(10.0, 0.3);
        h.add(1.0, 1.0);
        let mut out = Vec::new();
        h.values(
            &[
                HistogramAggregate::Count,
                HistogramAggregate::Sum,
                HistogramAggregate::Median,
            ],
            &[50],
            1.0,
            &mut out,
        );
        assert_eq!(out[0], 4.0);
        assert!((out[1] - (10.0 / 0.3 + 1.0)).abs() < 1e-9);
        assert_eq!(out[2], 10.0, "3 of 4 weights are 10");
        assert_eq!(out[3], 10.0);
    }

    #[test]
    fn a_type_change_waits_for_open_buckets_to_flush() {
        let mut s = State::default();
        assert!(s.add(Input::Gauge(1.0), 1.0, 0));
        assert!(!s.add(Input::Counter(1.0), 1.0, 0));
        let State::Gauge(b) = &mut s else {
            panic!("still a gauge")
        };
        b.drain_closed(10, |_, _| {});
        assert!(s.add(Input::Counter(1.0), 1.0, 10));
        assert!(matches!(s, State::Counter(_)));
    }
}
