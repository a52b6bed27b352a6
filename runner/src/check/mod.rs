//! What a check instance is once its configuration is resolved, and what one run of it produced.
//!
//! These are the values that cross module edges: the conf.d loader builds [`Instance`]s, the
//! scheduler runs them through the plugin host, and every [`RunReport`] goes to the pipeline
//! input. They carry no wasmtime or bindgen types, so every other module stays independent of
//! the plugin contract's generated code.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub mod id;
mod pg_target;

pub use pg_target::PgTarget;
pub(crate) use pg_target::SslMode;

/// One configured instance of a check, ready to run.
#[derive(Clone, PartialEq)]
pub struct Instance {
    /// `<check>:<16 hex digits>`, a keyed hash of its config (see [`id`]): stable across
    /// restarts while the config does not change.
    pub id: String,
    pub check: String,
    /// Where it came from, for messages: `file:conf.d/http_check.d/conf.yaml[0]`.
    pub source: String,
    /// The `init_config` section as JSON text (`null` when absent).
    pub init_config: Arc<str>,
    /// The instance section as JSON text, without the reserved keys: what the plugin reads.
    pub config: String,
    pub interval: Duration,
    /// The run's deadline (instance key `timeout`, or the runner's default).
    pub timeout: Duration,
    /// The instance's own `timeout`, when it sets one, which its plugin may read.
    pub timeout_key: Option<Duration>,
    /// Added to everything the instance emits: its `tags` and `service:<service>`.
    pub tags: Vec<String>,
    /// `empty_default_hostname`: submit without a hostname unless the check sets one.
    pub empty_default_hostname: bool,
    /// Hosts the instance may reach over HTTP (see [`crate::plugin::http`]).
    pub allowed_hosts: Vec<String>,
    /// Directories the instance may read, preopened read-only at the same path.
    pub allowed_paths: Vec<PathBuf>,
    /// The PostgreSQL server the instance names, if any (see [`crate::plugin::sql`]); an
    /// invalid one is reported when the plugin first queries it.
    pub postgres: Option<Result<PgTarget, String>>,
    /// The container whose labels define the instance, if they do: its runs take that
    /// container's share of the runners (see [`crate::scheduler`]).
    pub label_container: Option<String>,
}

/// Without `config`, which may hold credentials.
impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("tags", &self.tags)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_paths", &self.allowed_paths)
            .field("postgres", &self.postgres)
            .field("label_container", &self.label_container)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    Gauge,
    Count,
    MonotonicCount,
    Rate,
    Histogram,
    Distribution,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSample {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricType,
    pub value: f64,
    /// Sorted and de-duplicated, instance tags included.
    pub tags: Vec<String>,
    /// Empty when the sample is sent without a hostname.
    pub host: String,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// The Datadog wire value: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Critical => 2,
            Self::Unknown => 3,
        }
    }
    /// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN`, as the Agent's status shows it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
            Self::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceCheck {
    pub name: String,
    pub status: Status,
    pub message: String,
    pub tags: Vec<String>,
    pub(crate) host: String,
    pub(crate) timestamp: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    Error,
    Warning,
    Info,
    Success,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal,
    Low,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub title: String,
    pub text: String,
    pub alert_type: AlertType,
    pub priority: Priority,
    pub(crate) aggregation_key: Option<String>,
    pub source_type_name: Option<String>,
    pub(crate) tags: Vec<String>,
    pub host: String,
    pub(crate) timestamp: i64,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum RunError {
    /// The plugin returned an error: the check ran and says it failed.
    #[error("{0}")]
    Check(String),
    /// The run exceeded its deadline and was interrupted.
    #[error("{0}")]
    Deadline(String),
    /// The plugin tried to grow its memory past the cap.
    #[error("{0}")]
    Memory(String),
    /// The plugin submitted more items than one run may.
    #[error("{0}")]
    Flood(String),
    /// The plugin crashed (a panic, an abort, or any other trap).
    #[error("{0}")]
    Crash(String),
}

/// The outcome of one run of one instance.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub instance_id: String,
    pub(crate) check: String,
    #[serde(serialize_with = "serialize_unix_seconds")]
    pub started: SystemTime,
    #[serde(serialize_with = "serialize_millis")]
    pub duration: Duration,
    pub metrics: Vec<MetricSample>,
    pub service_checks: Vec<ServiceCheck>,
    pub events: Vec<Event>,
    /// Problems that did not fail the run (e.g. a sample dropped for a non-finite value).
    pub warnings: Vec<String>,
    /// Log lines the run caused past its instance's log budget, not written (see
    /// [`crate::plugin::logs`]).
    pub log_lines_suppressed: u64,
    pub error: Option<RunError>,
    /// How what the report holds relates to what the instance sent before.
    #[serde(skip)]
    pub kind: ReportKind,
}

/// How a report relates to the instance's earlier ones: see the aggregator's module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReportKind {
    /// Everything the instance emits now (a check's run, a collector's pass): what an earlier
    /// run emitted and this one did not is gone.
    #[default]
    Run,
    /// One more thing that happened (a container's lifecycle event), which replaces nothing.
    Event,
    /// The instance is no longer scheduled: everything it emitted is gone. Holds nothing else,
    /// and is not a run.
    Unscheduled,
}

impl RunReport {
    /// The report that an instance is no longer scheduled.
    pub(crate) fn unscheduled(instance_id: &str, check: &str) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            check: check.to_owned(),
            started: SystemTime::now(),
            duration: Duration::ZERO,
            metrics: Vec::new(),
            service_checks: Vec::new(),
            events: Vec::new(),
            warnings: Vec::new(),
            log_lines_suppressed: 0,
            error: None,
            kind: ReportKind::Unscheduled,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// `OK`, `WARNING` or `ERROR`, as `runner test-check` and `runner status` show it.
    pub fn state(&self) -> &'static str {
        match (&self.error, self.warnings.is_empty()) {
            (Some(_), _) => "ERROR",
            (None, false) => "WARNING",
            (None, true) => "OK",
        }
    }
}

fn serialize_unix_seconds<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(unix_seconds(*t))
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
