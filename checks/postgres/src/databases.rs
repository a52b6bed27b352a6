//! The connection and per-database metrics: everything from `pg_stat_database`, and the
//! `max_connections` setting, in one query (one round trip on the runner's kept connection,
//! whose statement cache also saves the prepare after the first run).
//!
//! Datadog reads these with two queries (`DB_METRICS` and `CONNECTION_METRICS` in its check);
//! here `max_connections` rides along as a column of every row, read with `current_setting`,
//! which costs nothing, rather than from `pg_settings`, which materialises every setting (on
//! PostgreSQL 15, prepared, through pgbench: 0.12 ms for this query, 0.63 ms with Datadog's
//! `pg_settings` CTE). The
//! sum over the databases is done here rather than in SQL, so the percentage covers every row
//! as Datadog's `SUM(numbackends)` does, while the per-database series skip what Datadog skips:
//! templates, the shared-objects row (NULL `datname`, PostgreSQL 12 and later) and the cloud
//! providers' admin databases.
//!
//! Requires PostgreSQL 9.2 or later (`deadlocks`, `temp_bytes`, `temp_files`).

use kennel_sdk::{Rows, Value};

use crate::Run;
use crate::values::Skipped;

pub const QUERY: &str = "SELECT psd.datname, pd.datistemplate, psd.numbackends, \
     psd.xact_commit, psd.xact_rollback, psd.blks_read, psd.blks_hit, psd.tup_returned, \
     psd.tup_fetched, psd.tup_inserted, psd.tup_updated, psd.tup_deleted, psd.deadlocks, \
     psd.temp_bytes, psd.temp_files, \
     current_setting('max_connections')::float8 AS max_connections \
     FROM pg_stat_database psd LEFT JOIN pg_database pd ON pd.oid = psd.datid";

pub const CONNECTIONS: &str = "postgresql.connections";
pub const MAX_CONNECTIONS: &str = "postgresql.max_connections";
pub const PERCENT_USAGE_CONNECTIONS: &str = "postgresql.percent_usage_connections";

/// The `pg_stat_database` counters submitted as rates, in the query's column order (after
/// `datname`, `datistemplate` and `numbackends`).
pub const RATES: [(&str, &str); 12] = [
    ("xact_commit", "postgresql.commits"),
    ("xact_rollback", "postgresql.rollbacks"),
    ("blks_read", "postgresql.disk_read"),
    ("blks_hit", "postgresql.buffer_hit"),
    ("tup_returned", "postgresql.rows_returned"),
    ("tup_fetched", "postgresql.rows_fetched"),
    ("tup_inserted", "postgresql.rows_inserted"),
    ("tup_updated", "postgresql.rows_updated"),
    ("tup_deleted", "postgresql.rows_deleted"),
    ("deadlocks", "postgresql.deadlocks"),
    ("temp_bytes", "postgresql.temp_bytes"),
    ("temp_files", "postgresql.temp_files"),
];

const DATNAME: usize = 0;
const DATISTEMPLATE: usize = 1;
const NUMBACKENDS: usize = 2;
const FIRST_RATE: usize = 3;
const MAX_CONNECTIONS_COLUMN: usize = FIRST_RATE + RATES.len();
const WIDTH: usize = MAX_CONNECTIONS_COLUMN + 1;

/// Databases Datadog leaves out besides templates (compared case-insensitively, as its
/// `ilike`): the admin databases of Amazon RDS and Azure, which users cannot connect to.
const ADMIN_DATABASES: [&str; 2] = ["rdsadmin", "azure_maintenance"];

/// Submits the metrics of [`QUERY`]'s result.
pub fn submit(run: &mut Run, rows: &Rows) {
    let mut backends = 0.0;
    let mut max_connections = None;
    let mut skipped = Skipped::default();
    for row in &rows.rows {
        if row.len() != WIDTH {
            skipped.note(format!("expected {WIDTH} columns, got {}", row.len()));
            continue;
        }
        backends += row[NUMBACKENDS].as_f64().unwrap_or(0.0);
        max_connections = max_connections.or(row[MAX_CONNECTIONS_COLUMN].as_f64());

        let Value::Text(datname) = &row[DATNAME] else {
            continue;
        };
        if row[DATISTEMPLATE] == Value::Bool(true)
            || ADMIN_DATABASES
                .iter()
                .any(|admin| datname.eq_ignore_ascii_case(admin))
        {
            continue;
        }
        let mut tags = run.tags.clone();
        tags.push(format!("db:{datname}"));
        if let Some(connections) = row[NUMBACKENDS].as_f64() {
            run.cx.gauge(CONNECTIONS, connections, &tags);
        }
        for ((_, name), value) in RATES.iter().zip(&row[FIRST_RATE..]) {
            if let Some(value) = value.as_f64() {
                run.cx.rate(name, value, &tags);
            }
        }
    }
    if let Some(summary) = skipped.summary("pg_stat_database", "rows", rows.rows.len(), QUERY) {
        run.warn(summary);
    }

    if let Some(max_connections) = max_connections {
        let tags = run.tags.clone();
        run.cx.gauge(MAX_CONNECTIONS, max_connections, &tags);
        // A fraction from 0 to 1, as Datadog's `SUM(numbackends)/MAX(setting)`.
        if max_connections > 0.0 {
            run.cx
                .gauge(PERCENT_USAGE_CONNECTIONS, backends / max_connections, &tags);
        }
    }
}
