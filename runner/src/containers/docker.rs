//! Following the Docker daemon: the containers running now, and every change after.
//!
//! At each (re)connection the watcher lists the running containers, inspects each, and
//! reconciles the store with that list: containers that went away while the daemon was
//! unreachable are unset, new ones set. Then it follows the event stream (`type=container`,
//! actions `start`, `die`, `destroy`, `rename`, `health_status`) with `since` set to the moment
//! just before that listing, so nothing that happened during the listing is missed. Events
//! from the outage itself are not replayed: the listing already holds their outcome, and a
//! replayed `die` of a container that has since restarted would only stop and restart its
//! checks. Every update is idempotent (a container is re-inspected and compared with what the
//! store holds), so a duplicate event never doubles a container or its checks.
//!
//! `start`, `rename` and `health_status` re-inspect the container (a stopped one is unset);
//! `die` and `destroy` unset it. A container that vanishes between the event and the inspect
//! (404) is unset.
//!
//! When the daemon is unreachable the watcher retries with exponential back-off (0.5 s doubling
//! to 10 s; a stream that just ends, as on a daemon restart, is retried at once) and logs the
//! first failure and the recovery, not every attempt. A socket path where nothing exists is a
//! single notice: the runner works without containers and picks Docker up when it appears.
//!
//! With a [`Lifecycle`], the watcher also reports `oom`, `die`, `kill` and `restart` as events
//! and `docker.exit` service checks, and counts containers and images on an interval
//! ([`super::lifecycle`]).
//!
//! Only read-only API calls are made: version, list (containers and images), inspect, events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::lifecycle::{self, Lifecycle, Listed};
use super::tagger::TaggerConfig;
use super::{Container, ContainerEvent, ContainerStore, Port, Protocol};
use crate::health::Reporter;

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Timeout of each API request (the event stream excepted).
const REQUEST_TIMEOUT_S: u64 = 10;
/// The most ports a range in `ExposedPorts` expands to.
const MAX_PORT_RANGE: u32 = 1024;

/// The Docker socket the runner uses by default: `DOCKER_HOST` when it names a Unix socket,
/// else `/var/run/docker.sock`.
pub(crate) fn default_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("cannot reach the Docker daemon at {path}: {source}")]
    Connect { path: String, source: DockerError },
    #[error("Docker API call `{call}` failed: {source}")]
    Api {
        call: &'static str,
        source: DockerError,
    },
}

/// A read-only client of one Docker daemon.
#[derive(Clone)]
pub(crate) struct DockerClient {
    docker: Docker,
    tagger: Arc<TaggerConfig>,
    procfs: PathBuf,
}

impl DockerClient {
    /// Connects to the daemon at `socket` and agrees on an API version with it; containers'
    /// cgroups are read from the host's procfs at `procfs`.
    pub(crate) async fn connect(
        socket: &Path,
        tagger: Arc<TaggerConfig>,
        procfs: &Path,
    ) -> Result<Self, WatchError> {
        let path = socket.display().to_string();
        let connect_error = |source| WatchError::Connect {
            path: path.clone(),
            source,
        };
        let docker =
            Docker::connect_with_unix(&path, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
                .map_err(connect_error)?;
        // The daemon may be older than the client's default API version.
        let docker = docker.negotiate_version().await.map_err(connect_error)?;
        Ok(Self {
            docker,
            tagger,
            procfs: procfs.to_owned(),
        })
    }

    /// Every running container, inspected. A container that stops while being inspected is
    /// left out.
    pub(crate) async fn running(&self) -> Result<Vec<Container>, WatchError> {
        let summaries = self.list(false).await?;
        let mut containers = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            if let Some(container) = self.inspect(&id).await? {
                containers.push(container);
            }
        }
        Ok(containers)
    }

    /// The daemon's containers: the running ones, or `all` of them.
    async fn list(&self, all: bool) -> Result<Vec<ContainerSummary>, WatchError> {
        let options = ListContainersOptions {
            all,
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|source| WatchError::Api {
                call: "list containers",
                source,
            })
    }

    /// The container `id` if it is running; `None` if it stopped or no longer exists.
    pub(crate) async fn inspect(&self, id: &str) -> Result<Option<Container>, WatchError> {
        match self.docker.inspect_container(id, None).await {
            Ok(response) => Ok(container_from(response, &self.tagger).map(|mut container| {
                container.cgroup = read_cgroup(&self.procfs, container.pid, &container.id);
                container
            })),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(WatchError::Api {
                call: "inspect container",
                source,
            }),
        }
    }
}

/// Keeps the store in step with the daemon until the receiver of `events` goes away.
pub(crate) struct DockerWatcher {
    pub(crate) socket: PathBuf,
    /// The host's procfs (`procfs_root`), for containers' cgroups.
    pub(crate) procfs: PathBuf,
    pub(crate) tagger: Arc<TaggerConfig>,
    pub(crate) store: ContainerStore,
    /// Every change applied to the store, in order.
    pub(crate) events: mpsc::Sender<ContainerEvent>,
    /// Degraded while Docker cannot be reached (containers stay as last seen).
    pub(crate) health: Reporter,
    /// Where lifecycle events and counts go; `None`: not reported.
    pub(crate) lifecycle: Option<Lifecycle>,
}

impl DockerWatcher {
    pub(crate) async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        // Log the first connection like a recovery.
        let mut down_since_logged = true;
        let mut missing_logged = false;
        loop {
            if !self.socket.exists() {
                self.health
                    .degraded(format!("no Docker socket at {}", self.socket.display()));
                if !missing_logged {
                    tracing::info!(socket = %self.socket.display(), "no Docker daemon socket: container autodiscovery waits for one (set `docker_socket` to change the path, `null` to turn it off)");
                    missing_logged = true;
                    down_since_logged = true;
                }
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
            match self.follow(&mut down_since_logged).await {
                Ok(Stop::Closed) => return,
                Ok(Stop::StreamEnded) => {
                    tracing::warn!(socket = %self.socket.display(), "the Docker event stream ended: reconnecting");
                    down_since_logged = true;
                    backoff = FIRST_BACKOFF;
                    // A daemon shutting down ends the stream before it stops answering.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    self.health.degraded(format!("Docker unavailable: {error}"));
                    if !down_since_logged {
                        tracing::warn!(%error, "Docker unavailable: retrying with back-off; containers stay as last seen until it returns");
                        down_since_logged = true;
                    } else {
                        tracing::debug!(%error, "Docker still unavailable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            if self.events.is_closed() {
                return;
            }
        }
    }

    /// One connection: resync, then follow events (from before the resync) until the stream
    /// ends.
    async fn follow(&self, down_logged: &mut bool) -> Result<Stop, WatchError> {
        let client = DockerClient::connect(&self.socket, self.tagger.clone(), &self.procfs).await?;
        let started = unix_now();
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "event".to_owned(),
                ["start", "die", "destroy", "rename", "health_status"]
                    .into_iter()
                    .chain(lifecycle::ACTIONS)
                    .map(String::from)
                    .collect(),
            ),
        ]);
        let options = EventsOptions {
            since: Some(started.to_string()),
            until: None,
            filters: Some(filters),
        };
        let mut stream = client.docker.events(Some(options));

        let running = client.running().await?;
        self.health.ok();
        if std::mem::take(down_logged) {
            tracing::info!(socket = %self.socket.display(), containers = running.len(), "connected to Docker");
        }
        if !self.resync(running).await {
            return Ok(Stop::Closed);
        }

        let counts_every = self
            .lifecycle
            .as_ref()
            .and_then(|l| l.counts_every)
            .unwrap_or(Duration::from_secs(3600));
        let mut counts = tokio::time::interval(counts_every);
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ok(Stop::StreamEnded);
                    };
                    let message = message.map_err(|source| WatchError::Api {
                        call: "events",
                        source,
                    })?;
                    if !self.handle(&client, message).await? {
                        return Ok(Stop::Closed);
                    }
                }
                _ = counts.tick(), if self.lifecycle.as_ref().is_some_and(|l| l.counts_every.is_some()) => {
                    if !self.send_counts(&client).await? {
                        return Ok(Stop::Closed);
                    }
                }
            }
        }
    }

    /// Reports how many containers run, are stopped, and how many images there are.
    async fn send_counts(&self, client: &DockerClient) -> Result<bool, WatchError> {
        let Some(lifecycle) = &self.lifecycle else {
            return Ok(true);
        };
        let containers = client.list(true).await?;
        let images = client
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .map_err(|source| WatchError::Api {
                call: "list images",
                source,
            })?;
        let listed: Vec<Listed> = containers
            .into_iter()
            .map(|c| Listed {
                image: c.image.unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
            })
            .collect();
        let report = lifecycle::counts_report(&listed, images.len(), lifecycle);
        Ok(lifecycle.reports.send(report).await.is_ok())
    }

    /// Makes the store hold exactly `running`.
    async fn resync(&self, running: Vec<Container>) -> bool {
        let live: HashSet<String> = running.iter().map(|c| c.id.clone()).collect();
        for gone in self
            .store
            .all()
            .into_iter()
            .filter(|c| !live.contains(&c.id))
        {
            if !self.apply(ContainerEvent::Unset(gone.id.clone())).await {
                return false;
            }
        }
        for container in running {
            if !self.apply(ContainerEvent::Set(Arc::new(container))).await {
                return false;
            }
        }
        true
    }

    async fn handle(
        &self,
        client: &DockerClient,
        message: EventMessage,
    ) -> Result<bool, WatchError> {
        if let Some(lifecycle) = &self.lifecycle {
            let known = message
                .actor
                .as_ref()
                .and_then(|a| a.id.as_deref())
                .and_then(|id| self.store.get(id));
            if let Some(report) = lifecycle::event_report(&message, known.as_deref(), lifecycle)
                && lifecycle.reports.send(report).await.is_err()
            {
                return Ok(false);
            }
        }
        let Some(id) = message.actor.and_then(|a| a.id) else {
            return Ok(true);
        };
        let action = message.action.unwrap_or_default();
        let event = match action.as_str() {
            "die" | "destroy" => ContainerEvent::Unset(id),
            a if a == "start" || a == "rename" || a.starts_with("health_status") => {
                match client.inspect(&id).await? {
                    Some(container) => ContainerEvent::Set(Arc::new(container)),
                    None => ContainerEvent::Unset(id),
                }
            }
            _ => return Ok(true),
        };
        Ok(self.apply(event).await)
    }

    /// Applies a change to the store and passes it on if it changed anything; false once
    /// nobody listens.
    async fn apply(&self, event: ContainerEvent) -> bool {
        if !self.store.apply(&event) {
            return !self.events.is_closed();
        }
        match &event {
            ContainerEvent::Set(c) => {
                tracing::debug!(container = %c.display(), image = %c.image, "container set")
            }
            ContainerEvent::Unset(id) => tracing::debug!(container = %id, "container gone"),
        }
        self.events.send(event).await.is_ok()
    }
}

enum Stop {
    /// Nobody listens to the events any more.
    Closed,
    /// The daemon ended the event stream.
    StreamEnded,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The facts the runner keeps of an inspected container; `None` when it is not running.
fn container_from(response: ContainerInspectResponse, tagger: &TaggerConfig) -> Option<Container> {
    let state = response.state.unwrap_or_default();
    if state.running != Some(true) {
        return None;
    }
    let id = response.id?;
    let config = response.config.unwrap_or_default();
    let settings = response.network_settings.unwrap_or_default();

    let env = config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            tagger
                .wants_env(name)
                .then(|| (name.to_owned(), value.to_owned()))
        })
        .collect();

    let mut networks = BTreeMap::new();
    for (name, endpoint) in settings.networks.unwrap_or_default() {
        let address = [endpoint.ip_address, endpoint.global_ipv6_address]
            .into_iter()
            .flatten()
            .find_map(|ip| ip.parse::<IpAddr>().ok());
        if let Some(address) = address {
            networks.insert(name, address);
        }
    }

    let mut ports: Vec<Port> = settings
        .ports
        .unwrap_or_default()
        .into_keys()
        .chain(config.exposed_ports.unwrap_or_default())
        .flat_map(|spec| parse_ports(&spec))
        .collect();
    ports.sort();
    ports.dedup();

    let mut container = Container {
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        env,
        hostname: config.hostname.unwrap_or_default(),
        networks,
        ports,
        pid: state
            .pid
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0),
        cgroup: None,
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        tags: Default::default(),
        id,
    };
    container.tags = tagger.tags(&container);
    Some(container)
}

/// The cgroup of container `id`'s main process `pid`.
fn read_cgroup(procfs: &Path, pid: u32, id: &str) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(procfs.join(pid.to_string()).join("cgroup")).ok()?;
    super::cgroup::container_cgroup(&text, id).map(str::to_owned)
}

/// `80/tcp`, `53/udp`, `8000-8002/tcp` (a range, expanded).
fn parse_ports(spec: &str) -> Vec<Port> {
    let (numbers, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = match protocol {
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => Protocol::Tcp,
    };
    let (first, last) = numbers.split_once('-').unwrap_or((numbers, numbers));
    let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) else {
        return Vec::new();
    };
    (first..=last)
        .take(MAX_PORT_RANGE as usize)
        .map(|number| Port { number, protocol })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_and_ranges_expand() {
        assert_eq!(
            parse_ports("80/tcp"),
            [Port {
                number: 80,
                protocol: Protocol::Tcp
            }]
        );
        assert_eq!(parse_ports("53/udp")[0].protocol, Protocol::Udp);
        assert_eq!(parse_ports("8000-8002/tcp").len(), 3);
        assert!(parse_ports("http/tcp").is_empty());
        assert_eq!(parse_ports("1-65535/tcp").len(), MAX_PORT_RANGE as usize);
    }
}
