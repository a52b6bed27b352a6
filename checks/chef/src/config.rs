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
//! The instance arrives as raw JSON and each key is read by hand, so that a wrong value fails
//! the run with a message naming the key. Numbers may also be given as numeric strings. Unknown
//! keys, such as the runner's reserved `tags`, `service`, `min_collection_interval` and
//! `allowed_paths`, are ignored.

use std::path::PathBuf;
use std::time::Duration;

use kennel_sdk::options::number;
use serde_json::Value;

pub const DEFAULT_REPORTS_DIR: &str = "/var/chef/reports";
const DEFAULT_MAX_REPORTS_PER_RUN: u64 = 100;
const DEFAULT_MAX_REPORT_AGE_SECONDS: f64 = 86_400.0;

#[derive(Debug, PartialEq)]
pub struct Config {
    pub reports_dir: PathBuf,
    /// At least 1.
    pub max_reports_per_run: usize,
    /// `None`: no limit.
    pub max_report_age: Option<Duration>,
}

impl Config {
    pub fn parse(instance: &Value) -> Result<Self, String> {
        let Value::Object(instance) = instance else {
            return Err(format!(
                "the instance must be a mapping of options, got {instance}"
            ));
        };
        let reports_dir = match instance.get("reports_dir") {
            None | Some(Value::Null) => DEFAULT_REPORTS_DIR.to_owned(),
            Some(Value::String(dir)) if !dir.trim().is_empty() => dir.clone(),
            Some(other) => {
                return Err(format!(
                    "`reports_dir` must be the path of the directory Chef's json_file handler \
                     writes to, such as {DEFAULT_REPORTS_DIR}, got {other}"
                ));
            }
        };
        let max_reports_per_run = match number(instance, "max_reports_per_run")? {
            None => DEFAULT_MAX_REPORTS_PER_RUN as usize,
            Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => n as usize,
            Some(n) => {
                return Err(format!(
                    "`max_reports_per_run` must be a whole number of at least 1, got {n}"
                ));
            }
        };
        let max_report_age = match number(instance, "max_report_age")? {
            None => Some(Duration::from_secs_f64(DEFAULT_MAX_REPORT_AGE_SECONDS)),
            Some(0.0) => None,
            Some(seconds) => Some(Duration::try_from_secs_f64(seconds).map_err(|_| {
                format!(
                    "`max_report_age` must be a number of seconds, 0 for no limit, got {seconds}"
                )
            })?),
        };
        Ok(Self {
            reports_dir: PathBuf::from(reports_dir),
            max_reports_per_run,
            max_report_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_are_chef_s_directory_100_reports_and_a_day() {
        let config = Config::parse(&json!({"tags": ["a:b"], "allowed_paths": ["/var/chef"]}));
        assert_eq!(
            config,
            Ok(Config {
                reports_dir: PathBuf::from("/var/chef/reports"),
                max_reports_per_run: 100,
                max_report_age: Some(Duration::from_secs(86_400)),
            })
        );
    }

    #[test]
    fn options_are_read() {
        let config = Config::parse(&json!({
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
        let config = Config::parse(&json!({"max_report_age": 3600.5}));
        assert_eq!(
            config.map(|c| c.max_report_age),
            Ok(Some(Duration::from_secs_f64(3600.5)))
        );
    }

    #[test]
    fn wrong_values_fail_naming_the_key() {
        let cases = [
            (json!({"reports_dir": 5}), "`reports_dir` must be the path"),
            (json!({"reports_dir": ""}), "`reports_dir` must be the path"),
            (
                json!({"reports_dir": ["/a"]}),
                "`reports_dir` must be the path",
            ),
            (
                json!({"max_reports_per_run": 0}),
                "`max_reports_per_run` must be a whole number of at least 1, got 0",
            ),
            (
                json!({"max_reports_per_run": 2.5}),
                "`max_reports_per_run` must be a whole number",
            ),
            (
                json!({"max_reports_per_run": "many"}),
                "`max_reports_per_run` must be a number, got \"many\"",
            ),
            (
                json!({"max_report_age": -1}),
                "`max_report_age` must be a number of seconds",
            ),
            (
                json!({"max_report_age": true}),
                "`max_report_age` must be a number",
            ),
            (json!(["x"]), "the instance must be a mapping"),
        ];
        for (instance, expected) in cases {
            match Config::parse(&instance) {
                Ok(config) => panic!("{instance} gave {config:?}"),
                Err(error) => assert!(error.starts_with(expected), "{error}"),
            }
        }
    }
}
