//! The pipeline: every component built from the runner's config and wired, once, by hand, top
//! to bottom. `runner run`, the end-to-end tests and the benchmarks all start it here, so what
//! they exercise is what runs in production.
//!
//! ```text
//! DogStatsD listeners ─batches────────┐
//!                                     ├─> aggregation loop ─flush─> sinks (openmetrics, log_summary,
//! scheduler ─reports─┬─> batcher ─────┘        (one thread)         forwarder, ...: a thread and a
//! collector ─reports─┤   (cgroups, networks,                        bounded queue each; the forwarder
//! Docker lifecycle ──┘    the host)                                 a retry queue per endpoint)
//!    ^
//! discovery <── conf.d watcher, Docker watcher ──> container store (tags, origins)
//! ```
//!
//! Every long-lived part registers with the one [`Health`] and is started so that its panic or
//! end is caught and reported: `/health` is red while any required part is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::aggregator::Aggregator;
use crate::aggregator::service::{self, AggregatorHandle, Input};
use crate::collector::{self, CollectorHandle};
use crate::config::RunnerConfig;
use crate::config::confd;
use crate::containers::ContainerStore;
use crate::containers::docker::DockerWatcher;
use crate::containers::lifecycle::Lifecycle;
use crate::discovery::plugins::PluginsWatcher;
use crate::discovery::template::EnvPolicy;
use crate::discovery::watch::ConfdWatcher;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::dogstatsd::decode::{Decoder, Origins};
use crate::dogstatsd::listener::{self, Batch, ListenerStats, Listeners};
use crate::forwarder::{Forwarder, ForwarderView};
use crate::health::{self, Health};
use crate::openmetrics;
use crate::plugin::PluginHost;
use crate::scheduler::Scheduler;
use crate::sink::{LogSummary, Sink, SinkHandle};
use crate::status::{self, StatusSource};
use crate::telemetry::Telemetry;

/// What to start: the runner's config, and outputs beside the configured ones.
pub struct Pipeline {
    config: RunnerConfig,
    sinks: Vec<Box<dyn Sink>>,
    udp: Option<SocketAddr>,
}

/// The running pipeline; [`Running::stop`] stops it in order.
pub struct Running {
    /// Every component's state.
    pub(crate) health: Health,
    /// Where each listener and endpoint is bound (the real ports when `0` was asked for).
    pub udp_addr: Option<SocketAddr>,
    pub status_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// The instances conf.d asked for at start.
    pub(crate) instances_at_start: usize,
    listeners: Listeners,
    aggregator: AggregatorHandle<Batch>,
    aggregator_thread: std::thread::JoinHandle<Option<()>>,
    reports: JoinHandle<Option<(u64, u64)>>,
    stop_discovery: oneshot::Sender<()>,
    discovery: JoinHandle<Option<()>>,
    docker: Option<JoinHandle<Option<()>>>,
    collector: Option<CollectorHandle>,
    _confd_watcher: Option<ConfdWatcher>,
    _plugins_watcher: Option<PluginsWatcher>,
}

impl Pipeline {
    pub fn new(config: RunnerConfig) -> Self {
        Self {
            config,
            sinks: Vec::new(),
            udp: None,
        }
    }

    /// Adds an output beside the configured ones.
    pub fn with_sink(mut self, sink: Box<dyn Sink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Listens for DogStatsD over UDP on `addr` whatever `dogstatsd_port` says (port 0: any
    /// free port, see [`Running::udp_addr`]).
    pub fn with_udp(mut self, addr: SocketAddr) -> Self {
        self.udp = Some(addr);
        self
    }

    /// Starts every component. Errors name what could not start and the key to change.
    pub async fn start(self) -> anyhow::Result<Running> {
        let Self {
            config,
            sinks: extra_sinks,
            udp,
        } = self;
        let health = Health::new();
        let telemetry = Arc::new(Telemetry::new());
        // Before any instance is built: every id of this process comes from this key.
        crate::check::id::use_key_from(config.plugins.state_path.as_deref());
        let hostname = config.resolved_hostname();
        let host = Arc::new(
            PluginHost::new(&config.plugins, hostname.clone(), config.check_runners)
                .context("cannot start the plugin host")?
                .with_telemetry(telemetry.clone()),
        );
        // The container store: followed from Docker, read by discovery and the DogStatsD
        // decoder.
        let containers = ContainerStore::new();

        // Outputs: the OpenMetrics page, a summary in the log, the forwarder when it has
        // endpoints, and any the caller added.
        let page = openmetrics::Page::new();
        let mut outputs: Vec<Box<dyn Sink>> = vec![page.sink(), Box::new(LogSummary::default())];
        let forwarder = match Forwarder::start(&config, &hostname, &telemetry, &health)
            .context("cannot start the forwarder")?
        {
            Some((forwarder, view)) => {
                outputs.push(Box::new(forwarder));
                view
            }
            None => ForwarderView::default(),
        };
        outputs.extend(extra_sinks);
        let sinks = outputs
            .into_iter()
            .map(|sink| {
                SinkHandle::start(sink, &telemetry, &health)
                    .map(|handle| Box::new(handle) as Box<dyn service::Output>)
            })
            .collect::<Result<Vec<_>, _>>()
            .context("cannot start an output")?;

        // The aggregation loop, with the DogStatsD decoder on its thread.
        let aggregator = Aggregator::with_telemetry(config.aggregator.clone(), telemetry.clone())
            .context("invalid `aggregator` settings")?;
        let contexts = aggregator.contexts_view();
        let decoder = Decoder::new(
            hostname.clone(),
            Origins {
                trust_client: config.dogstatsd_origin_detection_client,
                containers: Some(containers.clone()),
                cardinality: config.dogstatsd_tag_cardinality,
            },
            &telemetry,
        );
        let (aggregator, aggregator_thread) = service::start(aggregator, decoder, sinks, &health)
            .context("cannot start the aggregator")?;

        // DogStatsD listeners, handing batches to the loop.
        let mut listen = config.dogstatsd();
        if udp.is_some() {
            listen.udp = udp;
        }
        let listeners = {
            let into = aggregator.clone();
            let sink: listener::Sink = Arc::new(move |batch| into.send(Input::Batch(batch)));
            Listeners::start(
                &listen,
                sink,
                Arc::new(ListenerStats::new(&telemetry)),
                &health,
            )?
        };
        if let Some(addr) = listeners.udp_addr {
            tracing::info!(address = %addr, "DogStatsD listening on UDP");
        }
        for path in [&listen.socket, &listen.stream_socket]
            .into_iter()
            .flatten()
        {
            tracing::info!(path = %path.display(), "DogStatsD listening on a Unix socket");
        }
        if listen.socket.is_some() {
            listener::warn_on_small_datagram_queue();
        }
        let metrics_addr = match config.openmetrics_listen {
            Some(listen) => {
                let bound = openmetrics::serve(listen, page)
                    .await
                    .with_context(|| format!("cannot listen on {listen} (`openmetrics_listen`)"))?;
                tracing::info!(address = %bound, "OpenMetrics endpoint at /metrics");
                Some(bound)
            }
            None => None,
        };

        // Checks: the scheduler's reports go to the loop in batches.
        let (report_sender, report_inbox) = mpsc::channel(1024);
        let reports = health::spawn_task(
            health.register("check_reports", true),
            service::forward_reports(report_inbox, aggregator.clone()),
        );
        let scheduler = Scheduler::new(
            host.clone(),
            config.check_runners,
            report_sender.clone(),
            health.register("scheduler", true),
        )
        .with_label_runners(&config.label_checks);
        let mut discovery = Discovery::new(discovery_config(&config), host.clone(), scheduler);

        // The collector: containers' cgroups and networks, and the host, every interval.
        let collector = match collector::config(&config, &hostname) {
            Some(settings) => Some(
                collector::start(
                    settings,
                    config.docker_socket.is_some().then(|| containers.clone()),
                    report_sender.clone(),
                    &telemetry,
                    health.register("collector", false),
                )
                .context("cannot start the collector")?,
            ),
            None => None,
        };

        // Live conf.d: every save is reconciled within a second. Watching starts before the
        // first load, so a file saved in between is not missed.
        let (confd_changes, confd_inbox) = mpsc::channel(4);
        let confd_health = health.register("confd_watcher", false);
        let confd_watcher = match ConfdWatcher::start(
            config.confd_path.clone(),
            confd::Symlinks::of(&config),
            confd_changes,
            confd_health.clone(),
        ) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, confd = %config.confd_path.display(), "cannot watch conf.d: changes take effect at the next start");
                confd_health.degraded(format!(
                    "cannot watch {}: changes take effect at the next start ({error})",
                    config.confd_path.display()
                ));
                None
            }
        };
        // Live plugins: a rebuilt `.wasm` runs from its instances' next run.
        let (plugin_changes, plugin_inbox) = mpsc::channel(16);
        let plugins_health = health.register("plugins_watcher", false);
        let plugins_watcher = match PluginsWatcher::start(
            config.plugins.path.clone(),
            host,
            plugin_changes,
            plugins_health.clone(),
        ) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, plugins = %config.plugins.path.display(), "cannot watch the plugins directory: a changed plugin takes effect at the next start");
                plugins_health.degraded(format!(
                    "cannot watch {}: a changed plugin takes effect at the next start ({error})",
                    config.plugins.path.display()
                ));
                None
            }
        };
        let loaded = confd::load_dir(&config.confd_path, confd::Symlinks::of(&config))
            .with_context(|| {
                format!(
                    "cannot read the conf.d directory {}",
                    config.confd_path.display()
                )
            })?;

        // The status API comes up before the first run, which may be a check of it.
        let status_addr = match config.status_listen {
            Some(listen) => {
                let source = StatusSource {
                    hostname: hostname.clone(),
                    confd_path: config.confd_path.display().to_string(),
                    config_errors: discovery.problems(),
                    containers: config.docker_socket.is_some().then(|| containers.clone()),
                    stats: discovery.stats(),
                    health: health.clone(),
                    forwarder: forwarder.clone(),
                    contexts: contexts.clone(),
                    started: Instant::now(),
                };
                let bound = status::serve(listen, source)
                    .await
                    .with_context(|| format!("cannot listen on {listen} (`status_listen`)"))?;
                tracing::info!(address = %bound, "status API listening");
                Some(bound)
            }
            None => None,
        };
        discovery.apply_confd(loaded);
        let instances_at_start = discovery.wanted();

        // Containers: followed from Docker, their checks resolved and scheduled as they come.
        let (container_changes, container_inbox) = mpsc::channel(256);
        let docker = config.docker_socket.clone().map(|socket| {
            let reporter = health.register("docker", false);
            health::spawn_task(
                reporter.clone(),
                DockerWatcher {
                    socket,
                    procfs: config.procfs_root.clone(),
                    tagger: Arc::new(config.tagger()),
                    store: containers,
                    events: container_changes,
                    health: reporter,
                    lifecycle: Some(Lifecycle {
                        reports: report_sender.clone(),
                        hostname: hostname.clone(),
                        cardinality: config.checks_tag_cardinality,
                        counts_every: (config.container_collection_interval > 0.0)
                            .then(|| Duration::from_secs_f64(config.container_collection_interval)),
                    }),
                }
                .run(),
            )
        });
        let (stop_discovery, stopped) = oneshot::channel();
        let discovery = health::spawn_task(
            health.register("discovery", true),
            discovery.run(confd_inbox, container_inbox, plugin_inbox, stopped),
        );

        Ok(Running {
            health,
            udp_addr: listeners.udp_addr,
            status_addr,
            metrics_addr,
            instances_at_start,
            listeners,
            aggregator,
            aggregator_thread,
            reports,
            stop_discovery,
            discovery,
            docker,
            collector,
            _confd_watcher: confd_watcher,
            _plugins_watcher: plugins_watcher,
        })
    }
}

impl Running {
    /// Stops every component in order (inputs first, then the loop's last flush, then the
    /// sinks, each sending what it has queued); returns how many check runs there were, and
    /// how many failed.
    pub async fn stop(self) -> (u64, u64) {
        self.health.stop();
        if let Some(docker) = &self.docker {
            docker.abort();
        }
        let _ = self.stop_discovery.send(());
        let _ = self.discovery.await;
        if let Some(collector) = self.collector {
            let _ = tokio::task::spawn_blocking(move || collector.stop()).await;
        }
        drop(self.listeners);
        drop(self.aggregator);
        let (runs, failed) = self.reports.await.ok().flatten().unwrap_or_default();
        // The last handle went with the report batcher and the listeners: the loop flushes,
        // closes the sinks and ends.
        let thread = self.aggregator_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        (runs, failed)
    }

    /// Test builds only: make a component panic, as a bug would.
    #[cfg(feature = "fault-injection")]
    pub fn inject(&self, fault: Fault) {
        match fault {
            Fault::AggregatorPanic => {
                self.aggregator.send(Input::Panic);
            }
            Fault::ListenerPanic => self.listeners.inject_panic(),
        }
    }
}

/// Faults a test can inject into a running pipeline.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The aggregation loop panics.
    AggregatorPanic,
    /// Every DogStatsD datagram listener panics.
    ListenerPanic,
}

/// What discovery needs from the runner's config.
pub(crate) fn discovery_config(config: &RunnerConfig) -> DiscoveryConfig {
    DiscoveryConfig {
        hostname: config.resolved_hostname(),
        env: Arc::new(EnvPolicy::new(config.ad_allowed_env_vars.clone())),
        cardinality: config.checks_tag_cardinality,
        default_timeout: config.plugins.default_timeout(),
        labels: config.label_checks.clone(),
    }
}
