//! The forwarder: every flush, serialized for the Datadog intake and for Prometheus remote
//! write, and delivered to each configured endpoint through its own retry queue. It is one
//! [`Sink`] of the pipeline, so a dead intake never holds up the aggregation loop.
//!
//! ```text
//! flush ─> Forwarder (the sink's thread) ─┬─ DatadogSerializer ─ payloads ─┬─> endpoint datadog         ─> intake
//!                                         │   (once, shared by each key)   └─> endpoint datadog:other#1  ─> intake
//!                                         └─ RemoteWriteSerializer ───────────> endpoint remote_write:… ─> receiver
//!                                                          each endpoint: RetryQueue (memory, then disk) + Breaker
//! ```
//!
//! - Serializing and compressing is CPU work, done on the sink's thread, once per flush and
//!   protocol ([`datadog`], [`remote_write`]); every endpoint of that protocol queues the same
//!   shared bodies.
//! - Delivery is I/O: one thread runs a small single-threaded tokio runtime with, per endpoint,
//!   a task sending its queue oldest first ([`endpoint`]) and a task keeping its health and
//!   gauges current. Apart from the pipeline's runtime, so a stop can wait for it without
//!   tying up the workers that run checks.
//! - Each endpoint has its own bounded queue ([`queue`]: memory, then disk under
//!   `forwarder_storage_path`, [`spill`]) and circuit breaker ([`breaker`]): one slow or dead
//!   intake never delays another. This differs from the Agent, whose retry queue is shared by
//!   every endpoint, so one dead intake's backlog can push out a healthy one's.
//! - A clean stop sends for up to `forwarder_stop_timeout`, then writes what is left to disk;
//!   the next start sends it first. Payloads spilled before a crash are sent the same way.
//! - Nothing is dropped without being counted by endpoint and reason
//!   (`kennel.forwarder.dropped`, `kennel.forwarder.dropped_items`), shown in `runner status`
//!   and logged at most once a minute per reason.

pub(crate) mod breaker;
pub mod compress;
pub use compress::Compressor;
pub mod config;
pub mod datadog;
pub(crate) mod endpoint;
pub(crate) mod payload;
pub(crate) mod protobuf;
pub(crate) mod queue;
pub mod remote_write;
#[cfg(any(test, feature = "intake-schema"))]
pub mod schema;
pub(crate) mod spill;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::Digest as _;

use self::breaker::Breaker;
use self::compress::Unsent;
use self::config::{EndpointConfig, Protocol};
use self::datadog::{DatadogFormat, DatadogSerializer};
use self::endpoint::{Endpoint, EndpointStatus, StopSignal};
use self::payload::Payload;
use self::queue::{DropReason, Dropped, RetryQueue};
use self::remote_write::RemoteWriteSerializer;
use self::spill::{DiskBudget, SpillDir};
use crate::aggregator::Flush;
use crate::config::RunnerConfig;
use crate::health::{self, Health};
use crate::sink::Sink;
use crate::telemetry::Telemetry;

/// The endpoints, for the status API.
#[derive(Clone, Default)]
pub(crate) struct ForwarderView(Vec<Arc<Endpoint>>);

impl ForwarderView {
    pub(crate) fn status(&self) -> Vec<EndpointStatus> {
        self.0.iter().map(|e| e.status()).collect()
    }
}

/// The forwarder sink.
pub(crate) struct Forwarder {
    datadog: Option<(DatadogSerializer, Vec<Arc<Endpoint>>)>,
    remote_write: Option<(RemoteWriteSerializer, Vec<Arc<Endpoint>>)>,
    endpoints: Vec<Arc<Endpoint>>,
    payloads: Vec<Payload>,
    stop: Arc<StopSignal>,
    stop_timeout: Duration,
    delivery: Option<JoinHandle<Option<()>>>,
}

impl Forwarder {
    /// Starts delivery to every endpoint `config` names; `None` when it names none.
    pub(crate) fn start(
        config: &RunnerConfig,
        hostname: &str,
        telemetry: &Telemetry,
        health: &Health,
    ) -> anyhow::Result<Option<(Self, ForwarderView)>> {
        let configs = config::endpoints(config).map_err(anyhow::Error::msg)?;
        if configs.is_empty() {
            return Ok(None);
        }
        // Each endpoint gets an equal share of the disk budget, so one dead intake's backlog
        // never takes the room another needs.
        let budget = DiskBudget {
            max_bytes: config.forwarder_storage_max_size_in_bytes / configs.len() as u64,
            max_disk_ratio: config.forwarder_storage_max_disk_ratio,
        };
        let outdated = Duration::from_secs(
            config
                .forwarder_outdated_file_in_days
                .saturating_mul(86_400),
        );
        let storage = config
            .forwarder_storage_path
            .as_ref()
            .filter(|_| config.forwarder_storage_max_size_in_bytes > 0);
        if let Some(root) = storage {
            remove_orphans(root, &configs);
        }
        let health_timeout = Duration::from_secs_f64(config.forwarder_health_timeout);
        if config.forwarder_timeout >= config.forwarder_health_timeout {
            tracing::warn!(
                forwarder_timeout = config.forwarder_timeout,
                forwarder_health_timeout = config.forwarder_health_timeout,
                "one slow request can turn /health red: `forwarder_timeout` should be below `forwarder_health_timeout`"
            );
        }
        let endpoints: Vec<Arc<Endpoint>> = configs
            .into_iter()
            .map(|endpoint| {
                let disk = storage.map(|root| open_spill(root, &endpoint, budget, outdated));
                let (disk, dropped, spill_error) = match disk {
                    Some(Ok((disk, dropped))) => (Some(disk), dropped, None),
                    Some(Err(error)) => (None, Vec::new(), Some(error)),
                    None => (None, Vec::new(), None),
                };
                let mut queue =
                    RetryQueue::new(config.forwarder_retry_queue_payloads_max_size, disk);
                if let Some(error) = spill_error {
                    tracing::warn!(endpoint = %endpoint.name, %error, "cannot use the spill directory: queueing in memory only");
                    queue.spill_error = Some(error);
                    queue.spill_errors += 1;
                }
                let reporter = health.register(format!("forwarder:{}", endpoint.name), true);
                let endpoint = Endpoint::new(endpoint, queue, reporter, health_timeout, telemetry);
                for d in dropped {
                    endpoint.count_dropped(d);
                }
                Arc::new(endpoint)
            })
            .collect();

        crate::plugin::http::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.forwarder_timeout))
            .connect_timeout(Duration::from_secs_f64(config.forwarder_timeout.min(10.0)))
            .build()
            .context("cannot make the forwarder's HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the forwarder's runtime")?;
        let stop = Arc::new(StopSignal::default());
        let backoff = Breaker::new(
            Duration::from_secs_f64(config.forwarder_backoff_base),
            Duration::from_secs_f64(config.forwarder_backoff_max),
        );
        let delivery = {
            let endpoints = endpoints.clone();
            let stop = stop.clone();
            health::spawn_thread(
                "kennel-forwarder",
                health.register("forwarder", true),
                move || {
                    runtime.block_on(async move {
                        let mut tasks = tokio::task::JoinSet::new();
                        for endpoint in endpoints {
                            tasks.spawn(endpoint.clone().watch_until(stop.clone()));
                            tasks.spawn(endpoint.run(
                                client.clone(),
                                backoff.clone(),
                                stop.clone(),
                            ));
                        }
                        while let Some(ended) = tasks.join_next().await {
                            if let Err(error) = ended
                                && error.is_panic()
                            {
                                std::panic::resume_unwind(error.into_panic());
                            }
                        }
                    });
                    // A DNS lookup abandoned at the stop deadline runs on a blocking thread: do
                    // not wait for it, the stop has a deadline to keep.
                    runtime.shutdown_background();
                },
            )
            .context("cannot start the forwarder's thread")?
        };

        let of = |datadog: bool| -> Vec<Arc<Endpoint>> {
            endpoints
                .iter()
                .filter(|e| matches!(e.config.protocol, Protocol::Datadog { .. }) == datadog)
                .cloned()
                .collect()
        };
        let hostname: Arc<str> = Arc::from(hostname);
        let datadog = of(true);
        let remote_write = of(false);
        let forwarder = Self {
            datadog: (!datadog.is_empty()).then(|| {
                let format = DatadogFormat {
                    v2_series: config.use_v2_api.series,
                    compressor: config.serializer_compressor_kind,
                };
                (DatadogSerializer::new(format, hostname.clone()), datadog)
            }),
            remote_write: (!remote_write.is_empty())
                .then(|| (RemoteWriteSerializer::new(hostname.clone()), remote_write)),
            endpoints: endpoints.clone(),
            payloads: Vec::new(),
            stop,
            stop_timeout: Duration::from_secs_f64(config.forwarder_stop_timeout),
            delivery: Some(delivery),
        };
        Ok(Some((forwarder, ForwarderView(endpoints))))
    }
}

/// The endpoint's own directory under `root`: its name, made safe, and a hash of its name,
/// URL and key, so a renamed or re-pointed endpoint never sends another's payloads (or sends
/// them with another's key).
fn spill_dir(root: &Path, endpoint: &EndpointConfig) -> PathBuf {
    let safe: String = endpoint
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let key = match &endpoint.protocol {
        Protocol::Datadog { api_key } => api_key.as_str(),
        Protocol::RemoteWrite { .. } => "",
    };
    let digest = sha2::Sha256::digest(format!("{}\n{}\n{key}", endpoint.name, endpoint.url));
    root.join(format!("{safe}-{}", hex::encode(&digest[..6])))
}

fn open_spill(
    root: &Path,
    endpoint: &EndpointConfig,
    budget: DiskBudget,
    outdated: Duration,
) -> Result<(SpillDir, Vec<Dropped>), String> {
    let dir = spill_dir(root, endpoint);
    SpillDir::open(dir.clone(), budget, outdated)
        .map_err(|error| format!("{}: {error}", dir.display()))
}

/// Removes the spill directories of endpoints no longer configured (renamed, re-pointed, given
/// another key, or removed): nothing could deliver their payloads, and they would hold disk
/// outside every budget. Each is said in the log with what it held.
fn remove_orphans(root: &Path, endpoints: &[EndpointConfig]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let wanted: Vec<PathBuf> = endpoints.iter().map(|e| spill_dir(root, e)).collect();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || wanted.contains(&path) {
            continue;
        }
        let payloads = std::fs::read_dir(&path).map_or(0, Iterator::count);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::warn!(
                dir = %path.display(),
                payloads,
                "removed payloads spilled for an endpoint that is no longer configured"
            ),
            Err(error) => {
                tracing::warn!(dir = %path.display(), %error, "cannot remove the spill directory of an endpoint that is no longer configured")
            }
        }
    }
}

impl Sink for Forwarder {
    fn name(&self) -> &str {
        "forwarder"
    }

    fn send(&mut self, flush: &Flush) -> Result<(), String> {
        if let Some((serializer, endpoints)) = &mut self.datadog {
            let unsent = serializer.serialize(flush, &mut self.payloads);
            hand_out(&mut self.payloads, endpoints, unsent);
        }
        if let Some((serializer, endpoints)) = &mut self.remote_write {
            let unsent = serializer.serialize(flush, &mut self.payloads);
            hand_out(&mut self.payloads, endpoints, unsent);
        }
        Ok(())
    }

    fn stop(&mut self) {
        let Some(delivery) = self.delivery.take() else {
            return;
        };
        self.stop.stop(Instant::now() + self.stop_timeout);
        let _ = delivery.join();
        for endpoint in &self.endpoints {
            endpoint.spill_all();
        }
    }
}

impl Drop for Forwarder {
    /// A sink thread that panicked never called [`Sink::stop`]: stop delivery and keep what is
    /// queued all the same.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Queues every payload on every endpoint, and counts on each what could not be made into one
/// (as items: no payload was made for them).
fn hand_out(payloads: &mut Vec<Payload>, endpoints: &[Arc<Endpoint>], unsent: Unsent) {
    let unsent = [
        (DropReason::TooLarge, unsent.too_large),
        (DropReason::NotFinite, unsent.not_finite),
        (DropReason::OutOfOrder, unsent.out_of_order),
        (DropReason::Conflicting, unsent.conflicting),
        (DropReason::SerializeError, unsent.failed),
    ];
    for endpoint in endpoints {
        for (reason, items) in unsent {
            if items > 0 {
                endpoint.count_dropped(Dropped::new(reason, 0, items));
            }
        }
        for payload in payloads.iter() {
            endpoint.push(payload.clone());
        }
    }
    payloads.clear();
}
