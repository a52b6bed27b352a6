//! The instance options of `chef`.
//!
//! | key | meaning; default |
//! |---|---|
//! | `reports_dir` | where Chef's `json_file` report handler writes (its `path`); it must be inside one of the instance's `allowed_paths`; `/var/chef/reports` |
//! | `max_reports_per_run` | the most new reports read in one run, the rest waiting for the next; each report submits 5 items (at most 2 for a compile failure), against the runner's `plugins.max_items_per_run`; 100 |
//! | `max_report_age` | seconds: a new report modified longer ago than this is passed over without being sent; 0 sends them all; 86400 (a day) |
//!
//! `max_report_age` is there for the first run on a node whose directory holds years of reports
//! (Chef never deletes them), and for the first run after the instance's configuration changes,
//! which starts from an empty key-value store: without it, every report would be sent again,
//! and their metrics, which carry no timestamp, would all count as current.
//!
//! The options are a typed serde struct: a value of the wrong type or out of range fails the run
//! with the key named (`max_reports_per_run: must be a whole number of at least 1, got 0`).
//! Numbers may also be given as numeric strings, as in Datadog's configs; a null is the
//! default, as an absent key is. Unknown keys are ignored (the runner's reserved keys, `tags`,
//! `allowed_paths` and the others, never reach the check).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kennel_sdk::options::Number;
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

pub const DEFAULT_REPORTS_DIR: &str = "/var/chef/reports";
const DEFAULT_MAX_REPORTS_PER_RUN: usize = 100;
const DEFAULT_MAX_REPORT_AGE: Duration = Duration::from_secs(86_400);

/// One instance's options.
#[derive(Debug, PartialEq, Deserialize)]
pub struct Config {
    /// Where Chef's `json_file` handler writes. Defaults to `/var/chef/reports`.
    #[serde(default = "default_reports_dir", deserialize_with = "reports_dir")]
    pub reports_dir: PathBuf,
    /// At least 1. Defaults to 100.
    #[serde(
        default = "default_max_reports_per_run",
        deserialize_with = "max_reports_per_run"
    )]
    pub max_reports_per_run: usize,
    /// `None`: no limit. Defaults to a day.
    #[serde(
        default = "default_max_report_age",
        deserialize_with = "max_report_age"
    )]
    pub max_report_age: Option<Duration>,
}

fn default_reports_dir() -> PathBuf {
    PathBuf::from(DEFAULT_REPORTS_DIR)
}

const fn default_max_reports_per_run() -> usize {
    DEFAULT_MAX_REPORTS_PER_RUN
}

const fn default_max_report_age() -> Option<Duration> {
    Some(DEFAULT_MAX_REPORT_AGE)
}

fn reports_dir<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    deserializer.deserialize_any(ReportsDir)
}

/// A path that is not blank; null for the default.
struct ReportsDir;

impl<'de> Visitor<'de> for ReportsDir {
    type Value = PathBuf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "the path of the directory Chef's json_file handler writes to, such as \
             {DEFAULT_REPORTS_DIR}"
        )
    }

    fn visit_str<E: de::Error>(self, dir: &str) -> Result<PathBuf, E> {
        if dir.trim().is_empty() {
            Err(E::invalid_value(Unexpected::Str(dir), &self))
        } else {
            Ok(PathBuf::from(dir))
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<PathBuf, E> {
        Ok(default_reports_dir())
    }
}

fn max_reports_per_run<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    match Option::<Number>::deserialize(deserializer)? {
        None => Ok(DEFAULT_MAX_REPORTS_PER_RUN),
        Some(Number(n)) if n >= 1.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
            Ok(n as usize)
        }
        Some(Number(n)) => Err(de::Error::custom(format!(
            "must be a whole number of at least 1, got {n}"
        ))),
    }
}

fn max_report_age<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    match Option::<Number>::deserialize(deserializer)? {
        None => Ok(default_max_report_age()),
        Some(Number(0.0)) => Ok(None),
        Some(Number(seconds)) => Duration::try_from_secs_f64(seconds).map(Some).map_err(|_| {
            de::Error::custom(format!(
                "must be a number of seconds, 0 for no limit, got {seconds}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use kennel_sdk::testing;
    use serde_json::{Value, json};

    use super::*;

    fn parse(instance: Value) -> Result<Config, String> {
        testing::config::<Config>(instance).map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_are_chef_s_directory_100_reports_and_a_day() {
        let config = parse(json!({"tags": ["a:b"], "allowed_paths": ["/var/chef"]}));
        assert_eq!(
            config,
            Ok(Config {
                reports_dir: PathBuf::from("/var/chef/reports"),
                max_reports_per_run: 100,
                max_report_age: Some(Duration::from_secs(86_400)),
            })
        );
        let nulls =
            json!({"reports_dir": null, "max_reports_per_run": null, "max_report_age": null});
        assert_eq!(parse(nulls), config, "null is the default");
    }

    #[test]
    fn options_are_read() {
        let config = parse(json!({
            "reports_dir": "/srv/chef/reports", "max_reports_per_run": "20", "max_report_age": 0,
        }));
        assert_eq!(
            config,
            Ok(Config {
                reports_dir: PathBuf::from("/srv/chef/reports"),
                max_reports_per_run: 20,
                max_report_age: None,
            })
        );
        let config = parse(json!({"max_report_age": 3600.5}));
        assert_eq!(
            config.map(|c| c.max_report_age),
            Ok(Some(Duration::from_secs_f64(3600.5)))
        );
    }

    #[test]
    fn wrong_values_fail_naming_the_key() {
        let cases = [
            (
                json!({"reports_dir": 5}),
                "reports_dir: invalid type: integer `5`, expected the path of the directory \
                 Chef's json_file handler writes to, such as /var/chef/reports",
            ),
            (
                json!({"reports_dir": ""}),
                "reports_dir: invalid value: string \"\", expected the path",
            ),
            (
                json!({"reports_dir": ["/a"]}),
                "reports_dir: invalid type: sequence, expected the path",
            ),
            (
                json!({"max_reports_per_run": 0}),
                "max_reports_per_run: must be a whole number of at least 1, got 0",
            ),
            (
                json!({"max_reports_per_run": 2.5}),
                "max_reports_per_run: must be a whole number",
            ),
            (
                json!({"max_reports_per_run": "many"}),
                "max_reports_per_run: invalid value: string \"many\", expected a number",
            ),
            (
                json!({"max_report_age": -1}),
                "max_report_age: must be a number of seconds",
            ),
            (
                json!({"max_report_age": true}),
                "max_report_age: invalid type: boolean `true`, expected a number",
            ),
        ];
        for (instance, expected) in cases {
            match parse(instance.clone()) {
                Ok(config) => panic!("{instance} gave {config:?}"),
                Err(error) => assert!(error.starts_with(expected), "{error}"),
            }
        }
    }
}
