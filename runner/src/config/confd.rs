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

mod redact;

use std::borrow::Cow;
use std::fmt;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::check::Instance;
use crate::check::PgTarget;
use crate::config::RunnerConfig;
use bounds::Breach;
use kennel_parsers::yaml_bounds as bounds;

/// The Datadog Agent's default check interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The shortest interval accepted, in seconds.
pub(crate) const MIN_INTERVAL_SECS: f64 = 0.1;

/// One configuration file, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub check: String,
    pub(crate) path: PathBuf,
    pub(crate) init_config: Value,
    /// Each instance's whole section, and its reserved keys.
    pub instances: Vec<(Value, ReservedKeys)>,
    /// Non-empty for a template, which autodiscovery resolves per container.
    pub(crate) ad_identifiers: Vec<String>,
    /// For a template: do not merge the container's tags into the instances' tags.
    pub(crate) ignore_autodiscovery_tags: bool,
    init_service: Option<String>,
}

/// The instance keys the runner itself acts on. Their values are checked while parsing, so an
/// error carries the line of the bad value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ReservedKeys {
    #[serde(default, deserialize_with = "interval_seconds")]
    pub(crate) min_collection_interval: Option<f64>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) service: Option<String>,
    #[serde(default, deserialize_with = "timeout_seconds")]
    pub(crate) timeout: Option<f64>,
    pub(crate) empty_default_hostname: Option<bool>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "absolute_paths")]
    pub(crate) allowed_paths: Option<Vec<PathBuf>>,
}

/// A value past its range is reported at the line of the instance that holds it.
fn seconds_in<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    key: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f64>, D::Error> {
    let seconds = Option::<f64>::deserialize(deserializer)?;
    match seconds {
        Some(s) if !range.contains(&s) => Err(serde::de::Error::custom(format!(
            "`{key}` is out of range: give seconds between {} and {}",
            range.start(),
            range.end()
        ))),
        _ => Ok(seconds),
    }
}

fn interval_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    seconds_in(d, "min_collection_interval", MIN_INTERVAL_SECS..=86_400.0)
}

fn timeout_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    seconds_in(d, "timeout", 0.001..=3600.0)
}

fn absolute_paths<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<PathBuf>>, D::Error> {
    let paths = Option::<Vec<PathBuf>>::deserialize(d)?;
    if let Some(index) = paths.iter().flatten().position(|p| !p.is_absolute()) {
        return Err(serde::de::Error::custom(format!(
            "allowed_paths[{index}] is not an absolute path"
        )));
    }
    Ok(paths)
}

/// A configuration file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfdError {
    /// The check the file configures.
    pub(crate) check: String,
    pub path: PathBuf,
    /// 1-based, when the problem has a place in the file.
    pub line: Option<usize>,
    pub(crate) message: String,
}

impl fmt::Display for ConfdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfdError {}

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

/// The top-level keys a check configuration file may hold: Kennel's, and the Datadog Agent's
/// others, accepted so that existing files load (they have no effect here yet).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FileShape {
    #[serde(default)]
    init_config: Option<InitShape>,
    #[serde(default)]
    instances: Option<Vec<Option<ReservedKeys>>>,
    #[serde(default)]
    ad_identifiers: Option<Vec<String>>,
    #[serde(default)]
    logs: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    jmx_metrics: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    advanced_ad_identifiers: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cel_selector: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cluster_check: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    docker_images: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    ignore_autodiscovery_tags: Option<bool>,
    #[serde(default)]
    check_tag_cardinality: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct InitShape {
    #[serde(default)]
    service: Option<String>,
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

/// Stands for `%%` while a file with unquoted template variables is parsed.
const VARIABLE_PLACEHOLDER: &str = "\u{2030}";

fn unswap_variables(value: &mut Value) {
    match value {
        Value::String(text) if text.contains(VARIABLE_PLACEHOLDER) => {
            *text = text.replace(VARIABLE_PLACEHOLDER, "%%");
        }
        Value::Array(items) => items.iter_mut().for_each(unswap_variables),
        Value::Object(map) => map.values_mut().for_each(unswap_variables),
        _ => {}
    }
}

/// Parses one file's text. `Ok(None)` for a file with nothing to schedule (empty, or logs only).
/// The text is checked against the bounds of [`bounds`] before it is parsed.
pub fn parse_file(check: &str, path: &Path, text: &str) -> Result<Option<CheckConfig>, ConfdError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let refused = |breach: Breach| ConfdError {
        check: check.to_owned(),
        path: path.to_owned(),
        line: breach.line(),
        message: breach.to_string(),
    };
    let yaml_error = |error: serde_norway::Error| {
        let line = error.location().map(|l| l.line());
        let mut message = error.to_string();
        if let Some(location) = error.location() {
            // The line leads the message already; the parser's own "at line L column C" would
            // only repeat it.
            let at = format!(" at line {} column {}", location.line(), location.column());
            if let Some(stripped) = message.strip_suffix(&at) {
                message = stripped.to_owned();
            }
        }
        ConfdError {
            check: check.to_owned(),
            path: path.to_owned(),
            line,
            message: redact::message(&message),
        }
    };
    // A bound crossed refuses the file; a syntax error may yet be an unquoted template variable.
    let checked = match bounds::check(text) {
        Err(breach) if !breach.is_syntax() => return Err(refused(breach)),
        checked => checked,
    };
    let first = match checked {
        Ok(()) => serde_norway::from_str::<FileShape>(text).map_err(yaml_error),
        Err(breach) => Err(refused(breach)),
    };
    // A template variable left unquoted (`port: %%port%%`) is not valid YAML; like the Datadog
    // Agent, read such a file with `%%` swapped for a placeholder, swapped back afterwards.
    let (text, shape, swapped): (Cow<'_, str>, FileShape, bool) = match first {
        Ok(shape) => (Cow::Borrowed(text), shape, false),
        Err(error) if text.contains("%%") => {
            let text = text.replace("%%", VARIABLE_PLACEHOLDER);
            match bounds::check(&text) {
                Err(breach) if !breach.is_syntax() => return Err(refused(breach)),
                Err(_) => return Err(error),
                Ok(()) => {}
            }
            let Ok(shape) = serde_norway::from_str(&text) else {
                return Err(error);
            };
            (Cow::Owned(text), shape, true)
        }
        Err(error) => return Err(error),
    };
    let mut whole: Value = serde_norway::from_str(&text).map_err(yaml_error)?;
    if swapped {
        unswap_variables(&mut whole);
    }
    let error = |message: String| ConfdError {
        check: check.to_owned(),
        path: path.to_owned(),
        line: Some(1),
        message,
    };

    let ad_identifiers = shape.ad_identifiers.unwrap_or_default();
    let reserved = match shape.instances {
        Some(instances) if !instances.is_empty() => instances,
        _ if shape.logs.is_some() && ad_identifiers.is_empty() => return Ok(None),
        _ => {
            return Err(error(
                "no instances: add an `instances:` list with at least one entry (`- {}` for an instance with no options)"
                    .to_owned(),
            ));
        }
    };
    let raw_instances = whole
        .get("instances")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let mut instances = Vec::with_capacity(raw_instances.len());
    for (index, (raw, keys)) in raw_instances.into_iter().zip(reserved).enumerate() {
        let raw = match raw {
            Value::Null => Value::Object(Default::default()),
            Value::Object(map) => Value::Object(map),
            other => {
                return Err(error(format!(
                    "instances[{index}] must be a mapping of options, not {}",
                    json_kind(&other)
                )));
            }
        };
        let keys = match swapped {
            // Read again from the restored values, so tags keep their `%%`.
            true => reserved_keys(&raw)
                .map_err(|e| error(format!("instances[{index}]: {}", redact::message(&e))))?,
            false => keys.unwrap_or_default(),
        };
        instances.push((raw, keys));
    }

    let init_config = whole.get("init_config").cloned().unwrap_or(Value::Null);
    Ok(Some(CheckConfig {
        check: check.to_owned(),
        path: path.to_owned(),
        init_config,
        instances,
        ad_identifiers,
        ignore_autodiscovery_tags: shape.ignore_autodiscovery_tags.unwrap_or(false),
        init_service: shape.init_config.and_then(|i| i.service),
    }))
}

/// What kind of value `value` is, for an error that must not quote it.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

impl CheckConfig {
    /// Whether autodiscovery must resolve this config against a container before it runs.
    pub(crate) fn is_template(&self) -> bool {
        !self.ad_identifiers.is_empty()
    }

    /// The runnable instances, with the runner's default deadline for those that set no
    /// `timeout`.
    pub fn instances(&self, default_timeout: Duration) -> Vec<Instance> {
        let init_config: Arc<str> = self.init_config.to_string().into();
        self.instances
            .iter()
            .enumerate()
            .map(|(index, (raw, keys))| {
                let source = format!("file:{}[{index}]", self.path.display());
                let init_service = self.init_service.as_deref();
                let parts = InstanceParts {
                    check: &self.check,
                    init_config: &init_config,
                    init_service,
                    default_timeout,
                };
                parts.build(source, raw, keys)
            })
            .collect()
    }
}

/// The service named in an `init_config` section, which instances without their own inherit.
pub(crate) fn init_service(init_config: &Value) -> Option<&str> {
    init_config.get("service").and_then(Value::as_str)
}

/// The reserved keys of an instance that did not come from a file (a resolved template); an
/// error says which key is wrong.
pub(crate) fn reserved_keys(raw: &Value) -> Result<ReservedKeys, String> {
    ReservedKeys::deserialize(raw).map_err(|e| e.to_string())
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
        let config = raw.to_string();
        let mut tags: Vec<String> = keys.tags.clone().unwrap_or_default();
        if let Some(service) = keys.service.as_deref().or(self.init_service) {
            tags.push(format!("service:{service}"));
        }
        tags.sort();
        tags.dedup();
        Instance {
            id: crate::check::id::instance_id(self.check, &config, self.init_config),
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
            tags,
            empty_default_hostname: keys.empty_default_hostname.unwrap_or(false),
            allowed_hosts: allowed_hosts(raw, keys),
            allowed_paths: keys.allowed_paths.clone().unwrap_or_default(),
            postgres: PgTarget::from_instance(raw).transpose(),
            label_container: None,
        }
    }
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
        let instances = config.instances(Duration::from_secs(30));
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].interval, DEFAULT_INTERVAL);
        assert_eq!(instances[0].timeout, Duration::from_secs(30));
        assert_eq!(instances[0].tags, ["a:1", "b:2", "service:web"]);
        assert_eq!(instances[0].allowed_hosts, ["localhost:8080"]);
        assert_eq!(instances[1].interval, Duration::from_secs(30));
        assert_eq!(instances[1].timeout, Duration::from_secs(2));
        assert_eq!(instances[1].tags, ["service:api"]);
        assert!(instances[0].id.starts_with("http_check:"));
        assert_ne!(instances[0].id, instances[1].id);
    }

    #[test]
    fn invalid_yaml_names_the_line() {
        let error = parse("instances:\n  - url: [unclosed\n").unwrap_err();
        assert!(error.line.is_some(), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("conf.d/http_check.d/conf.yaml:"),
            "{error}"
        );
    }

    #[test]
    fn reserved_key_of_wrong_type_names_key_and_line() {
        let error = parse("instances:\n  - url: http://a/\n    min_collection_interval: often\n")
            .unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("min_collection_interval"), "{error}");
    }

    #[test]
    fn out_of_range_reserved_key_names_key_and_line() {
        let error = parse("instances:\n  - url: http://a/\n    timeout: 0\n").unwrap_err();
        assert_eq!(error.line, Some(2), "the instance's line: {error}");
        assert!(
            error.message.contains("`timeout` is out of range"),
            "{error}"
        );
        let error = parse("instances:\n  - {}\n  - min_collection_interval: 0.01\n").unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("min_collection_interval"), "{error}");
        let error = parse("instances:\n  - allowed_paths: [/srv, reports]\n").unwrap_err();
        assert!(
            error
                .message
                .contains("allowed_paths[1] is not an absolute path"),
            "{error}"
        );
    }

    #[test]
    fn missing_instances_is_an_error() {
        let error = parse("init_config: {}\n").unwrap_err();
        assert!(error.message.contains("no instances"), "{error}");
    }

    #[test]
    fn unknown_top_level_key_is_an_error_naming_it() {
        let error = parse("instance:\n  - url: http://a/\n").unwrap_err();
        assert!(
            error.message.contains("unknown field `instance`"),
            "{error}"
        );
        assert_eq!(error.line, Some(1));
    }

    #[test]
    fn empty_file_and_logs_only_file_are_skipped() {
        assert_eq!(parse("  \n").unwrap(), None);
        assert_eq!(parse("logs:\n  - type: file\n").unwrap(), None);
    }

    #[test]
    fn unquoted_template_variables_parse() {
        let config = parse(
            "ad_identifiers: [httpd]\ninstances:\n  - url: http://%%host%%:%%port%%/\n    port: %%port%%\n    tags: [\"a:%%env_X%%\"]\n",
        )
        .unwrap()
        .unwrap();
        let (raw, keys) = &config.instances[0];
        assert_eq!(raw["port"], "%%port%%");
        assert_eq!(raw["url"], "http://%%host%%:%%port%%/");
        assert_eq!(keys.tags.as_deref(), Some(&["a:%%env_X%%".to_owned()][..]));
    }

    #[test]
    fn empty_instance_is_an_empty_mapping() {
        let config = parse("instances:\n  -\n  - {}\n").unwrap().unwrap();
        assert_eq!(config.instances.len(), 2);
        assert!(config.instances[0].0.as_object().unwrap().is_empty());
    }

    /// A "billion laughs" that grows with the square of its length, as serde_norway's own
    /// repetition guard allows: one anchor of `width` scalars, then `width` aliases to it, under
    /// a key the file shape ignores. About `4 * width` bytes, `width²` nodes expanded.
    fn quadratic_alias_bomb(width: usize) -> String {
        format!(
            "instances:\n  - {{}}\nlogs:\n  - &a [{}]\n  - [{}]\n",
            vec!["1"; width].join(","),
            vec!["*a"; width].join(",")
        )
    }

    #[test]
    fn alias_bombs_are_refused_before_expansion_naming_the_limit() {
        let nested_laughs = (1..=9).fold(
            "init_config:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                .to_owned(),
            |text, level| {
                let previous = format!("*l{}", level - 1);
                format!(
                    "{text}  l{level}: &l{level} [{}]\n",
                    [previous.as_str(); 10].join(", ")
                )
            },
        ) + "instances:\n  - {}\n";
        // 40 KB and 400 KB: 1.65 GB and (under `test-check`) 16 GB of RSS before this bound.
        for (text, bomb_line) in [
            (quadratic_alias_bomb(8_000), 5),
            (quadratic_alias_bomb(80_000), 5),
            (nested_laughs, 6),
        ] {
            let error = parse(&text).unwrap_err();
            assert!(
                error
                    .message
                    .contains("aliases expand the file past its length plus 65536"),
                "{} bytes: {error}",
                text.len()
            );
            assert_eq!(error.line, Some(bomb_line), "{error}");
            assert!(
                error
                    .to_string()
                    .starts_with("conf.d/http_check.d/conf.yaml:"),
                "{error}"
            );
        }
    }

    #[test]
    fn aliases_within_the_allowance_expand_as_before() {
        let config = parse(
            "init_config:\n  shared: &tags [team:web, env:prod]\ninstances:\n  - url: http://a/\n    tags: *tags\n  - url: http://b/\n    tags: *tags\n",
        )
        .unwrap()
        .unwrap();
        for (raw, keys) in &config.instances {
            assert_eq!(raw["tags"], serde_json::json!(["team:web", "env:prod"]));
            assert_eq!(keys.tags.as_deref().map(<[String]>::len), Some(2));
        }
        // 22,500 scalars through aliases in a file of 700 bytes: within its length plus 64 Ki.
        assert!(parse(&quadratic_alias_bomb(150)).unwrap().is_some());
    }

    #[test]
    fn an_alias_inside_its_own_anchor_is_refused() {
        let error = parse("instances:\n  - &me {loop: *me}\n").unwrap_err();
        assert!(error.message.contains("not defined before it"), "{error}");
        assert_eq!(error.line, Some(2));
    }

    #[test]
    fn deep_nesting_is_refused_naming_the_depth_before_parsing() {
        let nested = |depth: usize| {
            format!(
                "instances:\n  - x: {}{}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        // `instances`, its list and the instance hold three levels.
        assert!(parse(&nested(61)).unwrap().is_some());
        for text in [nested(62), "[".repeat(100_000), "{a: ".repeat(30_000)] {
            let error = parse(&text).unwrap_err();
            assert!(
                error.message.contains("nest more than 64 levels deep"),
                "{error}"
            );
            assert!(error.line.is_some(), "{error}");
        }
        // What an alias expands to counts where the alias stands.
        let deep_anchor = format!(
            "init_config:\n  deep: &deep {}{}\ninstances:\n  - x: {}*deep{}\n",
            "[".repeat(40),
            "]".repeat(40),
            "[".repeat(30),
            "]".repeat(30)
        );
        let error = parse(&deep_anchor).unwrap_err();
        assert!(error.message.contains("nest more than 64"), "{error}");
        assert_eq!(error.line, Some(4));
    }

    #[test]
    fn a_file_past_one_mib_is_refused_naming_the_limit() {
        let text = format!(
            "instances:\n  - {{}}\n# {}\n",
            "x".repeat(bounds::MAX_FILE_BYTES)
        );
        let error = parse(&text).unwrap_err();
        assert!(
            error
                .message
                .contains("a conf.d file may be at most 1048576 bytes (1 MiB)"),
            "{error}"
        );
    }

    #[test]
    fn errors_name_keys_and_lines_but_never_quote_values() {
        let shadow =
            "root:$6$Zq1x$kT0pSecretHash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        let error = parse(shadow).unwrap_err();
        assert!(!error.to_string().contains("$6$"), "{error}");
        assert!(!error.to_string().contains("Secret"), "{error}");
        assert_eq!(error.line, Some(1), "{error}");
        assert!(
            error.message.contains("unknown field (not shown"),
            "{error}"
        );

        let error =
            parse("instances:\n  - url: http://a/\n    tags: \"password=hunter2\"\n").unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("tags"), "{error}");
        assert!(error.message.contains("invalid type: string"), "{error}");
        assert!(!error.message.contains("hunter2"), "{error}");

        let error = parse("instances:\n  - hunter2\n").unwrap_err();
        assert_eq!(
            error.message,
            "instances[0]: invalid type: string, expected struct ReservedKeys"
        );

        let error =
            parse("instances:\n  - [null, null, null, null, null, null, hunter2]\n").unwrap_err();
        assert!(!error.message.contains("hunter2"), "{error}");
        assert!(error.message.contains("instances[0]"), "{error}");
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
