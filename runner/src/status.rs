//! The runner's own HTTP endpoints: the OpenMetrics page (`openmetrics_listen`, see
//! [`crate::openmetrics`]) and the status API, on a loopback address (`status_listen`):
//! - `GET /health`: `200 {"status":"ok",...}` while the runner runs; what `runner status` and
//!   external probes (a Docker `HEALTHCHECK`, the default conf.d's own http_check) poll;
//! - `GET /status`: everything `runner status` prints, as JSON: per-instance run stats and the
//!   conf.d errors.
//!
//! A failing *check* does not make the runner unhealthy: that is the check's own service
//! check's job. `/health` answers `ok` while the runner runs; its own components (the forwarder
//! to come) will report their health here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::containers::ContainerStore;
use crate::discovery::Problems;
use crate::openmetrics::SharedStore;
use crate::scheduler::{InstanceStats, StatsView};

/// What `/status` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub hostname: String,
    pub uptime_s: f64,
    pub confd_path: String,
    /// conf.d files that could not be used, with file and line; checks whose plugin could not
    /// be loaded; container templates that could not be resolved, with the container.
    pub config_errors: Vec<String>,
    /// The running containers known from Docker, by name; absent when containers are off.
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    pub instances: Vec<InstanceStats>,
}

/// What the status API reads from the rest of the runner.
pub struct StatusSource {
    pub hostname: String,
    pub confd_path: String,
    pub config_errors: Problems,
    pub containers: Option<ContainerStore>,
    pub stats: StatsView,
    pub started: Instant,
}

impl StatusSource {
    pub fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: self.hostname.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            confd_path: self.confd_path.clone(),
            config_errors: self.config_errors.list(),
            containers: self.containers.as_ref().map(|store| {
                store
                    .all()
                    .iter()
                    .map(|c| format!("{} ({}, {})", c.name, c.short_id(), c.image))
                    .collect()
            }),
            instances: self.stats.snapshot(),
        }
    }
}

/// Binds `listen` (at start-up, so a taken port is an error the user sees at once) and serves
/// the API until the runtime shuts down.
pub async fn serve(listen: SocketAddr, source: StatusSource) -> std::io::Result<SocketAddr> {
    let source = Arc::new(source);
    serve_http(listen, Arc::new(move |request| route(&source, request))).await
}

/// Binds `listen` and serves the OpenMetrics page at `/metrics`.
pub async fn serve_metrics(listen: SocketAddr, store: SharedStore) -> std::io::Result<SocketAddr> {
    serve_http(
        listen,
        Arc::new(move |request: &Request<Incoming>| {
            match (request.method(), request.uri().path()) {
                (&Method::GET, "/metrics") => {
                    let page = store.lock().unwrap_or_else(|p| p.into_inner()).render();
                    let mut response = Response::new(Full::new(Bytes::from(page)));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    response
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "not found: try /metrics"}),
                ),
            }
        }),
    )
    .await
}

type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// A small HTTP/1 server for the runner's own endpoints.
async fn serve_http(listen: SocketAddr, handler: Handler) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!(%error, address = %bound, "HTTP endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(&request)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%error, "HTTP endpoint: connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}

fn route(source: &StatusSource, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/health") => {
            let status = source.status();
            let failing = status
                .instances
                .iter()
                .filter(|i| i.last_error.is_some())
                .count();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "status": "ok",
                    "uptime_s": status.uptime_s,
                    "instances": status.instances.len(),
                    "failing_instances": failing,
                    "config_errors": status.config_errors.len(),
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

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(body)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
