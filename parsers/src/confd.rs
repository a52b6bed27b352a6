//! One conf.d file: its text parsed and checked, in the Datadog Agent's format.
//!
//! A file holds `init_config`, `instances` and optionally `ad_identifiers` (a template,
//! scheduled per container by autodiscovery rather than directly). The instance reserved keys
//! are checked here, with the line of any error: `min_collection_interval` (seconds, default
//! 15), `tags`, `service`, `timeout` (the run's deadline), `empty_default_hostname`,
//! `allowed_hosts` (HTTP egress grants) and `allowed_paths` (directories readable by the
//! plugin). Everything else in an instance belongs to the check.
//!
//! A bad file is one [`ConfdError`] naming the file and line. Unlike the Datadog Agent, which
//! re-parses a file leniently when strict parsing fails, a file with duplicate or unknown
//! top-level keys is refused: a config whose meaning is ambiguous should be fixed, not guessed
//! at.
//!
//! The text is untrusted input, checked before serde sees it:
//! - it is at most 1 MiB, nests at most 64 deep, and its aliases may about double it, checked in
//!   one pass of the YAML parser before anything is expanded ([`bounds`]);
//! - an error names keys and positions, never values: serde's messages are rebuilt from their
//!   known forms with each value replaced by its kind ([`redact`]).
//!
//! Reading the file (where it may be, what it may be) is the runner's conf.d loader's part.

mod redact;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::yaml_bounds::{self as bounds, Breach};

/// The shortest interval accepted, in seconds.
pub const MIN_INTERVAL_SECS: f64 = 0.1;

/// One configuration file, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub check: String,
    pub path: PathBuf,
    pub init_config: Value,
    /// Each instance's whole section, and its reserved keys.
    pub instances: Vec<(Value, ReservedKeys)>,
    /// Non-empty for a template, which autodiscovery resolves per container.
    pub ad_identifiers: Vec<String>,
    /// For a template: do not merge the container's tags into the instances' tags.
    pub ignore_autodiscovery_tags: bool,
    pub init_service: Option<String>,
}

/// The instance keys the runner itself acts on. Their values are checked while parsing, so an
/// error carries the line of the bad value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ReservedKeys {
    #[serde(default, deserialize_with = "interval_seconds")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_collection_interval: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, deserialize_with = "timeout_seconds")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_default_hostname: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "absolute_paths")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_paths: Option<Vec<PathBuf>>,
}

impl ReservedKeys {
    /// The keys, as an instance writes them.
    pub const NAMES: [&str; 7] = [
        "min_collection_interval",
        "tags",
        "service",
        "timeout",
        "empty_default_hostname",
        "allowed_hosts",
        "allowed_paths",
    ];
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
    pub check: String,
    pub path: PathBuf,
    /// 1-based, when the problem has a place in the file.
    pub line: Option<usize>,
    pub message: String,
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

/// Stands for `%%` while a file with unquoted template variables is parsed.
const VARIABLE_PLACEHOLDER: &str = "\u{2030}";

/// Restores every `%%` the placeholder stood for, in keys as well as values.
fn unswap_variables(value: &mut Value) {
    match value {
        Value::String(text) if text.contains(VARIABLE_PLACEHOLDER) => {
            *text = text.replace(VARIABLE_PLACEHOLDER, "%%");
        }
        Value::Array(items) => items.iter_mut().for_each(unswap_variables),
        Value::Object(map) => {
            if map.keys().any(|key| key.contains(VARIABLE_PLACEHOLDER)) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(key, value)| (key.replace(VARIABLE_PLACEHOLDER, "%%"), value))
                    .collect();
            }
            map.values_mut().for_each(unswap_variables);
        }
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
    pub fn is_template(&self) -> bool {
        !self.ad_identifiers.is_empty()
    }
}

/// The service named in an `init_config` section, which instances without their own inherit.
pub fn init_service(init_config: &Value) -> Option<&str> {
    init_config.get("service").and_then(Value::as_str)
}

/// The reserved keys of an instance that did not come from a file (a resolved template); an
/// error says which key is wrong.
pub fn reserved_keys(raw: &Value) -> Result<ReservedKeys, String> {
    ReservedKeys::deserialize(raw).map_err(|e| e.to_string())
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
    fn a_key_holding_percent_signs_keeps_them_in_a_file_read_with_the_stand_in() {
        // Found by the `confd_file` fuzz target: the stand-in was restored in values only.
        let config = parse("instances:\n  - url: http://%%host%%/\n    \"a %%b\": %%port%%\n")
            .unwrap()
            .unwrap();
        let (raw, _) = &config.instances[0];
        assert_eq!(raw["a %%b"], "%%port%%", "{raw}");
        assert!(!raw.to_string().contains(VARIABLE_PLACEHOLDER), "{raw}");
    }

    #[test]
    fn the_reserved_key_names_are_the_fields() {
        let all = serde_json::to_value(ReservedKeys {
            min_collection_interval: Some(1.0),
            tags: Some(Vec::new()),
            service: Some(String::new()),
            timeout: Some(1.0),
            empty_default_hostname: Some(true),
            allowed_hosts: Some(Vec::new()),
            allowed_paths: Some(Vec::new()),
        })
        .unwrap();
        let fields: Vec<&str> = all
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names = ReservedKeys::NAMES.to_vec();
        names.sort_unstable();
        assert_eq!(fields, names);
        // What the sdk tells check authors, and takes out in its test harness.
        assert_eq!(ReservedKeys::NAMES, kennel_sdk::RESERVED_KEYS);
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
}
