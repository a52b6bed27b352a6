//! The circuit breaker in front of each endpoint, as the Datadog Agent's
//! (`blocked_endpoints.go`, `pkg/util/backoff`): after a failure the endpoint is *blocked* for
//! a backoff, then *half-open*: one request is tried, and only its success lets the queue flow
//! again. The backoff after the n-th consecutive error is `base·2^(n-1)`, capped at `max`,
//! drawn at random in `[b/2, b]` so that many runners behind one intake do not retry in step.
//! A success takes [`RECOVERY_INTERVAL`] off the error count rather than clearing it, so an
//! endpoint that fails every other request keeps backing off. The count stops growing once
//! the backoff reaches its cap (the Agent's `MaxErrors`): after a long outage, a few successes
//! bring the waits back down.

use std::time::Duration;

use rand::Rng as _;

/// Errors a success forgives (the Agent's `forwarder_recovery_interval`).
const RECOVERY_INTERVAL: u32 = 2;

#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    base: f64,
    max: f64,
    errors: u32,
    /// The count at which the backoff reaches `max`.
    max_errors: u32,
}

impl Breaker {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        let base = base.as_secs_f64();
        let max = max.as_secs_f64().max(base);
        Self {
            base,
            max,
            errors: 0,
            max_errors: ((max / base).log2().ceil() as u32).saturating_add(1),
        }
    }

    /// Records a failure; returns how long to stay blocked.
    pub(crate) fn failure(&mut self) -> Duration {
        self.errors = self.errors.saturating_add(1).min(self.max_errors);
        let ceiling = self.ceiling();
        let wait = if ceiling >= self.max {
            self.max
        } else {
            rand::rng().random_range(ceiling / 2.0..=ceiling)
        };
        Duration::from_secs_f64(wait)
    }

    /// Records a success.
    pub(crate) fn success(&mut self) {
        self.errors = self.errors.saturating_sub(RECOVERY_INTERVAL);
    }

    /// The longest wait the current error count can draw.
    fn ceiling(&self) -> f64 {
        let exponent = self.errors.saturating_sub(1).min(62);
        (self.base * f64::from(1u32 << exponent.min(31))).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter_below_it() {
        let mut breaker = Breaker::new(Duration::from_secs(2), Duration::from_secs(64));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let wait = breaker.failure().as_secs_f64();
            let ceiling = breaker.ceiling();
            assert!(
                wait <= ceiling && wait >= ceiling / 2.0,
                "{wait} in [{}, {ceiling}]",
                ceiling / 2.0
            );
            ceilings.push(ceiling);
        }
        assert_eq!(ceilings, [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 64.0, 64.0]);
        assert_eq!(
            breaker.failure(),
            Duration::from_secs(64),
            "no jitter at the cap"
        );
    }

    #[test]
    fn after_a_long_outage_a_few_successes_bring_the_backoff_down() {
        let mut breaker = Breaker::new(Duration::from_secs(2), Duration::from_secs(64));
        for _ in 0..1000 {
            breaker.failure();
        }
        assert_eq!(breaker.errors, 6, "2·2^5 = 64: the count stops at the cap");
        breaker.success();
        breaker.success();
        breaker.failure();
        assert_eq!(breaker.ceiling(), 8.0);
    }

    #[test]
    fn a_success_forgives_two_errors() {
        let mut breaker = Breaker::new(Duration::from_secs(2), Duration::from_secs(64));
        for _ in 0..5 {
            breaker.failure();
        }
        breaker.success();
        assert_eq!(breaker.errors, 3);
        breaker.success();
        breaker.success();
        assert_eq!(breaker.errors, 0);
        breaker.failure();
        assert_eq!(breaker.ceiling(), 2.0, "back to the base");
    }
}
