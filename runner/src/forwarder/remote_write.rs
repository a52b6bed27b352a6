//! Prometheus remote write 1.0: each flush as `WriteRequest`s, snappy-compressed (the block
//! format, as the protocol asks), at most [`MAX_SAMPLES`] samples a request.
//!
//! A receiver should see what a Prometheus scraping `/metrics` ([`crate::openmetrics`]) would
//! store, so names and labels are that page's, made by the same functions:
//! - gauges are gauges;
//! - counts and rates are counters named `<name>_total`: their totals (a rate point times its
//!   interval) added up since the series was first seen, one sample per point;
//! - distributions are summaries: `quantile` 0.5, 0.9, 0.95 and 0.99 of each sketch, and
//!   `<name>_sum` and `<name>_count` added up since first seen (histogram aggregates are
//!   series of their own in the flush already);
//! - names sanitised, a tag `key:value` the label `key="value"` (values of one key joined with
//!   `,`), the host the `host` label. Unlike the page, a series sent without a host gets the
//!   runner's hostname: a receiver gathers many hosts, and has no `instance` label to tell
//!   them apart. A label with an empty value is left out, as Prometheus treats it as absent.
//!
//! Samples carry their point's own timestamp (milliseconds), and labels are sorted by name,
//! `__name__` included. Prometheus refuses a whole request that holds a sample twice, and
//! samples older than the last one of their series, so:
//! - series that render alike (`a.b` and `a_b`, or the tags `env:a,b` and `env:a`+`env:b`) are
//!   one series, with one sample per timestamp: counters and sums add up, a gauge and
//!   quantiles take the last value in the flush;
//! - samples of a series are sent in time order, and one at or before the last sent for its
//!   series is left out and counted (`Unsent::out_of_order`); a counter's amount is not lost,
//!   it shows in its next sample;
//! - a series that renders like one of another type (a gauge `x_total` and a count `x`) is
//!   left out and counted (`Unsent::conflicting`): the type first seen keeps the name.
//!
//! Memory: a series' running state (its type, total, last timestamp) is kept under its
//! rendered labels (encoded as sent, so a request copies them as they are), about 200 bytes a
//! series with three tags, and forgotten after [`STALE_AFTER`] without a point, as the page
//! forgets it; a counter seen again starts from 0, which Prometheus reads as a counter reset.
//! Missing: remote write 2.0, metadata (`# HELP`/`# TYPE`), exemplars and native histograms.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::compress::{Serialized, Unsent};
use super::payload::{Encoding, Payload, Route};
use super::protobuf as pb;
use crate::aggregator::{Flush, SeriesKind};
use crate::openmetrics::{QUANTILES, STALE_AFTER, label_pairs, sanitized};

/// The most samples a request carries, as Prometheus' own `max_samples_per_send` default.
pub(crate) const MAX_SAMPLES: u32 = 2000;

/// What a rendered series is, and so how its samples are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The last value at each timestamp.
    Gauge,
    /// A running total (`_total`, `_sum`, `_count`).
    Counter,
    /// A summary's four `quantile` series: the last sketch's at each timestamp.
    Quantiles,
}

/// A rendered series' state, kept from flush to flush.
#[derive(Debug, Clone, Copy)]
struct Track {
    kind: Kind,
    /// A counter's total so far.
    total: f64,
    /// The timestamp of the last sample sent, in milliseconds.
    last_ms: i64,
    /// When a point last came.
    seen: Instant,
    /// The flush in which `group` is this series' group.
    generation: u64,
    group: u32,
}

/// A rendered series in this flush.
#[derive(Debug)]
struct Group {
    track: u32,
    /// Its labels, encoded, in the flush's label arena.
    labels: Range<usize>,
    /// Where in its labels the `quantile` label goes, for [`Kind::Quantiles`].
    quantile_at: usize,
}

/// One point's part in a group's samples.
#[derive(Debug, Clone, Copy)]
struct Contribution {
    group: u32,
    timestamp_ms: i64,
    /// A gauge's value, a counter's increase, or for quantiles the index of the sketch's
    /// quantiles in the flush's quantile list.
    value: f64,
    quantiles: u32,
}

/// Serializes flushes as remote-write requests. One per forwarder: it keeps the running
/// totals.
pub struct RemoteWriteSerializer {
    hostname: Arc<str>,
    /// Rendered labels → the series' slot in `tracks`.
    index: HashMap<Box<[u8]>, u32>,
    tracks: Vec<Track>,
    free: Vec<u32>,
    generation: u64,
    /// This flush's groups, their labels and their contributions.
    groups: Vec<Group>,
    arena: Vec<u8>,
    contributions: Vec<Contribution>,
    quantiles: Vec<[f64; QUANTILES.len()]>,
    /// The `quantile` label values, as the page shows them.
    quantile_values: [String; QUANTILES.len()],
    /// Scratch: one series' labels, name, joined label value, samples, and for quantiles the
    /// row of `quantiles` of each sample.
    key: Vec<u8>,
    name: String,
    joined: String,
    samples: Vec<(i64, f64)>,
    rows: Vec<u32>,
    /// The request being built, uncompressed, and its samples.
    request: Vec<u8>,
    request_samples: u32,
    snappy: snap::raw::Encoder,
    unsent: Unsent,
}

impl RemoteWriteSerializer {
    /// A serializer labelling what came without a host with `hostname`.
    pub fn new(hostname: Arc<str>) -> Self {
        Self {
            hostname,
            index: HashMap::new(),
            tracks: Vec::new(),
            free: Vec::new(),
            generation: 0,
            groups: Vec::new(),
            arena: Vec::new(),
            contributions: Vec::new(),
            quantiles: Vec::new(),
            quantile_values: QUANTILES.map(|q| q.to_string()),
            key: Vec::new(),
            name: String::new(),
            joined: String::new(),
            samples: Vec::new(),
            rows: Vec::new(),
            request: Vec::new(),
            request_samples: 0,
            snappy: snap::raw::Encoder::new(),
            unsent: Unsent::default(),
        }
    }

    /// Appends the requests of `flush` to `out`. Returns what could not be sent.
    pub(crate) fn serialize(&mut self, flush: &Flush, out: &mut Vec<Payload>) -> Unsent {
        self.serialize_at(flush, Instant::now(), out)
    }

    /// Serializes `flush` as [`Self::serialize`] does and tells what it made, without the
    /// payloads themselves: for load runs (`tests/benches/forward.rs`).
    pub fn serialize_counted(&mut self, flush: &Flush) -> Serialized {
        let mut out = Vec::new();
        let unsent = self.serialize(flush, &mut out);
        Serialized::of(&out, unsent)
    }

    /// [`Self::serialize`], at `now` (for the running state's age).
    pub(crate) fn serialize_at(
        &mut self,
        flush: &Flush,
        now: Instant,
        out: &mut Vec<Payload>,
    ) -> Unsent {
        self.generation += 1;
        self.groups.clear();
        self.arena.clear();
        self.contributions.clear();
        self.quantiles.clear();

        let hostname = self.hostname.clone();
        let mut pairs = Vec::new();
        for series in &flush.series {
            let (kind, suffix) = match series.kind {
                SeriesKind::Gauge => (Kind::Gauge, ""),
                SeriesKind::Count | SeriesKind::Rate => (Kind::Counter, "_total"),
            };
            let host = host_or(&series.host, &hostname);
            label_pairs(&mut pairs, series.tags(), host);
            let Some(group) = self.group(&series.name, suffix, &pairs, kind, now) else {
                self.unsent.conflicting += series.points.len() as u64;
                continue;
            };
            for point in &series.points {
                let value = match series.kind {
                    SeriesKind::Rate => point.value * series.interval as f64,
                    SeriesKind::Gauge | SeriesKind::Count => point.value,
                };
                self.contributions.push(Contribution {
                    group,
                    timestamp_ms: point.timestamp.saturating_mul(1000),
                    value,
                    quantiles: 0,
                });
            }
        }
        for sketches in &flush.sketches {
            let points = || sketches.points.iter().filter(|p| !p.sketch.is_empty());
            let carried = points().count();
            if carried == 0 {
                continue;
            }
            let host = host_or(&sketches.host, &hostname);
            label_pairs(&mut pairs, sketches.tags.iter().map(|t| &**t), host);
            let members = [
                ("", Kind::Quantiles),
                ("_sum", Kind::Counter),
                ("_count", Kind::Counter),
            ]
            .map(|(suffix, kind)| self.group(&sketches.name, suffix, &pairs, kind, now));
            let [Some(quantiles), Some(sum), Some(count)] = members else {
                self.unsent.conflicting += carried as u64;
                continue;
            };
            for point in points() {
                let timestamp_ms = point.timestamp.saturating_mul(1000);
                let sketch = &point.sketch;
                let index = self.quantiles.len() as u32;
                self.quantiles
                    .push(QUANTILES.map(|q| sketch.quantile(q).unwrap_or(f64::NAN)));
                for (group, value) in [
                    (quantiles, 0.0),
                    (sum, sketch.sum()),
                    (count, sketch.count() as f64),
                ] {
                    self.contributions.push(Contribution {
                        group,
                        timestamp_ms,
                        value,
                        quantiles: index,
                    });
                }
            }
        }

        // Each group's contributions together, in time order, and in flush order within one
        // timestamp. Mostly sorted already: only merged series move.
        let mut contributions = std::mem::take(&mut self.contributions);
        contributions.sort_by_key(|c| (c.group, c.timestamp_ms));
        let mut rest = &contributions[..];
        while let Some(first) = rest.first() {
            let len = rest
                .iter()
                .position(|c| c.group != first.group)
                .unwrap_or(rest.len());
            let (mine, others) = rest.split_at(len);
            rest = others;
            self.emit_group(mine, out);
        }
        self.contributions = contributions;
        self.finish_request(out);
        self.forget_stale(now);
        std::mem::take(&mut self.unsent)
    }

    /// The group of the series rendered from `name` + `suffix` and `pairs`, made on first
    /// sight in this flush; `None` when that series has another kind.
    fn group(
        &mut self,
        name: &str,
        suffix: &str,
        pairs: &[(Cow<'_, str>, &str)],
        kind: Kind,
        now: Instant,
    ) -> Option<u32> {
        self.name.clear();
        self.name.extend(sanitized(name));
        self.name.push_str(suffix);
        let quantile_at = encode_labels(
            &mut self.key,
            &mut self.joined,
            &self.name,
            pairs,
            kind == Kind::Quantiles,
        );
        let slot = match self.index.get(&self.key[..]) {
            Some(&slot) => slot,
            None => {
                let track = Track {
                    kind,
                    total: 0.0,
                    last_ms: i64::MIN,
                    seen: now,
                    generation: 0,
                    group: 0,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.tracks[slot as usize] = track;
                        slot
                    }
                    None => {
                        self.tracks.push(track);
                        (self.tracks.len() - 1) as u32
                    }
                };
                self.index.insert(Box::from(&self.key[..]), slot);
                slot
            }
        };
        let track = &mut self.tracks[slot as usize];
        if track.kind != kind {
            return None;
        }
        track.seen = now;
        if track.generation != self.generation {
            track.generation = self.generation;
            track.group = self.groups.len() as u32;
            let start = self.arena.len();
            self.arena.extend_from_slice(&self.key);
            self.groups.push(Group {
                track: slot,
                labels: start..self.arena.len(),
                quantile_at,
            });
        }
        Some(track.group)
    }

    /// The samples of one group, from its contributions (in time order).
    fn emit_group(&mut self, contributions: &[Contribution], out: &mut Vec<Payload>) {
        let Some(first) = contributions.first() else {
            return;
        };
        let group = &self.groups[first.group as usize];
        let track = &mut self.tracks[group.track as usize];
        self.samples.clear();
        self.rows.clear();
        let mut rest = contributions;
        while let Some(head) = rest.first() {
            let len = rest
                .iter()
                .position(|c| c.timestamp_ms != head.timestamp_ms)
                .unwrap_or(rest.len());
            let (same, others) = rest.split_at(len);
            rest = others;
            let ts = head.timestamp_ms;
            let fresh = ts > track.last_ms;
            match track.kind {
                Kind::Counter => {
                    track.total += same.iter().map(|c| c.value).sum::<f64>();
                    if fresh {
                        self.samples.push((ts, track.total));
                    }
                }
                Kind::Gauge | Kind::Quantiles => {
                    let last = same[same.len() - 1];
                    if !fresh {
                        self.unsent.out_of_order += 1;
                    } else if track.kind == Kind::Gauge {
                        self.samples.push((ts, last.value));
                    } else {
                        self.samples.push((ts, 0.0));
                        self.rows.push(last.quantiles);
                    }
                }
            }
            if fresh {
                track.last_ms = ts;
            }
        }
        if self.samples.is_empty() {
            return;
        }
        let labels = group.labels.clone();
        let quantile_at = group.quantile_at;
        if track.kind != Kind::Quantiles {
            let samples = std::mem::take(&mut self.samples);
            self.emit_series(labels, None, &samples, out);
            self.samples = samples;
            return;
        }
        for q in 0..QUANTILES.len() {
            let mut samples = std::mem::take(&mut self.samples);
            for (sample, &row) in samples.iter_mut().zip(&self.rows) {
                sample.1 = self.quantiles[row as usize][q];
            }
            self.emit_series(labels.clone(), Some((quantile_at, q)), &samples, out);
            self.samples = samples;
        }
    }

    /// Writes one series' samples into requests, starting new ones as they fill.
    fn emit_series(
        &mut self,
        labels: Range<usize>,
        quantile: Option<(usize, usize)>,
        samples: &[(i64, f64)],
        out: &mut Vec<Payload>,
    ) {
        let mut rest = samples;
        while !rest.is_empty() {
            if self.request_samples == MAX_SAMPLES {
                self.finish_request(out);
            }
            let room = (MAX_SAMPLES - self.request_samples) as usize;
            let (now, later) = rest.split_at(room.min(rest.len()));
            rest = later;
            let buf = &mut self.request;
            let series = pb::begin(buf, 1);
            let encoded = &self.arena[labels.clone()];
            match quantile {
                None => buf.extend_from_slice(encoded),
                Some((at, q)) => {
                    buf.extend_from_slice(&encoded[..at]);
                    label(buf, "quantile", &self.quantile_values[q]);
                    buf.extend_from_slice(&encoded[at..]);
                }
            }
            for &(timestamp, value) in now {
                let sample = pb::begin(buf, 2);
                pb::double(buf, 1, value);
                pb::int64(buf, 2, timestamp);
                pb::end(buf, sample);
            }
            pb::end(buf, series);
            self.request_samples += now.len() as u32;
        }
    }

    /// Compresses the request being built, if it has samples, and appends it to `out`.
    fn finish_request(&mut self, out: &mut Vec<Payload>) {
        if self.request_samples == 0 {
            return;
        }
        let mut body = vec![0; snap::raw::max_compress_len(self.request.len())];
        match self.snappy.compress(&self.request, &mut body) {
            Ok(len) => {
                // Sized exactly, as queued payloads must be (see `compress::Stream::finish`).
                body.truncate(len);
                body.shrink_to_fit();
                out.push(Payload {
                    route: Route::RemoteWrite,
                    encoding: Encoding::Snappy,
                    body: Bytes::from(body),
                    items: self.request_samples,
                });
            }
            Err(error) => {
                tracing::warn!(%error, samples = self.request_samples, "snappy compression failed: the remote-write request is lost");
                self.unsent.failed += u64::from(self.request_samples);
            }
        }
        self.request.clear();
        self.request_samples = 0;
    }

    /// Forgets the series without a point for [`STALE_AFTER`].
    fn forget_stale(&mut self, now: Instant) {
        let tracks = &self.tracks;
        let free = &mut self.free;
        self.index.retain(|_, &mut slot| {
            let fresh = now.duration_since(tracks[slot as usize].seen) < STALE_AFTER;
            if !fresh {
                free.push(slot);
            }
            fresh
        });
        // After a burst of short-lived series, give the memory back.
        if self.index.capacity() > 1024 && self.index.len() < self.index.capacity() / 4 {
            self.index.shrink_to_fit();
        }
        if self.free.len() > 1024 && self.free.len() > self.tracks.len() / 2 {
            self.compact();
        }
    }

    /// Moves the live tracks to the front, so the free slots can be given back.
    fn compact(&mut self) {
        let mut tracks = Vec::with_capacity(self.index.len());
        for slot in self.index.values_mut() {
            tracks.push(self.tracks[*slot as usize]);
            *slot = (tracks.len() - 1) as u32;
        }
        self.tracks = tracks;
        self.free = Vec::new();
    }
}

/// The host to label with: `host`, or the runner's hostname when it is empty.
fn host_or<'a>(host: &'a str, hostname: &'a str) -> &'a str {
    if host.is_empty() { hostname } else { host }
}

/// One `Label`, as `TimeSeries.labels`.
fn label(buf: &mut Vec<u8>, name: &str, value: &str) {
    let label = pb::begin(buf, 1);
    pb::string(buf, 1, name);
    pb::string(buf, 2, value);
    pb::end(buf, label);
}

/// Encodes the labels of a series into `key` (cleared first): `__name__` = `name` and `pairs`
/// (sorted by name, several values of one name joined with `,` through `joined`), all sorted
/// by name, empty values left out. With `quantiles`, a tag label named `quantile` is left out
/// too, as the summary's own takes its place: returns where that one goes.
fn encode_labels(
    key: &mut Vec<u8>,
    joined: &mut String,
    name: &str,
    pairs: &[(Cow<'_, str>, &str)],
    quantiles: bool,
) -> usize {
    key.clear();
    let mut name_written = false;
    let mut quantile_at = None;
    let mut rest = pairs;
    while let Some((label_name, first)) = rest.first() {
        let len = rest
            .iter()
            .position(|(n, _)| n != label_name)
            .unwrap_or(rest.len());
        let (same, others) = rest.split_at(len);
        rest = others;
        if !name_written && "__name__" < &**label_name {
            label(key, "__name__", name);
            name_written = true;
        }
        if quantiles && quantile_at.is_none() && "quantile" <= &**label_name {
            quantile_at = Some(key.len());
            if label_name == "quantile" {
                continue;
            }
        }
        let value = if same.len() == 1 {
            *first
        } else {
            joined.clear();
            for (i, (_, value)) in same.iter().enumerate() {
                if i > 0 {
                    joined.push(',');
                }
                joined.push_str(value);
            }
            joined.as_str()
        };
        if !value.is_empty() {
            label(key, label_name, value);
        }
    }
    if !name_written {
        label(key, "__name__", name);
    }
    quantile_at.unwrap_or(key.len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message as _;

    use super::*;
    use crate::aggregator::{Series, Sketch, SketchSeries};
    use crate::forwarder::schema;

    const HOSTNAME: &str = "runner-host";

    /// What was sent: each series as its labels (`name=value`, in order) and its samples.
    type Sent = Vec<(Vec<String>, Vec<(i64, f64)>)>;

    fn series_flush(series: Vec<Series>) -> Flush {
        Flush {
            series,
            ..Flush::default()
        }
    }

    /// Every request decoded.
    fn decode(out: &[Payload]) -> Sent {
        let mut all = Vec::new();
        for payload in out {
            assert_eq!(
                (payload.route, payload.encoding),
                (Route::RemoteWrite, Encoding::Snappy)
            );
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&payload.body)
                .unwrap();
            let request = schema::WriteRequest::decode(&raw[..]).unwrap();
            let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
            assert_eq!(samples, payload.items as usize);
            assert!(payload.items <= MAX_SAMPLES);
            for series in request.timeseries {
                let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
                assert!(
                    names.windows(2).all(|w| w[0] < w[1]),
                    "sorted, once each: {names:?}"
                );
                all.push((
                    series
                        .labels
                        .iter()
                        .map(|l| format!("{}={}", l.name, l.value))
                        .collect(),
                    series
                        .samples
                        .iter()
                        .map(|s| (s.timestamp, s.value))
                        .collect(),
                ));
            }
        }
        all
    }

    fn send(serializer: &mut RemoteWriteSerializer, flush: &Flush, now: Instant) -> (Sent, Unsent) {
        let mut out = Vec::new();
        let unsent = serializer.serialize_at(flush, now, &mut out);
        (decode(&out), unsent)
    }

    fn labels(labels: &[&str]) -> Vec<String> {
        labels.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn names_and_labels_are_the_metrics_pages() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let mut hosted = Series::for_test(
            "app.temp",
            &[
                "Zone:eu",
                "team.name:a\"b",
                "env:prod",
                "env:dev",
                "bare",
                "empty:",
            ],
            SeriesKind::Gauge,
            &[(1000, 21.5)],
        );
        hosted.host = "web-1".into();
        let flush = series_flush(vec![
            hosted,
            Series::for_test("9lives", &[], SeriesKind::Count, &[(1000, 2.0)]),
            Series::for_test("app.rps", &["__x:1"], SeriesKind::Rate, &[(1000, 0.5)]),
        ]);
        let (sent, unsent) = send(&mut serializer, &flush, Instant::now());
        assert_eq!(unsent, Unsent::default());
        assert_eq!(
            sent,
            [
                (
                    labels(&[
                        "Zone=eu",
                        "__name__=app_temp",
                        "bare=true",
                        "env=prod,dev",
                        "host=web-1",
                        "team_name=a\"b"
                    ]),
                    vec![(1_000_000, 21.5)]
                ),
                (
                    labels(&["__name__=_9lives_total", "host=runner-host"]),
                    vec![(1_000_000, 2.0)]
                ),
                (
                    labels(&["__name__=app_rps_total", "host=runner-host", "tag___x=1"]),
                    vec![(1_000_000, 5.0)]
                ),
            ]
        );
    }

    #[test]
    fn counts_and_rates_add_up_across_flushes_and_start_over_once_forgotten() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let start = Instant::now();
        let flush = |t: i64, count: f64| {
            series_flush(vec![
                Series::for_test("hits", &[], SeriesKind::Count, &[(t, count), (t + 10, 1.0)]),
                Series::for_test("rps", &[], SeriesKind::Rate, &[(t, 0.5)]),
            ])
        };
        let totals = |sent: Sent| -> Vec<Vec<f64>> {
            sent.into_iter()
                .map(|(_, s)| s.into_iter().map(|(_, v)| v).collect())
                .collect()
        };
        let (sent, _) = send(&mut serializer, &flush(1000, 2.0), start);
        assert_eq!(totals(sent), [vec![2.0, 3.0], vec![5.0]]);
        let (sent, _) = send(
            &mut serializer,
            &flush(1020, 4.0),
            start + Duration::from_secs(20),
        );
        assert_eq!(totals(sent), [vec![7.0, 8.0], vec![10.0]]);
        // Forgotten after STALE_AFTER without a point: memory is given back, and the totals
        // start over (a counter reset, to Prometheus).
        let later = start + Duration::from_secs(20) + STALE_AFTER;
        send(&mut serializer, &Flush::default(), later);
        assert!(serializer.index.is_empty());
        let (sent, _) = send(&mut serializer, &flush(5000, 4.0), later);
        assert_eq!(totals(sent), [vec![4.0, 5.0], vec![5.0]]);
    }

    #[test]
    fn series_that_render_alike_are_merged_into_one_per_request() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let flush = series_flush(vec![
            Series::for_test(
                "a.b",
                &["env:x,y"],
                SeriesKind::Count,
                &[(1000, 1.0), (1010, 1.0)],
            ),
            Series::for_test("g.g", &[], SeriesKind::Gauge, &[(1000, 1.0)]),
            Series::for_test(
                "a_b",
                &["env:x", "env:y"],
                SeriesKind::Count,
                &[(1000, 2.0), (1020, 5.0)],
            ),
            Series::for_test("g_g", &[], SeriesKind::Gauge, &[(1000, 2.0), (1010, 3.0)]),
        ]);
        let (sent, unsent) = send(&mut serializer, &flush, Instant::now());
        assert_eq!(unsent, Unsent::default());
        assert_eq!(
            sent,
            [
                (
                    labels(&["__name__=a_b_total", "env=x,y", "host=runner-host"]),
                    vec![(1_000_000, 3.0), (1_010_000, 4.0), (1_020_000, 9.0)]
                ),
                (
                    labels(&["__name__=g_g", "host=runner-host"]),
                    vec![(1_000_000, 2.0), (1_010_000, 3.0)]
                ),
            ]
        );
    }

    #[test]
    fn a_series_named_like_one_of_another_type_is_counted_not_sent() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let flush = series_flush(vec![
            Series::for_test("x", &[], SeriesKind::Count, &[(1000, 1.0)]),
            Series::for_test(
                "x_total",
                &[],
                SeriesKind::Gauge,
                &[(1000, 5.0), (1010, 6.0)],
            ),
        ]);
        let (sent, unsent) = send(&mut serializer, &flush, Instant::now());
        assert_eq!(unsent.conflicting, 2);
        assert_eq!(
            sent,
            [(
                labels(&["__name__=x_total", "host=runner-host"]),
                vec![(1_000_000, 1.0)]
            )]
        );
    }

    #[test]
    fn samples_at_or_before_the_last_sent_are_held_back() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let now = Instant::now();
        send(
            &mut serializer,
            &series_flush(vec![
                Series::for_test("g", &[], SeriesKind::Gauge, &[(1000, 1.0)]),
                Series::for_test("c", &[], SeriesKind::Count, &[(1000, 1.0)]),
            ]),
            now,
        );
        let (sent, unsent) = send(
            &mut serializer,
            &series_flush(vec![
                Series::for_test(
                    "g",
                    &[],
                    SeriesKind::Gauge,
                    &[(990, 7.0), (1000, 8.0), (1010, 9.0)],
                ),
                Series::for_test("c", &[], SeriesKind::Count, &[(990, 5.0)]),
            ]),
            now,
        );
        assert_eq!(unsent.out_of_order, 2);
        assert_eq!(
            sent,
            [(
                labels(&["__name__=g", "host=runner-host"]),
                vec![(1_010_000, 9.0)]
            )]
        );
        // The count's 5 was not lost: it shows in its next sample.
        let (sent, _) = send(
            &mut serializer,
            &series_flush(vec![Series::for_test(
                "c",
                &[],
                SeriesKind::Count,
                &[(1010, 1.0)],
            )]),
            now,
        );
        assert_eq!(
            sent,
            [(
                labels(&["__name__=c_total", "host=runner-host"]),
                vec![(1_010_000, 7.0)]
            )]
        );
    }

    #[test]
    fn distributions_are_summaries_with_cumulative_sum_and_count() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let mut sketch = Sketch::default();
        for v in 1..=100 {
            sketch.insert(f64::from(v));
        }
        let flush = Flush {
            sketches: vec![SketchSeries {
                host: "web-1".into(),
                ..SketchSeries::for_test(
                    "app.latency",
                    &["env:prod", "quantile:9", "zone:b"],
                    vec![
                        (1000, sketch.clone()),
                        (1010, sketch.clone()),
                        (1020, Sketch::default()),
                    ],
                )
            }],
            ..Flush::default()
        };
        let (sent, unsent) = send(&mut serializer, &flush, Instant::now());
        assert_eq!(unsent, Unsent::default());
        let mut expected: Sent = QUANTILES
            .iter()
            .map(|&q| {
                let value = sketch.quantile(q).unwrap();
                (
                    labels(&[
                        "__name__=app_latency",
                        "env=prod",
                        "host=web-1",
                        &format!("quantile={q}"),
                        "zone=b",
                    ]),
                    vec![(1_000_000, value), (1_010_000, value)],
                )
            })
            .collect();
        expected.push((
            labels(&[
                "__name__=app_latency_sum",
                "env=prod",
                "host=web-1",
                "quantile=9",
                "zone=b",
            ]),
            vec![(1_000_000, 5050.0), (1_010_000, 10_100.0)],
        ));
        expected.push((
            labels(&[
                "__name__=app_latency_count",
                "env=prod",
                "host=web-1",
                "quantile=9",
                "zone=b",
            ]),
            vec![(1_000_000, 100.0), (1_010_000, 200.0)],
        ));
        assert_eq!(sent, expected);
    }

    #[test]
    fn requests_split_at_2000_samples_with_each_series_in_time_order() {
        let mut serializer = RemoteWriteSerializer::new(HOSTNAME.into());
        let mut all = vec![Series::for_test(
            "long",
            &[],
            SeriesKind::Gauge,
            &(0..3000).map(|t| (t, t as f64)).collect::<Vec<_>>(),
        )];
        all.extend(
            (0..1500)
                .map(|i| Series::for_test(&format!("s{i}"), &[], SeriesKind::Gauge, &[(5, 1.0)])),
        );
        let mut out = Vec::new();
        let unsent = serializer.serialize_at(&series_flush(all), Instant::now(), &mut out);
        assert_eq!(unsent, Unsent::default());
        assert_eq!(
            out.iter().map(|p| p.items).collect::<Vec<_>>(),
            [2000, 2000, 500]
        );
        let sent = decode(&out);
        let long: Vec<(i64, f64)> = sent
            .iter()
            .filter(|(l, _)| l[0] == "__name__=long")
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        assert_eq!(
            long,
            (0..3000).map(|t| (t * 1000, t as f64)).collect::<Vec<_>>()
        );
        assert_eq!(sent.len(), 2 + 1500, "the long series is split once");
    }
}
