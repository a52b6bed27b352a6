//! Aggregation: the maths between what checks submit and the series that leave the runner.
//!
//! For now this holds the check sampler, which turns the raw counters checks submit as `rate`
//! and `monotonic_count` into per-second rates and deltas. The shared bucket aggregator (for
//! DogStatsD and checks alike) will live beside it.

mod check_sampler;

pub use check_sampler::CheckSampler;
