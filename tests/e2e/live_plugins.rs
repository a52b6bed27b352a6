//! Live plugins: a plugin file replaced under a running runner runs from its instances' next
//! run; a broken one replaces nothing and is reported.

use std::path::Path;
use std::time::{Duration, Instant};

use kennel_tests::plugins_dir;
use kennel_tests::runner_process::{Options, RunnerProcess};
use kennel_tests::wait;

fn sha256(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// The one instance's stats; null before it is scheduled.
fn instance(runner: &RunnerProcess) -> serde_json::Value {
    let instances = runner.instances_from("live.yaml");
    assert!(instances.len() <= 1, "{instances:?}");
    instances.into_iter().next().unwrap_or_default()
}

/// Two builds stand for two versions of one check, `live`: the test plugin (version A) and
/// `http_check` (version B), which the same instance tells apart by what they emit.
#[test]
fn a_replaced_plugin_runs_from_the_next_run_and_a_broken_one_keeps_the_last_good() {
    let plugins = tempfile::tempdir().expect("a plugins directory");
    let live = plugins.path().join("live.wasm");
    let (a, b) = (
        plugins_dir().join("test_plugin.wasm"),
        plugins_dir().join("http_check.wasm"),
    );
    std::fs::copy(&a, &live).expect("version A in place");
    let runner = RunnerProcess::start(
        Options {
            plugins: Some(plugins.path().to_owned()),
            ..Options::default()
        },
        &[
            (
                "live.yaml",
                "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
            ),
            (
                "late.yaml",
                "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
            ),
        ],
    );
    let digest = |stats: &serde_json::Value| stats["plugin"].as_str().unwrap_or("").to_owned();
    let stats = wait::until(
        Duration::from_secs(20),
        || instance(&runner),
        |stats| stats["runs"].as_u64() >= Some(1),
    );
    assert_eq!(digest(&stats), sha256(&a), "{stats}");
    assert!(
        stats["last_error"].is_null(),
        "version A runs cleanly: {stats}"
    );

    // A check configured before its plugin exists waits, reported, and starts once the
    // plugin is saved, with no conf.d change.
    let missing = runner.config_errors();
    assert!(
        missing
            .iter()
            .any(|e| e.contains("no plugin for check `late`")),
        "{missing:?}"
    );
    std::fs::copy(&a, plugins.path().join("late.wasm")).expect("the late plugin saved");
    let late = wait::until(
        Duration::from_secs(10),
        || runner.instances_from("late.yaml"),
        |late| late.first().is_some_and(|l| l["runs"].as_u64() >= Some(1)),
    );
    assert_eq!(late.len(), 1, "{late:?}");
    let errors = wait::until(
        Duration::from_secs(10),
        || runner.config_errors(),
        |errors| errors.is_empty(),
    );
    assert!(errors.is_empty(), "{errors:?}");

    // Version B saved over it, as `cp` does: truncated, then written.
    let saved = Instant::now();
    std::fs::write(&live, std::fs::read(&b).expect("version B")).expect("version B saved");
    wait::until(
        Duration::from_secs(10),
        || instance(&runner),
        |stats| digest(stats) == sha256(&b),
    );
    println!(
        "a rebuilt plugin first ran {:.0} ms after it was saved (interval 1 s)",
        saved.elapsed().as_secs_f64() * 1000.0
    );
    // `http_check` without a `url`: its config error, CRITICAL, is version B's doing.
    let stats = wait::until(
        Duration::from_secs(10),
        || instance(&runner),
        |s| {
            s["last_service_checks"]
                .to_string()
                .contains("http.can_connect")
        },
    );
    assert!(stats["last_error"].to_string().contains("url"), "{stats}");
    assert!(
        runner.config_errors().is_empty(),
        "{:?}",
        runner.config_errors()
    );

    // A broken file (a half-written copy): version B keeps running, and the problem is named.
    std::fs::write(&live, b"\0asm\x0d\0\x01\0truncated").expect("a broken file saved");
    let errors = wait::until(
        Duration::from_secs(10),
        || runner.config_errors(),
        |errors| errors.iter().any(|e| e.contains("live.wasm")),
    );
    let error = errors
        .iter()
        .find(|e| e.contains("live.wasm"))
        .expect("the problem");
    assert!(error.contains("keeps running"), "{error}");
    assert!(
        error.contains(&sha256(&b)[..12]),
        "names the version running: {error}"
    );
    let runs = instance(&runner)["runs"].as_u64().expect("runs");
    let stats = wait::until(
        Duration::from_secs(10),
        || instance(&runner),
        |stats| stats["runs"].as_u64() > Some(runs + 1),
    );
    assert_eq!(digest(&stats), sha256(&b), "{stats}");
    let status = std::process::Command::new(kennel_tests::runner_bin())
        .arg("status")
        .arg("--config")
        .arg(runner.config_path())
        .output()
        .expect("runner status runs");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&format!("Plugin: sha256 {}", &sha256(&b)[..12])),
        "{status}"
    );
    assert!(status.contains("keeps running"), "{status}");

    // Version A again: the problem clears and A runs.
    std::fs::copy(&a, &live).expect("version A again");
    wait::until(
        Duration::from_secs(10),
        || instance(&runner),
        |stats| digest(stats) == sha256(&a),
    );
    wait::until(
        Duration::from_secs(10),
        || runner.config_errors(),
        |errors| errors.is_empty(),
    );
}
