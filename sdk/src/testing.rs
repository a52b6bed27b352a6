//! A native harness: runs a check's logic without wasm, against a host that records what the
//! check submits and answers its HTTP requests and SQL queries from closures the test
//! provides. The instance goes through the same deserialization as in the runner, so a bad
//! one reaches [`Check::config_error`] with the same error.
//!
//! ```
//! use kennel_sdk::testing::Harness;
//! use kennel_sdk::{Check, Ctx, NO_TAGS};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     greeting: String,
//! }
//!
//! struct Hello;
//! impl Check for Hello {
//!     type Config = Config;
//!     fn run(cx: &mut Ctx, config: Config) -> kennel_sdk::Result {
//!         cx.gauge("hello.world", 1.0, &[format!("greeting:{}", config.greeting)]);
//!         Ok(())
//!     }
//! }
//!
//! let recorded = Harness::new().run::<Hello>(serde_json::json!({"greeting": "hi"}));
//! assert!(recorded.result.is_ok());
//! assert_eq!(recorded.metric("hello.world").unwrap().value, 1.0);
//!
//! let recorded = Harness::new().run::<Hello>(serde_json::json!({"greeting": ["hi"]}));
//! assert_eq!(
//!     recorded.error(),
//!     "greeting: invalid type: sequence, expected a string"
//! );
//! ```

use std::collections::BTreeMap;

use crate::config::{self, ConfigError};
use crate::types::{
    Event, HttpError, HttpRequest, HttpResponse, Metric, Rows, ServiceCheck, SqlError,
};
use crate::{Check, Ctx, Host, Level, RESERVED_KEYS};
use std::time::Duration;

/// Deserializes `instance` into `T` as the sdk does before [`Check::run`], for unit tests of
/// a config type: the error is the one [`Check::config_error`] would get.
pub fn config<T: serde::de::DeserializeOwned>(
    instance: serde_json::Value,
) -> Result<T, ConfigError> {
    config::deserialize(None, without_reserved(instance).0)
}

/// `instance` as the runner hands it to a check: without the [`RESERVED_KEYS`], and the
/// `timeout` it set, in seconds, when it is a number the runner would accept.
fn without_reserved(mut instance: serde_json::Value) -> (serde_json::Value, Option<Duration>) {
    let mut timeout = None;
    if let Some(map) = instance.as_object_mut() {
        timeout = map
            .get("timeout")
            .and_then(serde_json::Value::as_f64)
            .filter(|seconds| (0.001..=3600.0).contains(seconds))
            .map(Duration::from_secs_f64);
        for key in RESERVED_KEYS {
            map.remove(key);
        }
    }
    (instance, timeout)
}

type HttpHandler = Box<dyn FnMut(&HttpRequest) -> Result<HttpResponse, HttpError>>;
type SqlHandler = Box<dyn FnMut(&str) -> Result<Rows, SqlError>>;

/// Builds and runs one check invocation natively.
pub struct Harness {
    check_name: String,
    init_config: serde_json::Value,
    http: HttpHandler,
    sql: SqlHandler,
    kv: BTreeMap<String, String>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness whose HTTP requests and SQL queries all fail as not granted, until
    /// [`Harness::on_http`] and [`Harness::on_sql`], and whose key-value store starts empty.
    pub fn new() -> Self {
        Self {
            check_name: "test".to_owned(),
            init_config: serde_json::Value::Null,
            http: Box::new(|request| {
                Err(HttpError::Denied(format!(
                    "the test harness has no HTTP handler for {}",
                    request.url
                )))
            }),
            sql: Box::new(|_| {
                Err(SqlError::NotGranted(
                    "the test harness has no SQL handler".to_owned(),
                ))
            }),
            kv: BTreeMap::new(),
        }
    }

    /// Answers the check's SQL queries.
    pub fn on_sql(mut self, handler: impl FnMut(&str) -> Result<Rows, SqlError> + 'static) -> Self {
        self.sql = Box::new(handler);
        self
    }

    /// The key-value store as the run finds it (e.g. [`Recorded::kv`] of a previous run).
    pub fn kv(mut self, store: BTreeMap<String, String>) -> Self {
        self.kv = store;
        self
    }

    /// The check's name, as in `conf.d/<name>.d/`; `test` unless set.
    pub fn check_name(mut self, name: &str) -> Self {
        self.check_name = name.to_owned();
        self
    }

    /// The `init_config` section; null unless set.
    pub fn init_config(mut self, init_config: serde_json::Value) -> Self {
        self.init_config = init_config;
        self
    }

    /// Answers the check's HTTP requests.
    pub fn on_http(
        mut self,
        handler: impl FnMut(&HttpRequest) -> Result<HttpResponse, HttpError> + 'static,
    ) -> Self {
        self.http = Box::new(handler);
        self
    }

    /// Runs `C` once with `instance` as its instance configuration. As in the runner, the
    /// [`RESERVED_KEYS`] are taken out before the check sees it, and its `timeout` is what
    /// [`Ctx::timeout`] returns.
    pub fn run<C: Check>(self, instance: serde_json::Value) -> Recorded {
        let (instance, timeout) = without_reserved(instance);
        let mut host = RecordingHost {
            recorded: Recorded {
                result: Ok(()),
                metrics: Vec::new(),
                service_checks: Vec::new(),
                events: Vec::new(),
                logs: Vec::new(),
                http_requests: Vec::new(),
                sql_queries: Vec::new(),
                kv: self.kv,
            },
            http: self.http,
            sql: self.sql,
        };
        let instance_id = format!("{}:test", self.check_name);
        let mut cx = Ctx::new(
            self.check_name,
            instance_id,
            self.init_config,
            timeout,
            &mut host,
        );
        let result = config::run::<C>(&mut cx, instance);
        let RecordingHost { mut recorded, .. } = host;
        recorded.result = result;
        recorded
    }
}

/// Everything one run submitted, in order, and how it ended.
#[derive(Debug)]
pub struct Recorded {
    /// What the run returned.
    pub result: crate::Result,
    /// The metrics submitted.
    pub metrics: Vec<Metric>,
    /// The service checks submitted.
    pub service_checks: Vec<ServiceCheck>,
    /// The events submitted.
    pub events: Vec<Event>,
    /// The lines logged, with their level.
    pub logs: Vec<(Level, String)>,
    /// The HTTP requests sent.
    pub http_requests: Vec<HttpRequest>,
    /// The SQL statements sent.
    pub sql_queries: Vec<String>,
    /// The key-value store as the run left it.
    pub kv: BTreeMap<String, String>,
}

impl Recorded {
    /// The first metric with this name.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The first service check with this name.
    pub fn service_check(&self, name: &str) -> Option<&ServiceCheck> {
        self.service_checks.iter().find(|s| s.name == name)
    }

    /// Why the run failed.
    ///
    /// # Panics
    ///
    /// When the run succeeded, failing the test that expected it to fail.
    #[track_caller]
    pub fn error(&self) -> &str {
        match &self.result {
            Ok(()) => panic!("the run succeeded"),
            Err(error) => error.message(),
        }
    }

    /// The warnings logged (which mark the run WARNING), in order.
    pub fn warnings(&self) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|(level, _)| *level == Level::Warn)
            .map(|(_, message)| message.as_str())
            .collect()
    }
}

struct RecordingHost {
    recorded: Recorded,
    http: HttpHandler,
    sql: SqlHandler,
}

impl Host for RecordingHost {
    fn metric(&mut self, metric: Metric) {
        self.recorded.metrics.push(metric);
    }

    fn service_check(&mut self, service_check: ServiceCheck) {
        self.recorded.service_checks.push(service_check);
    }

    fn event(&mut self, event: Event) {
        self.recorded.events.push(event);
    }

    fn log(&mut self, level: Level, message: &str) {
        self.recorded.logs.push((level, message.to_owned()));
    }

    fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.recorded.http_requests.push(request.clone());
        (self.http)(request)
    }

    fn sql(&mut self, statement: &str) -> Result<Rows, SqlError> {
        self.recorded.sql_queries.push(statement.to_owned());
        (self.sql)(statement)
    }

    fn kv_get(&mut self, key: &str) -> Option<String> {
        self.recorded.kv.get(key).cloned()
    }

    fn kv_set(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.recorded.kv.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn kv_delete(&mut self, key: &str) {
        self.recorded.kv.remove(key);
    }

    fn kv_keys(&mut self) -> Vec<String> {
        self.recorded.kv.keys().cloned().collect()
    }
}
