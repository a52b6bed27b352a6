//! The conf.d loader: check configurations in the Datadog Agent's layout.
//!
//! One level deep under the conf.d directory:
//! - `<check>.yaml` / `<check>.yml` configures check `<check>`;
//! - `<check>.d/*.yaml` / `*.yml`: every file in the directory configures check `<check>`;
//! - a file ending in `.default` (`conf.yaml.default`) is used only when no other file
//!   configures that check;
//! - `metrics.yaml` (JMX metric lists), empty files, other extensions and directories not ending
//!   in `.d` are skipped.
//!
//! Each file holds `init_config`, `instances` and optionally `ad_identifiers` (a template,
//! scheduled per container by autodiscovery rather than directly). The instance reserved keys
//! are checked here, with the file and line of any error: `min_collection_interval` (seconds,
//! default 15), `tags`, `service`, `timeout` (the run's deadline), `empty_default_hostname`,
//! `allowed_hosts` (HTTP egress grants) and `allowed_paths` (directories readable by the
//! plugin). Everything else in an instance belongs to the check; the `sql` capability reads
//! the Datadog-style server keys (`host`, `port`, ...) from it.
//!
//! A bad file is one [`ConfdError`] naming the file and line; it never stops the other files
//! from loading. Unlike the Datadog Agent, which re-parses a file leniently when strict parsing
//! fails, a file with duplicate or unknown top-level keys is refused: a config whose meaning is
//! ambiguous should be fixed, not guessed at.
//!
//! A file is untrusted input, read before serde sees it under these rules:
//! - it must be a regular file (a FIFO would block the reload, a device never end) that, once
//!   every symlink on its way is followed, lies inside the conf.d directory, unless the runner's
//!   `confd_follow_external_symlinks` allows any: otherwise `ln -s /etc/shadow conf.d/x.yaml`
//!   would read a file that whoever made the link cannot. Where the file is is read from the
//!   open descriptor (`/proc/self/fd`), so a path swapped for a symlink after a check cannot
//!   slip through;
//! - it is at most 1 MiB, nests at most 64 deep, and its aliases may about double it, checked in
//!   one pass of the YAML parser before anything is expanded ([`bounds`]);
//! - an error names keys and positions, never values: serde's messages are rebuilt from their
//!   known forms with each value replaced by its kind ([`redact`]).

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::check::Instance;
use crate::check::PgTarget;
use crate::config::RunnerConfig;
use bounds::Breach;
use kennel_parsers::yaml_bounds as bounds;

pub use kennel_parsers::confd::{
    CheckConfig, ConfdError, MIN_INTERVAL_SECS, ReservedKeys, init_service, parse_file,
    reserved_keys,
};

/// The Datadog Agent's default check interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Everything found in a conf.d directory.
#[derive(Debug, Default)]
pub struct Loaded {
    pub configs: Vec<CheckConfig>,
    pub errors: Vec<ConfdError>,
}

impl Loaded {
    /// The configurations of one check.
    pub(crate) fn for_check<'a>(&'a self, check: &'a str) -> impl Iterator<Item = &'a CheckConfig> {
        self.configs.iter().filter(move |c| c.check == check)
    }
}

/// Which symlinks under the conf.d directory are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Those that lead to a file inside the conf.d directory.
    Inside,
    /// Any.
    Anywhere,
}

impl Symlinks {
    /// As the runner's config says (`confd_follow_external_symlinks`).
    pub fn of(config: &RunnerConfig) -> Self {
        match config.confd_follow_external_symlinks {
            true => Self::Anywhere,
            false => Self::Inside,
        }
    }
}

/// Loads every check configuration under `dir`. Only an unreadable directory is an `Err`;
/// each bad file is reported in [`Loaded::errors`].
pub fn load_dir(dir: &Path, symlinks: Symlinks) -> std::io::Result<Loaded> {
    let root = std::fs::canonicalize(dir)?;
    let mut candidates = Vec::new();
    let mut loaded_errors = Vec::new();
    for entry in sorted_entries(dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            let Some(check) = name.strip_suffix(".d") else {
                continue;
            };
            // Each file is checked again where it is opened; this only keeps the names in a
            // directory outside conf.d out of the errors.
            if symlinks == Symlinks::Inside
                && let Err(message) = inside(&path, &root)
            {
                loaded_errors.push(ConfdError {
                    check: check.to_owned(),
                    path: path.clone(),
                    line: None,
                    message,
                });
                continue;
            }
            match sorted_entries(&path) {
                Ok(files) => {
                    for file in files {
                        let file_name = file.file_name().to_string_lossy().into_owned();
                        if let Some(kind) = classify(&file_name) {
                            candidates.push((check.to_owned(), file.path(), kind));
                        }
                    }
                }
                Err(error) => loaded_errors.push(ConfdError {
                    check: check.to_owned(),
                    path: path.clone(),
                    line: None,
                    message: format!("cannot read the directory: {error}"),
                }),
            }
        } else if let Some(kind) = classify(&name) {
            let stem = name.trim_end_matches(".default");
            let check = stem.rsplit_once('.').map_or(stem, |(check, _)| check);
            candidates.push((check.to_owned(), path, kind));
        }
    }

    let has_non_default: std::collections::HashSet<String> = candidates
        .iter()
        .filter(|(_, _, kind)| *kind == FileKind::Config)
        .map(|(check, _, _)| check.clone())
        .collect();

    let mut loaded = Loaded {
        errors: loaded_errors,
        ..Loaded::default()
    };
    for (check, path, kind) in candidates {
        if kind == FileKind::Default && has_non_default.contains(&check) {
            tracing::debug!(path = %path.display(), "ignoring default config: another config exists for this check");
            continue;
        }
        let text = match read_file(&path, &root, symlinks) {
            Ok(text) => text,
            Err(message) => {
                loaded.errors.push(ConfdError {
                    check,
                    path,
                    line: None,
                    message,
                });
                continue;
            }
        };
        match parse_file(&check, &path, &text) {
            Ok(Some(config)) => loaded.configs.push(config),
            Ok(None) => {}
            Err(error) => loaded.errors.push(error),
        }
    }
    Ok(loaded)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Config,
    Default,
}

fn classify(name: &str) -> Option<FileKind> {
    let (base, kind) = match name.strip_suffix(".default") {
        Some(base) => (base, FileKind::Default),
        None => (name, FileKind::Config),
    };
    let is_yaml = base.ends_with(".yaml") || base.ends_with(".yml");
    let is_jmx_list = base == "metrics.yaml" || base == "metrics.yml";
    // `metrics.yaml` is a JMX metric list, never a config on its own; at the top level it would
    // otherwise name a check called `metrics`. Hidden files are editors' and tools' leftovers.
    (is_yaml && !is_jmx_list && !base.starts_with('.')).then_some(kind)
}

/// One conf.d file's text: a regular file of at most [`bounds::MAX_FILE_BYTES`] that, unless
/// `symlinks` allows any, is inside `root` (the canonical conf.d directory).
fn read_file(path: &Path, root: &Path, symlinks: Symlinks) -> Result<String, String> {
    let cannot_read = |error: std::io::Error| format!("cannot read: {error}");
    // Non-blocking, so that opening a FIFO returns at once (and is refused below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot_read)?;
    let metadata = file.metadata().map_err(cannot_read)?;
    if !metadata.is_file() {
        return Err("not a regular file (a FIFO, a socket or a device): not read".to_owned());
    }
    if symlinks == Symlinks::Inside {
        // Where the open file is, rather than where its path led a moment ago.
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|error| format!("cannot tell where the file is, so not read: {error}"))?;
        if !real.starts_with(root) {
            return Err(outside(&real));
        }
    }
    let limit = bounds::MAX_FILE_BYTES as u64;
    let too_large = |bytes| Breach::TooLarge { bytes }.to_string();
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    // The file may grow after `metadata`: read one byte past the bound to tell.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| "cannot read: the file is not UTF-8".to_owned())
}

/// Whether `path`, every symlink followed, is inside `root`; if not, why it is not read.
fn inside(path: &Path, root: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(path)
        .map_err(|error| format!("cannot tell where it leads, so not read: {error}"))?;
    match real.starts_with(root) {
        true => Ok(()),
        false => Err(outside(&real)),
    }
}

fn outside(real: &Path) -> String {
    format!(
        "a symlink that leads outside the conf.d directory (to {}): not read; set \
         `confd_follow_external_symlinks: true` in the runner's config to read it",
        real.display()
    )
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// The runnable instances of `config`, with the runner's default deadline for those that set
/// no `timeout`.
pub fn instances(config: &CheckConfig, default_timeout: Duration) -> Vec<Instance> {
    let init_config: Arc<str> = config.init_config.to_string().into();
    config
        .instances
        .iter()
        .enumerate()
        .map(|(index, (raw, keys))| {
            let source = format!("file:{}[{index}]", config.path.display());
            let parts = InstanceParts {
                check: &config.check,
                init_config: &init_config,
                init_service: config.init_service.as_deref(),
                default_timeout,
            };
            parts.build(source, raw, keys)
        })
        .collect()
}

/// What the instances of one config share.
pub(crate) struct InstanceParts<'a> {
    pub(crate) check: &'a str,
    /// The `init_config` section as JSON text.
    pub(crate) init_config: &'a Arc<str>,
    /// The `service` of `init_config`, which instances without their own inherit.
    pub(crate) init_service: Option<&'a str>,
    /// The deadline of instances that set no `timeout`.
    pub(crate) default_timeout: Duration,
}

impl InstanceParts<'_> {
    /// One runnable instance from its section and reserved keys.
    pub(crate) fn build(&self, source: String, raw: &Value, keys: &ReservedKeys) -> Instance {
        // The id covers the whole section, so that instances differing only in reserved keys
        // (their tags, say) stay apart; the plugin reads the section without them.
        let whole = raw.to_string();
        let config = without_reserved(raw).to_string();
        let mut tags: Vec<String> = keys.tags.clone().unwrap_or_default();
        if let Some(service) = keys.service.as_deref().or(self.init_service) {
            tags.push(format!("service:{service}"));
        }
        tags.sort();
        tags.dedup();
        Instance {
            id: crate::check::id::instance_id(self.check, &whole, self.init_config),
            check: self.check.to_owned(),
            source,
            init_config: self.init_config.clone(),
            config,
            interval: keys
                .min_collection_interval
                .map_or(DEFAULT_INTERVAL, Duration::from_secs_f64),
            timeout: keys
                .timeout
                .map_or(self.default_timeout, Duration::from_secs_f64),
            timeout_key: keys.timeout.map(Duration::from_secs_f64),
            tags,
            empty_default_hostname: keys.empty_default_hostname.unwrap_or(false),
            allowed_hosts: allowed_hosts(raw, keys),
            allowed_paths: keys.allowed_paths.clone().unwrap_or_default(),
            postgres: PgTarget::from_instance(raw).transpose(),
            label_container: None,
        }
    }
}

/// An instance section without the keys the runner acts on: a check's config type then holds
/// only its own keys, and can refuse the ones it does not know (`deny_unknown_fields`), where a
/// typo (`timout: 3`) would otherwise pass unseen. The `timeout` reaches the plugin apart, as
/// the `instance` interface's `timeout-ms`.
fn without_reserved(raw: &Value) -> Value {
    let mut raw = raw.clone();
    if let Some(map) = raw.as_object_mut() {
        for name in ReservedKeys::NAMES {
            map.remove(name);
        }
    }
    raw
}

/// The hosts an instance may reach: its `allowed_hosts`, and the host and port of its `url`,
/// since a check's `url` key (http_check and most HTTP-based integrations) names the one place
/// it is meant to go, and requiring users to repeat it would break every existing Datadog
/// config. Only that port: other services on the same host need `allowed_hosts`.
fn allowed_hosts(raw: &Value, keys: &ReservedKeys) -> Vec<String> {
    let mut hosts = keys.allowed_hosts.clone().unwrap_or_default();
    let url = raw
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| url::Url::parse(u).ok());
    if let Some(url) = url
        && let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default())
    {
        hosts.push(format!("{host}:{port}"));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<CheckConfig>, ConfdError> {
        parse_file(
            "http_check",
            Path::new("conf.d/http_check.d/conf.yaml"),
            text,
        )
    }

    #[test]
    fn reserved_keys_resolve_with_defaults() {
        let config = parse(
            "init_config:\n  service: web\ninstances:\n  - url: http://localhost:8080/\n    tags: [b:2, a:1]\n  - url: http://x/\n    min_collection_interval: 30\n    timeout: 2\n    service: api\n",
        )
        .unwrap()
        .unwrap();
        let instances = instances(&config, Duration::from_secs(30));
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].interval, DEFAULT_INTERVAL);
        assert_eq!(instances[0].timeout, Duration::from_secs(30));
        assert_eq!(instances[0].tags, ["a:1", "b:2", "service:web"]);
        assert_eq!(instances[0].allowed_hosts, ["localhost:8080"]);
        assert_eq!(instances[1].interval, Duration::from_secs(30));
        assert_eq!(instances[1].timeout, Duration::from_secs(2));
        assert_eq!(instances[1].tags, ["service:api"]);
        assert_eq!(instances[0].timeout_key, None);
        assert_eq!(instances[1].timeout_key, Some(Duration::from_secs(2)));
        // The plugin reads the check's own keys alone.
        assert_eq!(instances[0].config, r#"{"url":"http://localhost:8080/"}"#);
        assert_eq!(instances[1].config, r#"{"url":"http://x/"}"#);
        assert!(instances[0].id.starts_with("http_check:"));
        assert_ne!(instances[0].id, instances[1].id);
    }

    mod files {
        use super::super::*;
        use std::os::unix::fs::symlink;

        const GOOD: &str = "instances:\n  - url: http://a/\n";
        const SECRET: &str = "root:$6$Zq1x$kT0pSecretHash:19000:0:99999:7:::\n";

        fn messages(loaded: &Loaded) -> Vec<String> {
            loaded.errors.iter().map(ToString::to_string).collect()
        }

        #[test]
        fn a_symlink_out_of_confd_is_not_read_unless_allowed() {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("shadow"), SECRET).unwrap();
            std::fs::create_dir(outside.path().join("elsewhere.d")).unwrap();
            std::fs::write(outside.path().join("elsewhere.d/conf.yaml"), GOOD).unwrap();
            let confd = tempfile::tempdir().unwrap();
            std::fs::write(confd.path().join("http_check.yaml"), GOOD).unwrap();
            symlink(outside.path().join("shadow"), confd.path().join("x.yaml")).unwrap();
            symlink(
                outside.path().join("elsewhere.d"),
                confd.path().join("disk.d"),
            )
            .unwrap();

            let loaded = load_dir(confd.path(), Symlinks::Inside).unwrap();
            assert_eq!(loaded.configs.len(), 1, "{:?}", messages(&loaded));
            let errors = messages(&loaded);
            assert_eq!(errors.len(), 2, "{errors:#?}");
            for error in &errors {
                assert!(
                    error.contains("leads outside the conf.d directory"),
                    "{error}"
                );
                assert!(error.contains("confd_follow_external_symlinks"), "{error}");
                assert!(!error.contains("$6$"), "{error}");
            }

            let loaded = load_dir(confd.path(), Symlinks::Anywhere).unwrap();
            assert_eq!(loaded.configs.len(), 2, "{:?}", messages(&loaded));
            let errors = messages(&loaded);
            assert_eq!(errors.len(), 1, "the shadow file, read: {errors:#?}");
            assert!(errors[0].contains("x.yaml:1:"), "{errors:#?}");
            assert!(!errors[0].contains("$6$"), "{errors:#?}");
            assert!(!errors[0].contains("Secret"), "{errors:#?}");
        }

        #[test]
        fn symlinks_within_confd_are_followed() {
            // A Kubernetes ConfigMap's layout: each file links into a timestamped directory
            // through the `..data` link.
            let confd = tempfile::tempdir().unwrap();
            std::fs::create_dir(confd.path().join("..2026_01_01")).unwrap();
            std::fs::write(confd.path().join("..2026_01_01/http_check.yaml"), GOOD).unwrap();
            symlink("..2026_01_01", confd.path().join("..data")).unwrap();
            symlink(
                "..data/http_check.yaml",
                confd.path().join("http_check.yaml"),
            )
            .unwrap();
            // And the conf.d path itself may be a link.
            let parent = tempfile::tempdir().unwrap();
            symlink(confd.path(), parent.path().join("conf.d")).unwrap();

            let loaded = load_dir(&parent.path().join("conf.d"), Symlinks::Inside).unwrap();
            assert!(loaded.errors.is_empty(), "{:?}", messages(&loaded));
            assert_eq!(loaded.configs.len(), 1);
        }

        #[test]
        fn a_fifo_or_a_device_is_refused_without_blocking() {
            let confd = tempfile::tempdir().unwrap();
            let fifo = confd.path().join("fifo.yaml");
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
            symlink("/dev/zero", confd.path().join("zero.yaml")).unwrap();

            let loaded = load_dir(confd.path(), Symlinks::Anywhere).unwrap();
            let errors = messages(&loaded);
            assert_eq!(errors.len(), 2, "{errors:#?}");
            assert!(
                errors.iter().all(|e| e.contains("not a regular file")),
                "{errors:#?}"
            );
        }

        #[test]
        fn a_file_past_one_mib_is_not_read_whole() {
            let confd = tempfile::tempdir().unwrap();
            let big = format!("{GOOD}# {}\n", "x".repeat(bounds::MAX_FILE_BYTES));
            std::fs::write(confd.path().join("http_check.yaml"), big).unwrap();
            let loaded = load_dir(confd.path(), Symlinks::Inside).unwrap();
            let errors = messages(&loaded);
            assert_eq!(errors.len(), 1);
            assert!(
                errors[0].contains("may be at most 1048576 bytes"),
                "{errors:#?}"
            );
        }
    }
}
