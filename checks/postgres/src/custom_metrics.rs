//! `custom_metrics`, Datadog's legacy (deprecated) custom queries, with Datadog's semantics:
//!
//! ```yaml
//! custom_metrics:
//!   - descriptors:                      # [column, tag name]: the row's first columns, as tags
//!       - [datname, database]
//!     metrics:                          # column expression: [metric name, RATE|GAUGE|MONOTONIC]
//!       COUNT(state): [postgresql.connection_state, GAUGE]
//!     query: SELECT datname, %s FROM pg_stat_activity GROUP BY datname;
//!     relation: false                   # true: a second %s takes the `relations` names
//! ```
//!
//! - The four keys are required (`Missing <key> parameter in custom metric`); the type is
//!   case-insensitive (`Collector method X is not known. Known methods are RATE, GAUGE,
//!   MONOTONIC`). RATE submits the raw value with `cx.rate`, GAUGE with `cx.gauge`, MONOTONIC
//!   with `cx.monotonic_count`.
//! - The query is filled like Python's `query % args`: the first `%s` takes the metric column
//!   expressions joined by `, `, in the order of the `metrics` mapping (the runner hands the
//!   instance over as JSON, whose mappings come out sorted by key; the same order reads the
//!   result), and with `relation: true` a second `%s` takes the relation names as SQL string
//!   literals joined by `, `; `%%` is a literal `%`. Another number of `%s`, or any other `%`
//!   sequence, is a configuration error, as Python's formatting error was in Datadog.
//! - Each row is the descriptor columns, then the metric columns; another width is an error
//!   naming the query. At most [`MAX_CUSTOM_RESULTS`] rows are used, with a warning when more
//!   came back.
//! - Tags: `server:` and `port:`, then one `<tag name>:<value>` per descriptor (a repeated tag
//!   name keeps its first place and its last value, as Datadog's mapping does). With
//!   `relation: true`, also the instance's `db:<dbname>`, which Datadog keeps for relation
//!   queries. NULL descriptors give `None` (see `values.rs`).
//! - A NULL metric value is skipped, as Datadog's `AgentCheck` ignores `None`; a value that is
//!   not a number is skipped with a warning, the row's other metrics still count.
//!
//! Differences from Datadog, where Datadog's behaviour was an accident of its implementation:
//! relation names have their `'` doubled, so that the literal stays valid SQL; the `%` left by
//! `%%` reaches the server as `%` (Datadog sent `%%`); a failed query is logged and the run
//! goes on to the next entry; a row of the wrong width fails the run at the end, after the other
//! entries ran, where Datadog's exception stopped the whole collection.

use std::fmt;

use kennel_sdk::Rows;
use kennel_sdk::options::{Flag, Text};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::Run;
use crate::config::{pair, present};
use crate::values::{Skipped, metric_value, tag_value};

/// Datadog's cap on the rows of one custom metric query.
pub const MAX_CUSTOM_RESULTS: usize = 100;

/// Datadog's collector methods for custom metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Rate,
    Gauge,
    Monotonic,
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(method) = Text::deserialize(deserializer)?;
        match method.to_uppercase().as_str() {
            "RATE" => Ok(Self::Rate),
            "GAUGE" => Ok(Self::Gauge),
            "MONOTONIC" => Ok(Self::Monotonic),
            other => Err(de::Error::custom(format!(
                "Collector method {other} is not known. Known methods are RATE, GAUGE, MONOTONIC"
            ))),
        }
    }
}

#[derive(Debug)]
struct MetricColumn {
    /// The SQL expression, as written in `metrics`.
    column: String,
    name: String,
    method: Method,
}

/// `metrics`: column expressions to `[metric name, TYPE]`, in the mapping's order.
#[derive(Debug)]
struct MetricColumns(Vec<MetricColumn>);

impl<'de> Deserialize<'de> for MetricColumns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MetricColumnsVisitor)
    }
}

struct MetricColumnsVisitor;

impl<'de> Visitor<'de> for MetricColumnsVisitor {
    type Value = MetricColumns;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of column expressions to [metric_name, TYPE]")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetricColumns, A::Error> {
        let mut columns = Vec::new();
        while let Some((column, MetricSpec(Text(name), method))) = map.next_entry()? {
            columns.push(MetricColumn {
                column,
                name,
                method,
            });
        }
        Ok(MetricColumns(columns))
    }
}

/// `[metric name, TYPE]`.
struct MetricSpec(Text, Method);

impl<'de> Deserialize<'de> for MetricSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, method) = pair(deserializer, "a [metric_name, TYPE] pair")?;
        Ok(Self(name, method))
    }
}

/// `[column, tag name]`; only the position of the column matters.
#[derive(Debug)]
struct Descriptor {
    column: String,
    tag: String,
}

impl<'de> Deserialize<'de> for Descriptor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (Text(column), Text(tag)) = pair(deserializer, "a [column, tag_name] pair")?;
        Ok(Self { column, tag })
    }
}

/// One `custom_metrics` entry as written. Each key is required, as in Datadog, where a null
/// counts as given.
#[derive(Deserialize)]
struct Entry {
    #[serde(default, deserialize_with = "present")]
    descriptors: Option<Vec<Descriptor>>,
    #[serde(default, deserialize_with = "present")]
    metrics: Option<MetricColumns>,
    #[serde(default, deserialize_with = "present")]
    query: Option<Text>,
    #[serde(default, deserialize_with = "present")]
    relation: Option<Flag>,
}

/// One `custom_metrics` entry, checked: every key is there and the query has its placeholders.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Entry")]
pub struct Definition {
    descriptors: Vec<Descriptor>,
    metrics: Vec<MetricColumn>,
    query: String,
    relation: bool,
}

impl TryFrom<Entry> for Definition {
    type Error = String;

    fn try_from(entry: Entry) -> Result<Self, String> {
        let missing = |key: &str| format!("Missing {key} parameter in custom metric");
        let descriptors = entry.descriptors.ok_or_else(|| missing("descriptors"))?;
        let MetricColumns(metrics) = entry.metrics.ok_or_else(|| missing("metrics"))?;
        let Text(query) = entry.query.ok_or_else(|| missing("query"))?;
        let Flag(relation) = entry.relation.ok_or_else(|| missing("relation"))?;
        check_placeholders(&query, if relation { 2 } else { 1 })
            .map_err(|e| format!("`query` {e}"))?;
        Ok(Self {
            descriptors,
            metrics,
            query,
            relation,
        })
    }
}

/// One `custom_metrics` entry, with its query filled in.
#[derive(Debug)]
pub struct CustomMetric {
    index: usize,
    descriptors: Vec<Descriptor>,
    metrics: Vec<MetricColumn>,
    query: String,
    relation: bool,
}

impl CustomMetric {
    /// The entry at `index` of `custom_metrics`, its query filled with its metric columns and,
    /// for `relation: true`, the `relations` names.
    pub fn new(index: usize, definition: Definition, relations: &[String]) -> Self {
        let Definition {
            descriptors,
            metrics,
            query,
            relation,
        } = definition;
        let columns = metrics
            .iter()
            .map(|metric| metric.column.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let query = if relation {
            let names = relations
                .iter()
                .map(|name| format!("'{}'", name.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ");
            fill(&query, &[&columns, &names])
        } else {
            fill(&query, &[&columns])
        };
        Self {
            index,
            descriptors,
            metrics,
            query,
            relation,
        }
    }

    pub fn uses_relations(&self) -> bool {
        self.relation
    }

    /// Runs the query and submits its rows; `Err` when a row has the wrong width, which fails
    /// the run.
    pub fn collect(&self, run: &mut Run) -> Result<(), String> {
        let what = format!("custom_metrics[{}]", self.index);
        let Some(rows) = run.query(&what, &self.query) else {
            return Ok(());
        };
        self.submit(run, &what, &rows)
    }

    fn submit(&self, run: &mut Run, what: &str, rows: &Rows) -> Result<(), String> {
        let mut results = &rows.rows[..];
        if results.len() > MAX_CUSTOM_RESULTS {
            run.warn(format!(
                "{what}: Query: {} returned more than {MAX_CUSTOM_RESULTS} results ({}). \
                 Truncating",
                self.query.trim(),
                results.len()
            ));
            results = &results[..MAX_CUSTOM_RESULTS];
        }

        let mut base_tags = run.tags.clone();
        if self.relation {
            base_tags.push(run.db_tag());
        }
        let expected = self.descriptors.len() + self.metrics.len();
        let mut skipped = Skipped::default();
        let mut values = 0;
        for row in results {
            if row.len() != expected {
                return Err(format!(
                    "{what}: Row does not contain enough values: expected {expected} ({} \
                     descriptors + {} columns), got {}. Query: {}",
                    self.descriptors.len(),
                    self.metrics.len(),
                    row.len(),
                    self.query.trim()
                ));
            }
            let (descriptor_values, metric_values) = row.split_at(self.descriptors.len());
            values += metric_values.len();

            let mut described: Vec<(&str, String)> = Vec::with_capacity(self.descriptors.len());
            let mut tags_ok = true;
            for (Descriptor { column, tag }, value) in
                self.descriptors.iter().zip(descriptor_values)
            {
                match tag_value(value, column) {
                    Ok(value) => match described.iter_mut().find(|(name, _)| name == tag) {
                        Some(slot) => slot.1 = value,
                        None => described.push((tag, value)),
                    },
                    Err(reason) => {
                        // The row's values cannot be told apart from other rows' without it.
                        skipped.note_many(format!("a row's {reason}"), metric_values.len());
                        tags_ok = false;
                        break;
                    }
                }
            }
            if !tags_ok {
                continue;
            }
            let mut tags = base_tags.clone();
            tags.extend(
                described
                    .into_iter()
                    .map(|(tag, value)| format!("{tag}:{value}")),
            );

            for (metric, value) in self.metrics.iter().zip(metric_values) {
                match metric_value(value, &metric.column) {
                    Ok(Some(value)) => match metric.method {
                        Method::Rate => run.cx.rate(&metric.name, value, &tags),
                        Method::Gauge => run.cx.gauge(&metric.name, value, &tags),
                        Method::Monotonic => run.cx.monotonic_count(&metric.name, value, &tags),
                    },
                    Ok(None) => {}
                    Err(reason) => skipped.note(reason),
                }
            }
        }
        if let Some(summary) = skipped.summary(what, "values", values, &self.query) {
            run.warn(summary);
        }
        Ok(())
    }
}

/// Python's `query % args` for the only conversions Datadog's queries can use: `%s` takes the
/// next argument and `%%` is a `%`. The query has passed [`check_placeholders`].
fn fill(query: &str, args: &[&str]) -> String {
    let mut filled =
        String::with_capacity(query.len() + args.iter().map(|a| a.len()).sum::<usize>());
    let mut args = args.iter();
    let mut rest = query;
    while let Some(at) = rest.find('%') {
        filled.push_str(&rest[..at]);
        match rest.as_bytes().get(at + 1) {
            Some(b's') => filled.push_str(args.next().copied().unwrap_or_default()),
            _ => filled.push('%'),
        }
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    filled.push_str(rest);
    filled
}

/// That a query has exactly `expected` `%s` and no other `%` sequence but `%%`, as Python's
/// `%` requires. `Err` completes "`query` ...".
fn check_placeholders(query: &str, expected: usize) -> Result<(), String> {
    let mut count = 0;
    let mut chars = query.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some((_, 's')) => count += 1,
            Some((_, '%')) => {}
            Some((_, other)) => {
                return Err(format!(
                    "has `%{other}` at byte {at}: only %s placeholders are filled in; write %% \
                     for a literal %"
                ));
            }
            None => return Err("ends with a lone %: write %% for a literal %".to_owned()),
        }
    }
    if count == expected {
        return Ok(());
    }
    let wanted = if expected == 1 {
        "one %s, where the metric columns go"
    } else {
        "two %s, for the metric columns and then the relation names (relation: true)"
    };
    Err(format!(
        "must contain {wanted}; it has {count} (write %% for a literal %)"
    ))
}
