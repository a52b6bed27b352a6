//! The Datadog intake's payloads, as the Agent sends them (`pkg/serializer` in
//! DataDog/datadog-agent), from one flush:
//!
//! | route | body | an entry | limits (compressed, uncompressed, items) |
//! |---|---|---|---|
//! | `/api/v2/series` | `MetricPayload` protobuf | a `MetricSeries` | 512000, 5242880, 10000 points |
//! | `/api/v1/series` | `{"series":[…]}` | `{"metric","points":[[ts,v]],"tags","host","type","interval"}` | 2.5 MiB, 4 MiB |
//! | `/api/beta/sketches` | `SketchPayload` protobuf | a `Sketch` with its `Dogsketch`es | 2.5 MiB, 4 MiB |
//! | `/api/v1/check_run` | a JSON array | `{"check","host_name","timestamp","status","message","tags"}` | 2.5 MiB, 4 MiB |
//! | `/intake/` | `{"apiKey":"","events":{<source type>:[…]},"internalHostname"}` | an event | 2.5 MiB, 4 MiB |
//!
//! The limits are the Agent's defaults (`serializer_max_series_payload_size`,
//! `serializer_max_series_uncompressed_payload_size`, `serializer_max_series_points_per_payload`,
//! `serializer_max_payload_size`, `serializer_max_uncompressed_payload_size`). Each route is a
//! [`Stream`], which starts a new payload when the next entry would pass one; an entry that
//! cannot fit even alone is left out and counted ([`Unsent`]), as the Agent drops it.
//!
//! What is copied from the Agent, detail by detail:
//! - an empty host is the runner's hostname (the Agent fills it in at aggregation);
//! - a `device:<name>` tag leaves the tags and becomes the series' device: a
//!   `{type: "device"}` resource in v2, the `device` field in v1. A
//!   `dd.internal.resource:<type>:<name>` tag becomes a resource in v2 and is dropped in v1;
//! - v2 metric types are `COUNT` 1, `RATE` 2, `GAUGE` 3; every series and sketch carries the
//!   origin metadata `{origin_product: 10}` (the Agent); its category and service stay 0
//!   (unknown), since a flush does not say whether a series came from DogStatsD or a check;
//! - each sketch payload ends with an empty `metadata` field, as gogoproto writes it;
//! - events are grouped by source type name (`api` when none); `priority`, `alert_type`,
//!   `aggregation_key` and `source_type_name` are left out when empty, `tags` when there are
//!   none; a service check without tags has `"tags":null`.
//!
//! Where Kennel differs: JSON cannot carry NaN or the infinities, so v1 points with such values
//! are left out and counted (`Unsent::not_finite`); the Agent's encoder would fail the whole
//! payload. Protobuf carries them as they are. Empty sketches (no values) are not sent.
//!
//! Entries are written by hand ([`super::protobuf`], and a small JSON writer here) into one
//! scratch buffer reused from entry to entry, from the flush's own strings.
//!
//! Missing: a series' `unit` and `source_type_name` (a flush carries neither), the origin's
//! category and service, the Agent's unindexed (`NoIndex`) series, and the newer
//! `/api/v2/events` and `/api/v2/service_checks` routes (the Agent itself still uses the ones
//! above).

use std::io::Write as _;
use std::sync::Arc;

use super::compress::{Compressor, Limits, Refused, Serialized, Stream, Unsent};
use super::payload::{Payload, Route};
use super::protobuf as pb;
use crate::aggregator::{Flush, Series, SeriesKind, SketchSeries};
use crate::check::{AlertType, Event, Priority, ServiceCheck};

/// `serializer_max_series_payload_size`, `serializer_max_series_uncompressed_payload_size`
/// and `serializer_max_series_points_per_payload`.
pub(crate) const SERIES_LIMITS: Limits = Limits {
    compressed: 512_000,
    uncompressed: 5_242_880,
    items: 10_000,
};

/// `serializer_max_payload_size` and `serializer_max_uncompressed_payload_size`: every other
/// payload.
pub(crate) const PAYLOAD_LIMITS: Limits = Limits {
    compressed: 2_621_440,
    uncompressed: 4_194_304,
    items: u32::MAX,
};

/// The origin product the Agent puts on its series and sketches.
const ORIGIN_PRODUCT_AGENT: u64 = 10;
/// The tag that becomes a series' device.
const DEVICE_TAG: &str = "device:";
/// The tag that becomes a v2 series' resource: `dd.internal.resource:<type>:<name>`.
const RESOURCE_TAG: &str = "dd.internal.resource:";

/// What the intake gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatadogFormat {
    /// Series as `/api/v2/series` protobuf (`use_v2_api.series`), else `/api/v1/series` JSON.
    pub v2_series: bool,
    /// `serializer_compressor_kind`.
    pub compressor: Compressor,
}

/// Serializes flushes for the Datadog intake. One per forwarder, kept from flush to flush
/// with its compression contexts and buffers.
pub struct DatadogSerializer {
    hostname: Arc<str>,
    v2_series: bool,
    series: Stream,
    sketches: Stream,
    checks: Stream,
    events: Stream,
    /// One entry being written.
    entry: Vec<u8>,
    /// Events in the order they are sent: by source type.
    event_order: Vec<usize>,
    /// What was left out before reaching a stream.
    unsent: Unsent,
}

impl DatadogSerializer {
    /// A serializer sending `hostname` for what came without a host.
    pub fn new(format: DatadogFormat, hostname: Arc<str>) -> Self {
        let compressor = format.compressor;
        let series = if format.v2_series {
            Stream::new(
                Route::SeriesV2,
                compressor,
                SERIES_LIMITS,
                Vec::new(),
                b"",
                Vec::new(),
            )
        } else {
            Stream::new(
                Route::SeriesV1,
                compressor,
                PAYLOAD_LIMITS,
                b"{\"series\":[".to_vec(),
                b",",
                b"]}".to_vec(),
            )
        };
        // The empty `metadata` (field 2) every sketch payload ends with.
        let mut sketch_footer = Vec::new();
        let metadata = pb::begin(&mut sketch_footer, 2);
        pb::end(&mut sketch_footer, metadata);
        let mut events_footer = b"]},\"internalHostname\":".to_vec();
        json_string(&mut events_footer, &hostname);
        events_footer.push(b'}');
        Self {
            series,
            sketches: Stream::new(
                Route::Sketches,
                compressor,
                PAYLOAD_LIMITS,
                Vec::new(),
                b"",
                sketch_footer,
            ),
            checks: Stream::new(
                Route::CheckRun,
                compressor,
                PAYLOAD_LIMITS,
                b"[".to_vec(),
                b",",
                b"]".to_vec(),
            ),
            events: Stream::new(
                Route::Intake,
                compressor,
                PAYLOAD_LIMITS,
                b"{\"apiKey\":\"\",\"events\":{".to_vec(),
                b"",
                events_footer,
            ),
            hostname,
            v2_series: format.v2_series,
            entry: Vec::new(),
            event_order: Vec::new(),
            unsent: Unsent::default(),
        }
    }

    /// Appends the payloads of `flush` to `out`: series, then sketches, service checks and
    /// events. Returns what could not be put in any payload.
    pub(crate) fn serialize(&mut self, flush: &Flush, out: &mut Vec<Payload>) -> Unsent {
        for series in &flush.series {
            if self.v2_series {
                self.series_v2(series, out);
            } else {
                self.series_v1(series, out);
            }
        }
        self.series.finish(out);
        for sketches in &flush.sketches {
            self.sketch(sketches, out);
        }
        self.sketches.finish(out);
        for check in &flush.service_checks {
            self.entry.clear();
            service_check(&mut self.entry, check, &self.hostname);
            self.checks.push(&self.entry, 1, out);
        }
        self.checks.finish(out);
        self.events(&flush.events, out);
        self.events.finish(out);

        let mut unsent = std::mem::take(&mut self.unsent);
        for stream in [
            &mut self.series,
            &mut self.sketches,
            &mut self.checks,
            &mut self.events,
        ] {
            unsent.add(stream.take_unsent());
        }
        unsent
    }

    /// Serializes `flush` as [`Self::serialize`] does and tells what it made, without the
    /// payloads themselves: for load runs (`tests/benches/forward.rs`).
    pub fn serialize_counted(&mut self, flush: &Flush) -> Serialized {
        let mut out = Vec::new();
        let unsent = self.serialize(flush, &mut out);
        Serialized::of(&out, unsent)
    }

    /// One `MetricPayload.series` entry.
    fn series_v2(&mut self, series: &Series, out: &mut Vec<Payload>) {
        if series.points.is_empty() {
            return;
        }
        let host = host_or(&series.host, &self.hostname);
        let buf = &mut self.entry;
        buf.clear();
        let message = pb::begin(buf, 1);
        let resource = pb::begin(buf, 1);
        pb::string(buf, 1, "host");
        pb::string(buf, 2, host);
        pb::end(buf, resource);
        for tag in series.tags() {
            if let Some(device) = tag.strip_prefix(DEVICE_TAG) {
                let resource = pb::begin(buf, 1);
                pb::string(buf, 1, "device");
                pb::string(buf, 2, device);
                pb::end(buf, resource);
            } else if let Some((kind, name)) = tag
                .strip_prefix(RESOURCE_TAG)
                .and_then(|r| r.split_once(':'))
                .filter(|(kind, name)| !kind.is_empty() && !name.is_empty())
            {
                let resource = pb::begin(buf, 1);
                pb::string(buf, 1, kind);
                pb::string(buf, 2, name);
                pb::end(buf, resource);
            }
        }
        pb::string(buf, 2, &series.name);
        for tag in series.tags().filter(|t| !is_special_tag(t)) {
            pb::string(buf, 3, tag);
        }
        for point in &series.points {
            let message = pb::begin(buf, 4);
            pb::double(buf, 1, point.value);
            pb::int64(buf, 2, point.timestamp);
            pb::end(buf, message);
        }
        pb::uint64(buf, 5, metric_type(series.kind));
        pb::uint64(buf, 8, series.interval);
        origin_metadata(buf, 9);
        pb::end(buf, message);
        let points = u32::try_from(series.points.len()).unwrap_or(u32::MAX);
        self.series.push(&self.entry, points, out);
    }

    /// One `{"series":[…]}` entry.
    fn series_v1(&mut self, series: &Series, out: &mut Vec<Payload>) {
        let finite = series.points.iter().filter(|p| p.value.is_finite()).count();
        let not_finite = series.points.len() - finite;
        self.unsent.not_finite += not_finite as u64;
        if finite == 0 {
            return;
        }
        let host = host_or(&series.host, &self.hostname);
        let buf = &mut self.entry;
        buf.clear();
        buf.extend_from_slice(b"{\"metric\":");
        json_string(buf, &series.name);
        buf.extend_from_slice(b",\"points\":[");
        for (i, point) in series
            .points
            .iter()
            .filter(|p| p.value.is_finite())
            .enumerate()
        {
            if i > 0 {
                buf.push(b',');
            }
            let _ = write!(buf, "[{},", point.timestamp);
            json_number(buf, point.value);
            buf.push(b']');
        }
        buf.extend_from_slice(b"],\"tags\":[");
        for (i, tag) in series.tags().filter(|t| !is_special_tag(t)).enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            json_string(buf, tag);
        }
        buf.extend_from_slice(b"],\"host\":");
        json_string(buf, host);
        if let Some(device) = series.tags().find_map(|t| t.strip_prefix(DEVICE_TAG)) {
            buf.extend_from_slice(b",\"device\":");
            json_string(buf, device);
        }
        buf.extend_from_slice(b",\"type\":\"");
        buf.extend_from_slice(match series.kind {
            SeriesKind::Gauge => b"gauge",
            SeriesKind::Count => b"count",
            SeriesKind::Rate => b"rate",
        });
        let _ = write!(buf, "\",\"interval\":{}}}", series.interval);
        self.series
            .push(&self.entry, u32::try_from(finite).unwrap_or(u32::MAX), out);
    }

    /// One `SketchPayload.sketches` entry.
    fn sketch(&mut self, sketches: &SketchSeries, out: &mut Vec<Payload>) {
        let points = sketches
            .points
            .iter()
            .filter(|p| !p.sketch.is_empty())
            .count();
        if points == 0 {
            return;
        }
        let host = host_or(&sketches.host, &self.hostname);
        let buf = &mut self.entry;
        buf.clear();
        let message = pb::begin(buf, 1);
        pb::string(buf, 1, &sketches.name);
        pb::string(buf, 2, host);
        for tag in sketches.tags.iter() {
            pb::string(buf, 4, tag);
        }
        for point in sketches.points.iter().filter(|p| !p.sketch.is_empty()) {
            let sketch = &point.sketch;
            let dogsketch = pb::begin(buf, 7);
            pb::int64(buf, 1, point.timestamp);
            pb::uint64(buf, 2, sketch.count());
            pb::double(buf, 3, sketch.min());
            pb::double(buf, 4, sketch.max());
            pb::double(buf, 5, sketch.avg());
            pb::double(buf, 6, sketch.sum());
            pb::packed_sint32(buf, 7, sketch.bins().iter().map(|b| i32::from(b.key)));
            pb::packed_uint32(buf, 8, sketch.bins().iter().map(|b| u32::from(b.count)));
            pb::end(buf, dogsketch);
        }
        origin_metadata(buf, 8);
        pb::end(buf, message);
        let points = u32::try_from(points).unwrap_or(u32::MAX);
        self.sketches.push(&self.entry, points, out);
    }

    /// The events, grouped by source type: `"<source>":[{…},{…}],"<other>":[…]`.
    fn events(&mut self, events: &[Event], out: &mut Vec<Payload>) {
        self.event_order.clear();
        self.event_order.extend(0..events.len());
        self.event_order.sort_by_key(|&i| source_type(&events[i]));
        let mut previous: Option<&str> = None;
        for &i in &self.event_order {
            let event = &events[i];
            let source = source_type(event);
            // Written as the next entry of the payload being built; when that is full, again
            // as the first of the next.
            for _ in 0..2 {
                let buf = &mut self.entry;
                buf.clear();
                if self.events.is_empty() {
                    previous = None;
                }
                match previous {
                    Some(p) if p == source => buf.push(b','),
                    Some(_) => buf.extend_from_slice(b"],"),
                    None => {}
                }
                if previous != Some(source) {
                    json_string(buf, source);
                    buf.extend_from_slice(b":[");
                }
                event_json(buf, event, host_or(&event.host, &self.hostname));
                match self.events.try_add(&self.entry, 1) {
                    Ok(()) => {
                        previous = Some(source);
                        break;
                    }
                    Err(Refused::Full) => self.events.finish(out),
                    Err(Refused::TooLarge) => break,
                }
            }
        }
    }
}

/// The host to send: `host`, or the runner's hostname when it is empty.
fn host_or<'a>(host: &'a str, hostname: &'a str) -> &'a str {
    if host.is_empty() { hostname } else { host }
}

/// The group an event is sent in.
fn source_type(event: &Event) -> &str {
    match event.source_type_name.as_deref() {
        Some(name) if !name.is_empty() => name,
        _ => "api",
    }
}

/// Tags that the Agent turns into a device or a resource rather than sending as tags.
fn is_special_tag(tag: &str) -> bool {
    tag.starts_with(DEVICE_TAG) || tag.starts_with(RESOURCE_TAG)
}

/// `MetricPayload.MetricType`.
const fn metric_type(kind: SeriesKind) -> u64 {
    match kind {
        SeriesKind::Count => 1,
        SeriesKind::Rate => 2,
        SeriesKind::Gauge => 3,
    }
}

/// `metadata {origin {origin_product: 10}}` as field `field`.
fn origin_metadata(buf: &mut Vec<u8>, field: u32) {
    let metadata = pb::begin(buf, field);
    let origin = pb::begin(buf, 1);
    pb::uint64(buf, 4, ORIGIN_PRODUCT_AGENT);
    pb::end(buf, origin);
    pb::end(buf, metadata);
}

/// One `/api/v1/check_run` entry.
fn service_check(buf: &mut Vec<u8>, check: &ServiceCheck, hostname: &str) {
    let host = host_or(&check.host, hostname);
    buf.extend_from_slice(b"{\"check\":");
    json_string(buf, &check.name);
    buf.extend_from_slice(b",\"host_name\":");
    json_string(buf, host);
    let _ = write!(
        buf,
        ",\"timestamp\":{},\"status\":{},\"message\":",
        check.timestamp as i64,
        check.status.code()
    );
    json_string(buf, &check.message);
    buf.extend_from_slice(b",\"tags\":");
    if check.tags.is_empty() {
        buf.extend_from_slice(b"null");
    } else {
        json_strings(buf, check.tags.iter().map(String::as_str));
    }
    buf.push(b'}');
}

/// One event of the `/intake/` payload.
fn event_json(buf: &mut Vec<u8>, event: &Event, host: &str) {
    buf.extend_from_slice(b"{\"msg_title\":");
    json_string(buf, &event.title);
    buf.extend_from_slice(b",\"msg_text\":");
    json_string(buf, &event.text);
    let _ = write!(buf, ",\"timestamp\":{}", event.timestamp);
    buf.extend_from_slice(b",\"priority\":");
    json_string(
        buf,
        match event.priority {
            Priority::Normal => "normal",
            Priority::Low => "low",
        },
    );
    buf.extend_from_slice(b",\"host\":");
    json_string(buf, host);
    if !event.tags.is_empty() {
        buf.extend_from_slice(b",\"tags\":");
        json_strings(buf, event.tags.iter().map(String::as_str));
    }
    buf.extend_from_slice(b",\"alert_type\":");
    json_string(
        buf,
        match event.alert_type {
            AlertType::Error => "error",
            AlertType::Warning => "warning",
            AlertType::Info => "info",
            AlertType::Success => "success",
        },
    );
    for (key, value) in [
        ("aggregation_key", &event.aggregation_key),
        ("source_type_name", &event.source_type_name),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            let _ = write!(buf, ",\"{key}\":");
            json_string(buf, value);
        }
    }
    buf.push(b'}');
}

/// A JSON array of strings.
fn json_strings<'a>(buf: &mut Vec<u8>, values: impl Iterator<Item = &'a str>) {
    buf.push(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        json_string(buf, value);
    }
    buf.push(b']');
}

/// `value` as a JSON string.
fn json_string(buf: &mut Vec<u8>, value: &str) {
    buf.push(b'"');
    let bytes = value.as_bytes();
    let mut clean = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[clean..i]);
        if escape.is_empty() {
            let _ = write!(buf, "\\u{byte:04x}");
        } else {
            buf.extend_from_slice(escape);
        }
        clean = i + 1;
    }
    buf.extend_from_slice(&bytes[clean..]);
    buf.push(b'"');
}

/// A finite `value` as a JSON number: plain digits, or an exponent for very large and very
/// small magnitudes, which plain digits would spell out at length.
fn json_number(buf: &mut Vec<u8>, value: f64) {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        let _ = write!(buf, "{value:e}");
    } else {
        let _ = write!(buf, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::aggregator::{Point, Sketch};
    use crate::check::Status;
    use crate::forwarder::compress::decompress;
    use crate::forwarder::payload::Encoding;
    use crate::forwarder::schema;

    const HOSTNAME: &str = "runner-host";

    fn serializer(v2_series: bool, compressor: Compressor) -> DatadogSerializer {
        DatadogSerializer::new(
            DatadogFormat {
                v2_series,
                compressor,
            },
            Arc::from(HOSTNAME),
        )
    }

    fn hosted(host: &str, series: Series) -> Series {
        Series {
            host: host.into(),
            ..series
        }
    }

    /// The bodies of `out`, decompressed, each checked against `limits`.
    fn bodies(out: &[Payload], limits: Limits) -> Vec<Vec<u8>> {
        out.iter()
            .map(|payload| {
                let body = decompress(payload);
                assert!(payload.body.len() <= limits.compressed);
                assert!(body.len() <= limits.uncompressed);
                assert!(payload.items <= limits.items);
                body
            })
            .collect()
    }

    /// The payloads of `flush`, which must take several and leave nothing out: each as the
    /// items it carries and its body, checked against the limits of payloads other than series.
    fn split(flush: &Flush) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let unsent = serializer(true, Compressor::Zstd).serialize(flush, &mut out);
        assert_eq!(unsent, Unsent::default());
        assert!(out.len() >= 2, "{} payloads", out.len());
        let bodies = bodies(&out, PAYLOAD_LIMITS);
        out.iter().map(|p| p.items).zip(bodies).collect()
    }

    fn agent_origin() -> Option<schema::Metadata> {
        Some(schema::Metadata {
            origin: Some(schema::Origin {
                origin_product: 10,
                origin_category: 0,
                origin_service: 0,
            }),
        })
    }

    fn resource(kind: &str, name: &str) -> schema::Resource {
        schema::Resource {
            r#type: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn series_v2_carry_every_field_as_the_agent_writes_it() {
        let flush = Flush {
            series: vec![
                Series::for_test(
                    "app.temp",
                    &["env:prod"],
                    SeriesKind::Gauge,
                    &[(1000, 21.5)],
                ),
                hosted(
                    "web-1",
                    Series::for_test(
                        "app.hits",
                        &[
                            "device:sda",
                            "dd.internal.resource:database:db1",
                            "dd.internal.resource:bad",
                            "z",
                        ],
                        SeriesKind::Count,
                        &[(1000, 0.0), (1010, -0.0)],
                    ),
                ),
                Series::for_test("app.rps", &[], SeriesKind::Rate, &[(1010, f64::NAN)]),
                Series::for_test("app.none", &[], SeriesKind::Gauge, &[]),
            ],
            ..Flush::default()
        };
        let mut out = Vec::new();
        let unsent = serializer(true, Compressor::Zstd).serialize(&flush, &mut out);
        assert_eq!(unsent, Unsent::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].route, Route::SeriesV2);
        assert_eq!(out[0].encoding, Encoding::Zstd);
        assert_eq!(out[0].items, 4);
        let payload = schema::MetricPayload::decode(&decompress(&out[0])[..]).unwrap();
        let point = |timestamp, value| schema::MetricPoint { value, timestamp };
        let expected = [
            schema::MetricSeries {
                resources: vec![resource("host", HOSTNAME)],
                metric: "app.temp".into(),
                tags: vec!["env:prod".into()],
                points: vec![point(1000, 21.5)],
                r#type: schema::MetricType::Gauge as i32,
                unit: String::new(),
                source_type_name: String::new(),
                interval: 10,
                metadata: agent_origin(),
            },
            schema::MetricSeries {
                resources: vec![
                    resource("host", "web-1"),
                    resource("device", "sda"),
                    resource("database", "db1"),
                ],
                metric: "app.hits".into(),
                tags: vec!["z".into()],
                points: vec![point(1000, 0.0), point(1010, -0.0)],
                r#type: schema::MetricType::Count as i32,
                unit: String::new(),
                source_type_name: String::new(),
                interval: 10,
                metadata: agent_origin(),
            },
        ];
        assert_eq!(payload.series[..2], expected);
        assert!(payload.series[1].points[1].value.is_sign_negative());
        let rate = &payload.series[2];
        assert_eq!(rate.r#type, schema::MetricType::Rate as i32);
        assert!(rate.points[0].value.is_nan());
        assert_eq!(
            payload.series.len(),
            3,
            "a series without points is not sent"
        );
    }

    /// `count` series of `points` points each, with `tag` as their one tag.
    fn many(count: usize, points: usize, tag: impl Fn(usize) -> String) -> Flush {
        Flush {
            series: (0..count)
                .map(|i| {
                    let points: Vec<(i64, f64)> = (0..points)
                        .map(|p| (p as i64 * 10, (i * p) as f64))
                        .collect();
                    Series::for_test(&format!("m{i}"), &[&tag(i)], SeriesKind::Gauge, &points)
                })
                .collect(),
            ..Flush::default()
        }
    }

    /// Decodes every series payload, checks it is within the limits, and returns the metric
    /// names in order.
    fn series_v2_names(out: &[Payload]) -> Vec<String> {
        let mut names = Vec::new();
        for (payload, body) in out.iter().zip(bodies(out, SERIES_LIMITS)) {
            let decoded = schema::MetricPayload::decode(&body[..]).unwrap();
            let points: usize = decoded.series.iter().map(|s| s.points.len()).sum();
            assert_eq!(points, payload.items as usize);
            names.extend(decoded.series.into_iter().map(|s| s.metric));
        }
        names
    }

    #[test]
    fn series_v2_split_at_each_limit_and_keep_every_series_in_order() {
        // Random hex tags compress to about half: 200 of them pass 512000 bytes compressed
        // long before 10000 points or 5 MiB. Repeated tags compress very well: 1200 bytes each
        // reach 5 MiB before either other limit.
        let noise = |i: usize| {
            let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (0..1000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b"0123456789abcdef"[(state & 15) as usize])
                })
                .collect::<String>()
        };
        let cases: [(&str, Flush); 3] = [
            ("points", many(25, 1000, |_| "env:prod".into())),
            ("compressed", many(3000, 1, noise)),
            ("uncompressed", many(10_000, 1, |_| "x".repeat(1200))),
        ];
        for (limit, flush) in cases {
            for compressor in [Compressor::Zstd, Compressor::Zlib] {
                let mut out = Vec::new();
                let unsent = serializer(true, compressor).serialize(&flush, &mut out);
                assert_eq!(unsent, Unsent::default(), "{limit}");
                assert!(
                    out.len() >= 2,
                    "{limit} {compressor:?}: {} payloads",
                    out.len()
                );
                let expected: Vec<String> =
                    flush.series.iter().map(|s| s.name.to_string()).collect();
                assert_eq!(series_v2_names(&out), expected, "{limit} {compressor:?}");
            }
        }
    }

    #[test]
    fn a_series_over_the_points_limit_is_counted_and_the_others_sent() {
        let mut flush = many(3, 10, |_| "a:b".into());
        flush.series[1].points = (0..10_001)
            .map(|t| Point {
                timestamp: t,
                value: 1.0,
            })
            .collect();
        let mut out = Vec::new();
        let unsent = serializer(true, Compressor::Zstd).serialize(&flush, &mut out);
        assert_eq!(unsent.too_large, 10_001);
        assert_eq!(series_v2_names(&out), ["m0", "m2"]);
    }

    #[test]
    fn series_v1_are_the_agents_json() {
        let flush = Flush {
            series: vec![
                Series::for_test(
                    "app.temp",
                    &[
                        "env:prod",
                        "device:sda",
                        "dd.internal.resource:database:db1",
                    ],
                    SeriesKind::Gauge,
                    &[
                        (1000, 21.5),
                        (1010, f64::INFINITY),
                        (1020, 1e300),
                        (1030, -3.0),
                    ],
                ),
                hosted(
                    "web-\"1\"",
                    Series::for_test("app.hits", &[], SeriesKind::Count, &[(1000, 2.0)]),
                ),
                Series::for_test("app.rps", &[], SeriesKind::Rate, &[(1000, f64::NAN)]),
            ],
            ..Flush::default()
        };
        let mut out = Vec::new();
        let unsent = serializer(false, Compressor::Zlib).serialize(&flush, &mut out);
        assert_eq!(unsent.not_finite, 2);
        assert_eq!(unsent.total(), 2);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].route, out[0].encoding, out[0].items),
            (Route::SeriesV1, Encoding::Deflate, 4)
        );
        let text = String::from_utf8(decompress(&out[0])).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"series":["#,
                r#"{"metric":"app.temp","points":[[1000,21.5],[1020,1e300],[1030,-3]],"tags":["env:prod"],"host":"runner-host","device":"sda","type":"gauge","interval":10},"#,
                r#"{"metric":"app.hits","points":[[1000,2]],"tags":[],"host":"web-\"1\"","type":"count","interval":10}"#,
                r#"]}"#
            )
        );
    }

    #[test]
    fn json_strings_and_numbers_are_valid_json() {
        for value in ["plain", "quote\" back\\ nl\n tab\t cr\r bell\u{7} é ☃", ""] {
            let mut buf = Vec::new();
            json_string(&mut buf, value);
            assert_eq!(serde_json::from_slice::<String>(&buf).unwrap(), value);
        }
        for value in [
            0.0,
            -0.0,
            1.5,
            -2.0,
            1e-7,
            123_456_789.125,
            1e21,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let mut buf = Vec::new();
            json_number(&mut buf, value);
            assert_eq!(
                serde_json::from_slice::<f64>(&buf).unwrap(),
                value,
                "{}",
                String::from_utf8_lossy(&buf)
            );
        }
    }

    fn sketch_of(values: impl Iterator<Item = f64>) -> Sketch {
        let mut sketch = Sketch::default();
        for v in values {
            sketch.insert(v);
        }
        sketch
    }

    #[test]
    fn sketches_carry_the_agents_dogsketch_bin_for_bin() {
        let sketch = sketch_of([-5.0, 0.0, 1.0, 1.0, 250.0].into_iter());
        let flush = Flush {
            sketches: vec![
                SketchSeries::for_test(
                    "app.latency",
                    &["env:prod", "device:sda"],
                    vec![(1000, sketch.clone()), (1010, Sketch::default())],
                ),
                SketchSeries {
                    host: "web-1".into(),
                    ..SketchSeries::for_test("app.empty", &[], vec![(1000, Sketch::default())])
                },
            ],
            ..Flush::default()
        };
        let mut out = Vec::new();
        let unsent = serializer(true, Compressor::Zstd).serialize(&flush, &mut out);
        assert_eq!(unsent, Unsent::default());
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].route, out[0].items), (Route::Sketches, 1));
        let raw = decompress(&out[0]);
        assert_eq!(
            &raw[raw.len() - 2..],
            [0x12, 0x00],
            "ends with the empty metadata"
        );
        let payload = schema::SketchPayload::decode(&raw[..]).unwrap();
        assert_eq!(
            payload,
            schema::SketchPayload {
                sketches: vec![schema::Sketch {
                    metric: "app.latency".into(),
                    host: HOSTNAME.into(),
                    tags: vec!["env:prod".into(), "device:sda".into()],
                    dogsketches: vec![schema::Dogsketch {
                        ts: 1000,
                        cnt: 5,
                        min: -5.0,
                        max: 250.0,
                        avg: 49.4,
                        sum: 247.0,
                        k: sketch.bins().iter().map(|b| i32::from(b.key)).collect(),
                        n: sketch.bins().iter().map(|b| u32::from(b.count)).collect(),
                    }],
                    metadata: agent_origin(),
                }],
                metadata: Some(schema::CommonMetadata::default()),
            }
        );
        assert_eq!(payload.sketches[0].dogsketches[0].n, [1, 1, 2, 1]);
    }

    #[test]
    fn sketches_split_at_the_uncompressed_limit() {
        // 4096 bins of distinct keys: about 12 KB a sketch, so 400 pass 4 MiB.
        let wide = sketch_of((0..4096).map(|i| 1e-6 * 1.015625_f64.powi(i)));
        assert_eq!(wide.bins().len(), 4096);
        let flush = Flush {
            sketches: (0..400)
                .map(|i| SketchSeries::for_test(&format!("d{i}"), &[], vec![(1000, wide.clone())]))
                .collect(),
            ..Flush::default()
        };
        let mut names = Vec::new();
        for (items, raw) in split(&flush) {
            let decoded = schema::SketchPayload::decode(&raw[..]).unwrap();
            assert_eq!(decoded.sketches.len(), items as usize);
            names.extend(decoded.sketches.into_iter().map(|s| s.metric));
        }
        let expected: Vec<String> = (0..400).map(|i| format!("d{i}")).collect();
        assert_eq!(names, expected);
    }

    fn check(name: &str, status: Status, tags: &[&str], host: &str) -> ServiceCheck {
        ServiceCheck {
            name: name.into(),
            status,
            message: "all \"good\"".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            host: host.into(),
            timestamp: 1000.7,
        }
    }

    #[test]
    fn service_checks_are_the_agents_check_run_json() {
        let flush = Flush {
            service_checks: vec![
                check("app.up", Status::Ok, &["env:prod"], ""),
                check("app.db", Status::Critical, &[], "db-1"),
            ],
            ..Flush::default()
        };
        let mut out = Vec::new();
        serializer(true, Compressor::None).serialize(&flush, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].route, out[0].encoding, out[0].items),
            (Route::CheckRun, Encoding::Identity, 2)
        );
        assert_eq!(
            String::from_utf8(decompress(&out[0])).unwrap(),
            concat!(
                r#"[{"check":"app.up","host_name":"runner-host","timestamp":1000,"status":0,"message":"all \"good\"","tags":["env:prod"]},"#,
                r#"{"check":"app.db","host_name":"db-1","timestamp":1000,"status":2,"message":"all \"good\"","tags":null}]"#
            )
        );
    }

    fn event(title: &str, source: Option<&str>, text: &str) -> Event {
        Event {
            title: title.into(),
            text: text.into(),
            alert_type: AlertType::Warning,
            priority: Priority::Low,
            aggregation_key: None,
            source_type_name: source.map(str::to_owned),
            tags: Vec::new(),
            host: String::new(),
            timestamp: 1000,
        }
    }

    #[test]
    fn events_are_the_agents_intake_json_grouped_by_source_type() {
        let mut tagged = event("deploy", Some("jenkins"), "v2");
        tagged.tags = vec!["env:prod".into()];
        tagged.aggregation_key = Some("deploys".into());
        tagged.host = "ci-1".into();
        tagged.priority = Priority::Normal;
        tagged.alert_type = AlertType::Success;
        let flush = Flush {
            events: vec![
                event("first", None, "a"),
                tagged,
                event("second", Some(""), "b"),
            ],
            ..Flush::default()
        };
        let mut out = Vec::new();
        serializer(true, Compressor::Zstd).serialize(&flush, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].route, out[0].items), (Route::Intake, 3));
        assert_eq!(
            String::from_utf8(decompress(&out[0])).unwrap(),
            concat!(
                r#"{"apiKey":"","events":{"#,
                r#""api":[{"msg_title":"first","msg_text":"a","timestamp":1000,"priority":"low","host":"runner-host","alert_type":"warning"},"#,
                r#"{"msg_title":"second","msg_text":"b","timestamp":1000,"priority":"low","host":"runner-host","alert_type":"warning"}],"#,
                r#""jenkins":[{"msg_title":"deploy","msg_text":"v2","timestamp":1000,"priority":"normal","host":"ci-1","tags":["env:prod"],"alert_type":"success","aggregation_key":"deploys","source_type_name":"jenkins"}]"#,
                r#"},"internalHostname":"runner-host"}"#
            )
        );
    }

    #[test]
    fn events_split_at_the_uncompressed_limit_into_valid_payloads() {
        // 2000 events of 4 KB pass 4 MiB; the sources change along the way.
        let text = "t".repeat(4000);
        let flush = Flush {
            events: (0..2000)
                .map(|i| event(&format!("e{i}"), Some(["a", "b", "c"][i * 3 / 2000]), &text))
                .collect(),
            ..Flush::default()
        };
        let mut titles = Vec::new();
        for (items, raw) in split(&flush) {
            let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(value["internalHostname"], HOSTNAME);
            let mut carried = 0;
            for (source, events) in value["events"].as_object().unwrap() {
                for event in events.as_array().unwrap() {
                    assert_eq!(event["source_type_name"], source.as_str());
                    titles.push(event["msg_title"].as_str().unwrap().to_owned());
                    carried += 1;
                }
            }
            assert_eq!(carried, items);
        }
        let expected: Vec<String> = (0..2000).map(|i| format!("e{i}")).collect();
        assert_eq!(titles, expected);
    }

    #[test]
    fn an_empty_flush_makes_no_payload() {
        let mut out = Vec::new();
        let unsent = serializer(true, Compressor::Zstd).serialize(&Flush::default(), &mut out);
        assert!(out.is_empty());
        assert_eq!(unsent, Unsent::default());
    }
}
