//! `postgres`: Datadog's PostgreSQL check as a Kennel plugin, for the connection and
//! per-database metrics and the user's own queries. The runner owns the connection (it connects
//! to the instance's `host`, `port`, `username`, `password`, `dbname` and `ssl`, and keeps the
//! connection across runs); the plugin only sends SQL through `cx.sql`. Options are documented
//! in `config.rs`. Each run:
//!
//! 1. sends one query for all of `pg_stat_database` and `max_connections` (`databases.rs`).
//!    Its answer decides service check `postgres.can_connect`, tagged `host:<host>`,
//!    `port:<port>`, `db:<dbname>`: OK ("Established connection to postgres://h:p/db"), or, when
//!    no connection could be made, the query timed out or the instance names no server,
//!    CRITICAL ("Error establishing connection to postgres://h:p/db, error is E"), and the run
//!    fails with that message.
//! 2. submits, tagged `server:<host>`, `port:<port>` and, per database, `db:<datname>`:
//!    gauges `postgresql.connections`, `postgresql.max_connections` and
//!    `postgresql.percent_usage_connections` (a fraction from 0 to 1), and raw counters for the
//!    runner to turn into rates: `postgresql.commits`, `.rollbacks`, `.disk_read`,
//!    `.buffer_hit`, `.rows_returned`, `.rows_fetched`, `.rows_inserted`, `.rows_updated`,
//!    `.rows_deleted`, `.deadlocks`, `.temp_bytes`, `.temp_files`.
//! 3. runs each `custom_metrics` entry (`custom_metrics.rs`), then each `custom_queries` entry
//!    (`custom_queries.rs`), one query each.
//!
//! The runner adds the instance's `tags` and `service:` itself.
//!
//! Cost: measured with `runner test-check -t 300` against a local PostgreSQL 15, a whole run
//! without custom queries takes 0.3 to 0.4 ms on the kept connection (0.15 ms of it is the
//! runner instantiating the plugin), and each custom query adds about 0.06 ms.
//!
//! Design decisions:
//! - The configuration is read in full before any query: a bad entry fails the run with a
//!   message naming it (`custom_metrics[1]: Missing query parameter in custom metric`) and no
//!   service check, as Datadog raises its `ConfigurationError` before connecting.
//! - A query the server refuses is not a connection failure: when the first query is refused
//!   the server did answer, so `postgres.can_connect` is OK, and like every refused or timed-out
//!   query later in the run it is logged as a warning ("Not all metrics may be available") and
//!   the run goes on. A connection lost after the first query fails the run.
//! - Warnings about skipped rows are summed up once per query: the runner counts log lines
//!   against its per-run cap.
//! - The password is never part of a message: it is scrubbed from every text the check logs,
//!   returns or puts in a service check, the runner's error messages included.
//!
//! Differences from Datadog: the `port:` tags default to `5432`, the port the runner uses,
//! where Datadog tags `port:socket`; the `postgres` database is reported like any other (as
//! with Datadog's `collect_default_database: true`); `postgresql.db.count` is not sent.
//!
//! Missing: Datadog's other metric groups (bgwriter, archiver, locks, replication, activity,
//! database sizes, per-relation metrics), `tag_replication_role`, version metadata.

#![forbid(unsafe_code)]

mod config;
mod custom_metrics;
mod custom_queries;
mod databases;
mod values;

use kennel_sdk::{Check, ConfigError, Ctx, Rows, SqlError, Status, export_check};

use config::{Config, Options};

const CAN_CONNECT: &str = "postgres.can_connect";
const DEPRECATION_NOTICE: &str = "DEPRECATION NOTICE: Please use the new custom_queries option \
                                  rather than the now deprecated custom_metrics";
/// What stands in for the password in messages.
const REDACTED: &str = "********";

pub struct Postgres;

impl Check for Postgres {
    type Config = Options;

    fn run(cx: &mut Ctx, options: Options) -> kennel_sdk::Result {
        let config = Config::new(options);
        let mut run = Run::new(cx, &config);
        run.collect().map_err(|e| run.scrub(e).into())
    }

    /// Fails the run, as Datadog raises its `ConfigurationError` before connecting: no service
    /// check, and no password in the message (serde quotes the values it rejects).
    fn config_error(_cx: &mut Ctx, error: &ConfigError) -> kennel_sdk::Result {
        let password = config::raw_password(error.raw());
        Err(scrub(error.to_string(), password.as_deref()).into())
    }
}

export_check!(Postgres);

/// One run of one instance: the context, the instance's tags and what went wrong so far.
pub(crate) struct Run<'r, 'h> {
    pub cx: &'r mut Ctx<'h>,
    config: &'r Config,
    /// `server:<host>` and `port:<port>`, on every metric.
    pub tags: Vec<String>,
    /// Why the run lost its connection after the first query; no more queries are sent.
    lost: Option<String>,
}

impl<'r, 'h> Run<'r, 'h> {
    fn new(cx: &'r mut Ctx<'h>, config: &'r Config) -> Self {
        Self {
            cx,
            config,
            tags: vec![
                format!("server:{}", config.host),
                format!("port:{}", config.port),
            ],
            lost: None,
        }
    }

    fn collect(&mut self) -> Result<(), String> {
        for warning in &self.config.warnings {
            self.warn(warning.clone());
        }
        let target = format!(
            "postgres://{}:{}/{}",
            self.config.host, self.config.port, self.config.dbname
        );
        let service_check_tags = [
            format!("host:{}", self.config.host),
            format!("port:{}", self.config.port),
            format!("db:{}", self.config.dbname),
        ];

        match self.cx.sql(databases::QUERY) {
            Ok(rows) => {
                let message = format!("Established connection to {target}");
                self.cx
                    .service_check(CAN_CONNECT, Status::Ok, Some(&message), &service_check_tags);
                self.warn_if_truncated("pg_stat_database", databases::QUERY, &rows);
                databases::submit(self, &rows);
            }
            Err(error @ SqlError::Query(_)) => {
                // The server answered, so the connection is fine; this server lacks something.
                let message = format!("Established connection to {target}");
                self.cx
                    .service_check(CAN_CONNECT, Status::Ok, Some(&message), &service_check_tags);
                self.warn(format!(
                    "pg_stat_database: Not all metrics may be available: {error}. Query: {}",
                    databases::QUERY
                ));
            }
            Err(error) => {
                let message = self.scrub(format!(
                    "Error establishing connection to {target}, error is {error}"
                ));
                self.cx.service_check(
                    CAN_CONNECT,
                    Status::Critical,
                    Some(&message),
                    &service_check_tags,
                );
                return Err(message);
            }
        }

        let config = self.config;
        let mut failures = Vec::new();
        if !config.custom_metrics.is_empty() {
            self.cx.debug(DEPRECATION_NOTICE);
        }
        for custom_metric in &config.custom_metrics {
            if self.lost.is_some() {
                break;
            }
            if let Err(failure) = custom_metric.collect(self) {
                failures.push(failure);
            }
        }
        for custom_query in &config.custom_queries {
            if self.lost.is_some() {
                break;
            }
            custom_query.collect(self);
        }
        failures.extend(self.lost.take());
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Runs one of the user's queries. `None` when it got no rows to read: a refused or
    /// timed-out query is logged, a lost connection ends the run.
    pub fn query(&mut self, what: &str, statement: &str) -> Option<Rows> {
        match self.cx.sql(statement) {
            Ok(rows) => {
                self.warn_if_truncated(what, statement, &rows);
                Some(rows)
            }
            Err(error @ (SqlError::Query(_) | SqlError::Timeout(_))) => {
                self.warn(format!(
                    "{what}: Not all metrics may be available: {error}. Query: {}",
                    statement.trim()
                ));
                None
            }
            Err(error) => {
                self.lost = Some(format!(
                    "{what}: lost the connection, no further queries sent: {error}"
                ));
                None
            }
        }
    }

    fn warn_if_truncated(&mut self, what: &str, statement: &str, rows: &Rows) {
        if rows.truncated {
            self.warn(format!(
                "{what}: more rows came back than the runner hands a plugin \
                 (`plugins.sql_row_limit`); only the first {} were read. Query: {}",
                rows.rows.len(),
                statement.trim()
            ));
        }
    }

    /// The instance's `db:<dbname>` tag, which Datadog keeps on relation and custom queries.
    pub fn db_tag(&self) -> String {
        format!("db:{}", self.config.dbname)
    }

    pub fn warn(&mut self, message: String) {
        let message = self.scrub(message);
        self.cx.warn(&message);
    }

    fn scrub(&self, message: String) -> String {
        scrub(message, self.config.password.as_deref())
    }
}

/// `message` without the password.
fn scrub(message: String, password: Option<&str>) -> String {
    match password {
        Some(password) if !password.is_empty() && message.contains(password) => {
            message.replace(password, REDACTED)
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests;
