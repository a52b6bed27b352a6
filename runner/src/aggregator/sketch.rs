//! The Datadog Agent's DDSketch: what a distribution (`d`) becomes within one bucket.
//!
//! Distributions are not reduced to a few numbers at the edge, as histograms are: the sketch
//! itself goes to the intake (`/api/beta/sketches`), which merges sketches from every host and
//! answers any percentile afterwards. So the sketch must be the Agent's own, bin for bin, or
//! merged results would drift between Kennel and Agent hosts. This is a fresh implementation
//! of the Agent's `pkg/quantile` (the same parameters as saluki's `ddsketch-agent` port, which is
//! not published on crates.io):
//!
//! - relative accuracy `eps = 1/128`, so `γ = 1 + 2·eps = 1.015625`;
//! - a value `v ≥ min` goes to key `round_half_even(ln v / ln γ) + bias`, with the bias chosen so
//!   that the smallest tracked value, `1e-9`, has key 1; smaller magnitudes share key 0, and a
//!   negative value gets the negated key of its magnitude;
//! - bins are kept sorted by key, each counting at most `u16::MAX` values (a fuller key gets
//!   another bin with the same key, as the Agent's sparse store does);
//! - at most 4096 bins: past that, the lowest bins are collapsed into one (the Agent's
//!   `trimLeft`), so it is the smallest values that lose accuracy, never the tail;
//! - `quantile` finds the bin holding the Agent's rank (`round_half_even(q·(n-1))`) and
//!   interpolates linearly inside it, clamped to the exact `min` and `max`. Unlike the Agent,
//!   which interpolates from a bin's centre to the next bin's centre (and the wrong way for
//!   negative values, a known TODO in `sparse.go`), it interpolates between the bin's true edges,
//!   `centre·γ^∓½`; the intake computes its own quantiles from the bins, so this only makes
//!   Kennel's local readings (OpenMetrics, tests) more accurate.
//!
//! Exact `count`, `min`, `max`, `sum` and `avg` are kept beside the bins: the intake's
//! dogsketch carries them.
//!
//! Missing: merging two sketches and the Agent's histogram-to-sketch interpolation (nothing in
//! Kennel needs them yet), and the Agent's 512-key insert buffer (inserts go straight to the
//! bins; a binary search over a few hundred 4-byte bins is cheap enough here).

/// Relative accuracy of the Agent's sketch.
const EPS: f64 = 1.0 / 128.0;
/// `γ = 1 + 2·EPS`: consecutive keys are this factor apart.
const GAMMA: f64 = 1.0 + 2.0 * EPS;
/// `√γ`: a bin spans from its centre divided by this to its centre multiplied by it.
const GAMMA_SQRT: f64 = 1.007_782_218_537_318_6;
/// `ln γ`, precomputed (checked against the formula by a test).
const GAMMA_LN: f64 = 0.015_504_186_535_965_254;
/// `1 - floor(ln 1e-9 / ln γ)`: makes the key of 1e-9, the smallest magnitude tracked on its
/// own key, 1.
const BIAS: i32 = 1338;
/// `γ^(1 - BIAS)`, the lower bound of key 1 (checked against the formula by a test).
const NORM_MIN: f64 = 9.941_854_089_121_45e-10;
/// The most bins a sketch keeps.
pub(crate) const BIN_LIMIT: usize = 4096;
/// The most values one bin counts.
pub(crate) const MAX_BIN_COUNT: u32 = u16::MAX as u32;
/// The key of `+∞` (and, negated, of `-∞`).
const MAX_KEY: i16 = i16::MAX;

/// One bin: how many values fell on `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bin {
    pub(crate) key: i16,
    pub(crate) count: u16,
}

/// A DDSketch with the Datadog Agent's parameters and layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    bins: Vec<Bin>,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new()
    }
}

impl Sketch {
    pub(crate) const fn new() -> Self {
        Self {
            bins: Vec::new(),
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }

    /// Adds one value. Non-finite values are ignored (the aggregator counts them as dropped
    /// before they get here).
    #[cfg(test)]
    pub(crate) fn insert(&mut self, value: f64) {
        self.insert_n(value, 1);
    }

    /// Adds `value` `n` times (a sample sent with `@rate` weighs `1/rate`).
    pub(crate) fn insert_n(&mut self, value: f64, n: u32) {
        if n == 0 || !value.is_finite() {
            return;
        }
        self.count += u64::from(n);
        self.sum += value * f64::from(n);
        self.min = self.min.min(value);
        self.max = self.max.max(value);

        let key = key(value);
        let mut remaining = n;
        let mut at = self.bins.partition_point(|b| b.key < key);
        while remaining > 0 && at < self.bins.len() && self.bins[at].key == key {
            let bin = &mut self.bins[at];
            let added = remaining.min(MAX_BIN_COUNT - u32::from(bin.count));
            bin.count += added as u16;
            remaining -= added;
            at += 1;
        }
        while remaining > 0 {
            let added = remaining.min(MAX_BIN_COUNT);
            self.bins.insert(
                at,
                Bin {
                    key,
                    count: added as u16,
                },
            );
            remaining -= added;
            at += 1;
        }
        if self.bins.len() > BIN_LIMIT {
            self.trim_left();
        }
    }

    /// Collapses the lowest bins into the lowest one kept, so that at most [`BIN_LIMIT`] remain.
    fn trim_left(&mut self) {
        let excess = self.bins.len() - BIN_LIMIT;
        let key = self.bins[excess].key;
        let mut total: u64 = self.bins[..=excess]
            .iter()
            .map(|b| u64::from(b.count))
            .sum();
        let mut merged = Vec::new();
        while total > 0 {
            let count = total.min(u64::from(MAX_BIN_COUNT));
            merged.push(Bin {
                key,
                count: count as u16,
            });
            total -= count;
        }
        self.bins.splice(..=excess, merged);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many values were inserted (weights included).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value inserted; `+∞` when empty.
    pub(crate) fn min(&self) -> f64 {
        self.min
    }

    /// The largest value inserted; `-∞` when empty.
    pub(crate) fn max(&self) -> f64 {
        self.max
    }

    /// The sum of the values inserted (weights included).
    pub(crate) fn sum(&self) -> f64 {
        self.sum
    }

    /// The mean of the values inserted; 0 when empty.
    pub(crate) fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The bins, sorted by key: the dogsketch's `k` and `n` arrays.
    pub(crate) fn bins(&self) -> &[Bin] {
        &self.bins
    }

    /// The value at quantile `q` (0 to 1), within the sketch's relative accuracy; `None` when
    /// empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        if q <= 0.0 {
            return Some(self.min);
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        // The Agent's rank: the value at position round(q·(n-1)) of the sorted values.
        let wanted = (q * (self.count - 1) as f64).round_ties_even();
        let mut seen = 0.0;
        let last = self.bins.len() - 1;
        for (i, bin) in self.bins.iter().enumerate() {
            seen += f64::from(bin.count);
            if seen <= wanted {
                continue;
            }
            let weight = (seen - wanted) / f64::from(bin.count);
            let centre = lower_bound(bin.key);
            let (mut low, mut high) = if centre < 0.0 {
                (centre * GAMMA_SQRT, centre / GAMMA_SQRT)
            } else {
                (centre / GAMMA_SQRT, centre * GAMMA_SQRT)
            };
            if i == 0 {
                low = self.min;
            }
            if i == last {
                high = self.max;
            }
            let value = low * weight + high * (1.0 - weight);
            return Some(value.clamp(self.min, self.max));
        }
        Some(self.max)
    }

    /// Empties the sketch, keeping its bins' allocation.
    pub(crate) fn clear(&mut self) {
        self.bins.clear();
        self.count = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.sum = 0.0;
    }

    /// Heap bytes held (for memory estimates).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<Bin>()
    }
}

/// The key of the bin `value` falls in.
pub(crate) fn key(value: f64) -> i16 {
    if value < 0.0 {
        return -key(-value);
    }
    if value.is_nan() || value < NORM_MIN {
        return 0;
    }
    let rounded = (value.ln() / GAMMA_LN).round_ties_even() as i64;
    rounded
        .saturating_add(i64::from(BIAS))
        .clamp(1, i64::from(MAX_KEY)) as i16
}

/// The representative value of the bin with key `key`: `γ^(key - bias)`, the centre of the
/// values that round to it (the Agent calls it the lower bound).
pub(crate) fn lower_bound(key: i16) -> f64 {
    match key {
        k if k < 0 => -lower_bound(-k),
        0 => 0.0,
        MAX_KEY => f64::INFINITY,
        k => GAMMA.powf(f64::from(i32::from(k) - BIAS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Agent's smallest magnitude tracked on its own key.
    const MIN_VALUE: f64 = 1e-9;

    #[test]
    fn precomputed_parameters_match_the_agents_formulas() {
        assert_eq!(GAMMA, 1.015625);
        assert_eq!(GAMMA_LN, (2.0 * EPS).ln_1p());
        assert_eq!(GAMMA_SQRT, GAMMA.sqrt());
        assert_eq!(BIAS, 1 - (MIN_VALUE.ln() / GAMMA_LN).floor() as i32);
        assert_eq!(NORM_MIN, GAMMA.powf(f64::from(1 - BIAS)));
        const { assert!(NORM_MIN <= MIN_VALUE) };
        assert_eq!(key(MIN_VALUE), 1);
    }

    #[test]
    fn keys_are_symmetric_and_zero_holds_tiny_magnitudes() {
        assert_eq!(key(0.0), 0);
        assert_eq!(key(1e-12), 0);
        assert_eq!(key(-1e-12), 0);
        assert_eq!(key(-5.0), -key(5.0));
        assert!(key(2.0) > key(1.0));
        assert_eq!(key(1.0), BIAS as i16);
    }

    #[test]
    fn every_value_is_within_the_relative_accuracy_of_its_bin() {
        let mut v = 1e-6;
        while v < 1e12 {
            let bound = lower_bound(key(v));
            let error = (bound - v).abs() / v;
            assert!(error <= EPS, "{v}: bin value {bound}, error {error}");
            v *= 1.37;
        }
    }

    #[test]
    fn summary_statistics_are_exact() {
        let mut sketch = Sketch::new();
        for v in [3.0, -1.0, 10.0, 0.0] {
            sketch.insert(v);
        }
        sketch.insert_n(2.0, 4);
        assert_eq!(sketch.count(), 8);
        assert_eq!(sketch.min(), -1.0);
        assert_eq!(sketch.max(), 10.0);
        assert_eq!(sketch.sum(), 20.0);
        assert_eq!(sketch.avg(), 2.5);
    }

    #[test]
    fn quantiles_of_a_uniform_range_are_within_one_percent() {
        let mut sketch = Sketch::new();
        for v in 1..=10_000 {
            sketch.insert(f64::from(v));
        }
        for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999] {
            let exact = (q * 9_999.0_f64).round() + 1.0;
            let estimate = sketch.quantile(q).unwrap_or(f64::NAN);
            let error = (estimate - exact).abs() / exact;
            assert!(error <= 0.01, "q{q}: {estimate} vs {exact} ({error})");
        }
        assert_eq!(sketch.quantile(0.0), Some(1.0));
        assert_eq!(sketch.quantile(1.0), Some(10_000.0));
    }

    #[test]
    fn quantiles_of_negative_values_are_within_one_percent() {
        let mut sketch = Sketch::new();
        for v in 1..=1000 {
            sketch.insert(-f64::from(v));
        }
        let median = sketch.quantile(0.5).unwrap_or(f64::NAN);
        assert!((median + 500.0).abs() / 500.0 <= 0.01, "{median}");
    }

    #[test]
    fn an_empty_sketch_has_no_quantiles() {
        assert_eq!(Sketch::new().quantile(0.5), None);
    }

    #[test]
    fn a_full_bin_overflows_into_another_bin_with_the_same_key() {
        let mut sketch = Sketch::new();
        sketch.insert_n(1.0, MAX_BIN_COUNT + 10);
        sketch.insert(1.0);
        let bins = sketch.bins();
        assert_eq!(bins.len(), 2);
        assert!(bins.iter().all(|b| b.key == key(1.0)));
        assert_eq!(
            bins.iter().map(|b| u64::from(b.count)).sum::<u64>(),
            u64::from(MAX_BIN_COUNT) + 11
        );
    }

    #[test]
    fn past_the_bin_limit_the_lowest_bins_collapse_and_counts_are_kept() {
        let mut sketch = Sketch::new();
        let mut v = 1e-6;
        let mut inserted = 0u64;
        while sketch.bins().len() < BIN_LIMIT || inserted < 6000 {
            sketch.insert(v);
            v *= GAMMA;
            inserted += 1;
        }
        assert_eq!(sketch.bins().len(), BIN_LIMIT);
        assert_eq!(
            sketch
                .bins()
                .iter()
                .map(|b| u64::from(b.count))
                .sum::<u64>(),
            inserted
        );
        assert!(sketch.bins().windows(2).all(|w| w[0].key <= w[1].key));
        // The tail keeps its accuracy.
        let p99 = sketch.quantile(0.99).unwrap_or(f64::NAN);
        let exact = 1e-6 * GAMMA.powf((0.99 * (inserted - 1) as f64).round());
        assert!((p99 - exact).abs() / exact <= 0.02, "{p99} vs {exact}");
    }

    #[test]
    fn clear_empties_but_keeps_the_allocation() {
        let mut sketch = Sketch::new();
        sketch.insert(1.0);
        sketch.insert(100.0);
        let capacity = sketch.heap_bytes();
        sketch.clear();
        assert!(sketch.is_empty());
        assert_eq!(sketch.heap_bytes(), capacity);
        assert_eq!(sketch, Sketch::new());
    }
}
