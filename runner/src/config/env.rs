//! The runner's configuration from environment variables, as the Datadog Agent takes it: every
//! top-level key of the config file can be set by `DD_<KEY>` in upper case (`DD_API_KEY`,
//! `DD_SITE`, `DD_DD_URL`, `DD_HOSTNAME`, `DD_DOGSTATSD_SOCKET`, `DD_LOG_LEVEL`, ...). An
//! environment variable wins over the file, so one image or package serves every host and the
//! secret stays out of the file.
//!
//! How a value is read, in order, until the key accepts it:
//! 1. as YAML, so `8125`, `true`, `null`, `[container, docker]` and `{"a": "b"}` take their
//!    types;
//! 2. as the raw string, so an API key made only of digits stays a string;
//! 3. split on whitespace into a list, the Agent's form for lists (`DD_AD_ALLOWED_ENV_VARS="A B"`).
//!
//! A value no key accepts is an error naming the variable and the key; the value itself is not
//! repeated, since variables carry secrets. Only top-level keys are bound (nested ones, such as
//! `plugins.path`, come from the file): `DD_` variables that name no key are ignored, as the
//! Agent ignores them, because application containers and CI systems set many (`DD_ENV`,
//! `DD_SERVICE`, `DD_AGENT_HOST`) that are meant for the clients, not the agent.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_norway::{Mapping, Value};

/// The prefix the Agent's variables use.
const PREFIX: &str = "DD_";

/// One variable that names a config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    pub(crate) variable: String,
    pub(crate) key: &'static str,
    pub(crate) value: String,
}

/// The variables among `vars` that name a top-level key of `T`, in the order of `T`'s keys.
pub(crate) fn overrides<'de, T: Deserialize<'de>>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<Override> {
    let keys = top_level_keys::<T>();
    let mut found: Vec<Override> = vars
        .into_iter()
        .filter_map(|(variable, value)| {
            let name = variable.strip_prefix(PREFIX)?;
            let key = keys
                .iter()
                .copied()
                .find(|key| key.eq_ignore_ascii_case(name) && name.bytes().all(is_upper_key))?;
            Some(Override {
                variable,
                key,
                value,
            })
        })
        .collect();
    found.sort_by_key(|o| keys.iter().position(|key| *key == o.key));
    found
}

const fn is_upper_key(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'
}

/// Sets each override's key in `document` (a config file's top-level mapping), checking that
/// `T` accepts the result after each, so an error names the variable that caused it.
pub(crate) fn apply<T: de::DeserializeOwned>(
    document: &mut Mapping,
    overrides: &[Override],
) -> Result<(), String> {
    for o in overrides {
        let key = Value::String(o.key.to_owned());
        let mut first_error = None;
        let accepted = candidates(&o.value).into_iter().any(|candidate| {
            document.insert(key.clone(), candidate);
            match T::deserialize(Value::Mapping(document.clone())) {
                Ok(_) => true,
                Err(error) => {
                    first_error.get_or_insert(error);
                    false
                }
            }
        });
        if !accepted {
            let reason = first_error.map_or_else(String::new, |e| without_values(&e.to_string()));
            return Err(format!(
                "environment variable {} does not fit `{}`: {reason}",
                o.variable, o.key
            ));
        }
    }
    Ok(())
}

/// The readings of a variable's value, in the order they are tried.
fn candidates(raw: &str) -> Vec<Value> {
    let mut values = Vec::with_capacity(3);
    if let Ok(typed) = serde_norway::from_str::<Value>(raw) {
        values.push(typed);
    }
    values.push(Value::String(raw.to_owned()));
    values.push(Value::Sequence(
        raw.split_whitespace()
            .map(|word| Value::String(word.to_owned()))
            .collect(),
    ));
    values
}

/// A serde message with quoted values cut out (`invalid type: string "…", expected …`).
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '"' if !quoted => {
                quoted = true;
                out.push_str("\"…");
            }
            '"' => {
                quoted = false;
                out.push('"');
            }
            _ if quoted => {}
            _ => out.push(c),
        }
    }
    out
}

/// The field names `T`'s derived `Deserialize` asks for, read by asking it to deserialize from
/// a deserializer that only records them. Empty for a type that is not a struct.
fn top_level_keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = FieldProbe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

struct FieldProbe(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut FieldProbe {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunnerConfig;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn configured(file: &str, pairs: &[(&str, &str)]) -> Result<RunnerConfig, String> {
        let mut document: Mapping = if file.is_empty() {
            Mapping::new()
        } else {
            serde_norway::from_str(file).unwrap()
        };
        apply::<RunnerConfig>(&mut document, &overrides::<RunnerConfig>(vars(pairs)))?;
        Ok(RunnerConfig::deserialize(Value::Mapping(document)).unwrap())
    }

    #[test]
    fn every_top_level_key_is_found_and_only_those() {
        let found = overrides::<RunnerConfig>(vars(&[
            ("DD_API_KEY", "k"),
            ("DD_CHECK_RUNNERS", "4"),
            ("DD_ENV", "prod"),
            ("DD_AGENT_HOST", "h"),
            ("dd_site", "x"),
            ("DD_site", "x"),
            ("KENNEL_SITE", "x"),
        ]));
        let keys: Vec<_> = found.iter().map(|o| o.key).collect();
        assert_eq!(keys, ["check_runners", "api_key"]);
    }

    #[test]
    fn values_take_the_type_their_key_wants() {
        let config = configured(
            "check_runners: 2\nsite: file.example\n",
            &[
                ("DD_API_KEY", "0123456789"),
                ("DD_CHECK_RUNNERS", "7"),
                ("DD_DOGSTATSD_NON_LOCAL_TRAFFIC", "true"),
                ("DD_DOGSTATSD_SOCKET", "/var/run/kennel/dsd.socket"),
                ("DD_STATUS_LISTEN", "null"),
                ("DD_CONTAINER_METRIC_FAMILIES", "docker"),
                ("DD_AD_ALLOWED_ENV_VARS", "HOME PATH"),
                ("DD_CONTAINER_LABELS_AS_TAGS", r#"{"team": "team"}"#),
            ],
        )
        .unwrap();
        assert_eq!(config.api_key, "0123456789");
        assert_eq!(config.check_runners, 7);
        assert_eq!(
            config.site, "file.example",
            "keys not set stay as the file says"
        );
        assert!(config.dogstatsd_non_local_traffic);
        assert_eq!(
            config.dogstatsd_socket.as_deref(),
            Some(std::path::Path::new("/var/run/kennel/dsd.socket"))
        );
        assert_eq!(config.status_listen, None);
        assert_eq!(
            config.container_metric_families,
            [crate::collector::Family::Docker]
        );
        assert_eq!(config.ad_allowed_env_vars, ["HOME", "PATH"]);
        assert_eq!(config.container_labels_as_tags["team"], "team");
    }

    #[test]
    fn a_value_no_reading_fits_names_the_variable_and_not_the_value() {
        let error = configured("", &[("DD_CHECK_RUNNERS", "many-secret")]).unwrap_err();
        assert!(error.contains("DD_CHECK_RUNNERS"), "{error}");
        assert!(error.contains("`check_runners`"), "{error}");
        assert!(!error.contains("many-secret"), "{error}");
    }
}
