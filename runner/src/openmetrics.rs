//! The pull endpoint: every aggregated series in the Prometheus text exposition format (0.0.4),
//! served at `/metrics` on `openmetrics_listen`, so Prometheus can scrape what the runner
//! aggregates.
//!
//! Each flush of the aggregator updates a store that scrapes read:
//! - gauges keep their last value;
//! - counts and rates become Prometheus *counters*: their totals (a rate point times its
//!   interval) are added up since the runner started, and exposed as `<name>_total`, so
//!   Prometheus's own `rate()` works on them as on any exporter's counter;
//! - distributions become *summaries*: `quantile` 0.5, 0.9, 0.95 and 0.99 of the last closed
//!   bucket, with `_sum` and `_count` added up since the start.
//!
//! Names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*` (`.` and other characters become `_`).
//! A `key:value` tag becomes the label `key="value"` (several values of one key are joined with
//! `,`), a tag without a value becomes `key="true"`, and the host becomes the `host` label.
//! A series not updated for [`STALE_AFTER`] disappears from the page.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::aggregator::{Flush, SeriesKind};

/// How long a series stays on the page after its last update.
pub const STALE_AFTER: Duration = Duration::from_secs(300);
/// The quantiles a distribution shows.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Gauge,
    Counter,
    Summary,
}

#[derive(Debug, Default)]
struct Family {
    /// The name as sent (`page.views`), for the HELP line.
    original: String,
    series: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: f64,
    /// Summaries: the quantiles of the last bucket, and the running count.
    quantiles: Vec<(f64, f64)>,
    count: f64,
    updated: Instant,
}

/// The latest value of every series, as scrapes see it.
#[derive(Default)]
pub struct Store {
    /// Metric name (sanitised) and kind → the original name, and label set (rendered) → entry.
    families: BTreeMap<(String, Kind), Family>,
}

impl Store {
    /// Takes in one flush of the aggregator.
    pub fn update(&mut self, flush: &Flush, now: Instant) {
        for series in &flush.series {
            let (kind, name) = match series.kind {
                SeriesKind::Gauge => (Kind::Gauge, sanitize(&series.name)),
                SeriesKind::Count | SeriesKind::Rate => {
                    (Kind::Counter, format!("{}_total", sanitize(&series.name)))
                }
            };
            let labels = labels(series.tags(), &series.host);
            let entry = self.entry(name, kind, &series.name, labels, now);
            entry.updated = now;
            for point in &series.points {
                match series.kind {
                    SeriesKind::Gauge => entry.value = point.value,
                    SeriesKind::Count => entry.value += point.value,
                    SeriesKind::Rate => entry.value += point.value * series.interval as f64,
                }
            }
        }
        for sketches in &flush.sketches {
            let labels = labels(sketches.tags(), &sketches.host);
            let name = sanitize(&sketches.name);
            let entry = self.entry(name, Kind::Summary, &sketches.name, labels, now);
            entry.updated = now;
            for point in &sketches.points {
                entry.value += point.sketch.sum();
                entry.count += point.sketch.count() as f64;
                entry.quantiles = QUANTILES
                    .iter()
                    .filter_map(|&q| point.sketch.quantile(q).map(|v| (q, v)))
                    .collect();
            }
        }
        for family in self.families.values_mut() {
            family
                .series
                .retain(|_, entry| now.duration_since(entry.updated) < STALE_AFTER);
        }
        self.families.retain(|_, family| !family.series.is_empty());
    }

    /// The entry of one series, created empty on first sight.
    fn entry(
        &mut self,
        name: String,
        kind: Kind,
        original: &str,
        labels: String,
        now: Instant,
    ) -> &mut Entry {
        let family = self.families.entry((name, kind)).or_default();
        if family.original.is_empty() {
            family.original = original.to_owned();
        }
        family.series.entry(labels).or_insert(Entry {
            value: 0.0,
            quantiles: Vec::new(),
            count: 0.0,
            updated: now,
        })
    }

    /// The page, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((name, kind), family) in &self.families {
            let kind_name = match kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
                Kind::Summary => "summary",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape(&family.original));
            let _ = writeln!(out, "# TYPE {name} {kind_name}");
            let mut rows: Vec<_> = family.series.iter().collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, entry) in rows {
                match kind {
                    Kind::Gauge | Kind::Counter => {
                        let _ = writeln!(out, "{name}{} {}", braces(labels), number(entry.value));
                    }
                    Kind::Summary => {
                        for (q, v) in &entry.quantiles {
                            let with_q = join_labels(labels, &format!("quantile=\"{q}\""));
                            let _ = writeln!(out, "{name}{} {}", braces(&with_q), number(*v));
                        }
                        let _ =
                            writeln!(out, "{name}_sum{} {}", braces(labels), number(entry.value));
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            braces(labels),
                            number(entry.count)
                        );
                    }
                }
            }
        }
        out
    }
}

/// A store shared by the aggregator (writer) and the HTTP endpoint (reader).
pub type SharedStore = Arc<Mutex<Store>>;

/// `name` as a Prometheus metric name.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || name.starts_with("__") {
        name.insert_str(0, "tag_");
    }
    name
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The label set of a series, rendered and sorted: `a="1",host="h"`.
fn labels<'a>(tags: impl Iterator<Item = &'a str>, host: &str) -> String {
    let mut by_key: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for tag in tags {
        let (key, value) = tag.split_once(':').unwrap_or((tag, "true"));
        by_key.entry(label_name(key)).or_default().push(value);
    }
    if !host.is_empty() {
        by_key.entry("host".to_owned()).or_default().push(host);
    }
    let mut out = String::new();
    for (key, values) in by_key {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{key}=\"{}\"", escape(&values.join(",")));
    }
    out
}

fn join_labels(labels: &str, extra: &str) -> String {
    if labels.is_empty() {
        extra.to_owned()
    } else {
        format!("{labels},{extra}")
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_sanitised() {
        assert_eq!(sanitize("page.views-total"), "page_views_total");
        assert_eq!(sanitize("9lives"), "_9lives");
        assert_eq!(
            labels(
                ["env:prod", "env:dev", "team.name:a\"b", "standalone"].into_iter(),
                "h1"
            ),
            r#"env="prod,dev",host="h1",standalone="true",team_name="a\"b""#
        );
    }
}
