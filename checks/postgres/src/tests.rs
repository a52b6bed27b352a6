//! The check's behaviour against canned answers from the recording host.

use kennel_sdk::testing::{Harness, Recorded};
use kennel_sdk::{Level, Metric, MetricType, Rows, ServiceCheck, SqlError, Status, Value};
use serde_json::{Value as Json, json};

use super::*;

const HOST: &str = "db.local";

/// The base instance: a server named by `host` only.
fn instance() -> Json {
    json!({"host": HOST})
}

fn with(mut instance: Json, key: &str, value: Json) -> Json {
    instance[key] = value;
    instance
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn rows(columns: &[&str], rows: Vec<Vec<Value>>) -> Rows {
    Rows {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows,
        truncated: false,
    }
}

/// A `pg_stat_database` row: name, template flag, backends, then the twelve counters
/// `base + 1 ..= base + 12` in `RATES` order, then `max_connections`.
fn database_row(datname: Value, template: Value, backends: Value, base: i64) -> Vec<Value> {
    let mut row = vec![datname, template, backends];
    row.extend((1..=12).map(|i| Value::Int(base + i)));
    row.push(Value::Float(100.0));
    row
}

fn database_rows() -> Rows {
    let mut columns = vec!["datname", "datistemplate", "numbackends"];
    columns.extend(databases::RATES.iter().map(|(column, _)| *column));
    columns.push("max_connections");
    rows(
        &columns,
        vec![
            database_row(text("postgres"), Value::Bool(false), Value::Int(3), 100),
            database_row(text("app"), Value::Bool(false), Value::Int(5), 200),
            database_row(text("template1"), Value::Bool(true), Value::Int(1), 300),
            database_row(text("template0"), Value::Bool(true), Value::Int(0), 400),
            // PostgreSQL 12's shared-objects row.
            database_row(Value::Null, Value::Null, Value::Null, 500),
        ],
    )
}

/// Runs the check against a server that answers `answers` (by exact statement), and the
/// `pg_stat_database` query with [`database_rows`] unless `answers` says otherwise. Anything
/// else is refused.
fn run(instance: Json, answers: Vec<(&str, Result<Rows, SqlError>)>) -> Recorded {
    let answers: Vec<(String, Result<Rows, SqlError>)> = answers
        .into_iter()
        .map(|(statement, answer)| (statement.to_owned(), answer))
        .collect();
    Harness::new()
        .on_sql(
            move |statement| match answers.iter().find(|(expected, _)| expected == statement) {
                Some((_, answer)) => answer.clone(),
                None if statement == databases::QUERY => Ok(database_rows()),
                None => Err(SqlError::Query(format!(
                    "the test server was not told about: {statement}"
                ))),
            },
        )
        .run::<Postgres>(instance)
}

fn service_check(recorded: &Recorded) -> &ServiceCheck {
    match recorded.service_check(CAN_CONNECT) {
        Some(service_check) => service_check,
        None => panic!("no {CAN_CONNECT} in {:?}", recorded.service_checks),
    }
}

/// Every series of `name`, as (value, kind, tags).
fn series(recorded: &Recorded, name: &str) -> Vec<(f64, MetricType, Vec<String>)> {
    recorded
        .metrics
        .iter()
        .filter(|m| m.name == name)
        .map(|m| (m.value, m.kind, m.tags.clone()))
        .collect()
}

fn only(recorded: &Recorded, name: &str) -> Metric {
    let found: Vec<&Metric> = recorded.metrics.iter().filter(|m| m.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0].clone()
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

fn custom_queries_sent(recorded: &Recorded) -> Vec<&str> {
    recorded
        .sql_queries
        .iter()
        .filter(|q| *q != databases::QUERY)
        .map(String::as_str)
        .collect()
}

// --- can_connect -------------------------------------------------------------------------

#[test]
fn first_query_answered_is_can_connect_ok_tagged_host_port_db() {
    let recorded = run(json!({"host": HOST, "port": 6432, "dbname": "app"}), vec![]);
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    let sc = service_check(&recorded);
    assert_eq!(sc.status, Status::Ok);
    assert_eq!(sc.tags, tags(&["host:db.local", "port:6432", "db:app"]));
    assert_eq!(
        sc.message.as_deref(),
        Some("Established connection to postgres://db.local:6432/app")
    );
}

#[test]
fn connect_error_is_can_connect_critical_and_fails_the_run() {
    let refused = SqlError::Connect("postgres://datadog@db.local:5432/postgres: refused".into());
    let recorded = run(instance(), vec![(databases::QUERY, Err(refused))]);
    let expected = "Error establishing connection to postgres://db.local:5432/postgres, error \
                    is connection failed: postgres://datadog@db.local:5432/postgres: refused";
    assert_eq!(recorded.error(), expected);
    let sc = service_check(&recorded);
    assert_eq!(sc.status, Status::Critical);
    assert_eq!(sc.message.as_deref(), Some(expected));
    assert_eq!(
        sc.tags,
        tags(&["host:db.local", "port:5432", "db:postgres"])
    );
    assert!(recorded.metrics.is_empty());
    assert_eq!(recorded.sql_queries, vec![databases::QUERY]);
}

#[test]
fn connect_error_stops_before_custom_queries() {
    let instance = with(
        instance(),
        "custom_queries",
        json!([{"metric_prefix": "x", "query": "SELECT 1", "columns": [{"name": "one", "type": "gauge"}]}]),
    );
    let refused = SqlError::Connect("refused".into());
    let recorded = run(instance, vec![(databases::QUERY, Err(refused))]);
    assert!(recorded.result.is_err());
    assert_eq!(recorded.sql_queries.len(), 1);
}

#[test]
fn timeout_and_not_granted_are_can_connect_critical_too() {
    for error in [
        SqlError::Timeout("no answer within 500 ms".into()),
        SqlError::NotGranted("the instance names no PostgreSQL server".into()),
    ] {
        let recorded = run(instance(), vec![(databases::QUERY, Err(error.clone()))]);
        let message = recorded.error();
        assert!(message.ends_with(&error.to_string()), "{message}");
        assert_eq!(service_check(&recorded).status, Status::Critical);
    }
}

#[test]
fn service_check_tags_default_to_localhost_5432_postgres() {
    let recorded = run(json!({}), vec![]);
    assert_eq!(
        service_check(&recorded).tags,
        tags(&["host:localhost", "port:5432", "db:postgres"])
    );
    let metric = only(&recorded, databases::MAX_CONNECTIONS);
    assert_eq!(metric.tags, tags(&["server:localhost", "port:5432"]));
}

#[test]
fn refused_first_query_is_still_can_connect_ok_with_a_warning() {
    let refused = SqlError::Query("column \"temp_bytes\" does not exist".into());
    let recorded = run(instance(), vec![(databases::QUERY, Err(refused))]);
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert_eq!(service_check(&recorded).status, Status::Ok);
    let warnings = recorded.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with(
            "pg_stat_database: Not all metrics may be available: query failed: column \
             \"temp_bytes\" does not exist"
        ),
        "{warnings:?}"
    );
}

#[test]
fn password_never_appears_in_messages() {
    let instance = json!({"host": HOST, "username": "kennel", "password": "s3cret"});
    let error = SqlError::Connect("password authentication failed (tried s3cret)".into());
    let recorded = run(instance.clone(), vec![(databases::QUERY, Err(error))]);
    let message = recorded.error();
    assert!(!message.contains("s3cret"), "{message}");
    assert!(message.ends_with("(tried ********)"), "{message}");
    let sc_message = service_check(&recorded).message.clone().unwrap_or_default();
    assert!(!sc_message.contains("s3cret"), "{sc_message}");

    let refused = SqlError::Query("syntax error near s3cret".into());
    let instance = with(
        instance,
        "custom_queries",
        json!([{"metric_prefix": "x", "query": "SELECT 's3cret'", "columns": [{"name": "v", "type": "gauge"}]}]),
    );
    let recorded = run(instance, vec![("SELECT 's3cret'", Err(refused))]);
    for (_, message) in &recorded.logs {
        assert!(!message.contains("s3cret"), "{message}");
    }

    let bad = json!({"password": "s3cret", "custom_metrics": [{"query": "s3cret"}]});
    let recorded = run(bad, vec![]);
    assert!(!recorded.error().contains("s3cret"));

    // serde quotes a value it rejects.
    let mut entry = connection_state();
    entry["relation"] = json!("s3cret");
    let quoted = json!({"password": "s3cret", "custom_metrics": [entry]});
    let recorded = run(quoted, vec![]);
    assert_eq!(
        recorded.error(),
        "custom_metrics[0].relation: invalid value: string \"********\", expected true or false"
    );
}

#[test]
fn reserved_and_connection_keys_are_ignored() {
    let instance = json!({
        "host": HOST, "port": "5433", "username": "kennel", "password": "pw", "dbname": "app",
        "ssl": "require", "query_timeout": 500, "tags": ["env:prod"], "service": "db",
        "min_collection_interval": 15, "collect_activity_metrics": true, "future": {"x": 1},
    });
    let recorded = run(instance, vec![]);
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert_eq!(service_check(&recorded).status, Status::Ok);
    let metric = only(&recorded, databases::MAX_CONNECTIONS);
    assert_eq!(metric.tags, tags(&["server:db.local", "port:5433"]));
}

// --- connection and database metrics -----------------------------------------------------

#[test]
fn one_query_collects_every_connection_and_database_metric() {
    let recorded = run(instance(), vec![]);
    assert_eq!(recorded.sql_queries, vec![databases::QUERY]);
    assert_eq!(
        databases::QUERY,
        "SELECT psd.datname, pd.datistemplate, psd.numbackends, psd.xact_commit, \
         psd.xact_rollback, psd.blks_read, psd.blks_hit, psd.tup_returned, psd.tup_fetched, \
         psd.tup_inserted, psd.tup_updated, psd.tup_deleted, psd.deadlocks, psd.temp_bytes, \
         psd.temp_files, current_setting('max_connections')::float8 AS max_connections \
         FROM pg_stat_database psd LEFT JOIN pg_database pd ON pd.oid = psd.datid"
    );
    // Two databases of 13 series each, and the two server-wide gauges.
    assert_eq!(recorded.metrics.len(), 2 * 13 + 2);
}

#[test]
fn query_columns_follow_the_rate_table() {
    let columns: Vec<String> = databases::RATES
        .iter()
        .map(|(column, _)| format!("psd.{column}"))
        .collect();
    let expected = format!("psd.numbackends, {}, current_setting", columns.join(", "));
    assert!(databases::QUERY.contains(&expected), "{expected}");
}

#[test]
fn database_metrics_have_datadog_names_types_and_tags() {
    let recorded = run(instance(), vec![]);
    let app = tags(&["server:db.local", "port:5432", "db:app"]);
    let postgres = tags(&["server:db.local", "port:5432", "db:postgres"]);
    assert_eq!(
        series(&recorded, databases::CONNECTIONS),
        vec![
            (3.0, MetricType::Gauge, postgres.clone()),
            (5.0, MetricType::Gauge, app.clone()),
        ]
    );
    let expected = [
        "postgresql.commits",
        "postgresql.rollbacks",
        "postgresql.disk_read",
        "postgresql.buffer_hit",
        "postgresql.rows_returned",
        "postgresql.rows_fetched",
        "postgresql.rows_inserted",
        "postgresql.rows_updated",
        "postgresql.rows_deleted",
        "postgresql.deadlocks",
        "postgresql.temp_bytes",
        "postgresql.temp_files",
    ];
    for (i, name) in expected.iter().enumerate() {
        let offset = i as f64 + 1.0;
        assert_eq!(
            series(&recorded, name),
            vec![
                (100.0 + offset, MetricType::Rate, postgres.clone()),
                (200.0 + offset, MetricType::Rate, app.clone()),
            ],
            "{name}"
        );
    }
}

#[test]
fn max_connections_and_percent_usage_as_a_fraction_over_every_row() {
    let recorded = run(instance(), vec![]);
    let server = tags(&["server:db.local", "port:5432"]);
    let max = only(&recorded, databases::MAX_CONNECTIONS);
    assert_eq!(
        (max.value, max.kind, max.tags),
        (100.0, MetricType::Gauge, server.clone())
    );
    // 3 + 5 + 1 (template1 counts, as in Datadog's SUM over pg_stat_database) of 100.
    let percent = only(&recorded, databases::PERCENT_USAGE_CONNECTIONS);
    assert_eq!(
        (percent.value, percent.kind, percent.tags),
        (0.09, MetricType::Gauge, server)
    );
}

#[test]
fn templates_the_shared_row_and_admin_databases_get_no_series() {
    let mut answer = database_rows();
    answer.rows.push(database_row(
        text("rdsadmin"),
        Value::Bool(false),
        Value::Int(1),
        0,
    ));
    let recorded = run(instance(), vec![(databases::QUERY, Ok(answer))]);
    for metric in &recorded.metrics {
        for tag in &metric.tags {
            assert!(
                tag == "db:app" || tag == "db:postgres" || !tag.starts_with("db:"),
                "{} has {tag}",
                metric.name
            );
        }
    }
    assert_eq!(
        only(&recorded, databases::PERCENT_USAGE_CONNECTIONS).value,
        0.1
    );
}

#[test]
fn truncated_result_is_a_warning() {
    let mut answer = database_rows();
    answer.truncated = true;
    let recorded = run(instance(), vec![(databases::QUERY, Ok(answer))]);
    let warnings = recorded.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "pg_stat_database: more rows came back than the runner hands a plugin \
             (`plugins.sql_row_limit`); only the first 5 were read."
        ),
        "{warnings:?}"
    );
}

// --- custom_metrics ----------------------------------------------------------------------

/// The `custom_metrics` example of Datadog's documentation, as the runner hands it over (the
/// YAML `>` block folds into one line with a final newline).
fn connection_state() -> Json {
    json!({
        "descriptors": [
            ["datname", "database"],
            ["application_name", "application_name"],
            ["state", "state"],
        ],
        "metrics": {"COUNT(state)": ["postgresql.connection_state", "GAUGE"]},
        "query": "SELECT datname, application_name, state, %s FROM pg_stat_activity GROUP BY \
                  datname, application_name, state HAVING COUNT(state) > 0;\n",
        "relation": false,
    })
}

const CONNECTION_STATE_SQL: &str = "SELECT datname, application_name, state, COUNT(state) FROM \
                                    pg_stat_activity GROUP BY datname, application_name, state \
                                    HAVING COUNT(state) > 0;\n";

#[test]
fn connection_state_example_works_unchanged() {
    let answer = rows(
        &["datname", "application_name", "state", "count"],
        vec![
            vec![text("app"), text("web"), text("active"), Value::Int(3)],
            vec![text("app"), text(""), text("idle"), Value::Int(2)],
        ],
    );
    let instance = with(instance(), "custom_metrics", json!([connection_state()]));
    let recorded = run(instance, vec![(CONNECTION_STATE_SQL, Ok(answer))]);
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert_eq!(custom_queries_sent(&recorded), vec![CONNECTION_STATE_SQL]);
    assert_eq!(
        series(&recorded, "postgresql.connection_state"),
        vec![
            (
                3.0,
                MetricType::Gauge,
                tags(&[
                    "server:db.local",
                    "port:5432",
                    "database:app",
                    "application_name:web",
                    "state:active",
                ])
            ),
            (
                2.0,
                MetricType::Gauge,
                tags(&[
                    "server:db.local",
                    "port:5432",
                    "database:app",
                    "application_name:",
                    "state:idle",
                ])
            ),
        ]
    );
    assert!(recorded.warnings().is_empty(), "{:?}", recorded.warnings());
}

#[test]
fn custom_metrics_log_the_deprecation_notice_once_at_debug() {
    let instance = with(
        instance(),
        "custom_metrics",
        json!([connection_state(), connection_state()]),
    );
    let recorded = run(instance, vec![(CONNECTION_STATE_SQL, Ok(Rows::default()))]);
    let notices: Vec<_> = recorded
        .logs
        .iter()
        .filter(|(_, message)| message.starts_with("DEPRECATION NOTICE"))
        .collect();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].0, Level::Debug);
    assert_eq!(
        notices[0].1,
        "DEPRECATION NOTICE: Please use the new custom_queries option rather than the now \
         deprecated custom_metrics"
    );
}

#[test]
fn relation_true_fills_in_the_relations_as_quoted_literals() {
    let instance = json!({
        "host": HOST, "dbname": "shop",
        "relations": ["orders", {"relation_name": "o'brien", "schemas": ["public"]}, "orders"],
        "custom_metrics": [{
            "descriptors": [["relname", "table"]],
            "metrics": {"n_live_tup": ["postgresql.custom.live_rows", "gauge"]},
            "query": "SELECT relname, %s FROM pg_stat_user_tables WHERE relname IN (%s)",
            "relation": true,
        }],
    });
    let sql = "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE relname IN ('orders', \
               'o''brien')";
    let answer = rows(
        &["relname", "n_live_tup"],
        vec![vec![text("orders"), Value::Int(42)]],
    );
    let recorded = run(instance, vec![(sql, Ok(answer))]);
    assert_eq!(custom_queries_sent(&recorded), vec![sql]);
    // Datadog keeps the instance's db: tag on relation queries.
    assert_eq!(
        series(&recorded, "postgresql.custom.live_rows"),
        vec![(
            42.0,
            MetricType::Gauge,
            tags(&["server:db.local", "port:5432", "db:shop", "table:orders"])
        )]
    );
}

#[test]
fn relations_entries_without_a_name_are_warned_about_when_used() {
    let metric = json!({
        "descriptors": [], "metrics": {"1": ["x.one", "GAUGE"]},
        "query": "SELECT %s WHERE 'a' IN (%s)", "relation": true,
    });
    let instance = json!({
        "host": HOST, "relations": ["a", {"relation_regex": "b.*"}],
        "custom_metrics": [metric],
    });
    let sql = "SELECT 1 WHERE 'a' IN ('a')";
    let recorded = run(
        instance,
        vec![(sql, Ok(rows(&["?column?"], vec![vec![Value::Int(1)]])))],
    );
    assert_eq!(custom_queries_sent(&recorded), vec![sql]);
    let warnings = recorded.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("`relations[1]` names no relation and is ignored"),
        "{warnings:?}"
    );
}

#[test]
fn rate_gauge_and_monotonic_map_to_rate_gauge_and_monotonic_count_in_any_case() {
    let instance = with(
        instance(),
        "custom_metrics",
        json!([{
            "descriptors": [],
            "metrics": {
                "c_col": ["custom.c", "Monotonic"],
                "a_col": ["custom.a", "rate"],
                "b_col": ["custom.b", "GaUgE"],
            },
            "query": "SELECT %s FROM t",
            "relation": false,
        }]),
    );
    // The columns go in the mapping's (sorted) order, and are read back in that order.
    let sql = "SELECT a_col, b_col, c_col FROM t";
    let answer = rows(
        &["a_col", "b_col", "c_col"],
        vec![vec![Value::Int(1), Value::Float(2.5), Value::Int(3)]],
    );
    let recorded = run(instance, vec![(sql, Ok(answer))]);
    assert_eq!(custom_queries_sent(&recorded), vec![sql]);
    let server = tags(&["server:db.local", "port:5432"]);
    assert_eq!(
        series(&recorded, "custom.a"),
        vec![(1.0, MetricType::Rate, server.clone())]
    );
    assert_eq!(
        series(&recorded, "custom.b"),
        vec![(2.5, MetricType::Gauge, server.clone())]
    );
    assert_eq!(
        series(&recorded, "custom.c"),
        vec![(3.0, MetricType::MonotonicCount, server)]
    );
}

#[test]
fn custom_metric_missing_a_key_fails_the_run_before_any_query() {
    for key in ["descriptors", "metrics", "query", "relation"] {
        let mut entry = connection_state();
        entry.as_object_mut().map(|e| e.remove(key));
        let instance = with(
            instance(),
            "custom_metrics",
            json!([connection_state(), entry]),
        );
        let recorded = run(instance, vec![]);
        assert_eq!(
            recorded.error(),
            format!("custom_metrics[1]: Missing {key} parameter in custom metric")
        );
        assert!(recorded.sql_queries.is_empty());
        assert!(recorded.service_checks.is_empty());
    }
}

#[test]
fn unknown_collector_method_fails_the_run() {
    let mut entry = connection_state();
    entry["metrics"] = json!({"COUNT(state)": ["postgresql.connection_state", "histogram"]});
    let recorded = run(with(instance(), "custom_metrics", json!([entry])), vec![]);
    assert_eq!(
        recorded.error(),
        "custom_metrics[0].metrics.COUNT(state)[1]: Collector method HISTOGRAM is not known. \
         Known methods are RATE, GAUGE, MONOTONIC"
    );
    assert!(recorded.sql_queries.is_empty());
}

#[test]
fn malformed_custom_metric_shapes_fail_the_run_naming_the_key() {
    let cases = [
        (
            json!({"metrics": {"a": "GAUGE"}}),
            "custom_metrics[0].metrics.a: invalid type: string \"GAUGE\", expected a \
             [metric_name, TYPE] pair",
        ),
        (
            json!({"metrics": [["a", "GAUGE"]]}),
            "custom_metrics[0].metrics: invalid type: sequence, expected a mapping of column \
             expressions to [metric_name, TYPE]",
        ),
        (
            json!({"descriptors": [["datname"]]}),
            "custom_metrics[0].descriptors[0]: invalid length 1, expected a [column, tag_name] \
             pair",
        ),
        (
            json!({"relation": "sometimes"}),
            "custom_metrics[0].relation: invalid value: string \"sometimes\", expected true or \
             false",
        ),
    ];
    for (change, expected) in cases {
        let mut entry = connection_state();
        for (key, value) in change.as_object().into_iter().flatten() {
            entry[key] = value.clone();
        }
        let recorded = run(with(instance(), "custom_metrics", json!([entry])), vec![]);
        let error = recorded.error();
        assert!(error.starts_with(expected), "{error}");
    }
}

#[test]
fn query_placeholders_follow_python_formatting() {
    let entry = |query: &str, relation: bool| {
        json!([{
            "descriptors": [], "metrics": {"n": ["x.n", "GAUGE"]},
            "query": query, "relation": relation,
        }])
    };
    let cases = [
        (
            entry("SELECT n FROM t", false),
            "custom_metrics[0]: `query` must contain one %s, where the metric columns go; it \
             has 0 (write %% for a literal %)",
        ),
        (
            entry("SELECT %s FROM t WHERE r IN (%s)", false),
            "custom_metrics[0]: `query` must contain one %s, where the metric columns go; it \
             has 2",
        ),
        (
            entry("SELECT %s FROM t", true),
            "custom_metrics[0]: `query` must contain two %s, for the metric columns and then \
             the relation names (relation: true); it has 1",
        ),
        (
            entry("SELECT %s FROM t WHERE name LIKE 'a%'", false),
            "custom_metrics[0]: `query` has `%'` at byte 35",
        ),
    ];
    for (custom_metrics, expected) in cases {
        let recorded = run(with(instance(), "custom_metrics", custom_metrics), vec![]);
        let error = recorded.error();
        assert!(error.starts_with(expected), "{error}");
    }

    let instance = with(
        instance(),
        "custom_metrics",
        entry("SELECT %s FROM t WHERE name LIKE 'a%%'", false),
    );
    let sql = "SELECT n FROM t WHERE name LIKE 'a%'";
    let recorded = run(instance, vec![(sql, Ok(Rows::default()))]);
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert_eq!(custom_queries_sent(&recorded), vec![sql]);
}

#[test]
fn row_of_the_wrong_width_fails_the_run_naming_the_query_after_the_other_entries() {
    let answer = rows(
        &["datname", "state", "count"],
        vec![vec![text("app"), text("idle"), Value::Int(2)]],
    );
    let instance = json!({
        "host": HOST,
        "custom_metrics": [connection_state()],
        "custom_queries": [{"metric_prefix": "q", "query": "SELECT 1", "columns": [{"name": "one", "type": "gauge"}]}],
    });
    let recorded = run(
        instance,
        vec![
            (CONNECTION_STATE_SQL, Ok(answer)),
            ("SELECT 1", Ok(rows(&["one"], vec![vec![Value::Int(1)]]))),
        ],
    );
    assert_eq!(
        recorded.error(),
        format!(
            "custom_metrics[0]: Row does not contain enough values: expected 4 (3 descriptors \
             + 1 columns), got 3. Query: {}",
            CONNECTION_STATE_SQL.trim()
        )
    );
    assert!(recorded.metric("postgresql.connection_state").is_none());
    assert!(
        recorded.metric("q.one").is_some(),
        "later entries still ran"
    );
    assert_eq!(service_check(&recorded).status, Status::Ok);
}

#[test]
fn more_than_100_rows_are_truncated_with_a_warning() {
    let answer = rows(
        &["datname", "application_name", "state", "count"],
        (0..150)
            .map(|i| {
                vec![
                    text("app"),
                    text(&format!("app{i}")),
                    text("idle"),
                    Value::Int(i),
                ]
            })
            .collect(),
    );
    let instance = with(instance(), "custom_metrics", json!([connection_state()]));
    let recorded = run(instance, vec![(CONNECTION_STATE_SQL, Ok(answer))]);
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert_eq!(
        series(&recorded, "postgresql.connection_state").len(),
        custom_metrics::MAX_CUSTOM_RESULTS
    );
    assert_eq!(
        recorded.warnings(),
        vec![format!(
            "custom_metrics[0]: Query: {} returned more than 100 results (150). Truncating",
            CONNECTION_STATE_SQL.trim()
        )]
    );
}

#[test]
fn null_descriptor_is_tagged_none_like_datadog_and_repeated_tag_names_keep_the_last_value() {
    let mut entry = connection_state();
    entry["descriptors"] = json!([
        ["datname", "database"],
        ["application_name", "database"],
        ["state", "state"]
    ]);
    let answer = rows(
        &["datname", "application_name", "state", "count"],
        vec![vec![Value::Null, text("web"), Value::Null, Value::Int(1)]],
    );
    let recorded = run(
        with(instance(), "custom_metrics", json!([entry])),
        vec![(CONNECTION_STATE_SQL, Ok(answer))],
    );
    assert_eq!(
        only(&recorded, "postgresql.connection_state").tags,
        tags(&["server:db.local", "port:5432", "database:web", "state:None"])
    );
}

#[test]
fn custom_metric_values_that_are_not_numbers_are_skipped_with_one_warning() {
    let entry = json!({
        "descriptors": [["name", "name"]],
        "metrics": {"a": ["m.a", "GAUGE"], "b": ["m.b", "GAUGE"]},
        "query": "SELECT name, %s FROM t",
        "relation": false,
    });
    let answer = rows(
        &["name", "a", "b"],
        vec![
            vec![text("one"), Value::Null, Value::Numeric("1.5".into())],
            vec![text("two"), text("lots"), Value::Bool(true)],
            vec![
                text("three"),
                Value::Unsupported("interval".into()),
                Value::Int(7),
            ],
            vec![
                Value::Unsupported("uuid".into()),
                Value::Int(1),
                Value::Int(1),
            ],
        ],
    );
    let recorded = run(
        with(instance(), "custom_metrics", json!([entry])),
        vec![("SELECT name, a, b FROM t", Ok(answer))],
    );
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    // NULL is skipped silently, as Datadog ignores None; the row's other metrics still count.
    assert_eq!(
        series(&recorded, "m.b")
            .iter()
            .map(|(value, _, _)| *value)
            .collect::<Vec<_>>(),
        vec![1.5, 1.0, 7.0]
    );
    assert!(series(&recorded, "m.a").is_empty());
    assert_eq!(
        recorded.warnings(),
        vec![
            "custom_metrics[0]: skipped 4 of 8 values; the first because: non-numeric value \
             `lots` for metric column `a`. Query: SELECT name, a, b FROM t"
        ]
    );
}

#[test]
fn unsupported_column_types_say_which_cast_to_add() {
    let entry = json!({
        "descriptors": [], "metrics": {"age": ["m.age", "GAUGE"]},
        "query": "SELECT %s FROM t", "relation": false,
    });
    let answer = rows(&["age"], vec![vec![Value::Unsupported("interval".into())]]);
    let recorded = run(
        with(instance(), "custom_metrics", json!([entry])),
        vec![("SELECT age FROM t", Ok(answer))],
    );
    let warnings = recorded.warnings();
    assert!(
        warnings[0].contains(
            "column `age` is of type interval, which the runner does not decode: cast it in \
             the query (`::float8`, or `EXTRACT(EPOCH FROM ...)` for a time)"
        ),
        "{warnings:?}"
    );
}

#[test]
fn refused_custom_query_is_logged_and_the_run_goes_on() {
    let instance = json!({
        "host": HOST,
        "custom_metrics": [connection_state()],
        "custom_queries": [{"metric_prefix": "q", "query": "SELECT 1", "columns": [{"name": "one", "type": "gauge"}]}],
    });
    let refused = SqlError::Query("permission denied for view pg_stat_activity".into());
    let recorded = run(
        instance,
        vec![
            (CONNECTION_STATE_SQL, Err(refused)),
            ("SELECT 1", Ok(rows(&["one"], vec![vec![Value::Int(1)]]))),
        ],
    );
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert!(recorded.metric("q.one").is_some());
    let warnings = recorded.warnings();
    assert!(
        warnings[0].starts_with(
            "custom_metrics[0]: Not all metrics may be available: query failed: permission \
             denied for view pg_stat_activity. Query: SELECT"
        ),
        "{warnings:?}"
    );
}

#[test]
fn connection_lost_after_the_first_query_fails_the_run_and_stops_querying() {
    let instance = with(
        instance(),
        "custom_metrics",
        json!([connection_state(), connection_state()]),
    );
    let lost = SqlError::Connect("connection reset by peer".into());
    let recorded = run(instance, vec![(CONNECTION_STATE_SQL, Err(lost))]);
    assert_eq!(
        recorded.error(),
        "custom_metrics[0]: lost the connection, no further queries sent: connection failed: \
         connection reset by peer"
    );
    assert_eq!(custom_queries_sent(&recorded).len(), 1);
    assert_eq!(service_check(&recorded).status, Status::Ok);
}

// --- custom_queries ----------------------------------------------------------------------

fn custom_query(columns: Json) -> Json {
    with(
        instance(),
        "custom_queries",
        json!([{
            "metric_prefix": "postgresql.app.",
            "query": "SELECT region, kind, orders, amount, refunds, errors FROM stats",
            "columns": columns,
            "tags": ["team:billing"],
        }]),
    )
}

const CUSTOM_SQL: &str = "SELECT region, kind, orders, amount, refunds, errors FROM stats";

fn custom_columns() -> Json {
    json!([
        {"name": "region", "type": "tag"},
        null,
        {"name": "orders", "type": "gauge"},
        {"name": "amount", "type": "rate"},
        {"name": "refunds", "type": "monotonic_count"},
        {"name": "errors", "type": "count"},
    ])
}

#[test]
fn custom_query_submits_each_type_with_the_prefix_and_tags() {
    let answer = rows(
        &["region", "kind", "orders", "amount", "refunds", "errors"],
        vec![vec![
            text("eu"),
            text("ignored"),
            Value::Int(10),
            Value::Numeric("99.5".into()),
            Value::Int(2),
            Value::Float(1.0),
        ]],
    );
    let recorded = run(
        custom_query(custom_columns()),
        vec![(CUSTOM_SQL, Ok(answer))],
    );
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    assert_eq!(custom_queries_sent(&recorded), vec![CUSTOM_SQL]);
    let expected_tags = tags(&[
        "team:billing",
        "server:db.local",
        "port:5432",
        "db:postgres",
        "region:eu",
    ]);
    let got: Vec<_> = recorded
        .metrics
        .iter()
        .filter(|m| m.name.starts_with("postgresql.app"))
        .map(|m| (m.name.as_str(), m.kind, m.value, m.tags.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "postgresql.app.orders",
                MetricType::Gauge,
                10.0,
                expected_tags.clone()
            ),
            (
                "postgresql.app.amount",
                MetricType::Rate,
                99.5,
                expected_tags.clone()
            ),
            (
                "postgresql.app.refunds",
                MetricType::MonotonicCount,
                2.0,
                expected_tags.clone()
            ),
            (
                "postgresql.app.errors",
                MetricType::Count,
                1.0,
                expected_tags
            ),
        ]
    );
    assert!(recorded.warnings().is_empty(), "{:?}", recorded.warnings());
}

#[test]
fn custom_query_rows_of_the_wrong_width_are_skipped_with_a_warning_naming_the_query() {
    let answer = rows(
        &["region", "kind", "orders", "amount", "refunds", "errors"],
        vec![
            vec![text("eu"), Value::Null, Value::Int(1)],
            vec![
                text("us"),
                Value::Null,
                Value::Int(2),
                Value::Int(2),
                Value::Int(2),
                Value::Int(2),
            ],
        ],
    );
    let recorded = run(
        custom_query(custom_columns()),
        vec![(CUSTOM_SQL, Ok(answer))],
    );
    assert!(recorded.result.is_ok(), "{:?}", recorded.result);
    let orders = series(&recorded, "postgresql.app.orders");
    assert_eq!(orders.len(), 1);
    assert!(orders[0].2.contains(&"region:us".to_owned()));
    assert_eq!(
        recorded.warnings(),
        vec![format!(
            "custom_queries[0] (metric_prefix `postgresql.app`): skipped 1 of 2 rows; the first \
             because: expected 6 columns, got 3. Query: {CUSTOM_SQL}"
        )]
    );
}

#[test]
fn custom_query_row_with_a_non_numeric_or_null_metric_is_skipped_whole() {
    let row = |region: &str, orders: Value, amount: Value| {
        vec![
            text(region),
            Value::Null,
            orders,
            amount,
            Value::Int(1),
            Value::Int(1),
        ]
    };
    let answer = rows(
        &["region", "kind", "orders", "amount", "refunds", "errors"],
        vec![
            row("eu", Value::Int(1), text("n/a")),
            row("us", Value::Null, Value::Int(1)),
            row("ap", text("12"), Value::Bool(false)),
        ],
    );
    let recorded = run(
        custom_query(custom_columns()),
        vec![(CUSTOM_SQL, Ok(answer))],
    );
    // Only the `ap` row is whole; its text "12" and boolean are numbers, as Python's float().
    for name in [
        "postgresql.app.orders",
        "postgresql.app.amount",
        "postgresql.app.refunds",
        "postgresql.app.errors",
    ] {
        let found = series(&recorded, name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert!(found[0].2.contains(&"region:ap".to_owned()));
    }
    assert_eq!(series(&recorded, "postgresql.app.orders")[0].0, 12.0);
    assert_eq!(series(&recorded, "postgresql.app.amount")[0].0, 0.0);
    let warnings = recorded.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "custom_queries[0] (metric_prefix `postgresql.app`): skipped 2 of 3 rows; the first \
             because: non-numeric value `n/a` for metric column `amount`."
        ),
        "{warnings:?}"
    );
}

#[test]
fn custom_query_tag_column_of_an_unsupported_type_skips_the_row() {
    let columns = json!([{"name": "id", "type": "tag"}, {"name": "n", "type": "gauge"}]);
    let instance = with(
        instance(),
        "custom_queries",
        json!([{"metric_prefix": "t", "query": "SELECT id, n FROM t", "columns": columns}]),
    );
    let answer = rows(
        &["id", "n"],
        vec![vec![Value::Unsupported("uuid".into()), Value::Int(1)]],
    );
    let recorded = run(instance, vec![("SELECT id, n FROM t", Ok(answer))]);
    assert!(recorded.metric("t.n").is_none());
    let warnings = recorded.warnings();
    assert!(
        warnings[0].contains("column `id` is of type uuid, which the runner does not decode: cast it in the query (`::text`)"),
        "{warnings:?}"
    );
}

#[test]
fn custom_query_prefix_loses_its_trailing_dots() {
    let instance = with(
        instance(),
        "custom_queries",
        json!([{"metric_prefix": "a.b..", "query": "SELECT 1", "columns": [{"name": "one", "type": "gauge"}]}]),
    );
    let recorded = run(
        instance,
        vec![("SELECT 1", Ok(rows(&["one"], vec![vec![Value::Int(1)]])))],
    );
    assert_eq!(only(&recorded, "a.b.one").value, 1.0);
}

#[test]
fn bad_custom_query_config_fails_the_run_naming_the_entry_and_key() {
    let good = json!({"metric_prefix": "p", "query": "SELECT 1", "columns": [{"name": "one", "type": "gauge"}]});
    let cases = [
        (
            json!({"metric_prefix": null}),
            "custom_queries[1]: `metric_prefix` is required",
        ),
        (
            json!({"metric_prefix": ""}),
            "custom_queries[1]: `metric_prefix` is required",
        ),
        (
            json!({"query": ""}),
            "custom_queries[1]: `query` is required",
        ),
        (
            json!({"columns": []}),
            "custom_queries[1]: `columns` is required",
        ),
        (
            json!({"columns": [{"type": "gauge"}]}),
            "custom_queries[1].columns[0]: `name` is required",
        ),
        (
            json!({"columns": [{"nmae": "one", "tpye": "gauge"}]}),
            "custom_queries[1].columns[0]: `name` is required",
        ),
        (
            json!({"columns": [null, {"name": "one"}]}),
            "custom_queries[1].columns[1]: `type` is required for column `one`: use tag, gauge, \
             rate, monotonic_count or count",
        ),
        (
            json!({"columns": [{"name": "one", "type": "gauge_it"}]}),
            "custom_queries[1].columns[0]: `type` of column `one` is `gauge_it`, which is not \
             known: use tag, gauge, rate, monotonic_count or count",
        ),
        (
            json!({"tags": "team:a"}),
            "custom_queries[1].tags: invalid type: string \"team:a\", expected a sequence",
        ),
    ];
    for (change, expected) in cases {
        let mut entry = good.clone();
        for (key, value) in change.as_object().into_iter().flatten() {
            entry[key] = value.clone();
        }
        let instance = with(instance(), "custom_queries", json!([good, entry]));
        let recorded = run(instance, vec![]);
        let error = recorded.error();
        assert!(error.starts_with(expected), "{error}");
        assert!(recorded.sql_queries.is_empty());
    }
}

#[test]
fn custom_query_truncated_by_the_runner_is_a_warning() {
    let mut answer = rows(&["one"], vec![vec![Value::Int(1)]]);
    answer.truncated = true;
    let instance = with(
        instance(),
        "custom_queries",
        json!([{"metric_prefix": "p", "query": "SELECT 1", "columns": [{"name": "one", "type": "gauge"}]}]),
    );
    let recorded = run(instance, vec![("SELECT 1", Ok(answer))]);
    assert_eq!(only(&recorded, "p.one").value, 1.0);
    assert_eq!(
        recorded.warnings(),
        vec![
            "custom_queries[0] (metric_prefix `p`): more rows came back than the runner hands \
             a plugin (`plugins.sql_row_limit`); only the first 1 were read. Query: SELECT 1"
        ]
    );
}
