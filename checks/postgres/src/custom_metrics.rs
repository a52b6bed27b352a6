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

use kennel_sdk::Rows;
use serde_json::Value;

use crate::Run;
use crate::values::{Skipped, metric_value, tag_value};
use kennel_sdk::options::{flag_value as flag, scalar_text};

/// Datadog's cap on the rows of one custom metric query.
pub const MAX_CUSTOM_RESULTS: usize = 100;
const REQUIRED: [&str; 4] = ["descriptors", "metrics", "query", "relation"];

/// Datadog's collector methods for custom metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Rate,
    Gauge,
    Monotonic,
}

#[derive(Debug)]
struct MetricColumn {
    /// The SQL expression, as written in `metrics`.
    column: String,
    name: String,
    method: Method,
}

/// One `custom_metrics` entry, validated, with its query filled in.
#[derive(Debug)]
pub struct CustomMetric {
    index: usize,
    /// `[column, tag name]` pairs; only the position of the column matters.
    descriptors: Vec<(String, String)>,
    metrics: Vec<MetricColumn>,
    query: String,
    relation: bool,
}

impl CustomMetric {
    pub fn parse(index: usize, entry: &Value, relations: &[String]) -> Result<Self, String> {
        let what = format!("custom_metrics[{index}]");
        let Value::Object(entry) = entry else {
            return Err(format!(
                "{what} must be a mapping with descriptors, metrics, query and relation, got \
                 {entry}"
            ));
        };
        for key in REQUIRED {
            if !entry.contains_key(key) {
                return Err(format!("{what}: Missing {key} parameter in custom metric"));
            }
        }

        let relation = flag(&entry["relation"])
            .ok_or_else(|| format!("{what}: `relation` must be true or false"))?;
        let query = scalar_text(&entry["query"])
            .ok_or_else(|| format!("{what}: `query` must be a string"))?;
        check_placeholders(&query, if relation { 2 } else { 1 })
            .map_err(|e| format!("{what}: `query` {e}"))?;
        let metrics = metric_columns(&what, &entry["metrics"])?;
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

        Ok(Self {
            index,
            descriptors: descriptors(&what, &entry["descriptors"])?,
            metrics,
            query,
            relation,
        })
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
            for ((column, tag), value) in self.descriptors.iter().zip(descriptor_values) {
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

/// `metrics`: a mapping of column expressions to `[metric name, TYPE]`, in the mapping's order.
fn metric_columns(what: &str, metrics: &Value) -> Result<Vec<MetricColumn>, String> {
    let Value::Object(metrics) = metrics else {
        return Err(format!(
            "{what}: `metrics` must be a mapping of column expressions to [metric_name, TYPE], \
             got {metrics}"
        ));
    };
    metrics
        .iter()
        .map(|(column, spec)| {
            let pair = match spec {
                Value::Array(pair) if pair.len() == 2 => {
                    scalar_text(&pair[0]).zip(pair[1].as_str())
                }
                _ => None,
            };
            let Some((name, method)) = pair else {
                return Err(format!(
                    "{what}: `metrics.{column}` must be [metric_name, TYPE], got {spec}"
                ));
            };
            let method = match method.to_uppercase().as_str() {
                "RATE" => Method::Rate,
                "GAUGE" => Method::Gauge,
                "MONOTONIC" => Method::Monotonic,
                other => {
                    return Err(format!(
                        "{what}: Collector method {other} is not known. Known methods are RATE, \
                         GAUGE, MONOTONIC"
                    ));
                }
            };
            Ok(MetricColumn {
                column: column.clone(),
                name,
                method,
            })
        })
        .collect()
}

/// `descriptors`: a list of `[column, tag name]` pairs.
fn descriptors(what: &str, descriptors: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Array(descriptors) = descriptors else {
        return Err(format!(
            "{what}: `descriptors` must be a list of [column, tag_name] pairs, got {descriptors}"
        ));
    };
    descriptors
        .iter()
        .enumerate()
        .map(|(index, pair)| {
            let names = match pair {
                Value::Array(items) if items.len() == 2 => {
                    scalar_text(&items[0]).zip(scalar_text(&items[1]))
                }
                _ => None,
            };
            names.ok_or_else(|| {
                format!(
                    "{what}: `descriptors[{index}]` must be a [column, tag_name] pair, got {pair}"
                )
            })
        })
        .collect()
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
