//! What a flush hands out: plain data for the forwarder (Datadog intake) and the OpenMetrics
//! endpoint alike.
//!
//! The shapes follow the intake's: a [`Series`] is a v2 series (name, tags, host, type,
//! interval, points); a [`SketchSeries`] is a sketch-payload entry whose points are the
//! Agent's dogsketches. Names, tags and hosts are shared `Arc<str>`s from the aggregator's
//! contexts, so a flush copies no strings. Service checks and events are the crate's own
//! [`ServiceCheck`] and [`Event`], passed through untouched.
//!
//! An empty host means the sample came without one; what to put there (the runner's hostname,
//! or nothing) is the consumer's decision, as it is for check samples.

use std::sync::Arc;

use super::context::Tags;
use super::sketch::Sketch;
use crate::check::{Event, ServiceCheck};

/// Everything closed since the previous flush.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flush {
    /// Gauges, counts and rates, the runner's own `kennel.*` telemetry included.
    pub series: Vec<Series>,
    /// Distributions.
    pub sketches: Vec<SketchSeries>,
    pub service_checks: Vec<ServiceCheck>,
    pub events: Vec<Event>,
    /// What checks stopped sending: series and service checks their latest run did not
    /// emit. A consumer that keeps values (the `/metrics` page) stops showing them; one that
    /// forwards points has nothing to do.
    pub retired: Vec<Retired>,
}

/// Something a check instance emitted before and its latest run did not.
#[derive(Debug, Clone, PartialEq)]
pub enum Retired {
    /// One context's series: its name, or a histogram's several (`.avg`, `.max`, ...).
    Series {
        names: Box<[Arc<str>]>,
        tags: Tags,
        host: Arc<str>,
    },
    /// A service check, as the check submitted it.
    ServiceCheck {
        name: String,
        tags: Vec<String>,
        host: String,
    },
}

/// The intake's metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesKind {
    Gauge,
    /// A total over `interval` seconds.
    Count,
    /// A per-second rate over `interval` seconds.
    Rate,
}

/// One value at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix seconds: the start of the bucket, or the sample's own timestamp if it was sent with
    /// one.
    pub timestamp: i64,
    pub value: f64,
}

/// The points of one context (and one suffix, for histograms) closed in this flush.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: Arc<str>,
    pub tags: Tags,
    /// Empty when sent without a host.
    pub host: Arc<str>,
    pub kind: SeriesKind,
    /// Seconds each point covers (the bucket size); 0 for samples sent with a timestamp, which
    /// are passed through without aggregation.
    pub interval: u64,
    /// In time order.
    pub points: Vec<Point>,
}

impl Series {
    /// The tags as `&str`s.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| &**t)
    }

    /// A series for tests: no host, a 10 s interval, `(timestamp, value)` points.
    #[cfg(test)]
    pub(crate) fn for_test(
        name: &str,
        tags: &[&str],
        kind: SeriesKind,
        points: &[(i64, f64)],
    ) -> Self {
        Self {
            name: name.into(),
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            host: "".into(),
            kind,
            interval: 10,
            points: points
                .iter()
                .map(|&(timestamp, value)| Point { timestamp, value })
                .collect(),
        }
    }
}

/// One bucket's sketch.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchPoint {
    /// Unix seconds: the start of the bucket.
    pub(crate) timestamp: i64,
    pub sketch: Sketch,
}

/// The sketches of one distribution context closed in this flush.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchSeries {
    pub name: Arc<str>,
    pub(crate) tags: Tags,
    /// Empty when sent without a host.
    pub(crate) host: Arc<str>,
    /// Seconds each sketch covers (the bucket size).
    pub(crate) interval: u64,
    /// In time order.
    pub points: Vec<SketchPoint>,
}

impl SketchSeries {
    /// The tags as `&str`s.
    #[cfg(test)]
    pub(crate) fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| &**t)
    }

    /// Sketches for tests: no host, a 10 s interval, `(timestamp, sketch)` points.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, tags: &[&str], points: Vec<(i64, Sketch)>) -> Self {
        Self {
            name: name.into(),
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            host: "".into(),
            interval: 10,
            points: points
                .into_iter()
                .map(|(timestamp, sketch)| SketchPoint { timestamp, sketch })
                .collect(),
        }
    }
}
