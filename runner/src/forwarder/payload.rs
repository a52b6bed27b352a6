//! What the serializers hand the delivery side: one request body, ready to send, with what it
//! carries. A payload is serialized and compressed once and shared (`Bytes`) by every endpoint
//! it goes to, so dual shipping costs no second encoding.

use bytes::Bytes;

/// Where a payload goes, relative to an endpoint's base URL, and how its body is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    /// `/api/v2/series`: `MetricPayload` protobuf.
    SeriesV2,
    /// `/api/v1/series`: the legacy JSON series.
    SeriesV1,
    /// `/api/beta/sketches`: `SketchPayload` protobuf.
    Sketches,
    /// `/api/v1/check_run`: service checks, a JSON array.
    CheckRun,
    /// `/intake/`: events, the Agent's v1 intake JSON.
    Intake,
    /// Prometheus remote write 1.0: `WriteRequest` protobuf, snappy-compressed. The endpoint's
    /// URL is the whole address, so the path is empty.
    RemoteWrite,
}

impl Route {
    /// Every route, for tables indexed by route.
    pub(crate) const ALL: [Self; 6] = [
        Self::SeriesV2,
        Self::SeriesV1,
        Self::Sketches,
        Self::CheckRun,
        Self::Intake,
        Self::RemoteWrite,
    ];

    /// The path appended to the endpoint's base URL.
    pub(crate) const fn path(self) -> &'static str {
        match self {
            Self::SeriesV2 => "/api/v2/series",
            Self::SeriesV1 => "/api/v1/series",
            Self::Sketches => "/api/beta/sketches",
            Self::CheckRun => "/api/v1/check_run",
            Self::Intake => "/intake/",
            Self::RemoteWrite => "",
        }
    }

    /// The `Content-Type` header.
    pub(crate) const fn content_type(self) -> &'static str {
        match self {
            Self::SeriesV2 | Self::Sketches | Self::RemoteWrite => "application/x-protobuf",
            Self::SeriesV1 | Self::CheckRun | Self::Intake => "application/json",
        }
    }

    /// A short name for logs, telemetry and spill files.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::SeriesV2 => "series_v2",
            Self::SeriesV1 => "series_v1",
            Self::Sketches => "sketches",
            Self::CheckRun => "check_run",
            Self::Intake => "intake",
            Self::RemoteWrite => "remote_write",
        }
    }

    pub(crate) fn from_str(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// How a body is compressed: the `Content-Encoding` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Encoding {
    Identity,
    /// zlib (the header says `deflate`, as the Agent's does).
    Deflate,
    Zstd,
    /// Snappy's block format, as remote write asks.
    Snappy,
}

impl Encoding {
    /// The `Content-Encoding` header's value, if one is sent.
    pub(crate) const fn header(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Deflate => Some("deflate"),
            Self::Zstd => Some("zstd"),
            Self::Snappy => Some("snappy"),
        }
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
            Self::Snappy => "snappy",
        }
    }

    pub(crate) fn from_str(name: &str) -> Option<Self> {
        [Self::Identity, Self::Deflate, Self::Zstd, Self::Snappy]
            .into_iter()
            .find(|e| e.as_str() == name)
    }
}

/// One request body, serialized and compressed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Payload {
    pub(crate) route: Route,
    pub(crate) encoding: Encoding,
    /// The compressed body.
    pub(crate) body: Bytes,
    /// What it carries: points for series and remote write, sketch points for sketches, service
    /// checks, events. Drops are counted in these units as well as in payloads.
    pub(crate) items: u32,
}
