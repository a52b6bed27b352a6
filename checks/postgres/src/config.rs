//! The instance options of `postgres`, read the way Datadog's check reads them.
//!
//! | key | meaning; default |
//! |---|---|
//! | `host` | the server, for the `server:` and `host:` tags (the runner connects to it); `localhost` |
//! | `port` | for the `port:` tags; `5432` |
//! | `dbname` | for the `db:` tags; `postgres` |
//! | `password` | never used here except to keep it out of every message the check writes |
//! | `relations` | names (strings, or mappings with `relation_name`) for `custom_metrics` entries with `relation: true`; none |
//! | `custom_metrics` | the legacy custom metrics, see `custom_metrics.rs`; none |
//! | `custom_queries` | custom queries, see `custom_queries.rs`; none |
//!
//! As in `http_check`, the instance arrives as raw JSON and each key is read by hand, so that a
//! bad value fails with a message naming the key (and, for the lists, the entry). Everything
//! else (`username`, `ssl`, `query_timeout`, which the runner reads to connect, and the
//! runner's reserved `tags`, `service`, `min_collection_interval`, ...) is ignored here.
//!
//! Not supported: Datadog's built-in per-relation metrics (`relations` only feeds
//! `custom_metrics`), `relation_regex` and `schemas` in `relations` entries, and the optional
//! metric groups (`collect_activity_metrics`, `collect_database_size_metrics`, bgwriter,
//! replication, locks, ...). They are ignored like any unknown key.

use kennel_sdk::options::{scalar_text, text};
use serde_json::{Map, Value};

use crate::custom_metrics::CustomMetric;
use crate::custom_queries::CustomQuery;

/// What Datadog tags with when the instance names no host.
const DEFAULT_HOST: &str = "localhost";
/// The runner's default port, so the `port:` tag names the port actually used.
const DEFAULT_PORT: &str = "5432";
const DEFAULT_DBNAME: &str = "postgres";

/// One instance's options, validated.
#[derive(Debug)]
pub struct Config {
    pub host: String,
    pub port: String,
    pub dbname: String,
    /// Only to be scrubbed from messages.
    pub password: Option<String>,
    pub custom_metrics: Vec<CustomMetric>,
    pub custom_queries: Vec<CustomQuery>,
    /// Problems that do not stop the run, to be logged by it (unusable `relations` entries).
    pub warnings: Vec<String>,
}

impl Config {
    pub fn parse(instance: &Value) -> Result<Self, String> {
        let Value::Object(instance) = instance else {
            return Err(format!(
                "the instance must be a mapping of options, got {instance}"
            ));
        };
        let host = text(instance, "host")?.unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = text(instance, "port")?.unwrap_or_else(|| DEFAULT_PORT.to_owned());
        let dbname = text(instance, "dbname")?.unwrap_or_else(|| DEFAULT_DBNAME.to_owned());
        let password = password(instance)?;

        let (relations, relation_warnings) = relations(instance)?;
        let custom_metrics = list(instance, "custom_metrics")?
            .iter()
            .enumerate()
            .map(|(index, entry)| CustomMetric::parse(index, entry, &relations))
            .collect::<Result<Vec<_>, _>>()?;
        let custom_queries = list(instance, "custom_queries")?
            .iter()
            .enumerate()
            .map(|(index, entry)| CustomQuery::parse(index, entry))
            .collect::<Result<Vec<_>, _>>()?;
        // `relations` matters only to these; other entries would warn about nothing.
        let warnings = if custom_metrics.iter().any(CustomMetric::uses_relations) {
            relation_warnings
        } else {
            Vec::new()
        };

        Ok(Self {
            host,
            port,
            dbname,
            password,
            custom_metrics,
            custom_queries,
            warnings,
        })
    }
}

/// The password, as text; an error that does not quote it when it is not a string or a number.
fn password(instance: &Map<String, Value>) -> Result<Option<String>, String> {
    match instance.get("password") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match scalar_text(value) {
            Some(password) => Ok(Some(password).filter(|p| !p.is_empty())),
            None => Err("`password` must be a string".to_owned()),
        },
    }
}

/// The password as far as it can be read, to scrub it from messages even when the rest of the
/// instance is invalid.
pub fn lenient_password(instance: &Value) -> Option<String> {
    match instance {
        Value::Object(instance) => password(instance).ok().flatten(),
        _ => None,
    }
}

/// The relation names of `relations`, in order and without repeats (Datadog keeps them in a
/// mapping keyed by name), and a warning for each entry that names none.
fn relations(instance: &Map<String, Value>) -> Result<(Vec<String>, Vec<String>), String> {
    let mut names: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for (index, entry) in list(instance, "relations")?.iter().enumerate() {
        let name = match entry {
            Value::String(name) => Some(name.clone()),
            Value::Object(mapping) => match mapping.get("relation_name") {
                Some(Value::String(name)) => Some(name.clone()),
                _ => None,
            },
            _ => None,
        };
        match name {
            Some(name) if !names.contains(&name) => names.push(name),
            Some(_) => {}
            None => warnings.push(format!(
                "`relations[{index}]` names no relation and is ignored: give a table name, or a \
                 mapping with `relation_name` (`relation_regex` is not supported), got {entry}"
            )),
        }
    }
    Ok((names, warnings))
}

/// A list, or nothing when the key is absent or null.
fn list<'v>(map: &'v Map<String, Value>, key: &str) -> Result<&'v [Value], String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("`{key}` must be a list, got {other}")),
    }
}
