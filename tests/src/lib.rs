//! Fixtures shared by Kennel's end-to-end tests and benchmarks: where the built plugins and the
//! `runner` binary are, a plugin host and instances built the way `runner run` builds them, and
//! real HTTP(S) servers on loopback, a throwaway PostgreSQL, a real Docker daemon's containers
//! (and churn of them), `runner run` as a child process, DogStatsD senders of a known origin,
//! the forwarder's backends (a throwaway VictoriaMetrics and Prometheus, and one fake Datadog
//! intake for the formats no installable server decodes), a throwaway node exporter (what the
//! host metrics are compared with), and waits on a condition.

pub mod churn;
pub mod docker;
pub mod fake_intake;
pub mod http_server;
pub mod load;
pub mod node_exporter;
pub mod origin;
pub mod pipeline;
pub mod postgres;
pub mod prometheus;
pub mod runner_process;
pub mod victoria;
pub mod wait;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner::check::Instance;
use runner::config::PluginConfig;
use runner::config::confd;
use runner::plugin::{Plugin, PluginHost};
use runner::scheduler::Scheduler;
use tokio::sync::mpsc;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .to_owned()
}

/// Where `make plugins` puts every plugin (`target/plugins`).
pub fn plugins_dir() -> PathBuf {
    let dir = repo_root().join("target/plugins");
    assert!(
        dir.join("http_check.wasm").exists() && dir.join("test_plugin.wasm").exists(),
        "plugins are not built: run `make plugins` (or `make test`) first"
    );
    dir
}

/// The `runner` binary of the same profile as the running test.
pub fn runner_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test binary> -> target/<profile>/runner
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .join("runner");
    assert!(
        bin.exists(),
        "{} is not built: run `make test`",
        bin.display()
    );
    bin
}

/// The plugin settings of a test host: the built plugins, no disk cache, and key-value stores
/// in memory.
pub fn plugin_config() -> PluginConfig {
    PluginConfig {
        path: plugins_dir(),
        cache_path: None,
        state_path: None,
        ..PluginConfig::default()
    }
}

/// A plugin host as `runner run` builds it.
pub fn host(config: PluginConfig) -> Arc<PluginHost> {
    Arc::new(PluginHost::new(&config, "test-host".to_owned(), 8).expect("the plugin host starts"))
}

/// The instances of a check config given as YAML text, as the conf.d loader resolves them.
pub fn instances(check: &str, yaml: &str) -> Vec<Instance> {
    let path = PathBuf::from(format!("conf.d/{check}.d/conf.yaml"));
    let config = confd::parse_file(check, &path, yaml)
        .unwrap_or_else(|e| panic!("test config does not parse: {e}"))
        .expect("test config has instances");
    confd::instances(&config, Duration::from_secs(30))
}

/// The single instance of a check config given as YAML text.
pub fn instance(check: &str, yaml: &str) -> Instance {
    let mut all = instances(check, yaml);
    assert_eq!(all.len(), 1, "expected one instance");
    all.remove(0)
}

/// A scheduler as `runner run` builds it, reporting to `reports` (its health to a registry of
/// its own).
pub fn scheduler(
    host: Arc<PluginHost>,
    runners: usize,
    reports: mpsc::Sender<runner::check::RunReport>,
) -> Scheduler {
    let health = runner::health::Health::new().register("scheduler", true);
    Scheduler::new(host, runners, reports, health)
}

/// Schedules a healthy 1 s `test_plugin` instance among four that misbehave at every run
/// (panic, endless loop, unbounded allocation, item flood; 3 s timeout); returns the healthy
/// instance's id.
pub fn schedule_among_misbehaving(scheduler: &mut Scheduler, plugin: &Arc<Plugin>) -> String {
    let healthy = instance(
        "test_plugin",
        "instances:\n  - mode: ok\n    min_collection_interval: 1\n",
    );
    let healthy_id = healthy.id.clone();
    scheduler.schedule(healthy, plugin.clone());
    // The endless loop holds its runner, and a CPU, for its whole 3 s timeout at every run.
    for mode in ["panic", "loop", "alloc", "flood"] {
        let bad = instance(
            "test_plugin",
            &format!(
                "instances:\n  - mode: {mode}\n    min_collection_interval: 1\n    timeout: 3\n"
            ),
        );
        scheduler.schedule(bad, plugin.clone());
    }
    healthy_id
}

/// Prints the machine's load average: benchmark figures are only as quiet as the machine.
pub fn print_load_average() {
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
