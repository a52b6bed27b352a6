//! The pull endpoint: every aggregated series in the Prometheus text exposition format (0.0.4),
//! served at `/metrics` on `openmetrics_listen`, so Prometheus can scrape what the runner
//! aggregates.
//!
//! The store is a sink ([`crate::sink`]): its own thread takes each flush of the aggregator,
//! and scrapes read it ([`server`]: rendered off the async workers, at most once per flush,
//! the page shared by the scrapes in between). What the store keeps:
//! - gauges keep their last value;
//! - counts and rates become Prometheus *counters*: their totals (a rate point times its
//!   interval) are added up since the runner started, and exposed as `<name>_total`, so
//!   Prometheus's own `rate()` works on them as on any exporter's counter;
//! - distributions become *summaries*: `quantile` 0.5, 0.9, 0.95 and 0.99 of the last closed
//!   bucket, with `_sum` and `_count` added up since the start.
//! - service checks become gauges named `service_check_<name>` (`http.can_connect` gives
//!   `service_check_http_can_connect`), tagged as sent, valued with the Datadog
//!   status code of the latest one: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. The prefix keeps
//!   them apart from metrics a check may send under the same name.
//!
//! Names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*` (`.` and other characters become `_`).
//! A `key:value` tag becomes the label `key="value"` (several values of one key are joined with
//! `,`), a tag without a value becomes `key="true"`, and the host becomes the `host` label.
//! A series not updated for [`STALE_AFTER`] disappears from the page, and so, at once, does a
//! check's series or service check that the latest run of its instance did not emit
//! ([`Flush::retired`]; the aggregator's docs say why).
//!
//! Memory: the store is one flat map from a series' identity to its running values, and the
//! identity is the flushed series' own name, tags and host: `Arc<str>`s shared with the
//! aggregator's contexts, so the store copies no string. A series costs one 97-byte map slot
//! (56 for the key, 40 for the values, one control byte), 100 to 200 bytes with the map's
//! spare room; the store used to keep its own copies of every sanitised name and rendered
//! label set, and with 100,000 contexts `runner run` now needs 66 MiB instead of 113 MiB
//! (`tests/benches/dogstatsd.rs`). Names are sanitised and labels rendered when a scrape asks,
//! into one text buffer whose pieces are then sorted as bytes: a page of 100,000 series
//! (12 MB) renders in about 50 ms, as before. Two series that render alike (`a.b` and `a_b`, or
//! the tags `env:a,b` and `env:a`+`env:b`) are shown as one row, as Prometheus allows a name
//! and label set once: counters and summaries add up, a gauge shows the latest value.
//! Series of different types whose names render alike (a gauge `a.b` and a distribution `a_b`)
//! cannot share a name on the page, which gives each name one `TYPE`: the first type, in the
//! order gauge, counter, summary, keeps the name, and the others are left off the page (they
//! still reach the forwarder, which has no such rule).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aggregator::{Flush, Retired, SeriesKind, Tags};

mod server;

pub(crate) use server::{Page, serve};

/// How long a series stays on the page after its last update.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(300);
/// The quantiles a distribution shows.
pub(crate) const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Gauge,
    Counter,
    Summary,
}

impl Kind {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Summary => "summary",
        }
    }
}

/// Which series: the flushed series' name, tags and host, shared with the aggregator.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Arc<str>,
    tags: Tags,
    host: Arc<str>,
    kind: Kind,
}

impl Key {
    /// The characters of the metric's name on the page, without allocating it.
    fn page_name(&self) -> impl Iterator<Item = char> + '_ {
        let suffix = if self.kind == Kind::Counter {
            "_total"
        } else {
            ""
        };
        sanitized(&self.name).chain(suffix.chars())
    }
}

#[derive(Debug)]
struct Entry {
    /// A gauge's value, a counter's total, a summary's sum.
    value: f64,
    /// Summaries: the running count, and the quantiles of the last bucket.
    count: f64,
    quantiles: Option<Box<[f64; QUANTILES.len()]>>,
    updated: Instant,
}

/// The count a rate point stands for: `rate × interval`. A DogStatsD counter is flushed as
/// its count divided by the interval, and multiplying back can miss the count by an ulp
/// (7 increments in 10 s read back as 7.000000000000001); a product within a few ulps of a
/// whole number is that whole number, so integer counts stay exact on the page however long
/// they add up. A rate that is not a whole count (a check's 0.37/s) is kept as it is.
fn count_of(rate: f64, interval: u64) -> f64 {
    let total = rate * interval as f64;
    let whole = total.round();
    if (total - whole).abs() <= 4.0 * f64::EPSILON * whole.abs().max(1.0) {
        whole
    } else {
        total
    }
}

/// What a service check's name is prefixed with on the page, where it is a gauge.
const SERVICE_CHECK_PREFIX: &str = "service_check.";

/// A service check's series: `service_check.<name>`, its tags sorted without repeats.
fn service_check_key(name: &str, tags: &[String], host: &str) -> Key {
    let mut tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    Key {
        name: Arc::from(format!("{SERVICE_CHECK_PREFIX}{name}")),
        tags: tags.into_iter().map(Arc::from).collect(),
        host: Arc::from(host),
        kind: Kind::Gauge,
    }
}

/// The latest value of every series, as scrapes see it.
#[derive(Default)]
pub struct Store {
    series: HashMap<Key, Entry>,
}

impl Store {
    /// Takes in one flush of the aggregator.
    pub fn update(&mut self, flush: &Flush, now: Instant) {
        for series in &flush.series {
            let kind = match series.kind {
                SeriesKind::Gauge => Kind::Gauge,
                SeriesKind::Count | SeriesKind::Rate => Kind::Counter,
            };
            let entry = self.entry(&series.name, &series.tags, &series.host, kind, now);
            for point in &series.points {
                match series.kind {
                    SeriesKind::Gauge => entry.value = point.value,
                    SeriesKind::Count => entry.value += point.value,
                    SeriesKind::Rate => entry.value += count_of(point.value, series.interval),
                }
            }
        }
        for sketches in &flush.sketches {
            let entry = self.entry(
                &sketches.name,
                &sketches.tags,
                &sketches.host,
                Kind::Summary,
                now,
            );
            for point in &sketches.points {
                let sketch = &point.sketch;
                entry.value += sketch.sum();
                entry.count += sketch.count() as f64;
                entry.quantiles = (!sketch.is_empty()).then(|| {
                    let quantiles = QUANTILES.map(|q| sketch.quantile(q).unwrap_or(f64::NAN));
                    match entry.quantiles.take() {
                        Some(mut kept) => {
                            *kept = quantiles;
                            kept
                        }
                        None => Box::new(quantiles),
                    }
                });
            }
        }
        for check in &flush.service_checks {
            let key = service_check_key(&check.name, &check.tags, &check.host);
            let entry = self.entry(&key.name, &key.tags, &key.host, Kind::Gauge, now);
            entry.value = f64::from(check.status.code());
        }
        for retired in &flush.retired {
            match retired {
                Retired::Series { names, tags, host } => {
                    for name in names {
                        for kind in [Kind::Gauge, Kind::Counter, Kind::Summary] {
                            self.series.remove(&Key {
                                name: Arc::clone(name),
                                tags: Arc::clone(tags),
                                host: Arc::clone(host),
                                kind,
                            });
                        }
                    }
                }
                Retired::ServiceCheck { name, tags, host } => {
                    self.series.remove(&service_check_key(name, tags, host));
                }
            }
        }
        self.series
            .retain(|_, entry| now.duration_since(entry.updated) < STALE_AFTER);
        // After a burst of short-lived series, give the map's memory back.
        if self.series.capacity() > 1024 && self.series.len() < self.series.capacity() / 4 {
            self.series.shrink_to_fit();
        }
    }

    /// The entry of one series, created empty on first sight, marked updated at `now`.
    fn entry(
        &mut self,
        name: &Arc<str>,
        tags: &Tags,
        host: &Arc<str>,
        kind: Kind,
        now: Instant,
    ) -> &mut Entry {
        let key = Key {
            name: name.clone(),
            tags: tags.clone(),
            host: host.clone(),
            kind,
        };
        let entry = self.series.entry(key).or_insert(Entry {
            value: 0.0,
            count: 0.0,
            quantiles: None,
            updated: now,
        });
        entry.updated = now;
        entry
    }

    /// The page, in the Prometheus text format.
    pub fn render(&self) -> String {
        // Each series' name on the page and label set, rendered once into one buffer, so that
        // sorting compares bytes and a row costs no allocation of its own.
        let mut text = String::new();
        let mut scratch = Vec::new();
        let mut rows: Vec<Row<'_>> = Vec::with_capacity(self.series.len());
        for (key, entry) in &self.series {
            let start = text.len();
            text.extend(key.page_name());
            let name_end = text.len();
            labels(
                &mut text,
                &mut scratch,
                key.tags.iter().map(|t| &**t),
                &key.host,
            );
            rows.push(Row {
                key,
                entry,
                name: start..name_end,
                labels: name_end..text.len(),
            });
        }
        // Families together (by name on the page, then kind), rows by label set, and rows
        // that render alike next to each other, the latest last.
        let family = |row: &Row<'_>| (&text[row.name.clone()], row.key.kind);
        let labels = |row: &Row<'_>| &text[row.labels.clone()];
        rows.sort_unstable_by(|a, b| {
            family(a)
                .cmp(&family(b))
                .then_with(|| labels(a).cmp(labels(b)))
                .then(a.entry.updated.cmp(&b.entry.updated))
                .then_with(|| a.key.name.cmp(&b.key.name))
        });
        let mut out = String::with_capacity(text.len() + rows.len() * 24);
        let mut rest = &rows[..];
        let mut previous: Option<&str> = None;
        while let Some((first, _)) = rest.split_first() {
            let members = rest
                .iter()
                .position(|row| family(row) != family(first))
                .unwrap_or(rest.len());
            let (name, kind) = family(first);
            // A name is one family of one type: the first kind to claim it keeps it.
            if previous == Some(name) {
                rest = &rest[members..];
                continue;
            }
            previous = Some(name);
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&first.key.name));
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            let mut members_left = &rest[..members];
            while let Some((row, _)) = members_left.split_first() {
                let alike = members_left
                    .iter()
                    .position(|other| labels(other) != labels(row))
                    .unwrap_or(members_left.len());
                write_row(&mut out, name, kind, labels(row), &members_left[..alike]);
                members_left = &members_left[alike..];
            }
            rest = &rest[members..];
        }
        out
    }
}

/// One series as a scrape shows it: its name on the page and label set are ranges of the
/// render's text buffer.
struct Row<'a> {
    key: &'a Key,
    entry: &'a Entry,
    name: Range<usize>,
    labels: Range<usize>,
}

/// Writes one row (a summary's several lines) for series that render alike: counters and
/// summaries add up, a gauge and the quantiles are the latest series'.
fn write_row(out: &mut String, name: &str, kind: Kind, labels: &str, alike: &[Row<'_>]) {
    let Some(latest) = alike.last() else {
        return;
    };
    let value = match kind {
        Kind::Gauge => latest.entry.value,
        Kind::Counter | Kind::Summary => alike.iter().map(|row| row.entry.value).sum(),
    };
    match kind {
        Kind::Gauge | Kind::Counter => {
            let _ = writeln!(out, "{name}{} {}", Braces(labels, None), Number(value));
        }
        Kind::Summary => {
            if let Some(quantiles) = &latest.entry.quantiles {
                for (&q, &v) in QUANTILES.iter().zip(quantiles.iter()) {
                    let _ = writeln!(out, "{name}{} {}", Braces(labels, Some(q)), Number(v));
                }
            }
            let count: f64 = alike.iter().map(|row| row.entry.count).sum();
            let _ = writeln!(out, "{name}_sum{} {}", Braces(labels, None), Number(value));
            let _ = writeln!(
                out,
                "{name}_count{} {}",
                Braces(labels, None),
                Number(count)
            );
        }
    }
}

/// `name` as a Prometheus metric name.
#[cfg(test)]
fn sanitize(name: &str) -> String {
    sanitized(name).collect()
}

/// `name` as a Prometheus metric name, one character at a time.
pub(crate) fn sanitized(name: &str) -> impl Iterator<Item = char> + '_ {
    let prefix = (name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit())).then_some('_');
    prefix.into_iter().chain(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }))
}

/// A tag key as a label name: `[a-zA-Z0-9_]`, and `tag_` before one that would start with a
/// digit or `__` (reserved) or be empty.
fn label_name(key: &str) -> Cow<'_, str> {
    let reserved = |name: &str| {
        name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || name.starts_with("__")
    };
    if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !reserved(key) {
        return Cow::Borrowed(key);
    }
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
    if reserved(&name) {
        name.insert_str(0, "tag_");
    }
    Cow::Owned(name)
}

/// `text` escaped for a HELP line, where the format knows only `\\` and `\n` (an escaped
/// quote there makes the page invalid).
fn escape_help(text: &str) -> Cow<'_, str> {
    if !text.contains(['\\', '\n']) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace('\\', "\\\\").replace('\n', "\\n"))
}

/// `value` escaped for a label value.
fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

/// The labels of a series, into `scratch` (reused from series to series): one `(name, value)`
/// per tag and the host, sorted by name. Several values of one name are adjacent, in the tags'
/// order, and shown joined with `,`.
pub(crate) fn label_pairs<'a>(
    scratch: &mut Vec<(Cow<'a, str>, &'a str)>,
    tags: impl Iterator<Item = &'a str>,
    host: &'a str,
) {
    scratch.clear();
    for tag in tags {
        let (key, value) = tag.split_once(':').unwrap_or((tag, "true"));
        scratch.push((label_name(key), value));
    }
    if !host.is_empty() {
        scratch.push((Cow::Borrowed("host"), host));
    }
    // Stable: several values of one key keep the tags' order.
    scratch.sort_by(|a, b| a.0.cmp(&b.0));
}

/// Appends the label set of a series to `out`, sorted: `a="1",host="h"`. `scratch` is reused
/// from series to series.
fn labels<'a>(
    out: &mut String,
    scratch: &mut Vec<(Cow<'a, str>, &'a str)>,
    tags: impl Iterator<Item = &'a str>,
    host: &'a str,
) {
    label_pairs(scratch, tags, host);
    let mut previous: Option<&str> = None;
    for (key, value) in scratch.iter() {
        if previous == Some(&**key) {
            out.push(',');
        } else {
            if previous.is_some() {
                out.push_str("\",");
            }
            out.push_str(key);
            out.push_str("=\"");
            previous = Some(key);
        }
        out.push_str(&escape(value));
    }
    if previous.is_some() {
        out.push('"');
    }
}

/// A label set in braces, with a summary's `quantile` label; nothing when there are no labels.
struct Braces<'a>(&'a str, Option<f64>);

impl std::fmt::Display for Braces<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.is_empty(), self.1) {
            (true, None) => Ok(()),
            (false, None) => write!(f, "{{{}}}", self.0),
            (true, Some(q)) => write!(f, "{{quantile=\"{q}\"}}"),
            (false, Some(q)) => write!(f, "{{{},quantile=\"{q}\"}}", self.0),
        }
    }
}

/// A sample value: Prometheus spells the infinities `+Inf` and `-Inf`.
struct Number(f64);

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::{Point, Series, Sketch, SketchPoint, SketchSeries};

    #[test]
    fn names_and_labels_are_sanitised() {
        assert_eq!(sanitize("page.views-total"), "page_views_total");
        assert_eq!(sanitize("9lives"), "_9lives");
        let mut out = String::new();
        labels(
            &mut out,
            &mut Vec::new(),
            ["env:prod", "env:dev", "team.name:a\"b", "standalone", "9:x"].into_iter(),
            "h1",
        );
        assert_eq!(
            out,
            r#"env="prod,dev",host="h1",standalone="true",tag_9="x",team_name="a\"b""#
        );
    }

    fn series(name: &str, tags: &[&str], kind: SeriesKind, value: f64) -> Series {
        Series {
            name: name.into(),
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
            host: "".into(),
            kind,
            interval: 10,
            points: vec![Point {
                timestamp: 0,
                value,
            }],
        }
    }

    #[test]
    fn counts_flushed_as_rates_add_up_to_exact_whole_numbers() {
        // What the aggregator flushes for n increments in a 10 s bucket: n / 10 per second.
        for n in 1..=1000u32 {
            assert_eq!(count_of(f64::from(n) / 10.0, 10), f64::from(n), "{n}");
            assert_eq!(count_of(f64::from(n) / 15.0, 15), f64::from(n), "{n}");
        }
        let mut store = Store::default();
        for _ in 0..1000 {
            let flush = Flush {
                series: vec![series("app.hits", &[], SeriesKind::Rate, 0.7)],
                ..Flush::default()
            };
            store.update(&flush, Instant::now());
        }
        let total = store.series.values().next().map(|e| e.value);
        assert_eq!(total, Some(7000.0));
        assert!(
            (count_of(0.037, 10) - 0.37).abs() < 1e-12,
            "not a whole count"
        );
    }

    #[test]
    fn gauges_keep_the_last_value_counters_add_up_and_distributions_are_summaries() {
        let mut store = Store::default();
        let start = Instant::now();
        let mut sketch = Sketch::default();
        for v in 1..=100 {
            sketch.insert(f64::from(v));
        }
        let flush = |gauge, count| Flush {
            series: vec![
                series("app.temp", &["env:prod"], SeriesKind::Gauge, gauge),
                series("app.hits", &["env:prod"], SeriesKind::Count, count),
                series("app.rps", &[], SeriesKind::Rate, 0.5),
            ],
            sketches: vec![SketchSeries {
                name: "app.latency".into(),
                tags: Arc::from([]),
                host: "h1".into(),
                interval: 10,
                points: vec![SketchPoint {
                    timestamp: 0,
                    sketch: sketch.clone(),
                }],
            }],
            ..Flush::default()
        };
        store.update(&flush(3.0, 2.0), start);
        store.update(&flush(4.0, 5.0), start + Duration::from_secs(10));
        let page = store.render();
        let summary = |q: f64| sketch.quantile(q).unwrap();
        let expected = format!(
            "# HELP app_hits_total app.hits\n\
             # TYPE app_hits_total counter\n\
             app_hits_total{{env=\"prod\"}} 7\n\
             # HELP app_latency app.latency\n\
             # TYPE app_latency summary\n\
             app_latency{{host=\"h1\",quantile=\"0.5\"}} {}\n\
             app_latency{{host=\"h1\",quantile=\"0.9\"}} {}\n\
             app_latency{{host=\"h1\",quantile=\"0.95\"}} {}\n\
             app_latency{{host=\"h1\",quantile=\"0.99\"}} {}\n\
             app_latency_sum{{host=\"h1\"}} 10100\n\
             app_latency_count{{host=\"h1\"}} 200\n\
             # HELP app_rps_total app.rps\n\
             # TYPE app_rps_total counter\n\
             app_rps_total 10\n\
             # HELP app_temp app.temp\n\
             # TYPE app_temp gauge\n\
             app_temp{{env=\"prod\"}} 4\n",
            summary(0.5),
            summary(0.9),
            summary(0.95),
            summary(0.99)
        );
        assert_eq!(page, expected);

        store.update(
            &Flush::default(),
            start + Duration::from_secs(10) + STALE_AFTER,
        );
        assert_eq!(store.render(), "", "stale series are gone");
    }

    #[test]
    fn a_series_costs_the_map_slot_the_module_docs_say() {
        assert_eq!(size_of::<Key>() + size_of::<Entry>(), 56 + 40);
    }

    #[test]
    fn series_that_render_alike_are_one_row() {
        let mut store = Store::default();
        let start = Instant::now();
        store.update(
            &Flush {
                series: vec![
                    series("a.b", &["env:x,y"], SeriesKind::Count, 1.0),
                    series("a_b", &["env:x", "env:y"], SeriesKind::Count, 2.0),
                    series("g.g", &[], SeriesKind::Gauge, 1.0),
                ],
                ..Flush::default()
            },
            start,
        );
        store.update(
            &Flush {
                series: vec![series("g_g", &[], SeriesKind::Gauge, 2.0)],
                ..Flush::default()
            },
            start + Duration::from_secs(1),
        );
        let page = store.render();
        let rows: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rows, ["a_b_total{env=\"x,y\"} 3", "g_g 2"], "{page}");
        assert_eq!(page.matches("# TYPE").count(), 2, "{page}");
    }

    #[test]
    fn service_checks_are_gauges_of_their_latest_status_code() {
        use crate::check::{ServiceCheck, Status};
        let check = |status| ServiceCheck {
            name: "network.http.can_connect".into(),
            status,
            message: "connection refused".into(),
            tags: vec![
                "url:http://x".into(),
                "instance:a".into(),
                "url:http://x".into(),
            ],
            host: "h".into(),
            timestamp: 0.0,
        };
        let mut store = Store::default();
        let flush = Flush {
            series: vec![series(
                "network.http.can_connect",
                &[],
                SeriesKind::Gauge,
                1.0,
            )],
            service_checks: vec![check(Status::Ok), check(Status::Critical)],
            ..Flush::default()
        };
        store.update(&flush, Instant::now());
        let page = store.render();
        assert!(page.contains("network_http_can_connect 1\n"), "{page}");
        assert!(
            page.contains(
                "service_check_network_http_can_connect{host=\"h\",instance=\"a\",url=\"http://x\"} 2\n"
            ),
            "the latest status, CRITICAL:\n{page}"
        );

        // Retired in a later flush (the check's latest run did not send it), with the series
        // of the same name and tags in every type: none of them is shown any more.
        let retired = Flush {
            series: vec![series("kept", &[], SeriesKind::Gauge, 1.0)],
            retired: vec![
                Retired::ServiceCheck {
                    name: check(Status::Ok).name,
                    tags: check(Status::Ok).tags,
                    host: "h".into(),
                },
                Retired::Series {
                    names: Box::new(["network.http.can_connect".into()]),
                    tags: Arc::new([]),
                    host: "".into(),
                },
            ],
            ..Flush::default()
        };
        store.update(&retired, Instant::now());
        let page = store.render();
        assert!(!page.contains("can_connect"), "{page}");
        assert!(page.contains("kept 1\n"), "{page}");
    }

    /// Found by the property test below: a gauge `.` and a distribution `-` both render as
    /// `_`, and a page with two `TYPE` lines for one name is refused whole by Prometheus.
    #[test]
    fn a_name_claimed_by_two_types_is_kept_by_the_first() {
        let mut store = Store::default();
        let mut sketch = Sketch::default();
        sketch.insert(1.0);
        let flush = Flush {
            series: vec![
                series(".", &[], SeriesKind::Gauge, 1.0),
                series("a", &[], SeriesKind::Gauge, 2.0),
                series("a.total", &[], SeriesKind::Gauge, 3.0),
                series("a", &[], SeriesKind::Count, 4.0),
            ],
            sketches: vec![SketchSeries {
                name: "-".into(),
                tags: Arc::new([]),
                host: "".into(),
                interval: 10,
                points: vec![SketchPoint {
                    timestamp: 0,
                    sketch,
                }],
            }],
            ..Flush::default()
        };
        store.update(&flush, Instant::now());
        let page = store.render();
        let types: Vec<&str> = page.lines().filter(|l| l.starts_with("# TYPE")).collect();
        assert_eq!(
            types,
            ["# TYPE _ gauge", "# TYPE a gauge", "# TYPE a_total gauge"],
            "{page}"
        );
        assert!(page.contains("a_total 3\n"), "{page}");
    }

    /// A string of up to `max` characters, drawn to trip a renderer up: the characters the
    /// exposition format escapes or splits on, digits first, whitespace, control characters,
    /// non-ASCII, the tag separator.
    fn hostile(rng: &mut impl rand::Rng, max: usize) -> String {
        const PIECES: [&str; 24] = [
            "a",
            "Z",
            "_",
            "9",
            ".",
            "-",
            ":",
            ",",
            "=",
            "\"",
            "\\",
            "\n",
            "\r",
            "\t",
            " ",
            "{",
            "}",
            "#",
            "\u{0}",
            "é",
            "日本",
            "\u{1F600}",
            "_total",
            "le",
        ];
        let len = rng.random_range(0..=max);
        (0..len)
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    fn hostile_value(rng: &mut impl rand::Rng) -> f64 {
        match rng.random_range(0..8) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => f64::MAX,
            4 => f64::MIN_POSITIVE,
            5 => -0.0,
            6 => rng.random_range(-1e12..1e12),
            _ => f64::from(rng.random_range(0..1000_u32)),
        }
    }

    /// Property: whatever names, tags, hosts and values the aggregator flushes, the page is one
    /// `promtool check metrics` (Prometheus's own parser) accepts. Lint findings about naming
    /// conventions are the senders' names, kept; a format error fails. Seeded, so a failure
    /// replays; each round checks one page of 40 series of every kind.
    #[test]
    fn any_name_tag_or_value_renders_a_page_promtool_accepts() {
        use rand::{Rng as _, SeedableRng as _};
        let Ok(version) = std::process::Command::new("promtool")
            .arg("--version")
            .output()
        else {
            panic!("promtool is missing: tests/prepare-machine installs Debian's `prometheus`");
        };
        assert!(version.status.success());
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..150_u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut store = Store::default();
            let mut flush = Flush::default();
            for _ in 0..40 {
                let name = hostile(&mut rng, 12);
                let tags: Vec<String> = (0..rng.random_range(0..5))
                    .map(|_| hostile(&mut rng, 8))
                    .collect();
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                let kind = match rng.random_range(0..4) {
                    0 => SeriesKind::Gauge,
                    1 => SeriesKind::Count,
                    2 => SeriesKind::Rate,
                    _ => {
                        let mut sketch = Sketch::default();
                        for _ in 0..rng.random_range(1..20) {
                            sketch.insert(hostile_value(&mut rng));
                        }
                        flush.sketches.push(SketchSeries {
                            name: name.as_str().into(),
                            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
                            host: hostile(&mut rng, 6).into(),
                            interval: 10,
                            points: vec![SketchPoint {
                                timestamp: 0,
                                sketch,
                            }],
                        });
                        continue;
                    }
                };
                let mut s = series(&name, &tags, kind, hostile_value(&mut rng));
                s.host = hostile(&mut rng, 6).into();
                flush.series.push(s);
            }
            store.update(&flush, Instant::now());
            let page = store.render();
            let file = dir.path().join("page.txt");
            std::fs::write(&file, &page).unwrap();
            let out = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(&file).unwrap())
                .output()
                .unwrap();
            let findings = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !findings.to_lowercase().contains("error"),
                "seed {seed}: promtool refuses the page: {findings}\n{page}"
            );
        }
    }
}
