//! The sandbox's limits, each tripped by a real misbehaving plugin: every bad run fails alone,
//! with its own reason, on time, and the runner and its healthy checks carry on.

use std::time::{Duration, Instant};

use kennel_tests::http_server::{HttpServer, Reply};
use kennel_tests::{host, instance, plugin_config};
use runner::check::{Instance, RunError, RunReport};
use runner::config::PluginConfig;
use runner::scheduler::{InstanceStats, Scheduler};
use tokio::sync::mpsc;

/// Schedules one test_plugin instance and collects its reports for `window`.
async fn schedule_and_collect(
    yaml: &str,
    window: Duration,
) -> (Vec<RunReport>, Vec<InstanceStats>) {
    let host = host(plugin_config());
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(64);
    let mut scheduler = Scheduler::new(
        host,
        4,
        reports,
        runner::health::Health::new().register("scheduler", true),
    );
    scheduler.schedule(instance("test_plugin", yaml), plugin);
    let mut collected = Vec::new();
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(report)) = tokio::time::timeout_at(until, inbox.recv()).await {
        collected.push(report);
    }
    let stats = scheduler.stats().snapshot();
    scheduler.shutdown().await;
    (collected, stats)
}

async fn run_test_plugin(config: PluginConfig, yaml: &str) -> RunReport {
    let host = host(config);
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let instance = instance("test_plugin", yaml);
    host.run(&plugin, &instance).await
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_run_submits_with_instance_tags() {
    let report = run_test_plugin(
        plugin_config(),
        "instances:\n  - mode: ok\n    tags: [team:a]\n    service: svc\n",
    )
    .await;
    assert!(report.is_ok(), "{report:#?}");
    let metric = &report.metrics[0];
    assert_eq!(metric.name, "test.ok");
    assert_eq!(metric.tags, ["mode:ok", "service:svc", "team:a"]);
    assert_eq!(
        report.service_checks[0].tags,
        ["mode:ok", "service:svc", "team:a"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_error_is_reported_and_its_output_kept() {
    let report = run_test_plugin(plugin_config(), "instances:\n  - mode: fail\n").await;
    assert_eq!(
        report.error,
        Some(RunError::Check("asked to fail".to_owned()))
    );
    assert_eq!(
        report.service_checks.len(),
        1,
        "what was submitted before the error is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_is_reported_with_its_message() {
    let report = run_test_plugin(plugin_config(), "instances:\n  - mode: panic\n").await;
    let Some(RunError::Crash(message)) = &report.error else {
        panic!("expected a crash: {report:#?}");
    };
    assert!(
        message.contains("the test plugin was asked to panic"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_is_interrupted_at_its_deadline() {
    let report = run_test_plugin(
        plugin_config(),
        "instances:\n  - mode: loop\n    timeout: 1\n",
    )
    .await;
    let elapsed = report.duration;
    let Some(RunError::Deadline(message)) = &report.error else {
        panic!("expected a deadline: {report:#?}");
    };
    assert!(message.contains("1.000 s deadline"), "{message}");
    assert!(
        elapsed >= Duration::from_secs(1),
        "stopped early: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_millis(1100),
        "stopped late: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_allocation_stops_at_the_memory_cap() {
    let config = PluginConfig {
        memory_limit_mb: 16,
        ..plugin_config()
    };
    let started = Instant::now();
    let report = run_test_plugin(config, "instances:\n  - mode: alloc\n    timeout: 5\n").await;
    let Some(RunError::Memory(message)) = &report.error else {
        panic!("expected the memory cap: {report:#?}");
    };
    assert!(message.contains("cap of 16 MiB"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flood_is_stopped_at_the_item_cap() {
    let config = PluginConfig {
        max_items_per_run: 500,
        ..plugin_config()
    };
    let report = run_test_plugin(config, "instances:\n  - mode: flood\n").await;
    let Some(RunError::Flood(message)) = &report.error else {
        panic!("expected a flood: {report:#?}");
    };
    assert!(message.contains("more than 500 items"), "{message}");
    assert!(
        report.metrics.is_empty(),
        "a stopped run's output is dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_to_a_host_not_granted_is_denied_with_how_to_grant_it() {
    let server = HttpServer::start(|_| Reply::ok("secret")).await;
    let target = format!("http://127.0.0.1:{}/", server.addr.port());
    let denied = run_test_plugin(
        plugin_config(),
        &format!("instances:\n  - mode: http\n    target: {target}\n"),
    )
    .await;
    let Some(RunError::Check(message)) = &denied.error else {
        panic!("expected a denial: {denied:#?}");
    };
    assert!(
        message.contains(&format!("may not reach 127.0.0.1:{}", server.addr.port())),
        "{message}"
    );
    assert!(message.contains("allowed_hosts"), "{message}");

    let granted = run_test_plugin(
        plugin_config(),
        &format!(
            "instances:\n  - mode: http\n    target: {target}\n    allowed_hosts: [127.0.0.1]\n"
        ),
    )
    .await;
    assert!(granted.is_ok(), "{granted:#?}");
    assert_eq!(granted.metrics[0].value, 200.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_finite_values_and_empty_names_are_dropped_with_warnings() {
    let report = run_test_plugin(plugin_config(), "instances:\n  - mode: bad_values\n").await;
    assert!(report.is_ok());
    assert_eq!(report.state(), "WARNING");
    assert_eq!(report.metrics.len(), 1);
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_checks_do_not_delay_a_healthy_one() {
    let host = host(PluginConfig {
        memory_limit_mb: 16,
        ..plugin_config()
    });
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(1024);
    let mut scheduler = Scheduler::new(
        host.clone(),
        8,
        reports,
        runner::health::Health::new().register("scheduler", true),
    );
    let healthy = instance(
        "test_plugin",
        "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
    );
    let healthy_id = healthy.id.clone();
    scheduler.schedule(healthy, plugin.clone());
    for mode in ["panic", "loop", "alloc", "flood"] {
        let bad = instance(
            "test_plugin",
            &format!(
                "instances:\n  - mode: {mode}\n    min_collection_interval: 1\n    timeout: 1.5\n"
            ),
        );
        scheduler.schedule(bad, plugin.clone());
    }

    let mut healthy_starts = Vec::new();
    let mut failures = std::collections::HashSet::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(5500);
    while let Ok(Some(report)) = tokio::time::timeout_at(until, inbox.recv()).await {
        if report.instance_id == healthy_id {
            assert!(report.is_ok(), "{report:#?}");
            healthy_starts.push(report.started);
        } else if let Some(error) = &report.error {
            failures.insert(std::mem::discriminant(error));
        }
    }
    scheduler.shutdown().await;

    assert_eq!(
        failures.len(),
        4,
        "panic, deadline, memory and flood each failed"
    );
    assert!(
        healthy_starts.len() >= 5,
        "healthy runs: {}",
        healthy_starts.len()
    );
    // The first run comes early by design (within the scheduler's first-run spread); from
    // the second on, runs keep to the interval.
    for pair in healthy_starts[1..].windows(2) {
        let gap = pair[1].duration_since(pair[0]).expect("runs in order");
        assert!(
            gap > Duration::from_millis(850) && gap < Duration::from_millis(1150),
            "the healthy check ran {gap:?} after its previous run"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_get_no_environment_files_or_sockets() {
    assert!(
        std::env::vars().count() > 0,
        "the runner itself has an environment to leak"
    );
    let report = run_test_plugin(plugin_config(), "instances:\n  - mode: ambient\n").await;
    assert!(report.is_ok(), "{report:#?}");
    let value = |name: &str| {
        report
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
            .unwrap_or_else(|| panic!("no {name} in {report:#?}"))
    };
    assert_eq!(value("test.ambient.env_vars"), 0.0, "no environment");
    assert_eq!(value("test.ambient.files"), 0.0, "no filesystem");
    assert_eq!(value("test.ambient.socket"), 0.0, "no sockets");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_crashes_back_off_but_check_errors_do_not() {
    let (reports, stats) = schedule_and_collect(
        "instances:\n  - mode: panic\n    min_collection_interval: 0.2\n",
        Duration::from_millis(2600),
    )
    .await;
    assert!(reports.iter().all(|r| !r.is_ok()));
    let starts: Vec<_> = reports.iter().map(|r| r.started).collect();

    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).expect("in order"))
        .collect();
    assert!(gaps.len() >= 4, "runs: {}", starts.len());
    let near = |gap: Duration, expected: u64| {
        gap.abs_diff(Duration::from_millis(expected)) < Duration::from_millis(120)
    };
    assert!(
        near(gaps[0], 200) && near(gaps[1], 200),
        "first failures keep the interval: {gaps:?}"
    );
    assert!(
        near(gaps[2], 400),
        "the third failure in a row doubles the wait: {gaps:?}"
    );
    assert!(
        near(gaps[3], 800),
        "and the fourth doubles it again: {gaps:?}"
    );
    assert_eq!(stats[0].errors as usize, starts.len());
    assert_eq!(stats[0].consecutive_failures as usize, starts.len());

    // A check that returns an error (its target is down) keeps its interval.
    let (reports, _) = schedule_and_collect(
        "instances:\n  - mode: fail\n    min_collection_interval: 0.2\n",
        Duration::from_millis(1500),
    )
    .await;
    let runs = reports.len();
    assert!(
        runs >= 6,
        "a failing check ran only {runs} times in 1.5 s at a 0.2 s interval"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_longer_than_its_interval_skips_runs_and_counts_them() {
    let host = host(plugin_config());
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(64);
    let mut scheduler = Scheduler::new(
        host,
        4,
        reports,
        runner::health::Health::new().register("scheduler", true),
    );
    scheduler.schedule(
        instance(
            "test_plugin",
            "instances:\n  - mode: loop\n    min_collection_interval: 0.3\n    timeout: 1\n",
        ),
        plugin,
    );
    let first = tokio::time::timeout(Duration::from_secs(3), inbox.recv())
        .await
        .expect("a report within 3 s")
        .expect("the scheduler runs");
    assert!(
        matches!(first.error, Some(RunError::Deadline(_))),
        "{first:#?}"
    );
    let stats = scheduler.stats().snapshot();
    scheduler.shutdown().await;
    assert_eq!(stats[0].runs, 1);
    assert!(
        (2..=4).contains(&stats[0].skipped),
        "a 1 s run at a 0.3 s interval skips about 3 runs: {}",
        stats[0].skipped
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_plugins_are_cached_on_disk_and_a_damaged_cache_is_recompiled() {
    let cache = tempfile::tempdir().expect("temp dir");
    let config = PluginConfig {
        cache_path: Some(cache.path().to_owned()),
        ..plugin_config()
    };
    let ok = instance("test_plugin", "instances:\n  - mode: ok\n");

    let first = host(config.clone());
    let plugin = first.load("test_plugin").expect("compiles");
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0].to_string_lossy().contains(&plugin.digest),
        "keyed by content hash"
    );
    drop(first);

    let second = host(config.clone());
    let plugin = second.load("test_plugin").expect("loads from the cache");
    let (host2, instance2) = (second.clone(), ok.clone());
    let report = host2.run(&plugin, &instance2).await;
    assert!(report.is_ok(), "{report:#?}");
    drop(second);

    std::fs::write(&cached[0], b"not a compiled component").unwrap();
    let third = host(config);
    let plugin = third
        .load("test_plugin")
        .expect("recompiles over a damaged cache file");
    let report = third.run(&plugin, &ok).await;
    assert!(report.is_ok(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_asleep_in_a_host_call_is_stopped_at_its_deadline() {
    let report = run_test_plugin(
        plugin_config(),
        "instances:\n  - mode: sleep\n    timeout: 0.5\n",
    )
    .await;
    let Some(RunError::Deadline(message)) = &report.error else {
        panic!("expected a deadline: {report:#?}");
    };
    assert!(message.contains("0.500 s deadline"), "{message}");
    assert!(
        report.duration >= Duration::from_millis(500)
            && report.duration <= Duration::from_millis(650),
        "stopped after {:?}",
        report.duration
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_store_survives_restarts_and_ignores_crashed_runs() {
    let state = tempfile::tempdir().expect("temp dir");
    let config = PluginConfig {
        state_path: Some(state.path().to_owned()),
        ..plugin_config()
    };
    let counting = instance("test_plugin", "instances:\n  - mode: remember\n");
    let crashing = Instance {
        config: counting
            .config
            .replace("\"mode\"", "\"crash\":true,\"mode\""),
        ..counting.clone()
    };
    let runs = |report: &RunReport| report.metrics.first().map(|m| m.value);

    let first = host(config.clone());
    let plugin = first.load("test_plugin").expect("loads");
    assert_eq!(runs(&first.run(&plugin, &counting).await), Some(1.0));
    assert_eq!(runs(&first.run(&plugin, &counting).await), Some(2.0));
    drop(first);

    let restarted = host(config);
    let plugin = restarted.load("test_plugin").expect("loads");
    assert_eq!(
        runs(&restarted.run(&plugin, &counting).await),
        Some(3.0),
        "kept across a restart"
    );
    let crashed = restarted.run(&plugin, &crashing).await;
    assert!(
        matches!(crashed.error, Some(RunError::Crash(_))),
        "{crashed:#?}"
    );
    assert_eq!(
        runs(&restarted.run(&plugin, &counting).await),
        Some(4.0),
        "the crashed run's update was not saved"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_readable_only_under_allowed_paths() {
    let granted = tempfile::tempdir().expect("temp dir");
    let report_file = granted.path().join("report.json");
    std::fs::write(&report_file, b"{\"ok\":true}").unwrap();
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let secret = elsewhere.path().join("secret");
    std::fs::write(&secret, b"hunter2").unwrap();
    std::os::unix::fs::symlink(&secret, granted.path().join("link")).unwrap();
    let allowed = granted.path().display();

    let read = |file: String| {
        format!(
            "instances:\n  - mode: read\n    file: '{file}'\n    allowed_paths: ['{allowed}']\n"
        )
    };
    let ok = run_test_plugin(plugin_config(), &read(report_file.display().to_string())).await;
    assert!(ok.is_ok(), "{ok:#?}");
    assert_eq!(ok.metrics[0].value, 11.0);

    for outside in [
        secret.display().to_string(),
        format!(
            "{allowed}/../{}",
            secret.strip_prefix(std::env::temp_dir()).unwrap().display()
        ),
        format!("{allowed}/link"),
        "/etc/passwd".to_owned(),
    ] {
        let denied = run_test_plugin(plugin_config(), &read(outside.clone())).await;
        assert!(
            matches!(denied.error, Some(RunError::Check(_))),
            "{outside} was readable: {denied:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_the_first_contract_still_runs() {
    // test_plugin as built against kennel:check@0.1.0, before `sql` and `kv` existed.
    let old = kennel_tests::repo_root().join("tests/fixtures/test_plugin-0.1.0.wasm");
    let host = host(plugin_config());
    let plugin = host
        .load_file("test_plugin", &old)
        .expect("an 0.1.0 plugin loads");
    let report = host
        .run(
            &plugin,
            &instance("test_plugin", "instances:\n  - mode: ok\n"),
        )
        .await;
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.metrics[0].name, "test.ok");
}
