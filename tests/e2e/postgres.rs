//! The postgres check through the real host against a real PostgreSQL server.

use std::collections::BTreeSet;
use std::time::Duration;

use kennel_tests::postgres::{CONNECTION_STATE, Postgres};
use kennel_tests::{host, instance, plugin_config, wait};
use runner::aggregator::CheckSampler;
use runner::check::{MetricType, RunError, RunReport, Status};
use runner::plugin::PluginHost;

async fn run(host: &PluginHost, yaml: &str) -> RunReport {
    let plugin = host.load("postgres").expect("postgres loads");
    host.run(&plugin, &instance("postgres", yaml)).await
}

fn config(postgres: &Postgres, extra: &str) -> String {
    format!("instances:\n  -\n{}{extra}", postgres.instance_keys("app"))
}

/// An application connection to `app`, held open, named `name`.
async fn client(postgres: &Postgres, name: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&postgres.client_url("app", name), tokio_postgres::NoTls)
            .await
            .expect("the application connects");
    tokio::spawn(connection);
    client
}

fn can_connect(report: &RunReport) -> Status {
    report
        .service_checks
        .iter()
        .find(|s| s.name == "postgres.can_connect")
        .unwrap_or_else(|| panic!("no postgres.can_connect in {report:#?}"))
        .status
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_state_custom_metric_counts_connections_by_application_and_state() {
    let postgres = Postgres::start();
    let idle_a = client(&postgres, "app-idle").await;
    let _idle_b = client(&postgres, "app-idle").await;
    let in_transaction = client(&postgres, "app-txn").await;
    in_transaction
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("transaction opens");
    let active = client(&postgres, "app-active").await;
    let sleeping = tokio::spawn(async move {
        let _ = active.batch_execute("SELECT pg_sleep(30)").await;
    });
    // Asked through an idle connection: PostgreSQL marks a backend idle again before it answers,
    // so the question leaves no trace in what the check counts.
    let active_now = wait::until_async(
        Duration::from_secs(10),
        || async {
            idle_a
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'app-active' AND state = 'active'",
                    &[],
                )
                .await
                .expect("pg_stat_activity answers")
                .get::<_, i64>(0)
        },
        |active| *active == 1,
    )
    .await;
    assert_eq!(active_now, 1, "the sleeping query is running");

    let host = host(plugin_config());
    let report = run(&host, &config(&postgres, CONNECTION_STATE)).await;
    sleeping.abort();
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(can_connect(&report), Status::Ok);

    let port = format!("port:{}", postgres.port);
    let series: BTreeSet<(String, u64)> = report
        .metrics
        .iter()
        .filter(|m| m.name == "postgresql.connection_state")
        .map(|m| {
            assert_eq!(m.kind, MetricType::Gauge);
            assert!(
                m.tags.contains(&"server:127.0.0.1".to_owned()),
                "{:?}",
                m.tags
            );
            assert!(m.tags.contains(&port), "{:?}", m.tags);
            let own: Vec<&str> = m
                .tags
                .iter()
                .map(String::as_str)
                .filter(|t| !t.starts_with("server:") && !t.starts_with("port:"))
                .collect();
            (own.join(","), m.value as u64)
        })
        .collect();
    let expected: BTreeSet<(String, u64)> = [
        ("application_name:app-active,database:app,state:active", 1),
        ("application_name:app-idle,database:app,state:idle", 2),
        (
            "application_name:app-txn,database:app,state:idle in transaction",
            1,
        ),
        // The check's own connection, running this very query.
        ("application_name:kennel,database:app,state:active", 1),
    ]
    .into_iter()
    .map(|(tags, n)| (tags.to_owned(), n))
    .collect();
    assert_eq!(series, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_metrics_and_rates_over_two_runs() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let yaml = config(
        &postgres,
        r#"
    custom_queries:
      - metric_prefix: app
        query: SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'
        columns:
          - name: commits
            type: monotonic_count
"#,
    );
    let mut sampler = CheckSampler::new();

    let mut first = run(&host, &yaml).await;
    sampler.process(&mut first);
    assert!(first.is_ok(), "{first:#?}");
    let metric = |report: &RunReport, name: &str, db: &str| {
        report
            .metrics
            .iter()
            .find(|m| m.name == name && m.tags.iter().any(|t| t == &format!("db:{db}")))
            .map(|m| (m.kind, m.value))
    };
    let (_, connections) =
        metric(&first, "postgresql.connections", "app").expect("connections to app");
    assert!(connections >= 1.0, "the check's own connection counts");
    let max = first
        .metrics
        .iter()
        .find(|m| m.name == "postgresql.max_connections")
        .expect("max_connections");
    assert_eq!(max.value, 100.0, "initdb's default");
    let usage = first
        .metrics
        .iter()
        .find(|m| m.name == "postgresql.percent_usage_connections")
        .expect("percent_usage_connections");
    assert!(
        usage.value > 0.0 && usage.value < 1.0,
        "a fraction: {}",
        usage.value
    );
    assert_eq!(
        metric(&first, "postgresql.commits", "app"),
        None,
        "a rate needs two runs"
    );

    // 50 committed transactions; the backend flushes its statistics when it exits, which is
    // after the client has let go. Read from the `postgres` database, so the reads are not
    // among the commits counted.
    let commits_in_app = || {
        postgres
            .psql(
                "postgres",
                "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'",
            )
            .parse::<u64>()
            .expect("a commit count")
    };
    let before = tokio::task::block_in_place(commits_in_app);
    let app = client(&postgres, "writer").await;
    for _ in 0..50 {
        app.batch_execute("SELECT 1").await.expect("a transaction");
    }
    drop(app);
    let after = tokio::task::block_in_place(|| {
        wait::until(Duration::from_secs(10), commits_in_app, |after| {
            *after >= before + 50
        })
    });
    assert!(
        after >= before + 50,
        "the writer's commits are counted: {before} then {after}"
    );
    let mut second = run(&host, &yaml).await;
    sampler.process(&mut second);
    let (kind, rate) = metric(&second, "postgresql.commits", "app").expect("a commit rate");
    assert_eq!(kind, MetricType::Gauge);
    let elapsed = second.metrics[0].timestamp - first.metrics[0].timestamp;
    let commits = rate * elapsed;
    assert!(
        (50.0..60.0).contains(&commits.round()),
        "the writer's 50 commits (and the check's own few): {rate}/s over {elapsed} s"
    );
    assert_eq!(
        metric(&first, "app.commits", "app"),
        None,
        "a monotonic count needs two runs"
    );
    let (kind, delta) = second
        .metrics
        .iter()
        .find(|m| m.name == "app.commits")
        .map(|m| (m.kind, m.value))
        .expect("a monotonic count after two runs");
    assert_eq!(kind, MetricType::Count);
    assert!(
        (50.0..60.0).contains(&delta),
        "the commits between the runs: {delta}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_queries_submit_tagged_metrics() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let report = run(
        &host,
        &config(
            &postgres,
            r#"
    custom_queries:
      - metric_prefix: app.settings
        query: SELECT name, setting::float8 FROM pg_settings WHERE name IN ('max_connections', 'port') ORDER BY name
        columns:
          - name: setting_name
            type: tag
          - name: value
            type: gauge
        tags: [source:settings]
"#,
        ),
    )
    .await;
    assert!(report.is_ok(), "{report:#?}");
    let values: Vec<(Vec<String>, f64)> = report
        .metrics
        .iter()
        .filter(|m| m.name == "app.settings.value")
        .map(|m| {
            let tags = m
                .tags
                .iter()
                .filter(|t| t.starts_with("setting_name:") || t.starts_with("source:"))
                .cloned()
                .collect();
            (tags, m.value)
        })
        .collect();
    assert_eq!(
        values,
        [
            (
                vec![
                    "setting_name:max_connections".to_owned(),
                    "source:settings".to_owned()
                ],
                100.0
            ),
            (
                vec!["setting_name:port".to_owned(), "source:settings".to_owned()],
                f64::from(postgres.port)
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_custom_metrics_give_clear_errors() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    for (entry, expected) in [
        (
            "      - descriptors: []\n        metrics: {}\n        relation: false\n",
            "Missing query parameter in custom metric",
        ),
        (
            "      - descriptors: []\n        query: SELECT %s\n        relation: false\n",
            "Missing metrics parameter in custom metric",
        ),
        (
            "      - descriptors: []\n        metrics:\n          '1': [x.y, HISTOGRAM]\n        query: SELECT %s\n        relation: false\n",
            "Collector method HISTOGRAM is not known. Known methods are RATE, GAUGE, MONOTONIC",
        ),
        (
            "      - descriptors: [[a, a]]\n        metrics:\n          '1': [x.y, GAUGE]\n        query: SELECT %s\n        relation: false\n",
            "Row does not contain enough values",
        ),
    ] {
        let report = run(
            &host,
            &config(&postgres, &format!("    custom_metrics:\n{entry}")),
        )
        .await;
        let Some(RunError::Check(message)) = &report.error else {
            panic!("expected {expected:?}: {report:#?}");
        };
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_server_is_critical_and_recovers_when_it_returns() {
    let postgres = Postgres::start();
    let host = host(plugin_config());
    let yaml = config(&postgres, "");
    assert_eq!(can_connect(&run(&host, &yaml).await), Status::Ok);

    postgres.stop();
    let down = run(&host, &yaml).await;
    assert_eq!(can_connect(&down), Status::Critical, "{down:#?}");
    assert!(matches!(down.error, Some(RunError::Check(_))), "{down:#?}");
    let message = &down.service_checks[0].message;
    assert!(
        message.starts_with("Error establishing connection to postgres://127.0.0.1"),
        "{message}"
    );
    assert!(
        !message.contains(kennel_tests::postgres::PASSWORD),
        "{message}"
    );

    postgres.start_server();
    let back = run(&host, &yaml).await;
    assert_eq!(can_connect(&back), Status::Ok, "{back:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_instance_queries_only_its_own_server() {
    let (a, b) = (Postgres::start(), Postgres::start());
    let host = host(plugin_config());
    let port_query = r#"
    custom_queries:
      - metric_prefix: server
        query: SELECT current_setting('port')::float8
        columns:
          - name: port
            type: gauge
"#;
    for server in [&a, &b] {
        let report = run(&host, &config(server, port_query)).await;
        let port = report
            .metrics
            .iter()
            .find(|m| m.name == "server.port")
            .unwrap_or_else(|| panic!("{report:#?}"));
        assert_eq!(port.value, f64::from(server.port));
    }
}
