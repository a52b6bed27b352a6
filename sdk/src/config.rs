//! Turning the configuration the runner sends into a check's typed [`Check::Config`], and what
//! a run does when that fails.
//!
//! The runner sends the instance as JSON. It is parsed into a `serde_json::Value` first and
//! deserialized from that with `serde_path_to_error`, so an error names the key it is about
//! (`custom_queries[1].tags`) and says nothing of lines and columns of JSON the user never
//! wrote. The error keeps the raw instance, so that [`Check::config_error`] can still read
//! what it needs to report the failure the way the check reports any other (its service
//! check's tags, a password to keep out of the message).

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Check, Ctx};

/// A configuration section that did not deserialize into the check's type: which key, why,
/// and the section as it arrived.
///
/// Displayed as `<key>: <reason>`, e.g. `timeout: invalid type: sequence, expected a number`,
/// or as the reason alone when it is about the section as a whole, such as a missing required
/// key (serde's reason then names it).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    key: String,
    reason: String,
    raw: Value,
}

impl ConfigError {
    /// The path of the offending key, as in `timeout`, `custom_queries[1].tags` or
    /// `init_config.timeout`; empty when the problem is the instance as a whole (a required key
    /// is missing, say: the reason then names it).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with the key, in serde's words or the check's own.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The section that failed, as the runner sent it: the instance for
    /// [`Check::config_error`], `init_config` for [`Ctx::init_config`]. Read leniently from it
    /// what the error report needs.
    pub fn raw(&self) -> &Value {
        &self.raw
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(error: ConfigError) -> Self {
        Self::msg(error)
    }
}

/// Runs `C` on `instance`: [`Check::run`] with the deserialized config, or
/// [`Check::config_error`] when it does not deserialize. Used by the component's export and
/// the testing harness.
pub(crate) fn run<C: Check>(cx: &mut Ctx, instance: Value) -> crate::Result {
    match deserialize::<C::Config>(None, instance) {
        Ok(config) => C::run(cx, config),
        Err(error) => C::config_error(cx, &error),
    }
}

/// Deserializes `raw`, the section named `section` (`None` for the instance), into `T`.
pub(crate) fn deserialize<T: DeserializeOwned>(
    section: Option<&str>,
    raw: Value,
) -> Result<T, ConfigError> {
    match locate(section, &raw) {
        Ok(value) => Ok(value),
        Err((key, reason)) => Err(ConfigError { key, reason, raw }),
    }
}

/// Like [`deserialize`], copying `raw` into the error only when there is one.
pub(crate) fn deserialize_ref<T: DeserializeOwned>(
    section: Option<&str>,
    raw: &Value,
) -> Result<T, ConfigError> {
    locate(section, raw).map_err(|(key, reason)| ConfigError {
        key,
        reason,
        raw: raw.clone(),
    })
}

/// `T` from `raw`, or the key and the reason it failed.
fn locate<T: DeserializeOwned>(section: Option<&str>, raw: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(raw).map_err(|error| {
        let path = if error.path().iter().next().is_none() {
            String::new()
        } else {
            error.path().to_string()
        };
        let key = match section {
            None => path,
            Some(section) if path.is_empty() => section.to_owned(),
            Some(section) if path.starts_with('[') => format!("{section}{path}"),
            Some(section) => format!("{section}.{path}"),
        };
        // Deserialized from a `Value`, serde_json's errors carry no line and column.
        (key, error.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Options {
        url: String,
        timeout: Option<f64>,
        #[serde(default)]
        queries: Vec<Query>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Query {
        tags: Vec<String>,
    }

    fn error(section: Option<&str>, raw: Value) -> String {
        match deserialize::<Options>(section, raw) {
            Ok(options) => panic!("deserialized into {options:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn errors_name_the_key_not_a_json_position() {
        assert_eq!(
            error(None, json!({"url": "u", "timeout": "x"})),
            "timeout: invalid type: string \"x\", expected f64"
        );
        assert_eq!(
            error(
                None,
                json!({"url": "u", "queries": [{"tags": []}, {"tags": "a"}]})
            ),
            "queries[1].tags: invalid type: string \"a\", expected a sequence"
        );
        assert_eq!(error(None, json!({})), "missing field `url`");
    }

    #[test]
    fn init_config_errors_are_prefixed_with_the_section() {
        assert_eq!(
            error(Some("init_config"), json!({"url": 1})),
            "init_config.url: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            error(Some("init_config"), Value::Null),
            "init_config: invalid type: null, expected struct Options"
        );
    }

    #[test]
    fn the_error_keeps_the_raw_section() {
        let raw = json!({"url": ["x"], "name": "site"});
        match deserialize::<Options>(None, raw.clone()) {
            Ok(options) => panic!("deserialized into {options:?}"),
            Err(error) => {
                assert_eq!(error.key(), "url");
                assert_eq!(error.reason(), "invalid type: sequence, expected a string");
                assert_eq!(error.raw(), &raw);
            }
        }
    }
}
