//! The handle a run gets on the outside world.

use std::time::Duration;

use crate::config::{self, ConfigError};
use crate::types::{
    AlertType, Event, HttpError, HttpRequest, HttpResponse, Metric, MetricType, Rows, ServiceCheck,
    SqlError, Status,
};

/// No tags: `cx.gauge("x", 1.0, NO_TAGS)`.
pub const NO_TAGS: &[&str] = &[];

/// How severe a log line is, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Step-by-step detail.
    Trace,
    /// What the run did, for its author.
    Debug,
    /// What the run did, for its user.
    Info,
    /// Something the user should fix; marks the run WARNING.
    Warn,
    /// Something failed.
    Error,
}

/// What a check talks to: the runner when built for wasm, a recording host in tests. Each
/// method backs the [`Ctx`] method of the same name.
pub trait Host {
    /// Submits a metric.
    fn metric(&mut self, metric: Metric);
    /// Submits a service check.
    fn service_check(&mut self, service_check: ServiceCheck);
    /// Submits an event.
    fn event(&mut self, event: Event);
    /// Logs a line.
    fn log(&mut self, level: Level, message: &str);
    /// Sends an HTTP request.
    fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError>;
    /// Runs a SQL statement.
    fn sql(&mut self, statement: &str) -> Result<Rows, SqlError>;
    /// Reads a key of the instance's store.
    fn kv_get(&mut self, key: &str) -> Option<String>;
    /// Writes a key of the instance's store.
    fn kv_set(&mut self, key: &str, value: &str) -> Result<(), String>;
    /// Removes a key of the instance's store.
    fn kv_delete(&mut self, key: &str);
    /// Every key of the instance's store.
    fn kv_keys(&mut self) -> Vec<String>;
}

/// One run's context: who is running, and the calls that reach the host.
pub struct Ctx<'h> {
    check_name: String,
    instance_id: String,
    init_config: serde_json::Value,
    timeout: Option<Duration>,
    host: &'h mut dyn Host,
}

impl<'h> Ctx<'h> {
    #[doc(hidden)]
    pub fn new(
        check_name: String,
        instance_id: String,
        init_config: serde_json::Value,
        timeout: Option<Duration>,
        host: &'h mut dyn Host,
    ) -> Self {
        Self {
            check_name,
            instance_id,
            init_config,
            timeout,
            host,
        }
    }

    /// The check's name, as in `conf.d/<name>.d/`.
    pub fn check_name(&self) -> &str {
        &self.check_name
    }

    /// The instance's stable id, `<check>:<digest>`.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The instance's `timeout`, when it sets one: the run's deadline. The runner keeps the key
    /// for itself (see [`RESERVED_KEYS`](crate::RESERVED_KEYS)), so this is how a check reads
    /// it. A check whose work takes a timeout of its own can default to it, as `http_check`
    /// does for its request; [`HttpRequest::timeout_ms`] explains how the two meet.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The `init_config` section deserialized into `T`. It is `null` when absent, so use a
    /// type that accepts it, such as an `Option` of a struct. The error names the key
    /// (`init_config.timeout: ...`); `?` turns it into the run's error.
    pub fn init_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        config::deserialize_ref(Some("init_config"), &self.init_config)
    }

    /// Submits a gauge: the value now.
    pub fn gauge<T: AsRef<str>>(&mut self, name: &str, value: f64, tags: &[T]) {
        self.submit(name, MetricType::Gauge, value, tags);
    }

    /// Submits a count: how many happened since the last run.
    pub fn count<T: AsRef<str>>(&mut self, name: &str, value: f64, tags: &[T]) {
        self.submit(name, MetricType::Count, value, tags);
    }

    /// A raw, ever-increasing counter; the runner submits the delta from the previous run.
    pub fn monotonic_count<T: AsRef<str>>(&mut self, name: &str, value: f64, tags: &[T]) {
        self.submit(name, MetricType::MonotonicCount, value, tags);
    }

    /// A raw counter; the runner submits its per-second rate since the previous run.
    pub fn rate<T: AsRef<str>>(&mut self, name: &str, value: f64, tags: &[T]) {
        self.submit(name, MetricType::Rate, value, tags);
    }

    /// Submits one sample of a histogram.
    pub fn histogram<T: AsRef<str>>(&mut self, name: &str, value: f64, tags: &[T]) {
        self.submit(name, MetricType::Histogram, value, tags);
    }

    /// Submits one sample of a distribution.
    pub fn distribution<T: AsRef<str>>(&mut self, name: &str, value: f64, tags: &[T]) {
        self.submit(name, MetricType::Distribution, value, tags);
    }

    /// Submits a metric with every field under the caller's control (e.g. its hostname).
    pub fn metric(&mut self, metric: Metric) {
        self.host.metric(metric);
    }

    /// Submits a service check: the status of something the check watches, with an optional
    /// message saying why.
    pub fn service_check<T: AsRef<str>>(
        &mut self,
        name: &str,
        status: Status,
        message: Option<&str>,
        tags: &[T],
    ) {
        self.host.service_check(ServiceCheck {
            name: name.to_owned(),
            status,
            message: message.map(str::to_owned),
            tags: owned(tags),
            hostname: None,
        });
    }

    /// Submits an event.
    pub fn event(&mut self, event: Event) {
        self.host.event(event);
    }

    /// Shorthand for an event with the given alert type and everything else defaulted.
    pub fn simple_event<T: AsRef<str>>(
        &mut self,
        title: &str,
        text: &str,
        alert_type: AlertType,
        tags: &[T],
    ) {
        let mut event = Event::new(title, text);
        event.alert_type = alert_type;
        event.tags = owned(tags);
        self.host.event(event);
    }

    /// Logs a line into the runner's log, tagged with the check and instance.
    pub fn log(&mut self, level: Level, message: &str) {
        self.host.log(level, message);
    }

    /// Logs at debug level.
    pub fn debug(&mut self, message: &str) {
        self.host.log(Level::Debug, message);
    }

    /// Logs at info level.
    pub fn info(&mut self, message: &str) {
        self.host.log(Level::Info, message);
    }

    /// A warning: logged, and kept with the run, which `runner status` and `test-check` then
    /// show as WARNING (like `self.warning()` in a Datadog check).
    pub fn warn(&mut self, message: &str) {
        self.host.log(Level::Warn, message);
    }

    /// Sends an HTTP request through the runner, which enforces the instance's egress grant.
    pub fn http(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.host.http(&request)
    }

    /// Runs a SQL statement on the PostgreSQL server the instance names (`host`, `port`,
    /// `username`, `password`, `dbname`, `ssl`). The runner keeps the connection across runs.
    pub fn sql(&mut self, statement: &str) -> Result<Rows, SqlError> {
        self.host.sql(statement)
    }

    /// A value from the instance's key-value store, kept across runs and restarts.
    pub fn kv_get(&mut self, key: &str) -> Option<String> {
        self.host.kv_get(key)
    }

    /// Stores a value; saved when the run ends (unless it crashes). Fails past the store's
    /// limits.
    pub fn kv_set(&mut self, key: &str, value: &str) -> crate::Result {
        self.host.kv_set(key, value).map_err(crate::Error::msg)
    }

    /// Removes a key from the store.
    pub fn kv_delete(&mut self, key: &str) {
        self.host.kv_delete(key);
    }

    /// Every key in the instance's store.
    pub fn kv_keys(&mut self) -> Vec<String> {
        self.host.kv_keys()
    }

    fn submit<T: AsRef<str>>(&mut self, name: &str, kind: MetricType, value: f64, tags: &[T]) {
        self.host.metric(Metric {
            name: name.to_owned(),
            kind,
            value,
            tags: owned(tags),
            hostname: None,
        });
    }
}

fn owned<T: AsRef<str>>(tags: &[T]) -> Vec<String> {
    tags.iter().map(|tag| tag.as_ref().to_owned()).collect()
}
