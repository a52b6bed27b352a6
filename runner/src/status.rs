//! The status API, on a loopback address (`status_listen`):
//! - `GET /health`: `200 {"status":"ok",...}` while every required component of the runner is
//!   alive ([`crate::health`]), `503 {"status":"failed","failed":[...]}` naming each failed
//!   one and why otherwise; what external probes (a Docker `HEALTHCHECK`, a Kubernetes
//!   liveness probe, the default conf.d's own http_check) poll;
//! - `GET /status`: everything `runner status` prints, as JSON: every component's state,
//!   per-instance run stats and the conf.d errors.
//!
//! A failing *check* does not make the runner unhealthy: that is the check's own service
//! check's job. A failing *component* (the aggregation loop, a listener, an output) does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::aggregator::{ContextsStatus, ContextsView};
use crate::containers::ContainerStore;
use crate::discovery::Problems;
use crate::endpoint::{self, Handler, json};
use crate::forwarder::ForwarderView;
use crate::forwarder::endpoint::EndpointStatus;
use crate::health::{ComponentState, Health};
use crate::scheduler::{InstanceStats, StatsView};

/// What `/status` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) version: String,
    pub(crate) hostname: String,
    pub(crate) uptime_s: f64,
    pub(crate) confd_path: String,
    /// Every component of the runner and its state.
    #[serde(default)]
    pub(crate) components: Vec<ComponentState>,
    /// conf.d files that could not be used, with file and line; checks whose plugin could not
    /// be loaded; container templates that could not be resolved, with the container.
    pub(crate) config_errors: Vec<String>,
    /// The running containers known from Docker, by name; absent when containers are off.
    #[serde(default)]
    pub(crate) containers: Option<Vec<String>>,
    pub(crate) instances: Vec<InstanceStats>,
    /// Each forwarder endpoint's deliveries, drops and queue; empty when nothing is forwarded.
    #[serde(default)]
    pub(crate) forwarder: Vec<EndpointStatus>,
    /// The aggregator's contexts by pool, and the origins holding the most or refused some.
    #[serde(default)]
    pub(crate) contexts: ContextsStatus,
}

/// What the status API reads from the rest of the runner.
pub(crate) struct StatusSource {
    pub(crate) hostname: String,
    pub(crate) confd_path: String,
    pub(crate) config_errors: Problems,
    pub(crate) containers: Option<ContainerStore>,
    pub(crate) stats: StatsView,
    pub(crate) health: Health,
    pub(crate) forwarder: ForwarderView,
    pub(crate) contexts: ContextsView,
    pub(crate) started: Instant,
}

impl StatusSource {
    pub(crate) fn status(&self) -> Status {
        let instances = self.stats.snapshot();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: self.hostname.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            confd_path: self.confd_path.clone(),
            components: self.health.components(),
            config_errors: self.config_errors.list(),
            containers: self.containers.as_ref().map(|store| {
                store
                    .all()
                    .iter()
                    .map(|c| format!("{} ({}, {})", c.name, c.short_id(), c.image))
                    .collect()
            }),
            contexts: self.contexts(&instances),
            instances,
            forwarder: self.forwarder.status(),
        }
    }

    /// The contexts' status, each origin named for people where the runner knows more than
    /// its key: a container's name, an instance's check.
    fn contexts(&self, instances: &[InstanceStats]) -> ContextsStatus {
        let mut contexts = self.contexts.get();
        for origin in &mut contexts.origins {
            origin.name = match origin.origin.split_once(':') {
                Some(("container", id)) => self
                    .containers
                    .as_ref()
                    .and_then(|store| store.get(id))
                    .map(|c| format!("container {} ({})", c.name, c.short_id())),
                Some(("check", crate::collector::INSTANCE_ID)) => {
                    Some("the container collector".to_owned())
                }
                Some(("check", crate::containers::lifecycle::COUNTS_INSTANCE_ID)) => {
                    Some("Docker's container and image counts".to_owned())
                }
                Some(("check", crate::containers::lifecycle::LIFECYCLE_INSTANCE_ID)) => {
                    Some("Docker's container lifecycle events".to_owned())
                }
                Some(("check", id)) => instances
                    .iter()
                    .find(|i| i.instance_id == id)
                    .map(|i| format!("check {} ({})", i.check, i.source)),
                Some(("process", pid)) => Some(format!("host process {pid}")),
                _ => None,
            };
        }
        contexts
    }
}

/// Binds `listen` (at start-up, so a taken port is an error the user sees at once) and serves
/// the API until the runtime shuts down.
pub(crate) async fn serve(listen: SocketAddr, source: StatusSource) -> std::io::Result<SocketAddr> {
    let source = Arc::new(source);
    let handler: Handler = Arc::new(move |request| {
        let response = route(&source, &request);
        Box::pin(async move { response })
    });
    endpoint::serve(listen, handler).await
}

fn route(source: &StatusSource, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => {
            // Probed every few seconds: counts only, not the whole status.
            let (instances, failing) = source.stats.counts();
            let failed = source.health.failed();
            let code = if failed.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(
                code,
                &serde_json::json!({
                    "status": if failed.is_empty() { "ok" } else { "failed" },
                    "failed": failed,
                    "uptime_s": source.started.elapsed().as_secs_f64(),
                    "instances": instances,
                    "failing_instances": failing,
                    "config_errors": source.config_errors.list().len(),
                }),
            )
        }
        (&Method::GET, "/status") => json(StatusCode::OK, &source.status()),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found: try /health or /status"}),
        ),
    }
}
