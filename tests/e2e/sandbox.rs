//! The sandbox's limits, each tripped by a real misbehaving plugin: every bad run fails alone,
//! with its own reason, on time, and the runner and its healthy checks carry on.
//!
//! "On time" is asserted with bounds that a correct runner meets on a loaded machine and a
//! broken one misses by far (a limit not enforced, a back-off not taken, a healthy check stuck
//! behind a bad one); how close to its deadline a run stops, and how evenly runs keep to their
//! interval, are figures the `scheduler` benchmark prints.

use std::time::Duration;

use kennel_tests::http_server::{HttpServer, Reply};
use kennel_tests::{host, instance, plugin_config};
use runner::check::{Instance, RunError, RunReport};
use runner::config::PluginConfig;
use runner::scheduler::InstanceStats;
use tokio::sync::mpsc;

/// Schedules one test_plugin instance and collects its first `count` reports (waiting up to
/// 30 s for them).
async fn schedule_and_collect(yaml: &str, count: usize) -> (Vec<RunReport>, Vec<InstanceStats>) {
    let host = host(plugin_config());
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(64);
    let mut scheduler = kennel_tests::scheduler(host, 4, reports);
    scheduler.schedule(instance("test_plugin", yaml), plugin);
    let mut collected = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while collected.len() < count
        && let Ok(Some(report)) = tokio::time::timeout_at(until, inbox.recv()).await
    {
        collected.push(report);
    }
    let stats = scheduler.stats().snapshot();
    scheduler.shutdown().await;
    (collected, stats)
}

/// Runs test_plugin once. The run is its own task, and one still going after a minute fails
/// the test instead of hanging it: a deadline that is not enforced lets a plugin loop or sleep
/// for good.
async fn run_test_plugin(config: PluginConfig, yaml: &str) -> RunReport {
    let host = host(config);
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let instance = instance("test_plugin", yaml);
    let run = tokio::spawn(async move { host.run(&plugin, &instance).await });
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ended within a minute")
        .expect("the run's task did not panic")
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
    // Interrupted inside wasm at an epoch tick, not left to the host's fallback for runs
    // blocked in a host call.
    assert!(message.contains("was interrupted"), "{message}");
    assert!(
        elapsed >= Duration::from_secs(1),
        "stopped early: {elapsed:?}"
    );
    // The interruption comes at the first 10 ms tick past the deadline, later on a loaded
    // machine; a deadline not enforced, or taken as twice the timeout, would show at 2 s.
    assert!(
        elapsed < Duration::from_secs(2),
        "stopped late: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_allocation_stops_at_the_memory_cap() {
    let config = PluginConfig {
        memory_limit_mb: 16,
        ..plugin_config()
    };
    let report = run_test_plugin(config, "instances:\n  - mode: alloc\n    timeout: 5\n").await;
    let Some(RunError::Memory(message)) = &report.error else {
        panic!("expected the memory cap: {report:#?}");
    };
    assert!(message.contains("cap of 16 MiB"), "{message}");
    assert!(
        report.duration < Duration::from_secs(5),
        "the cap stopped the run, not its 5 s deadline: {:?}",
        report.duration
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
    let mut scheduler = kennel_tests::scheduler(host.clone(), 8, reports);
    let healthy_id = kennel_tests::schedule_among_misbehaving(&mut scheduler, &plugin);

    let mut healthy_starts = Vec::new();
    let mut failures = std::collections::HashSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while (healthy_starts.len() < 7 || failures.len() < 4)
        && let Ok(Some(report)) = tokio::time::timeout_at(until, inbox.recv()).await
    {
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
        healthy_starts.len() >= 7,
        "healthy runs: {}",
        healthy_starts.len()
    );
    // The first run comes early by design (within the scheduler's first-run spread); from
    // the second on, runs keep to the 1 s interval. A healthy run stuck behind a bad one for
    // its 3 s would leave a gap of 3 s or more, and runs bunched up to catch up afterwards
    // would leave gaps of a fraction of the interval; the bounds leave a loaded machine half a
    // second or more to make a run late.
    for pair in healthy_starts[1..].windows(2) {
        let gap = pair[1].duration_since(pair[0]).expect("runs in order");
        assert!(
            gap > Duration::from_millis(500) && gap < Duration::from_secs(2),
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
    let gaps_between = |reports: &[RunReport]| -> Vec<Duration> {
        reports
            .windows(2)
            .map(|w| w[1].started.duration_since(w[0].started).expect("in order"))
            .collect()
    };
    // At a 0.5 s interval the back-off waits 1 s after the third crash in a row and 2 s after
    // the fourth, counted from the end of the crashed run: floors that a timer never undercuts
    // (less 50 ms for the wall clock the reports are stamped with). The ceilings leave a late
    // run half a second or more; a back-off taken too early, not doubled, or doubled twice
    // misses them by as much.
    let (reports, stats) = schedule_and_collect(
        "instances:\n  - mode: panic\n    min_collection_interval: 0.5\n",
        5,
    )
    .await;
    assert!(reports.iter().all(|r| !r.is_ok()));
    let gaps = gaps_between(&reports);
    assert!(gaps.len() >= 4, "runs: {}", reports.len());
    assert!(
        gaps[0] < Duration::from_secs(1) && gaps[1] < Duration::from_secs(1),
        "the first failures keep the interval: {gaps:?}"
    );
    assert!(
        gaps[2] > Duration::from_millis(950) && gaps[2] < Duration::from_secs(2),
        "the third failure in a row doubles the wait: {gaps:?}"
    );
    assert!(
        gaps[3] > Duration::from_millis(1950) && gaps[3] < Duration::from_secs(4),
        "and the fourth doubles it again: {gaps:?}"
    );
    assert_eq!(stats[0].errors as usize, reports.len());
    assert_eq!(stats[0].consecutive_failures as usize, reports.len());

    // A check that returns an error (its target is down) keeps its interval: with a back-off,
    // the gap after its third error would be 1 s or more.
    let (reports, _) = schedule_and_collect(
        "instances:\n  - mode: fail\n    min_collection_interval: 0.5\n",
        6,
    )
    .await;
    assert!(reports.iter().all(|r| !r.is_ok()));
    let gaps = gaps_between(&reports);
    assert_eq!(gaps.len(), 5, "runs: {}", reports.len());
    assert!(
        gaps.iter().all(|gap| *gap < Duration::from_secs(1)),
        "a failing check keeps its 0.5 s interval: {gaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_longer_than_its_interval_skips_runs_and_counts_them() {
    let host = host(plugin_config());
    let plugin = host.load("test_plugin").expect("test_plugin loads");
    let (reports, mut inbox) = mpsc::channel(64);
    let mut scheduler = kennel_tests::scheduler(host, 4, reports);
    scheduler.schedule(
        instance(
            "test_plugin",
            "instances:\n  - mode: loop\n    min_collection_interval: 0.3\n    timeout: 1\n",
        ),
        plugin,
    );
    let first = tokio::time::timeout(Duration::from_secs(30), inbox.recv())
        .await
        .expect("a report within 30 s")
        .expect("the scheduler runs");
    assert!(
        matches!(first.error, Some(RunError::Deadline(_))),
        "{first:#?}"
    );
    let stats = scheduler.stats().snapshot();
    scheduler.shutdown().await;
    assert_eq!(stats[0].runs, 1, "the next run waits for the next slot");
    // Every 0.3 s slot that passed while the run went on is skipped and counted once: as many
    // as the run's own length holds, give or take the slots at either end (its length, not
    // the 1 s timeout, because a loaded machine stops it late).
    let slots = first.duration.as_secs_f64() / 0.3;
    let skipped = stats[0].skipped as f64;
    assert!(
        skipped >= slots.floor() - 1.0 && skipped <= slots.ceil() + 1.0,
        "a {:?} run at a 0.3 s interval skipped {skipped} runs",
        first.duration
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
    assert!(message.contains("waiting in a host call"), "{message}");
    // Dropped a short grace after its deadline, later on a loaded machine; left to sleep, it
    // would have slept for an hour.
    assert!(
        report.duration >= Duration::from_millis(500) && report.duration < Duration::from_secs(2),
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
