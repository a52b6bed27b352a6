//! The wasm glue behind [`export_check!`](crate::export_check): the bindings generated from the
//! WIT in `wit/`, and the host that forwards [`Ctx`] calls to them. Not a public API.

use crate::types::{
    AlertType, Event, HttpError, HttpRequest, HttpResponse, Metric, MetricType, Priority, Rows,
    ServiceCheck, SqlError, Status, Value,
};
use crate::{Check, Ctx, Host, Level};
use std::time::Duration;

pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        world: "check",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__kennel_export",
        default_bindings_module: "::kennel_sdk::__private::bindings",
        runtime_path: "::kennel_sdk::__private::wit_bindgen::rt",
    });
}

pub use bindings::__kennel_export as export;
pub use bindings::Guest;
pub use bindings::kennel::check::types::Context;

use bindings::kennel::check::{emit, http, instance, kv, log, sql, types as wit};

/// Runs `C` for one call of the exported `run`.
pub fn run<C: Check>(context: Context) -> Result<(), String> {
    // The runner serialises both sections itself: text that is not JSON is its bug, not the
    // user's, and has no key to name.
    let init_config = serde_json::from_str(&context.init_config)
        .map_err(|e| format!("the runner sent init_config that is not JSON: {e}"))?;
    let instance = serde_json::from_str(&context.instance)
        .map_err(|e| format!("the runner sent an instance that is not JSON: {e}"))?;
    let mut host = WasmHost;
    let timeout = instance::timeout_ms().map(|ms| Duration::from_millis(u64::from(ms)));
    let mut cx = Ctx::new(
        context.check_name,
        context.instance_id,
        init_config,
        timeout,
        &mut host,
    );
    crate::config::run::<C>(&mut cx, instance).map_err(|e| e.to_string())
}

struct WasmHost;

impl Host for WasmHost {
    fn metric(&mut self, metric: Metric) {
        emit::submit_metric(&wit::Metric {
            name: metric.name,
            kind: match metric.kind {
                MetricType::Gauge => wit::MetricType::Gauge,
                MetricType::Count => wit::MetricType::Count,
                MetricType::MonotonicCount => wit::MetricType::MonotonicCount,
                MetricType::Rate => wit::MetricType::Rate,
                MetricType::Histogram => wit::MetricType::Histogram,
                MetricType::Distribution => wit::MetricType::Distribution,
            },
            value: metric.value,
            tags: metric.tags,
            hostname: metric.hostname,
        });
    }

    fn service_check(&mut self, sc: ServiceCheck) {
        emit::submit_service_check(&wit::ServiceCheck {
            name: sc.name,
            status: match sc.status {
                Status::Ok => wit::ServiceCheckStatus::Ok,
                Status::Warning => wit::ServiceCheckStatus::Warning,
                Status::Critical => wit::ServiceCheckStatus::Critical,
                Status::Unknown => wit::ServiceCheckStatus::Unknown,
            },
            message: sc.message,
            tags: sc.tags,
            hostname: sc.hostname,
        });
    }

    fn event(&mut self, event: Event) {
        emit::submit_event(&wit::Event {
            title: event.title,
            text: event.text,
            alert_type: match event.alert_type {
                AlertType::Error => wit::AlertType::Error,
                AlertType::Warning => wit::AlertType::Warning,
                AlertType::Info => wit::AlertType::Info,
                AlertType::Success => wit::AlertType::Success,
            },
            priority: match event.priority {
                Priority::Normal => wit::EventPriority::Normal,
                Priority::Low => wit::EventPriority::Low,
            },
            aggregation_key: event.aggregation_key,
            source_type_name: event.source_type_name,
            tags: event.tags,
            hostname: event.hostname,
            timestamp: event.timestamp,
        });
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }

    fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let wire = http::Request {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
            timeout_ms: request.timeout_ms,
            verify_tls: request.verify_tls,
            follow_redirects: request.follow_redirects,
        };
        match http::send(&wire) {
            Ok(r) => Ok(HttpResponse {
                status: r.status,
                headers: r.headers,
                body: r.body,
                body_truncated: r.body_truncated,
                elapsed: std::time::Duration::from_nanos(r.elapsed_ns),
                cert_not_after: r.cert_not_after,
            }),
            Err(e) => Err(match e {
                http::Error::Denied(m) => HttpError::Denied(m),
                http::Error::Timeout(m) => HttpError::Timeout(m),
                http::Error::Connect(m) => HttpError::Connect(m),
                http::Error::Tls(m) => HttpError::Tls(m),
                http::Error::InvalidRequest(m) => HttpError::InvalidRequest(m),
                http::Error::Other(m) => HttpError::Other(m),
            }),
        }
    }

    fn sql(&mut self, statement: &str) -> Result<Rows, SqlError> {
        match sql::query(statement) {
            Ok(rows) => Ok(Rows {
                columns: rows.columns,
                rows: rows
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(value).collect())
                    .collect(),
                truncated: rows.truncated,
            }),
            Err(e) => Err(match e {
                sql::Error::NotGranted(m) => SqlError::NotGranted(m),
                sql::Error::Connect(m) => SqlError::Connect(m),
                sql::Error::Query(m) => SqlError::Query(m),
                sql::Error::Timeout(m) => SqlError::Timeout(m),
            }),
        }
    }

    fn kv_get(&mut self, key: &str) -> Option<String> {
        kv::get(key)
    }

    fn kv_set(&mut self, key: &str, value: &str) -> Result<(), String> {
        kv::set(key, value)
    }

    fn kv_delete(&mut self, key: &str) {
        kv::delete(key);
    }

    fn kv_keys(&mut self) -> Vec<String> {
        kv::keys()
    }
}

fn value(v: sql::Value) -> Value {
    match v {
        sql::Value::Null => Value::Null,
        sql::Value::Boolean(b) => Value::Bool(b),
        sql::Value::Int(i) => Value::Int(i),
        sql::Value::Float(f) => Value::Float(f),
        sql::Value::Numeric(n) => Value::Numeric(n),
        sql::Value::Text(t) => Value::Text(t),
        sql::Value::Unsupported(t) => Value::Unsupported(t),
    }
}
