//! conf.d edited while `runner run` runs: files added, changed (well and badly) and removed
//! take effect without a restart, and what did not change keeps running untouched.

use std::time::Duration;

use kennel_tests::runner_process::{Options, RunnerProcess};

const WAIT: Duration = Duration::from_secs(10);

fn ids_from(runner: &RunnerProcess, file: &str) -> Vec<String> {
    runner
        .instances_from(file)
        .iter()
        .filter_map(|i| i["instance_id"].as_str().map(str::to_owned))
        .collect()
}

fn runs_of(runner: &RunnerProcess, id: &str) -> u64 {
    runner.status()["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["instance_id"] == id)
        .and_then(|i| i["runs"].as_u64())
        .unwrap_or(0)
}

#[test]
fn confd_changes_are_reconciled_live_and_a_broken_file_keeps_its_last_good_config() {
    let runner = RunnerProcess::start(
        Options::default(),
        &[(
            "test_plugin.d/steady.yaml",
            "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n",
        )],
    );
    runner.wait_for("the steady instance to run", WAIT, |r| {
        ids_from(r, "steady.yaml")
            .iter()
            .any(|id| runs_of(r, id) > 0)
    });
    let steady = ids_from(&runner, "steady.yaml");
    assert_eq!(steady.len(), 1);

    // Added (the same config as steady.yaml would be the same instance, run once).
    runner.write_confd(
        "test_plugin.d/added.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n    tags: [version:1]\n",
    );
    let took = runner.wait_for("the added file's instance to run", WAIT, |r| {
        ids_from(r, "added.yaml")
            .iter()
            .any(|id| runs_of(r, id) > 0)
    });
    println!("conf.d file added -> first run: {took:?}");
    let first = ids_from(&runner, "added.yaml");
    assert_eq!(first.len(), 1);

    // Changed: the old instance goes, the new one comes.
    runner.write_confd(
        "test_plugin.d/added.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n    tags: [version:2]\n",
    );
    runner.wait_for("the changed instance to replace the old one", WAIT, |r| {
        let ids = ids_from(r, "added.yaml");
        ids.len() == 1 && ids != first && runs_of(r, &ids[0]) > 0
    });
    let second = ids_from(&runner, "added.yaml");

    // Broken: reported with file and line; the last good config keeps running.
    runner.write_confd(
        "test_plugin.d/added.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: [\n",
    );
    runner.wait_for("the broken file to be reported", WAIT, |r| {
        r.config_errors()
            .iter()
            .any(|e| e.contains("added.yaml:") && e.contains("last good"))
    });
    let before = runs_of(&runner, &second[0]);
    runner.wait_for("the last good config to keep running", WAIT, |r| {
        runs_of(r, &second[0]) > before + 2
    });
    assert_eq!(ids_from(&runner, "added.yaml"), second);

    // Fixed again, then removed: unscheduled, and the error is gone.
    runner.write_confd(
        "test_plugin.d/added.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n    tags: [version:2]\n",
    );
    runner.wait_for("the error to clear", WAIT, |r| r.config_errors().is_empty());
    assert_eq!(
        ids_from(&runner, "added.yaml"),
        second,
        "same config, same instance"
    );
    std::fs::remove_file(runner.confd().join("test_plugin.d/added.yaml")).unwrap();
    runner.wait_for("the removed file's instance to be unscheduled", WAIT, |r| {
        ids_from(r, "added.yaml").is_empty()
    });

    // A second file with the very same config is the same instance: it keeps running while
    // either file asks for it, and stops when neither does.
    // The twin changes nothing `/status` shows (it is the same instance), so its pick-up is
    // seen in the log: a reload, after it was written, that found both files.
    let logged = runner.log().len();
    runner.write_confd(
        "test_plugin.d/twin.yaml",
        "instances:\n  - mode: ok\n    min_collection_interval: 0.2\n",
    );
    runner.wait_for("the twin file to be read", WAIT, |r| {
        r.log()[logged..]
            .lines()
            .any(|l| l.contains("conf.d changed: reloaded") && l.contains("configs=2"))
    });
    let twin_runs = runs_of(&runner, &steady[0]);
    std::fs::remove_file(runner.confd().join("test_plugin.d/steady.yaml")).unwrap();
    runner.wait_for("the shared instance to keep running", WAIT, |r| {
        runs_of(r, &steady[0]) > twin_runs + 3
    });
    std::fs::remove_file(runner.confd().join("test_plugin.d/twin.yaml")).unwrap();
    runner.wait_for(
        "the shared instance to stop with its last file",
        WAIT,
        |r| runs_of(r, &steady[0]) == 0,
    );

    // It ran all along under the same id, its stats never reset, scheduled once.
    assert!(twin_runs >= 3, "steady ran {twin_runs} times");
    let log = runner.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("scheduled")
                && !l.contains("unscheduled")
                && l.contains(&steady[0]))
            .count(),
        1,
        "the steady instance was scheduled once:\n{log}"
    );
}

/// The reconciliation itself, driven with conf.d loads: an instance listed twice by one file
/// is one instance, counted once, and goes when its file stops listing it.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_listed_twice_runs_once_and_goes_with_its_file() {
    use std::sync::Arc;

    use kennel_tests::{host, plugin_config};
    use runner::config::confd;
    use runner::containers::Cardinality;
    use runner::discovery::template::EnvPolicy;
    use runner::discovery::{Discovery, DiscoveryConfig};

    let host = host(plugin_config());
    let (reports, _inbox) = tokio::sync::mpsc::channel(1024);
    let scheduler = kennel_tests::scheduler(host.clone(), 4, reports);
    let config = DiscoveryConfig {
        hostname: "test-host".to_owned(),
        env: Arc::new(EnvPolicy::new(Vec::new())),
        cardinality: Cardinality::High,
        default_timeout: Duration::from_secs(30),
        labels: Default::default(),
    };
    let mut discovery = Discovery::new(config, host, scheduler);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("test_plugin.yaml");
    let load = |text: Option<&str>| {
        match text {
            Some(text) => std::fs::write(&file, text).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
        confd::load_dir(dir.path(), confd::Symlinks::Inside).expect("conf.d loads")
    };
    let scheduled = |d: &Discovery| d.stats().snapshot().len();

    discovery.apply_confd(load(Some("instances:\n  - mode: ok\n  - mode: ok\n")));
    assert_eq!((discovery.wanted(), scheduled(&discovery)), (1, 1));
    discovery.apply_confd(load(Some("instances:\n  - mode: ok\n  - mode: fail\n")));
    assert_eq!((discovery.wanted(), scheduled(&discovery)), (2, 2));
    discovery.apply_confd(load(None));
    assert_eq!((discovery.wanted(), scheduled(&discovery)), (0, 0));
    assert!(discovery.problems().list().is_empty());
}
