//! What a plugin can call: the host side of the WIT imports, and the per-run state they work on.
//!
//! Everything a plugin hands over is bounded before it is kept: each call may move at most
//! [`HOSTCALL_BYTES`] into the host (wasmtime's hostcall fuel), each run may submit at most
//! `plugins.max_items_per_run` items and [`RUN_BYTES`] of text, and each field has the limit the
//! Datadog intake has anyway (names and tags 200 characters, 100 tags, event titles 100 and
//! texts 4000 characters, messages 4 KiB). A run past a run-wide limit traps at once (a
//! *flood*); a single bad item is dropped with a warning and the run goes on.
//!
//! What a plugin hands over reaches the log and `/status` only through [`RunCtx::warn`] and
//! [`RunCtx::log_line`], which escape and cut it and hold it to the instance's log budget (see
//! [`super::logs`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Level;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::kennel::check::{
    emit, http as wit_http, instance as wit_instance, kv as wit_kv, log as wit_log, sql as wit_sql,
    types as wit,
};
use super::http::{Grant, HttpClient};
use super::kv::RunStore;
use super::logs::{SHOWN_MAX, SharedBudget, admit_line, shown};
use super::sql::SqlConnections;
use crate::check::PgTarget;
use crate::check::{self, MetricSample};

/// The most bytes one call may move from a plugin into the host.
pub(crate) const HOSTCALL_BYTES: usize = 1 << 20;
/// The most bytes of text (names, tags, messages, log lines) one run may submit.
pub(crate) const RUN_BYTES: usize = 32 << 20;
/// Datadog's limits on what it ingests.
const MAX_NAME_LEN: usize = 200;
const MAX_TAG_LEN: usize = 200;
const MAX_TAGS: usize = 100;
const MAX_HOSTNAME_LEN: usize = 255;
const MAX_TITLE_LEN: usize = 100;
const MAX_TEXT_LEN: usize = 4000;
const MAX_MESSAGE_LEN: usize = 4096;
/// Warnings kept per run; more are counted in the last one.
const MAX_WARNINGS: usize = 20;
/// Resource handles (WASI streams, pollables) a run may hold at once.
pub(crate) const MAX_HANDLES: usize = 1_000;

/// Everything one run's Store holds.
pub(crate) struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) run: RunCtx,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the total linear memory of a run, across all the memories of its component.
pub(crate) struct MemoryLimiter {
    pub(crate) cap: usize,
    total: usize,
    /// The total a refused growth asked for.
    pub(crate) denied: Option<usize>,
}

impl MemoryLimiter {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            total: 0,
            denied: None,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.cap {
            self.denied = Some(total);
            return Ok(false);
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The pool's per-table element limit applies too; this only keeps an unbounded table
        // from growing without one.
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// What the host functions of one run need, and what they collected.
pub(crate) struct RunCtx {
    pub(crate) check: String,
    pub(crate) instance_id: String,
    pub(crate) instance_tags: Vec<String>,
    pub(crate) default_host: String,
    pub(crate) timestamp: f64,
    pub(crate) items: u32,
    pub(crate) max_items: u32,
    pub(crate) bytes: usize,
    /// Why the run was stopped for submitting too much, if it was.
    pub(crate) flooded: Option<String>,
    pub(crate) metrics: Vec<MetricSample>,
    pub(crate) service_checks: Vec<check::ServiceCheck>,
    pub(crate) events: Vec<check::Event>,
    pub(crate) warnings: Vec<String>,
    pub(crate) dropped_warnings: usize,
    /// The instance's log budget, kept across its runs.
    pub(crate) log_budget: SharedBudget,
    pub(crate) http: Arc<HttpClient>,
    pub(crate) grant: Grant,
    pub(crate) deadline: Instant,
    /// The instance's own `timeout`, for `instance.timeout-ms`.
    pub(crate) timeout_key: Option<Duration>,
    pub(crate) sql: Arc<SqlConnections>,
    pub(crate) postgres: Option<Result<PgTarget, String>>,
    pub(crate) kv: RunStore,
}

impl RunCtx {
    /// Counts one submitted item of `bytes` bytes; past a run-wide limit the run traps.
    fn admit(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.items += 1;
        self.bytes += bytes;
        if self.items > self.max_items {
            self.flooded = Some(format!(
                "submitted more than {} items in one run (metrics, service checks, events and log lines count; runner `plugins.max_items_per_run`)",
                self.max_items
            ));
        } else if self.bytes > RUN_BYTES {
            self.flooded = Some(format!(
                "submitted more than {} MiB of names, tags and text in one run",
                RUN_BYTES >> 20
            ));
        }
        match self.flooded {
            Some(_) => Err(wasmtime::Error::msg("per-run submission limit exceeded")),
            None => Ok(()),
        }
    }

    /// The item's tags with the instance's, sorted and de-duplicated; `None` (with a warning)
    /// when there are too many.
    fn tags(&mut self, what: &str, own: Vec<String>) -> Option<Vec<String>> {
        if own.len() > MAX_TAGS {
            self.warn(format!(
                "dropped {what}: it has {} tags, more than {MAX_TAGS}",
                own.len()
            ));
            return None;
        }
        let mut tags: Vec<String> = own
            .into_iter()
            .map(|tag| truncated(tag, MAX_TAG_LEN))
            .collect();
        tags.extend(self.instance_tags.iter().cloned());
        tags.sort_unstable();
        tags.dedup();
        Some(tags)
    }

    /// The item's hostname, or the default; `None` (with a warning) when it is too long.
    fn host(&mut self, what: &str, own: Option<String>) -> Option<String> {
        match own {
            Some(host) if host.len() > MAX_HOSTNAME_LEN => {
                self.warn(format!(
                    "dropped {what}: its hostname is longer than {MAX_HOSTNAME_LEN} characters"
                ));
                None
            }
            Some(host) => Some(host),
            None => Some(self.default_host.clone()),
        }
    }

    /// Keeps a warning for the run's report and logs it; plugin text in it is escaped and cut.
    pub(crate) fn warn(&mut self, warning: String) {
        if self.warnings.len() >= MAX_WARNINGS {
            self.dropped_warnings += 1;
            return;
        }
        let warning = shown(&warning, SHOWN_MAX);
        self.log_line(Level::WARN, &warning);
        self.warnings.push(warning);
    }

    /// Writes one line this run caused, already escaped, at `level`, within the instance's log
    /// budget. A line the log level filters out costs nothing.
    pub(crate) fn log_line(&mut self, level: Level, line: &str) {
        let enabled = match level {
            Level::TRACE => tracing::enabled!(Level::TRACE),
            Level::DEBUG => tracing::enabled!(Level::DEBUG),
            Level::INFO => tracing::enabled!(Level::INFO),
            Level::WARN => tracing::enabled!(Level::WARN),
            Level::ERROR => tracing::enabled!(Level::ERROR),
        };
        if !enabled {
            return;
        }
        let (check, instance) = (&self.check, &self.instance_id);
        if !admit_line(&self.log_budget, check, instance) {
            return;
        }
        match level {
            Level::TRACE => tracing::trace!(check = %check, instance = %instance, "{line}"),
            Level::DEBUG => tracing::debug!(check = %check, instance = %instance, "{line}"),
            Level::INFO => tracing::info!(check = %check, instance = %instance, "{line}"),
            Level::WARN => tracing::warn!(check = %check, instance = %instance, "{line}"),
            Level::ERROR => tracing::error!(check = %check, instance = %instance, "{line}"),
        }
    }

    /// The warnings, with a last one counting those not kept.
    pub(crate) fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.warnings);
        if self.dropped_warnings > 0 {
            warnings.push(format!("... and {} more warnings", self.dropped_warnings));
        }
        warnings
    }
}

/// `text` cut to at most `max` bytes, on a character boundary, marked with `...`.
pub(crate) fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

fn text_bytes<'a>(parts: impl IntoIterator<Item = &'a str>) -> usize {
    parts.into_iter().map(str::len).sum()
}

impl wit::Host for RunState {}

impl emit::Host for RunState {
    fn submit_metric(&mut self, m: wit::Metric) -> wasmtime::Result<()> {
        let run = &mut self.run;
        let bytes = text_bytes(
            std::iter::once(m.name.as_str())
                .chain(m.tags.iter().map(String::as_str))
                .chain(m.hostname.as_deref()),
        );
        run.admit(bytes)?;
        if m.name.is_empty() || m.name.len() > MAX_NAME_LEN {
            let shown = truncated(m.name, 100);
            run.warn(format!(
                "dropped a metric with an invalid name `{shown}`: names are 1 to {MAX_NAME_LEN} characters"
            ));
            return Ok(());
        }
        if !m.value.is_finite() {
            run.warn(format!(
                "dropped metric `{}`: its value {} is not a finite number",
                m.name, m.value
            ));
            return Ok(());
        }
        let what = format!("metric `{}`", m.name);
        let (Some(tags), Some(host)) = (run.tags(&what, m.tags), run.host(&what, m.hostname))
        else {
            return Ok(());
        };
        run.metrics.push(MetricSample {
            kind: match m.kind {
                wit::MetricType::Gauge => check::MetricType::Gauge,
                wit::MetricType::Count => check::MetricType::Count,
                wit::MetricType::MonotonicCount => check::MetricType::MonotonicCount,
                wit::MetricType::Rate => check::MetricType::Rate,
                wit::MetricType::Histogram => check::MetricType::Histogram,
                wit::MetricType::Distribution => check::MetricType::Distribution,
            },
            name: m.name,
            value: m.value,
            tags,
            host,
            timestamp: run.timestamp,
        });
        Ok(())
    }

    fn submit_service_check(&mut self, sc: wit::ServiceCheck) -> wasmtime::Result<()> {
        let run = &mut self.run;
        let bytes = text_bytes(
            [sc.name.as_str()]
                .into_iter()
                .chain(sc.message.as_deref())
                .chain(sc.tags.iter().map(String::as_str))
                .chain(sc.hostname.as_deref()),
        );
        run.admit(bytes)?;
        if sc.name.is_empty() || sc.name.len() > MAX_NAME_LEN {
            let shown = truncated(sc.name, 100);
            run.warn(format!(
                "dropped a service check with an invalid name `{shown}`: names are 1 to {MAX_NAME_LEN} characters"
            ));
            return Ok(());
        }
        let what = format!("service check `{}`", sc.name);
        let (Some(tags), Some(host)) = (run.tags(&what, sc.tags), run.host(&what, sc.hostname))
        else {
            return Ok(());
        };
        run.service_checks.push(check::ServiceCheck {
            status: match sc.status {
                wit::ServiceCheckStatus::Ok => check::Status::Ok,
                wit::ServiceCheckStatus::Warning => check::Status::Warning,
                wit::ServiceCheckStatus::Critical => check::Status::Critical,
                wit::ServiceCheckStatus::Unknown => check::Status::Unknown,
            },
            name: sc.name,
            message: truncated(sc.message.unwrap_or_default(), MAX_MESSAGE_LEN),
            tags,
            host,
            timestamp: run.timestamp,
        });
        Ok(())
    }

    fn submit_event(&mut self, e: wit::Event) -> wasmtime::Result<()> {
        let run = &mut self.run;
        let bytes = text_bytes(
            [e.title.as_str(), e.text.as_str()]
                .into_iter()
                .chain(e.aggregation_key.as_deref())
                .chain(e.source_type_name.as_deref())
                .chain(e.tags.iter().map(String::as_str))
                .chain(e.hostname.as_deref()),
        );
        run.admit(bytes)?;
        let what = format!("event `{}`", truncated(e.title.clone(), 100));
        let (Some(tags), Some(host)) = (run.tags(&what, e.tags), run.host(&what, e.hostname))
        else {
            return Ok(());
        };
        run.events.push(check::Event {
            title: truncated(e.title, MAX_TITLE_LEN),
            text: truncated(e.text, MAX_TEXT_LEN),
            alert_type: match e.alert_type {
                wit::AlertType::Error => check::AlertType::Error,
                wit::AlertType::Warning => check::AlertType::Warning,
                wit::AlertType::Info => check::AlertType::Info,
                wit::AlertType::Success => check::AlertType::Success,
            },
            priority: match e.priority {
                wit::EventPriority::Normal => check::Priority::Normal,
                wit::EventPriority::Low => check::Priority::Low,
            },
            aggregation_key: e.aggregation_key.map(|k| truncated(k, MAX_NAME_LEN)),
            source_type_name: e.source_type_name.map(|s| truncated(s, MAX_NAME_LEN)),
            tags,
            host,
            timestamp: e.timestamp.unwrap_or(run.timestamp as i64),
        });
        Ok(())
    }
}

impl wit_log::Host for RunState {
    fn log(&mut self, level: wit_log::Level, message: String) -> wasmtime::Result<()> {
        let run = &mut self.run;
        run.admit(message.len())?;
        let level = match level {
            wit_log::Level::Trace => Level::TRACE,
            wit_log::Level::Debug => Level::DEBUG,
            wit_log::Level::Info => Level::INFO,
            // A check's warning is also the run's, as `self.warning()` is in a Datadog check:
            // it shows in `runner status` and `test-check`, and marks the instance WARNING.
            wit_log::Level::Warn => {
                run.warn(message);
                return Ok(());
            }
            wit_log::Level::Error => Level::ERROR,
        };
        run.log_line(level, &shown(&message, SHOWN_MAX));
        Ok(())
    }
}

impl wit_http::Host for RunState {
    async fn send(
        &mut self,
        request: wit_http::Request,
    ) -> wasmtime::Result<Result<wit_http::Response, wit_http::Error>> {
        let run = &self.run;
        Ok(run.http.send(&run.grant, request, run.deadline).await)
    }
}

impl wit_sql::Host for RunState {
    async fn query(
        &mut self,
        statement: String,
    ) -> wasmtime::Result<Result<wit_sql::Rows, wit_sql::Error>> {
        let run = &self.run;
        Ok(match &run.postgres {
            None => Err(wit_sql::Error::NotGranted(format!(
                "{} names no PostgreSQL server: set `host` (and `port`, `username`, `password`, `dbname`) in its config",
                run.grant.who
            ))),
            Some(Err(problem)) => Err(wit_sql::Error::NotGranted(format!(
                "{}: invalid server settings: {problem}",
                run.grant.who
            ))),
            Some(Ok(target)) => {
                run.sql
                    .query(
                        &run.grant.who,
                        &run.instance_id,
                        target,
                        &statement,
                        run.deadline,
                    )
                    .await
            }
        })
    }
}

impl wit_instance::Host for RunState {
    fn timeout_ms(&mut self) -> wasmtime::Result<Option<u32>> {
        // At most an hour, checked where the config is read.
        Ok(self
            .run
            .timeout_key
            .map(|timeout| u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)))
    }
}

impl wit_kv::Host for RunState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.run.kv.store.get(&key).cloned())
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.run.kv.set(key, value))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.run.kv.delete(&key);
        Ok(())
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.run.kv.store.keys().cloned().collect())
    }
}
