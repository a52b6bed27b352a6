//! The aggregator's settings, with the Datadog Agent's defaults.
//!
//! Keys follow the Agent's `datadog.yaml` where it has one (`histogram_aggregates`,
//! `histogram_percentiles`, the 10 s bucket of `aggregator_bucket_size_seconds`, the 300 s of
//! `dogstatsd_expiry_seconds`), so a user's knowledge carries over. Unknown keys are refused,
//! as everywhere in Kennel's own config. `histogram_percentiles` takes the Agent's strings
//! (`["0.95"]`) as well as numbers.
//!
//! Limits with no Agent default exist so that memory stays bounded and shared fairly whatever
//! clients send: `max_contexts` (saluki's `dogstatsd_cached_contexts_limit`), of which
//! `max_check_contexts` are kept for check results, `max_contexts_per_origin` (one sender's or
//! one check instance's most: the Agent's `dogstatsd_context_limiter_limit`, off there by
//! default; see [`super::quota`]), and `max_pending`, the timestamped samples, service checks
//! and events held until the next flush. Past any, input is dropped and counted in
//! `kennel.aggregator.samples_dropped`.

use serde::Deserialize;

/// One of the values a histogram (or timer) is flushed as, besides its percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistogramAggregate {
    Max,
    Min,
    Median,
    Avg,
    Sum,
    /// Flushed as a rate: samples per second of the bucket.
    Count,
}

impl HistogramAggregate {
    /// The suffix added to the metric name: `.max`, `.count`, ...
    pub(crate) const fn suffix(self) -> &'static str {
        match self {
            Self::Max => ".max",
            Self::Min => ".min",
            Self::Median => ".median",
            Self::Avg => ".avg",
            Self::Sum => ".sum",
            Self::Count => ".count",
        }
    }
}

/// How samples are bucketed, flushed and forgotten.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// Width of a time bucket, in seconds: samples received between 10:00:00 and 10:00:10 are
    /// one point stamped 10:00:00. Defaults to 10.
    pub bucket_size_seconds: u64,
    /// Flush DogStatsD counters (`c`) as the bucket's count (type `count`) rather than as a
    /// per-second rate (type `rate`, the Agent's behaviour). Defaults to false.
    pub counters_as_count: bool,
    /// What a histogram or timer is flushed as, besides its percentiles. Defaults to
    /// `[max, median, avg, count]`.
    pub histogram_aggregates: Vec<HistogramAggregate>,
    /// Percentiles a histogram or timer is flushed as, each strictly between 0 and 1 and named
    /// by its hundredths (`0.95` gives `<name>.95percentile`). Defaults to `[0.95]`.
    #[serde(deserialize_with = "percentiles")]
    pub histogram_percentiles: Vec<f64>,
    /// Seconds without a sample after which a context is forgotten (its memory freed; it is
    /// created again by its next sample). Defaults to 20.
    pub context_expiry_seconds: u64,
    /// Seconds after its last sample during which a DogStatsD counter keeps being flushed as
    /// zero, so that a client that stops sending shows a drop to 0 rather than a gap. Defaults
    /// to 300.
    pub counter_expiry_seconds: u64,
    /// The most contexts held at once; a sample that would create one more is dropped.
    /// Defaults to 500000.
    pub max_contexts: usize,
    /// The part of `max_contexts` kept for check results: DogStatsD senders share the rest, so
    /// neither can starve the other. Defaults to a fifth of `max_contexts` (100000).
    pub max_check_contexts: Option<usize>,
    /// The most contexts one origin (a DogStatsD sender's container or host process, or a
    /// check instance) may hold. Defaults to half of `max_contexts` (250000): one large
    /// application may use most of the DogStatsD pool while it is idle otherwise, never all.
    pub max_contexts_per_origin: Option<usize>,
    /// The most timestamped samples, service checks and events held between two flushes;
    /// past it they are dropped. Defaults to 100000.
    pub max_pending: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            bucket_size_seconds: default_bucket_size_seconds(),
            counters_as_count: false,
            histogram_aggregates: default_histogram_aggregates(),
            histogram_percentiles: default_histogram_percentiles(),
            context_expiry_seconds: default_context_expiry_seconds(),
            counter_expiry_seconds: default_counter_expiry_seconds(),
            max_contexts: default_max_contexts(),
            max_check_contexts: None,
            max_contexts_per_origin: None,
            max_pending: default_max_pending(),
        }
    }
}

const fn default_bucket_size_seconds() -> u64 {
    10
}

fn default_histogram_aggregates() -> Vec<HistogramAggregate> {
    vec![
        HistogramAggregate::Max,
        HistogramAggregate::Median,
        HistogramAggregate::Avg,
        HistogramAggregate::Count,
    ]
}

fn default_histogram_percentiles() -> Vec<f64> {
    vec![0.95]
}

const fn default_context_expiry_seconds() -> u64 {
    20
}

const fn default_counter_expiry_seconds() -> u64 {
    300
}

const fn default_max_contexts() -> usize {
    500_000
}

const fn default_max_pending() -> usize {
    100_000
}

/// A setting the aggregator cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("aggregator: `bucket_size_seconds` is 0: set it to at least 1 (the Agent uses 10)")]
    ZeroBucket,
    #[error(
        "aggregator: `histogram_percentiles` has {0}, which is not strictly between 0 and 1: write e.g. 0.95 for the 95th percentile"
    )]
    Percentile(f64),
    #[error(
        "aggregator: `max_check_contexts` ({checks}) leaves nothing of `max_contexts` ({all}) for DogStatsD: make it smaller than `max_contexts`"
    )]
    CheckContexts { checks: usize, all: usize },
}

impl AggregatorConfig {
    /// Checks the settings; the aggregator refuses to start on an error.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket_size_seconds == 0 {
            return Err(ConfigError::ZeroBucket);
        }
        if let Some(&p) = self
            .histogram_percentiles
            .iter()
            .find(|&&p| !(p > 0.0 && p < 1.0) || percent(p) == 0 || percent(p) == 100)
        {
            return Err(ConfigError::Percentile(p));
        }
        if self.check_contexts() >= self.max_contexts {
            return Err(ConfigError::CheckContexts {
                checks: self.check_contexts(),
                all: self.max_contexts,
            });
        }
        Ok(())
    }

    /// `max_check_contexts`, or its default: a fifth of `max_contexts`.
    pub(super) fn check_contexts(&self) -> usize {
        self.max_check_contexts.unwrap_or(self.max_contexts / 5)
    }

    /// `max_contexts_per_origin`, or its default: half of `max_contexts`.
    pub(super) fn contexts_per_origin(&self) -> usize {
        self.max_contexts_per_origin
            .unwrap_or(self.max_contexts / 2)
    }

    /// The percentiles as whole hundredths, sorted and de-duplicated (what the Agent keeps).
    pub(super) fn percents(&self) -> Vec<u8> {
        let mut percents: Vec<u8> = self
            .histogram_percentiles
            .iter()
            .map(|&p| percent(p))
            .collect();
        percents.sort_unstable();
        percents.dedup();
        percents
    }
}

fn percent(p: f64) -> u8 {
    (p * 100.0).round().clamp(0.0, 100.0) as u8
}

/// Percentiles as numbers (`0.95`) or as the Agent's strings (`"0.95"`).
fn percentiles<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Percentile {
        Number(f64),
        Text(String),
    }
    Vec::<Percentile>::deserialize(d)?
        .into_iter()
        .map(|p| match p {
            Percentile::Number(n) => Ok(n),
            Percentile::Text(s) => s.trim().parse::<f64>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "`histogram_percentiles`: {s:?} is not a number (write e.g. \"0.95\")"
                ))
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_agents() {
        let c = AggregatorConfig::default();
        assert_eq!(c.bucket_size_seconds, 10);
        assert!(!c.counters_as_count);
        assert_eq!(c.histogram_percentiles, [0.95]);
        assert_eq!(c.counter_expiry_seconds, 300);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.percents(), [95]);
    }

    #[test]
    fn yaml_takes_agent_style_percentile_strings_and_refuses_unknown_keys() {
        let c: AggregatorConfig = serde_norway::from_str(
            "histogram_percentiles: [\"0.99\", 0.5]\nhistogram_aggregates: [min, sum]\n",
        )
        .expect("valid");
        assert_eq!(c.histogram_percentiles, [0.99, 0.5]);
        assert_eq!(
            c.histogram_aggregates,
            [HistogramAggregate::Min, HistogramAggregate::Sum]
        );
        assert_eq!(c.bucket_size_seconds, 10, "absent keys keep their defaults");
        let typo = serde_norway::from_str::<AggregatorConfig>("bucket_size_secs: 5\n");
        assert!(typo.is_err());
        let bad = serde_norway::from_str::<AggregatorConfig>("histogram_percentiles: [\"p95\"]\n");
        assert!(bad.is_err());
    }

    #[test]
    fn invalid_settings_are_refused_with_the_key_to_change() {
        let zero = AggregatorConfig {
            bucket_size_seconds: 0,
            ..AggregatorConfig::default()
        };
        assert!(
            zero.validate()
                .is_err_and(|e| e.to_string().contains("bucket_size_seconds"))
        );
        for p in [0.0, 1.0, 95.0, 0.001, f64::NAN] {
            let c = AggregatorConfig {
                histogram_percentiles: vec![p],
                ..AggregatorConfig::default()
            };
            assert!(
                matches!(c.validate(), Err(ConfigError::Percentile(_))),
                "{p} is refused"
            );
        }
    }
}
