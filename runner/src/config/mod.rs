//! The runner's own configuration (`--config FILE`, YAML) and the conf.d loader.
//!
//! The runner's file is strict: an unknown key is an error naming the key and its line, because
//! a silently ignored typo (`chek_runners`) is worse than a refusal to start. Key names follow
//! the Datadog Agent's `datadog.yaml` where it has one (`hostname`, `confd_path`,
//! `check_runners`, `log_level`), so a user's knowledge carries over.

pub mod confd;
mod env;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::containers::{Cardinality, TaggerConfig};

/// Where `runner` looks for its config file when no `--config` names one: the Debian package
/// and the container image put it there. Without a file there, the defaults apply.
pub const DEFAULT_PATH: &str = "/etc/kennel/kennel.yaml";

/// Everything the runner reads from its config file. Every key is optional.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// The hostname attached to everything the runner submits. Defaults to the system's.
    pub hostname: Option<String>,
    /// The directory of check configurations. Defaults to `conf.d`.
    pub confd_path: PathBuf,
    /// Read conf.d files that are symlinks to files outside the conf.d directory. Defaults to
    /// false.
    pub confd_follow_external_symlinks: bool,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a `tracing` directive such as
    /// `runner=debug`). `RUST_LOG` overrides it. Defaults to `info`.
    pub log_level: String,
    /// How many check runs may execute at once. Defaults to 32.
    pub check_runners: usize,
    /// Where the runner's own API (`/health`, `/status`) listens; `null` turns it off, and
    /// `runner status` with it. Defaults to `127.0.0.1:5010`.
    pub status_listen: Option<SocketAddr>,
    /// The plugin host's settings.
    pub plugins: PluginConfig,
    /// The DogStatsD Unix datagram socket; `null` turns it off. Defaults to `null`.
    pub dogstatsd_socket: Option<PathBuf>,
    /// The DogStatsD Unix stream socket (4-byte little-endian length-prefixed frames); `null`
    /// turns it off. Defaults to `null`.
    pub dogstatsd_stream_socket: Option<PathBuf>,
    /// The DogStatsD UDP port; 0 turns UDP off. Defaults to 8125.
    pub dogstatsd_port: u16,
    /// Listen for UDP on every interface rather than loopback only. Defaults to false.
    pub dogstatsd_non_local_traffic: bool,
    /// Tag what arrives on the Unix sockets with the sending container, from the kernel's
    /// credentials. Defaults to true.
    pub dogstatsd_origin_detection: bool,
    /// The largest datagram or stream frame, in bytes. Defaults to 8192.
    pub dogstatsd_buffer_size: usize,
    /// Stream socket connections served at once, each by a thread with a
    /// `dogstatsd_buffer_size` frame buffer; one past it is closed at once and counted in
    /// `kennel.dogstatsd.stream_connections_refused`. Defaults to 256.
    pub dogstatsd_stream_max_connections: usize,
    /// The sockets' receive buffer, in bytes; 0 keeps the system's. Defaults to 4194304.
    pub dogstatsd_so_rcvbuf: usize,
    /// Over UDP, where the kernel cannot say who sent a datagram, trust a client's `|c:`
    /// container id. (Over the Unix sockets the kernel's answer always wins.) Defaults to true.
    pub dogstatsd_origin_detection_client: bool,
    /// Where the host's procfs is: `/host/proc` when the runner runs in a container with the
    /// host's mounted there. Defaults to `/host/proc` if it exists, else `/proc`.
    pub procfs_root: PathBuf,
    /// Where the host's cgroup filesystem is mounted. Defaults to `/host/sys/fs/cgroup` if it
    /// exists, else `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Where the host's sysfs is. Defaults to `/host/sys` if it exists, else `/sys`.
    pub sysfs_root: PathBuf,
    /// Seconds between two readings of every container's cgroups and network, and of the
    /// host's metrics; 0 turns the collector off. Defaults to 15.
    pub container_collection_interval: f64,
    /// Which metric families container resources are reported in: `container` (the Agent's
    /// generic `container.*`) and `docker` (the Docker check's `docker.*`). Defaults to both.
    pub container_metric_families: Vec<crate::collector::Family>,
    /// Report the host's own metrics (`system.cpu.*`, `system.mem.*`, `system.net.*`,
    /// `system.disk.*`, `system.io.*`, `system.load.*`, `system.uptime`), as the Agent's core
    /// checks do. Defaults to true.
    pub collect_host_metrics: bool,
    /// Where Prometheus can scrape the aggregated series (`/metrics`); `null` turns it off.
    /// Defaults to `127.0.0.1:9125`.
    pub openmetrics_listen: Option<SocketAddr>,
    /// How samples are bucketed, flushed and forgotten (see [`crate::aggregator::AggregatorConfig`]).
    pub aggregator: crate::aggregator::AggregatorConfig,
    /// The Docker daemon's socket, for container autodiscovery and tags; `null` turns
    /// containers off. Defaults to `DOCKER_HOST` when it names a Unix socket, else
    /// `/var/run/docker.sock`.
    pub docker_socket: Option<PathBuf>,
    /// Container labels to turn into tags: label name (`*` matches any run of characters) →
    /// tag name. Defaults to none.
    pub container_labels_as_tags: BTreeMap<String, String>,
    /// Container environment variables to turn into tags: variable name (globs as above) →
    /// tag name. Defaults to none.
    pub container_env_as_tags: BTreeMap<String, String>,
    /// Which container tags check results get: `low` (image, service tags) or `high` (also
    /// `container_id` and `container_name`). Defaults to `high`.
    pub checks_tag_cardinality: Cardinality,
    /// Which container tags DogStatsD metrics from a container get. Defaults to `high`.
    pub dogstatsd_tag_cardinality: Cardinality,
    /// The runner's environment variables that templates may read with `%%env_<VAR>%%`.
    /// Unlike the Datadog Agent, an empty list allows none: container labels are written by
    /// whoever starts a container. Defaults to none.
    pub ad_allowed_env_vars: Vec<String>,
    /// What an instance defined by a container's labels may reach and hold (see
    /// [`crate::discovery::labels`]): by default only the container's own addresses, no host
    /// paths, 10 instances, a 30 s `timeout`, 2 runners per container.
    pub label_checks: crate::discovery::labels::LabelChecksConfig,

    // The forwarder (see [`crate::forwarder`]), with the Datadog Agent's keys.
    /// The Datadog API key; forwarding to Datadog is on when it is set. Defaults to none.
    pub api_key: String,
    /// The Datadog site: the intake is `https://app.<site>`. Defaults to `datadoghq.com`.
    pub site: String,
    /// The intake's base URL, overriding `site` (any Datadog-compatible backend, e.g.
    /// `http://victoria:8428/datadog`). Defaults to none.
    pub dd_url: Option<String>,
    /// More intakes, each with its own API keys: URL → keys. Every payload goes to each
    /// (URL, key) pair through its own queue.
    pub additional_endpoints: BTreeMap<String, Vec<String>>,
    pub use_v2_api: crate::forwarder::config::UseV2Api,
    /// `zstd` (the default), `zlib` or `none`.
    pub serializer_compressor_kind: crate::forwarder::compress::Compressor,
    /// Seconds one request may take. Defaults to 20.
    pub forwarder_timeout: f64,
    /// Bytes of payloads each endpoint keeps in memory while it cannot deliver; past it the
    /// oldest go to disk. Defaults to 15728640 (15 MB).
    pub forwarder_retry_queue_payloads_max_size: u64,
    /// Where payloads that do not fit in memory are kept; `null` keeps none on disk. Defaults
    /// to `transactions_to_retry` in the runner's state directory.
    pub forwarder_storage_path: Option<PathBuf>,
    /// The most bytes kept on disk, over all endpoints; past it the oldest are dropped.
    /// Defaults to 50000000.
    pub forwarder_storage_max_size_in_bytes: u64,
    /// Write no more once the disk holding the storage path is this full. Defaults to 0.8.
    pub forwarder_storage_max_disk_ratio: f64,
    /// Payloads kept on disk longer than this many days are dropped. Defaults to 10.
    pub forwarder_outdated_file_in_days: u64,
    /// Seconds a clean stop keeps sending before what is left goes to disk. Defaults to 2.
    pub forwarder_stop_timeout: f64,
    /// The circuit breaker's first wait after a failure, in seconds. Defaults to 2.
    pub forwarder_backoff_base: f64,
    /// Its longest wait, in seconds. Defaults to 64.
    pub forwarder_backoff_max: f64,
    /// Seconds an endpoint may deliver nothing, while it has something to deliver, before
    /// `/health` turns red naming it. Defaults to 30.
    pub forwarder_health_timeout: f64,
    /// Prometheus remote-write endpoints.
    pub remote_write: Vec<crate::forwarder::config::RemoteWriteEndpoint>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            hostname: None,
            confd_path: PathBuf::from("conf.d"),
            confd_follow_external_symlinks: false,
            log_level: "info".to_owned(),
            check_runners: default_check_runners(),
            status_listen: Some(default_status_listen()),
            plugins: PluginConfig::default(),
            dogstatsd_socket: None,
            dogstatsd_stream_socket: None,
            dogstatsd_port: default_dogstatsd_port(),
            dogstatsd_non_local_traffic: false,
            dogstatsd_origin_detection: true,
            dogstatsd_buffer_size: default_dogstatsd_buffer_size(),
            dogstatsd_stream_max_connections: default_dogstatsd_stream_max_connections(),
            dogstatsd_so_rcvbuf: default_dogstatsd_so_rcvbuf(),
            dogstatsd_origin_detection_client: true,
            procfs_root: default_procfs_root(),
            cgroup_root: host_path("/host/sys/fs/cgroup", "/sys/fs/cgroup"),
            sysfs_root: host_path("/host/sys", "/sys"),
            container_collection_interval: 15.0,
            container_metric_families: vec![
                crate::collector::Family::Container,
                crate::collector::Family::Docker,
            ],
            collect_host_metrics: true,
            openmetrics_listen: Some(SocketAddr::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                9125,
            )),
            aggregator: crate::aggregator::AggregatorConfig::default(),
            docker_socket: Some(crate::containers::docker::default_socket()),
            container_labels_as_tags: BTreeMap::new(),
            container_env_as_tags: BTreeMap::new(),
            checks_tag_cardinality: Cardinality::High,
            dogstatsd_tag_cardinality: Cardinality::High,
            ad_allowed_env_vars: Vec::new(),
            label_checks: crate::discovery::labels::LabelChecksConfig::default(),
            api_key: String::new(),
            site: "datadoghq.com".to_owned(),
            dd_url: None,
            additional_endpoints: BTreeMap::new(),
            use_v2_api: crate::forwarder::config::UseV2Api::default(),
            serializer_compressor_kind: crate::forwarder::compress::Compressor::default(),
            forwarder_timeout: 20.0,
            forwarder_retry_queue_payloads_max_size: 15 * 1024 * 1024,
            forwarder_storage_path: default_state_path()
                .map(|state| state.join("transactions_to_retry")),
            forwarder_storage_max_size_in_bytes: 50_000_000,
            forwarder_storage_max_disk_ratio: 0.8,
            forwarder_outdated_file_in_days: 10,
            forwarder_stop_timeout: 2.0,
            forwarder_backoff_base: 2.0,
            forwarder_backoff_max: 64.0,
            forwarder_health_timeout: 30.0,
            remote_write: Vec::new(),
        }
    }
}

const fn default_check_runners() -> usize {
    32
}

const fn default_dogstatsd_port() -> u16 {
    8125
}

const fn default_dogstatsd_buffer_size() -> usize {
    8192
}

const fn default_dogstatsd_stream_max_connections() -> usize {
    256
}

const fn default_dogstatsd_so_rcvbuf() -> usize {
    4 << 20
}

/// `host` when it exists (the runner in a container with the host's mounted there), else
/// `own`.
fn host_path(host: &str, own: &str) -> PathBuf {
    if Path::new(host).exists() {
        PathBuf::from(host)
    } else {
        PathBuf::from(own)
    }
}

fn default_procfs_root() -> PathBuf {
    let host = PathBuf::from("/host/proc");
    if host.join("1").exists() {
        host
    } else {
        PathBuf::from("/proc")
    }
}

const fn default_status_listen() -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5010)
}

/// Where plugins come from and what one run may use.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// The directory holding one `<check>.wasm` component per check. Defaults to
    /// `target/plugins`, where `make plugins` puts the first-party checks.
    pub path: PathBuf,
    /// Where compiled plugins are cached between starts; `null` disables the disk cache.
    /// Defaults to `$XDG_CACHE_HOME/kennel` (or `~/.cache/kennel`).
    pub cache_path: Option<PathBuf>,
    /// The most linear memory one run may use, in MiB. Defaults to 64.
    pub memory_limit_mb: u64,
    /// A run's deadline, in seconds, when its instance sets no `timeout`. Defaults to 30.
    pub default_timeout: f64,
    /// The most items (metrics, service checks, events, log lines) one run may submit; past it
    /// the run fails. Defaults to 10000.
    pub max_items_per_run: u32,
    /// The most of an HTTP response body handed to a plugin, in KiB. Defaults to 1024.
    pub http_body_limit_kb: u64,
    /// The most rows one SQL query hands a plugin; the rest are dropped and the result is
    /// marked truncated. Defaults to 10000.
    pub sql_row_limit: usize,
    /// The most bytes of values one SQL query's result may hold, in KiB, counted as rows
    /// arrive and before they are decoded or handed over: a larger result fails that query
    /// (see [`crate::plugin::sql`]). Defaults to 4096.
    pub sql_result_limit_kb: u64,
    /// How many log lines each check instance may write a second, on average (plugin log
    /// lines, and the warnings its runs cause); lines past it are suppressed and counted (see
    /// [`crate::plugin::logs`]). Defaults to 10.
    pub log_lines_per_second: f64,
    /// How many log lines an instance may write at once before `log_lines_per_second` holds it
    /// back. Defaults to 50.
    pub log_lines_burst: u32,
    /// Where each instance's key-value store is kept across restarts, with the key instance ids
    /// are hashed with (see [`crate::check::id`]); `null` keeps both in memory only. Defaults to `$XDG_STATE_HOME/kennel` (or `~/.local/state/kennel`).
    pub state_path: Option<PathBuf>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("target/plugins"),
            cache_path: default_cache_path(),
            memory_limit_mb: default_memory_limit_mb(),
            default_timeout: default_timeout_secs(),
            max_items_per_run: default_max_items_per_run(),
            http_body_limit_kb: default_http_body_limit_kb(),
            sql_row_limit: default_sql_row_limit(),
            sql_result_limit_kb: default_sql_result_limit_kb(),
            log_lines_per_second: default_log_lines_per_second(),
            log_lines_burst: default_log_lines_burst(),
            state_path: default_state_path(),
        }
    }
}

const fn default_memory_limit_mb() -> u64 {
    64
}

const fn default_timeout_secs() -> f64 {
    30.0
}

const fn default_max_items_per_run() -> u32 {
    10_000
}

const fn default_http_body_limit_kb() -> u64 {
    1024
}

const fn default_sql_row_limit() -> usize {
    10_000
}

const fn default_sql_result_limit_kb() -> u64 {
    4096
}

const fn default_log_lines_per_second() -> f64 {
    10.0
}

const fn default_log_lines_burst() -> u32 {
    50
}

fn default_state_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(base.join("kennel"))
}

fn default_cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("kennel"))
}

impl PluginConfig {
    pub(crate) fn default_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.default_timeout)
    }
}

/// The runner's config file could not be used. The underlying error is part of the message
/// and not a `source`, so a report that prints the chain says it once.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: serde_norway::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl RunnerConfig {
    /// The DogStatsD listeners' settings.
    pub(crate) fn dogstatsd(&self) -> crate::dogstatsd::listener::ListenerConfig {
        let host = if self.dogstatsd_non_local_traffic {
            std::net::Ipv4Addr::UNSPECIFIED
        } else {
            std::net::Ipv4Addr::LOCALHOST
        };
        crate::dogstatsd::listener::ListenerConfig {
            socket: self.dogstatsd_socket.clone(),
            stream_socket: self.dogstatsd_stream_socket.clone(),
            udp: (self.dogstatsd_port != 0)
                .then(|| SocketAddr::new(host.into(), self.dogstatsd_port)),
            origin_detection: self.dogstatsd_origin_detection,
            buffer_size: self.dogstatsd_buffer_size,
            so_rcvbuf: self.dogstatsd_so_rcvbuf,
            stream_max_connections: self.dogstatsd_stream_max_connections,
            procfs: self.procfs_root.clone(),
        }
    }

    /// The tagger's settings.
    pub(crate) fn tagger(&self) -> TaggerConfig {
        TaggerConfig {
            container_labels_as_tags: self.container_labels_as_tags.clone(),
            container_env_as_tags: self.container_env_as_tags.clone(),
        }
    }

    /// The runner's configuration as `runner run` takes it: the file at `path`, or else at
    /// [`DEFAULT_PATH`] when there is one there, or else the defaults; then every `DD_*`
    /// environment variable that names a top-level key (see [`env`]). Returns the variables
    /// used, for the log.
    pub(crate) fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let path = path
            .map(Path::to_owned)
            .or_else(|| Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()));
        // Read once: the overrides below apply to the very text that was checked.
        let text = path.as_deref().map(read).transpose()?;
        let from_file = match (&path, &text) {
            (Some(path), Some(text)) => Self::parse_at(path, text)?,
            _ => Self::default(),
        };
        let overrides = env::overrides::<Self>(vars);
        if overrides.is_empty() {
            return Ok((from_file, Vec::new()));
        }
        let origin = path
            .clone()
            .unwrap_or_else(|| PathBuf::from("the environment"));
        let invalid = |message| ConfigError::Invalid {
            path: origin.clone(),
            message,
        };
        let mut document = match text.as_deref().map(str::trim) {
            // The file has parsed already: it is a mapping, or empty.
            Some(text) if !text.is_empty() => {
                serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?
            }
            _ => serde_norway::Mapping::new(),
        };
        env::apply::<Self>(&mut document, &overrides).map_err(invalid)?;
        let config = Self::deserialize(serde_norway::Value::Mapping(document))
            .map_err(|e| invalid(e.to_string()))?;
        config.validate().map_err(invalid)?;
        Ok((config, overrides.into_iter().map(|o| o.variable).collect()))
    }

    /// Parses and validates `text`, read from `path`, errors naming it.
    fn parse_at(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse(text).map_err(|error| match error {
            ConfigError::Parse { error, .. } => ConfigError::Parse {
                path: path.to_owned(),
                error,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates a config file's text (an empty text is the defaults).
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_norway::from_str(text).map_err(|error| ConfigError::Parse {
                path: PathBuf::new(),
                error,
            })?
        };
        config.validate().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.aggregator
            .validate()
            .map_err(|e| format!("`aggregator`: {e}"))?;
        if !(512..=(1 << 20)).contains(&self.dogstatsd_buffer_size) {
            return Err("`dogstatsd_buffer_size` must be between 512 and 1048576 bytes".to_owned());
        }
        if self.dogstatsd_stream_max_connections == 0 {
            return Err("`dogstatsd_stream_max_connections` must be at least 1".to_owned());
        }
        if self.check_runners == 0 {
            return Err("`check_runners` must be at least 1".to_owned());
        }
        self.label_checks.validate()?;
        if self.plugins.memory_limit_mb == 0 || self.plugins.memory_limit_mb > 4096 {
            return Err("`plugins.memory_limit_mb` must be between 1 and 4096".to_owned());
        }
        if !(self.plugins.default_timeout > 0.0 && self.plugins.default_timeout <= 3600.0) {
            return Err("`plugins.default_timeout` must be between 0 and 3600 seconds".to_owned());
        }
        if !(1..=65_536).contains(&self.plugins.http_body_limit_kb) {
            return Err("`plugins.http_body_limit_kb` must be between 1 and 65536".to_owned());
        }
        if self.plugins.sql_row_limit == 0 {
            return Err("`plugins.sql_row_limit` must be at least 1".to_owned());
        }
        if !(1..=1_048_576).contains(&self.plugins.sql_result_limit_kb) {
            return Err(
                "`plugins.sql_result_limit_kb` must be between 1 and 1048576 (1 GiB)".to_owned(),
            );
        }
        if !(self.plugins.log_lines_per_second.is_finite()
            && self.plugins.log_lines_per_second > 0.0)
        {
            return Err("`plugins.log_lines_per_second` must be a positive number".to_owned());
        }
        if self.plugins.log_lines_burst == 0 {
            return Err("`plugins.log_lines_burst` must be at least 1".to_owned());
        }
        crate::forwarder::config::validate(self)?;
        if !(self.container_collection_interval == 0.0
            || (1.0..=3600.0).contains(&self.container_collection_interval))
        {
            return Err(
                "`container_collection_interval` must be 0 (off) or between 1 and 3600 seconds"
                    .to_owned(),
            );
        }
        if self.plugins.max_items_per_run == 0 {
            return Err("`plugins.max_items_per_run` must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The configured hostname, or the system's.
    pub(crate) fn resolved_hostname(&self) -> String {
        if let Some(name) = &self.hostname {
            return name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_default()
    }
}

/// The text of the config file at `path`.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_config_parses_and_documents_the_forwarder_defaults() {
        let config = RunnerConfig::parse(include_str!("../../../kennel.yaml")).unwrap();
        let defaults = RunnerConfig::default();
        assert_eq!(config.use_v2_api, defaults.use_v2_api);
        assert_eq!(
            config.serializer_compressor_kind,
            defaults.serializer_compressor_kind
        );
        assert_eq!(
            config.forwarder_retry_queue_payloads_max_size,
            defaults.forwarder_retry_queue_payloads_max_size
        );
        assert_eq!(
            config.forwarder_storage_max_size_in_bytes,
            defaults.forwarder_storage_max_size_in_bytes
        );
        assert_eq!(
            config.forwarder_health_timeout,
            defaults.forwarder_health_timeout
        );
        assert!(config.api_key.is_empty() && config.remote_write.is_empty());
    }

    #[test]
    fn environment_variables_override_the_file_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kennel.yaml");
        std::fs::write(&path, "check_runners: 4\nsite: datadoghq.eu\n").unwrap();
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };

        let (config, used) = RunnerConfig::load_with_env(
            Some(&path),
            vars(&[("DD_CHECK_RUNNERS", "9"), ("DD_SERVICE", "web")]),
        )
        .unwrap();
        assert_eq!(
            (config.check_runners, config.site.as_str()),
            (9, "datadoghq.eu")
        );
        assert_eq!(used, ["DD_CHECK_RUNNERS"]);

        let error = RunnerConfig::load_with_env(Some(&path), vars(&[("DD_CHECK_RUNNERS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`check_runners` must be at least 1"),
            "{error}"
        );
        let error =
            RunnerConfig::load_with_env(Some(&path), vars(&[("DD_DOGSTATSD_PORT", "lots")]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("DD_DOGSTATSD_PORT"), "{error}");

        // The file's own errors keep their line, whatever the environment says.
        std::fs::write(&path, "site: x\nchek_runners: 3\n").unwrap();
        let error = RunnerConfig::load_with_env(Some(&path), vars(&[("DD_SITE", "y")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("chek_runners") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(RunnerConfig::parse("").unwrap(), RunnerConfig::default());
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let error = RunnerConfig::parse("hostname: a\nchek_runners: 3\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("unknown field `chek_runners`"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn unknown_nested_key_is_an_error() {
        let error = RunnerConfig::parse("plugins:\n  memory_limit: 3\n").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `memory_limit`"),
            "{error}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let error = RunnerConfig::parse("check_runners: 0").unwrap_err();
        assert!(error.to_string().contains("check_runners"), "{error}");
    }
}
