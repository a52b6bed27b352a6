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

use std::collections::BTreeMap;

use kennel_sdk::options::Text;
use kennel_sdk::{Metric, MetricType, Rows};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::Run;
use crate::values::{Skipped, metric_value, tag_value};

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

/// One `columns` entry as written.
#[derive(Deserialize)]
struct ColumnEntry {
    name: Option<Text>,
    #[serde(rename = "type")]
    column_type: Option<Text>,
    /// To tell `{}`, an ignored column, from a mapping that lacks `name`.
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

/// One `columns` entry: `None` for `null` or `{}`, which ignore the column.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Option<ColumnEntry>")]
struct ColumnSlot(Option<Column>);

impl TryFrom<Option<ColumnEntry>> for ColumnSlot {
    type Error = String;

    fn try_from(entry: Option<ColumnEntry>) -> Result<Self, String> {
        let entry = entry.filter(|entry| {
            entry.name.is_some() || entry.column_type.is_some() || !entry.other.is_empty()
        });
        let Some(entry) = entry else {
            return Ok(Self(None));
        };
        let name = entry
            .name
            .map(String::from)
            .filter(|name| !name.is_empty())
            .ok_or("`name` is required")?;
        let column_type = match entry.column_type.as_ref().map(Text::as_str) {
            None | Some("") => {
                return Err(format!(
                    "`type` is required for column `{name}`: use {TYPES}"
                ));
            }
            Some("tag") => ColumnType::Tag,
            Some("gauge") => ColumnType::Metric(MetricType::Gauge),
            Some("rate") => ColumnType::Metric(MetricType::Rate),
            Some("monotonic_count") => ColumnType::Metric(MetricType::MonotonicCount),
            Some("count") => ColumnType::Metric(MetricType::Count),
            Some(other) => {
                return Err(format!(
                    "`type` of column `{name}` is `{other}`, which is not known: use {TYPES}"
                ));
            }
        };
        Ok(Self(Some(Column { name, column_type })))
    }
}

/// One `custom_queries` entry as written.
#[derive(Deserialize)]
struct Entry {
    metric_prefix: Option<Text>,
    query: Option<Text>,
    columns: Option<Vec<ColumnSlot>>,
    tags: Option<Vec<Text>>,
}

/// One `custom_queries` entry, checked.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Entry")]
pub struct Definition {
    prefix: String,
    query: String,
    /// `None` for an ignored column.
    columns: Vec<Option<Column>>,
    tags: Vec<String>,
}

impl TryFrom<Entry> for Definition {
    type Error = String;

    fn try_from(entry: Entry) -> Result<Self, String> {
        let prefix = entry
            .metric_prefix
            .map(|Text(prefix)| prefix.trim_end_matches('.').to_owned())
            .filter(|prefix| !prefix.is_empty())
            .ok_or("`metric_prefix` is required")?;
        let query = entry
            .query
            .map(String::from)
            .filter(|query| !query.trim().is_empty())
            .ok_or("`query` is required")?;
        let columns = entry
            .columns
            .filter(|columns| !columns.is_empty())
            .ok_or("`columns` is required: a list with one {name, type} per result column")?;
        Ok(Self {
            prefix,
            query,
            columns: columns
                .into_iter()
                .map(|ColumnSlot(column)| column)
                .collect(),
            tags: entry
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(String::from)
                .collect(),
        })
    }
}

/// One `custom_queries` entry, ready to run.
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
    /// The entry at `index` of `custom_queries`.
    pub fn new(index: usize, definition: Definition) -> Self {
        let Definition {
            prefix,
            query,
            columns,
            tags,
        } = definition;
        Self {
            what: format!("custom_queries[{index}] (metric_prefix `{prefix}`)"),
            prefix,
            query,
            columns,
            tags,
        }
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
