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
//! The options are a typed serde struct, [`Options`], and the list entries check themselves as
//! they are read, so a bad value fails the run before any query with a message naming the key
//! and the entry (`custom_metrics[1]: Missing query parameter in custom metric`). Scalars are
//! read as Datadog reads them (the sdk's `options` types: `port: "5433"` or `port: 5433`).
//! Everything else (`username`, `ssl`, `query_timeout`, which the runner reads to connect) is
//! ignored here; the runner's reserved keys (`tags`, `service`, ...) never reach the check.
//!
//! Not supported: Datadog's built-in per-relation metrics (`relations` only feeds
//! `custom_metrics`), `relation_regex` and `schemas` in `relations` entries, and the optional
//! metric groups (`collect_activity_metrics`, `collect_database_size_metrics`, bgwriter,
//! replication, locks, ...). They are ignored like any unknown key.

use std::fmt;
use std::marker::PhantomData;

use kennel_sdk::options::Text;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

use crate::custom_metrics::{self, CustomMetric};
use crate::custom_queries::{self, CustomQuery};

/// What Datadog tags with when the instance names no host.
const DEFAULT_HOST: &str = "localhost";
/// The runner's default port, so the `port:` tag names the port actually used.
const DEFAULT_PORT: &str = "5432";
const DEFAULT_DBNAME: &str = "postgres";

/// One instance's options, as written; [`Config::new`] applies the defaults.
#[derive(Debug, Deserialize)]
pub struct Options {
    host: Option<Text>,
    port: Option<Text>,
    dbname: Option<Text>,
    password: Option<Text>,
    relations: Option<Vec<Relation>>,
    custom_metrics: Option<Vec<custom_metrics::Definition>>,
    custom_queries: Option<Vec<custom_queries::Definition>>,
}

/// One instance's options, with the defaults applied and the custom queries ready to send.
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
    pub fn new(options: Options) -> Self {
        let text = |value: Option<Text>, default: &str| {
            value.map_or_else(|| default.to_owned(), String::from)
        };
        let (relations, relation_warnings) = relations(options.relations.unwrap_or_default());
        let custom_metrics: Vec<CustomMetric> = (options.custom_metrics.unwrap_or_default())
            .into_iter()
            .enumerate()
            .map(|(index, definition)| CustomMetric::new(index, definition, &relations))
            .collect();
        let custom_queries = (options.custom_queries.unwrap_or_default())
            .into_iter()
            .enumerate()
            .map(|(index, definition)| CustomQuery::new(index, definition))
            .collect();
        // `relations` matters only to these; other entries would warn about nothing.
        let warnings = if custom_metrics.iter().any(CustomMetric::uses_relations) {
            relation_warnings
        } else {
            Vec::new()
        };

        Self {
            host: text(options.host, DEFAULT_HOST),
            port: text(options.port, DEFAULT_PORT),
            dbname: text(options.dbname, DEFAULT_DBNAME),
            password: options.password.map(String::from).filter(|p| !p.is_empty()),
            custom_metrics,
            custom_queries,
            warnings,
        }
    }
}

/// The password as far as it can be read from an instance that did not deserialize, to scrub
/// it from the error.
pub fn raw_password(instance: &Value) -> Option<String> {
    let password = Text::deserialize(instance.get("password")?).ok()?;
    Some(String::from(password)).filter(|p| !p.is_empty())
}

/// A `relations` entry: a table name, or a mapping with `relation_name`. Anything else is kept
/// to be warned about.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Relation {
    Name(String),
    Mapping { relation_name: String },
    Other(Value),
}

/// The relation names of `relations`, in order and without repeats (Datadog keeps them in a
/// mapping keyed by name), and a warning for each entry that names none.
fn relations(entries: Vec<Relation>) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        match entry {
            Relation::Name(name)
            | Relation::Mapping {
                relation_name: name,
            } => {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            Relation::Other(entry) => warnings.push(format!(
                "`relations[{index}]` names no relation and is ignored: give a table name, or a \
                 mapping with `relation_name` (`relation_regex` is not supported), got {entry}"
            )),
        }
    }
    (names, warnings)
}

/// For `#[serde(default, deserialize_with = "present")]`: `None` only when the key is absent,
/// as Python's `key in mapping`, where `Option` would also take a null for absent.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `[a, b]`: a list of exactly two items. `expecting` says what they are.
pub fn pair<'de, D, A, B>(deserializer: D, expecting: &'static str) -> Result<(A, B), D::Error>
where
    D: Deserializer<'de>,
    A: Deserialize<'de>,
    B: Deserialize<'de>,
{
    deserializer.deserialize_seq(PairVisitor {
        expecting,
        items: PhantomData,
    })
}

struct PairVisitor<A, B> {
    expecting: &'static str,
    items: PhantomData<(A, B)>,
}

impl<'de, A: Deserialize<'de>, B: Deserialize<'de>> Visitor<'de> for PairVisitor<A, B> {
    type Value = (A, B);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(A, B), S::Error> {
        let Some(a) = seq.next_element()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let Some(b) = seq.next_element()? else {
            return Err(de::Error::invalid_length(1, &self));
        };
        let mut length = 2;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            length += 1;
        }
        if length == 2 {
            Ok((a, b))
        } else {
            Err(de::Error::invalid_length(length, &self))
        }
    }
}
