//! The chef check through the real host, reading real report files from a granted directory.

use std::path::Path;
use std::time::{Duration, SystemTime};

use kennel_tests::{host, instance, plugin_config, repo_root};
use runner::check::{AlertType, Instance, Priority, RunError, RunReport};
use runner::config::PluginConfig;
use runner::plugin::PluginHost;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("checks/chef/tests/fixtures").join(name))
        .expect("fixture")
}

/// Writes a report as Chef's json_file handler names it, last modified `age` ago.
fn write_report(dir: &Path, stamp: &str, content: &str, age: Duration) {
    let path = dir.join(format!("chef-run-report-{stamp}.json"));
    std::fs::write(&path, content).expect("write report");
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open report");
    file.set_modified(SystemTime::now() - age)
        .expect("set mtime");
}

fn chef_instance(reports: &Path) -> Instance {
    let dir = reports.display();
    instance(
        "chef",
        &format!("instances:\n  - reports_dir: '{dir}'\n    allowed_paths: ['{dir}']\n"),
    )
}

async fn run(host: &PluginHost, instance: &Instance) -> RunReport {
    let plugin = host.load("chef").expect("chef loads");
    host.run(&plugin, instance).await
}

fn titles(report: &RunReport) -> Vec<&str> {
    report.events.iter().map(|e| e.title.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_sent_once_oldest_first_across_runs_and_restarts() {
    let reports = tempfile::tempdir().expect("temp dir");
    let state = tempfile::tempdir().expect("temp dir");
    let config = PluginConfig {
        state_path: Some(state.path().to_owned()),
        ..plugin_config()
    };
    let minute = Duration::from_secs(60);
    write_report(
        reports.path(),
        "20261120100000",
        &fixture("success.json"),
        minute,
    );
    write_report(
        reports.path(),
        "20261120110000",
        &fixture("converge-failure.json"),
        minute,
    );
    write_report(
        reports.path(),
        "20261120120000",
        &fixture("compile-failure.json"),
        minute,
    );
    let success = fixture("success.json");
    write_report(
        reports.path(),
        "20261120130000",
        &success[..success.len() / 2],
        minute,
    );
    let chef = chef_instance(reports.path());

    let host = host(config.clone());
    let first = run(&host, &chef).await;
    assert!(first.is_ok(), "{first:#?}");
    assert_eq!(
        titles(&first),
        [
            "Chef completed in 42 seconds on web01.example.com",
            "Chef failed in 88 seconds on db01.example.com",
            "Chef failed during compile phase on web02.example.com",
        ]
    );
    let success_event = &first.events[0];
    assert_eq!(
        (success_event.alert_type, success_event.priority),
        (AlertType::Success, Priority::Low)
    );
    assert_eq!(success_event.host, "web01.example.com");
    assert_eq!(success_event.source_type_name.as_deref(), Some("chef"));
    let failure = &first.events[1];
    assert_eq!(
        (failure.alert_type, failure.priority),
        (AlertType::Error, Priority::Normal)
    );
    assert!(
        failure
            .text
            .contains("Chef updated 7 resources out of 10 resources total."),
        "{}",
        failure.text
    );
    assert!(failure.text.contains("$$$"), "{}", failure.text);

    let names: Vec<(&str, &str, f64)> = first
        .metrics
        .iter()
        .map(|m| (m.host.as_str(), m.name.as_str(), m.value))
        .collect();
    assert!(
        names.contains(&("web01.example.com", "chef.run.success", 1.0)),
        "{names:?}"
    );
    assert!(
        names.contains(&("web01.example.com", "chef.resources.total", 6.0)),
        "{names:?}"
    );
    assert!(
        names.contains(&("db01.example.com", "chef.run.failure", 1.0)),
        "{names:?}"
    );
    assert!(
        names.contains(&("db01.example.com", "chef.resources.updated", 7.0)),
        "{names:?}"
    );
    assert!(
        names.contains(&("web02.example.com", "chef.run.failure", 1.0)),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|(host, name, _)| *host == "web02.example.com"
                && name.starts_with("chef.resources.")),
        "no resource gauges for a compile-phase failure: {names:?}"
    );
    assert!(
        first
            .warnings
            .iter()
            .any(|w| w.contains("chef-run-report-20261120130000.json")),
        "the half-written report is named: {:?}",
        first.warnings
    );

    let second = run(&host, &chef).await;
    assert!(
        second.events.is_empty() && second.metrics.is_empty(),
        "nothing twice: {second:#?}"
    );

    // The half-written report is complete now, and sent once.
    write_report(reports.path(), "20261120130000", &success, minute);
    let third = run(&host, &chef).await;
    assert_eq!(
        titles(&third),
        ["Chef completed in 42 seconds on web01.example.com"]
    );
    drop(host);

    let restarted = kennel_tests::host(config);
    let after_restart = run(&restarted, &chef).await;
    assert!(after_restart.is_ok(), "{after_restart:#?}");
    assert!(
        after_restart.events.is_empty(),
        "nothing again after a restart: {after_restart:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reports_dir_that_is_not_granted_cannot_be_read() {
    let reports = tempfile::tempdir().expect("temp dir");
    write_report(
        reports.path(),
        "20261120100000",
        &fixture("success.json"),
        Duration::from_secs(60),
    );
    let dir = reports.path().display();
    let host = host(plugin_config());
    let ungranted = instance("chef", &format!("instances:\n  - reports_dir: '{dir}'\n"));
    let report = run(&host, &ungranted).await;
    let Some(RunError::Check(message)) = &report.error else {
        panic!("expected a refusal: {report:#?}");
    };
    assert!(message.contains("allowed_paths"), "{message}");
    assert!(report.events.is_empty());
}
