//! The values a check submits and the HTTP capability's request and response.

use std::fmt;

/// What a run returns: `Ok(())`, or the reason it failed.
pub type Result<T = ()> = std::result::Result<T, Error>;

/// Why a run failed; shown by `runner test-check` and `runner status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        Self(error.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self(format!("invalid configuration: {error}"))
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// How the runner treats a metric's values; see the [`Ctx`](crate::Ctx) method of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each is documented on its `Ctx` method
pub enum MetricType {
    Gauge,
    Count,
    MonotonicCount,
    Rate,
    Histogram,
    Distribution,
}

/// One metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric's name, such as `http.ssl.days_left`.
    pub name: String,
    /// How the runner treats the value.
    pub kind: MetricType,
    /// The sample.
    pub value: f64,
    /// `key:value` tags; the runner adds the instance's `tags` and `service:`.
    pub tags: Vec<String>,
    /// Overrides the runner's hostname; `Some("")` sends none.
    pub hostname: Option<String>,
}

/// A service check's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // Datadog's four statuses
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

/// The status of something a check watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// The service check's name, such as `http.can_connect`.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Why, for any status but OK.
    pub message: Option<String>,
    /// `key:value` tags; the runner adds the instance's `tags` and `service:`.
    pub tags: Vec<String>,
    /// Overrides the runner's hostname; `Some("")` sends none.
    pub hostname: Option<String>,
}

/// An event's kind, as Datadog shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // Datadog's four alert types
pub enum AlertType {
    Error,
    Warning,
    Info,
    Success,
}

/// An event's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // Datadog's two priorities
pub enum Priority {
    Normal,
    Low,
}

/// Something that happened, for Datadog's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The title.
    pub title: String,
    /// The body, in Datadog's event markdown.
    pub text: String,
    /// Its kind.
    pub alert_type: AlertType,
    /// Its priority.
    pub priority: Priority,
    /// Groups related events together.
    pub aggregation_key: Option<String>,
    /// What the event comes from, such as `chef`.
    pub source_type_name: Option<String>,
    /// `key:value` tags; the runner adds the instance's `tags` and `service:`.
    pub tags: Vec<String>,
    /// Overrides the runner's hostname; `Some("")` sends none.
    pub hostname: Option<String>,
    /// Seconds since the Unix epoch; the submission time when `None`.
    pub timestamp: Option<i64>,
}

impl Event {
    /// An `info` event of normal priority; set the other fields as needed.
    pub fn new(title: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            text: text.into(),
            alert_type: AlertType::Info,
            priority: Priority::Normal,
            aggregation_key: None,
            source_type_name: None,
            tags: Vec::new(),
            hostname: None,
            timestamp: None,
        }
    }
}

/// An HTTP request made by the host on the check's behalf. The instance must be granted the
/// URL's host (its `url` key, or `allowed_hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// An `http://` or `https://` URL.
    pub url: String,
    /// Sent in order, as given.
    pub headers: Vec<(String, String)>,
    /// None sends no body.
    pub body: Option<Vec<u8>>,
    /// How long the request may take, sending to the end of the body; 10 s by default. See
    /// [`HttpRequest::timeout_ms`] for how it meets the instance's `timeout`.
    pub timeout_ms: u32,
    /// Defaults to true. The certificate's expiry is returned either way.
    pub verify_tls: bool,
    /// Defaults to true; each hop must be granted too.
    pub follow_redirects: bool,
}

impl HttpRequest {
    /// A request with no headers and no body, and the defaults above.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: 10_000,
            verify_tls: true,
            follow_redirects: true,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets how long the request may take, in milliseconds (at least 1).
    ///
    /// The instance's `timeout` is the deadline of the whole run, and the runner cuts every
    /// request short of it: the request gets the smaller of this timeout and the time left
    /// before the deadline, less 50 ms kept so that the check can still report the failure.
    /// A request cut that way fails with [`HttpError::Timeout`], as one that ran out of its own
    /// time does. To give a request the whole run, as Datadog's `http_check` does with
    /// `timeout`, set it from [`Ctx::timeout`](crate::Ctx::timeout):
    ///
    /// ```
    /// # use kennel_sdk::{Ctx, HttpRequest};
    /// # fn request(cx: &Ctx, url: &str) -> HttpRequest {
    /// let timeout = cx.timeout().map_or(10_000, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX));
    /// HttpRequest::get(url).timeout_ms(timeout)
    /// # }
    /// ```
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Sets whether the certificate chain and name are verified.
    pub fn verify_tls(mut self, verify: bool) -> Self {
        self.verify_tls = verify;
        self
    }

    /// Sets whether redirects are followed.
    pub fn follow_redirects(mut self, follow: bool) -> Self {
        self.follow_redirects = follow;
        self
    }
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, up to the runner's cap.
    pub body: Vec<u8>,
    /// The body was longer than the runner's cap and was cut.
    pub body_truncated: bool,
    /// From sending the request to the end of the body.
    pub elapsed: std::time::Duration,
    /// For HTTPS: the peer certificate's `notAfter`, in seconds since the Unix epoch.
    pub cert_not_after: Option<i64>,
}

impl HttpResponse {
    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Why an HTTP request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The instance is not granted this host; the text says which host and how to grant it.
    Denied(String),
    /// No answer within the request's timeout or the run's deadline.
    Timeout(String),
    /// Refused, unreachable, or the name did not resolve.
    Connect(String),
    /// The TLS handshake failed, such as over a certificate that does not verify.
    Tls(String),
    /// The request is malformed (its URL, say).
    InvalidRequest(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::Timeout(m) => write!(f, "timeout: {m}"),
            Self::Connect(m) => write!(f, "connection failed: {m}"),
            Self::Tls(m) => write!(f, "TLS error: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// One value of a SQL result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (and an OID).
    Int(i64),
    /// A REAL or DOUBLE PRECISION.
    Float(f64),
    /// A NUMERIC, exactly, as decimal text.
    Numeric(String),
    /// Text: TEXT, VARCHAR, CHAR, NAME and the like.
    Text(String),
    /// A column type the runner does not decode; the text names it. Cast it in the query.
    Unsupported(String),
}

impl Value {
    /// The value as a metric value: numbers, numerics and booleans (1/0), and text that parses
    /// as a number. `None` for NULL and anything else.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Self::Int(i) => Some(*i as f64),
            Self::Float(f) => Some(*f),
            Self::Numeric(text) | Self::Text(text) => text.trim().parse().ok(),
            Self::Null | Self::Unsupported(_) => None,
        }
    }

    /// The value as a tag value: text as is, numbers and booleans printed. `None` for NULL and
    /// unsupported types.
    pub fn as_tag_value(&self) -> Option<String> {
        match self {
            Self::Bool(b) => Some(b.to_string()),
            Self::Int(i) => Some(i.to_string()),
            Self::Float(f) => Some(f.to_string()),
            Self::Numeric(text) | Self::Text(text) => Some(text.clone()),
            Self::Null | Self::Unsupported(_) => None,
        }
    }
}

/// The result of a SQL query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// More rows came back than the runner's cap; the rest were dropped.
    pub truncated: bool,
}

/// Why a SQL query got no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// The instance names no server.
    NotGranted(String),
    /// No connection could be made.
    Connect(String),
    /// The server refused the statement.
    Query(String),
    /// No answer within the instance's `query_timeout` or the run's deadline.
    Timeout(String),
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(m) => write!(f, "not granted: {m}"),
            Self::Connect(m) => write!(f, "connection failed: {m}"),
            Self::Query(m) => write!(f, "query failed: {m}"),
            Self::Timeout(m) => write!(f, "timeout: {m}"),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<SqlError> for Error {
    fn from(error: SqlError) -> Self {
        Self(error.to_string())
    }
}
