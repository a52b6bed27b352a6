//! `custom_queries`, Datadog's current format for custom metrics:
//!
//! ```yaml
//! custom_queries:
//!   - metric_prefix: postgresql.app     # required; a trailing `.` is dropped
//!     query: SELECT region, COUNT(*), SUM(amount) FROM orders GROUP BY region
//!     columns:                          # required, one per result column, in order
//!       - {name: region, type: tag}
//!       - {name: orders, type: gauge}   # gauge, rate, monotonic_count or count
//!       - null                          # (or {}) ignores that column
//!     tags: [team:billing]              # optional
//! ```
//!
//! Each metric is `<metric_prefix>.<name>`, tagged with the entry's `tags`, `server:`, `port:`
//! and `db:<dbname>` (Datadog's instance tags), then one `<name>:<value>` per tag column (NULL
//! gives `None`, see `values.rs`).
//!
//! As in Datadog, a row with the wrong number of columns is skipped, and a row is submitted
//! all or nothing: one metric value that is not a number (NULL included) skips the whole row.
//! Each query logs one warning summing up what it skipped, with the query. A query the server
//! refuses is logged and the run goes on.
//!
//! Difference from Datadog: an entry without `metric_prefix`, `query` or `columns`, or a column
//! without `name` or with an unknown `type`, is a configuration error that fails the run before
//! any query, where Datadog logged it and skipped the entry (or, for columns, every row) each
//! run. The types are the four above, where Datadog accepted the name of any `AgentCheck`
//! method (`histogram`, ...).

use kennel_sdk::{Metric, MetricType, Rows};
use serde_json::Value;

use crate::Run;
use crate::values::{Skipped, metric_value, tag_value};
use kennel_sdk::options::scalar_text;

const TYPES: &str = "tag, gauge, rate, monotonic_count or count";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    Tag,
    Metric(MetricType),
}

#[derive(Debug)]
struct Column {
    name: String,
    column_type: ColumnType,
}

/// One `custom_queries` entry, validated.
#[derive(Debug)]
pub struct CustomQuery {
    /// `custom_queries[i] (metric_prefix `p`)`, for messages.
    what: String,
    prefix: String,
    query: String,
    /// `None` for an ignored column.
    columns: Vec<Option<Column>>,
    tags: Vec<String>,
}

impl CustomQuery {
    pub fn parse(index: usize, entry: &Value) -> Result<Self, String> {
        let what = format!("custom_queries[{index}]");
        let Value::Object(entry) = entry else {
            return Err(format!(
                "{what} must be a mapping with metric_prefix, query and columns, got {entry}"
            ));
        };
        let prefix = entry
            .get("metric_prefix")
            .and_then(scalar_text)
            .map(|prefix| prefix.trim_end_matches('.').to_owned())
            .filter(|prefix| !prefix.is_empty())
            .ok_or_else(|| format!("{what}: `metric_prefix` is required"))?;
        let what = format!("{what} (metric_prefix `{prefix}`)");
        let query = entry
            .get("query")
            .and_then(scalar_text)
            .filter(|query| !query.trim().is_empty())
            .ok_or_else(|| format!("{what}: `query` is required"))?;
        let columns = match entry.get("columns") {
            Some(Value::Array(columns)) if !columns.is_empty() => columns
                .iter()
                .enumerate()
                .map(|(index, column)| parse_column(&what, index, column))
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(format!(
                    "{what}: `columns` is required: a list with one {{name, type}} per result \
                     column"
                ));
            }
        };
        let tags = match entry.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tags)) => tags
                .iter()
                .map(|tag| {
                    scalar_text(tag).ok_or_else(|| {
                        format!("{what}: `tags` must be a list of strings, got {tag}")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(format!(
                    "{what}: `tags` must be a list of strings, got {other}"
                ));
            }
        };
        Ok(Self {
            what,
            prefix,
            query,
            columns,
            tags,
        })
    }

    /// Runs the query and submits its rows.
    pub fn collect(&self, run: &mut Run) {
        if let Some(rows) = run.query(&self.what, &self.query) {
            self.submit(run, &rows);
        }
    }

    fn submit(&self, run: &mut Run, rows: &Rows) {
        let mut base_tags = self.tags.clone();
        base_tags.extend(run.tags.iter().cloned());
        base_tags.push(run.db_tag());

        let mut skipped = Skipped::default();
        let mut metrics = Vec::with_capacity(self.columns.len());
        for row in &rows.rows {
            if row.is_empty() {
                continue;
            }
            if row.len() != self.columns.len() {
                skipped.note(format!(
                    "expected {} columns, got {}",
                    self.columns.len(),
                    row.len()
                ));
                continue;
            }
            metrics.clear();
            let mut tags = base_tags.clone();
            let parsed = self
                .columns
                .iter()
                .zip(row)
                .try_for_each(|(column, value)| {
                    let Some(Column { name, column_type }) = column else {
                        return Ok(());
                    };
                    match column_type {
                        ColumnType::Tag => tags.push(format!("{name}:{}", tag_value(value, name)?)),
                        ColumnType::Metric(kind) => match metric_value(value, name)? {
                            Some(value) => metrics.push((name, *kind, value)),
                            None => {
                                return Err(format!(
                                    "non-numeric value `NULL` for metric column `{name}`"
                                ));
                            }
                        },
                    }
                    Ok(())
                });
            if let Err(reason) = parsed {
                skipped.note(reason);
                continue;
            }
            for (name, kind, value) in metrics.drain(..) {
                run.cx.metric(Metric {
                    name: format!("{}.{name}", self.prefix),
                    kind,
                    value,
                    tags: tags.clone(),
                    hostname: None,
                });
            }
        }
        if let Some(summary) = skipped.summary(&self.what, "rows", rows.rows.len(), &self.query) {
            run.warn(summary);
        }
    }
}

/// One `columns` entry: `null` or `{}` to ignore the column, else `{name, type}`.
fn parse_column(what: &str, index: usize, column: &Value) -> Result<Option<Column>, String> {
    let column = match column {
        Value::Null => return Ok(None),
        Value::Object(column) if column.is_empty() => return Ok(None),
        Value::Object(column) => column,
        other => {
            return Err(format!(
                "{what}: `columns[{index}]` must be a mapping with name and type (or null to \
                 ignore the column), got {other}"
            ));
        }
    };
    let name = column
        .get("name")
        .and_then(scalar_text)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| format!("{what}: `columns[{index}].name` is required"))?;
    let column_type = match column.get("type").and_then(Value::as_str) {
        None | Some("") => {
            return Err(format!(
                "{what}: `columns[{index}].type` is required for column `{name}`: use {TYPES}"
            ));
        }
        Some("tag") => ColumnType::Tag,
        Some("gauge") => ColumnType::Metric(MetricType::Gauge),
        Some("rate") => ColumnType::Metric(MetricType::Rate),
        Some("monotonic_count") => ColumnType::Metric(MetricType::MonotonicCount),
        Some("count") => ColumnType::Metric(MetricType::Count),
        Some(other) => {
            return Err(format!(
                "{what}: `columns[{index}].type` of column `{name}` is `{other}`, which is not \
                 known: use {TYPES}"
            ));
        }
    };
    Ok(Some(Column { name, column_type }))
}
