//! Aggregation: the maths between what checks and DogStatsD clients submit and the series that
//! leave the runner.
//!
//! Two stages, as in the Datadog Agent:
//! - [`CheckSampler`] turns the raw counters checks submit as `rate` and `monotonic_count` into
//!   per-second rates and deltas, per check instance;
//! - [`Aggregator`] (in `time_sampler`) is the one shared aggregator: it buckets DogStatsD
//!   samples and check results by context and time, and its [`Aggregator::flush`] hands the
//!   closed buckets to the forwarder and the OpenMetrics endpoint as plain data ([`Flush`]).
//!
//! Inside it: `context` resolves a sample's name, tags and host to a context without
//! allocating; `metric` holds each type's per-bucket state and flush maths; `sketch` is the
//! Agent's DDSketch for distributions; `config` is [`AggregatorConfig`]. The runner's own
//! `kennel.*` metrics ([`crate::telemetry`]) flow out through the same flush.

mod check_sampler;
mod config;
mod context;
mod flush;
mod metric;
mod quota;
pub(crate) mod service;
mod sketch;
mod time_sampler;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod throughput;

pub use check_sampler::CheckSampler;
pub use config::{AggregatorConfig, ConfigError, HistogramAggregate};
pub(crate) use context::Tags;
pub use flush::{Flush, Point, Retired, Series, SeriesKind, SketchPoint, SketchSeries};
pub(crate) use quota::{ContextsStatus, ContextsView, Owner, Pool};
pub use sketch::Sketch;
pub use time_sampler::Aggregator;
pub(crate) use time_sampler::{Sample, Value};
