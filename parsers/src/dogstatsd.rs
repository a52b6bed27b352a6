//! The DogStatsD wire format: turns one datagram (or one frame of the UDS stream socket) into
//! metrics, events and service checks.
//!
//! # What it parses
//!
//! Protocol v1.0 to v1.6 as the Datadog Agent reads it (`comp/dogstatsd/server/impl/parse*.go`;
//! `reference/datadog-agent.md` § 5.1):
//!
//! - A datagram holds messages separated by `\n`. A trailing `\r` is dropped and empty lines are
//!   skipped. A message starting `_e{` is an event, one starting `_sc|` a service check, anything
//!   else a metric (so random gibberish is reported as a malformed metric, as in the Agent).
//! - Metric: `<name>:<value>[:<value>...]|<type>[|@<rate>][|#<tags>][|c:<local data>]`
//!   `[|e:<external data>][|card:<cardinality>][|T<unix seconds>]`, types `c g ms h s d`, optional
//!   fields in any order.
//! - Event: `_e{<title bytes>,<text bytes>}:<title>|<text>[|d:][|h:][|k:][|p:][|s:][|t:][|#]...`.
//! - Service check: `_sc|<name>|<0..3>[|d:][|h:][|#][|m:<message>]...`.
//!
//! # Design
//!
//! - **Zero-copy.** Every string in a parsed message borrows the datagram; tags are exposed as the
//!   raw `a,b:c` string plus an iterator, so the aggregator can sort, dedup and intern them in its
//!   own buffers. The one allocation is an event title or text containing the `\n` escape, which
//!   is returned as [`Cow::Owned`].
//! - **UTF-8 is validated once.** The whole datagram is validated up front and then split as a
//!   `&str`. Only when the datagram holds invalid bytes does the parser fall back to validating
//!   one line at a time, so that the bad bytes cost exactly one message.
//! - **Multi-value packing without a buffer.** Every value of `name:1:2:3|h` is parsed and checked
//!   when the message is parsed, so a message is accepted or rejected as a whole; the first value
//!   is kept as an `f64` and the others are read again from the datagram by [`Values::iter`]. The
//!   common single-value message is parsed once, and a [`MetricMessage`] stays small and `Copy`.
//! - **One error per message, never per datagram.** A malformed message yields a [`ParseError`]
//!   with a [`ParseErrorReason`] (stable snake_case names for "parse errors by reason" telemetry)
//!   and the rest of the datagram is still parsed. Nothing panics on any input; the fuzz target
//!   in `fuzz/` checks it.
//!
//! # Tolerated and rejected
//!
//! Rejected (the message is dropped, with a reason), because accepting it would put a wrong number
//! into a series:
//! - a metric with an empty name, no value, a value that is not a number, or a value that is not
//!   finite: `NaN`, `inf` and anything that overflows `f64` such as `1e309`. The Agent's
//!   `strconv.ParseFloat` accepts `NaN` and `Inf`, but neither can be aggregated or sent;
//! - a type other than `c g ms h s d`;
//! - a sample rate that is not a number in (0, 1]. The Agent takes any float, but a rate of 0 or
//!   below would make the count reinflation `1 / rate` infinite or negative;
//! - a `|T` timestamp that is not a decimal integer ≥ 1 (as the Agent), or a timestamp on a type
//!   other than gauge and count: protocol v1.3 defines timestamps for those two only, since a
//!   timestamped sample bypasses aggregation and a histogram point cannot be sent unaggregated;
//! - an event whose header is not `_e{<digits>,<digits>}:`, whose title is empty, or whose
//!   declared lengths do not match the body exactly (the title must be followed by `|`, the text
//!   by `|` or the end of the message). The Agent only checks that the body is long enough;
//! - a service check with an empty name or a status other than `0`, `1`, `2` or `3`;
//! - a message that is not valid UTF-8.
//!
//! Tolerated, because the Agent tolerates them and clients rely on it:
//! - unknown and empty optional fields are ignored; when a field appears twice the last one wins;
//! - empty values in a multi-value list (`a:1::2|d`) are skipped;
//! - a set's value is everything between the first `:` and the first `|`, colons included
//!   (`users:10.0.0.1:8080|s` is one member), since multi-value packing does not apply to sets;
//! - empty tags (`#a,,b,`) are skipped by [`Tags::iter`];
//! - an invalid optional field of an event or a service check (a bad `d:`, `p:` or `t:`) is
//!   ignored and counted in `invalid_fields`, and the message is kept;
//! - a service check's `m:` message runs to the next `|`, so a `|` inside it truncates it.
//!
//! Kennel differs from the Agent in one tolerant way: only `_sc|` (not `_sc`) marks a service
//! check, so a metric whose name starts with `_sc` is parsed as a metric.
//!
//! # Missing
//!
//! - `dogstatsd_eol_required` (dropping a final message without `\n`) belongs to the listener; this
//!   parser treats the end of the datagram as the end of the last message.
//! - Metric names are not validated or normalised beyond being non-empty, like the Agent; any
//!   character other than `:`, `|` and `\n` is kept.
//! - The origin fields (`c:`, `e:`, `card:`) are always exposed; honouring them only with
//!   `dogstatsd_origin_detection_client` is the caller's decision. External data is not split into
//!   its `it-`/`cn-`/`pu-` parts and the cardinality is not checked against its four values.
//! - A service check message keeps the client's `\n` escape as is, as the Agent does.

use std::borrow::Cow;
use std::fmt;
use std::iter::FusedIterator;

/// Parses every message of `datagram` and calls `each` with the result, in order.
///
/// A malformed message gives an `Err` and parsing goes on with the next line. Messages borrow the
/// datagram; nothing is allocated except for an event title or text holding the `\n` escape.
pub fn parse_datagram<'a>(
    datagram: &'a [u8],
    mut each: impl FnMut(Result<Message<'a>, ParseError<'a>>),
) {
    // Straight from the line to the callback, without the iterator's `Option` around the
    // message: the message is large enough that every move of it shows in a profile.
    let mut messages = Messages::new(datagram);
    while let Some(line) = messages.next_line() {
        each(parse_line(line));
    }
}

/// Parses exactly one message, without its line ending.
///
/// Framing (`\n`, `\r\n`, empty lines) is [`Messages`]' job: a `\n` inside `message` is part of
/// the message, and usually makes it malformed.
pub fn parse_message(message: &[u8]) -> Result<Message<'_>, ParseError<'_>> {
    parse_line(std::str::from_utf8(message).map_err(|_| message))
}

/// An iterator over the messages of one datagram, each parsed or rejected on its own.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: Rest<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Rest<'a> {
    /// The remaining datagram is valid UTF-8: lines are split without validating them again.
    Text(&'a str),
    /// The datagram holds invalid UTF-8 somewhere: each line is validated on its own.
    Bytes(&'a [u8]),
}

impl<'a> Messages<'a> {
    /// Starts parsing `datagram`.
    pub fn new(datagram: &'a [u8]) -> Self {
        let rest = match std::str::from_utf8(datagram) {
            Ok(text) => Rest::Text(text),
            Err(_) => Rest::Bytes(datagram),
        };
        Self { rest }
    }
}

impl<'a> Messages<'a> {
    /// The next non-empty line without its `\r`: as text, or as bytes if it is not UTF-8.
    #[inline]
    fn next_line(&mut self) -> Option<Result<&'a str, &'a [u8]>> {
        loop {
            match self.rest {
                Rest::Text(text) => {
                    if text.is_empty() {
                        return None;
                    }
                    let (line, tail) = split_first(text, b'\n');
                    self.rest = Rest::Text(tail);
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    if !line.is_empty() {
                        return Some(Ok(line));
                    }
                }
                Rest::Bytes(bytes) => {
                    if bytes.is_empty() {
                        return None;
                    }
                    let (line, tail) = match bytes.iter().position(|&b| b == b'\n') {
                        Some(end) => (&bytes[..end], &bytes[end + 1..]),
                        None => (bytes, &bytes[bytes.len()..]),
                    };
                    self.rest = Rest::Bytes(tail);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if !line.is_empty() {
                        return Some(std::str::from_utf8(line).map_err(|_| line));
                    }
                }
            }
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, ParseError<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().map(parse_line)
    }
}

impl FusedIterator for Messages<'_> {}

/// One parsed DogStatsD message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// A metric sample, or several packed into one message.
    Metric(MetricMessage<'a>),
    /// An event (`_e{...}`).
    Event(EventMessage<'a>),
    /// A service check (`_sc|...`).
    ServiceCheck(ServiceCheckMessage<'a>),
}

impl Message<'_> {
    /// Which of the three kinds of message this is.
    #[cfg(test)]
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Metric(_) => MessageKind::Metric,
            Self::Event(_) => MessageKind::Event,
            Self::ServiceCheck(_) => MessageKind::ServiceCheck,
        }
    }
}

/// The three kinds of DogStatsD message, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Anything that is neither an event nor a service check.
    Metric,
    /// Starts with `_e{`.
    Event,
    /// Starts with `_sc|`.
    ServiceCheck,
}

impl MessageKind {
    /// The kind a message is parsed as, from its first bytes.
    pub fn of(message: &[u8]) -> Self {
        if message.starts_with(b"_e{") {
            Self::Event
        } else if message.starts_with(b"_sc|") {
            Self::ServiceCheck
        } else {
            Self::Metric
        }
    }

    /// A stable snake_case name, for telemetry labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Metric => "metric",
            Self::Event => "event",
            Self::ServiceCheck => "service_check",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric message: one name, one type and one or more values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricMessage<'a> {
    /// The metric name, never empty. Not validated beyond that, like the Agent.
    pub name: &'a str,
    /// The type, from the `|<type>` field.
    pub kind: MetricKind,
    /// The numbers, or the member of a set.
    pub value: MetricValue<'a>,
    /// The client's sample rate from `|@<rate>`, in (0, 1]. Defaults to 1.0.
    pub sample_rate: f64,
    /// The tags from `|#...`. Empty when there is no tags field.
    pub tags: Tags<'a>,
    /// The origin detection fields `|c:`, `|e:` and `|card:`.
    pub origin: Origin<'a>,
    /// The unix timestamp in seconds from `|T<ts>` (v1.3), always ≥ 1. Only a gauge or a count
    /// can carry one; such a sample is meant to be forwarded without aggregation.
    pub timestamp: Option<u64>,
}

impl MetricMessage<'_> {
    /// How many samples the message carries: the number of values, or 1 for a set.
    #[cfg(test)]
    pub fn sample_count(&self) -> usize {
        match &self.value {
            MetricValue::Numbers(values) => values.len(),
            MetricValue::Set(_) => 1,
        }
    }
}

/// The six metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `c`: added up over the flush interval, sent as a rate.
    Count,
    /// `g`: the last value wins.
    Gauge,
    /// `ms`: a histogram in milliseconds.
    Timer,
    /// `h`: aggregated into max, median, avg, count and percentiles.
    Histogram,
    /// `s`: the number of distinct members.
    Set,
    /// `d`: a distribution, inserted into a sketch.
    Distribution,
}

impl MetricKind {
    /// All six types.
    #[cfg(test)]
    pub const ALL: [Self; 6] = [
        Self::Count,
        Self::Gauge,
        Self::Timer,
        Self::Histogram,
        Self::Set,
        Self::Distribution,
    ];

    /// The type from its wire symbol (`c`, `g`, `ms`, `h`, `s`, `d`).
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        match symbol.as_bytes() {
            b"c" => Some(Self::Count),
            b"g" => Some(Self::Gauge),
            b"ms" => Some(Self::Timer),
            b"h" => Some(Self::Histogram),
            b"s" => Some(Self::Set),
            b"d" => Some(Self::Distribution),
            _ => None,
        }
    }

    /// The wire symbol.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Count => "c",
            Self::Gauge => "g",
            Self::Timer => "ms",
            Self::Histogram => "h",
            Self::Set => "s",
            Self::Distribution => "d",
        }
    }

    /// A stable snake_case name, for telemetry labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Gauge => "gauge",
            Self::Timer => "timer",
            Self::Histogram => "histogram",
            Self::Set => "set",
            Self::Distribution => "distribution",
        }
    }

    /// Whether a message of this type may carry a `|T` timestamp (protocol v1.3).
    pub const fn accepts_timestamp(self) -> bool {
        matches!(self, Self::Count | Self::Gauge)
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a metric message carries: numbers, or for a set the member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue<'a> {
    /// Every type but [`MetricKind::Set`]: one or more finite numbers.
    Numbers(Values<'a>),
    /// [`MetricKind::Set`]: the member, never empty; everything between the first `:` and the
    /// first `|`.
    Set(&'a str),
}

/// The values of a metric message: at least one, all finite.
///
/// Every value was parsed and checked when the message was parsed; the first is kept and the
/// others are read again from the datagram by [`Values::iter`].
#[derive(Clone, Copy)]
pub struct Values<'a> {
    first: f64,
    /// What follows the first value: more values separated by `:`, possibly empty ones.
    rest: &'a str,
    len: usize,
}

impl<'a> Values<'a> {
    /// Parses `1` or `1:2:3`, skipping empty values.
    fn parse(raw: &'a str) -> Result<Self, ParseErrorReason> {
        let mut first = None;
        let mut rest = "";
        let mut len = 0_usize;
        let mut remaining = raw;
        while !remaining.is_empty() {
            let (value, tail) = split_first(remaining, b':');
            remaining = tail;
            if value.is_empty() {
                continue;
            }
            let value = parse_value(value)?;
            if first.is_none() {
                first = Some(value);
                rest = tail;
            }
            len += 1;
        }
        match first {
            Some(first) => Ok(Self { first, rest, len }),
            None => Err(ParseErrorReason::MissingValue),
        }
    }

    /// The first value.
    pub fn first(&self) -> f64 {
        self.first
    }

    /// How many values there are, at least one.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a metric message has at least one value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values in message order.
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter {
            first: Some(self.first),
            rest: self.rest,
            remaining: self.len,
        }
    }
}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when they hold the same values, however they were written (`1:2` and `1::2.0`).
impl PartialEq for Values<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<'a> IntoIterator for Values<'a> {
    type Item = f64;
    type IntoIter = ValuesIter<'a>;

    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Values<'a> {
    type Item = f64;
    type IntoIter = ValuesIter<'a>;

    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Values`].
#[derive(Debug, Clone)]
pub struct ValuesIter<'a> {
    first: Option<f64>,
    rest: &'a str,
    remaining: usize,
}

impl Iterator for ValuesIter<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if let Some(first) = self.first.take() {
            self.remaining = self.remaining.saturating_sub(1);
            return Some(first);
        }
        while !self.rest.is_empty() {
            let (value, tail) = split_first(self.rest, b':');
            self.rest = tail;
            // Every value parsed when the message was; skipping one that would not is only
            // there so that this cannot panic.
            if let Ok(value) = parse_value(value) {
                self.remaining = self.remaining.saturating_sub(1);
                return Some(value);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for ValuesIter<'_> {}
impl FusedIterator for ValuesIter<'_> {}

/// The tags of a message, as sent: `env:prod,service:web`.
///
/// Kept raw so that the aggregator can sort, dedup and intern them without this parser
/// allocating; [`Tags::iter`] splits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tags<'a> {
    raw: &'a str,
}

impl<'a> Tags<'a> {
    /// The tags field without its `#`, empty when the message has none.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The tags in message order, split on `,`, skipping empty ones.
    pub fn iter(&self) -> TagsIter<'a> {
        TagsIter { rest: self.raw }
    }

    /// Whether there is no non-empty tag.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'a> IntoIterator for Tags<'a> {
    type Item = &'a str;
    type IntoIter = TagsIter<'a>;

    fn into_iter(self) -> TagsIter<'a> {
        self.iter()
    }
}

/// Iterator over the non-empty tags of [`Tags`].
#[derive(Debug, Clone)]
pub struct TagsIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for TagsIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while !self.rest.is_empty() {
            let (tag, tail) = split_first(self.rest, b',');
            self.rest = tail;
            if !tag.is_empty() {
                return Some(tag);
            }
        }
        None
    }
}

impl FusedIterator for TagsIter<'_> {}

/// The origin detection fields a client may attach to any message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin<'a> {
    /// The container from `|c:` (v1.2, v1.4).
    pub container: Option<ContainerRef<'a>>,
    /// The admission controller's `|e:` data (v1.5), raw (`it-false,cn-redis,pu-<uid>`).
    pub external: Option<&'a str>,
    /// The `|card:` tag cardinality (v1.6), raw (`none`, `low`, `orchestrator`, `high`).
    pub cardinality: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// Takes `field` if it is one of the origin fields; an empty value clears the field.
    fn apply(&mut self, field: &'a str) {
        if let Some(local_data) = field.strip_prefix("c:") {
            self.container = ContainerRef::parse(local_data);
        } else if let Some(external) = field.strip_prefix("e:") {
            self.external = non_empty(external);
        } else if let Some(cardinality) = field.strip_prefix("card:") {
            self.cardinality = non_empty(cardinality);
        }
    }
}

/// The container a message comes from, as its client named it in `|c:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerRef<'a> {
    /// A container ID: `ci-<id>`, the APM form `cid-<id>`, or a bare legacy `<id>`.
    Id(&'a str),
    /// A cgroup v2 inode, `in-<inode>`, to be resolved to a container.
    Inode(u64),
}

impl<'a> ContainerRef<'a> {
    /// Reads the value of a `c:` field the way the Agent's `origindetection.ParseLocalData`
    /// does: either one item (`ci-`, `in-`, `cid-` or a bare legacy ID) or a `,` list of `ci-`
    /// and `in-` items. When a list names both, the ID wins: it needs no cgroup lookup, and the
    /// Agent resolves the inode only when no ID is given. An empty ID or an inode that is not a
    /// positive decimal integer counts as absent.
    pub fn parse(local_data: &'a str) -> Option<Self> {
        if local_data.contains(',') {
            let mut id = None;
            let mut inode = None;
            for item in local_data.split(',') {
                if let Some(value) = item.strip_prefix("ci-") {
                    id = non_empty(value).or(id);
                } else if let Some(value) = item.strip_prefix("in-") {
                    inode = parse_inode(value).or(inode);
                }
            }
            id.map(Self::Id).or(inode.map(Self::Inode))
        } else if let Some(id) = local_data.strip_prefix("ci-") {
            non_empty(id).map(Self::Id)
        } else if let Some(inode) = local_data.strip_prefix("in-") {
            parse_inode(inode).map(Self::Inode)
        } else if let Some(id) = local_data.strip_prefix("cid-") {
            non_empty(id).map(Self::Id)
        } else {
            non_empty(local_data).map(Self::Id)
        }
    }
}

/// An event message.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage<'a> {
    /// The title, never empty, with each `\n` escape (backslash, `n`) turned into a newline.
    pub title: Cow<'a, str>,
    /// The text, possibly empty, with each `\n` escape turned into a newline.
    pub text: Cow<'a, str>,
    /// `d:`, the unix timestamp in seconds.
    pub timestamp: Option<u64>,
    /// `h:`, the host the event is about.
    pub hostname: Option<&'a str>,
    /// `k:`, the key grouping events together.
    pub aggregation_key: Option<&'a str>,
    /// `p:`. Defaults to [`EventPriority::Normal`].
    pub priority: EventPriority,
    /// `s:`, the source type name.
    pub source_type: Option<&'a str>,
    /// `t:`. Defaults to [`EventAlertType::Info`].
    pub alert_type: EventAlertType,
    /// `#...`.
    pub tags: Tags<'a>,
    /// `c:`, `e:` and `card:`.
    pub origin: Origin<'a>,
    /// How many optional fields were present but invalid (a bad `d:`, `p:` or `t:`), and ignored.
    pub invalid_fields: u32,
}

/// An event's priority, `p:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventPriority {
    /// `normal`, the default.
    #[default]
    Normal,
    /// `low`.
    Low,
}

impl EventPriority {
    fn from_wire(value: &str) -> Option<Self> {
        match value {
            "normal" => Some(Self::Normal),
            "low" => Some(Self::Low),
            _ => None,
        }
    }
}

/// An event's alert type, `t:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventAlertType {
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `info`, the default.
    #[default]
    Info,
    /// `success`.
    Success,
}

impl EventAlertType {
    /// The wire name.
    #[cfg(test)]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Success => "success",
        }
    }

    fn from_wire(value: &str) -> Option<Self> {
        match value {
            "error" => Some(Self::Error),
            "warning" => Some(Self::Warning),
            "info" => Some(Self::Info),
            "success" => Some(Self::Success),
            _ => None,
        }
    }
}

/// A service check message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceCheckMessage<'a> {
    /// The check name, never empty.
    pub name: &'a str,
    /// The status.
    pub status: ServiceCheckStatus,
    /// `d:`, the unix timestamp in seconds.
    pub timestamp: Option<u64>,
    /// `h:`, the host the check is about.
    pub hostname: Option<&'a str>,
    /// `m:`, up to the next `|`.
    pub message: Option<&'a str>,
    /// `#...`.
    pub tags: Tags<'a>,
    /// `c:`, `e:` and `card:`.
    pub origin: Origin<'a>,
    /// How many optional fields were present but invalid (a bad `d:`), and ignored.
    pub invalid_fields: u32,
}

/// A service check's status, sent as a digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceCheckStatus {
    /// `0`.
    Ok,
    /// `1`.
    Warning,
    /// `2`.
    Critical,
    /// `3`.
    Unknown,
}

impl ServiceCheckStatus {
    /// The wire digit, which is also the status code Datadog's intake takes.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Critical => 2,
            Self::Unknown => 3,
        }
    }

    fn from_wire(value: &str) -> Option<Self> {
        match value {
            "0" => Some(Self::Ok),
            "1" => Some(Self::Warning),
            "2" => Some(Self::Critical),
            "3" => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// A message that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError<'a> {
    /// What the message looked like, from its first bytes.
    pub kind: MessageKind,
    /// Why it was rejected.
    pub reason: ParseErrorReason,
    /// The message, without its line ending.
    pub message: &'a [u8],
}

impl ParseError<'_> {
    /// How much of the message [`fmt::Display`] shows.
    const EXCERPT_BYTES: usize = 200;
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.message[..self.message.len().min(Self::EXCERPT_BYTES)];
        write!(
            f,
            "invalid DogStatsD {}: {} ({}) in \"{}\"",
            self.kind,
            self.reason.description(),
            self.reason,
            shown.escape_ascii()
        )?;
        if shown.len() < self.message.len() {
            write!(f, "... ({} bytes)", self.message.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError<'_> {}

/// Why a message was rejected. [`ParseErrorReason::as_str`] names are stable, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorReason {
    /// The message is not valid UTF-8.
    InvalidUtf8,
    /// A metric has no `:` after its name, or no value after the `:`.
    MissingValue,
    /// A metric's name is empty.
    EmptyName,
    /// A metric value is not a number.
    InvalidValue,
    /// A metric value is NaN, infinite, or too large for an `f64`.
    NonFiniteValue,
    /// A metric has no `|<type>`.
    MissingType,
    /// A metric's type is not one of `c g ms h s d`.
    UnknownType,
    /// A sample rate is not a number in (0, 1].
    InvalidSampleRate,
    /// A `|T` timestamp is not a decimal integer ≥ 1.
    InvalidTimestamp,
    /// A `|T` timestamp on a metric other than a gauge or a count.
    TimestampNotSupported,
    /// An event header is not `_e{<title length>,<text length>}:`.
    EventHeader,
    /// An event's title or text is not exactly as long as its header says.
    EventLength,
    /// An event's title is empty.
    EmptyTitle,
    /// A service check's name is empty.
    ServiceCheckName,
    /// A service check's status is missing or not one of `0 1 2 3`.
    ServiceCheckStatus,
}

impl ParseErrorReason {
    /// Every reason, for registering telemetry counters up front.
    pub const ALL: [Self; 15] = [
        Self::InvalidUtf8,
        Self::MissingValue,
        Self::EmptyName,
        Self::InvalidValue,
        Self::NonFiniteValue,
        Self::MissingType,
        Self::UnknownType,
        Self::InvalidSampleRate,
        Self::InvalidTimestamp,
        Self::TimestampNotSupported,
        Self::EventHeader,
        Self::EventLength,
        Self::EmptyTitle,
        Self::ServiceCheckName,
        Self::ServiceCheckStatus,
    ];

    /// A stable snake_case name, for telemetry labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MissingValue => "missing_value",
            Self::EmptyName => "empty_name",
            Self::InvalidValue => "invalid_value",
            Self::NonFiniteValue => "non_finite_value",
            Self::MissingType => "missing_type",
            Self::UnknownType => "unknown_type",
            Self::InvalidSampleRate => "invalid_sample_rate",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampNotSupported => "timestamp_not_supported",
            Self::EventHeader => "event_header",
            Self::EventLength => "event_length",
            Self::EmptyTitle => "empty_title",
            Self::ServiceCheckName => "service_check_name",
            Self::ServiceCheckStatus => "service_check_status",
        }
    }

    /// What went wrong, for logs.
    pub const fn description(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "the message is not valid UTF-8",
            Self::MissingValue => "no value after the metric name",
            Self::EmptyName => "the metric name is empty",
            Self::InvalidValue => "a value is not a number",
            Self::NonFiniteValue => "a value is NaN, infinite or too large",
            Self::MissingType => "no `|<type>` after the value",
            Self::UnknownType => "the type is not one of c, g, ms, h, s, d",
            Self::InvalidSampleRate => "the sample rate is not a number in (0, 1]",
            Self::InvalidTimestamp => "the `|T` timestamp is not an integer >= 1",
            Self::TimestampNotSupported => "only gauges and counts may carry a `|T` timestamp",
            Self::EventHeader => "the event header is not `_e{<title length>,<text length>}:`",
            Self::EventLength => "the event title or text does not match its declared length",
            Self::EmptyTitle => "the event title is empty",
            Self::ServiceCheckName => "the service check name is empty",
            Self::ServiceCheckStatus => "the service check status is not 0, 1, 2 or 3",
        }
    }
}

impl fmt::Display for ParseErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a line that is text, or rejects one that is not UTF-8.
#[inline]
fn parse_line<'a>(line: Result<&'a str, &'a [u8]>) -> Result<Message<'a>, ParseError<'a>> {
    match line {
        Ok(text) => parse_text(text),
        Err(bytes) => Err(ParseError {
            kind: MessageKind::of(bytes),
            reason: ParseErrorReason::InvalidUtf8,
            message: bytes,
        }),
    }
}

#[inline]
fn parse_text(message: &str) -> Result<Message<'_>, ParseError<'_>> {
    let kind = MessageKind::of(message.as_bytes());
    let parsed = match kind {
        MessageKind::Metric => parse_metric(message).map(Message::Metric),
        MessageKind::Event => parse_event(message).map(Message::Event),
        MessageKind::ServiceCheck => parse_service_check(message).map(Message::ServiceCheck),
    };
    parsed.map_err(|reason| ParseError {
        kind,
        reason,
        message: message.as_bytes(),
    })
}

#[inline]
fn parse_metric(message: &str) -> Result<MetricMessage<'_>, ParseErrorReason> {
    use ParseErrorReason as Reason;

    let Some((name_and_value, after)) = split_once(message, b'|') else {
        return Err(Reason::MissingType);
    };
    let Some((name, raw_value)) = split_once(name_and_value, b':') else {
        return Err(Reason::MissingValue);
    };
    if name.is_empty() {
        return Err(Reason::EmptyName);
    }
    if raw_value.is_empty() {
        return Err(Reason::MissingValue);
    }
    let (symbol, mut fields) = split_first(after, b'|');
    let kind = match MetricKind::from_symbol(symbol) {
        Some(kind) => kind,
        None if symbol.is_empty() => return Err(Reason::MissingType),
        None => return Err(Reason::UnknownType),
    };
    let value = match kind {
        MetricKind::Set => MetricValue::Set(raw_value),
        _ => MetricValue::Numbers(Values::parse(raw_value)?),
    };

    // Fields go into locals and the message is built once at the end, in place: building it
    // first and filling it in made the compiler copy the whole message out afterwards.
    let mut sample_rate = 1.0;
    let mut tags = Tags::default();
    let mut origin = Origin::default();
    let mut timestamp = None;
    while !fields.is_empty() {
        let (field, tail) = split_first(fields, b'|');
        fields = tail;
        match field.as_bytes().first() {
            Some(b'#') => tags = Tags { raw: &field[1..] },
            Some(b'@') => sample_rate = parse_sample_rate(&field[1..])?,
            Some(b'T') => match parse_u64(&field[1..]) {
                Some(ts) if ts >= 1 => timestamp = Some(ts),
                _ => return Err(Reason::InvalidTimestamp),
            },
            _ => origin.apply(field),
        }
    }
    if timestamp.is_some() && !kind.accepts_timestamp() {
        return Err(Reason::TimestampNotSupported);
    }
    Ok(MetricMessage {
        name,
        kind,
        value,
        sample_rate,
        tags,
        origin,
        timestamp,
    })
}

fn parse_event(message: &str) -> Result<EventMessage<'_>, ParseErrorReason> {
    use ParseErrorReason as Reason;

    let header = message.strip_prefix("_e{").ok_or(Reason::EventHeader)?;
    let (lengths, rest) = split_once(header, b'}').ok_or(Reason::EventHeader)?;
    let body = rest.strip_prefix(':').ok_or(Reason::EventHeader)?;
    let (title_len, text_len) = split_once(lengths, b',').ok_or(Reason::EventHeader)?;
    let title_len = parse_len(title_len).ok_or(Reason::EventHeader)?;
    if title_len == 0 {
        return Err(Reason::EmptyTitle);
    }
    let text_len = parse_len(text_len).ok_or(Reason::EventHeader)?;

    // The title may itself hold `|`: the lengths, not the separators, say where it ends.
    let title = body.get(..title_len).ok_or(Reason::EventLength)?;
    if body.as_bytes().get(title_len) != Some(&b'|') {
        return Err(Reason::EventLength);
    }
    let text_start = title_len + 1;
    let text_end = text_start
        .checked_add(text_len)
        .ok_or(Reason::EventLength)?;
    let text = body.get(text_start..text_end).ok_or(Reason::EventLength)?;
    let mut fields = match body.as_bytes().get(text_end) {
        None => "",
        Some(b'|') => &body[text_end + 1..],
        Some(_) => return Err(Reason::EventLength),
    };

    let mut event = EventMessage {
        title: unescape_newlines(title),
        text: unescape_newlines(text),
        timestamp: None,
        hostname: None,
        aggregation_key: None,
        priority: EventPriority::Normal,
        source_type: None,
        alert_type: EventAlertType::Info,
        tags: Tags::default(),
        origin: Origin::default(),
        invalid_fields: 0,
    };
    while !fields.is_empty() {
        let (field, tail) = split_first(fields, b'|');
        fields = tail;
        let valid = if let Some(value) = field.strip_prefix("d:") {
            parse_u64(value).map(|timestamp| event.timestamp = Some(timestamp))
        } else if let Some(value) = field.strip_prefix("h:") {
            event.hostname = non_empty(value);
            Some(())
        } else if let Some(value) = field.strip_prefix("k:") {
            event.aggregation_key = non_empty(value);
            Some(())
        } else if let Some(value) = field.strip_prefix("p:") {
            EventPriority::from_wire(value).map(|priority| event.priority = priority)
        } else if let Some(value) = field.strip_prefix("s:") {
            event.source_type = non_empty(value);
            Some(())
        } else if let Some(value) = field.strip_prefix("t:") {
            EventAlertType::from_wire(value).map(|alert_type| event.alert_type = alert_type)
        } else if let Some(value) = field.strip_prefix('#') {
            event.tags = Tags { raw: value };
            Some(())
        } else {
            event.origin.apply(field);
            Some(())
        };
        if valid.is_none() {
            event.invalid_fields = event.invalid_fields.saturating_add(1);
        }
    }
    Ok(event)
}

fn parse_service_check(message: &str) -> Result<ServiceCheckMessage<'_>, ParseErrorReason> {
    use ParseErrorReason as Reason;

    let rest = message
        .strip_prefix("_sc|")
        .ok_or(Reason::ServiceCheckName)?;
    let (name, rest) = split_first(rest, b'|');
    if name.is_empty() {
        return Err(Reason::ServiceCheckName);
    }
    let (status, mut fields) = split_first(rest, b'|');
    let status = ServiceCheckStatus::from_wire(status).ok_or(Reason::ServiceCheckStatus)?;

    let mut check = ServiceCheckMessage {
        name,
        status,
        timestamp: None,
        hostname: None,
        message: None,
        tags: Tags::default(),
        origin: Origin::default(),
        invalid_fields: 0,
    };
    while !fields.is_empty() {
        let (field, tail) = split_first(fields, b'|');
        fields = tail;
        if let Some(value) = field.strip_prefix("d:") {
            match parse_u64(value) {
                Some(timestamp) => check.timestamp = Some(timestamp),
                None => check.invalid_fields = check.invalid_fields.saturating_add(1),
            }
        } else if let Some(value) = field.strip_prefix("h:") {
            check.hostname = non_empty(value);
        } else if let Some(value) = field.strip_prefix('#') {
            check.tags = Tags { raw: value };
        } else if let Some(value) = field.strip_prefix("m:") {
            check.message = non_empty(value);
        } else {
            check.origin.apply(field);
        }
    }
    Ok(check)
}

/// Splits at the first `delimiter`, an ASCII byte; the tail is empty when there is none.
#[inline]
fn split_first(text: &str, delimiter: u8) -> (&str, &str) {
    split_once(text, delimiter).unwrap_or((text, ""))
}

/// Splits around the first `delimiter`, an ASCII byte.
///
/// A plain byte loop: the fields of a message are a few bytes long, too short for `memchr`'s
/// set-up to pay off, and `str::split_once(char)` also compares the match again with `memcmp`.
#[inline]
fn split_once(text: &str, delimiter: u8) -> Option<(&str, &str)> {
    debug_assert!(delimiter.is_ascii());
    let at = text.bytes().position(|byte| byte == delimiter)?;
    // An ASCII byte is never inside a multi-byte character, so both sides are on char
    // boundaries and the slicing cannot panic.
    Some((&text[..at], &text[at + 1..]))
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// One metric value: a finite `f64`.
#[inline]
fn parse_value(text: &str) -> Result<f64, ParseErrorReason> {
    // Fast path for the most common values on the wire, short decimal integers: up to 15 digits
    // are exact in an f64, and skipping the general float parser saves a good part of a message.
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, bytes),
    };
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let integer = digits
            .iter()
            .fold(0_u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
        let value = integer as f64;
        return Ok(if negative { -value } else { value });
    }
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(ParseErrorReason::NonFiniteValue),
        Err(_) => Err(ParseErrorReason::InvalidValue),
    }
}

fn parse_sample_rate(text: &str) -> Result<f64, ParseErrorReason> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1.0 => Ok(rate),
        _ => Err(ParseErrorReason::InvalidSampleRate),
    }
}

/// A non-empty run of ASCII digits that fits a u64; no sign, no spaces.
fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0_u64, |acc, byte| {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn parse_len(text: &str) -> Option<usize> {
    parse_u64(text).and_then(|len| usize::try_from(len).ok())
}

fn parse_inode(text: &str) -> Option<u64> {
    parse_u64(text).filter(|inode| *inode > 0)
}

/// Turns each `\n` escape (backslash, `n`) into a newline; allocates only when there is one.
fn unescape_newlines(text: &str) -> Cow<'_, str> {
    if text.contains("\\n") {
        Cow::Owned(text.replace("\\n", "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(datagram: &[u8]) -> Vec<Result<Message<'_>, ParseError<'_>>> {
        Messages::new(datagram).collect()
    }

    #[track_caller]
    fn metric(message: &str) -> MetricMessage<'_> {
        match parse_message(message.as_bytes()) {
            Ok(Message::Metric(metric)) => metric,
            other => panic!("{message:?} should be a metric, got {other:?}"),
        }
    }

    #[track_caller]
    fn event(message: &str) -> EventMessage<'_> {
        match parse_message(message.as_bytes()) {
            Ok(Message::Event(event)) => event,
            other => panic!("{message:?} should be an event, got {other:?}"),
        }
    }

    #[track_caller]
    fn service_check(message: &str) -> ServiceCheckMessage<'_> {
        match parse_message(message.as_bytes()) {
            Ok(Message::ServiceCheck(check)) => check,
            other => panic!("{message:?} should be a service check, got {other:?}"),
        }
    }

    #[track_caller]
    fn rejection(message: &[u8]) -> ParseErrorReason {
        match parse_message(message) {
            Err(error) => {
                assert_eq!(error.message, message);
                error.reason
            }
            Ok(parsed) => panic!(
                "\"{}\" should be rejected, got {parsed:?}",
                message.escape_ascii()
            ),
        }
    }

    fn numbers(metric: &MetricMessage<'_>) -> Vec<f64> {
        match metric.value {
            MetricValue::Numbers(values) => values.iter().collect(),
            MetricValue::Set(member) => panic!("expected numbers, got the set member {member:?}"),
        }
    }

    fn tag_list(tags: Tags<'_>) -> Vec<&str> {
        tags.iter().collect()
    }

    #[test]
    fn count_with_tags_gives_name_value_and_tags() {
        let m = metric("page.views:1|c|#env:prod,service:web");
        assert_eq!(m.name, "page.views");
        assert_eq!(m.kind, MetricKind::Count);
        assert_eq!(numbers(&m), [1.0]);
        assert_eq!(m.sample_rate, 1.0);
        assert_eq!(m.tags.raw(), "env:prod,service:web");
        assert_eq!(tag_list(m.tags), ["env:prod", "service:web"]);
        assert_eq!(m.origin, Origin::default());
        assert_eq!(m.timestamp, None);
        assert_eq!(m.sample_count(), 1);
    }

    #[test]
    fn every_type_symbol_gives_its_kind() {
        for (symbol, kind) in [
            ("c", MetricKind::Count),
            ("g", MetricKind::Gauge),
            ("ms", MetricKind::Timer),
            ("h", MetricKind::Histogram),
            ("s", MetricKind::Set),
            ("d", MetricKind::Distribution),
        ] {
            let message = format!("my.metric:2.5|{symbol}");
            let m = metric(&message);
            assert_eq!(m.kind, kind, "{message}");
            assert_eq!(kind.symbol(), symbol);
            let expected = if kind == MetricKind::Set {
                MetricValue::Set("2.5")
            } else {
                MetricValue::Numbers(Values::parse("2.5").unwrap())
            };
            assert_eq!(m.value, expected, "{message}");
        }
        assert_eq!(
            MetricKind::ALL.map(MetricKind::as_str),
            [
                "count",
                "gauge",
                "timer",
                "histogram",
                "set",
                "distribution"
            ]
        );
    }

    #[test]
    fn values_parse_as_floats_in_every_form_the_agent_takes() {
        for (raw, expected) in [
            ("0", 0.0),
            ("-3", -3.0),
            ("42.125", 42.125),
            ("-0.5", -0.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("+7", 7.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("1.7976931348623157e308", f64::MAX),
            ("123456789012345", 123_456_789_012_345.0),
            ("12345678901234567890", 12_345_678_901_234_567_890.0),
        ] {
            let message = format!("m:{raw}|g");
            assert_eq!(numbers(&metric(&message)), [expected], "{message}");
        }
        let negative_zero = numbers(&metric("m:-0|g"))[0];
        assert!(negative_zero == 0.0 && negative_zero.is_sign_negative());
    }

    #[test]
    fn multi_value_packing_gives_every_value_in_order() {
        for kind in ["c", "g", "ms", "h", "d"] {
            let message = format!("latency:1:2.5:-3:4e2|{kind}|#a");
            let m = metric(&message);
            assert_eq!(numbers(&m), [1.0, 2.5, -3.0, 400.0], "{message}");
            assert_eq!(m.sample_count(), 4);
            let MetricValue::Numbers(values) = m.value else {
                unreachable!()
            };
            assert_eq!(values.len(), 4);
            assert_eq!(values.first(), 1.0);
            assert_eq!(values.iter().len(), 4);
            assert_eq!(tag_list(m.tags), ["a"]);
        }
    }

    #[test]
    fn multi_value_skips_empty_values_like_the_agent() {
        assert_eq!(numbers(&metric("m:1::2:|d")), [1.0, 2.0]);
        assert_eq!(numbers(&metric("m::7|d")), [7.0]);
        assert_eq!(rejection(b"m:::|d"), ParseErrorReason::MissingValue);
    }

    #[test]
    fn one_bad_value_in_a_packed_message_rejects_the_whole_message() {
        assert_eq!(rejection(b"m:1:2:x|h"), ParseErrorReason::InvalidValue);
        assert_eq!(rejection(b"m:1:NaN:3|h"), ParseErrorReason::NonFiniteValue);
    }

    #[test]
    fn set_member_is_everything_between_the_first_colon_and_the_pipe() {
        let m = metric("users.uniques:10.0.0.1:8080|s|#env:prod");
        assert_eq!(m.kind, MetricKind::Set);
        assert_eq!(m.value, MetricValue::Set("10.0.0.1:8080"));
        assert_eq!(m.sample_count(), 1);
        assert_eq!(metric("users:alice|s").value, MetricValue::Set("alice"));
        // Set members are strings: no number check, and NaN is as good a member as any.
        assert_eq!(metric("users:NaN|s").value, MetricValue::Set("NaN"));
        assert_eq!(rejection(b"users:|s"), ParseErrorReason::MissingValue);
    }

    #[test]
    fn sample_rate_is_read_and_defaults_to_one() {
        assert_eq!(metric("m:1|c|@0.5").sample_rate, 0.5);
        assert_eq!(metric("m:1|c|@1").sample_rate, 1.0);
        assert_eq!(metric("m:1|h|@1e-3|#a").sample_rate, 0.001);
        assert_eq!(metric("m:1|g|#a").sample_rate, 1.0);
    }

    #[test]
    fn sample_rate_outside_zero_to_one_is_rejected() {
        for rate in ["0", "-0.5", "1.5", "2", "NaN", "inf", "abc", "", "0.5x"] {
            let message = format!("m:1|c|@{rate}");
            assert_eq!(
                rejection(message.as_bytes()),
                ParseErrorReason::InvalidSampleRate,
                "{message}"
            );
        }
    }

    #[test]
    fn tags_skip_empty_tags_and_trailing_commas() {
        let m = metric("m:1|c|#,a,,b:c,");
        assert_eq!(m.tags.raw(), ",a,,b:c,");
        assert_eq!(tag_list(m.tags), ["a", "b:c"]);
        let tags: Vec<&str> = m.tags.into_iter().collect();
        assert_eq!(tags, ["a", "b:c"]);
    }

    #[test]
    fn empty_tags_field_gives_no_tags() {
        let m = metric("m:1|c|#");
        assert!(m.tags.is_empty());
        assert_eq!(m.tags.raw(), "");
        assert!(metric("m:1|c|#,,").tags.is_empty());
        assert!(metric("m:1|c").tags.is_empty());
        assert!(!metric("m:1|c|#a").tags.is_empty());
    }

    #[test]
    fn last_tags_field_wins() {
        assert_eq!(tag_list(metric("m:1|c|#a|#b,c").tags), ["b", "c"]);
    }

    #[test]
    fn tags_keep_colons_and_unicode() {
        let m = metric("m:1|c|#url:http://x:80/p,région:île-de-france,emoji:🐕");
        assert_eq!(
            tag_list(m.tags),
            ["url:http://x:80/p", "région:île-de-france", "emoji:🐕"]
        );
    }

    #[test]
    fn container_field_reads_id_inode_and_legacy_forms() {
        let container = |message| metric(message).origin.container;
        assert_eq!(
            container("m:1|c|c:ci-0123abcd"),
            Some(ContainerRef::Id("0123abcd"))
        );
        assert_eq!(
            container("m:1|c|c:in-123456"),
            Some(ContainerRef::Inode(123_456))
        );
        assert_eq!(
            container("m:1|c|c:cid-0123abcd"),
            Some(ContainerRef::Id("0123abcd"))
        );
        assert_eq!(
            container("m:1|c|c:0123abcd"),
            Some(ContainerRef::Id("0123abcd"))
        );
        assert_eq!(container("m:1|c|c:"), None);
        assert_eq!(container("m:1|c|c:ci-"), None);
    }

    #[test]
    fn container_list_prefers_the_id_over_the_inode() {
        let container = |message| metric(message).origin.container;
        assert_eq!(
            container("m:1|c|c:ci-abc,in-42"),
            Some(ContainerRef::Id("abc"))
        );
        assert_eq!(
            container("m:1|c|c:in-42,ci-abc"),
            Some(ContainerRef::Id("abc"))
        );
        assert_eq!(container("m:1|c|c:in-42,xx"), Some(ContainerRef::Inode(42)));
        assert_eq!(container("m:1|c|c:a,b"), None);
    }

    #[test]
    fn invalid_inode_is_ignored_and_the_metric_kept() {
        let container = |message| metric(message).origin.container;
        assert_eq!(container("m:1|c|c:in-abc"), None);
        assert_eq!(container("m:1|c|c:in-0"), None);
        assert_eq!(container("m:1|c|c:in--5"), None);
        assert_eq!(container("m:1|c|c:in-99999999999999999999999"), None);
        assert_eq!(
            container("m:1|c|c:ci-abc,in-zz"),
            Some(ContainerRef::Id("abc"))
        );
    }

    #[test]
    fn external_data_and_cardinality_are_exposed_raw() {
        let m = metric("m:1|c|e:it-false,cn-redis,pu-810fe89d|card:orchestrator|#a");
        assert_eq!(m.origin.external, Some("it-false,cn-redis,pu-810fe89d"));
        assert_eq!(m.origin.cardinality, Some("orchestrator"));
        assert_eq!(tag_list(m.tags), ["a"]);
        let m = metric("m:1|c|e:|card:");
        assert_eq!(m.origin.external, None);
        assert_eq!(m.origin.cardinality, None);
    }

    #[test]
    fn timestamp_is_read_for_gauges_and_counts() {
        assert_eq!(metric("m:1|g|T1700000000").timestamp, Some(1_700_000_000));
        assert_eq!(metric("m:1|c|#a|T1").timestamp, Some(1));
        assert_eq!(
            metric("m:1:2|c|T18446744073709551615").timestamp,
            Some(u64::MAX)
        );
    }

    #[test]
    fn timestamp_on_other_types_is_rejected() {
        for kind in ["ms", "h", "s", "d"] {
            let message = format!("m:1|{kind}|T1700000000");
            assert_eq!(
                rejection(message.as_bytes()),
                ParseErrorReason::TimestampNotSupported,
                "{message}"
            );
        }
    }

    #[test]
    fn invalid_timestamps_are_rejected() {
        for ts in [
            "0",
            "-1",
            "+5",
            "abc",
            "",
            "1.5",
            "18446744073709551616",
            " 1",
        ] {
            let message = format!("m:1|g|T{ts}");
            assert_eq!(
                rejection(message.as_bytes()),
                ParseErrorReason::InvalidTimestamp,
                "{message}"
            );
        }
    }

    #[test]
    fn optional_fields_may_come_in_any_order() {
        let a = metric("m:1|c|@0.5|#a,b|c:ci-x|e:it-true|card:low|T5");
        let b = metric("m:1|c|T5|card:low|e:it-true|c:ci-x|#a,b|@0.5");
        assert_eq!(a, b);
        assert_eq!(a.sample_rate, 0.5);
        assert_eq!(a.timestamp, Some(5));
        assert_eq!(a.origin.container, Some(ContainerRef::Id("x")));
        assert_eq!(a.origin.external, Some("it-true"));
        assert_eq!(a.origin.cardinality, Some("low"));
    }

    #[test]
    fn unknown_and_empty_fields_are_ignored() {
        let m = metric("m:1|c||x:whatever|#a|zzz||unit:ms|");
        assert_eq!(numbers(&m), [1.0]);
        assert_eq!(tag_list(m.tags), ["a"]);
        assert_eq!(m.origin, Origin::default());
    }

    #[test]
    fn malformed_metrics_are_rejected_with_their_reason() {
        use ParseErrorReason as Reason;
        for (message, reason) in [
            ("gibberish", Reason::MissingType),
            ("m:1", Reason::MissingType),
            ("m:1|", Reason::MissingType),
            ("m:1||#a", Reason::MissingType),
            ("m|c", Reason::MissingValue),
            ("m:|c", Reason::MissingValue),
            (":1|c", Reason::EmptyName),
            (":|c", Reason::EmptyName),
            ("m:1|x", Reason::UnknownType),
            ("m:1|cc", Reason::UnknownType),
            ("m:1|C", Reason::UnknownType),
            ("m:1|c |#a", Reason::UnknownType),
            ("m:abc|g", Reason::InvalidValue),
            ("m:1.2.3|g", Reason::InvalidValue),
            ("m: 1|g", Reason::InvalidValue),
            ("m:0x10|g", Reason::InvalidValue),
            ("m:-|g", Reason::InvalidValue),
            ("a|b:1|c", Reason::MissingValue),
            ("a:b:1|c", Reason::InvalidValue),
        ] {
            assert_eq!(rejection(message.as_bytes()), reason, "{message}");
        }
    }

    #[test]
    fn non_finite_values_are_rejected() {
        for value in ["NaN", "nan", "inf", "-inf", "+Infinity", "1e309", "-1e309"] {
            let message = format!("m:{value}|g");
            assert_eq!(
                rejection(message.as_bytes()),
                ParseErrorReason::NonFiniteValue,
                "{message}"
            );
        }
        // Too small to represent is not an error: it rounds to zero, as in Go.
        assert_eq!(numbers(&metric("m:1e-400|g")), [0.0]);
    }

    #[test]
    fn a_bad_message_in_the_middle_does_not_stop_the_rest() {
        let datagram = b"a:1|c\nb:oops|c\n_e{1,1}:t|x\nc:2|g|#x\n_sc|svc|9\n_sc|svc|0";
        let results = parse_all(datagram);
        assert_eq!(results.len(), 6);
        let kinds: Vec<_> = results
            .iter()
            .map(|result| match result {
                Ok(message) => Ok(message.kind()),
                Err(error) => Err((error.kind, error.reason)),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                Ok(MessageKind::Metric),
                Err((MessageKind::Metric, ParseErrorReason::InvalidValue)),
                Ok(MessageKind::Event),
                Ok(MessageKind::Metric),
                Err((
                    MessageKind::ServiceCheck,
                    ParseErrorReason::ServiceCheckStatus
                )),
                Ok(MessageKind::ServiceCheck),
            ]
        );
        let Err(error) = &results[1] else {
            unreachable!()
        };
        assert_eq!(error.message, b"b:oops|c");
    }

    #[test]
    fn crlf_endings_and_empty_lines_are_skipped() {
        let datagram = b"\r\n\na:1|c\r\n\r\n\nb:2|g\r\n\n";
        let names: Vec<_> = parse_all(datagram)
            .into_iter()
            .map(|result| match result {
                Ok(Message::Metric(m)) => (m.name, numbers(&m)),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [("a", vec![1.0]), ("b", vec![2.0])]);
        // Only one trailing `\r` goes: a second one is part of the type, which is then unknown.
        assert_eq!(
            parse_all(b"a:1|c\r\r\n")[0].as_ref().unwrap_err().reason,
            ParseErrorReason::UnknownType
        );
    }

    #[test]
    fn empty_and_blank_datagrams_give_nothing() {
        assert!(parse_all(b"").is_empty());
        assert!(parse_all(b"\n\n\r\n\r").is_empty());
    }

    #[test]
    fn last_message_needs_no_newline() {
        let results = parse_all(b"a:1|c\nb:2|c");
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(Result::is_ok));
    }

    #[test]
    fn parse_datagram_calls_back_in_order() {
        let mut seen = Vec::new();
        parse_datagram(b"a:1|c\nbad\nb:2|g", |result| {
            seen.push(result.map(|message| message.kind()).map_err(|e| e.reason));
        });
        assert_eq!(
            seen,
            [
                Ok(MessageKind::Metric),
                Err(ParseErrorReason::MissingType),
                Ok(MessageKind::Metric)
            ]
        );
    }

    #[test]
    fn invalid_utf8_costs_only_its_own_message() {
        let datagram = b"a:1|c|#ok\nb\xff:1|c\n_e{2,1}:\xc3\x28|x\n_sc|\xfe|0\nc:2|g|#caf\xc3\xa9";
        let results = parse_all(datagram);
        assert_eq!(results.len(), 5);
        let Ok(Message::Metric(first)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert_eq!(tag_list(first.tags), ["ok"]);
        for (result, kind) in results[1..4].iter().zip([
            MessageKind::Metric,
            MessageKind::Event,
            MessageKind::ServiceCheck,
        ]) {
            let error = result.as_ref().unwrap_err();
            assert_eq!(error.reason, ParseErrorReason::InvalidUtf8);
            assert_eq!(error.kind, kind);
        }
        let Ok(Message::Metric(last)) = &results[4] else {
            panic!("{:?}", results[4])
        };
        assert_eq!(tag_list(last.tags), ["café"]);
    }

    #[test]
    fn random_gibberish_is_rejected_as_a_metric() {
        for gibberish in [
            &b"hello world"[..],
            b"{\"json\": true}",
            b"|||",
            b":::",
            b"|:",
            b"_e",
            b"_s",
            b"\x00\x01\x02",
            b"#@T|c:e:",
        ] {
            let error = parse_message(gibberish).unwrap_err();
            assert_eq!(
                error.kind,
                MessageKind::Metric,
                "{}",
                gibberish.escape_ascii()
            );
        }
    }

    #[test]
    fn metric_named_like_the_service_check_prefix_is_a_metric() {
        assert_eq!(metric("_sc.latency:3|ms").name, "_sc.latency");
        assert_eq!(metric("_e.count:3|c").name, "_e.count");
    }

    #[test]
    fn very_long_lines_parse() {
        let name = "n".repeat(100_000);
        let values = vec!["1.5"; 10_000].join(":");
        let tags = (0..5_000)
            .map(|i| format!("t{i}:v"))
            .collect::<Vec<_>>()
            .join(",");
        let message = format!("{name}:{values}|d|#{tags}");
        let m = metric(&message);
        assert_eq!(m.name.len(), 100_000);
        assert_eq!(m.sample_count(), 10_000);
        assert!(numbers(&m).iter().all(|v| *v == 1.5));
        assert_eq!(m.tags.iter().count(), 5_000);

        let datagram = format!("{message}\n{message}\nx:1|c");
        assert_eq!(parse_all(datagram.as_bytes()).len(), 3);

        let text = "é".repeat(50_000);
        let message = format!("_e{{5,{}}}:title|{text}", text.len());
        assert_eq!(event(&message).text, text);
    }

    #[test]
    fn minimal_event_gets_defaults() {
        let e = event("_e{5,4}:title|text");
        assert_eq!(e.title, "title");
        assert_eq!(e.text, "text");
        assert!(matches!(e.title, Cow::Borrowed(_)));
        assert!(matches!(e.text, Cow::Borrowed(_)));
        assert_eq!(e.priority, EventPriority::Normal);
        assert_eq!(e.alert_type, EventAlertType::Info);
        assert_eq!(e.timestamp, None);
        assert_eq!(e.hostname, None);
        assert_eq!(e.aggregation_key, None);
        assert_eq!(e.source_type, None);
        assert!(e.tags.is_empty());
        assert_eq!(e.origin, Origin::default());
        assert_eq!(e.invalid_fields, 0);
    }

    #[test]
    fn event_reads_every_optional_field() {
        let e = event(
            "_e{9,12}:Deploy v2|It went well|d:1700000000|h:web-1|k:deploys|p:low|s:jenkins\
             |t:success|#env:prod,team:web|c:ci-abc|e:it-false|card:high",
        );
        assert_eq!(e.title, "Deploy v2");
        assert_eq!(e.text, "It went well");
        assert_eq!(e.timestamp, Some(1_700_000_000));
        assert_eq!(e.hostname, Some("web-1"));
        assert_eq!(e.aggregation_key, Some("deploys"));
        assert_eq!(e.priority, EventPriority::Low);
        assert_eq!(e.source_type, Some("jenkins"));
        assert_eq!(e.alert_type, EventAlertType::Success);
        assert_eq!(tag_list(e.tags), ["env:prod", "team:web"]);
        assert_eq!(e.origin.container, Some(ContainerRef::Id("abc")));
        assert_eq!(e.origin.external, Some("it-false"));
        assert_eq!(e.origin.cardinality, Some("high"));
        assert_eq!(e.invalid_fields, 0);

        for (wire, alert) in [
            ("error", EventAlertType::Error),
            ("warning", EventAlertType::Warning),
            ("info", EventAlertType::Info),
            ("success", EventAlertType::Success),
        ] {
            assert_eq!(event(&format!("_e{{1,1}}:a|b|t:{wire}")).alert_type, alert);
            assert_eq!(alert.as_str(), wire);
        }
        assert_eq!(
            event("_e{1,1}:a|b|p:normal").priority,
            EventPriority::Normal
        );
    }

    #[test]
    fn event_lengths_count_utf8_bytes() {
        // "héllo" is 6 bytes, "🐕 woof" 9.
        let e = event("_e{6,9}:héllo|🐕 woof|#a");
        assert_eq!(e.title, "héllo");
        assert_eq!(e.text, "🐕 woof");
        assert_eq!(tag_list(e.tags), ["a"]);
        // Counting characters instead of bytes does not fit.
        assert_eq!(
            rejection("_e{5,6}:héllo|🐕 woof".as_bytes()),
            ParseErrorReason::EventLength
        );
        // A length that ends inside a character is a length error, not a panic.
        assert_eq!(
            rejection("_e{1,1}:é|x".as_bytes()),
            ParseErrorReason::EventLength
        );
        assert_eq!(
            rejection("_e{1,1}:a|é".as_bytes()),
            ParseErrorReason::EventLength
        );
    }

    #[test]
    fn event_title_and_text_may_hold_pipes() {
        let e = event("_e{3,5}:a|b|c|d|e|#t");
        assert_eq!(e.title, "a|b");
        assert_eq!(e.text, "c|d|e");
        assert_eq!(tag_list(e.tags), ["t"]);
    }

    #[test]
    fn event_newline_escape_becomes_a_newline() {
        let e = event(r"_e{7,12}:a\nb\nc|line1\nline2");
        assert_eq!(e.title, "a\nb\nc");
        assert_eq!(e.text, "line1\nline2");
        assert!(matches!(e.text, Cow::Owned(_)));
        // Other backslashes are left alone.
        assert_eq!(event(r"_e{1,4}:t|a\tb").text, r"a\tb");
    }

    #[test]
    fn event_with_wrong_lengths_is_rejected() {
        for message in [
            "_e{5,4}:titl|text",      // title too long for the body
            "_e{4,4}:title|text",     // title shorter than declared: no `|` after it
            "_e{5,5}:title|text",     // text longer than the message
            "_e{5,3}:title|text",     // text shorter than declared: no `|` after it
            "_e{5,3}:title|textmore", // same
            "_e{5,4}:title",          // no text at all
            "_e{5,0}:title",          // no `|` after the title
            "_e{9999999999999999999,1}:a|b",
            "_e{1,18446744073709551615}:a|b",
        ] {
            assert_eq!(
                rejection(message.as_bytes()),
                ParseErrorReason::EventLength,
                "{message}"
            );
        }
    }

    #[test]
    fn event_with_empty_text_is_accepted() {
        assert_eq!(event("_e{5,0}:title|").text, "");
        assert_eq!(event("_e{5,0}:title||#a").text, "");
    }

    #[test]
    fn event_with_empty_title_is_rejected() {
        assert_eq!(rejection(b"_e{0,4}:|text"), ParseErrorReason::EmptyTitle);
        assert_eq!(rejection(b"_e{0,0}:|"), ParseErrorReason::EmptyTitle);
    }

    #[test]
    fn short_or_malformed_event_header_is_rejected() {
        for message in [
            &b"_e{"[..],
            b"_e{}",
            b"_e{}:",
            b"_e{,}:|",
            b"_e{1}:a|",
            b"_e{1,1:a|b",
            b"_e{1,1}a|b",
            b"_e{1,1};a|b",
            b"_e{a,b}:a|b",
            b"_e{-1,1}:a|b",
            b"_e{+1,1}:a|b",
            b"_e{1,-1}:a|b",
            b"_e{ 1,1}:a|b",
            b"_e{1,1,1}:a|b",
            b"_e{1,}:a|",
        ] {
            assert_eq!(
                rejection(message),
                ParseErrorReason::EventHeader,
                "{}",
                message.escape_ascii()
            );
        }
    }

    #[test]
    fn invalid_event_fields_are_ignored_and_counted() {
        let e = event("_e{1,1}:a|b|d:yesterday|p:urgent|t:fatal|h:host|zz:unknown|#a");
        assert_eq!(e.invalid_fields, 3);
        assert_eq!(e.timestamp, None);
        assert_eq!(e.priority, EventPriority::Normal);
        assert_eq!(e.alert_type, EventAlertType::Info);
        assert_eq!(e.hostname, Some("host"));
        assert_eq!(tag_list(e.tags), ["a"]);
        // A later valid field still applies.
        let e = event("_e{1,1}:a|b|p:bad|p:low");
        assert_eq!((e.priority, e.invalid_fields), (EventPriority::Low, 1));
    }

    #[test]
    fn service_check_reads_every_field() {
        let c = service_check(
            "_sc|db.can_connect|2|d:1700000000|h:db-1|#env:prod,db:main|c:in-77|card:low|m:connection refused",
        );
        assert_eq!(c.name, "db.can_connect");
        assert_eq!(c.status, ServiceCheckStatus::Critical);
        assert_eq!(c.timestamp, Some(1_700_000_000));
        assert_eq!(c.hostname, Some("db-1"));
        assert_eq!(tag_list(c.tags), ["env:prod", "db:main"]);
        assert_eq!(c.origin.container, Some(ContainerRef::Inode(77)));
        assert_eq!(c.origin.cardinality, Some("low"));
        assert_eq!(c.message, Some("connection refused"));
        assert_eq!(c.invalid_fields, 0);

        for (digit, status) in [
            ("0", ServiceCheckStatus::Ok),
            ("1", ServiceCheckStatus::Warning),
            ("2", ServiceCheckStatus::Critical),
            ("3", ServiceCheckStatus::Unknown),
        ] {
            let message = format!("_sc|svc|{digit}");
            let c = service_check(&message);
            assert_eq!(c.status, status);
            assert_eq!(c.status.as_u8().to_string(), digit);
            assert_eq!(c.message, None);
            assert!(c.tags.is_empty());
        }
    }

    #[test]
    fn service_check_message_is_cut_at_a_pipe_like_the_agent() {
        let c = service_check("_sc|svc|1|m:disk 95%|full|#a");
        assert_eq!(c.message, Some("disk 95%"));
        assert_eq!(tag_list(c.tags), ["a"]);
        // The client's `\n` escape is kept as the Agent keeps it.
        assert_eq!(service_check(r"_sc|svc|1|m:a\nb").message, Some(r"a\nb"));
    }

    #[test]
    fn malformed_service_checks_are_rejected() {
        use ParseErrorReason as Reason;
        for (message, reason) in [
            ("_sc|", Reason::ServiceCheckName),
            ("_sc||0", Reason::ServiceCheckName),
            ("_sc|svc", Reason::ServiceCheckStatus),
            ("_sc|svc|", Reason::ServiceCheckStatus),
            ("_sc|svc|4", Reason::ServiceCheckStatus),
            ("_sc|svc|-1", Reason::ServiceCheckStatus),
            ("_sc|svc|01", Reason::ServiceCheckStatus),
            ("_sc|svc|OK", Reason::ServiceCheckStatus),
            ("_sc|svc| 0", Reason::ServiceCheckStatus),
        ] {
            assert_eq!(rejection(message.as_bytes()), reason, "{message}");
        }
    }

    #[test]
    fn invalid_service_check_timestamp_is_ignored_and_counted() {
        let c = service_check("_sc|svc|0|d:soon|h:x");
        assert_eq!(c.timestamp, None);
        assert_eq!(c.invalid_fields, 1);
        assert_eq!(c.hostname, Some("x"));
    }

    #[test]
    fn reason_names_are_stable_and_unique() {
        let names = ParseErrorReason::ALL.map(ParseErrorReason::as_str);
        assert_eq!(
            names,
            [
                "invalid_utf8",
                "missing_value",
                "empty_name",
                "invalid_value",
                "non_finite_value",
                "missing_type",
                "unknown_type",
                "invalid_sample_rate",
                "invalid_timestamp",
                "timestamp_not_supported",
                "event_header",
                "event_length",
                "empty_title",
                "service_check_name",
                "service_check_status",
            ]
        );
        for reason in ParseErrorReason::ALL {
            assert_eq!(reason.to_string(), reason.as_str());
            assert!(!reason.description().is_empty());
        }
    }

    #[test]
    fn error_display_names_kind_reason_and_message() {
        let error = parse_message(b"m:1|x\xff\"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid DogStatsD metric: the message is not valid UTF-8 (invalid_utf8) in \
             \"m:1|x\\xff\\\"\""
        );
        let long = format!("{}:1|zz", "n".repeat(300));
        let shown = parse_message(long.as_bytes()).unwrap_err().to_string();
        assert!(shown.contains("(unknown_type)"), "{shown}");
        assert!(shown.ends_with("nnn\"... (305 bytes)"), "{shown}");
    }

    /// A deterministic stand-in for the fuzz target, so that `cargo test` alone catches a panic:
    /// mutates a corpus of valid messages byte by byte and checks the invariants.
    #[test]
    fn mutated_messages_never_panic_and_keep_the_invariants() {
        let corpus: &[&[u8]] = &[
            b"page.views:1|c|#env:prod,service:web",
            b"m:1:2.5:3|h|@0.5|#a,b|c:ci-abc,in-5|e:it-false|card:low",
            b"g:-1e3|g|T1700000000|c:in-42",
            b"u:alice:x|s|#t",
            "_e{6,9}:héllo|🐕 woof|d:1|h:h|k:k|p:low|s:s|t:error|#a".as_bytes(),
            br"_e{3,4}:a\n|b\nc|#x",
            b"_sc|svc|2|d:5|h:h|#a|m:msg|c:ci-x",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let alphabet = b"|:#@,_e{}sc0123456789.-+eEnNaTdhkpstm\\\n\r\xff\xc3";
        let mut buffer = Vec::new();
        for round in 0..200_000 {
            buffer.clear();
            for _ in 0..=(round % 3) {
                buffer.extend_from_slice(corpus[(next() % corpus.len() as u64) as usize]);
                buffer.push(b'\n');
            }
            for _ in 0..=(next() % 4) {
                if buffer.is_empty() {
                    break;
                }
                let at = (next() % buffer.len() as u64) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => buffer[at] = byte,
                    1 => buffer.insert(at, byte),
                    _ => {
                        buffer.remove(at);
                    }
                }
            }
            check_invariants(&buffer);
        }
    }

    /// What every parse of any input guarantees; shared in spirit with `fuzz/`.
    fn check_invariants(datagram: &[u8]) {
        let lines = datagram.split(|b| *b == b'\n').count();
        let mut parsed = 0;
        for result in Messages::new(datagram) {
            parsed += 1;
            match result {
                Ok(Message::Metric(m)) => {
                    assert!(!m.name.is_empty());
                    assert!(!m.name.contains([':', '|', '\n']));
                    assert!(m.sample_rate > 0.0 && m.sample_rate <= 1.0);
                    if let Some(ts) = m.timestamp {
                        assert!(ts >= 1 && m.kind.accepts_timestamp());
                    }
                    match m.value {
                        MetricValue::Numbers(values) => {
                            assert_ne!(m.kind, MetricKind::Set);
                            let all: Vec<f64> = values.iter().collect();
                            assert_eq!(all.len(), values.len());
                            assert!(!all.is_empty());
                            assert!(all.iter().all(|v| v.is_finite()));
                        }
                        MetricValue::Set(member) => {
                            assert_eq!(m.kind, MetricKind::Set);
                            assert!(!member.is_empty());
                        }
                    }
                    assert!(m.tags.iter().all(|t| !t.is_empty() && !t.contains(',')));
                }
                Ok(Message::Event(e)) => {
                    assert!(!e.title.is_empty());
                }
                Ok(Message::ServiceCheck(c)) => {
                    assert!(!c.name.is_empty());
                }
                Err(error) => {
                    assert!(!error.message.is_empty());
                    let _ = error.to_string();
                }
            }
        }
        assert!(parsed <= lines);
    }
}
