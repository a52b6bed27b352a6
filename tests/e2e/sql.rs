//! The `sql` capability against a real PostgreSQL server, driven by the test plugin.

use std::time::Duration;

use kennel_tests::postgres::{PASSWORD, Postgres};
use kennel_tests::{host, instance, plugin_config};
use runner::check::{RunError, RunReport};
use runner::config::PluginConfig;
use runner::plugin::PluginHost;

fn sql_instance(postgres: &Postgres, statement: &str, extra: &str) -> String {
    format!(
        "instances:\n  - mode: sql\n    statement: \"{statement}\"\n{}{extra}",
        postgres.instance_keys("app")
    )
}

async fn run(host: &PluginHost, yaml: &str) -> RunReport {
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    host.run(&plugin, &instance("test_plugin", yaml)).await
}

fn values(report: &RunReport) -> Vec<f64> {
    report.metrics.iter().map(|m| m.value).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_return_typed_values() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    for (statement, expected) in [
        ("SELECT 42::int8", 42.0),
        ("SELECT 12.5::numeric(10,3)", 12.5),
        ("SELECT 1.25::float4", 1.25),
        ("SELECT true", 1.0),
        ("SELECT '7'::text", 7.0),
    ] {
        let report = run(&host, &sql_instance(&postgres, statement, "")).await;
        assert!(report.is_ok(), "{statement}: {report:#?}");
        assert_eq!(values(&report), [expected], "{statement}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_keeps_one_connection_across_runs() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let yaml = sql_instance(
        &postgres,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kennel'",
        "",
    );
    for _ in 0..3 {
        let report = run(&host, &yaml).await;
        assert_eq!(values(&report), [1.0], "{report:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_without_a_server_has_no_sql() {
    let host = host(plugin_config());
    let report = run(
        &host,
        "instances:\n  - mode: sql\n    statement: SELECT 1\n",
    )
    .await;
    let Some(RunError::Check(message)) = &report.error else {
        panic!("expected a refusal: {report:#?}");
    };
    assert!(message.contains("names no PostgreSQL server"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_login_does_not_reveal_the_password() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let yaml = sql_instance(&postgres, "SELECT 1", "").replace(PASSWORD, "wrong-secret-value");
    let report = run(&host, &yaml).await;
    let Some(RunError::Check(message)) = &report.error else {
        panic!("expected a connection error: {report:#?}");
    };
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(message.contains("postgres://kennel@127.0.0.1"), "{message}");
    assert!(!message.contains("wrong-secret-value"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_goes_away_and_comes_back_is_reconnected() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let yaml = sql_instance(&postgres, "SELECT 1", "");
    assert!(run(&host, &yaml).await.is_ok());

    postgres.stop();
    let down = run(&host, &yaml).await;
    let Some(RunError::Check(message)) = &down.error else {
        panic!("expected a connection error: {down:#?}");
    };
    assert!(message.contains("connection failed"), "{message}");

    postgres.start_server();
    let back = run(&host, &yaml).await;
    assert!(back.is_ok(), "{back:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_queries_time_out_and_the_next_one_works() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let slow = run(
        &host,
        &sql_instance(&postgres, "SELECT pg_sleep(5)", "    query_timeout: 300\n"),
    )
    .await;
    let Some(RunError::Check(message)) = &slow.error else {
        panic!("expected a timeout: {slow:#?}");
    };
    assert!(message.contains("timeout"), "{message}");
    // The run's own length, without the plugin's compilation: cut at 0.3 s, later on a loaded
    // machine; a query left to finish would take its 5 s.
    assert!(
        slow.duration < Duration::from_secs(2),
        "the run took {:?}",
        slow.duration
    );
    let next = run(
        &host,
        &sql_instance(&postgres, "SELECT 2", "    query_timeout: 300\n"),
    )
    .await;
    assert_eq!(values(&next), [2.0], "{next:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_past_the_limit_are_dropped() {
    let postgres = Postgres::start();
    let host = host(PluginConfig {
        sql_row_limit: 10,
        ..plugin_config()
    });
    let report = run(
        &host,
        &sql_instance(&postgres, "SELECT generate_series(1, 100)", ""),
    )
    .await;
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(values(&report), (1..=10).map(f64::from).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_past_the_byte_bound_fails_that_query_and_the_next_one_works() {
    let postgres = Postgres::start();
    let host = host(PluginConfig {
        sql_result_limit_kb: 64,
        ..plugin_config()
    });
    // What counts is what comes back, not what the server worked through.
    let small = run(
        &host,
        &sql_instance(
            &postgres,
            "SELECT length(repeat('x', 10000))::int8 FROM generate_series(1, 100)",
            "",
        ),
    )
    .await;
    assert_eq!(values(&small), [10000.0; 100], "{small:#?}");
    // 100 rows of 10 KB: 1 MB, where 64 KiB are allowed.
    let big = run(
        &host,
        &sql_instance(
            &postgres,
            "SELECT 1, repeat('x', 10000) FROM generate_series(1, 100)",
            "",
        ),
    )
    .await;
    let Some(RunError::Check(message)) = &big.error else {
        panic!("expected the bound's error: {big:#?}");
    };
    assert!(
        message.contains("test_plugin instance test_plugin:")
            && message.contains("passed the bound of 64 KiB after ")
            && message.contains("plugins.sql_result_limit_kb"),
        "{message}"
    );
    assert!(big.metrics.is_empty(), "nothing of the result: {big:#?}");
    let next = run(&host, &sql_instance(&postgres, "SELECT 2", "")).await;
    assert_eq!(values(&next), [2.0], "{next:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_reaches_its_server_through_a_socket_directory() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let yaml = format!(
        "instances:\n  - mode: sql\n    statement: SELECT 3\n    host: {}\n    port: {}\n    username: postgres\n",
        postgres.socket_dir().display(),
        postgres.port
    );
    let report = run(&host, &yaml).await;
    assert_eq!(values(&report), [3.0], "{report:#?}");
}
