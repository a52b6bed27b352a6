//! What an instance defined by a container's labels may ask for.
//!
//! Labels are written by whoever can start a container, which on most hosts is far more people
//! than can write the runner's conf.d, and the runner acts with its own reach: its network
//! position, its filesystem, its Unix sockets. A label must not borrow that reach. An instance
//! from a container's labels (not a conf.d template matched to the container: the operator
//! wrote that) is admitted only within these bounds, each of which the operator can widen in
//! the runner config (`label_checks`):
//! - **Where it may go**: every host it is granted (its `url`'s, its `allowed_hosts`, its
//!   PostgreSQL `host`) must be one of the container's own addresses, what `%%host%%`
//!   resolves to (any network's; the hostname of a container with none), or a host of
//!   `label_checks.allowed_hosts` (`host`, `host:port`, `*.domain`, an address range
//!   `10.0.0.0/8`, or `*` for anywhere, which is what the Datadog Agent allows). A name is
//!   not resolved to see where it points: the grant is to the name, and what a name resolves
//!   to is up to whoever controls its DNS. So `localhost`, the runner's own hostname, another
//!   container's address and a cloud metadata address are all refused by default.
//! - **What files it may name**: a PostgreSQL socket directory as `host`, and `allowed_paths`,
//!   only inside a directory of `label_checks.allowed_paths`. By default none: a label naming
//!   `/var/run/postgresql` would have the runner connect over the host's socket, with the
//!   runner's own identity for peer authentication.
//! - **How much it may hold**: at most `max_instances` instances per container (the rest are
//!   not scheduled, and reported), and a `timeout` of at most `max_timeout` seconds (longer
//!   ones are lowered to it, and reported). The runners a container's label instances hold at
//!   once are bounded too, by the scheduler ([`crate::scheduler`]).
//!
//! An instance outside these bounds is not scheduled, and the container's problem says which
//! key asked for what, and which runner config key would allow it; the container's other
//! instances run. A refusal is better than a silently narrowed grant: a check that cannot reach
//! its target would only fail later, with a less useful message.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::check::Instance;
use crate::containers::Container;

/// The runner config's `label_checks` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LabelChecksConfig {
    /// Hosts, besides the container's own addresses, that instances from its labels may
    /// reach: `host` (any port), `host:port`, `*.domain`, an address range (`10.0.0.0/8`), or
    /// `*` (anywhere). Defaults to none.
    pub allowed_hosts: Vec<String>,
    /// Directories inside which instances from labels may name paths: a PostgreSQL socket
    /// directory as `host`, and `allowed_paths`. Defaults to none.
    pub allowed_paths: Vec<PathBuf>,
    /// The most instances one container's labels may define; the rest are not scheduled.
    /// Defaults to 10.
    pub max_instances: usize,
    /// The longest `timeout`, in seconds, an instance from labels may set; a longer one is
    /// lowered to it. Defaults to 30.
    pub max_timeout: f64,
    /// The most check runners one container's label instances hold at once. Defaults to 2.
    pub max_runners: usize,
    /// The most check runners all label instances together hold at once, so that conf.d
    /// checks always have the rest; `null` is half of `check_runners`. Defaults to `null`.
    pub max_runners_total: Option<usize>,
}

impl Default for LabelChecksConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allowed_paths: Vec::new(),
            max_instances: default_max_instances(),
            max_timeout: default_max_timeout(),
            max_runners: default_max_runners(),
            max_runners_total: None,
        }
    }
}

const fn default_max_instances() -> usize {
    10
}

const fn default_max_timeout() -> f64 {
    30.0
}

const fn default_max_runners() -> usize {
    2
}

impl LabelChecksConfig {
    /// What is wrong with the section, if anything.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.max_timeout > 0.0 && self.max_timeout <= 3600.0) {
            return Err("`label_checks.max_timeout` must be between 0 and 3600 seconds".to_owned());
        }
        if self.max_runners == 0 || self.max_runners_total == Some(0) {
            return Err(
                "`label_checks.max_runners` and `max_runners_total` must be at least 1".to_owned(),
            );
        }
        if let Some(path) = self.allowed_paths.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "`label_checks.allowed_paths`: {} is not an absolute path",
                path.display()
            ));
        }
        if let Some(entry) = self.allowed_hosts.iter().find(|e| e.trim().is_empty()) {
            return Err(format!(
                "`label_checks.allowed_hosts`: {entry:?} names no host"
            ));
        }
        Ok(())
    }

    /// The runners all label instances may hold at once, out of `check_runners`.
    pub(crate) fn runners_total(&self, check_runners: usize) -> usize {
        self.max_runners_total
            .unwrap_or(check_runners / 2)
            .clamp(1, check_runners.max(1))
    }

    /// Admits `instance`, from `container`'s labels, or says why not. A `timeout` past
    /// `max_timeout` is lowered, and the returned note says so.
    pub(crate) fn admit(
        &self,
        container: &Container,
        instance: &mut Instance,
    ) -> Result<Option<String>, String> {
        for entry in &instance.allowed_hosts {
            if !self.reaches(container, entry) {
                return Err(format!(
                    "it asks to reach `{entry}`, which is not one of the container's own \
                     addresses; instances from labels may reach only those, unless \
                     `label_checks.allowed_hosts` in the runner config allows more"
                ));
            }
        }
        for path in &instance.allowed_paths {
            if !self.contains_path(path) {
                return Err(format!(
                    "its `allowed_paths` names {}; instances from labels may name paths only \
                     inside a directory of `label_checks.allowed_paths` in the runner config",
                    path.display()
                ));
            }
        }
        if let Some(Ok(target)) = &instance.postgres {
            let host = target.host.as_str();
            if host.starts_with('/') {
                if !self.contains_path(Path::new(host)) {
                    return Err(format!(
                        "its `host` is the socket directory {host}; instances from labels may \
                         name paths only inside a directory of `label_checks.allowed_paths` in \
                         the runner config"
                    ));
                }
            } else if !self.reaches(container, &host_port(host, target.port)) {
                return Err(format!(
                    "its `host` is {host}, which is not one of the container's own addresses; \
                     instances from labels may reach only those, unless \
                     `label_checks.allowed_hosts` in the runner config allows more"
                ));
            }
        }
        let max_timeout = Duration::from_secs_f64(self.max_timeout);
        if instance.timeout > max_timeout {
            let asked = instance.timeout.as_secs_f64();
            instance.timeout = max_timeout;
            return Ok(Some(format!(
                "its `timeout` of {asked} s is lowered to {} s (`label_checks.max_timeout`)",
                self.max_timeout
            )));
        }
        Ok(None)
    }

    /// Whether a grant entry (`host`, `host:port`, `*.domain`, `*`) stays within the
    /// container's addresses and the operator's `allowed_hosts`.
    fn reaches(&self, container: &Container, entry: &str) -> bool {
        let entry = entry.trim().to_ascii_lowercase();
        let allowed: Vec<String> = self
            .allowed_hosts
            .iter()
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        if allowed.iter().any(|a| a == "*") {
            return true;
        }
        let (host, port) = split_host_port(&entry);
        if host.starts_with("*.") {
            // A wildcard is within bounds only if the operator granted the same one.
            return allowed.iter().any(|a| *a == entry || *a == host);
        }
        if is_own_address(container, host) {
            return true;
        }
        let ip = host.parse::<IpAddr>().ok();
        allowed.iter().any(|a| {
            if let Some(range) = a.split_once('/') {
                return ip.is_some_and(|ip| in_range(ip, range));
            }
            if let Some(domain) = a.strip_prefix("*.") {
                return host.ends_with(&format!(".{domain}"));
            }
            match (split_host_port(a), port) {
                ((name, None), _) => same_host(name, host),
                ((name, Some(p)), Some(port)) => same_host(name, host) && p == port,
                // `host:5432` allowed does not allow `host` on every port.
                ((_, Some(_)), None) => false,
            }
        })
    }

    fn contains_path(&self, path: &Path) -> bool {
        let escapes = path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        path.is_absolute() && !escapes && self.allowed_paths.iter().any(|d| path.starts_with(d))
    }
}

/// `%%host%%`'s possible values for the container: an address on any of its networks, or, for
/// a container with none (`--network host`), its hostname.
fn is_own_address(container: &Container, host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => container.networks.values().any(|own| *own == ip),
        Err(_) => {
            container.networks.is_empty()
                && !container.hostname.is_empty()
                && container.hostname.eq_ignore_ascii_case(host)
        }
    }
}

/// Names compare without case, addresses by value (`::1` is `0:0::1`).
fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (rest, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// Whether `ip` is in `network/prefix` (the part after the `/` is `range.1`).
fn in_range(ip: IpAddr, (network, prefix): (&str, &str)) -> bool {
    let (Ok(network), Ok(prefix)) = (network.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return false;
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::config::confd::{self, InstanceParts};

    fn web() -> Container {
        Container {
            id: "3f2a9c1b0d7e".repeat(5),
            name: "web".to_owned(),
            image: "nginx".to_owned(),
            labels: BTreeMap::new(),
            env: BTreeMap::new(),
            hostname: "3f2a9c1b0d7e".to_owned(),
            networks: BTreeMap::from([("bridge".to_owned(), "172.17.0.5".parse().unwrap())]),
            ports: Vec::new(),
            pid: 0,
            cgroup: None,
            health: None,
            tags: Default::default(),
        }
    }

    fn instance(check: &str, raw: serde_json::Value) -> Instance {
        let keys = confd::reserved_keys(&raw).unwrap();
        let init_config = "{}".into();
        InstanceParts {
            check,
            init_config: &init_config,
            init_service: None,
            default_timeout: Duration::from_secs(30),
        }
        .build("container:web".to_owned(), &raw, &keys)
    }

    fn admit(config: &LabelChecksConfig, raw: serde_json::Value) -> Result<Option<String>, String> {
        let check = if raw.get("url").is_some() {
            "http_check"
        } else {
            "postgres"
        };
        config.admit(&web(), &mut instance(check, raw))
    }

    #[test]
    fn a_label_instance_reaches_its_own_container_only() {
        let config = LabelChecksConfig::default();
        assert_eq!(
            admit(&config, json!({"url": "http://172.17.0.5:8080/"})),
            Ok(None)
        );
        assert_eq!(
            admit(&config, json!({"host": "172.17.0.5", "port": 5432})),
            Ok(None)
        );
        for refused in [
            json!({"url": "http://localhost:8080/"}),
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
            json!({"url": "http://172.17.0.6/"}),
            json!({"url": "http://172.17.0.5/", "allowed_hosts": ["db.internal"]}),
            json!({"url": "http://172.17.0.5/", "allowed_hosts": ["*"]}),
            json!({"url": "http://172.17.0.5/", "allowed_hosts": ["*.internal"]}),
            json!({"host": "db.internal"}),
            json!({"host": "127.0.0.1"}),
        ] {
            let error = admit(&config, refused.clone()).unwrap_err();
            assert!(
                error.contains("label_checks.allowed_hosts"),
                "{refused}: {error}"
            );
        }
    }

    #[test]
    fn a_label_instance_names_no_host_path_by_default() {
        let config = LabelChecksConfig::default();
        let error = admit(&config, json!({"host": "/var/run/postgresql"})).unwrap_err();
        assert!(
            error.contains("socket directory /var/run/postgresql")
                && error.contains("label_checks.allowed_paths"),
            "{error}"
        );
        let error = admit(
            &config,
            json!({"url": "http://172.17.0.5/", "allowed_paths": ["/etc"]}),
        )
        .unwrap_err();
        assert!(error.contains("allowed_paths` names /etc"), "{error}");
    }

    #[test]
    fn the_operator_widens_what_labels_may_reach() {
        let config = LabelChecksConfig {
            allowed_hosts: vec![
                "db.internal".to_owned(),
                "10.1.0.0/16".to_owned(),
                "*.svc.local".to_owned(),
                "cache:6379".to_owned(),
            ],
            allowed_paths: vec![PathBuf::from("/run/app-sockets")],
            ..LabelChecksConfig::default()
        };
        for admitted in [
            json!({"host": "db.internal"}),
            json!({"url": "http://10.1.200.3:9000/"}),
            json!({"url": "https://api.svc.local/"}),
            json!({"url": "http://172.17.0.5/", "allowed_hosts": ["*.svc.local", "cache:6379"]}),
            json!({"host": "/run/app-sockets/pg"}),
        ] {
            assert_eq!(admit(&config, admitted.clone()), Ok(None), "{admitted}");
        }
        for refused in [
            json!({"url": "http://10.2.0.1/"}),
            json!({"url": "http://172.17.0.5/", "allowed_hosts": ["cache"]}),
            json!({"host": "/run/app-sockets/../postgresql"}),
            json!({"host": "/run/postgresql"}),
        ] {
            assert!(admit(&config, refused.clone()).is_err(), "{refused}");
        }
        let anywhere = LabelChecksConfig {
            allowed_hosts: vec!["*".to_owned()],
            ..LabelChecksConfig::default()
        };
        assert_eq!(
            admit(&anywhere, json!({"url": "http://localhost/"})),
            Ok(None)
        );
    }

    #[test]
    fn a_host_networked_container_reaches_its_hostname() {
        let mut host_net = web();
        host_net.networks.clear();
        host_net.hostname = "node-7".to_owned();
        let config = LabelChecksConfig::default();
        let mut check = instance("http_check", json!({"url": "http://node-7:8080/"}));
        assert_eq!(config.admit(&host_net, &mut check), Ok(None));
        let mut check = instance("http_check", json!({"url": "http://localhost:8080/"}));
        assert!(config.admit(&host_net, &mut check).is_err());
    }

    #[test]
    fn a_long_timeout_is_lowered_and_said() {
        let config = LabelChecksConfig::default();
        let mut check = instance(
            "http_check",
            json!({"url": "http://172.17.0.5/", "timeout": 3600}),
        );
        let note = config.admit(&web(), &mut check).unwrap().unwrap();
        assert_eq!(check.timeout, Duration::from_secs(30));
        assert!(note.contains("3600 s is lowered to 30 s"), "{note}");
    }

    #[test]
    fn address_ranges_match_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.1.2.3"), ("10.0.0.0", "8")));
        assert!(!in_range(ip("11.1.2.3"), ("10.0.0.0", "8")));
        assert!(in_range(ip("11.1.2.3"), ("0.0.0.0", "0")));
        assert!(in_range(ip("fd00::1"), ("fd00::", "8")));
        assert!(!in_range(ip("10.1.2.3"), ("fd00::", "8")));
        assert!(!in_range(ip("10.1.2.3"), ("10.0.0.0", "33")));
        assert_eq!(split_host_port("[fe80::1]:80"), ("fe80::1", Some(80)));
        assert_eq!(split_host_port("fe80::1"), ("fe80::1", None));
        assert_eq!(split_host_port("db:5432"), ("db", Some(5432)));
    }
}
