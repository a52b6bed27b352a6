//! A native harness: runs a check's logic without wasm, against a host that records what the
//! check submits and answers its HTTP requests from a closure the test provides.
//!
//! ```
//! use kennel_sdk::testing::Harness;
//! use kennel_sdk::{Check, Ctx, HttpResponse, NO_TAGS};
//!
//! struct Hello;
//! impl Check for Hello {
//!     type Config = serde_json::Value;
//!     fn run(cx: &mut Ctx, _config: serde_json::Value) -> kennel_sdk::Result {
//!         cx.gauge("hello.world", 1.0, NO_TAGS);
//!         Ok(())
//!     }
//! }
//!
//! let recorded = Harness::new().run::<Hello>(serde_json::json!({}));
//! assert!(recorded.result.is_ok());
//! assert_eq!(recorded.metric("hello.world").unwrap().value, 1.0);
//! ```

use crate::types::{Event, HttpError, HttpRequest, HttpResponse, Metric, ServiceCheck};
use crate::{Check, Ctx, Host, Level};

type HttpHandler = Box<dyn FnMut(&HttpRequest) -> Result<HttpResponse, HttpError>>;

/// Builds and runs one check invocation natively.
pub struct Harness {
    check_name: String,
    init_config: serde_json::Value,
    http: HttpHandler,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness whose HTTP requests all fail with `Denied`, until [`Harness::on_http`].
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
        }
    }

    pub fn check_name(mut self, name: &str) -> Self {
        self.check_name = name.to_owned();
        self
    }

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

    /// Runs `C` once with `instance` as its instance configuration.
    pub fn run<C: Check>(self, instance: serde_json::Value) -> Recorded {
        let mut host = RecordingHost {
            recorded: Recorded {
                result: Ok(()),
                metrics: Vec::new(),
                service_checks: Vec::new(),
                events: Vec::new(),
                logs: Vec::new(),
                http_requests: Vec::new(),
            },
            http: self.http,
        };
        let result = match serde_json::from_value::<C::Config>(instance) {
            Ok(config) => {
                let instance_id = format!("{}:test", self.check_name);
                let mut cx = Ctx::new(self.check_name, instance_id, self.init_config, &mut host);
                C::run(&mut cx, config)
            }
            Err(error) => Err(crate::Error::msg(format!(
                "invalid instance configuration: {error}"
            ))),
        };
        let RecordingHost { mut recorded, .. } = host;
        recorded.result = result;
        recorded
    }
}

/// Everything one run submitted, in order, and how it ended.
#[derive(Debug)]
pub struct Recorded {
    pub result: crate::Result,
    pub metrics: Vec<Metric>,
    pub service_checks: Vec<ServiceCheck>,
    pub events: Vec<Event>,
    pub logs: Vec<(Level, String)>,
    pub http_requests: Vec<HttpRequest>,
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
}

struct RecordingHost {
    recorded: Recorded,
    http: HttpHandler,
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
}
