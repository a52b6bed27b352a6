//! Rates and monotonic counters of one check instance, computed across its runs.
//!
//! Plugins are stateless (a fresh sandbox per run), so they submit raw counter values and the
//! host keeps the previous sample per context (name, tags, host), as the Datadog Agent's check
//! sampler does:
//! - `rate`: `(value - previous) / (t - t_previous)` submitted as a gauge; nothing on the first
//!   sample, and nothing (with a new baseline) when the counter went down, i.e. was reset;
//! - `monotonic_count`: `value - previous` submitted as a count, with the same first-sample and
//!   reset rules.
//!
//! A context not submitted for [`EXPIRY_RUNS`] consecutive runs is forgotten, so a check whose
//! tags churn cannot grow this map without bound.

use std::collections::HashMap;

use crate::check::{MetricType, RunReport};

/// Runs after which an unsubmitted context's previous sample is dropped.
pub(crate) const EXPIRY_RUNS: u64 = 10;

#[derive(Debug, Default)]
pub struct CheckSampler {
    previous: HashMap<ContextKey, Previous>,
    runs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContextKey {
    name: String,
    tags: Vec<String>,
    host: String,
}

#[derive(Debug, Clone, Copy)]
struct Previous {
    value: f64,
    timestamp: f64,
    run: u64,
}

impl CheckSampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the raw `rate` and `monotonic_count` samples of `report` by what they mean
    /// against the previous run: a gauge and a count, or nothing yet.
    pub fn process(&mut self, report: &mut RunReport) {
        self.runs += 1;
        let run = self.runs;
        let previous = &mut self.previous;
        report.metrics.retain_mut(|sample| {
            let kind = sample.kind;
            if !matches!(kind, MetricType::Rate | MetricType::MonotonicCount) {
                return true;
            }
            let key = ContextKey {
                name: sample.name.clone(),
                tags: sample.tags.clone(),
                host: sample.host.clone(),
            };
            let current = Previous {
                value: sample.value,
                timestamp: sample.timestamp,
                run,
            };
            let Some(before) = previous.insert(key, current) else {
                return false;
            };
            let delta = sample.value - before.value;
            if delta < 0.0 {
                return false;
            }
            match kind {
                MetricType::Rate => {
                    let elapsed = sample.timestamp - before.timestamp;
                    if elapsed <= 0.0 {
                        return false;
                    }
                    sample.kind = MetricType::Gauge;
                    sample.value = delta / elapsed;
                }
                _ => {
                    sample.kind = MetricType::Count;
                    sample.value = delta;
                }
            }
            true
        });
        self.previous.retain(|_, p| run - p.run < EXPIRY_RUNS);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::check::{MetricSample, ReportKind};

    fn report(samples: &[(&str, MetricType, f64, f64)]) -> RunReport {
        RunReport {
            instance_id: "c:0".into(),
            check: "c".into(),
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            metrics: samples
                .iter()
                .map(|&(name, kind, value, timestamp)| MetricSample {
                    name: name.into(),
                    kind,
                    value,
                    tags: vec!["a:1".into()],
                    host: "h".into(),
                    timestamp,
                })
                .collect(),
            service_checks: vec![],
            events: vec![],
            warnings: vec![],
            log_lines_suppressed: 0,
            error: None,
            kind: ReportKind::Run,
        }
    }

    #[test]
    fn rate_needs_two_samples_and_divides_by_elapsed_time() {
        let mut sampler = CheckSampler::new();
        let mut first = report(&[
            ("r", MetricType::Rate, 100.0, 10.0),
            ("g", MetricType::Gauge, 1.0, 10.0),
        ]);
        sampler.process(&mut first);
        assert_eq!(
            first.metrics.len(),
            1,
            "the first rate sample has no previous one"
        );
        let mut second = report(&[("r", MetricType::Rate, 130.0, 12.0)]);
        sampler.process(&mut second);
        assert_eq!(second.metrics[0].kind, MetricType::Gauge);
        assert_eq!(second.metrics[0].value, 15.0);
    }

    #[test]
    fn monotonic_count_submits_deltas_and_skips_resets() {
        let mut sampler = CheckSampler::new();
        for (value, expected) in [
            (10.0, None),
            (15.0, Some(5.0)),
            (3.0, None),
            (4.0, Some(1.0)),
        ] {
            let mut r = report(&[("m", MetricType::MonotonicCount, value, 1.0)]);
            sampler.process(&mut r);
            assert_eq!(
                r.metrics.first().map(|m| m.value),
                expected,
                "after {value}"
            );
            if let Some(m) = r.metrics.first() {
                assert_eq!(m.kind, MetricType::Count);
            }
        }
    }

    #[test]
    fn contexts_are_told_apart_by_tags() {
        let mut sampler = CheckSampler::new();
        let mut a = report(&[("m", MetricType::MonotonicCount, 10.0, 1.0)]);
        sampler.process(&mut a);
        let mut b = report(&[("m", MetricType::MonotonicCount, 20.0, 2.0)]);
        b.metrics[0].tags = vec!["a:2".into()];
        sampler.process(&mut b);
        assert!(b.metrics.is_empty(), "a different tag set is a new context");
    }

    #[test]
    fn unsubmitted_contexts_expire() {
        let mut sampler = CheckSampler::new();
        sampler.process(&mut report(&[("m", MetricType::MonotonicCount, 10.0, 1.0)]));
        for _ in 0..EXPIRY_RUNS {
            sampler.process(&mut report(&[]));
        }
        let mut later = report(&[("m", MetricType::MonotonicCount, 20.0, 2.0)]);
        sampler.process(&mut later);
        assert!(later.metrics.is_empty(), "the old baseline was forgotten");
    }
}
